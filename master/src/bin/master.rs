//! `elkfs-master`: serves metadata to mounts, chunkservers and the admin tool.

use anyhow::Context;
use clap::Parser;
use elkfs_master::config::Args;
use elkfs_master::core::Master;
use elkfs_master::service::{AdminService, MetaService, RegistryService};
use elkfs_proto::transport;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Args::parse().into_config()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ELKFS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    transport::server()
        .add_service(transport::meta_service(MetaService(master.clone())))
        .add_service(transport::registry_service(RegistryService(master.clone())))
        .add_service(transport::admin_service(AdminService(master.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await?;
    info!("stopping: writing a final metadata image");
    master.snapshot().await?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
