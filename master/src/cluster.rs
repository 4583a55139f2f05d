//! Soft state the master rebuilds from chunkserver reports: which servers exist, which
//! copy of which chunk each holds, and which chunks are leased to writers. None of this is
//! in the changelog; after a master restart the servers simply register again.

use crate::placement::Candidate;
use elkfs_proto::admin::{CopyInfo, CopyState};
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::registry::{ChunkInfo, Space};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Chunk ids reserved in the log at a time (one record per this many new chunks).
const CHUNK_ID_BLOCK: u64 = 1024;

pub struct Server {
    pub id: u64,
    pub uuid: String,
    pub addr: String,
    pub space: Space,
    pub last_seen: Instant,
    pub connected: bool,
    pub client: ChunkClient<Channel>,
    /// Chunks placed here since the last report (placement's load estimate).
    pub placed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub server: u64,
    pub version: u32,
}

/// A chunk open for writing. Writers in the lease share its version, so a stream of writes
/// costs one version bump, not one per write.
pub struct Lease {
    pub version: u32,
    pub chain: Vec<u64>,
    pub sessions: HashSet<u64>,
    pub touched: Instant,
}

/// What a registration found, for the caller to act on.
#[derive(Default, Debug)]
pub struct Reconciled {
    pub valid: usize,
    /// Copies to delete on the registering server (chunk, reported version): unknown or
    /// stale chunks, or copies whose last order failed.
    pub delete: Vec<(u64, u32)>,
    /// Copies newer than the metadata: the master died between bumping and logging.
    pub adopt: Vec<(u64, u32)>,
}

#[derive(Default)]
pub struct Cluster {
    pub servers: HashMap<u64, Server>,
    by_uuid: HashMap<String, u64>,
    next_server_id: u64,
    pub locations: HashMap<u64, Vec<Copy>>,
    pub leases: HashMap<u64, Lease>,
    /// (chunk, server) → version an order may have moved the copy to although it failed
    /// or timed out. Such a copy missed later writes: never accept it, delete it.
    suspects: HashMap<(u64, u64), u32>,
    /// Next chunk id to hand out; ids are reserved in the log in blocks ahead of it.
    next_chunk_id: u64,
}

impl Cluster {
    /// Register (or re-register) a server; returns its id. Its previous copies are
    /// forgotten: the report that follows is the truth.
    pub fn register(
        &mut self,
        uuid: &str,
        addr: &str,
        space: Space,
        client: ChunkClient<Channel>,
    ) -> u64 {
        let id = match self.by_uuid.get(uuid) {
            Some(&id) => id,
            None => {
                self.next_server_id += 1;
                self.by_uuid.insert(uuid.to_owned(), self.next_server_id);
                self.next_server_id
            }
        };
        self.forget_copies(id);
        self.servers.insert(
            id,
            Server {
                id,
                uuid: uuid.to_owned(),
                addr: addr.to_owned(),
                space,
                last_seen: Instant::now(),
                connected: true,
                client,
                placed: 0,
            },
        );
        id
    }

    fn forget_copies(&mut self, server: u64) {
        self.locations.retain(|_, copies| {
            copies.retain(|c| c.server != server);
            !copies.is_empty()
        });
    }

    /// Compare a server's report with the metadata's chunk versions (`known`).
    pub fn reconcile(
        &mut self,
        server: u64,
        chunks: &[ChunkInfo],
        known: impl Fn(u64) -> Option<u32>,
    ) -> Reconciled {
        let mut out = Reconciled::default();
        for c in chunks {
            let suspect = self.suspects.get(&(c.chunk_id, server)) == Some(&c.version);
            match known(c.chunk_id) {
                None => {
                    self.skip_chunk_id(c.chunk_id);
                    out.delete.push((c.chunk_id, c.version));
                }
                Some(v) if c.version < v || suspect => out.delete.push((c.chunk_id, c.version)),
                Some(v) => {
                    if c.version > v {
                        out.adopt.push((c.chunk_id, c.version));
                    }
                    self.add_copy(c.chunk_id, server, c.version);
                    out.valid += 1;
                }
            }
        }
        out
    }

    /// An order to move `chunk` on `server` to `version` failed or timed out: it may still
    /// have happened, so that copy is not trusted at that version.
    pub fn suspect(&mut self, chunk: u64, server: u64, version: u32) {
        self.suspects.insert((chunk, server), version);
    }

