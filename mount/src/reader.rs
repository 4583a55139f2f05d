//! The read path: chunk locations from the master (cached per chunk), data straight from a
//! chunkserver with fail-over to the other copies, and per-open-file sequential read-ahead.

use crate::chunkservers::ChunkServers;
use crate::locks::lock;
use crate::master_client::Master;
use bytes::{Bytes, BytesMut};
use elkfs_proto::chunk::ReadRequest;
use elkfs_proto::limits::{CHUNK_SIZE, MAX_IO};
use elkfs_proto::meta::ChunkReply;
use elkfs_proto::FsError;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, warn};

/// Read-ahead is fetched in windows of this size, aligned to it (so never across a chunk).
const WINDOW: u64 = 4 << 20;
/// Read-ahead distance grows with the sequential bytes read, up to this.
const MAX_AHEAD: u64 = 32 << 20;
/// A read this close to where the previous one ended still counts as sequential (the kernel
/// sends its own read-ahead requests in parallel, slightly out of order).
const SEQ_SLACK: u64 = 1 << 20;
/// Sequential bytes in a row before read-ahead starts (a few random reads never trigger it).
const SEQ_START: u64 = 256 << 10;
/// Rounds over all copies (re-asking the master for locations between rounds).
const READ_ROUNDS: u32 = 3;
/// How long a read waits for one copy before it tries the next.
const FAILOVER_AFTER: Duration = Duration::from_secs(2);

pub struct Reader {
    master: Arc<Master>,
    servers: Arc<ChunkServers>,
    /// Cached chunk replies by inode, then chunk index. Only inodes open on this mount have
    /// an entry (added at open, removed with the last handle), so the cache stays bounded
    /// by the open files and a late read-ahead cannot re-fill it after the close.
    locations: Mutex<HashMap<u64, HashMap<u64, Arc<ChunkReply>>>>,
}

type Fetch = Shared<BoxFuture<'static, Result<Bytes, FsError>>>;

/// Read-ahead state of one open file.
#[derive(Default)]
pub struct ReadAhead {
    /// Fetched or in-flight windows by start offset.
    windows: BTreeMap<u64, Fetch>,
    /// Where the last read ended.
    next: u64,
    /// Bytes read sequentially in a row; 0 after a random read.
    seq_bytes: u64,
    /// The file's data generation the windows were fetched at (local writes bump it).
    generation: u64,
}

impl Reader {
    pub fn new(master: Arc<Master>, servers: Arc<ChunkServers>) -> Reader {
        Reader {
            master,
            servers,
            locations: Mutex::new(HashMap::new()),
        }
    }

    /// Drops the cached chunk locations (and file sizes) of `ino`.
    pub fn forget(&self, ino: u64) {
        if let Some(chunks) = lock(&self.locations).get_mut(&ino) {
            chunks.clear();
        }
    }

    /// `ino` was opened: what others wrote and closed before must be visible now
    /// (close-to-open), so its cache starts empty; locations are cached from here on.
    pub fn opened(&self, ino: u64) {
        lock(&self.locations).entry(ino).or_default().clear();
    }

    /// The last handle of `ino` on this mount was released: its cache goes.
    pub fn released(&self, ino: u64) {
        lock(&self.locations).remove(&ino);
    }

    /// Caches a chunk reply if `ino` is (still) open.
    fn remember(&self, ino: u64, index: u64, c: &Arc<ChunkReply>) {
        if let Some(chunks) = lock(&self.locations).get_mut(&ino) {
            chunks.insert(index, c.clone());
        }
    }

    fn cached(&self, ino: u64, index: u64) -> Option<Arc<ChunkReply>> {
        lock(&self.locations).get(&ino)?.get(&index).cloned()
    }

    async fn chunk(&self, ino: u64, index: u64) -> Result<Arc<ChunkReply>, FsError> {
        if let Some(c) = self.cached(ino, index) {
            return Ok(c);
        }
        let c = Arc::new(self.master.read_chunk(ino, index).await?);
        self.remember(ino, index, &c);
        Ok(c)
    }

