//! gRPC connection settings sized for MiB payloads: large HTTP/2 windows (the 64 KiB
//! default would stall every 1 MiB write on window updates) and matching message limits.

use crate::coalesce::Coalescing;
use crate::limits::MAX_MESSAGE;
use crate::{admin, chunk, feed, meta, registry, FsError};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Server};

/// The request header naming the mount session a Meta request comes from.
pub const SESSION_HEADER: &str = "elkfs-session";

/// `msg` as a request from mount session `session` (0: none yet).
pub fn from_session<T>(msg: T, session: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if session != 0 {
        r.metadata_mut().insert(SESSION_HEADER, session.into());
    }
    r
}

const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest HTTP/2 frame either side accepts. With the 16 KiB default a 1 MiB message took
/// 64 frames and ~130 `recv` calls. Not larger: when a message's first frame arrives, tonic
/// grows its receive buffer by copying what it holds, so a frame as large as the message
/// would be copied once more in full.
const MAX_FRAME: u32 = 128 << 10;

/// HTTP/2 keep-alive: a ping after this long without a frame from the peer, and the
/// connection fails if the ping is not answered within as long again.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Chunk data connections (reads, chain writes, replication) give up on a silent peer
/// sooner: a chain write waits for every copy's ack, so a hung chunkserver (stopped, or its
/// host gone without a reset) stalls its writers until the connection fails. Not shorter:
/// the ping queues behind data the peer is not reading, so a live server whose disk stalls
/// this long looks the same and is written around.
const DATA_KEEPALIVE: Duration = Duration::from_secs(5);

/// An endpoint for `addr` ("host:port" or a full URI) with elkfs's transport settings.
/// The connection is made lazily, and re-made after it breaks.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    endpoint_with(addr, KEEPALIVE)
}

fn endpoint_with(addr: &str, keepalive: Duration) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true))
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(Connect))
}

/// A lazily connecting channel for chunk data to the chunkserver at `addr`, with the
/// shorter keep-alive.
pub fn data_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint_with(addr, DATA_KEEPALIVE)?.connect_with_connector_lazy(Connect))
}

/// Opens the TCP connections of a channel, sending through [`Coalescing`].
#[derive(Clone, Copy)]
struct Connect;

type Connection = TokioIo<Coalescing<TcpStream>>;

impl Service<Uri> for Connect {
    type Response = Connection;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Connection>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let Some(host) = uri.host() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{uri}: no host"),
                ));
            };
            let port = uri.port_u16().unwrap_or(80);
            // An IPv6 literal comes bracketed in a URI.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Coalescing::new(stream)))
        })
    }
}

/// A lazily connecting channel to `addr` whose connection tasks run on [`rpc_runtime`]:
/// for small latency-bound calls (a mount's metadata), where every hop between threads
/// costs a wake-up comparable to the network round trip itself.
pub fn latency_channel(addr: &str) -> Result<Channel, FsError> {
    // The channel spawns its buffer worker here, and that worker spawns the connection.
    let _on = rpc_runtime()?.enter();
    Ok(channel(addr)?)
}

/// One thread running a single-threaded runtime, shared by the process: a request, its
/// HTTP/2 connection task and its reply all run on this thread with no cross-thread wake-up.
pub fn rpc_runtime() -> Result<Handle, FsError> {
    static RPC: OnceLock<Result<Handle, String>> = OnceLock::new();
    RPC.get_or_init(|| start_rpc_runtime().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| FsError::Io(format!("starting the RPC thread: {e}")))
}

fn start_rpc_runtime() -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("elkfs-rpc".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// A server builder with the same window sizes.
pub fn server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
}

pub fn meta_client(ch: Channel) -> meta::meta_client::MetaClient<Channel> {
    meta::meta_client::MetaClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn chunk_client(ch: Channel) -> chunk::chunk_client::ChunkClient<Channel> {
    chunk::chunk_client::ChunkClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn registry_client(ch: Channel) -> registry::registry_client::RegistryClient<Channel> {
    registry::registry_client::RegistryClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn admin_client(ch: Channel) -> admin::admin_client::AdminClient<Channel> {
    admin::admin_client::AdminClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn meta_service<T: meta::meta_server::Meta>(svc: T) -> meta::meta_server::MetaServer<T> {
    meta::meta_server::MetaServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn chunk_service<T: chunk::chunk_server::Chunk>(svc: T) -> chunk::chunk_server::ChunkServer<T> {
    chunk::chunk_server::ChunkServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn registry_service<T: registry::registry_server::Registry>(
    svc: T,
) -> registry::registry_server::RegistryServer<T> {
    registry::registry_server::RegistryServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn admin_service<T: admin::admin_server::Admin>(svc: T) -> admin::admin_server::AdminServer<T> {
    admin::admin_server::AdminServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn feed_client(ch: Channel) -> feed::feed_client::FeedClient<Channel> {
    feed::feed_client::FeedClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn feed_service<T: feed::feed_server::Feed>(svc: T) -> feed::feed_server::FeedServer<T> {
    feed::feed_server::FeedServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A list of addresses as every command line and config takes it: `a:9520,b:9520`
/// (blanks around and empty pieces dropped).
pub fn address_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_lists_drop_blanks() {
        assert_eq!(super::address_list("a:1, b:2,,"), vec!["a:1", "b:2"]);
        assert!(super::address_list(" , ").is_empty());
    }
}
