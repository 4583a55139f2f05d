//! The write path. FUSE writes are copied into a per-inode buffer and answered at once;
//! full (1 MiB) or non-contiguous pieces go to a background stream actor per chunk, which
//! holds the master's write lease (WriteChunk) and one Chunk.Write chain stream with several
//! pieces in flight, keeps un-acked pieces for a resend after a chain failure (with the
//! failed server left out), and ends with WriteEnd when the chunk is done: the writer moved
//! on to the next chunk, or flush / fsync / close / truncate / a read of the file.

use crate::chunkservers::ChunkServers;
use crate::locks::lock;
use crate::master_client::Master;
use bytes::{Bytes, BytesMut};
use elkfs_proto::chunk::write_message::Msg;
use elkfs_proto::chunk::{WriteAck, WriteData, WriteMessage, WriteStart, WriteSync};
use elkfs_proto::limits::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::meta::{ChunkReply, Location, Timespec, WriteEndRequest};
use elkfs_proto::FsError;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn, Instrument};

/// Size of one WriteData message; smaller contiguous writes are merged up to it.
const PIECE: usize = 1 << 20;
/// Bytes buffered or in flight per file before writes wait.
const FILE_LIMIT: usize = 64 << 20;
/// The same over all files.
const GLOBAL_LIMIT: usize = 512 << 20;
/// Chunk streams one file keeps open at once (random writes over several chunks).
const MAX_STREAMS: usize = 4;
/// Tries of one chunk write (new lease, resend) before the error reaches the application.
const MAX_ATTEMPTS: u32 = 4;
/// Messages queued towards one chain stream (gRPC flow control does the rest).
const STREAM_QUEUE: usize = 32;
/// A chunk stream with nothing to do for this long ends itself (WriteEnd: other mounts see
/// the new length even while the file stays open).
const STREAM_IDLE: Duration = Duration::from_secs(5);
/// Small writes wait this long in the merge buffer for more before they are sent anyway.
const BUFFER_LINGER: Duration = Duration::from_secs(1);
/// A busy stream re-joins its lease this often (the master drops untouched leases).
const LEASE_REFRESH: Duration = Duration::from_secs(30);
/// Chunks synced at once by an fsync that has to sync a whole file.
const SYNC_ALL_PARALLEL: usize = 8;

/// Shared by every file's writer.
pub struct WriteCtx {
    master: Arc<Master>,
    servers: Arc<ChunkServers>,
    global: Arc<Semaphore>,
}

impl WriteCtx {
    pub fn new(master: Arc<Master>, servers: Arc<ChunkServers>) -> Arc<WriteCtx> {
        Arc::new(WriteCtx {
            master,
            servers,
            global: Arc::new(Semaphore::new(GLOBAL_LIMIT)),
        })
    }
}

/// A chunk as leased for writing: where a WriteSync can still be sent after the stream ended.
#[derive(Clone, Debug)]
struct Target {
    chunk_id: u64,
    version: u32,
    chain: Vec<Location>,
    /// The chunk was cut by a truncate since (new version on the master): the current
    /// version and copies are asked of the master before the WriteSync.
    recheck: bool,
    /// New (`ChunkReply::create`): the first stream creates it where it is not made yet.
    create: bool,
}