    /// Reads `[offset, offset + len)`; shorter at the end of the file.
    pub async fn read(&self, ino: u64, offset: u64, len: u64) -> Result<Bytes, FsError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(len);
        let first_index = offset / CHUNK_SIZE;
        if (end - 1) / CHUNK_SIZE == first_index {
            return self.read_in_chunk(ino, offset, len).await;
        }
        let mut out = BytesMut::with_capacity(len as usize);
        let mut pos = offset;
        while pos < end {
            let piece = (CHUNK_SIZE - pos % CHUNK_SIZE).min(end - pos);
            let data = self.read_in_chunk(ino, pos, piece).await?;
            out.extend_from_slice(&data);
            if (data.len() as u64) < piece {
                break;
            }
            pos += piece;
        }
        Ok(out.freeze())
    }

    /// Reads a range inside one chunk, trying every copy, re-asking the master between
    /// rounds (the chunk may have moved or changed version).
    async fn read_in_chunk(&self, ino: u64, offset: u64, len: u64) -> Result<Bytes, FsError> {
        let index = offset / CHUNK_SIZE;
        let mut last_error = FsError::Io("no copy of the chunk".into());
        for round in 0..READ_ROUNDS {
            // A new version (someone wrote) needs only fresh locations; a failure a pause.
            if round > 0 && !matches!(last_error, FsError::Stale(_)) {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(round))).await;
            }
            let info = self.chunk(ino, index).await?;
            if offset >= info.file_size {
                return Ok(Bytes::new());
            }
            let want = len.min(info.file_size - offset);
            if info.chunk_id == 0 {
                return Ok(Bytes::from(vec![0u8; want as usize]));
            }
            match self
                .read_copies(&info, (offset % CHUNK_SIZE) as u32, want as u32)
                .await
            {
                Ok(data) if data.len() as u64 >= want => return Ok(data),
                Ok(data) => {
                    // Past the chunk's stored bytes but inside the file: zeros.
                    let mut out = BytesMut::with_capacity(want as usize);
                    out.extend_from_slice(&data);
                    out.resize(want as usize, 0);
                    return Ok(out.freeze());
                }
                Err(e) => {
                    if round == 0 && matches!(e, FsError::Stale(_)) {
                        debug!(ino, index, "cached chunk version is old: {e}");
                    } else {
                        warn!(ino, index, round, "chunk read failed: {e}");
                    }
                    self.forget(ino);
                    last_error = e;
                }
            }
        }
        Err(FsError::Io(format!("all copies failed: {last_error}")))
    }

    async fn read_copies(
        &self,
        info: &ChunkReply,
        offset: u32,
        len: u32,
    ) -> Result<Bytes, FsError> {
        let mut last_error = FsError::Io("chunk has no valid copy".into());
        // The master's order, but servers that lately left a read waiting go last.
        let mut copies: Vec<_> = info.locations.iter().collect();
        copies.sort_by_key(|l| !self.servers.responsive(&l.addr));
        for (i, loc) in copies.iter().enumerate() {
            let read = self.read_copy(&loc.addr, info, offset, len);
            // With another copy to try, a server that does not answer (hung, its disk
            // stalled) is given up on soon; the last copy is waited for.
            let result = if i + 1 == copies.len() {
                read.await
            } else {
                tokio::time::timeout(FAILOVER_AFTER, read)
                    .await
                    .unwrap_or_else(|_| {
                        self.servers.note_unresponsive(&loc.addr);
                        Err(FsError::Unavailable(format!(
                            "no answer within {FAILOVER_AFTER:?}"
                        )))
                    })
            };
            match result {
                Ok(data) => return Ok(data),
                Err(e) => {
                    debug!(server = %loc.addr, chunk = info.chunk_id, "copy failed: {e}");
                    if matches!(e, FsError::Damaged(_)) {
                        let master = self.master.clone();
                        let (id, version, server) = (info.chunk_id, info.version, loc.server_id);
                        tokio::spawn(
                            async move { master.chunk_damaged(id, version, server).await },
                        );
                    }
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn read_copy(
        &self,
        addr: &str,
        info: &ChunkReply,
        offset: u32,
        len: u32,
    ) -> Result<Bytes, FsError> {
        let mut client = self.servers.client(addr)?;
        let mut parts: Vec<Bytes> = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let ask = (end - pos).min(MAX_IO);
            let req = ReadRequest {
                chunk_id: info.chunk_id,
                version: info.version,
                offset: pos,
                length: ask,
            };
            let data = client.read(req).await?.into_inner().data;
            let got = data.len() as u32;
            parts.push(data);
            if got < ask {
                break;
            }
            pos += got;
        }
        Ok(match parts.len() {
            1 => parts.swap_remove(0),
            _ => parts.concat().into(),
        })
    }

    /// A read through the open file's read-ahead: random reads go straight to the
    /// chunkservers; sequential ones are served from windows fetched ahead in parallel.
    pub async fn read_ahead(
        self: &Arc<Self>,
        ra: &Mutex<ReadAhead>,
        generation: u64,
        ino: u64,
        offset: u64,
        size: u64,
    ) -> Result<Bytes, FsError> {
        let end = offset.saturating_add(size);
        let plan: Vec<(u64, Fetch)> = {
            let mut ra = lock(ra);
            if ra.generation != generation {
                ra.windows.clear();
                ra.generation = generation;
            }
            let covered = ra
                .windows
                .range(..=offset)
                .next_back()
                .is_some_and(|(&s, _)| offset < s + WINDOW);
            let sequential = covered || (ra.next > 0 && offset.abs_diff(ra.next) <= SEQ_SLACK);
            ra.next = ra.next.max(end);
            if !sequential {
                ra.windows.clear();
                ra.seq_bytes = 0;
                ra.next = end;
                Vec::new()
            } else if ra.seq_bytes + size < SEQ_START {
                ra.seq_bytes += size;
                Vec::new()
            } else {
                ra.seq_bytes += size;
                let first = offset / WINDOW * WINDOW;
                ra.windows = ra.windows.split_off(&first);
                let ahead = ra.seq_bytes.clamp(WINDOW, MAX_AHEAD);
                let mut start = first;
                while start < end + ahead {
                    let at_eof = match ra.windows.get(&start) {
                        Some(f) => matches!(f.peek(), Some(Ok(d)) if (d.len() as u64) < WINDOW),
                        None => {
                            let reader = self.clone();
                            let fetch =
                                tokio::spawn(async move { reader.read(ino, start, WINDOW).await })
                                    .map(|r| {
                                        r.unwrap_or_else(|e| {
                                            Err(FsError::Io(format!("read-ahead task: {e}")))
                                        })
                                    })
                                    .boxed()
                                    .shared();
                            ra.windows.insert(start, fetch);
                            false
                        }
                    };
                    if at_eof {
                        break;
                    }
                    start += WINDOW;
                }
                ra.windows
                    .range(first..end)
                    .map(|(&s, f)| (s, f.clone()))
                    .collect()
            }
        };
        if plan.is_empty() {
            return self.read(ino, offset, size).await;
        }
        let mut out = BytesMut::new();
        for (start, fetch) in plan {
            let data = match fetch.await {
                Ok(d) => d,
                Err(e) => {
                    lock(ra).windows.clear();
                    return Err(e);
                }
            };
            let from = (offset.max(start) - start) as usize;
            let to = ((end.min(start + WINDOW) - start) as usize).min(data.len());
            if from >= to {
                break;
            }
            if out.is_empty() && (end <= start + WINDOW || to < WINDOW as usize) {
                // Served by one window: no copy.
                return Ok(data.slice(from..to));
            }
            out.extend_from_slice(&data[from..to]);
            if to < WINDOW as usize {
                break;
            }
        }
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader {
        Reader::new(
            Arc::new(Master::unconnected("127.0.0.1:1")),
            Arc::new(ChunkServers::default()),
        )
    }

    fn reply(chunk_id: u64) -> Arc<ChunkReply> {
        Arc::new(ChunkReply {
            chunk_id,
            version: 1,
            file_size: 10,
            locations: Vec::new(),
            create: false,
        })
    }

    #[tokio::test]
    async fn locations_are_cached_only_while_open() {
        let r = reader();
        // Not open: nothing is kept (e.g. a read-ahead finishing after the close).
        r.remember(7, 0, &reply(1));
        assert!(r.cached(7, 0).is_none());
        r.opened(7);
        r.remember(7, 0, &reply(1));
        r.remember(7, 1, &reply(2));
        r.opened(8);
        r.remember(8, 0, &reply(3));
        assert_eq!(r.cached(7, 1).map(|c| c.chunk_id), Some(2));
        // Errors drop the inode's entries but keep caching it.
        r.forget(7);
        assert!(r.cached(7, 0).is_none());
        r.remember(7, 0, &reply(1));
        assert!(r.cached(7, 0).is_some());
        // A new open starts empty (close-to-open).
        r.opened(7);
        assert!(r.cached(7, 0).is_none());
        r.remember(7, 0, &reply(1));
        // The last release forgets the inode entirely; others stay.
        r.released(7);
        assert!(r.cached(7, 0).is_none());
        assert!(!lock(&r.locations).contains_key(&7));
        assert_eq!(r.cached(8, 0).map(|c| c.chunk_id), Some(3));
        r.remember(7, 0, &reply(1));
        assert!(r.cached(7, 0).is_none());
    }
}