    /// The next chunk id, never handed out before. Returns it and, when it reaches the end
    /// of the block reserved in the log (`reserved`), the new end to reserve first.
    pub fn next_chunk_id(&mut self, reserved: u64) -> (u64, Option<u64>) {
        if self.next_chunk_id == 0 {
            // After a start every id below the reserved end may have been used.
            self.next_chunk_id = reserved;
        }
        let id = self.next_chunk_id;
        self.next_chunk_id += 1;
        let extend = (id >= reserved).then_some(id + CHUNK_ID_BLOCK);
        (id, extend)
    }

    /// A server reported a chunk the log does not know: its id must not be handed out.
    pub fn skip_chunk_id(&mut self, id: u64) {
        if self.next_chunk_id != 0 {
            self.next_chunk_id = self.next_chunk_id.max(id + 1);
        }
    }

    /// The chunk is gone from the metadata: forget everything about it.
    pub fn forget_chunk(&mut self, chunk: u64) -> Vec<Copy> {
        self.leases.remove(&chunk);
        self.suspects.retain(|(c, _), _| *c != chunk);
        self.locations.remove(&chunk).unwrap_or_default()
    }

    pub fn add_copy(&mut self, chunk: u64, server: u64, version: u32) {
        let copies = self.locations.entry(chunk).or_default();
        match copies.iter_mut().find(|c| c.server == server) {
            Some(c) => c.version = version,
            None => copies.push(Copy { server, version }),
        }
    }

    pub fn drop_copy(&mut self, chunk: u64, server: u64) {
        if let Some(copies) = self.locations.get_mut(&chunk) {
            copies.retain(|c| c.server != server);
            if copies.is_empty() {
                self.locations.remove(&chunk);
            }
        }
    }

    /// Servers holding `version` of `chunk` that are connected now.
    pub fn valid_copies(&self, chunk: u64, version: u32) -> Vec<u64> {
        self.locations
            .get(&chunk)
            .map(|copies| {
                copies
                    .iter()
                    .filter(|c| c.version == version && self.is_up(c.server))
                    .map(|c| c.server)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every copy of `chunk` the master knows of and what it is worth, for `elkfs fileinfo`.
    /// `version` is the chunk's version in the metadata.
    pub fn copy_info(&self, chunk: u64, version: u32) -> Vec<CopyInfo> {
        let Some(copies) = self.locations.get(&chunk) else {
            return Vec::new();
        };
        copies
            .iter()
            .map(|c| {
                let state = if !self.is_up(c.server) {
                    CopyState::Offline
                } else if c.version != version {
                    CopyState::Stale
                } else {
                    CopyState::Valid
                };
                CopyInfo {
                    server_id: c.server,
                    addr: self.addr(c.server).unwrap_or_default().to_owned(),
                    version: c.version,
                    state: state.into(),
                }
            })
            .collect()
    }

    pub fn is_up(&self, server: u64) -> bool {
        self.servers.get(&server).is_some_and(|s| s.connected)
    }

    pub fn heartbeat(&mut self, server: u64, space: Space) -> bool {
        match self.servers.get_mut(&server) {
            Some(s) => {
                s.space = space;
                s.last_seen = Instant::now();
                s.placed = 0;
                if !s.connected {
                    // Back after a silence: its copies may have changed, ask for a report.
                    return false;
                }
                true
            }
            None => false,
        }
    }

    /// Mark servers silent for longer than `timeout` as disconnected.
    pub fn expire(&mut self, timeout: Duration) -> Vec<u64> {
        let mut gone = Vec::new();
        for s in self.servers.values_mut() {
            if s.connected && s.last_seen.elapsed() > timeout {
                s.connected = false;
                gone.push(s.id);
            }
        }
        gone
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        self.servers
            .values()
            .filter(|s| s.connected)
            .map(|s| Candidate {
                id: s.id,
                avail: s.space.avail_bytes,
                chunks: s.space.chunks + s.placed,
            })
            .collect()
    }

    pub fn note_placed(&mut self, servers: &[u64]) {
        for id in servers {
            if let Some(s) = self.servers.get_mut(id) {
                s.placed += 1;
            }
        }
    }

    pub fn addr(&self, server: u64) -> Option<&str> {
        self.servers.get(&server).map(|s| s.addr.as_str())
    }

    pub fn client(&self, server: u64) -> Option<(String, ChunkClient<Channel>)> {
        self.servers
            .get(&server)
            .map(|s| (s.addr.clone(), s.client.clone()))
    }

    /// Drop leases no writer touched for `idle` (a client died mid-write).
    pub fn expire_leases(&mut self, idle: Duration) {
        self.leases.retain(|_, l| l.touched.elapsed() < idle);
    }
}
