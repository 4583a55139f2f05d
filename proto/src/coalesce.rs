//! A byte stream that sends what one round of the runtime wrote in one system call.
//!
//! HTTP/2 (h2) flushes a request's HEADERS frame before its body's DATA frame is queued:
//! the stream gets send capacity only once its headers are out. Every small call then
//! cost two TCP sends and woke the receiver twice; on loopback each send also runs the
//! receiver's network stack, so that was a large share of a metadata call's CPU.
//! [`Coalescing`] holds small writes and, at the first flush, lets the tasks just woken
//! run once before it sends: the body joins its headers. Large writes go straight
//! through (with what is held in front, in the same `writev`), never copied.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes up to this size are held; larger ones are passed through.
const HOLD: usize = 16 << 10;

pub struct Coalescing<T> {
    inner: T,
    held: Vec<u8>,
    /// The current flush already gave other tasks their turn.
    yielded: bool,
}

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Self {
        Coalescing {
            inner,
            held: Vec::new(),
            yielded: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes all of `held`, then (in the same `writev` where possible) some of `bufs`;
    /// counts only what was taken from `bufs`. With `bufs` empty: a drain.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            if self.held.is_empty() {
                if bufs.iter().all(|b| b.is_empty()) {
                    return Poll::Ready(Ok(0));
                }
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
            let mut all = Vec::with_capacity(bufs.len() + 1);
            all.push(IoSlice::new(&self.held));
            all.extend_from_slice(bufs);
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &all))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_held = n.min(self.held.len());
            self.held.drain(..from_held);
            if n > from_held {
                return Poll::Ready(Ok(n - from_held));
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held.len() + len <= HOLD {
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        this.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx, &[]))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx, &[]))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::task::Waker;

    /// Takes at most `limit` bytes per call and records each call's bytes.
    struct Sink {
        limit: usize,
        calls: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.limit);
            self.get_mut().calls.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn stream(limit: usize) -> Coalescing<Sink> {
        Coalescing::new(Sink {
            limit,
            calls: Vec::new(),
        })
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// Writes all of `data` the way a caller must: again with what was not taken.
    fn write_all(s: &mut Coalescing<Sink>, mut data: &[u8]) {
        while !data.is_empty() {
            match Pin::new(&mut *s).poll_write(&mut cx(), data) {
                Poll::Ready(Ok(n)) => data = &data[n..],
                other => panic!("write: {other:?}"),
            }
        }
    }

    /// Polls a flush to the end, counting the polls it took.
    fn flush(s: &mut Coalescing<Sink>) -> usize {
        (1..)
            .find(|_| Pin::new(&mut *s).poll_flush(&mut cx()).is_ready())
            .expect("a flush ends")
    }

    #[test]
    fn small_writes_go_out_in_one_call_after_one_yield() {
        let mut s = stream(usize::MAX);
        write_all(&mut s, b"headers");
        assert_eq!(flush(&mut s), 2, "the first flush yields once");
        write_all(&mut s, b"body");
        write_all(&mut s, b"trailers");
        assert_eq!(flush(&mut s), 2);
        assert_eq!(
            s.inner.calls,
            vec![b"headers".to_vec(), b"bodytrailers".to_vec()]
        );
        assert_eq!(flush(&mut s), 1, "nothing held: no yield");
    }

    #[test]
    fn a_large_write_takes_what_is_held_along() {
        let mut s = stream(usize::MAX);
        write_all(&mut s, b"head");
        let big = vec![7u8; HOLD + 1];
        write_all(&mut s, &big);
        assert_eq!(s.inner.calls.len(), 1, "one call for both");
        assert_eq!(s.inner.calls[0][..4], *b"head");
        assert_eq!(s.inner.calls[0][4..], big[..]);
    }

    proptest! {
        /// Whatever the sizes, flush points and short writes underneath, the bytes come
        /// out complete and in order.
        #[test]
        fn bytes_come_out_whole_and_in_order(
            writes in prop::collection::vec((0usize..40_000, any::<bool>()), 1..30),
            limit in 1usize..70_000,
        ) {
            let mut s = stream(limit);
            let mut want = Vec::new();
            for (i, (len, flush_after)) in writes.into_iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                write_all(&mut s, &data);
                want.extend_from_slice(&data);
                if flush_after {
                    flush(&mut s);
                }
            }
            prop_assert!(Pin::new(&mut s).poll_shutdown(&mut cx()).is_ready());
            let got: Vec<u8> = s.inner.calls.concat();
            prop_assert_eq!(got, want);
        }
    }
}
