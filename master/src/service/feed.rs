//! `elkfs.feed.Feed`: metaloggers follow the metadata and report what they hold.

use crate::core::Master;
use crate::feed;
use elkfs_proto::feed::feed_server::Feed;
use elkfs_proto::feed::*;
use elkfs_proto::FsError;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn, Instrument};

/// Replies buffered per follower before the stream applies backpressure.
const QUEUE: usize = 16;

pub struct FeedService(pub Arc<Master>);

#[tonic::async_trait]
impl Feed for FeedService {
    type FollowStream = ReceiverStream<Result<FollowReply, Status>>;

    async fn follow(
        &self,
        r: Request<FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let req = r.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        let master = self.0.clone();
        let span = tracing::info_span!("follower", name = %req.name);
        tokio::spawn(
            async move {
                info!(
                    from = req.from_version,
                    want_image = req.want_image,
                    "metalogger following"
                );
                match feed::follow(master, req.from_version, req.want_image, tx.clone()).await {
                    Ok(()) | Err(feed::FeedError::Closed) => info!("metalogger left"),
                    Err(e) => {
                        warn!(error = %e, "metalogger stream ended");
                        let _ = tx.send(Err(Status::from(FsError::from(e)))).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn ack(&self, r: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        let req = r.into_inner();
        self.0.feed.ack(&req.name, req.version);
        Ok(Response::new(AckReply {}))
    }
}
