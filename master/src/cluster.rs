//! Soft state the master rebuilds from chunkserver reports: which servers exist, which
//! copy of which chunk each holds, and which chunks are leased to writers. None of this is
//! in the changelog; after a master restart the servers simply register again.

use crate::placement::Candidate;
use crate::planner::{InFlight, ServerView};
use elkfs_proto::admin::{CopyInfo, CopyState};
use elkfs_proto::buckets::{bucket_of, Digest, BUCKETS};
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::registry::{BucketDigest, ChunkInfo, Space};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Chunk ids reserved in the log at a time (one record per this many new chunks).
const CHUNK_ID_BLOCK: u64 = 1024;
/// How long a server whose chunk order timed out or failed to arrive gets no new chunks.
pub const PLACEMENT_REST: Duration = Duration::from_secs(30);

pub struct Server {
    pub id: u64,
    pub uuid: String,
    pub addr: String,
    pub space: Space,
    pub last_seen: Instant,
    pub connected: bool,
    /// When it stopped heartbeating (its grace period runs from here).
    pub away_since: Option<Instant>,
    /// Planned restart: its copies are not re-replicated while it is away.
    pub maintenance: bool,
    pub client: ChunkClient<Channel>,
    /// Chunks placed here since the last report (placement's load estimate).
    pub placed: u64,
    /// An order to it timed out or was not delivered: no new chunks go here before this.
    resting_until: Option<Instant>,
    /// What the master believes the server holds, per bucket.
    digests: Box<[Digest; BUCKETS]>,
    /// Buckets asked for at the last registration and not reported yet.
    pending: HashSet<u8>,
    /// What its last registration listed.
    pub listed_buckets: u64,
    pub listed_chunks: u64,
    pub replications_in: u64,
    pub replications_out: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub server: u64,
    pub version: u32,
    /// CRC failures were reported for it: read only as a last resort, being replaced.
    pub damaged: bool,
}

/// How long a lease outlives its last writer's successful WriteEnd. A writer that writes
/// again soon (write, fsync, write, fsync …) joins it instead of bumping the version: a bump
/// is a chunk order with two syncs on every copy, then a changelog sync.
pub const LINGER: Duration = Duration::from_secs(2);

/// A chunk open for writing. Writers in the lease share its version, so a stream of writes
/// costs one version bump, not one per write.
pub struct Lease {
    pub version: u32,
    pub chain: Vec<u64>,
    pub sessions: HashSet<u64>,
    /// When a writer last joined, or the last one left.
    pub touched: Instant,
}

impl Lease {
    /// Whether a writer may join: one still writes, or the last left under [`LINGER`] ago.
    pub fn open(&self) -> bool {
        !self.sessions.is_empty() || self.touched.elapsed() < LINGER
    }
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
    /// Every copy the master knows of, also on servers that are away. A persistent map, so
    /// the healer takes a view in O(1). Changed only through the methods below, which keep
    /// the servers' bucket digests in step.
    pub locations: imbl::HashMap<u64, Vec<Copy>>,
    pub leases: HashMap<u64, Lease>,
    /// Chunks this master created that no write has ended on yet, with the chain each was
    /// created on. Nothing written to them is acknowledged: they read as the holes they
    /// replaced.
    pub unborn: HashMap<u64, Vec<u64>>,
    /// Replications running now.
    pub replicating: InFlight,
    /// Chunks whose last replication failed, and when to try them again.
    pub retry_after: HashMap<u64, Instant>,
    /// (chunk, server) → version an order may have moved the copy to although it failed
    /// or timed out. Such a copy missed later writes: never accept it, delete it.
    suspects: HashMap<(u64, u64), u32>,
    /// Next chunk id to hand out; ids are reserved in the log in blocks ahead of it.
    next_chunk_id: u64,
    /// Metadata version of the last block reservation this master logged: an id from the
    /// block goes to chunkservers only once that record is durable.
    pub reserved_at: u64,
}

impl Server {
    fn go_away(&mut self) {
        self.connected = false;
        self.away_since = Some(Instant::now());
    }
}

