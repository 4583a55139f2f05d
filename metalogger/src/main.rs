//! `elkfs-metalogger --master ADDR --data DIR [--config FILE]`: see docs/recovery.md.

use anyhow::Context;
use clap::Parser;
use elkfs_metalogger::ack::Acker;
use elkfs_metalogger::config::{Args, Config};
use elkfs_metalogger::follow::Follower;
use elkfs_metalogger::store::Store;
use elkfs_proto::transport;
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    elkfs_proto::daemon::init_logging();
    let cfg = Config::load(Args::parse())?;
    let channel = transport::channel(&cfg.master)
        .with_context(|| format!("master address {:?}", cfg.master))?;
    let (dir, keep) = (cfg.data_dir.clone(), cfg.images_keep);
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, keep))
        .await?
        .with_context(|| format!("opening {}", cfg.data_dir.display()))?;
    info!(master = %cfg.master, name = %cfg.name, version = store.version(), "elkfs-metalogger started");
    let client = transport::feed_client(channel);
    let log = store.log();
    let follower = Follower {
        acks: Acker::spawn(log.clone(), client.clone(), cfg.name.clone()),
        client,
        store,
        name: cfg.name.clone(),
        image_interval: Duration::from_secs(cfg.image_interval_secs.max(1)),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(e) = elkfs_proto::daemon::shutdown_signal().await {
            tracing::error!(error = %e, "cannot watch signals");
            return;
        }
        let _ = stop_tx.send(true);
    });
    let store = follower.run(stop_rx).await.context("metalogger data")?;
    // Whatever was received is made durable before exiting, so a restart resumes there.
    log.wait(store.version()).await?;
    info!(version = store.version(), "stopped");
    Ok(())
}
