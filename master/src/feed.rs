//! What metaloggers follow: the newest image when they need one, then every record after it,
//! first read back from the changelog files (catch-up), then live from a broadcast that
//! [`Master::commit`] feeds. Only records that are durable on the master leave it, so a
//! metalogger never holds a record the master could lose in a crash and later reuse the
//! version of. Versions are sent strictly consecutively; the metalogger checks that again.
//!
//! Also the acks: each metalogger reports the last version it has on disk, and with
//! `sync_metaloggers = N` a request is answered only once N metaloggers have its record.

use crate::core::Master;
use crate::files;
use crate::frame::FrameReader;
use elkfs_proto::feed::{follow_reply::Item, FeedRecord, FollowReply, ImagePiece, RecordBatch};
use elkfs_proto::FsError;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, warn};

/// Image bytes per message.
const IMAGE_PIECE: usize = 1 << 20;
/// Records per message, at most.
const BATCH: usize = 1024;
/// Payload bytes per message, at most (plus one record): a metalogger takes a message
/// only when it fits in its disk's room with a margin (`Changelog::wait_for_room`).
const BATCH_BYTES: usize = 256 << 10;
/// Live records buffered per follower; a follower further behind re-reads the files.
const LIVE_CAPACITY: usize = 1 << 14;
/// With no request waiting for metaloggers, a live record waits this long for others to
/// share its message: one message per record cost the master and the metalogger about
/// 90 µs of CPU per record, and the metalogger syncs at most every 10 ms anyway.
const GATHER: Duration = Duration::from_millis(5);

/// A committed record as the changelog got it.
#[derive(Clone)]
pub struct Live {
    pub version: u64,
    pub payload: Arc<[u8]>,
    pub committed_unix_micros: u64,
}

pub struct Feed {
    live: broadcast::Sender<Live>,
    /// Metalogger name → last version it has durably.
    acks: watch::Sender<HashMap<String, u64>>,
    /// Turned true at shutdown: follower streams never end by themselves, and the server
    /// waits for open streams before it exits.
    closing: watch::Sender<bool>,
    sync: usize,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "metalogger holds version {from} but this master is at {master}: it followed \
         another history (e.g. before a restore); give it an empty data directory"
    )]
    Ahead { from: u64, master: u64 },
    #[error("master changelog: {0}")]
    Log(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("metadata is not durable on the master: {0}")]
    NotDurable(FsError),
    #[error("the follower went away")]
    Closed,
}

impl From<FeedError> for FsError {
    fn from(e: FeedError) -> FsError {
        match e {
            FeedError::Ahead { .. } => FsError::Stale(e.to_string()),
            FeedError::Log(_) => FsError::Damaged(e.to_string()),
            FeedError::Io(_) | FeedError::NotDurable(_) => FsError::Io(e.to_string()),
            FeedError::Closed => FsError::Unavailable(e.to_string()),
        }
    }
}

pub type Sink = mpsc::Sender<Result<FollowReply, tonic::Status>>;

impl Feed {
    /// `sync`: metaloggers that must have a record before a client is answered (0: none);
    /// `timeout`: how long to wait for them before failing the request.
    pub fn new(sync: usize, timeout: Duration) -> Feed {
        Feed {
            live: broadcast::channel(LIVE_CAPACITY).0,
            acks: watch::channel(HashMap::new()).0,
            closing: watch::channel(false).0,
            sync,
            timeout,
        }
    }

    /// Called for each committed record, in version order (under the state lock).
    pub fn publish(&self, version: u64, payload: Vec<u8>) {
        if self.live.receiver_count() == 0 {
            return;
        }
        let committed_unix_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        // No receiver left in between is fine: the next follower starts from the files.
        let _ = self.live.send(Live {
            version,
            payload: payload.into(),
            committed_unix_micros,
        });
    }

