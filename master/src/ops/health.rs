//! The cluster as the admin tool sees it: servers, chunk health, maintenance mode.

use crate::core::Master;
use crate::healer;
use crate::planner;
use elkfs_proto::admin::{HealthCell, ServerStatus, StatusReply};
use elkfs_proto::FsError;
use std::time::{Duration, Instant};
use tracing::info;

impl Master {
    /// Servers and chunk health. The chunk table is walked outside the lock, on O(1)
    /// copies of the metadata and the copy map.
    pub fn cluster_status(&self) -> StatusReply {
        let grace = Duration::from_secs(self.config.replication_grace_secs);
        let (view, mut reply) = {
            let inner = self.lock();
            let now = Instant::now();
            let mut servers: Vec<ServerStatus> = inner
                .cluster
                .servers
                .values()
                .map(|s| ServerStatus {
                    server_id: s.id,
                    addr: s.addr.clone(),
                    connected: s.connected,
                    total_bytes: s.space.total_bytes,
                    used_bytes: s.space.used_bytes,
                    avail_bytes: s.space.avail_bytes,
                    chunks: s.space.chunks,
                    maintenance: s.maintenance,
                    listed_buckets: s.listed_buckets,
                    listed_chunks: s.listed_chunks,
                    replications_in: s.replications_in,
                    replications_out: s.replications_out,
                    resting_secs: inner.cluster.resting_for(s.id, now).as_secs_f64().ceil() as u64,
                })
                .collect();
            servers.sort_by_key(|s| s.server_id);
            let reply = StatusReply {
                metadata_version: inner.state.version,
                inodes: inner.state.inodes.len() as u64,
                chunks: inner.state.chunks.len() as u64,
                sessions: inner.sessions.count() as u64,
                servers,
                replications_running: inner.cluster.replicating.len() as u64,
                epoch: inner.state.epoch,
                superseded_by: self.superseded_by(),
                ..Default::default()
            };
            (healer::view(&inner, grace), reply)
        };
        let health = planner::health(&view.servers, view.chunks());
        reply.health = health
            .cells
            .iter()
            .map(|(&(goal, valid), &chunks)| HealthCell {
                goal,
                valid,
                chunks,
            })
            .collect();
        reply.missing = health.missing;
        reply.endangered = health.endangered;
        reply.under_goal = health.under_goal;
        reply.over_goal = health.over_goal;
        reply.damaged_copies = health.damaged_copies;
        reply
    }

    /// Suspend (`on`) or resume re-replication of the copies on `server` (its address as
    /// registered, or its id).
    pub fn maintenance(&self, server: &str, on: bool) -> Result<(), FsError> {
        let mut inner = self.lock();
        let id = inner.cluster.find_server(server).ok_or(FsError::NotFound)?;
        if let Some(s) = inner.cluster.servers.get_mut(&id) {
            s.maintenance = on;
        }
        info!(server = id, addr = server, on, "maintenance");
        Ok(())
    }
}
