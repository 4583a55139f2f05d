//! The link to the master: register (bucket digests, then the chunk lists of the buckets
//! the master asks for), heartbeat with the space report, re-register when the master asks
//! or comes back after being unreachable, and forward damage reports. The master may start
//! after us or restart at any time, so every failure here is retried on the next tick
//! rather than ending the link.
//!
//! Damage marks live in the master's memory only, so they are also kept here (in the
//! index, across restarts) and reported again to every master this server registers with,
//! for as long as the damaged copy is held.
//!
//! Several master addresses (an active master and standbys): the link stays with the one
//! that answered; when it fails, the next tick tries each address in turn, starting with
//! the one after it, and registers afresh with whichever answers. A standby does not
//! listen until it is promoted, so it refuses at once and costs nothing. A master whose
//! epoch is older than the newest this server has registered under was superseded by a
//! promotion: it is never registered with (see [`epoch`]).

pub mod epoch;
mod reports;

use crate::service::{blocking, hex};
use crate::store::Store;
use elkfs_proto::registry::{
    BucketDigest, BucketReport, DamagedRequest, HeartbeatRequest, RegisterRequest,
};
use elkfs_proto::FsError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A copy that failed its CRC check, to be reported to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamageReport {
    pub chunk_id: u64,
    pub version: u32,
}

pub type DamageSender = mpsc::Sender<DamageReport>;

/// Queues a report for a damaged copy of ours when `e` says the copy is damaged (reads,
/// fetches and scrub all end up here).
pub fn note_damage(tx: &DamageSender, e: &FsError, chunk_id: u64, version: u32) {
    if let FsError::Damaged(why) = e {
        tracing::warn!(chunk = %hex(chunk_id), version, %why, "damaged chunk copy");
        if tx.try_send(DamageReport { chunk_id, version }).is_err() {
            tracing::warn!(chunk = %hex(chunk_id), "damage report queue full, report dropped");
        }
    }
}

/// Queue for damage reports waiting for the link (reports beyond it are dropped and logged).
pub const DAMAGE_QUEUE: usize = 1024;
/// How long a stopping server waits for the master to hear it leave.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// No call to the master may hang the link longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const UUID_FILE: &str = "uuid";

/// Reads the server's persistent identity from `dir/uuid`, creating it on first start.
pub fn load_or_create_uuid(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(UUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let uuid = new_uuid();
    elkfs_proto::daemon::write_durably(dir, UUID_FILE, &format!("{uuid}\n"))?;
    Ok(uuid)
}

/// A random-enough identity without a new dependency: the std hasher's per-process random
/// keys mixed with the time and pid.
fn new_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_usize(i);
        *w = h.finish();
    }
    let [a, b] = words;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

pub struct MasterLink {
    pub store: Arc<Store>,
    /// Every master address, tried in this order (round-robin).
    pub masters: Vec<String>,
    /// The address clients and peers reach us on (our --listen).
    pub addr: String,
    pub uuid: String,
    pub heartbeat: Duration,
    pub epoch: Arc<epoch::Epoch>,
}

type Client = elkfs_proto::registry::registry_client::RegistryClient<tonic::transport::Channel>;

async fn call<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, FsError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(FsError::from(s)),
        Err(_) => Err(FsError::Unavailable("master did not answer in time".into())),
    }
}

/// Tells the master we are shutting down, so it stops giving us new chunks now rather
/// than at its heartbeat timeout. Best effort, and brief: a master that does not answer
/// notices at that timeout anyway.
async fn leave(client: &mut Client, server_id: u64) {
    let asked = client.leave(elkfs_proto::registry::LeaveRequest { server_id });
    match tokio::time::timeout(LEAVE_TIMEOUT, asked).await {
        Ok(Ok(_)) => tracing::info!("left the master"),
        Ok(Err(s)) => tracing::warn!(error = %s.message(), "telling the master we leave failed"),
        Err(_) => tracing::warn!("the master did not answer our leaving in time"),
    }
}

/// The master we are registered with.
#[derive(Clone, Copy)]
struct Registered {
    master: usize,
    server_id: u64,
}

