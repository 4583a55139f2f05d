//! The calling side: one connection per master, made at the first call and made again
//! after it breaks. Calls share it, each waiting for the reply that carries its id.

use super::frame::{self, Reply, MAGIC, PING};
use super::outbox::Outbox;
use crate::meta::Empty;
use crate::transport;
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::debug;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection silent this long is pinged; one silent for twice this is given up.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct MetaCalls {
    addr: String,
    conn: Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>,
}

struct Conn {
    out: Outbox,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// A frame came in since the keep-alive last looked.
    heard: AtomicBool,
}

#[derive(Default)]
struct State {
    waiting: HashMap<u64, oneshot::Sender<Result<Bytes, Status>>>,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

impl MetaCalls {
    /// Calls to the master at `addr` (`host:port`); connects at the first call.
    pub fn new(addr: &str) -> MetaCalls {
        MetaCalls {
            addr: addr.trim_start_matches("http://").to_owned(),
            conn: Default::default(),
        }
    }

    pub(super) async fn call<Q: Message, R: Message + Default>(
        &self,
        method: u8,
        session: u64,
        req: &Q,
    ) -> Result<R, Status> {
        let answer = self.conn().await?.send(method, session, req)?;
        let body = answer
            .await
            .map_err(|_| Status::unavailable("call connection closed"))??;
        R::decode(body).map_err(|e| Status::internal(format!("undecodable reply: {e}")))
    }

    async fn conn(&self) -> Result<Arc<Conn>, Status> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.state().broken.is_none()) {
            return Ok(c.clone());
        }
        // Opened on the RPC thread, whose reactor then drives the socket: a call made
        // there runs with no wake-up of another thread.
        let rpc = transport::rpc_runtime().map_err(|e| Status::internal(e.to_string()))?;
        let c = rpc
            .spawn(Conn::open(self.addr.clone()))
            .await
            .map_err(|e| Status::internal(format!("opening a connection: {e}")))?
            .map_err(|e| Status::unavailable(format!("{}: {e}", self.addr)))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl Conn {
    async fn open(addr: String) -> io::Result<Arc<Conn>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        write.write_all(&MAGIC).await?;
        let conn = Arc::new(Conn {
            out: Outbox::new(write),
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            heard: AtomicBool::new(false),
        });
        let reader = tokio::spawn(run(conn.clone(), read));
        tokio::spawn(keep_alive(Arc::downgrade(&conn), reader));
        Ok(conn)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the call; the receiver gets its answer.
    fn send(
        &self,
        method: u8,
        session: u64,
        req: &impl Message,
    ) -> Result<oneshot::Receiver<Result<Bytes, Status>>, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.state();
            if let Some(why) = &state.broken {
                return Err(Status::unavailable(why.clone()));
            }
            state.waiting.insert(id, answer);
        }
        if let Err(e) = self.out.send(&frame::request(id, session, method, req)) {
            self.break_off(format!("sending: {e}"));
        }
        Ok(answered)
    }

    fn deliver(&self, reply: Reply) {
        self.heard.store(true, Ordering::Relaxed);
        // Nobody waits for a ping's reply, nor for a call whose caller went away.
        if let Some(answer) = self.state().waiting.remove(&reply.id) {
            let _ = answer.send(reply.outcome);
        }
    }

    /// Fails every waiting call; the next call opens a new connection.
    fn break_off(&self, why: String) {
        debug!("call connection broken: {why}");
        let mut state = self.state();
        for (_, answer) in state.waiting.drain() {
            let _ = answer.send(Err(Status::unavailable(why.clone())));
        }
        state.broken.get_or_insert(why);
    }
}

/// Delivers replies and writes what the socket did not take at once, until either fails.
async fn run(conn: Arc<Conn>, read: OwnedReadHalf) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let receiving = async {
        loop {
            match frame::read_reply(&mut read).await {
                Ok(reply) => conn.deliver(reply),
                Err(e) => return format!("receiving: {e}"),
            }
        }
    };
    let why = tokio::select! {
        why = receiving => why,
        why = conn.out.flush() => format!("sending: {why}"),
    };
    conn.break_off(why);
}

/// Pings a silent connection, and breaks it off (stopping `reader`) when the ping gets no
/// answer either: a master behind a partition sends no reset, and its calls would wait
/// for ever.
async fn keep_alive(conn: Weak<Conn>, reader: JoinHandle<()>) {
    let mut pinged = false;
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        let Some(c) = conn.upgrade() else { break };
        if c.state().broken.is_some() {
            break;
        }
        if c.heard.swap(false, Ordering::Relaxed) {
            pinged = false;
        } else if pinged {
            c.break_off(format!("no answer for {:?}", KEEPALIVE * 2));
            break;
        } else {
            pinged = true;
            let _ = c.out.send(&frame::request(0, 0, PING, &Empty {}));
        }
    }
    reader.abort();
}