impl Cluster {
    /// Register (or re-register) a server. Its copies stay as remembered; returns its id
    /// and the buckets whose digests differ from what the master believes it holds (the
    /// server lists those with [`Cluster::report`]).
    pub fn register(
        &mut self,
        uuid: &str,
        addr: &str,
        space: Space,
        client: ChunkClient<Channel>,
        buckets: &[BucketDigest],
    ) -> (u64, Vec<u32>) {
        let id = match self.by_uuid.get(uuid) {
            Some(&id) => id,
            None => {
                self.next_server_id += 1;
                self.by_uuid.insert(uuid.to_owned(), self.next_server_id);
                self.next_server_id
            }
        };
        let server = self.servers.entry(id).or_insert_with(|| Server {
            id,
            uuid: uuid.to_owned(),
            addr: addr.to_owned(),
            space: Space::default(),
            last_seen: Instant::now(),
            connected: true,
            away_since: None,
            maintenance: false,
            client: client.clone(),
            placed: 0,
            resting_until: None,
            digests: Box::new([Digest::default(); BUCKETS]),
            pending: HashSet::new(),
            listed_buckets: 0,
            listed_chunks: 0,
            replications_in: 0,
            replications_out: 0,
        });
        let mut reported = [Digest::default(); BUCKETS];
        for b in buckets.iter().filter(|b| (b.bucket as usize) < BUCKETS) {
            reported[b.bucket as usize] = Digest {
                chunks: b.chunks,
                sum: b.digest,
            };
        }
        let differ: Vec<u32> = (0..BUCKETS as u32)
            .filter(|&b| reported[b as usize] != server.digests[b as usize])
            .collect();
        server.addr = addr.to_owned();
        server.space = space;
        server.last_seen = Instant::now();
        server.connected = true;
        server.away_since = None;
        server.client = client;
        server.placed = 0;
        server.resting_until = None;
        server.pending = differ.iter().map(|&b| b as u8).collect();
        server.listed_buckets = differ.len() as u64;
        server.listed_chunks = 0;
        (id, differ)
    }

    /// Forget the server's copies in `buckets`; returns the damaged ones among them
    /// (chunk, version), so a copy listed again keeps its mark.
    fn forget_buckets(&mut self, server: u64, buckets: &HashSet<u8>) -> HashSet<(u64, u32)> {
        let gone: Vec<(u64, Copy)> = self
            .locations
            .iter()
            .filter(|(chunk, _)| buckets.contains(&bucket_of(**chunk)))
            .flat_map(|(&chunk, copies)| {
                copies
                    .iter()
                    .filter(|c| c.server == server)
                    .map(move |c| (chunk, *c))
            })
            .collect();
        let mut damaged = HashSet::new();
        for (chunk, c) in gone {
            self.drop_copy(chunk, server);
            if c.damaged {
                damaged.insert((chunk, c.version));
            }
        }
        damaged
    }

    /// Whether `server` is still to list the bucket of `chunk` for its registration.
    pub fn listing(&self, server: u64, chunk: u64) -> bool {
        self.servers
            .get(&server)
            .is_some_and(|s| s.pending.contains(&bucket_of(chunk)))
    }

    /// Reconcile part of a server's bucket listing with the metadata's chunk versions
    /// (`known`). The server's copies in the buckets it lists are replaced by the listing;
    /// once `done`, buckets asked for but not listed are empty on the server.
    pub fn report(
        &mut self,
        server: u64,
        buckets: &[u32],
        chunks: &[ChunkInfo],
        done: bool,
        known: impl Fn(u64) -> Option<u32>,
    ) -> Reconciled {
        let Some(s) = self.servers.get_mut(&server) else {
            return Reconciled::default();
        };
        let mut clear: HashSet<u8> = buckets
            .iter()
            .filter_map(|&b| u8::try_from(b).ok())
            .filter(|b| s.pending.remove(b))
            .collect();
        if done {
            clear.extend(s.pending.drain());
        }
        s.listed_chunks += chunks.len() as u64;
        let damaged = if clear.is_empty() {
            HashSet::new()
        } else {
            self.forget_buckets(server, &clear)
        };
        let out = self.reconcile(server, chunks, known);
        for (chunk, version) in damaged {
            self.mark_damaged(chunk, server, version);
        }
        out
    }