    /// End every follower stream (at shutdown); metaloggers reconnect to the next master.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn ack(&self, name: &str, version: u64) {
        self.acks.send_modify(|m| {
            // The latest report wins, lower or not: a metalogger that restarted from an
            // empty directory really has less.
            m.insert(name.to_owned(), version);
        });
    }

    /// With `sync_metaloggers = N`, wait until N metaloggers have `version` on disk.
    pub async fn replicated(&self, version: u64) -> Result<(), FsError> {
        if self.sync == 0 {
            return Ok(());
        }
        let enough =
            |m: &HashMap<String, u64>| m.values().filter(|&&v| v >= version).count() >= self.sync;
        let mut rx = self.acks.subscribe();
        if tokio::time::timeout(self.timeout, rx.wait_for(enough))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return Ok(());
        }
        let have = rx.borrow().values().filter(|&&v| v >= version).count();
        warn!(
            version,
            have,
            need = self.sync,
            timeout_ms = self.timeout.as_millis() as u64,
            "record not confirmed by enough metaloggers: failing the request (the change \
             is applied and durable on the master)"
        );
        Err(FsError::Io(format!(
            "metadata version {version} reached {have} of {} metaloggers",
            self.sync
        )))
    }
}

/// Stream everything after `from` to `sink` until the follower goes away.
pub async fn follow(
    master: Arc<Master>,
    from: u64,
    want_image: bool,
    sink: Sink,
) -> Result<(), FeedError> {
    // Subscribe first: every record committed from here on is in `live`, every earlier one
    // is (or is about to be) in the files.
    let mut live = master.feed.live.subscribe();
    let mut closing = master.feed.closing.subscribe();
    let current = master.metadata_version();
    if from > current {
        return Err(FeedError::Ahead {
            from,
            master: current,
        });
    }
    let dir = master.config.data_dir.clone();
    let awaited = master.feed.sync > 0;
    let mut cursor = from;
    if from == 0 || want_image || !in_files(&dir, from + 1)? {
        cursor = send_image(dir.clone(), from, sink.clone()).await?;
    }
    master
        .locally_durable(current)
        .await
        .map_err(FeedError::NotDurable)?;
    cursor = send_from_files(dir.clone(), cursor, current, awaited, sink.clone()).await?;
    debug!(version = cursor, "follower caught up from files, now live");
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            // Do not keep an idle master's follower task around after the follower left.
            _ = sink.closed() => return Ok(()),
            _ = closing.wait_for(|c| *c) => return Ok(()),
        };
        let first = match received {
            Ok(l) => l,
            // The oldest record still buffered comes next; the files fill the gap.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                debug!(skipped = n, "follower lagged behind the live feed");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if !awaited {
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = sink.closed() => return Ok(()),
                _ = closing.wait_for(|c| *c) => return Ok(()),
            }
        }
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match live.try_recv() {
                Ok(l) => {
                    bytes += l.payload.len();
                    batch.push(l);
                }
                // Lagged inside a batch: stop here so the batch stays consecutive.
                Err(_) => break,
            }
        }
        batch.retain(|l| l.version > cursor);
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            continue;
        };
        let (first, last) = (first.version, last.version);
        master
            .locally_durable(last)
            .await
            .map_err(FeedError::NotDurable)?;
        if first > cursor + 1 {
            send_from_files(dir.clone(), cursor, first - 1, awaited, sink.clone()).await?;
        }
        let records = batch
            .into_iter()
            .map(|l| FeedRecord {
                version: l.version,
                payload: l.payload.to_vec(),
                committed_unix_micros: l.committed_unix_micros,
            })
            .collect();
        sink.send(Ok(records_reply(records, awaited)))
            .await
            .map_err(|_| FeedError::Closed)?;
        cursor = last;
    }
}

fn records_reply(records: Vec<FeedRecord>, awaited: bool) -> FollowReply {
    FollowReply {
        item: Some(Item::Records(RecordBatch { records, awaited })),
    }
}

/// Does some changelog file start at or before `version`? (Then the files hold it, unless
/// they are damaged, which reading reports.)
fn in_files(dir: &Path, version: u64) -> std::io::Result<bool> {
    Ok(files::changelogs(dir)?
        .iter()
        .any(|(start, _)| *start <= version))
}

