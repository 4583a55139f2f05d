//! The master's gRPC endpoint, shared by `elkfs-master` and a promoted standby: every
//! service on one listener until the stop signal, then a final metadata image.

use crate::core::Master;
use crate::fence;
use crate::service::{AdminService, FeedService, MetaService, Origin, RegistryService};
use elkfs_proto::transport;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::server::TcpIncoming;
use tracing::info;

/// `service`, refusing every request once this master is superseded.
fn fenced<S>(master: &Arc<Master>, service: S) -> InterceptedService<S, impl Interceptor + Clone> {
    InterceptedService::new(service, fence::interceptor(master.clone()))
}

pub async fn serve(master: Arc<Master>, listener: TcpListener) -> anyhow::Result<()> {
    // `Server::tcp_nodelay` only applies to sockets tonic accepts itself. Without it,
    // Nagle holds back the small writes of a stream (metalogger feed) until the peer's
    // delayed ACK, adding ~40 ms to every synchronously replicated operation.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    transport::server()
        .add_service(Origin(fenced(
            &master,
            transport::meta_service(MetaService(master.clone())),
        )))
        .add_service(fenced(
            &master,
            transport::registry_service(RegistryService(master.clone())),
        ))
        // Still answers when superseded: `elkfs status` is how an operator finds out.
        .add_service(transport::admin_service(AdminService(master.clone())))
        .add_service(fenced(
            &master,
            transport::feed_service(FeedService(master.clone())),
        ))
        .serve_with_incoming_shutdown(incoming, async {
            if let Err(e) = elkfs_proto::daemon::shutdown_signal().await {
                tracing::error!(error = %e, "cannot watch signals");
                std::future::pending::<()>().await;
            }
            // Follower and watch streams are endless; the server waits for open streams to
            // end.
            master.feed.close();
            master.notifier.close();
        })
        .await?;
    info!("stopping: writing a final metadata image");
    master.snapshot().await?;
    info!("stopped");
    Ok(())
}