/// Holds a piece's share of the per-file and global limits until it is acked.
struct Permits {
    _file: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Chunks written since the last fsync whose streams ended, by chunk index.
type Unsynced = Arc<Mutex<HashMap<u64, Target>>>;

enum Cmd {
    Data {
        offset: u32,
        data: Bytes,
        permits: Permits,
    },
    Finish {
        sync: bool,
        /// Set these with the WriteEnd; tell the sender once the master has them.
        times: Option<(Times, oneshot::Sender<()>)>,
    },
}

/// Times set explicitly on a file with buffered data (`utimensat` before close).
#[derive(Default)]
pub struct Times {
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
}

struct Stream {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Closed when the stream's actor has ended (WriteEnd done).
    ended: oneshot::Receiver<()>,
    /// File offset where the last write into this chunk ended.
    end: u64,
    used: u64,
}

struct Buffer {
    offset: u64,
    data: BytesMut,
}

#[derive(Default)]
struct State {
    buf: Option<Buffer>,
    /// Counts buffers started, so a linger timer knows whether its buffer is still there.
    buf_id: u64,
    streams: HashMap<u64, Stream>,
    finishing: HashMap<u64, oneshot::Receiver<()>>,
    tick: u64,
}

/// Write-back state of one inode, shared by all its open handles.
pub struct FileWriter {
    ino: u64,
    ctx: Arc<WriteCtx>,
    per_file: Arc<Semaphore>,
    state: tokio::sync::Mutex<State>,
    /// First failure of a background write; reported by the next write, flush, fsync, close.
    error: Arc<Mutex<Option<FsError>>>,
    unsynced: Unsynced,
    dirty: AtomicBool,
    /// Highest byte written since the last complete flush.
    size: AtomicU64,
    /// Bumped by every local data change; read-ahead windows of older generations are void.
    generation: AtomicU64,
}

impl FileWriter {
    pub fn new(ino: u64, ctx: Arc<WriteCtx>) -> FileWriter {
        FileWriter {
            ino,
            ctx,
            per_file: Arc::new(Semaphore::new(FILE_LIMIT)),
            state: tokio::sync::Mutex::new(State::default()),
            error: Arc::new(Mutex::new(None)),
            unsynced: Arc::default(),
            dirty: AtomicBool::new(false),
            size: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// A lower bound for the file size from data not yet reported to the master.
    pub fn local_size(&self) -> u64 {
        if self.is_dirty() {
            self.size.load(Ordering::Acquire)
        } else {
            0
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The file was truncated to `size` (after a flush): cached data is void, and so are
    /// pending syncs of chunks past the cut. Chunks below it are unchanged and still owed
    /// their WriteSync; the chunk holding the cut got a new version on the master if it was
    /// cut, so its sync asks for the current version first.
    pub async fn truncated(&self, size: u64) {
        let _st = self.state.lock().await;
        let cut = size / CHUNK_SIZE;
        // A cut on a chunk boundary leaves nothing of chunk `cut`.
        let cut_inside = !size.is_multiple_of(CHUNK_SIZE);
        lock(&self.unsynced).retain(|&index, t| {
            if index == cut && cut_inside {
                t.recheck = true;
            }
            index < cut || (index == cut && cut_inside)
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn pending_error(&self) -> Option<FsError> {
        lock(&self.error).clone()
    }

    fn record_error(&self, e: FsError) {
        lock(&self.error).get_or_insert(e);
    }

    pub async fn write(self: &Arc<Self>, offset: u64, data: Bytes) -> Result<(), FsError> {
        if let Some(e) = self.pending_error() {
            return Err(e);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE);
        let Some(end) = end else {
            return Err(FsError::TooBig);
        };
        let mut st = self.state.lock().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.size.fetch_max(end, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let room = (CHUNK_SIZE - pos % CHUNK_SIZE) as usize;
            let seg = rest.split_to(rest.len().min(room));
            let n = seg.len() as u64;
            self.add(&mut st, pos, seg).await?;
            pos += n;
        }
        Ok(())
    }

    /// Adds a segment inside one chunk to the buffer, sending what is complete.
    async fn add(self: &Arc<Self>, st: &mut State, pos: u64, seg: Bytes) -> Result<(), FsError> {
        if let Some(b) = &mut st.buf {
            let b_end = b.offset + b.data.len() as u64;
            if b_end == pos
                && b.offset / CHUNK_SIZE == pos / CHUNK_SIZE
                && b.data.len() + seg.len() <= PIECE
            {
                b.data.extend_from_slice(&seg);
                if b.data.len() == PIECE || (pos + seg.len() as u64).is_multiple_of(CHUNK_SIZE) {
                    self.send_buffer(st).await?;
                }
                return Ok(());
            }
            self.send_buffer(st).await?;
        }
        if seg.len() >= PIECE / 2 {
            let mut pos = pos;
            let mut seg = seg;
            while !seg.is_empty() {
                let part = seg.split_to(seg.len().min(PIECE));
                let n = part.len() as u64;
                self.submit(st, pos, part).await?;
                pos += n;
            }
        } else {
            let mut data = BytesMut::with_capacity(PIECE);
            data.extend_from_slice(&seg);
            st.buf = Some(Buffer { offset: pos, data });
            st.buf_id += 1;
            let (id, writer) = (st.buf_id, Arc::downgrade(self));
            tokio::spawn(async move {
                tokio::time::sleep(BUFFER_LINGER).await;
                if let Some(w) = writer.upgrade() {
                    w.send_lingering(id).await;
                }
            });
        }
        Ok(())
    }

    /// Sends buffer `id` if it is still waiting for more data.
    async fn send_lingering(&self, id: u64) {
        let mut st = self.state.lock().await;
        if st.buf_id == id && st.buf.is_some() {
            if let Err(e) = self.send_buffer(&mut st).await {
                self.record_error(e);
            }
        }
    }

    async fn send_buffer(&self, st: &mut State) -> Result<(), FsError> {
        match st.buf.take() {
            Some(b) => self.submit(st, b.offset, b.data.freeze()).await,
            None => Ok(()),
        }
    }

    /// Hands a piece (inside one chunk) to that chunk's stream.
    async fn submit(&self, st: &mut State, pos: u64, data: Bytes) -> Result<(), FsError> {
        let n = data.len() as u32;
        let closed = || FsError::Io("write limiter closed".into());
        let file = self
            .per_file
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| closed())?;
        let global = self
            .ctx
            .global
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| closed())?;
        let index = pos / CHUNK_SIZE;
        // A sequential writer crossing into the next chunk is done with the previous one.
        if pos.is_multiple_of(CHUNK_SIZE)
            && index > 0
            && st.streams.get(&(index - 1)).is_some_and(|s| s.end == pos)
        {
            self.finish_in_background(st, index - 1, false, None);
        }
        let mut cmd = Cmd::Data {
            offset: (pos % CHUNK_SIZE) as u32,
            data,
            permits: Permits {
                _file: file,
                _global: global,
            },
        };
        // At most twice: a stream that ended itself (idle) is replaced once.
        for _ in 0..2 {
            if !st.streams.contains_key(&index) {
                self.open_stream(st, index).await;
            }
            st.tick += 1;
            let tick = st.tick;
            let Some(stream) = st.streams.get_mut(&index) else {
                break;
            };
            stream.end = pos + u64::from(n);
            stream.used = tick;
            match stream.tx.send(cmd) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    cmd = back;
                    if let Some(old) = st.streams.remove(&index) {
                        // Its WriteEnd must be done before the chunk is leased again.
                        let _ = old.ended.await;
                    }
                }
            }
        }
        Err(self
            .pending_error()
            .unwrap_or_else(|| FsError::Io("chunk stream ended".into())))
    }

    async fn open_stream(&self, st: &mut State, index: u64) {
        // Writes to a chunk must not overtake an earlier stream of the same chunk.
        if let Some(ended) = st.finishing.remove(&index) {
            let _ = ended.await;
        }
        while st.streams.len() >= MAX_STREAMS {
            let Some(lru) = st
                .streams
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(&i, _)| i)
            else {
                break;
            };
            self.finish_in_background(st, lru, false, None);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ended_tx, ended) = oneshot::channel();
        let actor = Actor::new(
            self.ctx.clone(),
            self.ino,
            index,
            self.error.clone(),
            self.unsynced.clone(),
        );
        let span = tracing::debug_span!("chunk_stream", ino = self.ino, index);
        tokio::spawn(actor.run(rx, ended_tx).instrument(span));
        st.streams.insert(
            index,
            Stream {
                tx,
                ended,
                end: 0,
                used: st.tick,
            },
        );
    }

    fn finish_in_background(
        &self,
        st: &mut State,
        index: u64,
        sync: bool,
        times: Option<(Times, oneshot::Sender<()>)>,
    ) {
        if let Some(stream) = st.streams.remove(&index) {
            // If the actor already ended by itself, its `ended` fires at once (and `times`
            // are dropped unset).
            let _ = stream.tx.send(Cmd::Finish { sync, times });
            st.finishing.insert(index, stream.ended);
        }
    }

    /// Everything written so far is on every chunkserver of its chain and reported to the
    /// master (WriteEnd); with `sync` also on the chunkservers' disks. Returns (and clears)
    /// the first error of any earlier background write.
    pub async fn flush(&self, sync: bool) -> Result<(), FsError> {
        self.flush_setting(sync, None).await.map(drop)
    }

    /// [`FileWriter::flush`], setting `times` with the WriteEnd when a single chunk stream
    /// is left to end (a small file: the common `cp -a` case), which saves the master one
    /// durable change. Returns whether the times were set.
    pub async fn flush_setting(&self, sync: bool, times: Option<Times>) -> Result<bool, FsError> {
        let mut st = self.state.lock().await;
        let sent = self.send_buffer(&mut st).await;
        let open: Vec<u64> = st.streams.keys().copied().collect();
        let mut set = None;
        let mut times = match (times, open.as_slice()) {
            (Some(t), [_]) if st.finishing.is_empty() => {
                let (tx, rx) = oneshot::channel();
                set = Some(rx);
                Some((t, tx))
            }
            _ => None,
        };
        for index in open {
            self.finish_in_background(&mut st, index, sync, times.take());
        }
        for (_, ended) in st.finishing.drain() {
            let _ = ended.await;
        }
        if sync && self.generation() == 0 {
            if let Err(e) = self.sync_every_chunk().await {
                warn!(ino = self.ino, "fsync of the file's chunks failed: {e}");
                self.record_error(e);
            }
        } else if sync {
            let unsynced: Vec<_> = lock(&self.unsynced).drain().collect();
            for (index, target) in unsynced {
                let synced = match current(&self.ctx, self.ino, index, target.clone()).await {
                    Ok(Some(t)) => sync_chunk(&self.ctx, self.ino, index, t).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = synced {
                    warn!(
                        ino = self.ino,
                        index, "fsync of chunk {} failed: {e}", target.chunk_id
                    );
                    self.record_error(e);
                }
            }
        }
        self.dirty.store(false, Ordering::Release);
        self.size.store(0, Ordering::Release);
        sent?;
        let error = lock(&self.error).take();
        if let Some(e) = error {
            return Err(e);
        }
        Ok(match set {
            Some(rx) => rx.await.is_ok(),
            None => false,
        })
    }

    /// Nothing was written here while this writer lived, so it cannot tell what is unsynced
    /// (written through a handle closed since, or by another mount): every chunk of the
    /// file is synced, [`SYNC_ALL_PARALLEL`] at a time.
    async fn sync_every_chunk(&self) -> Result<(), FsError> {
        let size = self.ctx.master.getattr(self.ino).await?.size;
        let sync = |index| async move {
            let r = self.ctx.master.read_chunk(self.ino, index).await?;
            if r.chunk_id == 0 {
                return Ok(());
            }
            let t = Target {
                chunk_id: r.chunk_id,
                version: r.version,
                chain: r.locations,
                recheck: false,
                create: false,
            };
            sync_chunk(&self.ctx, self.ino, index, t).await
        };
        stream::iter(0..size.div_ceil(CHUNK_SIZE))
            .map(Ok)
            .try_for_each_concurrent(SYNC_ALL_PARALLEL, sync)
            .await
    }
}

/// The chunk a pending sync is for as it is now: a chunk cut by a truncate is looked up
/// again (new version); None if the file no longer has that chunk there.
async fn current(
    ctx: &WriteCtx,
    ino: u64,
    index: u64,
    t: Target,
) -> Result<Option<Target>, FsError> {
    if !t.recheck {
        return Ok(Some(t));
    }
    let r = ctx.master.read_chunk(ino, index).await?;
    if r.chunk_id != t.chunk_id {
        return Ok(None);
    }
    Ok(Some(Target {
        chunk_id: r.chunk_id,
        version: r.version,
        chain: r.locations,
        recheck: false,
        create: false,
    }))
}

/// Makes a chunk whose write stream already ended durable. A chain member that died since
/// cannot sync: the master moves the chunk to a new version on the survivors (which fsync
/// it as they take the version), so the copy that missed the sync is stale from then on
/// and healed like any lost copy.
async fn sync_chunk(ctx: &WriteCtx, ino: u64, index: u64, mut t: Target) -> Result<(), FsError> {
    let mut failed = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match sync_only(ctx, &t).await {
            Ok(()) => return Ok(()),
            Err(e @ (FsError::Unavailable(_) | FsError::Io(_))) if attempt < MAX_ATTEMPTS => e,
            Err(e) => return Err(vanished(e, t.chunk_id)),
        };
        if let Some(id) = failed_server(&e, &t.chain) {
            failed.push(id);
        }
        warn!(
            ino,
            index,
            attempt,
            ?failed,
            "sync of chunk {} failed, moving it to the servers left: {e}",
            t.chunk_id
        );
        let r = ctx.master.write_chunk(ino, index, failed.clone()).await?;
        // Nothing is written under this lease: give it back at once.
        let end = WriteEndRequest {
            ino,
            index,
            chunk_id: r.chunk_id,
            session: 0,
            file_size: 0,
            failed: true,
            ..Default::default()
        };
        if let Err(e) = ctx.master.write_end(end).await {
            debug!(ino, index, "releasing the sync lease failed: {e}");
        }
        if r.chunk_id != t.chunk_id {
            // The file no longer has this chunk there: nothing of ours left to sync.
            return Ok(());
        }
        t = Target {
            chunk_id: r.chunk_id,
            version: r.version,
            chain: r.locations,
            recheck: false,
            create: false,
        };
    }
}

/// A chunkserver's NotFound: it no longer holds the chunk, truncated away or deleted while
/// the write was in flight, and the data it acked went with it. The application gets an
/// I/O error for its write, not ENOENT.
fn vanished(e: FsError, chunk: u64) -> FsError {
    match e {
        FsError::NotFound => FsError::Io(format!(
            "chunk {chunk} is gone from its chunkserver: truncated away while written"
        )),
        e => e,
    }
}

/// Sends only a WriteSync down the chain of a chunk whose write stream already ended.
async fn sync_only(ctx: &WriteCtx, t: &Target) -> Result<(), FsError> {
    let Some((first, rest)) = t.chain.split_first() else {
        return Ok(());
    };
    let (tx, rx) = mpsc::channel(2);
    let start = Msg::Start(WriteStart {
        chunk_id: t.chunk_id,
        version: t.version,
        chain: rest.iter().map(|l| l.addr.clone()).collect(),
        create: false,
    });
    for msg in [start, Msg::Sync(WriteSync { seq: 1 })] {
        tx.send(WriteMessage { msg: Some(msg) })
            .await
            .map_err(|_| FsError::Io("sync stream closed".into()))?;
    }
    drop(tx);
    let result = async {
        let mut acks = ctx
            .servers
            .client(&first.addr)?
            .write(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match acks.message().await? {
            Some(WriteAck { seq: 1 }) => Ok(()),
            _ => Err(FsError::Io("chunkserver did not ack the sync".into())),
        }
    }
    .await;
    match result {
        // Someone wrote the chunk since (new version): that writer syncs its own data.
        Err(FsError::Stale(e)) => {
            debug!(
                chunk = t.chunk_id,
                "chunk changed since written, sync skipped: {e}"
            );
            Ok(())
        }
        other => other,
    }
}

enum Pending {
    Data {
        offset: u32,
        data: Bytes,
        _permits: Option<Permits>,
    },
    Sync,
}

struct Entry {
    seq: u64,
    what: Pending,
}

impl Entry {
    fn message(&self) -> WriteMessage {
        let msg = match &self.what {
            Pending::Data { offset, data, .. } => Msg::Data(WriteData {
                seq: self.seq,
                offset: *offset,
                data: data.clone(),
            }),
            Pending::Sync => Msg::Sync(WriteSync { seq: self.seq }),
        };
        WriteMessage { msg: Some(msg) }
    }
}

struct Conn {
    tx: mpsc::Sender<WriteMessage>,
    acks: tonic::Streaming<WriteAck>,
}

async fn next_ack(conn: &mut Option<Conn>) -> Result<Option<WriteAck>, tonic::Status> {
    match conn {
        Some(c) => c.acks.message().await,
        None => std::future::pending().await,
    }
}

/// The server a chain error blames. Each chunkserver prefixes the errors it passes up with
/// the server that failed ("chain server ADDR: chunkserver ADDR: ..."), so the innermost,
/// i.e. last, address named is where it broke. Without any (a transport failure on our own
/// connection) it is the first server, the one we talk to.
fn failed_server(e: &FsError, chain: &[Location]) -> Option<u64> {
    let text = e.to_string();
    chain
        .iter()
        .filter_map(|l| text.rfind(l.addr.as_str()).map(|at| (at, l)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, l)| l)
        .or_else(|| chain.first())
        .map(|l| l.server_id)
}

/// Signals the end of an actor (the writer's `ended`); if the actor did not get to its end
/// (it panicked, or its task was dropped) the file's error slot is set first.
struct ExitGuard {
    error: Arc<Mutex<Option<FsError>>>,
    ended: Option<oneshot::Sender<()>>,
    clean: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.clean {
            warn!("chunk write stream died; its data may be lost");
            lock(&self.error).get_or_insert(FsError::Io(
                "chunk write stream died before its data was acknowledged".into(),
            ));
        }
        if let Some(ended) = self.ended.take() {
            // The writer may be gone (file closed without waiting): nothing to tell then.
            let _ = ended.send(());
        }
    }
}

/// Owns one chunk's write: lease, chain stream, un-acked pieces, retries, WriteEnd.
struct Actor {
    ctx: Arc<WriteCtx>,
    ino: u64,
    index: u64,
    /// The file's error slot: a fatal error shows at the file's next write at once.
    error: Arc<Mutex<Option<FsError>>>,
    unsynced: Unsynced,
    lease: Option<Target>,
    failed: Vec<u64>,
    attempts: u32,
    pending: VecDeque<Entry>,
    seq: u64,
    /// Highest end offset written inside the chunk.
    high: u64,
    fatal: Option<FsError>,
    /// The chunk the last acked data went to.
    acked_on: Option<u64>,
    /// When the lease was last taken or re-joined.
    leased_at: Instant,
    /// Explicit times for the WriteEnd, from [`Cmd::Finish`].
    times: Option<(Times, oneshot::Sender<()>)>,
}

impl Actor {
    fn new(
        ctx: Arc<WriteCtx>,
        ino: u64,
        index: u64,
        error: Arc<Mutex<Option<FsError>>>,
        unsynced: Unsynced,
    ) -> Actor {
        Actor {
            ctx,
            ino,
            index,
            error,
            unsynced,
            lease: None,
            failed: Vec::new(),
            attempts: 0,
            pending: VecDeque::new(),
            seq: 0,
            high: 0,
            fatal: None,
            acked_on: None,
            leased_at: Instant::now(),
            times: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, ended: oneshot::Sender<()>) {
        // Fires `ended` however the actor stops; a panic or a drop of the task first puts an
        // error in the file's slot (data it held may be lost), so flush cannot report success.
        let mut exit = ExitGuard {
            error: self.error.clone(),
            ended: Some(ended),
            clean: false,
        };
        let mut conn: Option<Conn> = None;
        let mut closing = false;
        let mut retiring = false;
        let mut synced = false;
        let mut idle_at = Instant::now() + STREAM_IDLE;
        loop {
            if self.fatal.is_none() && conn.is_none() && !self.pending.is_empty() {
                match self.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        if self.fatal.is_none() {
                            self.failure(e).await;
                        }
                        continue;
                    }
                }
            }
            if closing && (self.pending.is_empty() || self.fatal.is_some()) {
                break;
            }
            let refresh_at = self.leased_at + LEASE_REFRESH;
            tokio::select! {
                cmd = rx.recv(), if !closing => {
                    idle_at = Instant::now() + STREAM_IDLE;
                    match cmd {
                        Some(Cmd::Data { offset, data, permits }) => {
                            if self.fatal.is_some() {
                                continue;
                            }
                            self.high = self.high.max(u64::from(offset) + data.len() as u64);
                            let what = Pending::Data { offset, data, _permits: Some(permits) };
                            self.send(&mut conn, what).await;
                        }
                        Some(Cmd::Finish { sync, times }) => {
                            closing = true;
                            self.times = times;
                            if sync && self.fatal.is_none() && self.lease.is_some() {
                                synced = true;
                                self.send(&mut conn, Pending::Sync).await;
                            }
                        }
                        None => closing = true,
                    }
                },
                ack = next_ack(&mut conn), if conn.is_some() => match ack {
                    Ok(Some(ack)) => {
                        if self.pending.front().is_some_and(|e| e.seq == ack.seq) {
                            self.pending.pop_front();
                            self.attempts = 0;
                            self.acked_on = self.lease.as_ref().map(|l| l.chunk_id);
                        } else {
                            conn = None;
                            self.failure(FsError::Io(format!("unexpected ack {}", ack.seq))).await;
                        }
                    }
                    Ok(None) => {
                        conn = None;
                        if !self.pending.is_empty() {
                            self.failure(FsError::Unavailable("chunkserver ended the stream".into())).await;
                        }
                    }
                    Err(status) => {
                        conn = None;
                        self.failure(FsError::from(status)).await;
                    }
                },
                // Idle: stop taking commands, finish what is queued, end (the writer opens a
                // new stream for later writes).
                () = tokio::time::sleep_until(idle_at), if !retiring && !closing && self.pending.is_empty() => {
                    debug!("idle, ending the chunk stream");
                    retiring = true;
                    rx.close();
                },
                () = tokio::time::sleep_until(refresh_at), if self.lease.is_some() && !closing && self.fatal.is_none() => {
                    if self.refresh_lease().await {
                        conn = None;
                    }
                },
            }
        }
        drop(conn);
        self.end(synced).await;
        if self.fatal.is_none() && !self.pending.is_empty() {
            // Not reached (the loop ends only with nothing pending or a fatal error), but
            // un-acked data must never end silently.
            lock(&self.error).get_or_insert(FsError::Io(
                "chunk write stream ended with un-acked data".into(),
            ));
        }
        exit.clean = true;
    }

    /// Re-joins the lease so the master keeps it. True if the chunk got a new version or
    /// chain meanwhile (the stream must be re-opened on the new lease).
    async fn refresh_lease(&mut self) -> bool {
        self.leased_at = Instant::now();
        let Some(old) = &self.lease else {
            return false;
        };
        match self
            .ctx
            .master
            .write_chunk(self.ino, self.index, self.failed.clone())
            .await
        {
            Ok(r) if r.chunk_id == old.chunk_id && r.version == old.version => false,
            // No chain to write to: keep the stream on the old lease (a failure there
            // leases again, through `connect`, which retries this).
            Ok(r) if r.locations.is_empty() => {
                warn!(
                    ino = self.ino,
                    index = self.index,
                    "lease refresh returned no chunkservers"
                );
                false
            }
            Ok(r) => {
                debug!(version = r.version, "lease changed under the stream");
                // Given up if the chunk was replaced; the stream goes either way.
                let _ = self.take_lease(r);
                true
            }
            Err(e) => {
                warn!(
                    ino = self.ino,
                    index = self.index,
                    "lease refresh failed: {e}"
                );
                false
            }
        }
    }

    /// Queues an entry and sends it if the stream is up (else it goes out on reconnect).
    async fn send(&mut self, conn: &mut Option<Conn>, what: Pending) {
        self.seq += 1;
        let entry = Entry {
            seq: self.seq,
            what,
        };
        let msg = entry.message();
        self.pending.push_back(entry);
        if let Some(c) = conn {
            if c.tx.send(msg).await.is_err() {
                *conn = None;
                self.failure(FsError::Unavailable("chain stream closed".into()))
                    .await;
            }
        }
    }

    /// Gets a lease if needed, opens the chain stream and sends every un-acked entry.
    async fn connect(&mut self) -> Result<Conn, FsError> {
        let lease = match &self.lease {
            Some(l) => l.clone(),
            None => {
                let r = self
                    .ctx
                    .master
                    .write_chunk(self.ino, self.index, self.failed.clone())
                    .await?;
                if r.locations.is_empty() {
                    return Err(FsError::Unavailable(
                        "master leased the chunk with no chunkservers".into(),
                    ));
                }
                debug!(
                    chunk = r.chunk_id,
                    version = r.version,
                    servers = r.locations.len(),
                    "leased"
                );
                self.take_lease(r)?
            }
        };
        let Some((first, rest)) = lease.chain.split_first() else {
            return Err(FsError::Unavailable("lease without chunkservers".into()));
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let start = WriteStart {
            chunk_id: lease.chunk_id,
            version: lease.version,
            chain: rest.iter().map(|l| l.addr.clone()).collect(),
            create: lease.create,
        };
        let closed = || FsError::Unavailable("chain stream closed".into());
        tx.send(WriteMessage {
            msg: Some(Msg::Start(start)),
        })
        .await
        .map_err(|_| closed())?;
        let mut client = self.ctx.servers.client(&first.addr)?;
        let call = client.write(ReceiverStream::new(rx));
        // Resend while the call starts: the request stream is consumed as it is sent.
        let resend = async {
            for e in &self.pending {
                tx.send(e.message()).await.map_err(|_| closed())?;
            }
            Ok::<_, FsError>(())
        };
        let (acks, resent) = tokio::join!(call, resend);
        let acks = acks?.into_inner();
        resent?;
        // This stream makes the chunk at its first data, or fails and the lease goes. A
        // later stream on this lease must not make an empty copy on a server that lost the
        // chunk since: that copy would miss what was acked here.
        if let Some(l) = &mut self.lease {
            l.create = false;
        }
        Ok(Conn { tx, acks })
    }

    async fn failure(&mut self, e: FsError) {
        self.attempts += 1;
        let lease = self.lease.take();
        // A stale copy is not a failed server: just lease (and version) again.
        let culprit = match e {
            FsError::Stale(_) => None,
            _ => lease.as_ref().and_then(|l| failed_server(&e, &l.chain)),
        };
        let recoverable = match &e {
            FsError::Unavailable(_) | FsError::Stale(_) | FsError::Damaged(_) | FsError::Io(_) => {
                true
            }
            // A full server can be left out; a full cluster cannot.
            FsError::NoSpace => {
                culprit.is_some() && lease.as_ref().is_some_and(|l| l.chain.len() > 1)
            }
            _ => false,
        };
        if !recoverable || self.attempts >= MAX_ATTEMPTS {
            warn!(
                ino = self.ino,
                index = self.index,
                attempts = self.attempts,
                "chunk write failed: {e}"
            );
            let e = vanished(e, lease.as_ref().map_or(0, |l| l.chunk_id));
            // The lease is still ours until WriteEnd(failed).
            self.lease = lease;
            self.give_up(e);
            return;
        }
        if let Some(id) = culprit {
            if !self.failed.contains(&id) {
                self.failed.push(id);
            }
        }
        warn!(
            ino = self.ino,
            index = self.index,
            attempt = self.attempts,
            failed = ?self.failed,
            "chunk write failed, retrying with a new chain: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100 * u64::from(self.attempts))).await;
    }

    /// Writes go under the lease `r` from now on. Fails for good if `r` is another chunk
    /// than the one data was acked on: truncated away, or placed anew when no server held
    /// it. What the old chunk acked is not in the new one, and resending only what is
    /// pending would leave a hole where it was. The lease is kept either way, for the
    /// WriteEnd that gives it back.
    fn take_lease(&mut self, r: ChunkReply) -> Result<Target, FsError> {
        let l = Target {
            chunk_id: r.chunk_id,
            version: r.version,
            chain: r.locations,
            recheck: false,
            create: r.create,
        };
        self.lease = Some(l.clone());
        self.leased_at = Instant::now();
        match self.acked_on.filter(|&c| c != l.chunk_id) {
            None => Ok(l),
            Some(acked) => {
                let e = FsError::Io(format!(
                    "chunk {acked} was replaced by chunk {} while written: acked data is lost",
                    l.chunk_id
                ));
                warn!(ino = self.ino, index = self.index, "{e}");
                self.give_up(e.clone());
                Err(e)
            }
        }
    }

    /// Stops writing the chunk: what is pending is dropped, and `e` waits in the file's
    /// error slot.
    fn give_up(&mut self, e: FsError) {
        self.pending.clear();
        lock(&self.error).get_or_insert(e.clone());
        self.fatal = Some(e);
    }

    /// WriteEnd (also after a failure, to release the lease); the chunk is then owed a
    /// WriteSync at the next fsync, or the error waits in the file's error slot.
    async fn end(&mut self, synced: bool) {
        if let Some(lease) = &self.lease {
            let (times, set) = self.times.take().unzip();
            let times = times.unwrap_or_default();
            let req = WriteEndRequest {
                ino: self.ino,
                index: self.index,
                chunk_id: lease.chunk_id,
                session: 0,
                file_size: self.index * CHUNK_SIZE + self.high,
                failed: self.fatal.is_some(),
                atime: times.atime,
                mtime: times.mtime,
            };
            match self.ctx.master.write_end(req).await {
                Ok(_) if self.fatal.is_none() => {
                    if let Some(set) = set {
                        let _ = set.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(ino = self.ino, index = self.index, "WriteEnd failed: {e}");
                    lock(&self.error).get_or_insert(e.clone());
                    self.fatal.get_or_insert(e);
                }
            }
        }
        if let (None, false, Some(lease)) = (&self.fatal, synced, self.lease.take()) {
            lock(&self.unsynced).insert(self.index, lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<Location> {
        ["10.0.0.1:9530", "10.0.0.2:9530", "10.0.0.3:9530"]
            .iter()
            .enumerate()
            .map(|(i, a)| Location {
                server_id: i as u64 + 1,
                addr: (*a).into(),
            })
            .collect()
    }

    #[test]
    fn blames_the_innermost_named_server() {
        let e = FsError::Unavailable(
            "chain server 10.0.0.2:9530: chain server 10.0.0.3:9530: connection refused".into(),
        );
        assert_eq!(failed_server(&e, &chain()), Some(3));
        let e = FsError::Io("chain server 10.0.0.2:9530: chunkserver 10.0.0.2:9530: disk".into());
        assert_eq!(failed_server(&e, &chain()), Some(2));
        let e = FsError::Unavailable("transport error".into());
        assert_eq!(failed_server(&e, &chain()), Some(1));
    }

    fn ctx() -> Arc<WriteCtx> {
        WriteCtx::new(
            Arc::new(Master::unconnected("127.0.0.1:1")),
            Arc::new(ChunkServers::default()),
        )
    }

    fn target(chunk_id: u64, chain: Vec<Location>) -> Target {
        Target {
            chunk_id,
            version: 3,
            chain,
            recheck: false,
            create: false,
        }
    }

    fn unsynced_of(w: &FileWriter) -> Vec<(u64, bool)> {
        let mut v: Vec<_> = lock(&w.unsynced)
            .iter()
            .map(|(&i, t)| (i, t.recheck))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn truncate_keeps_pending_syncs_below_the_cut() {
        let w = FileWriter::new(1, ctx());
        let fill = |w: &FileWriter| {
            let mut u = lock(&w.unsynced);
            for i in 0..4 {
                u.insert(i, target(100 + i, chain()));
            }
        };
        fill(&w);
        // Cut inside chunk 1: 0 unchanged, 1 re-checked (new version), 2 and 3 gone.
        w.truncated(CHUNK_SIZE + 5).await;
        assert_eq!(unsynced_of(&w), vec![(0, false), (1, true)]);
        // Cut on the boundary of chunk 2: chunk 2 keeps nothing.
        fill(&w);
        w.truncated(2 * CHUNK_SIZE).await;
        assert_eq!(unsynced_of(&w), vec![(0, false), (1, false)]);
        // Growing past every chunk leaves all of them owed a sync.
        fill(&w);
        w.truncated(10 * CHUNK_SIZE + 1).await;
        assert_eq!(
            unsynced_of(&w),
            vec![(0, false), (1, false), (2, false), (3, false)]
        );
        w.truncated(0).await;
        assert!(unsynced_of(&w).is_empty());
    }

    fn actor(lease: Option<Target>) -> Actor {
        let mut a = Actor::new(ctx(), 1, 0, Arc::default(), Arc::default());
        a.lease = lease;
        a
    }

    #[tokio::test]
    async fn a_lease_without_servers_is_retryable_not_a_panic() {
        let mut a = actor(Some(target(5, Vec::new())));
        match a.connect().await {
            Err(FsError::Unavailable(_)) => {}
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("connected without servers"),
        }
    }

    #[tokio::test]
    async fn a_dying_actor_leaves_an_error_before_it_signals_its_end() {
        let error: Arc<Mutex<Option<FsError>>> = Arc::default();
        let (tx, rx) = oneshot::channel();
        let slot = error.clone();
        let task = tokio::spawn(async move {
            let _exit = ExitGuard {
                error: slot,
                ended: Some(tx),
                clean: false,
            };
            tokio::task::yield_now().await;
            panic!("actor bug");
        });
        // `ended` fires (the writer's flush stops waiting) only with the error in place.
        let _ = rx.await;
        assert!(matches!(lock(&error).clone(), Some(FsError::Io(_))));
        assert!(task.await.unwrap_err().is_panic());

        // A clean end leaves the slot alone and still signals.
        let error: Arc<Mutex<Option<FsError>>> = Arc::default();
        let (tx, rx) = oneshot::channel();
        drop(ExitGuard {
            error: error.clone(),
            ended: Some(tx),
            clean: true,
        });
        assert!(rx.await.is_ok());
        assert!(lock(&error).is_none());
    }

    #[tokio::test]
    async fn flush_reports_an_actor_that_died() {
        let w = FileWriter::new(1, ctx());
        let (tx, rx) = oneshot::channel();
        let slot = w.error.clone();
        let (cmd_tx, _cmd_rx) = mpsc::unbounded_channel();
        {
            let mut st = w.state.lock().await;
            st.streams.insert(
                0,
                Stream {
                    tx: cmd_tx,
                    ended: rx,
                    end: 0,
                    used: 0,
                },
            );
        }
        tokio::spawn(async move {
            let _exit = ExitGuard {
                error: slot,
                ended: Some(tx),
                clean: false,
            };
            panic!("actor bug");
        });
        assert!(matches!(w.flush(true).await, Err(FsError::Io(_))));
        // Reported once, like any background write error.
        assert!(w.flush(false).await.is_ok());
    }
}
