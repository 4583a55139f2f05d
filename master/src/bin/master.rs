//! `elkfs-master`: serves metadata to mounts, chunkservers and the admin tool.

use anyhow::Context;
use clap::Parser;
use elkfs_master::config::Args;
use elkfs_master::core::Master;
use elkfs_master::service::{AdminService, FeedService, MetaService, RegistryService};
use elkfs_proto::transport;
use tonic::transport::server::TcpIncoming;
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
            if let Err(e) = elkfs_proto::daemon::shutdown_signal().await {
                tracing::error!(error = %e, "cannot watch signals");
                std::future::pending::<()>().await;
            }
            // Follower streams are endless; the server waits for open streams to end.
            master.feed.close();
        })
        .await?;
    info!("stopping: writing a final metadata image");
    master.snapshot().await?;
    info!("stopped");
    Ok(())
}
