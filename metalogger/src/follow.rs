//! The follow loop: one `Feed.Follow` stream at a time from the last version held,
//! reconnecting with backoff after any error (master restart, network, a record out of
//! order), and periodically asking for a fresh image. With several master addresses, a
//! session that fails before receiving anything moves on to the next address, so the
//! metalogger finds whichever master is active (e.g. a promoted standby).

use crate::ack::Acker;
use crate::replica::{Replica, ReplicaError};
use crate::store::{Store, StoreError};
use elkfs_master::files;
use elkfs_proto::feed::feed_client::FeedClient;
use elkfs_proto::feed::{follow_reply::Item, FollowRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{info, warn};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often following is tried again while this disk is full.
const NO_SPACE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("master: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("the master ended the stream")]
    Ended,
    #[error("empty reply from the master")]
    Empty,
}

/// Why following stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A standby's memory no longer matches the records: it must not be promoted.
    #[error("standby metadata: {0}")]
    Replica(#[from] ReplicaError),
}

/// One master address and its client.
pub struct MasterFeed {
    pub addr: String,
    pub client: FeedClient<Channel>,
}

pub struct Follower {
    pub masters: Vec<MasterFeed>,
    pub store: Store,
    /// A standby's in-memory metadata.
    pub replica: Option<Replica>,
    pub acks: Acker,
    pub name: String,
    pub image_interval: Duration,
    /// Address of the master currently followed ("" between sessions).
    pub following: Arc<Mutex<String>>,
}

/// How one session ended without an error.
enum End {
    /// Time for a fresh image: reconnect asking for one.
    ImageDue,
}

impl Follower {
    /// Follow until `stop` turns true; fails only when this directory cannot be written
    /// (or a standby's memory diverged). Returns the store and the standby's metadata.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(Store, Option<Replica>), FollowError> {
        let mut backoff = MIN_BACKOFF;
        let mut next_image = Instant::now() + self.image_interval;
        let mut want_image = false;
        let mut current = 0;
        let mut fruitless = 0;
        loop {
            let mut progressed = false;
            let result = tokio::select! {
                r = self.session(current, want_image, &mut next_image, &mut progressed) => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            self.set_following("");
            self.store.abandon_image();
            match result {
                Ok(End::ImageDue) => {
                    want_image = true;
                    continue;
                }
                Err(SessionError::Store(e @ StoreError::NotDurable(_))) => return Err(e.into()),
                Err(SessionError::Store(StoreError::NoSpace)) => {
                    // The changelog logged it. The master keeps the records (or sends an
                    // image) until this disk has room again; `wait_for_room` retries for it.
                    tokio::select! {
                        _ = tokio::time::sleep(NO_SPACE_WAIT) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    continue;
                }
                Err(SessionError::Replica(e)) => return Err(e.into()),
                Err(e) => warn!(
                    master = %self.masters[current].addr,
                    error = %e,
                    version = self.store.version(),
                    "following the master failed; reconnecting"
                ),
            }
            if progressed {
                backoff = MIN_BACKOFF;
                want_image = false;
                fruitless = 0;
            } else {
                // Nothing from this address: try the next one at once; back off only
                // after every address failed.
                current = (current + 1) % self.masters.len();
                fruitless += 1;
                if fruitless % self.masters.len() != 0 {
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok((self.store, self.replica))
    }

    fn set_following(&self, addr: &str) {
        let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
        addr.clone_into(&mut f);
    }

    async fn session(
        &mut self,
        current: usize,
        want_image: bool,
        next_image: &mut Instant,
        progressed: &mut bool,
    ) -> Result<End, SessionError> {
        let req = FollowRequest {
            from_version: self.store.version(),
            name: self.name.clone(),
            want_image,
        };
        let master = &self.masters[current];
        let mut client = master.client.clone();
        let mut stream = client.follow(req).await?.into_inner();
        info!(
            master = %master.addr,
            from = self.store.version(),
            want_image,
            "following the master"
        );
        let addr = master.addr.clone();
        self.set_following(&addr);
        // A restarted master forgot the acks; tell it what is here.
        self.acks.switch_to(client);
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
                    if let Some(version) = installed {
                        awaiting_image = false;
                        *next_image = Instant::now() + self.image_interval;
                        if let Some(replica) = self.replica.as_mut() {
                            let path = files::image_path(self.store.dir(), version);
                            tokio::task::block_in_place(|| {
                                replica.image_installed(&path, version)
                            })?;
                        }
                    }
                }
                Item::Records(batch) => {
                    self.store.append(&batch.records, batch.awaited).await?;
                    if let Some(replica) = self.replica.as_mut() {
                        replica.apply(&batch.records)?;
                    }
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
