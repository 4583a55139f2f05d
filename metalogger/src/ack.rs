//! Tells the master which version is durable here, so `sync_metaloggers` on the master can
//! answer clients. One task: it batches everything received while the previous fsync or
//! ack was under way into one ack. Acks go to the master currently followed.

use crate::lag::Lag;
use elkfs_master::changelog::Changelog;
use elkfs_proto::feed::feed_client::FeedClient;
use elkfs_proto::feed::AckRequest;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tracing::{debug, error};

struct Pending {
    version: u64,
    committed_us: Vec<u64>,
}

pub struct Acker {
    pending: mpsc::UnboundedSender<Pending>,
    master: watch::Sender<Option<FeedClient<Channel>>>,
}

impl Acker {
    pub fn spawn(log: Arc<Changelog>, name: String) -> Acker {
        let (tx, rx) = mpsc::unbounded_channel();
        let (master, master_rx) = watch::channel(None);
        tokio::spawn(run(log, master_rx, name, rx));
        Acker {
            pending: tx,
            master,
        }
    }

    /// Send acks to this master from now on (the one the follower streams from).
    pub fn switch_to(&self, client: FeedClient<Channel>) {
        self.master.send_replace(Some(client));
    }

    /// Everything up to `version` has been submitted to the changelog; ack it once it is
    /// durable. `committed_us`: master commit times of the new records (lag statistics).
    pub fn submitted(&self, version: u64, committed_us: Vec<u64>) {
        let _ = self.pending.send(Pending {
            version,
            committed_us,
        });
    }
}

async fn run(
    log: Arc<Changelog>,
    master: watch::Receiver<Option<FeedClient<Channel>>>,
    name: String,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut lag = Lag::new();
    while let Some(first) = rx.recv().await {
        let mut version = first.version;
        let mut committed = first.committed_us;
        while let Ok(p) = rx.try_recv() {
            version = version.max(p.version);
            committed.extend(p.committed_us);
        }
        if let Err(e) = log.wait(version).await {
            // The follower sees the same failure on its next append and stops.
            error!(error = %e, "changelog not durable: no more acks");
            return;
        }
        lag.durable(&committed);
        let req = AckRequest {
            name: name.clone(),
            version,
        };
        let Some(mut client) = master.borrow().clone() else {
            continue;
        };
        // A lost ack is repaired by the next one, or at the next session start.
        if let Err(s) = client.ack(req).await {
            debug!(version, error = %s.message(), "ack not delivered");
        }
    }
}
