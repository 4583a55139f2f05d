//! Chain writes (Chunk.Write). Three parts run concurrently per stream:
//! * the reader takes messages off the inbound stream and hands each both to the local
//!   writer and to the downstream server (chain[0]), so forwarding never waits for the disk;
//! * the local writer applies them to the chunk file in order, on the blocking pool;
//! * the acker pairs each local result with the downstream ack for the same seq and only
//!   then acks upstream, so an ack means every copy in the chain has the bytes.
//!
//! A byte budget bounds what one stream keeps in flight; the first failure anywhere ends the
//! stream with a status naming the server that failed.

use crate::service::{blocking, hex, Context};
use crate::store::{Store, Writer};
use elkfs_proto::chunk::write_message::Msg;
use elkfs_proto::chunk::{WriteAck, WriteMessage, WriteStart};
use elkfs_proto::limits::MAX_IO;
use elkfs_proto::FsError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;

/// Bytes one stream may have received but not yet acked (1 MiB writes: ~32 in flight).
const IN_FLIGHT_BYTES: usize = 32 << 20;
/// Queue length between the parts; the byte budget is the real bound.
const QUEUE: usize = 256;

/// One channel per downstream peer, shared by all streams (HTTP/2 multiplexes them), so a
/// chain write does not pay for a new connection.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, FsError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = elkfs_proto::transport::data_channel(addr)
            .map_err(|e| FsError::Invalid(format!("bad chain address {addr:?}: {e}")))?;
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }
}

