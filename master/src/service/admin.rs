//! `elkfs.admin.Admin`: cluster status, goals and file info for the `elkfs` tool.

use crate::core::Master;
use elkfs_proto::admin::admin_server::Admin;
use elkfs_proto::admin::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::instrument;

pub struct AdminService(pub Arc<Master>);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.0.cluster_status()))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn get_goal(&self, r: Request<InodeRequest>) -> Result<Response<GoalReply>, Status> {
        let goal = self.0.get_goal(r.into_inner().ino)?;
        Ok(Response::new(GoalReply { goal }))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino, goal = r.get_ref().goal))]
    async fn set_goal(&self, r: Request<SetGoalRequest>) -> Result<Response<SetGoalReply>, Status> {
        Ok(Response::new(self.0.set_goal(r.into_inner()).await?))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn file_info(&self, r: Request<InodeRequest>) -> Result<Response<FileInfoReply>, Status> {
        Ok(Response::new(self.0.file_info(r.into_inner().ino)?))
    }

    async fn maintenance(&self, r: Request<MaintenanceRequest>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        self.0.maintenance(&r.server, r.on)?;
        Ok(Response::new(Empty {}))
    }
}
