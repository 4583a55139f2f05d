//! Where file data lives: chunk lookups for reads, chunk creation and version bumps for
//! writes (with write leases), the end of a write, and truncation.

use super::{explicit, now, versioned};
use crate::chunk_ops::FileChange;
use crate::cluster::Lease;
use crate::core::{Inner, Master};
use crate::placement;
use elkfs_proto::changelog::{record::Op, ReserveChunkIds, Truncate, WriteChunk, WriteEnd};
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::chunk::{CreateRequest, SetVersionRequest, TruncateRequest};
use elkfs_proto::limits::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::meta::{AttrReply, ChunkReply, ChunkRequest, Location, WriteEndRequest};
use elkfs_proto::FsError;
use futures::future::join_all;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tracing::{debug, info, warn, Instrument};

/// Chunk orders run while other changes to the file and chunkserver reports wait
/// (`chunk_ops`): a server that does not answer in time is treated as failed rather than
/// stalling them.
const ORDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The version a chunk is created at.
const NEW_VERSION: u32 = 1;
/// Creating an empty chunk file is quick on a working server; the file's next chunk
/// change waits no longer than this for one that hangs (whose copy then counts only if
/// the writer's data, acked by it, proves it).
const CREATE_TIMEOUT: Duration = Duration::from_secs(3);

fn check_index(index: u64) -> Result<(), FsError> {
    if index >= MAX_FILE_SIZE / CHUNK_SIZE {
        return Err(FsError::TooBig);
    }
    Ok(())
}

fn locations(inner: &Inner, servers: &[u64]) -> Vec<Location> {
    servers
        .iter()
        .filter_map(|&s| {
            inner.cluster.addr(s).map(|addr| Location {
                server_id: s,
                addr: addr.to_owned(),
            })
        })
        .collect()
}

impl Master {
    pub fn read_chunk(&self, ino: u64, index: u64) -> Result<ChunkReply, FsError> {
        check_index(index)?;
        let inner = self.lock();
        let file_size = inner.state.inode(ino)?.size();
        let chunk = inner.state.chunk_at(ino, index)?;
        if chunk == 0 || inner.cluster.unborn.contains_key(&chunk) {
            return Ok(ChunkReply {
                file_size,
                ..Default::default()
            });
        }
        let version = inner.state.chunks.get(&chunk).map_or(0, |c| c.version);
        let (mut servers, damaged) = inner.cluster.current_copies(chunk, version);
        if servers.is_empty() && damaged.is_empty() {
            return Err(FsError::Unavailable(format!(
                "no valid copy of chunk {chunk} is online"
            )));
        }
        // Spread readers of different chunks over the copies, from an order that does not
        // depend on history (by address, as fileinfo lists them); damaged copies are the
        // last resort (their intact blocks still read).
        servers.sort_by_key(|&s| inner.cluster.addr(s));
        let n = servers.len().max(1);
        servers.rotate_left(((ino ^ index) as usize) % n);
        servers.extend(damaged);
        Ok(ChunkReply {
            chunk_id: chunk,
            version,
            file_size,
            locations: locations(&inner, &servers),
            create: false,
        })
    }

    /// Join the chunk's write lease if it is usable as it is.
    fn join_lease(
        &self,
        inner: &mut Inner,
        req: &ChunkRequest,
    ) -> Result<Option<ChunkReply>, FsError> {
        let file_size = inner.state.inode(req.ino)?.size();
        let chunk = inner.state.chunk_at(req.ino, req.index)?;
        if chunk == 0 {
            return Ok(None);
        }
        let version = inner.state.chunks.get(&chunk).map_or(0, |c| c.version);
        let usable = inner.cluster.leases.get(&chunk).is_some_and(|l| {
            l.open()
                && l.version == version
                && l.chain
                    .iter()
                    .all(|s| !req.failed_servers.contains(s) && inner.cluster.is_up(*s))
        });
        if !usable {
            return Ok(None);
        }
        let chain = match inner.cluster.leases.get_mut(&chunk) {
            Some(l) => {
                l.sessions.insert(req.session);
                l.touched = Instant::now();
                l.chain.clone()
            }
            None => return Ok(None),
        };
        // Not `create`: a joiner may come after the chunk took acknowledged data, and an
        // empty copy it made where one went missing would lack that data.
        Ok(Some(ChunkReply {
            chunk_id: chunk,
            version,
            file_size,
            locations: locations(inner, &chain),
            create: false,
        }))
    }