/// Starts serving one write stream; the returned stream carries its acks.
pub fn start(
    ctx: Context,
    inbound: Streaming<WriteMessage>,
) -> ReceiverStream<Result<WriteAck, Status>> {
    let (ack_tx, ack_rx) = mpsc::channel(QUEUE);
    let span = tracing::debug_span!(
        "write",
        chunk = tracing::field::Empty,
        version = tracing::field::Empty
    );
    tokio::spawn(
        async move {
            if let Err(status) = session(ctx, inbound, &ack_tx).await {
                tracing::info!(error = %status.message(), "write stream failed");
                // The client may be gone already; nothing more to tell anyone then.
                let _ = ack_tx.send(Err(status)).await;
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(ack_rx)
}

/// `e` as a status whose message (and detail, where the kind has one) names `who`.
pub(crate) fn failed_at(who: &str, e: FsError) -> Status {
    let e = match e {
        FsError::Invalid(d) => FsError::Invalid(format!("{who}: {d}")),
        FsError::Stale(d) => FsError::Stale(format!("{who}: {d}")),
        FsError::Damaged(d) => FsError::Damaged(format!("{who}: {d}")),
        FsError::Unavailable(d) => FsError::Unavailable(format!("{who}: {d}")),
        FsError::Io(d) => FsError::Io(format!("{who}: {d}")),
        other => {
            let s = Status::from(other);
            return Status::with_metadata(
                s.code(),
                format!("{who}: {}", s.message()),
                s.metadata().clone(),
            );
        }
    };
    Status::from(e)
}

enum Job {
    Data {
        seq: u64,
        offset: u64,
        data: bytes::Bytes,
        permit: OwnedSemaphorePermit,
    },
    Sync {
        seq: u64,
        permit: OwnedSemaphorePermit,
    },
    /// The reader hit a bad message or a broken inbound stream: fail in order.
    Fail(Status),
}

type LocalResult = Result<(u64, OwnedSemaphorePermit), Status>;

/// The ack side of the stream to the next server; the reader holds the sending side.
struct Downstream {
    addr: String,
    acks: Acks,
}

enum Acks {
    /// The call is still starting: forwarding goes on meanwhile, since HTTP/2 sends the
    /// request stream without waiting for the response headers (a hop's round trip saved
    /// on every new write stream).
    Starting(JoinHandle<Result<Response<Streaming<WriteAck>>, Status>>),
    Open(Box<Streaming<WriteAck>>),
}

impl Downstream {
    fn who(&self) -> String {
        format!("chain server {}", self.addr)
    }

    /// The next ack, or `None` at the end of the stream; errors name the server.
    async fn next(&mut self) -> Result<Option<WriteAck>, Status> {
        let Downstream { addr, acks } = self;
        let named = |s: Status| failed_at(&format!("chain server {addr}"), s.into());
        loop {
            match acks {
                Acks::Open(open) => return open.message().await.map_err(named),
                Acks::Starting(call) => {
                    let started = call.await.map_err(|e| {
                        Status::internal(format!("downstream call task failed: {e}"))
                    })?;
                    *acks = Acks::Open(Box::new(started.map_err(named)?.into_inner()));
                }
            }
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        if let Acks::Starting(call) = &self.acks {
            call.abort();
        }
    }
}

/// Starts the stream to the next server in the chain, to be fed through the returned
/// sender.
fn open_downstream(
    ctx: &Context,
    start: &WriteStart,
) -> Result<(Downstream, mpsc::Sender<WriteMessage>), Status> {
    let addr = start.chain[0].clone();
    let ch = ctx
        .peers
        .channel(&addr)
        .map_err(|e| failed_at(&format!("chain server {addr}"), e))?;
    let mut client = elkfs_proto::transport::chunk_client(ch);
    let (tx, rx) = mpsc::channel(QUEUE);
    let first = WriteMessage {
        msg: Some(Msg::Start(WriteStart {
            chunk_id: start.chunk_id,
            version: start.version,
            chain: start.chain[1..].to_vec(),
            create: start.create,
        })),
    };
    tx.try_send(first)
        .map_err(|_| Status::internal("downstream queue full before start"))?;
    let call =
        tokio::spawn(async move { client.write(ReceiverStream::new(rx)).await }.in_current_span());
    Ok((
        Downstream {
            addr,
            acks: Acks::Starting(call),
        },
        tx,
    ))
}

async fn session(
    ctx: Context,
    mut inbound: Streaming<WriteMessage>,
    ack_tx: &mpsc::Sender<Result<WriteAck, Status>>,
) -> Result<(), Status> {
    let me = format!("chunkserver {}", ctx.addr);
    let start = match inbound.message().await? {
        Some(WriteMessage {
            msg: Some(Msg::Start(s)),
        }) => s,
        Some(_) => {
            return Err(failed_at(
                &me,
                FsError::Invalid("a write stream must begin with WriteStart".into()),
            ))
        }
        None => return Ok(()),
    };
    let (id, version, create) = (start.chunk_id, start.version, start.create);
    let span = tracing::Span::current();
    span.record("chunk", hex(id));
    span.record("version", version);

    // Downstream first: its call starts while the local chunk file opens.
    let (mut downstream, down_tx) = match start.chain.is_empty() {
        true => (None, None),
        false => {
            let (d, tx) = open_downstream(&ctx, &start)?;
            (Some(d), Some(tx))
        }
    };
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let (job_tx, job_rx) = mpsc::channel(QUEUE);
    let (res_tx, mut res_rx) = mpsc::channel::<LocalResult>(QUEUE);
    // The reader owns the only forwarding sender: when it stops, downstream sees the end
    // of its stream and finishes.
    let reader = tokio::spawn(
        read_inbound(inbound, job_tx, down_tx, budget, me.clone()).instrument(span.clone()),
    );
    let local = tokio::spawn(
        write_local(
            ctx.clone(),
            (id, version, create),
            job_rx,
            res_tx,
            me.clone(),
        )
        .instrument(span.clone()),
    );
    let result = ack_in_order(&mut res_rx, downstream.as_mut(), ack_tx).await;
    reader.abort();
    local.abort();
    result
}

/// Reader: dispatches every message to the local writer and downstream.
async fn read_inbound(
    mut inbound: Streaming<WriteMessage>,
    jobs: mpsc::Sender<Job>,
    down: Option<mpsc::Sender<WriteMessage>>,
    budget: Arc<Semaphore>,
    me: String,
) {
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(s) => {
                let _ = jobs
                    .send(Job::Fail(failed_at(
                        &me,
                        FsError::Unavailable(format!("inbound stream broke: {}", s.message())),
                    )))
                    .await;
                return;
            }
        };
        let job = match msg.msg {
            Some(Msg::Data(d)) => {
                if d.data.len() > MAX_IO as usize {
                    let e = FsError::Invalid(format!(
                        "{} bytes exceed the I/O limit {MAX_IO}",
                        d.data.len()
                    ));
                    let _ = jobs.send(Job::Fail(failed_at(&me, e))).await;
                    return;
                }
                let cost = d.data.len().clamp(1, IN_FLIGHT_BYTES) as u32;
                let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                    return;
                };
                let job = Job::Data {
                    seq: d.seq,
                    offset: u64::from(d.offset),
                    data: d.data.clone(),
                    permit,
                };
                if let Some(down) = &down {
                    if down
                        .send(WriteMessage {
                            msg: Some(Msg::Data(d)),
                        })
                        .await
                        .is_err()
                    {
                        // The acker reports the downstream failure itself.
                        return;
                    }
                }
                job
            }
            Some(Msg::Sync(s)) => {
                let Ok(permit) = budget.clone().acquire_owned().await else {
                    return;
                };
                if let Some(down) = &down {
                    if down
                        .send(WriteMessage {
                            msg: Some(Msg::Sync(s)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Job::Sync { seq: s.seq, permit }
            }
            Some(Msg::Start(_)) | None => {
                let e = FsError::Invalid("unexpected message in a write stream".into());
                let _ = jobs.send(Job::Fail(failed_at(&me, e))).await;
                return;
            }
        };
        if jobs.send(job).await.is_err() {
            return;
        }
    }
}

/// Local writer: applies jobs to the chunk in order; stops at the first failure. The
/// chunk file opens (and, for a new chunk, is created) in the first job's trip to the
/// blocking pool: a trip of its own cost two thread hand-offs on every new stream, most of
/// them the flush of one small file.
async fn write_local(
    ctx: Context,
    (id, version, create): (u64, u32, bool),
    mut jobs: mpsc::Receiver<Job>,
    results: mpsc::Sender<LocalResult>,
    me: String,
) {
    let mut writer: Option<Writer> = None;
    while let Some(job) = jobs.recv().await {
        let (store, w) = (ctx.store.clone(), writer.take());
        let open = move |store: &Store| match w {
            Some(w) => Ok(w),
            None => {
                if create {
                    store.create(id, version)?;
                }
                store.writer(id, version)
            }
        };
        let done = match job {
            Job::Data {
                seq,
                offset,
                data,
                permit,
            } => {
                blocking(move || {
                    let w = open(&store)?;
                    store.write(&w, offset, &data).map(|()| (w, seq, permit))
                })
                .await
            }
            Job::Sync { seq, permit } => {
                blocking(move || {
                    let w = open(&store)?;
                    store.sync(&w).map(|()| (w, seq, permit))
                })
                .await
            }
            Job::Fail(s) => {
                let _ = results.send(Err(s)).await;
                return;
            }
        };
        let res = match done {
            Ok((w, seq, permit)) => {
                writer = Some(w);
                Ok((seq, permit))
            }
            Err(e) => {
                ctx.note_damage(&e, id, version);
                Err(failed_at(&me, e))
            }
        };
        let failed = res.is_err();
        if results.send(res).await.is_err() || failed {
            return;
        }
    }
}

/// Acker: one upstream ack per local result, after the downstream ack for the same seq.
async fn ack_in_order(
    results: &mut mpsc::Receiver<LocalResult>,
    mut downstream: Option<&mut Downstream>,
    ack_tx: &mpsc::Sender<Result<WriteAck, Status>>,
) -> Result<(), Status> {
    while let Some(res) = results.recv().await {
        let (seq, permit) = res?;
        if let Some(d) = downstream.as_deref_mut() {
            match d.next().await? {
                Some(ack) if ack.seq == seq => {}
                Some(ack) => {
                    return Err(failed_at(
                        &d.who(),
                        FsError::Io(format!("acked seq {} where {seq} was due", ack.seq)),
                    ))
                }
                None => {
                    return Err(failed_at(
                        &d.who(),
                        FsError::Unavailable(format!("stream ended before seq {seq} was acked")),
                    ))
                }
            }
        }
        if ack_tx.send(Ok(WriteAck { seq })).await.is_err() {
            // Nobody is listening for acks any more: stop the whole chain.
            return Ok(());
        }
        drop(permit);
    }
    // Everything is acked; wait for downstream to finish cleanly so its errors surface.
    if let Some(d) = downstream {
        if let Some(ack) = d.next().await? {
            return Err(failed_at(
                &d.who(),
                FsError::Io(format!("acked seq {} that was never sent", ack.seq)),
            ));
        }
    }
    Ok(())
}
