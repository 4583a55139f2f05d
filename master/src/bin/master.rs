//! `elkfs-master`: serves metadata to mounts, chunkservers and the admin tool.

use anyhow::Context;
use clap::Parser;
use elkfs_master::config::Args;
use elkfs_master::core::Master;
use elkfs_master::service::{AdminService, FeedService, MetaService, RegistryService};
use elkfs_proto::transport;
use std::io::IsTerminal;
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::server::TcpIncoming;
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
        .with_ansi(std::io::stderr().is_terminal())
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
    // `Server::tcp_nodelay` only applies to sockets tonic accepts itself. Without it,
    // Nagle holds back the small writes of a stream (metalogger feed) until the peer's
    // delayed ACK, adding ~40 ms to every synchronously replicated operation.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    transport::server()
        .add_service(transport::meta_service(MetaService(master.clone())))
        .add_service(transport::registry_service(RegistryService(master.clone())))
        .add_service(transport::admin_service(AdminService(master.clone())))
        .add_service(transport::feed_service(FeedService(master.clone())))
        .serve_with_incoming_shutdown(incoming, async {
            shutdown_signal().await;
            // Follower streams are endless; the server waits for open streams to end.
            master.feed.close();
        })
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
