//! Chunk copies to delete, sent to chunkservers in the background. What is queued within
//! [`GATHER`] goes to each server as one order: an `rm -rf` of a large tree costs a few
//! requests a second per server, not one request per chunk beside every unlink.

use crate::core::Master;
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::chunk::{ChunkCopy, DeleteRequest};
use elkfs_proto::FsError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::Channel;
use tracing::{debug, warn};

/// Delete `version` of `chunk` on `server`.
pub struct Deletion {
    pub server: u64,
    pub chunk: u64,
    pub version: u32,
}

/// How long the first deletion waits for others to go in the same orders.
const GATHER: Duration = Duration::from_millis(100);
/// Copies named in one order at most.
const MAX_PER_ORDER: usize = 4096;
/// Orders in flight at once.
const PARALLEL_ORDERS: usize = 8;

pub async fn run(master: Arc<Master>, mut rx: mpsc::UnboundedReceiver<Deletion>) {
    let slots = Arc::new(Semaphore::new(PARALLEL_ORDERS));
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(GATHER).await;
        let mut by_server: HashMap<u64, Vec<ChunkCopy>> = HashMap::new();
        for d in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            by_server.entry(d.server).or_default().push(ChunkCopy {
                chunk_id: d.chunk,
                version: d.version,
            });
        }
        // Its chunk table is older than the copies' (the cluster moved on without it).
        if master.is_superseded() {
            continue;
        }
        for (server, copies) in by_server {
            let Some((addr, client)) = master.lock().cluster.client(server) else {
                continue;
            };
            for part in copies.chunks(MAX_PER_ORDER) {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(send(addr.clone(), client.clone(), part.to_vec(), slot));
            }
        }
    }
}

/// One order. A copy that stays on disk is reported by its server at the next
/// registration, and the server is told again then.
async fn send(
    addr: String,
    mut client: ChunkClient<Channel>,
    copies: Vec<ChunkCopy>,
    _slot: OwnedSemaphorePermit,
) {
    let n = copies.len();
    match client.delete(DeleteRequest { copies }).await {
        Ok(r) => {
            let failed = r.into_inner().failed;
            for f in &failed {
                warn!(chunk = f.chunk_id, server = %addr, error = %f.error, "chunk delete failed");
            }
            debug!(server = %addr, deleted = n - failed.len(), "chunks deleted");
        }
        Err(s) => {
            warn!(server = %addr, chunks = n, error = %FsError::from(s), "chunk deletes failed")
        }
    }
}
