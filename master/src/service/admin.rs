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
        Ok(Response::new(self.0.cluster_status()))
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
        r: Request<MaintenanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        self.0.maintenance(&r.server, r.on)?;
        Ok(Response::new(Empty {}))
    }
}
