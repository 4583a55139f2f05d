//! The link to the master: register (with every chunk held), heartbeat with the space
//! report, re-register when the master asks or comes back after being unreachable, and
//! forward damage reports. The master may start after us or restart at any time, so every
//! failure here is retried on the next tick rather than ending the link.

use crate::service::{blocking, hex};
use crate::store::Store;
use elkfs_proto::buckets::{bucket_of, digests};
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

/// Queue for damage reports waiting for the link (reports beyond it are dropped and logged).
pub const DAMAGE_QUEUE: usize = 1024;
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
    let tmp = dir.join(format!("{UUID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{uuid}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
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
    pub master: String,
    /// The address clients and peers reach us on (our --listen).
    pub addr: String,
    pub uuid: String,
    pub heartbeat: Duration,
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

impl MasterLink {
    /// Runs until `stop` turns true.
    pub async fn run(
        self,
        mut damaged: mpsc::Receiver<DamageReport>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), FsError> {
        let ch = elkfs_proto::transport::channel(&self.master)
            .map_err(|e| FsError::Invalid(format!("bad master address {:?}: {e}", self.master)))?;
        let mut client = elkfs_proto::transport::registry_client(ch);
        let mut server_id: Option<u64> = None;
        // Whether the last contact attempt failed, so each outage is logged once.
        let mut unreachable = false;
        let mut pending: Vec<DamageReport> = Vec::new();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                d = damaged.recv() => {
                    if let Some(d) = d {
                        pending.push(d);
                    }
                }
                _ = tick.tick() => {
                    let res = match server_id {
                        None => self.register(&mut client).await.map(Some),
                        Some(id) => self.heartbeat(&mut client, id).await,
                    };
                    match res {
                        Ok(id) => {
                            if unreachable {
                                tracing::info!(master = %self.master, "master reachable again");
                                unreachable = false;
                            }
                            server_id = id;
                        }
                        Err(e) => {
                            if !unreachable {
                                tracing::warn!(master = %self.master, error = %e, "master unreachable, retrying");
                                unreachable = true;
                            }
                            // Whatever the master knew may be gone: register afresh.
                            server_id = None;
                        }
                    }
                }
            }
            if let Some(id) = server_id {
                while let Some(d) = pending.last().copied() {
                    let req = DamagedRequest {
                        server_id: id,
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
    }

    async fn register(&self, client: &mut Client) -> Result<u64, FsError> {
        let store = self.store.clone();
        let (space, chunks) = blocking(move || Ok((store.space(), store.chunk_list()))).await?;
        let buckets = digests(chunks.iter().map(|c| (c.chunk_id, c.version)))
            .iter()
            .enumerate()
            .filter(|(_, d)| d.chunks > 0)
            .map(|(b, d)| BucketDigest {
                bucket: b as u32,
                chunks: d.chunks,
                digest: d.sum,
            })
            .collect();
        let req = RegisterRequest {
            uuid: self.uuid.clone(),
            addr: self.addr.clone(),
            space: Some(space),
            buckets,
        };
        let reply = call(client.register(req)).await?;
        let listed: Vec<_> = chunks
            .into_iter()
            .filter(|c| reply.list_buckets.contains(&u32::from(bucket_of(c.chunk_id))))
            .collect();
        let n = listed.len();
        call(client.report_buckets(BucketReport {
            server_id: reply.server_id,
            buckets: reply.list_buckets.clone(),
            chunks: listed,
            done: true,
        }))
        .await?;
        tracing::info!(
            server_id = reply.server_id,
            buckets = reply.list_buckets.len(),
            chunks = n,
            master = %self.master,
            "registered with master"
        );
        Ok(reply.server_id)
    }

    /// Ok(None): the master asked us to register again.
    async fn heartbeat(&self, client: &mut Client, id: u64) -> Result<Option<u64>, FsError> {
        let store = self.store.clone();
        let space = blocking(move || Ok(store.space())).await?;
        let reply = call(client.heartbeat(HeartbeatRequest {
            server_id: id,
            space: Some(space),
        }))
        .await?;
        if reply.reregister {
            tracing::info!("master asked us to register again");
            return Ok(None);
        }
        Ok(Some(id))
    }
}
