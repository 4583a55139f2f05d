//! The master's endpoint, shared by `elkfs-master` and a promoted standby: every gRPC
//! service and the framed Meta calls on one listener until the stop signal, then a final
//! metadata image.

use crate::core::Master;
use crate::fence;
use crate::service::{
    serve_calls, AdminService, FeedService, MetaService, Origin, RegistryService,
};
use elkfs_proto::calls::frame::MAGIC;
use elkfs_proto::transport;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tracing::{debug, info, warn};

/// How long a new connection may take to send its first bytes.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// `service`, refusing every request once this master is superseded.
fn fenced<S>(master: &Arc<Master>, service: S) -> InterceptedService<S, impl Interceptor + Clone> {
    InterceptedService::new(service, fence::interceptor(master.clone()))
}

pub async fn serve(master: Arc<Master>, listener: TcpListener) -> anyhow::Result<()> {
    let (grpc, incoming) = mpsc::channel(64);
    let (stopping, stop) = watch::channel(());
    let accepting = tokio::spawn(accept(master.clone(), listener, grpc, stop));
    let closing = master.clone();
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
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
            if let Err(e) = elkfs_proto::daemon::shutdown_signal().await {
                tracing::error!(error = %e, "cannot watch signals");
                std::future::pending::<()>().await;
            }
            // Follower and watch streams are endless; the server waits for open streams to
            // end.
            closing.feed.close();
            closing.notifier.close();
            drop(stopping);
        })
        .await?;
    accepting.abort();
    info!("stopping: writing a final metadata image");
    master.snapshot().await?;
    info!("stopped");
    Ok(())
}

/// Accepts connections and tells them apart by their first bytes: framed Meta calls (a
/// mount's metadata path) are served here, HTTP/2 goes to `grpc`.
async fn accept(
    master: Arc<Master>,
    listener: TcpListener,
    grpc: mpsc::Sender<std::io::Result<TcpStream>>,
    stop: watch::Receiver<()>,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: give closing connections a moment.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without it, Nagle holds back the small writes of a stream (metalogger feed)
        // until the peer's delayed ACK, adding ~40 ms to every replicated operation.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY");
        }
        let (master, grpc, mut stop) = (master.clone(), grpc.clone(), stop.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, opens_calls(&mut stream)).await {
                Ok(Ok(true)) => {
                    let stopped = async move {
                        let _ = stop.changed().await;
                    };
                    serve_calls(master, stream, peer, stopped).await;
                }
                Ok(Ok(false)) => {
                    let _ = grpc.send(Ok(stream)).await;
                }
                Ok(Err(e)) => debug!(error = %e, "connection dropped at its first bytes"),
                Err(_) => debug!("connection silent since it opened: closed"),
            }
        });
    }
}

/// Whether `stream` opens with the framed calls' magic (which is then consumed). Anything
/// else is left for HTTP/2, which opens with `PRI `.
async fn opens_calls(stream: &mut TcpStream) -> std::io::Result<bool> {
    let mut first = [0; 1];
    if stream.peek(&mut first).await? == 0 || first[0] != MAGIC[0] {
        return Ok(false);
    }
    let mut magic = [0; MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if magic != MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown protocol {magic:?}"),
        ));
    }
    Ok(true)
}
