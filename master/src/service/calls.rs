//! Meta calls on framed connections ([`elkfs_proto::calls`]): gRPC's handlers, behind the
//! same fence and with the same session origin.

use super::MetaService;
use crate::core::Master;
use crate::notices::ORIGIN;
use elkfs_proto::calls;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

pub async fn serve(
    master: Arc<Master>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: impl Future<Output = ()>,
) {
    let service = Arc::new(MetaService(master.clone()));
    let handle = move |req: calls::frame::Request| {
        let (master, service) = (master.clone(), service.clone());
        async move {
            master.refuse_if_superseded()?;
            let call = calls::dispatch(&*service, req.method, req.body, Some(peer));
            ORIGIN.scope(req.session, call).await
        }
    };
    calls::serve(stream, peer, handle, stop).await;
}
