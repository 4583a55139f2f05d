//! Follows the master's notice stream (`Meta.Watch`) into the
//! [`EntryCache`](crate::entry_cache::EntryCache), and what it changes into the
//! kernel's caches ([`KernelCache`]), for as long as
//! the mount runs: after a break (master restart, failover, network) the cache is
//! forgotten and the stream started again on whichever master is active.

use crate::kernel::KernelCache;
use crate::master_client::Master;
use elkfs_proto::meta::WatchRequest;
use elkfs_proto::transport::from_session;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Pause before asking for a new stream after one broke.
const RETRY: Duration = Duration::from_millis(200);

pub async fn follow(master: Arc<Master>, kernel: KernelCache) {
    loop {
        // The master leaves out the notices of this session's own changes: their replies
        // showed them.
        let req = from_session(WatchRequest {}, master.session());
        match master.watch_client().watch(req).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(n)) => {
                            let news = master.cache().notices(&n, Instant::now());
                            kernel.forget(news);
                        }
                        Ok(None) => break,
                        Err(s) => {
                            debug!("notice stream broke: {}", s.message());
                            break;
                        }
                    }
                }
            }
            Err(s) => debug!("cannot watch the master: {}", s.message()),
        }
        master.cache().disconnected();
        tokio::time::sleep(RETRY).await;
    }
}
