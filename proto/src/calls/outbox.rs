//! The sending half of a call connection. A frame is written straight from the thread
//! that sends it, while the socket takes it at once: handing it to a writer task would
//! wake that task's thread first, and on a small machine that wake-up is a good part of a
//! call's time. What the socket does not take waits, in order, for [`Outbox::flush`],
//! and so do frames sent meanwhile.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

pub(super) struct Outbox {
    sock: OwnedWriteHalf,
    backlog: Mutex<Backlog>,
    pending: Notify,
}

#[derive(Default)]
struct Backlog {
    bytes: Vec<u8>,
    /// [`Outbox::flush`] owns the next bytes out: a new frame goes after them.
    flushing: bool,
    /// Why writing failed; nothing more goes out.
    failed: Option<String>,
}

impl Outbox {
    pub(super) fn new(sock: OwnedWriteHalf) -> Outbox {
        Outbox {
            sock,
            backlog: Mutex::default(),
            pending: Notify::new(),
        }
    }

    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `frame` after every frame sent before it. An error means the connection can
    /// send nothing more.
    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut b = self.backlog();
        if let Some(why) = &b.failed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone()));
        }
        if b.flushing {
            b.bytes.extend_from_slice(frame);
            return Ok(());
        }
        // Under the lock, so that two senders' partial writes never interleave.
        let sent = match self.sock.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                b.failed = Some(e.to_string());
                self.pending.notify_one();
                return Err(e);
            }
        };
        if sent < frame.len() {
            b.bytes.extend_from_slice(&frame[sent..]);
            b.flushing = true;
            self.pending.notify_one();
        }
        Ok(())
    }

    /// Writes what the socket did not take at once, as it becomes writable. Returns why,
    /// once writing has failed here or in [`Outbox::send`].
    pub(super) async fn flush(&self) -> String {
        loop {
            self.pending.notified().await;
            if let Some(why) = self.backlog().failed.clone() {
                return why;
            }
            if let Err(e) = self.drain().await {
                let why = e.to_string();
                self.backlog().failed = Some(why.clone());
                return why;
            }
        }
    }

    async fn drain(&self) -> io::Result<()> {
        loop {
            let bytes = {
                let mut b = self.backlog();
                if b.bytes.is_empty() {
                    b.flushing = false;
                    return Ok(());
                }
                std::mem::take(&mut b.bytes)
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                self.sock.writable().await?;
                match self.sock.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// An outbox on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (_, write) = client.into_split();
        (Arc::new(Outbox::new(write)), server)
    }

    #[tokio::test]
    async fn frames_the_socket_cannot_take_at_once_follow_in_order() {
        let (out, mut peer) = pair().await;
        // Far more than the socket buffers hold while nobody reads.
        let frames: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 256 << 10]).collect();
        for f in &frames {
            out.send(f).expect("sent or queued");
        }
        assert!(
            out.backlog().flushing,
            "the socket took it all: nothing queued"
        );
        let flusher = tokio::spawn({
            let out = out.clone();
            async move { out.flush().await }
        });
        let mut got = vec![0; frames.len() * (256 << 10)];
        peer.read_exact(&mut got).await.expect("read");
        assert!(got == frames.concat(), "bytes out of order");
        assert!(!out.backlog().flushing);
        flusher.abort();
    }

    #[tokio::test]
    async fn a_closed_peer_fails_later_sends_and_ends_the_flush() {
        let (out, peer) = pair().await;
        drop(peer);
        let flusher = tokio::spawn({
            let out = out.clone();
            async move { out.flush().await }
        });
        // The first write after the close may still be taken; the reset fails a later one.
        let mut failed = false;
        for _ in 0..100 {
            if out.send(&[0; 1 << 16]).is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(failed, "sends to a closed peer kept succeeding");
        let why = tokio::time::timeout(Duration::from_secs(5), flusher)
            .await
            .expect("flush ended")
            .expect("flush task");
        assert!(!why.is_empty());
        assert!(
            out.send(b"more").is_err(),
            "a send after the failure went out"
        );
    }
}
