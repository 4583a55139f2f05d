//! The cluster as the admin tool sees it: servers, chunk health, maintenance mode.

use crate::core::Master;
use elkfs_proto::admin::{ServerStatus, StatusReply};
use elkfs_proto::FsError;

impl Master {
    pub fn cluster_status(&self) -> StatusReply {
        let inner = self.lock();
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
                ..Default::default()
            })
            .collect();
        servers.sort_by_key(|s| s.server_id);
        StatusReply {
            metadata_version: inner.state.version,
            inodes: inner.state.inodes.len() as u64,
            chunks: inner.state.chunks.len() as u64,
            sessions: inner.sessions.count() as u64,
            servers,
            ..Default::default()
        }
    }

    /// Suspend (`on`) or resume re-replication of the copies on `server` (its address as
    /// registered, or its id).
    pub fn maintenance(&self, server: &str, on: bool) -> Result<(), FsError> {
        let _ = (server, on);
        Err(FsError::NotSupported)
    }
}
