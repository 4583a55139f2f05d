//! The answering side: requests of one connection run concurrently, each reply goes back
//! as soon as it is ready.

use super::client::KEEPALIVE;
use super::frame::{self, PING};
use super::outbox::Outbox;
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tonic::Status;
use tracing::{debug, warn, Instrument};

/// Serves the call connection `stream` from `peer` (its magic already read) until the
/// peer closes it, sends a bad frame, stays silent past its keep-alive, or `stop`
/// resolves. `handle` answers one request.
pub async fn serve<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    handle: H,
    stop: impl Future<Output = ()>,
) where
    H: Fn(frame::Request) -> F,
    F: Future<Output = Result<Bytes, Status>> + Send + 'static,
{
    let span = tracing::info_span!("calls", %peer);
    let (read, write) = stream.into_split();
    // Handlers hold it weakly: the connection closes when this returns, even while a
    // handler still runs.
    let out = Arc::new(Outbox::new(write));
    let heard = Arc::new(AtomicBool::new(true));
    let requests = async {
        let mut read = BufReader::with_capacity(64 << 10, read);
        loop {
            let req = match frame::read_request(&mut read).await {
                Ok(req) => req,
                Err(frame::FrameError::Io(e)) => return debug!("connection closed: {e}"),
                Err(e) => return warn!("closing the connection: {e}"),
            };
            heard.store(true, Ordering::Relaxed);
            let id = req.id;
            if req.method == PING {
                let _ = out.send(&frame::reply(id, Ok(Bytes::new())));
                continue;
            }
            let answer_to = Arc::downgrade(&out);
            let outcome = handle(req);
            tokio::spawn(
                async move {
                    answer(&answer_to, id, outcome.await);
                }
                .instrument(span.clone()),
            );
        }
    };
    // A client pings at least every other keep-alive period, so this is a dead peer.
    let silence = async {
        loop {
            tokio::time::sleep(KEEPALIVE * 3).await;
            if !heard.swap(false, Ordering::Relaxed) {
                return warn!("closing the connection: silent for {:?}", KEEPALIVE * 3);
            }
        }
    };
    tokio::select! {
        () = requests.instrument(span.clone()) => {}
        () = silence.instrument(span.clone()) => {}
        why = out.flush() => span.in_scope(|| debug!("closing the connection: sending: {why}")),
        () = stop => {}
    }
}

fn answer(to: &Weak<Outbox>, id: u64, outcome: Result<Bytes, Status>) {
    if let Some(out) = to.upgrade() {
        // A failed send ends `flush`, which closes the connection.
        let _ = out.send(&frame::reply(id, outcome));
    }
}
