//! Chunk copies to delete, sent to chunkservers in the background. Each server has its
//! own queue and at most one order in flight: a server that hangs holds back only its
//! own deletions. What is queued within [`GATHER`] goes as one order, so an `rm -rf` of a
//! large tree costs a few requests a second per server, not one request per chunk.

use crate::core::Master;
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::chunk::{ChunkCopy, DeleteRequest};
use elkfs_proto::FsError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::{debug, warn};

/// Delete `version` of `chunk` on `server`.
pub struct Deletion {
    pub server: u64,
    pub chunk: u64,
    pub version: u32,
}

/// How long the first deletion waits for others to go in the same order.
const GATHER: Duration = Duration::from_millis(100);
/// Copies named in one order at most: even at 10 ms per file removed (a slow disk) an
/// order ends well within [`ORDER_TIMEOUT`].
const MAX_PER_ORDER: usize = 1024;
/// An order not answered by then failed; a stuck disk can keep a connection alive.
const ORDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before the first retry of a failed order; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub async fn run(master: Arc<Master>, mut rx: mpsc::UnboundedReceiver<Deletion>) {
    let mut queues: HashMap<u64, mpsc::UnboundedSender<ChunkCopy>> = HashMap::new();
    while let Some(d) = rx.recv().await {
        let queue = queues.entry(d.server).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(serve(master.clone(), d.server, rx));
            tx
        });
        let _ = queue.send(ChunkCopy {
            chunk_id: d.chunk,
            version: d.version,
        });
    }
}

/// One server's deletions, one order at a time. A failed order is retried while the
/// server stays registered; once it is dropped its copies are forgotten, and those still
/// on its disk are reported and deleted when it registers again.
async fn serve(master: Arc<Master>, server: u64, mut rx: mpsc::UnboundedReceiver<ChunkCopy>) {
    let mut pending: Vec<ChunkCopy> = Vec::new();
    let mut retry = RETRY_FIRST;
    loop {
        if pending.is_empty() {
            let Some(first) = rx.recv().await else {
                return;
            };
            pending.push(first);
            tokio::time::sleep(GATHER).await;
        }
        pending.extend(std::iter::from_fn(|| rx.try_recv().ok()));
        // Its chunk table is older than the copies' (the cluster moved on without it).
        let target = if master.is_superseded() {
            None
        } else {
            master.lock().cluster.client(server)
        };
        let Some((addr, client)) = target else {
            pending.clear();
            continue;
        };
        let part: Vec<ChunkCopy> = pending.drain(..pending.len().min(MAX_PER_ORDER)).collect();
        if send(&addr, client, part.clone()).await {
            retry = RETRY_FIRST;
        } else {
            pending.splice(0..0, part);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

/// One order; false when it did not reach the server or was not answered. Copies the
/// server could not delete are only logged: retrying would fail the same way.
async fn send(addr: &str, mut client: ChunkClient<Channel>, copies: Vec<ChunkCopy>) -> bool {
    let n = copies.len();
    match tokio::time::timeout(ORDER_TIMEOUT, client.delete(DeleteRequest { copies })).await {
        Ok(Ok(r)) => {
            let failed = r.into_inner().failed;
            for f in &failed {
                warn!(chunk = f.chunk_id, server = %addr, error = %f.error, "chunk delete failed");
            }
            debug!(server = %addr, deleted = n - failed.len(), "chunks deleted");
            true
        }
        Ok(Err(s)) => {
            warn!(server = %addr, chunks = n, error = %FsError::from(s), "chunk deletes failed; will retry");
            false
        }
        Err(_) => {
            warn!(server = %addr, chunks = n, timeout = ?ORDER_TIMEOUT, "chunk deletes not answered; will retry");
            false
        }
    }
}