    /// Compare a server's report with the metadata's chunk versions (`known`).
    fn reconcile(
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

    /// A client's write acked by every server of `chain` proves each holds `version` of
    /// `chunk`, also one whose create order failed (the write made the copy).
    pub fn proven(&mut self, chunk: u64, version: u32, chain: &[u64]) {
        for &s in chain {
            self.suspects.remove(&(chunk, s));
            self.add_copy(chunk, s, version);
        }
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
        self.unborn.remove(&chunk);
        self.suspects.retain(|(c, _), _| *c != chunk);
        let copies = self.locations.remove(&chunk).unwrap_or_default();
        for c in &copies {
            self.digest_remove(c.server, chunk, c.version);
        }
        copies
    }

    pub fn add_copy(&mut self, chunk: u64, server: u64, version: u32) {
        let copies = self.locations.entry(chunk).or_default();
        let old = match copies.iter_mut().find(|c| c.server == server) {
            Some(c) => Some(std::mem::replace(&mut c.version, version)),
            None => {
                copies.push(Copy {
                    server,
                    version,
                    damaged: false,
                });
                None
            }
        };
        if let Some(old) = old {
            self.digest_remove(server, chunk, old);
        }
        if let Some(s) = self.servers.get_mut(&server) {
            s.digests[bucket_of(chunk) as usize].add(chunk, version);
        }
    }

    pub fn drop_copy(&mut self, chunk: u64, server: u64) {
        let Some(copies) = self.locations.get_mut(&chunk) else {
            return;
        };
        let Some(i) = copies.iter().position(|c| c.server == server) else {
            return;
        };
        let c = copies.remove(i);
        if copies.is_empty() {
            self.locations.remove(&chunk);
        }
        self.digest_remove(server, chunk, c.version);
    }

    fn digest_remove(&mut self, server: u64, chunk: u64, version: u32) {
        if let Some(s) = self.servers.get_mut(&server) {
            s.digests[bucket_of(chunk) as usize].remove(chunk, version);
        }
    }

    /// A CRC failure was reported for `version` of `chunk` on `server`. Returns whether
    /// such a copy is known.
    pub fn mark_damaged(&mut self, chunk: u64, server: u64, version: u32) -> bool {
        let Some(copies) = self.locations.get_mut(&chunk) else {
            return false;
        };
        match copies
            .iter_mut()
            .find(|c| c.server == server && c.version == version)
        {
            Some(c) => {
                c.damaged = true;
                true
            }
            None => false,
        }
    }

    /// Connected servers holding `version` of `chunk`; undamaged ones only, unless every
    /// copy is damaged. For writes, which move every copy they name to a new version.
    pub fn valid_copies(&self, chunk: u64, version: u32) -> Vec<u64> {
        let (valid, damaged) = self.current_copies(chunk, version);
        if valid.is_empty() {
            damaged
        } else {
            valid
        }
    }

    /// Connected servers holding `version` of `chunk`: (undamaged, damaged).
    pub fn current_copies(&self, chunk: u64, version: u32) -> (Vec<u64>, Vec<u64>) {
        let mut valid = Vec::new();
        let mut damaged = Vec::new();
        for c in self.locations.get(&chunk).into_iter().flatten() {
            if c.version == version && self.is_up(c.server) {
                if c.damaged {
                    damaged.push(c.server);
                } else {
                    valid.push(c.server);
                }
            }
        }
        (valid, damaged)
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
                let server = self.servers.get(&c.server);
                let state = if server.is_some_and(|s| s.maintenance && !s.connected) {
                    CopyState::Maintenance
                } else if !self.is_up(c.server) {
                    CopyState::Offline
                } else if c.version != version {
                    CopyState::Stale
                } else if c.damaged {
                    CopyState::Damaged
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

    /// The planner's view of the servers. Copies on a server that is away count until
    /// `grace` has passed since it went away, and for as long as it is in maintenance.
    pub fn server_views(&self, grace: Duration) -> Vec<ServerView> {
        self.servers
            .values()
            .map(|s| ServerView {
                id: s.id,
                connected: s.connected,
                counts_while_away: s.maintenance
                    || s.away_since.is_none_or(|t| t.elapsed() < grace),
                maintenance: s.maintenance,
                total: s.space.total_bytes,
                used: s.space.used_bytes,
                avail: s.space.avail_bytes,
                chunks: s.space.chunks,
            })
            .collect()
    }

    /// A server by its address as registered or its id.
    pub fn find_server(&self, name: &str) -> Option<u64> {
        self.servers
            .values()
            .find(|s| s.addr == name)
            .map(|s| s.id)
            .or_else(|| {
                name.parse::<u64>()
                    .ok()
                    .filter(|id| self.servers.contains_key(id))
            })
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
                s.go_away();
                gone.push(s.id);
            }
        }
        gone
    }

    /// The server is shutting down cleanly: disconnected now, as if its heartbeats had
    /// stopped. False if it was not connected.
    pub fn leave(&mut self, server: u64) -> bool {
        match self.servers.get_mut(&server) {
            Some(s) if s.connected => {
                s.go_away();
                true
            }
            _ => false,
        }
    }

    /// Where new chunks may go: connected servers, less those resting (unless all are).
    pub fn candidates(&self, now: Instant) -> Vec<Candidate> {
        let connected = || self.servers.values().filter(|s| s.connected);
        let awake: Vec<&Server> = connected()
            .filter(|s| s.resting_until.is_none_or(|t| now >= t))
            .collect();
        let usable = if awake.is_empty() {
            connected().collect()
        } else {
            awake
        };
        usable
            .into_iter()
            .map(|s| Candidate {
                id: s.id,
                avail: s.space.avail_bytes,
                chunks: s.space.chunks + s.placed,
            })
            .collect()
    }

    /// How long before `server` is given new chunks again (zero: now).
    pub fn resting_for(&self, server: u64, now: Instant) -> Duration {
        self.servers
            .get(&server)
            .and_then(|s| s.resting_until)
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// An order to `server` timed out or could not be delivered: give it no new chunks for
    /// [`PLACEMENT_REST`] or until it registers again, so that a hung server holds up only
    /// the writes already bound to it, not every new chunk placed on it meanwhile.
    pub fn rest(&mut self, server: u64, now: Instant) {
        if let Some(s) = self.servers.get_mut(&server) {
            s.resting_until = Some(now + PLACEMENT_REST);
        }
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

    /// Drop leases no writer touched for `idle` (a client died mid-write), and those whose
    /// last writer left over [`LINGER`] ago (the healer leaves leased chunks alone).
    pub fn expire_leases(&mut self, idle: Duration) {
        self.leases
            .retain(|_, l| l.touched.elapsed() < idle && l.open());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::buckets::digests;
    use elkfs_proto::transport;

    fn client() -> ChunkClient<Channel> {
        let channel = transport::channel("127.0.0.1:1").expect("a valid address");
        transport::chunk_client(channel)
    }

    /// What a chunkserver holding `chunks` sends at registration.
    fn summary(chunks: &[(u64, u32)]) -> Vec<BucketDigest> {
        (0u32..)
            .zip(digests(chunks.iter().copied()))
            .filter(|(_, d)| d.chunks > 0)
            .map(|(bucket, d)| BucketDigest {
                bucket,
                chunks: d.chunks,
                digest: d.sum,
            })
            .collect()
    }

    fn listing(chunks: &[(u64, u32)], buckets: &[u32]) -> Vec<ChunkInfo> {
        chunks
            .iter()
            .filter(|(id, _)| buckets.contains(&u32::from(bucket_of(*id))))
            .map(|&(chunk_id, version)| ChunkInfo {
                chunk_id,
                version,
                length: 0,
            })
            .collect()
    }

    /// Register and report what the master asks for; returns the buckets it asked for.
    fn connect(
        cluster: &mut Cluster,
        held: &[(u64, u32)],
        known: impl Fn(u64) -> Option<u32>,
    ) -> (Vec<u32>, Reconciled) {
        let (id, asked) = cluster.register("u", "a:1", Space::default(), client(), &summary(held));
        let found = cluster.report(id, &asked, &listing(held, &asked), true, known);
        (asked, found)
    }

    /// A server whose order timed out gets no new chunks while it rests, unless no other
    /// server is left; registering again ends the rest.
    #[tokio::test]
    async fn a_resting_server_gets_no_new_chunks() {
        let mut cluster = Cluster::default();
        for uuid in ["u1", "u2"] {
            cluster.register(uuid, "a:1", Space::default(), client(), &[]);
        }
        let ids = |c: &Cluster, now| {
            let mut ids: Vec<u64> = c.candidates(now).iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        let now = Instant::now();
        cluster.rest(1, now);
        assert_eq!(ids(&cluster, now), vec![2]);
        assert_eq!(ids(&cluster, now + PLACEMENT_REST), vec![1, 2]);
        cluster.rest(2, now);
        assert_eq!(ids(&cluster, now), vec![1, 2], "all resting: all usable");
        cluster.register("u2", "a:1", Space::default(), client(), &[]);
        cluster.rest(1, now);
        assert_eq!(ids(&cluster, now), vec![2]);
    }

    #[tokio::test]
    async fn reconnect_with_nothing_changed_lists_nothing() {
        let held: Vec<(u64, u32)> = (1..=100_000).map(|id| (id, 1)).collect();
        let mut cluster = Cluster::default();
        let (asked, found) = connect(&mut cluster, &held, |_| Some(1));
        assert_eq!(asked.len(), 256);
        assert_eq!(found.valid, 100_000);
        cluster.expire(Duration::ZERO);
        assert!(!cluster.is_up(1));
        let (asked, found) = connect(&mut cluster, &held, |_| Some(1));
        assert!(asked.is_empty());
        assert_eq!(found.valid, 0);
        let s = &cluster.servers[&1];
        assert_eq!((s.listed_buckets, s.listed_chunks), (0, 0));
        assert!(cluster.is_up(1));
        assert_eq!(cluster.valid_copies(77, 1), vec![1]);
    }

    /// A create order that failed leaves its copy suspect; a write the whole chain acked
    /// proves it, so it counts and survives the server's next listing.
    #[tokio::test]
    async fn a_copy_proven_by_an_acked_write_is_kept() {
        let mut cluster = Cluster::default();
        connect(&mut cluster, &[], |_| Some(1));
        // Chunks 5 and 261 share a bucket, so the listing below reconciles both.
        cluster.suspect(5, 1, 1);
        cluster.suspect(261, 1, 1);
        cluster.proven(5, 1, &[1]);
        assert_eq!(cluster.valid_copies(5, 1), vec![1]);
        assert!(cluster.valid_copies(261, 1).is_empty());
        cluster.expire(Duration::ZERO);
        let (asked, found) = connect(&mut cluster, &[(5, 1), (261, 1)], |_| Some(1));
        assert_eq!(asked, vec![5]);
        assert_eq!(found.delete, vec![(261, 1)]);
        assert_eq!(cluster.valid_copies(5, 1), vec![1]);
    }

    #[tokio::test]
    async fn only_changed_buckets_are_listed_and_reconciled() {
        let mut cluster = Cluster::default();
        let held = [(1, 1), (2, 1), (258, 1), (3, 1)];
        connect(&mut cluster, &held, |_| Some(1));
        // While it was away: chunk 2 was written elsewhere (its copy here is stale), chunk
        // 3 was deleted from the metadata but not on the server, and it got chunk 4.
        cluster.drop_copy(2, 1);
        cluster.forget_chunk(3);
        let known = |c: u64| match c {
            2 => Some(2),
            3 => None,
            _ => Some(1),
        };
        let held = [(1, 1), (2, 1), (258, 1), (3, 1), (4, 1)];
        let (asked, found) = connect(&mut cluster, &held, known);
        assert_eq!(asked, vec![2, 3, 4]);
        assert_eq!(found.valid, 2);
        let mut delete = found.delete;
        delete.sort_unstable();
        assert_eq!(delete, vec![(2, 1), (3, 1)]);
        assert_eq!(cluster.valid_copies(1, 1), vec![1]);
        assert_eq!(cluster.valid_copies(4, 1), vec![1]);
        assert!(cluster.valid_copies(2, 2).is_empty());
        assert_eq!(cluster.servers[&1].listed_chunks, 4);
    }

    #[tokio::test]
    async fn a_bucket_emptied_on_the_server_is_forgotten_and_damage_survives_a_listing() {
        let mut cluster = Cluster::default();
        connect(&mut cluster, &[(1, 1), (2, 1), (258, 1)], |_| Some(1));
        assert!(cluster.mark_damaged(258, 1, 1));
        let (asked, _) = connect(&mut cluster, &[(2, 1), (258, 1), (514, 1)], |_| Some(1));
        assert_eq!(asked, vec![1, 2]);
        assert!(cluster.valid_copies(1, 1).is_empty());
        assert_eq!(cluster.current_copies(258, 1), (vec![], vec![1]));
        // A damaged copy is still the one to write to when it is the only one.
        assert_eq!(cluster.valid_copies(258, 1), vec![1]);
    }
}
