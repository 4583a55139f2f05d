//! The `elkfs.chunk.Chunk` gRPC service: reads for clients, write streams (see
//! [`crate::write_stream`]), the master's orders (Replicate: [`crate::replicate`]) and
//! Fetch for peers ([`crate::fetch`]). File I/O runs on the blocking pool.

use crate::master_link::{self, DamageSender};
use crate::store::Store;
use crate::{fetch, replicate, write_stream};
use elkfs_proto::chunk::chunk_server::Chunk;
use elkfs_proto::chunk::{
    CreateRequest, DeleteFailure, DeleteReply, DeleteRequest, Empty, FetchPiece, FetchRequest,
    ReadReply, ReadRequest, ReplicateRequest, SetVersionRequest, TruncateRequest, WriteAck,
    WriteMessage,
};
use elkfs_proto::FsError;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Runs `f` on the blocking pool: chunk file I/O must never stall a reactor thread.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, FsError> + Send + 'static,
) -> Result<R, FsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FsError::Io(format!("blocking worker failed: {e}")))?
}

/// Shared by the service and the write streams it starts.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    /// This server's address, named in errors so a failing chain shows who failed.
    pub addr: String,
    pub damage: DamageSender,
    pub peers: write_stream::Peers,
    /// One permit per replication allowed to run at once.
    pub replications: Arc<Semaphore>,
}

impl Context {
    /// Reports a damaged copy of ours to the master when `e` says so.
    pub fn note_damage(&self, e: &FsError, chunk_id: u64, version: u32) {
        master_link::note_damage(&self.damage, e, chunk_id, version);
    }
}

pub(crate) fn hex(id: u64) -> String {
    format!("{id:016X}")
}

pub struct ChunkService {
    ctx: Context,
}

impl ChunkService {
    /// `max_replications`: Replicate orders allowed to run at once.
    pub fn new(
        store: Arc<Store>,
        addr: String,
        damage: DamageSender,
        max_replications: usize,
    ) -> ChunkService {
        ChunkService {
            ctx: Context {
                store,
                addr,
                damage,
                peers: write_stream::Peers::default(),
                replications: Arc::new(Semaphore::new(max_replications)),
            },
        }
    }

    /// Runs an order (Create, SetVersion, …) on the blocking pool in a span of its own.
    /// `version` is the copy the order is about, named in a damage report if it fails so.
    async fn order(
        &self,
        name: &'static str,
        chunk_id: u64,
        version: u32,
        f: impl FnOnce(&Store) -> Result<(), FsError> + Send + 'static,
    ) -> Result<Response<Empty>, Status> {
        let store = self.ctx.store.clone();
        let span = tracing::info_span!("order", op = name, chunk = %hex(chunk_id), version);
        async move {
            match blocking(move || f(&store)).await {
                Ok(()) => {
                    tracing::debug!("done");
                    Ok(Response::new(Empty {}))
                }
                Err(e) => {
                    tracing::info!(error = %e, "order failed");
                    self.ctx.note_damage(&e, chunk_id, version);
                    Err(Status::from(e))
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[tonic::async_trait]
impl Chunk for ChunkService {
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let r = request.into_inner();
        let span = tracing::debug_span!("read", chunk = %hex(r.chunk_id), version = r.version, offset = r.offset, length = r.length);
        let store = self.ctx.store.clone();
        let (offset, length) = (u64::from(r.offset), u64::from(r.length));
        let res = match store.read_cached(r.chunk_id, r.version, offset, length) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => {
                blocking(move || store.read(r.chunk_id, r.version, offset, length))
                    .instrument(span.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(data) => Ok(Response::new(ReadReply { data: data.into() })),
            Err(e) => {
                span.in_scope(|| tracing::debug!(error = %e, "read failed"));
                self.ctx.note_damage(&e, r.chunk_id, r.version);
                Err(Status::from(e))
            }
        }
    }

    type WriteStream = ReceiverStream<Result<WriteAck, Status>>;

    async fn write(
        &self,
        request: Request<Streaming<WriteMessage>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        Ok(Response::new(write_stream::start(
            self.ctx.clone(),
            request.into_inner(),
        )))
    }

    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.order("create", r.chunk_id, r.version, move |s| {
            s.create(r.chunk_id, r.version)
        })
        .await
    }

    async fn set_version(
        &self,
        request: Request<SetVersionRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.order("set_version", r.chunk_id, r.old_version, move |s| {
            s.set_version(r.chunk_id, r.old_version, r.new_version)
        })
        .await
    }

    async fn truncate(&self, request: Request<TruncateRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.order("truncate", r.chunk_id, r.old_version, move |s| {
            s.truncate(
                r.chunk_id,
                r.old_version,
                r.new_version,
                u64::from(r.length),
            )
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteReply>, Status> {
        let copies = request.into_inner().copies;
        let store = self.ctx.store.clone();
        let span = tracing::info_span!("order", op = "delete", copies = copies.len());
        async move {
            let failed = blocking(move || {
                Ok(copies
                    .into_iter()
                    .filter_map(|c| match store.delete(c.chunk_id, c.version) {
                        // Not held, or held at another version: nothing of this order's.
                        Ok(()) | Err(FsError::NotFound | FsError::Stale(_)) => None,
                        Err(e) => Some(DeleteFailure {
                            chunk_id: c.chunk_id,
                            error: e.to_string(),
                        }),
                    })
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(Status::from)?;
            for f in &failed {
                tracing::info!(chunk = %hex(f.chunk_id), error = %f.error, "delete failed");
            }
            Ok(Response::new(DeleteReply { failed }))
        }
        .instrument(span)
        .await
    }

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<Empty>, Status> {
        replicate::replicate(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    type FetchStream = ReceiverStream<Result<FetchPiece, Status>>;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let stream = fetch::start(self.ctx.clone(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }
}

/// Serves the Chunk service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: ChunkService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    elkfs_proto::transport::server()
        .add_service(elkfs_proto::transport::chunk_service(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
