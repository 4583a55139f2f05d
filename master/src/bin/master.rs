//! `elkfs-master`: serves metadata to mounts, chunkservers and the admin tool.

use anyhow::Context;
use clap::Parser;
use elkfs_master::config::Args;
use elkfs_master::core::Master;
use tracing::info;

fn main() -> anyhow::Result<()> {
    elkfs_proto::daemon::init_logging();
    let config = Args::parse().into_config()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: elkfs_master::config::Config) -> anyhow::Result<()> {
    let addr = tokio::net::lookup_host(&config.listen)
        .await?
        .next()
        .with_context(|| format!("cannot resolve {}", config.listen))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let master = Master::start(config).context("loading metadata")?;
    info!(%addr, version = master.metadata_version(), "elkfs-master serving");
    elkfs_master::server::serve(master, listener).await
}
