//! Carries out the planner's decisions: a background loop takes a view of the metadata and
//! the copies (both persistent maps, cloned in O(1) under the lock), plans outside the
//! lock, sends `Replicate` orders to destination chunkservers and queues deletions.

use crate::core::{Inner, Master};
use crate::planner::{self, Action, Limits, View, Why};
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::chunk::ReplicateRequest;
use elkfs_proto::FsError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Deletions decided per pass; more wait for the next pass.
const DELETES_PER_PASS: usize = 10_000;

/// Plan again at least this often; a finished replication wakes the loop sooner.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// Rebalancing waits this long after copies were made or deleted: the servers' disk usage
/// reaches the master with their heartbeats (every second by default), and a move planned
/// on usage that does not show the last moves yet would overshoot.
const SETTLE: Duration = Duration::from_secs(3);

/// A chunk whose replication failed is left alone this long (its source or destination
/// may be dead but not yet noticed).
const RETRY_PAUSE: Duration = Duration::from_secs(5);

struct Order {
    chunk: u64,
    version: u32,
    source: u64,
    dest: u64,
    source_addr: String,
    dest_addr: String,
    client: ChunkClient<Channel>,
}

pub async fn run(master: Arc<Master>) {
    // After a (re)start the master knows no copies until the chunkservers have registered
    // again: give them the time a live server has to show up before healing anything.
    tokio::time::sleep(Duration::from_secs(master.config.chunkserver_timeout_secs)).await;
    let wake = Arc::new(Notify::new());
    let mut tick = tokio::time::interval(PASS_EVERY);
    let mut settled_at = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A replication finished.
            _ = wake.notified() => settled_at = Instant::now() + SETTLE,
        }
        if master.is_superseded() {
            continue;
        }
        let m = master.clone();
        let rebalance = Instant::now() >= settled_at;
        let actions = match tokio::task::spawn_blocking(move || plan(&m, rebalance)).await {
            Ok(actions) => actions,
            Err(e) => {
                warn!(error = %e, "healing pass failed");
                continue;
            }
        };
        if !actions.is_empty() {
            settled_at = Instant::now() + SETTLE;
            execute(&master, &wake, actions);
        }
    }
}

/// `rebalance`: whether chunks may be moved for even disk usage in this pass.
fn limits(master: &Master, rebalance: bool) -> Limits {
    let c = &master.config;
    Limits {
        per_server: c.replications_per_server.max(1),
        total: c.replications_total.max(1),
        rebalance_threshold_pct: c.rebalance_threshold_pct,
        rebalance_batch: if rebalance { c.rebalance_batch } else { 0 },
        deletes: DELETES_PER_PASS,
    }
}

/// The cluster as the planner sees it now. Cheap under the lock: the metadata and the
/// copy map are persistent maps.
pub fn view(inner: &Inner, grace: Duration) -> View {
    let now = Instant::now();
    let cluster = &inner.cluster;
    let pausing = cluster
        .retry_after
        .iter()
        .filter(|(_, &t)| t > now)
        .map(|(&c, _)| c);
    View::new(
        inner.state.clone(),
        cluster.locations.clone(),
        cluster.leases.keys().copied().chain(pausing).collect(),
        cluster.server_views(grace),
    )
}

fn plan(master: &Master, rebalance: bool) -> Vec<Action> {
    let grace = Duration::from_secs(master.config.replication_grace_secs);
    let (view, in_flight) = {
        let mut inner = master.lock();
        let now = Instant::now();
        inner.cluster.retry_after.retain(|_, t| *t > now);
        (view(&inner, grace), inner.cluster.replicating.clone())
    };
    planner::plan(
        &view.servers,
        view.chunks(),
        &in_flight,
        &limits(master, rebalance),
    )
}

/// Check each action against the cluster as it is now (it may have changed since the
/// view was taken) and start it.
fn execute(master: &Arc<Master>, wake: &Arc<Notify>, actions: Vec<Action>) {
    let mut orders = Vec::new();
    let mut deleted = 0;
    {
        let mut guard = master.lock();
        let inner = &mut *guard;
        for action in actions {
            match action {
                Action::Delete {
                    chunk,
                    version,
                    server,
                    why,
                } => {
                    if deletable(inner, chunk, version, server, why) {
                        debug!(chunk, version, server, ?why, "deleting a chunk copy");
                        inner.cluster.drop_copy(chunk, server);
                        master.queue_delete(server, chunk, version);
                        deleted += 1;
                    }
                }
                Action::Replicate {
                    chunk,
                    version,
                    source,
                    dest,
                } => {
                    if let Some(order) = start(inner, chunk, version, source, dest) {
                        orders.push(order);
                    }
                }
            }
        }
        if deleted > 0 || !orders.is_empty() {
            info!(
                replications = orders.len(),
                deletions = deleted,
                running = inner.cluster.replicating.len(),
                "healing"
            );
        }
    }
    for order in orders {
        tokio::spawn(replicate(master.clone(), wake.clone(), order));
    }
}

