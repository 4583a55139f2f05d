//! `elkfs.registry.Registry`: chunkservers register, report their chunks, heartbeat.

use crate::core::Master;
use elkfs_proto::changelog::{record::Op, ChunkVersion};
use elkfs_proto::registry::registry_server::Registry;
use elkfs_proto::registry::*;
use elkfs_proto::transport;
use elkfs_proto::FsError;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

pub struct RegistryService(pub Arc<Master>);

#[tonic::async_trait]
impl Registry for RegistryService {
    #[instrument(level = "debug", skip_all, fields(addr = %r.get_ref().addr, buckets = r.get_ref().buckets.len()))]
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let r = r.into_inner();
        if r.uuid.is_empty() || r.addr.is_empty() {
            return Err(FsError::Invalid("uuid and addr are required".into()).into());
        }
        let epoch = self.0.check_epoch(r.epoch_seen, &r.addr)?;
        let channel = transport::channel(&r.addr).map_err(FsError::from)?;
        let client = transport::chunk_client(channel);
        let space = r.space.unwrap_or_default();
        let (id, list_buckets) = self
            .0
            .lock()
            .cluster
            .register(&r.uuid, &r.addr, space, client, &r.buckets);
        info!(
            server = id,
            addr = %r.addr,
            buckets = list_buckets.len(),
            "chunkserver registered"
        );
        Ok(Response::new(RegisterReply {
            server_id: id,
            list_buckets,
            epoch,
        }))
    }

    #[instrument(level = "debug", skip_all, fields(server = r.get_ref().server_id, chunks = r.get_ref().chunks.len()))]
    async fn report_buckets(&self, r: Request<BucketReport>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        let m = &self.0;
        let id = r.server_id;
        // No chunk is created or moved to a new version while a report is reconciled: the
        // report must not race with orders in flight.
        let _serial = m.chunk_ops.all().await;
        let version = {
            let mut guard = m.lock();
            let inner = &mut *guard;
            if !inner.cluster.servers.contains_key(&id) {
                return Err(FsError::NotFound.into());
            }
            let found = inner
                .cluster
                .report(id, &r.buckets, &r.chunks, r.done, |c| {
                    inner.state.chunks.get(&c).map(|m| m.version)
                });
            let mut version = inner.state.version;
            for &(chunk, v) in &found.adopt {
                warn!(
                    chunk,
                    version = v,
                    "adopting a newer chunk version than the log has"
                );
                version = m
                    .commit(
                        inner,
                        Op::ChunkVersion(ChunkVersion {
                            chunk_id: chunk,
                            version: v,
                        }),
                    )
                    .map_err(Status::from)?;
                let holders: Vec<u64> = inner
                    .cluster
                    .locations
                    .get(&chunk)
                    .map(|c| {
                        c.iter()
                            .filter(|c| c.version == v)
                            .map(|c| c.server)
                            .collect()
                    })
                    .unwrap_or_default();
                m.set_copies(inner, chunk, v, &holders);
            }
            for &(chunk, v) in &found.delete {
                m.queue_delete(id, chunk, v);
            }
            info!(
                server = id,
                valid = found.valid,
                deleting = found.delete.len(),
                adopted = found.adopt.len(),
                done = r.done,
                "chunk buckets reconciled"
            );
            version
        };
        m.durable(version).await.map_err(Status::from)?;
        Ok(Response::new(Empty {}))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = r.into_inner();
        let known = self
            .0
            .lock()
            .cluster
            .heartbeat(r.server_id, r.space.unwrap_or_default());
        Ok(Response::new(HeartbeatReply { reregister: !known }))
    }

    #[instrument(level = "debug", skip_all, fields(server = r.get_ref().server_id))]
    async fn leave(&self, r: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        let server = r.into_inner().server_id;
        if self.0.lock().cluster.leave(server) {
            info!(server, "chunkserver left: it is shutting down");
        }
        Ok(Response::new(Empty {}))
    }

    #[instrument(level = "debug", skip_all, fields(chunk = r.get_ref().chunk_id, server = r.get_ref().server_id))]
    async fn report_damaged(&self, r: Request<DamagedRequest>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        self.0.chunk_damaged(r.chunk_id, r.version, r.server_id);
        Ok(Response::new(Empty {}))
    }
}