impl MasterLink {
    /// Runs until `stop` turns true.
    pub async fn run(
        self,
        mut damaged: mpsc::Receiver<DamageReport>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), FsError> {
        let mut clients = Vec::with_capacity(self.masters.len());
        for m in &self.masters {
            let ch = elkfs_proto::transport::channel(m)
                .map_err(|e| FsError::Invalid(format!("bad master address {m:?}: {e}")))?;
            clients.push(elkfs_proto::transport::registry_client(ch));
        }
        if clients.is_empty() {
            return Err(FsError::Invalid("no master address".into()));
        }
        let mut current: Option<Registered> = None;
        // Where the next registration round starts.
        let mut next = 0;
        // Whether the last contact attempt failed, so each outage is logged once.
        let mut unreachable = false;
        let mut pending: Vec<DamageReport> = Vec::new();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    if let Some(r) = current {
                        leave(&mut clients[r.master], r.server_id).await;
                    }
                    return Ok(());
                }
                d = damaged.recv() => {
                    if let Some(d) = d {
                        self.remember_damage(d).await;
                        pending.push(d);
                    }
                }
                _ = tick.tick() => {
                    let res = match current {
                        None => {
                            let r = self.register_any(&mut clients, next).await;
                            if r.is_ok() {
                                self.queue_known_damage(&mut pending).await;
                            }
                            r.map(Some)
                        }
                        Some(r) => self.heartbeat(&mut clients[r.master], r).await,
                    };
                    match res {
                        Ok(r) => {
                            if unreachable {
                                tracing::info!("master reachable again");
                                unreachable = false;
                            }
                            current = r;
                        }
                        Err(e) => {
                            if !unreachable {
                                tracing::warn!(masters = ?self.masters, error = %e, "no master reachable, retrying");
                                unreachable = true;
                            }
                            if let Some(r) = current.take() {
                                // Whatever that master knew may be gone: register afresh,
                                // trying the other masters first.
                                next = (r.master + 1) % clients.len();
                            }
                        }
                    }
                }
            }
            if let Some(r) = current {
                next = r.master;
                self.send_damage(&mut clients[r.master], r.server_id, &mut pending)
                    .await;
            }
        }
    }

    /// Registers with the first master, from `first` on round-robin, that accepts us.
    async fn register_any(
        &self,
        clients: &mut [Client],
        first: usize,
    ) -> Result<Registered, FsError> {
        let n = clients.len();
        let mut last = FsError::Unavailable("no master tried".into());
        for k in 0..n {
            let i = (first + k) % n;
            match self.register(&mut clients[i], &self.masters[i]).await {
                Ok(server_id) => {
                    return Ok(Registered {
                        master: i,
                        server_id,
                    })
                }
                Err(e) => {
                    tracing::debug!(master = %self.masters[i], error = %e, "registration failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn register(&self, client: &mut Client, master: &str) -> Result<u64, FsError> {
        let store = self.store.clone();
        let (space, digests) = blocking(move || Ok((store.space(), store.digests()))).await?;
        let buckets: Vec<BucketDigest> = digests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.chunks > 0)
            .map(|(b, d)| BucketDigest {
                bucket: b as u32,
                chunks: d.chunks,
                digest: d.sum,
            })
            .collect();
        let nonempty = buckets.len();
        let req = RegisterRequest {
            uuid: self.uuid.clone(),
            addr: self.addr.clone(),
            space: Some(space),
            buckets,
            epoch_seen: self.epoch.seen(),
        };
        let reply = call(client.register(req)).await?;
        let seen = self.epoch.seen();
        if reply.epoch < seen {
            return Err(FsError::Unavailable(format!(
                "master {master} is at epoch {}, older than epoch {seen} registered under before",
                reply.epoch
            )));
        }
        let (epoch, new) = (self.epoch.clone(), reply.epoch);
        if let Err(e) = blocking(move || epoch.note(new).map_err(FsError::from)).await {
            // Registering anyway: the epoch still counts until this server restarts.
            tracing::error!(error = %e, "cannot record the master epoch on disk");
        }
        let server_id = reply.server_id;
        let mut chunks_sent = 0;
        let mut calls = 0;
        if !reply.list_buckets.is_empty() {
            let mut want = [false; elkfs_proto::buckets::BUCKETS];
            for b in &reply.list_buckets {
                if let Some(w) = want.get_mut(*b as usize) {
                    *w = true;
                }
            }
            let store = self.store.clone();
            let chunks = blocking(move || Ok(store.chunks_in(|b| want[usize::from(b)]))).await?;
            let batches = reports::split(&reply.list_buckets, chunks, reports::MAX_REPORT_CHUNKS);
            let last = batches.len();
            for (i, b) in batches.into_iter().enumerate() {
                chunks_sent += b.chunks.len();
                call(client.report_buckets(BucketReport {
                    server_id,
                    buckets: b.buckets,
                    chunks: b.chunks,
                    done: i + 1 == last,
                }))
                .await?;
                calls += 1;
            }
        }
        tracing::info!(
            server_id,
            %master,
            buckets = nonempty,
            listed_buckets = reply.list_buckets.len(),
            listed_chunks = chunks_sent,
            report_calls = calls,
            "registered with master"
        );
        Ok(server_id)
    }

    /// Ok(None): the master asked us to register again.
    async fn heartbeat(
        &self,
        client: &mut Client,
        r: Registered,
    ) -> Result<Option<Registered>, FsError> {
        let store = self.store.clone();
        let space = blocking(move || Ok(store.space())).await?;
        let reply = call(client.heartbeat(HeartbeatRequest {
            server_id: r.server_id,
            space: Some(space),
        }))
        .await?;
        if reply.reregister {
            tracing::info!(master = %self.masters[r.master], "master asked us to register again");
            return Ok(None);
        }
        Ok(Some(r))
    }

    async fn remember_damage(&self, d: DamageReport) {
        let store = self.store.clone();
        let marked = blocking(move || {
            store
                .mark_damaged(d.chunk_id, d.version)
                .map_err(|e| FsError::Io(e.to_string()))
        });
        if let Err(e) = marked.await {
            tracing::warn!(chunk = %hex(d.chunk_id), error = %e, "damage mark not saved; scrub will find it again");
        }
    }

    /// Queues a report of every held copy marked damaged, for a master just registered with.
    async fn queue_known_damage(&self, pending: &mut Vec<DamageReport>) {
        let store = self.store.clone();
        let known = blocking(move || store.damaged().map_err(|e| FsError::Io(e.to_string())));
        match known.await {
            Ok(known) => {
                for (chunk_id, version) in known {
                    let d = DamageReport { chunk_id, version };
                    if !pending.contains(&d) {
                        pending.push(d);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "damage marks unreadable; scrub will find them again")
            }
        }
    }

    /// Sends queued damage reports, newest first, until one fails (retried next time).
    async fn send_damage(
        &self,
        client: &mut Client,
        server_id: u64,
        pending: &mut Vec<DamageReport>,
    ) {
        while let Some(d) = pending.last().copied() {
            let req = DamagedRequest {
                server_id,
                chunk_id: d.chunk_id,
                version: d.version,
            };
            match call(client.report_damaged(req)).await {
                Ok(_) => {
                    tracing::info!(chunk = %hex(d.chunk_id), version = d.version, "damage reported to master");
                    pending.pop();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "damage report failed, will retry");
                    break;
                }
            }
        }
    }
}
