//! `elkfs.meta.Meta`: what mounts ask.

use super::reply;
use crate::core::Master;
use crate::notices::{self, WATCH_QUEUE};
use elkfs_proto::limits::CHUNK_SIZE;
use elkfs_proto::meta::meta_server::Meta;
use elkfs_proto::meta::*;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{instrument, Instrument};

pub struct MetaService(pub Arc<Master>);

#[tonic::async_trait]
impl Meta for MetaService {
    #[instrument(level = "debug", skip_all, fields(client = %r.get_ref().client))]
    async fn hello(&self, r: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let r = r.into_inner();
        let epoch = self.0.check_epoch(r.epoch_seen, &r.client)?;
        let (session, live) = self.0.hello(r.resume_session, &r.open_inodes);
        if live {
            tracing::debug!(session, "mount session renewed");
        } else {
            tracing::info!(session, resumed = r.resume_session != 0, "mount connected");
        }
        Ok(Response::new(HelloReply {
            session,
            chunk_size: CHUNK_SIZE,
            epoch,
        }))
    }

    async fn epoch(&self, r: Request<EpochRequest>) -> Result<Response<EpochReply>, Status> {
        let peer = r.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let epoch = self.0.check_epoch(r.into_inner().epoch_seen, &peer)?;
        Ok(Response::new(EpochReply { epoch }))
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent))]
    async fn lookup(&self, r: Request<LookupRequest>) -> Result<Response<AttrReply>, Status> {
        let r = r.into_inner();
        reply(self.0.lookup(r.parent, &r.name))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn get_attr(&self, r: Request<InodeRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.getattr(r.into_inner().ino))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn set_attr(&self, r: Request<SetAttrRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.setattr(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent))]
    async fn mknod(&self, r: Request<MknodRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.mknod(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent))]
    async fn symlink(&self, r: Request<SymlinkRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.symlink(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn link(&self, r: Request<LinkRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.link(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent))]
    async fn unlink(&self, r: Request<EntryRequest>) -> Result<Response<DirsReply>, Status> {
        let r = r.into_inner();
        reply(self.0.remove(r.parent, &r.name, false).await)
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent))]
    async fn rmdir(&self, r: Request<EntryRequest>) -> Result<Response<DirsReply>, Status> {
        let r = r.into_inner();
        reply(self.0.remove(r.parent, &r.name, true).await)
    }

    #[instrument(level = "debug", skip_all, fields(parent = r.get_ref().parent, new_parent = r.get_ref().new_parent))]
    async fn rename(&self, r: Request<RenameRequest>) -> Result<Response<DirsReply>, Status> {
        reply(self.0.rename(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn readlink(&self, r: Request<InodeRequest>) -> Result<Response<ReadlinkReply>, Status> {
        reply(
            self.0
                .readlink(r.into_inner().ino)
                .map(|target| ReadlinkReply { target }),
        )
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino, cookie = r.get_ref().cookie))]
    async fn read_dir(&self, r: Request<ReadDirRequest>) -> Result<Response<ReadDirReply>, Status> {
        reply(self.0.readdir(r.get_ref()))
    }

    #[instrument(level = "debug", skip_all)]
    async fn stat_fs(&self, _r: Request<Empty>) -> Result<Response<StatFsReply>, Status> {
        Ok(Response::new(self.0.statfs()))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino))]
    async fn open(&self, r: Request<OpenRequest>) -> Result<Response<AttrReply>, Status> {
        let r = r.into_inner();
        reply(self.0.open(r.session, r.ino))
    }

    #[instrument(level = "debug", skip_all, fields(n = r.get_ref().inos.len()))]
    async fn release(&self, r: Request<ReleaseRequest>) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        self.0.release(r.session, &r.inos).await;
        reply(Ok(Empty {}))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino, index = r.get_ref().index))]
    async fn read_chunk(&self, r: Request<ChunkRequest>) -> Result<Response<ChunkReply>, Status> {
        let r = r.into_inner();
        reply(self.0.read_chunk(r.ino, r.index))
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino, index = r.get_ref().index))]
    async fn write_chunk(&self, r: Request<ChunkRequest>) -> Result<Response<ChunkReply>, Status> {
        reply(self.0.write_chunk(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(ino = r.get_ref().ino, index = r.get_ref().index))]
    async fn write_end(&self, r: Request<WriteEndRequest>) -> Result<Response<AttrReply>, Status> {
        reply(self.0.write_end(r.into_inner()).await)
    }

    #[instrument(level = "debug", skip_all, fields(chunk = r.get_ref().chunk_id))]
    async fn chunk_damaged(
        &self,
        r: Request<ChunkDamagedRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = r.into_inner();
        self.0.chunk_damaged(r.chunk_id, r.version, r.server_id);
        Ok(Response::new(Empty {}))
    }

    type WatchStream = ReceiverStream<Result<Notices, Status>>;

    #[instrument(level = "debug", skip_all)]
    async fn watch(
        &self,
        _r: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let session = notices::ORIGIN.try_with(|s| *s).unwrap_or(0);
        tokio::spawn(notices::watch(self.0.clone(), session, tx).in_current_span());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
