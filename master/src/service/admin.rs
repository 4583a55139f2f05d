//! `elkfs.admin.Admin`: cluster status for the `elkfs` tool.

use crate::core::Master;
use elkfs_proto::admin::admin_server::Admin;
use elkfs_proto::admin::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService(pub Arc<Master>);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let inner = self.0.lock();
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
        Ok(Response::new(StatusReply {
            metadata_version: inner.state.version,
            inodes: inner.state.inodes.len() as u64,
            chunks: inner.state.chunks.len() as u64,
            sessions: inner.sessions.count() as u64,
            servers,
            ..Default::default()
        }))
    }

    async fn get_goal(&self, _r: Request<InodeRequest>) -> Result<Response<GoalReply>, Status> {
        Err(Status::unimplemented("getgoal"))
    }

    async fn set_goal(
        &self,
        _r: Request<SetGoalRequest>,
    ) -> Result<Response<SetGoalReply>, Status> {
        Err(Status::unimplemented("setgoal"))
    }

    async fn file_info(
        &self,
        _r: Request<InodeRequest>,
    ) -> Result<Response<FileInfoReply>, Status> {
        Err(Status::unimplemented("fileinfo"))
    }

    async fn maintenance(
        &self,
        _r: Request<MaintenanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("maintenance"))
    }
}