    pub async fn write_chunk(self: &Arc<Self>, req: ChunkRequest) -> Result<ChunkReply, FsError> {
        check_index(req.index)?;
        if let Some(reply) = self.join_lease(&mut self.lock(), &req)? {
            return Ok(reply);
        }
        let serial = self.chunk_ops.file(req.ino).await;
        let (chunk, old, servers, reserved) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            if let Some(reply) = self.join_lease(inner, &req)? {
                return Ok(reply);
            }
            let goal = inner.state.inode(req.ino)?.goal as usize;
            let chunk = inner.state.chunk_at(req.ino, req.index)?;
            let old = inner.state.chunks.get(&chunk).map(|c| c.version);
            let reachable: Vec<u64> = old.map_or_else(Vec::new, |v| {
                inner
                    .cluster
                    .valid_copies(chunk, v)
                    .into_iter()
                    .filter(|s| !req.failed_servers.contains(s))
                    .collect()
            });
            // A chunk nothing acknowledged was written to, and that no server the writer
            // can reach holds (its create orders failed: the server died or hangs), is
            // placed anew like a hole. A writer whose data a server of it acked meanwhile
            // fails its write then, and so does the WriteEnd of the chunk it replaces.
            let replace = reachable.is_empty() && inner.cluster.unborn.contains_key(&chunk);
            match old {
                Some(old) if !replace => {
                    if reachable.is_empty() {
                        return Err(FsError::Unavailable(format!(
                            "no reachable valid copy of chunk {chunk} to write"
                        )));
                    }
                    (chunk, Some(old), reachable, None)
                }
                _ => {
                    let candidates = inner.cluster.candidates(Instant::now());
                    if candidates.is_empty() {
                        // Right after a master restart, before the chunkservers registered
                        // again: worth retrying, unlike a full cluster.
                        return Err(FsError::Unavailable("no chunkserver is connected".into()));
                    }
                    let servers = placement::choose(&candidates, goal, &req.failed_servers);
                    if servers.is_empty() {
                        return Err(FsError::NoSpace);
                    }
                    inner.cluster.note_placed(&servers);
                    let (id, extend) = inner.cluster.next_chunk_id(inner.state.next_chunk_id);
                    if let Some(end) = extend {
                        inner.cluster.reserved_at = self.commit(
                            inner,
                            Op::ReserveChunkIds(ReserveChunkIds { next_chunk_id: end }),
                        )?;
                    }
                    (id, None, servers, Some(inner.cluster.reserved_at))
                }
            }
        };
        if let Some(v) = reserved {
            // The id is handed to chunkservers only once its reservation is on disk (a
            // change to another file may have logged it a moment ago).
            self.durable(v).await?;
        }
        match old {
            None => self.create_chunk(serial, &req, chunk, servers),
            Some(old) => self.bump_version(&req, chunk, old, &servers).await,
        }
    }

    /// Hands out new chunk `chunk` on `chain` at once: before its record is durable (its
    /// id is reserved durably, so never reused, and a WriteEnd, which makes its data
    /// count, fails if a crash lost the record), and before any chunkserver made it (the
    /// writer's first stream makes it where the master's create orders, sent meanwhile,
    /// have not yet). Waiting for those orders cost every new file a round trip to its
    /// chunkservers. They keep `serial`, so the file's next chunk change (or a WriteEnd on
    /// the chunk) starts only once they are settled.
    fn create_chunk(
        self: &Arc<Self>,
        serial: FileChange,
        req: &ChunkRequest,
        chunk: u64,
        chain: Vec<u64>,
    ) -> Result<ChunkReply, FsError> {
        let (logged, reply) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let out = self.log_and_lease(inner, req, chunk, NEW_VERSION, true, &chain)?;
            inner.cluster.unborn.insert(chunk, chain.clone());
            out
        };
        let master = Arc::clone(self);
        let orders = async move {
            let _serial = serial;
            let creates = master.fan_out(
                chunk,
                NEW_VERSION,
                &chain,
                CREATE_TIMEOUT,
                |mut client| async move {
                    client
                        .create(CreateRequest {
                            chunk_id: chunk,
                            version: NEW_VERSION,
                        })
                        .await
                        .map(drop)
                },
            );
            // The record goes to disk (and to waited-for metaloggers) now, alongside the
            // writer's data, not only with its WriteEnd: a master lost before that fails
            // the write in flight, whose WriteEnd then finds no such chunk.
            let (made, durable) = tokio::join!(creates, master.durable(logged));
            if let Err(e) = durable {
                debug!(chunk, "the new chunk's record is not durable: {e}");
            }
            let made = made.unwrap_or_else(|e| {
                warn!(chunk, "no chunkserver created the new chunk: {e}");
                Vec::new()
            });
            let mut guard = master.lock();
            let inner = &mut *guard;
            if inner.state.chunks.contains_key(&chunk) {
                master.set_copies(inner, chunk, NEW_VERSION, &made);
            } else {
                // Its file went away meanwhile: the new copies belong to nobody.
                for &s in &made {
                    master.queue_delete(s, chunk, NEW_VERSION);
                }
            }
        };
        tokio::spawn(orders.instrument(tracing::Span::current()));
        Ok(reply)
    }

    /// Moves `chunk` from version `old` to the next on `servers` (its valid copies the
    /// writer can reach), then logs it and leases it; the copies left out are stale from
    /// then on.
    async fn bump_version(
        &self,
        req: &ChunkRequest,
        chunk: u64,
        old: u32,
        servers: &[u64],
    ) -> Result<ChunkReply, FsError> {
        let version = old + 1;
        let chain = self
            .fan_out(
                chunk,
                version,
                servers,
                ORDER_TIMEOUT,
                |mut client| async move {
                    client
                        .set_version(SetVersionRequest {
                            chunk_id: chunk,
                            old_version: old,
                            new_version: version,
                        })
                        .await
                        .map(drop)
                },
            )
            .await?;
        let (v, reply) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let out = self.log_and_lease(inner, req, chunk, version, false, &chain)?;
            self.set_copies(inner, chunk, version, &chain);
            out
        };
        // WriteEnd checks only the chunk id: after a crash that lost this record, the
        // copies at the older version would serve the written range.
        self.durable(v).await?;
        Ok(reply)
    }

    /// Logs `chunk` at `version` as the writer's chunk (`created`: a new one), leases it
    /// to the writer on `chain` and makes its answer; returns the record's version too.
    fn log_and_lease(
        &self,
        inner: &mut Inner,
        req: &ChunkRequest,
        chunk: u64,
        version: u32,
        created: bool,
        chain: &[u64],
    ) -> Result<(u64, ChunkReply), FsError> {
        let logged = self.commit(
            inner,
            Op::WriteChunk(WriteChunk {
                ino: req.ino,
                index: req.index,
                chunk_id: chunk,
                version,
                created,
            }),
        )?;
        inner.cluster.leases.insert(
            chunk,
            Lease {
                version,
                chain: chain.to_vec(),
                sessions: HashSet::from([req.session]),
                touched: Instant::now(),
            },
        );
        let reply = ChunkReply {
            chunk_id: chunk,
            version,
            file_size: inner.state.inode(req.ino)?.size(),
            locations: locations(inner, chain),
            create: created,
        };
        Ok((logged, reply))
    }

    /// Send one chunk order to each of `servers` at once, each given `timeout`. Returns
    /// the servers that carried it out, in the given order (the first is the client's
    /// entry to the chain). A server that failed or timed out may still carry it out
    /// later; it is remembered as suspect at `version` so that copy is never trusted.
    async fn fan_out<F, Fut>(
        &self,
        chunk: u64,
        version: u32,
        servers: &[u64],
        timeout: Duration,
        call: F,
    ) -> Result<Vec<u64>, FsError>
    where
        F: Fn(ChunkClient<Channel>) -> Fut,
        Fut: Future<Output = Result<(), tonic::Status>>,
    {
        let clients: Vec<_> = {
            let inner = self.lock();
            servers
                .iter()
                .filter_map(|&s| inner.cluster.client(s).map(|c| (s, c)))
                .collect()
        };
        let calls = clients.into_iter().map(|(s, (addr, client))| {
            let call = call(client);
            async move {
                let r = match tokio::time::timeout(timeout, call).await {
                    Ok(r) => r.map_err(FsError::from),
                    Err(_) => Err(FsError::Unavailable(
                        "chunkserver did not answer in time".into(),
                    )),
                };
                (s, addr, r)
            }
        });
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (s, addr, r) in join_all(calls).await {
            match r {
                Ok(()) => ok.push(s),
                Err(e) => {
                    warn!(chunk, version, server = %addr, error = %e, "chunk order failed");
                    let mut inner = self.lock();
                    inner.cluster.suspect(chunk, s, version);
                    if matches!(e, FsError::Unavailable(_)) {
                        inner.cluster.rest(s, Instant::now());
                    }
                    errors.push(e);
                }
            }
        }
        if ok.is_empty() {
            return Err(
                if !errors.is_empty() && errors.iter().all(|e| *e == FsError::NoSpace) {
                    FsError::NoSpace
                } else {
                    FsError::Unavailable(format!(
                        "no chunkserver carried out the order for chunk {chunk}"
                    ))
                },
            );
        }
        ok.sort_by_key(|s| servers.iter().position(|x| x == s));
        Ok(ok)
    }

    pub async fn write_end(&self, req: WriteEndRequest) -> Result<AttrReply, FsError> {
        if req.file_size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        if !req.failed && self.lock().cluster.unborn.contains_key(&req.chunk_id) {
            // Its create orders hold the file's chunk changes until they are settled: the
            // copies this write proves go on top of what they found.
            drop(self.chunk_ops.file(req.ino).await);
        }
        self.mutate(|m, inner| {
            if let Some(l) = inner.cluster.leases.get_mut(&req.chunk_id) {
                l.sessions.remove(&req.session);
                if req.failed {
                    // Some copy may have missed bytes: the next writer bumps the version.
                    inner.cluster.leases.remove(&req.chunk_id);
                } else if l.sessions.is_empty() {
                    l.touched = Instant::now();
                }
            }
            if req.failed {
                let a = inner.state.inode(req.ino)?.attr();
                return Ok((inner.state.version, versioned(inner, a)));
            }
            // The chunk is not the file's there (any more): truncated away meanwhile, or a
            // writer joined the lease of a WriteChunk that never became durable before its
            // master (or the standby promoted in its place) restarted. Either way the data
            // written under it is not in the file: an error, not a size over a hole.
            let current = inner.state.chunk_at(req.ino, req.index)?;
            if current != req.chunk_id {
                return Err(FsError::Stale(format!(
                    "chunk {} is no longer chunk {} of inode {} (now {current}): the write is lost",
                    req.chunk_id, req.index, req.ino
                )));
            }
            let v = m.commit(
                inner,
                Op::WriteEnd(WriteEnd {
                    ino: req.ino,
                    size: req.file_size,
                    time: now(),
                    atime: explicit(&req.atime),
                    mtime: explicit(&req.mtime),
                }),
            )?;
            if let Some(chain) = inner.cluster.unborn.remove(&req.chunk_id) {
                // The writer's data was acked by the whole chain the chunk was created on,
                // unless the chunk moved to a new version since (which set its copies).
                let version = inner.state.chunks.get(&req.chunk_id).map(|c| c.version);
                if version == Some(NEW_VERSION) {
                    inner.cluster.proven(req.chunk_id, NEW_VERSION, &chain);
                }
            }
            let a = inner.state.inode(req.ino)?.attr();
            Ok((v, versioned(inner, a)))
        })
        .await
    }

    /// Set a file's length. A cut inside a chunk is done on every valid copy first (under
    /// a new version, so a copy that missed it is stale), then logged.
    pub async fn truncate(&self, ino: u64, size: u64) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let _serial = self.chunk_ops.file(ino).await;
        let cut = {
            let inner = self.lock();
            let node = inner.state.inode(ino)?;
            if node.is_dir() {
                return Err(FsError::IsDir);
            }
            let chunk = inner.state.chunk_at(ino, size / CHUNK_SIZE)?;
            if size < node.size() && !size.is_multiple_of(CHUNK_SIZE) && chunk != 0 {
                let old = inner.state.chunks.get(&chunk).map_or(0, |c| c.version);
                Some((chunk, old, inner.cluster.valid_copies(chunk, old)))
            } else {
                None
            }
        };
        let (chunk, version, holders) = match cut {
            Some((chunk, old, servers)) => {
                let (new, length) = (old + 1, (size % CHUNK_SIZE) as u32);
                let holders = self
                    .fan_out(
                        chunk,
                        new,
                        &servers,
                        ORDER_TIMEOUT,
                        |mut client| async move {
                            client
                                .truncate(TruncateRequest {
                                    chunk_id: chunk,
                                    old_version: old,
                                    new_version: new,
                                    length,
                                })
                                .await
                                .map(drop)
                        },
                    )
                    .await?;
                (chunk, new, holders)
            }
            None => (0, 0, Vec::new()),
        };
        self.mutate(|m, inner| {
            let v = m.commit(
                inner,
                Op::Truncate(Truncate {
                    ino,
                    size,
                    time: now(),
                    cut_chunk_id: chunk,
                    cut_version: version,
                }),
            )?;
            if chunk != 0 {
                inner.cluster.leases.remove(&chunk);
                m.set_copies(inner, chunk, version, &holders);
            }
            Ok((v, ()))
        })
        .await
    }

    /// A CRC failure was reported (by a chunkserver's scrub or read, or by a client) for
    /// a copy: it no longer counts as valid and the healer replaces it. It stays listed
    /// for reads, last, so its intact blocks remain readable until then.
    pub fn chunk_damaged(&self, chunk: u64, version: u32, server: u64) {
        if self.lock().cluster.mark_damaged(chunk, server, version) {
            info!(chunk, version, server, "chunk copy damaged");
        } else {
            debug!(
                chunk,
                version, server, "damage reported for an unknown copy"
            );
        }
    }
}