/// Never delete a copy that changed meanwhile, of a chunk being written or copied, or the
/// last valid copy.
fn deletable(inner: &Inner, chunk: u64, version: u32, server: u64, why: Why) -> bool {
    let cluster = &inner.cluster;
    let current = inner.state.chunks.get(&chunk).map(|m| m.version);
    let exists = cluster
        .locations
        .get(&chunk)
        .is_some_and(|c| c.iter().any(|c| c.server == server && c.version == version));
    if !exists || cluster.leases.contains_key(&chunk) || cluster.replicating.contains(chunk) {
        return false;
    }
    let Some(current) = current else {
        return false;
    };
    let (valid, _) = cluster.current_copies(chunk, current);
    let others = valid.iter().filter(|&&s| s != server).count();
    match why {
        Why::Stale => version != current && others > 0,
        Why::Damaged | Why::Extra => version == current && others > 0,
    }
}

fn start(inner: &mut Inner, chunk: u64, version: u32, source: u64, dest: u64) -> Option<Order> {
    let cluster = &mut inner.cluster;
    let current = inner.state.chunks.get(&chunk).map(|m| m.version);
    if current != Some(version)
        || cluster.leases.contains_key(&chunk)
        || !cluster.is_up(source)
        || !cluster.is_up(dest)
    {
        return None;
    }
    let source_addr = cluster.addr(source)?.to_owned();
    let (dest_addr, client) = cluster.client(dest)?;
    cluster.replicating.add(chunk, source, dest);
    Some(Order {
        chunk,
        version,
        source,
        dest,
        source_addr,
        dest_addr,
        client,
    })
}

async fn replicate(master: Arc<Master>, wake: Arc<Notify>, mut o: Order) {
    let timeout = Duration::from_secs(master.config.replication_timeout_secs.max(1));
    let req = ReplicateRequest {
        chunk_id: o.chunk,
        version: o.version,
        source: o.source_addr.clone(),
    };
    let result = match tokio::time::timeout(timeout, o.client.replicate(req)).await {
        Ok(r) => r.map(drop).map_err(FsError::from),
        Err(_) => Err(FsError::Unavailable("replication timed out".into())),
    };
    let mut guard = master.lock();
    let inner = &mut *guard;
    inner.cluster.replicating.remove(o.chunk, o.source, o.dest);
    match result {
        Ok(()) => {
            finish(&master, inner, &o);
            // Its slots are free: plan the next copies now rather than at the next tick.
            wake.notify_one();
        }
        Err(e) => {
            warn!(
                chunk = o.chunk,
                version = o.version,
                source = %o.source_addr,
                dest = %o.dest_addr,
                error = %e,
                "replication failed"
            );
            let again = Instant::now() + RETRY_PAUSE;
            inner.cluster.retry_after.insert(o.chunk, again);
            if e == FsError::Exists && !inner.cluster.listing(o.dest, o.chunk) {
                // The destination holds a copy the master does not know of (and is not
                // about to learn of from its registration), perhaps this version from an
                // earlier order that timed out: drop that one if so.
                master.queue_delete(o.dest, o.chunk, o.version);
            }
        }
    }
}

/// A copy was made: keep it only if the chunk is still at the copied version (a write in
/// between made the new copy stale).
fn finish(master: &Master, inner: &mut Inner, o: &Order) {
    let current = inner.state.chunks.get(&o.chunk).map(|m| m.version);
    if current != Some(o.version) {
        debug!(
            chunk = o.chunk,
            version = o.version,
            "chunk changed while it was copied; new copy deleted"
        );
        master.queue_delete(o.dest, o.chunk, o.version);
        return;
    }
    inner.cluster.add_copy(o.chunk, o.dest, o.version);
    if let Some(s) = inner.cluster.servers.get_mut(&o.source) {
        s.replications_out += 1;
    }
    if let Some(s) = inner.cluster.servers.get_mut(&o.dest) {
        s.replications_in += 1;
    }
    debug!(
        chunk = o.chunk,
        version = o.version,
        source = %o.source_addr,
        dest = %o.dest_addr,
        "chunk replicated"
    );
}
