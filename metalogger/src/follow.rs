//! The follow loop: one `Feed.Follow` stream at a time from the last version held,
//! reconnecting with backoff after any error (master restart, network, a record out of
//! order), and periodically asking for a fresh image.

use crate::ack::Acker;
use crate::store::{Store, StoreError};
use elkfs_proto::feed::feed_client::FeedClient;
use elkfs_proto::feed::{follow_reply::Item, FollowRequest};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{info, warn};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("master: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the master ended the stream")]
    Ended,
    #[error("empty reply from the master")]
    Empty,
}

pub struct Follower {
    pub client: FeedClient<Channel>,
    pub store: Store,
    pub acks: Acker,
    pub name: String,
    pub image_interval: Duration,
}

/// How one session ended without an error.
enum End {
    /// Time for a fresh image: reconnect asking for one.
    ImageDue,
}

impl Follower {
    /// Follow until `stop` turns true; fails only when this directory cannot be written.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Store, StoreError> {
        let mut backoff = MIN_BACKOFF;
        let mut next_image = Instant::now() + self.image_interval;
        let mut want_image = false;
        loop {
            let mut progressed = false;
            let result = tokio::select! {
                r = self.session(want_image, &mut next_image, &mut progressed) => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            self.store.abandon_image();
            match result {
                Ok(End::ImageDue) => {
                    want_image = true;
                    continue;
                }
                Err(SessionError::Store(e @ StoreError::NotDurable(_))) => return Err(e),
                Err(e) => {
                    warn!(error = %e, version = self.store.version(), "following the master failed; reconnecting")
                }
            }
            if progressed {
                backoff = MIN_BACKOFF;
                want_image = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(self.store)
    }

    async fn session(
        &mut self,
        want_image: bool,
        next_image: &mut Instant,
        progressed: &mut bool,
    ) -> Result<End, SessionError> {
        let req = FollowRequest {
            from_version: self.store.version(),
            name: self.name.clone(),
            want_image,
        };
        let mut stream = self.client.follow(req).await?.into_inner();
        info!(
            from = self.store.version(),
            want_image, "following the master"
        );
        // A restarted master forgot the acks; tell it what is here.
        self.acks.submitted(self.store.version(), Vec::new());
        let mut awaiting_image = want_image;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m?,
                _ = tokio::time::sleep_until(*next_image), if !awaiting_image => {
                    return Ok(End::ImageDue)
                }
            };
            let item = msg
                .ok_or(SessionError::Ended)?
                .item
                .ok_or(SessionError::Empty)?;
            *progressed = true;
            match item {
                Item::Image(piece) => {
                    // Writing and fsyncing an image blocks; the ack task keeps running.
                    let installed = tokio::task::block_in_place(|| self.store.image_piece(piece))?;
                    if installed.is_some() {
                        awaiting_image = false;
                        *next_image = Instant::now() + self.image_interval;
                    }
                }
                Item::Records(batch) => {
                    self.store.append(&batch.records)?;
                    let committed = batch
                        .records
                        .iter()
                        .map(|r| r.committed_unix_micros)
                        .collect();
                    self.acks.submitted(self.store.version(), committed);
                }
            }
        }
    }
}