/// Send the newest image; returns the version the follower holds afterwards.
async fn send_image(dir: PathBuf, from: u64, sink: Sink) -> Result<u64, FeedError> {
    tokio::task::spawn_blocking(move || {
        let (version, path) = files::images(&dir)?
            .pop()
            .ok_or_else(|| FeedError::Log("no metadata image on the master".into()))?;
        debug!(version, path = %path.display(), "sending metadata image");
        let mut file = File::open(&path)?;
        let len = file.metadata()?.len();
        let mut offset = 0u64;
        loop {
            let mut data = Vec::with_capacity(IMAGE_PIECE);
            (&mut file)
                .take(IMAGE_PIECE as u64)
                .read_to_end(&mut data)?;
            let n = data.len() as u64;
            let last = offset + n >= len || n == 0;
            let piece = ImagePiece {
                version,
                offset,
                data,
                last,
            };
            sink.blocking_send(Ok(FollowReply {
                item: Some(Item::Image(piece)),
            }))
            .map_err(|_| FeedError::Closed)?;
            offset += n;
            if last {
                return Ok(version.max(from));
            }
        }
    })
    .await
    .map_err(|e| FeedError::Io(std::io::Error::other(e)))?
}

/// Send records `after + 1 ..= upto` from the changelog files; returns `upto`.
async fn send_from_files(
    dir: PathBuf,
    after: u64,
    upto: u64,
    awaited: bool,
    sink: Sink,
) -> Result<u64, FeedError> {
    if upto <= after {
        return Ok(after);
    }
    tokio::task::spawn_blocking(move || {
        read_files(&dir, after, upto, &mut |records| {
            sink.blocking_send(Ok(records_reply(records, awaited)))
                .map_err(|_| FeedError::Closed)
        })
    })
    .await
    .map_err(|e| FeedError::Io(std::io::Error::other(e)))?
}

/// Read records `after + 1 ..= upto` (all durable) from the changelog files in `dir`,
/// handing them to `emit` in batches; fails on a gap, a duplicate or a damaged frame.
pub fn read_files(
    dir: &Path,
    after: u64,
    upto: u64,
    emit: &mut dyn FnMut(Vec<FeedRecord>) -> Result<(), FeedError>,
) -> Result<u64, FeedError> {
    let logs = files::changelogs(dir)?;
    let mut cursor = after;
    let mut batch = Vec::new();
    let mut bytes = 0;
    'files: for (i, (start, path)) in logs.iter().enumerate() {
        if logs.get(i + 1).is_some_and(|(next, _)| *next <= cursor + 1) {
            continue;
        }
        if *start > cursor + 1 {
            return Err(FeedError::Log(format!(
                "{} starts at version {start}; version {} is in no file",
                path.display(),
                cursor + 1
            )));
        }
        let file = File::open(path)?;
        for frame in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
            // The live file may end in a half-written frame, but only after `upto`, where
            // reading has already stopped.
            let f = frame.map_err(|e| FeedError::Log(format!("{}: {e}", path.display())))?;
            if f.version <= cursor {
                continue;
            }
            if f.version != cursor + 1 {
                return Err(FeedError::Log(format!(
                    "{} at byte {}: version {} follows {cursor}",
                    path.display(),
                    f.offset,
                    f.version
                )));
            }
            bytes += f.payload.len();
            batch.push(FeedRecord {
                version: f.version,
                payload: f.payload,
                committed_unix_micros: 0,
            });
            cursor = f.version;
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                emit(std::mem::take(&mut batch))?;
                bytes = 0;
            }
            if cursor == upto {
                break 'files;
            }
        }
    }
    if !batch.is_empty() {
        emit(batch)?;
    }
    if cursor < upto {
        return Err(FeedError::Log(format!(
            "changelog files end at version {cursor}, the master is at {upto}"
        )));
    }
    Ok(cursor)
}
