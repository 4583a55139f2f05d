//! `elkfs-chunkserver`: see docs/architecture.md for flags, config keys and the disk format.

use anyhow::Context as _;
use clap::Parser;
use elkfs_chunkserver::config::{Args, Config};
use elkfs_chunkserver::master_link::{self, MasterLink, DAMAGE_QUEUE};
use elkfs_chunkserver::scrub::Scrubber;
use elkfs_chunkserver::service::{self, ChunkService};
use elkfs_chunkserver::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long in-flight requests get to finish after SIGTERM before we close anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

// One thread for the network and the tasks of a request; file I/O goes to the blocking
// pool. With a worker per core, each hand-off between a write stream's reader, local
// writer and acker (and between a connection and its request) could wake another worker:
// the single thread took a quarter to a third off a small file's flush (A/B, 2026-12-03).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    elkfs_proto::daemon::init_logging();
    let cfg = Config::load(Args::parse())?;
    for m in &cfg.masters {
        elkfs_proto::transport::endpoint(m).with_context(|| format!("master address {m:?}"))?;
    }
    tracing::info!(?cfg, "starting chunkserver");

    let (dirs, reserve) = (cfg.data_dirs.clone(), cfg.reserve_bytes);
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&dirs, reserve))
            .await?
            .context("opening the data directories")?,
    );
    let uuid =
        master_link::load_or_create_uuid(&cfg.data_dirs[0]).context("reading the uuid file")?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, %uuid, "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (damage_tx, damage_rx) = mpsc::channel(DAMAGE_QUEUE);
    let link = MasterLink {
        store: store.clone(),
        masters: cfg.masters.clone(),
        addr: cfg.listen.clone(),
        uuid,
        heartbeat: Duration::from_secs(cfg.heartbeat_secs),
        epoch: Arc::new(
            master_link::epoch::Epoch::load(&cfg.data_dirs[0])
                .context("reading the master epoch file")?,
        ),
    };
    let link = tokio::spawn(link.run(damage_rx, stop_rx.clone()));

    let scrub = Scrubber {
        store: store.clone(),
        damage: damage_tx.clone(),
        bytes_per_sec: cfg.scrub_bytes_per_sec,
        pause: Duration::from_secs(cfg.scrub_pause_secs),
    };
    let scrub = tokio::spawn(scrub.run(stop_rx.clone()));

    let svc = ChunkService::new(
        store.clone(),
        cfg.listen.clone(),
        damage_tx,
        cfg.max_replications,
    );
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(service::serve(listener, svc, async move {
        let _ = server_stop.changed().await;
    }));

    tokio::select! {
        res = elkfs_proto::daemon::shutdown_signal() => res?,
        res = &mut server => {
            res?.context("chunk service failed")?;
            anyhow::bail!("chunk service stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(res) => res?.context("chunk service failed")?,
        Err(_) => {
            tracing::warn!("requests still running after the drain timeout, closing anyway");
            server.abort();
        }
    }
    scrub.await?;
    if let Err(e) = link.await? {
        tracing::warn!(error = %e, "master link ended with an error");
    }
    // Writes still running on the blocking pool hold the chunk locks; shutdown's index
    // sync waits on those locks, so it sees their final lengths.
    tokio::task::spawn_blocking(move || store.shutdown())
        .await?
        .context("syncing the chunk index")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
