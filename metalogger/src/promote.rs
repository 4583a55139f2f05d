//! A standby becomes the master: the follower has stopped, everything received is made
//! durable, the directory lock passes to the master, and the master's own code
//! (`Master::from_state`, `server::serve`) runs in this process from the metadata in
//! memory. The data directory already is a master directory (image and changelogs in the
//! master's formats), so nothing is replayed or rewritten. Its first record starts a new
//! epoch, which fences the old master should it ever come back (see `elkfs_master::fence`).

use crate::config::Config;
use crate::control::PromoteOrder;
use crate::replica::Replica;
use crate::store::Store;
use anyhow::Context;
use clap::Parser;
use elkfs_master::core::Master;
use elkfs_proto::standby::PromoteReply;
use elkfs_proto::FsError;
use std::ffi::OsString;
use tracing::info;

/// The master's settings: the standby's `master_config` file (or the defaults), with its
/// address and data directory.
fn master_config(cfg: &Config) -> anyhow::Result<elkfs_master::config::Config> {
    let mut args: Vec<OsString> = vec![
        "elkfs-master".into(),
        "--listen".into(),
        cfg.master_listen.clone().into(),
        "--data-dir".into(),
        cfg.data_dir.clone().into(),
    ];
    if let Some(file) = &cfg.master_config {
        args.extend(["--config".into(), file.clone().into()]);
    }
    elkfs_master::config::Args::try_parse_from(args)?.into_config()
}

/// Starts the master and answers the order; then serves until the stop signal.
pub async fn become_master(
    cfg: &Config,
    store: Store,
    replica: Option<Replica>,
    order: PromoteOrder,
) -> anyhow::Result<()> {
    let master = match start(cfg, store, replica).await {
        Ok(m) => m,
        Err(e) => {
            let _ = order.reply.send(Err(FsError::Io(format!("{e:#}"))));
            return Err(e);
        }
    };
    let version = master.metadata_version();
    let elapsed_ms = order.started.elapsed().as_millis() as u64;
    info!(version, listen = %cfg.master_listen, elapsed_ms, "promoted: serving as the master");
    let _ = order.reply.send(Ok(PromoteReply {
        version,
        master_listen: cfg.master_listen.clone(),
        elapsed_ms,
    }));
    elkfs_master::server::serve(master, order.listener).await
}

async fn start(
    cfg: &Config,
    store: Store,
    replica: Option<Replica>,
) -> anyhow::Result<std::sync::Arc<Master>> {
    let version = store.version();
    store
        .log()
        .wait(version)
        .await
        .context("making the received records durable")?;
    // Releases the directory lock for the master.
    drop(store);
    let state = replica
        .and_then(Replica::into_state)
        .context("no metadata in memory")?;
    anyhow::ensure!(
        state.version == version,
        "metadata in memory is at {}, the data directory at {version}",
        state.version
    );
    let master = Master::from_state(master_config(cfg)?, state).context("starting the master")?;
    master
        .begin_epoch()
        .await
        .context("starting a new master epoch")?;
    Ok(master)
}
