//! The fuser `Filesystem`: translates kernel requests into master calls and the data path.
//! Every request that talks to the network runs as a task: the fuser thread runs it until
//! it first waits (its request is sent by then), and a runtime thread finishes it and
//! replies once the answer is in: metadata on the master connection's own thread, data on
//! the I/O runtime.

use crate::attr::{file_type, kind_from_mode, to_file_attr};
use crate::chunkservers::ChunkServers;
use crate::entry_cache::Lookup;
use crate::handles::{Handles, OpenFile};
use crate::kernel::KernelCache;
use crate::listings::Listings;
use crate::locks::lock;
use crate::master_client::Master;
use crate::options::MountOptions;
use crate::reader::Reader;
use crate::writer::{FileWriter, Times, WriteCtx};
use async_task::Runnable;
use bytes::Bytes;
use elkfs_proto::limits::{MAX_NAME, MAX_SYMLINK};
use elkfs_proto::meta::{
    Attr, Caller, MknodRequest, NodeKind, ReadDirReply, ReadDirRequest, RenameRequest,
    SetAttrRequest, SymlinkRequest, Timespec,
};
use elkfs_proto::time::from_system;
use elkfs_proto::{transport, FsError};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;
use tracing::{debug, debug_span, info, warn, Instrument, Span};

/// Largest FUSE read/write request asked of the kernel.
const MAX_REQUEST: u32 = 1 << 20;
/// Kernel read-ahead asked for (the kernel may cap it).
const KERNEL_READAHEAD: u32 = 16 << 20;
/// Directory entries asked of the master per ReadDir page.
const READDIR_PAGE: u32 = 512;
/// statfs block size.
const STATFS_BLOCK: u64 = 64 << 10;
/// How long the final flush at unmount may take.
const FINAL_FLUSH: Duration = Duration::from_secs(60);

/// What runs once the session has ended, after the final flush. The mount sets its
/// unmount here: taking the mount out of fuser's hands before fuser drops it, fuser's
/// own unmount-on-drop, which warns of a failure when a plain `umount` already ended
/// the mount, has nothing left to do.
pub type AtEnd = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// A reply that can carry an errno.
pub trait ErrorReply {
    fn error(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn error(self, e: Errno) {
                <$t>::error(self, e)
            }
        }
    )*};
}
error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyEmpty,
    ReplyData,
    ReplyOpen,
    ReplyWrite,
    ReplyStatfs,
    ReplyCreate,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyIoctl
);

/// The one place an FsError becomes the errno of a reply.
fn fail<R: ErrorReply>(reply: R, e: FsError) {
    debug!("failed: {e}");
    reply.error(Errno::from_i32(e.errno()));
}

fn name_of(name: &OsStr) -> Result<Vec<u8>, FsError> {
    let b = name.as_bytes();
    if b.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    Ok(b.to_vec())
}

fn caller(req: &Request) -> Option<Caller> {
    Some(Caller {
        uid: req.uid(),
        gid: req.gid(),
    })
}

/// The kernel's timespec behind a time fuser 0.18 hands us. For times before 1970 fuser
/// builds `EPOCH - (-sec s + nsec ns)` from the kernel's (sec, nsec) instead of
/// `EPOCH - -sec s + nsec ns` (its `system_time_from_time`), so the pair is read back from
/// that form; later times convert normally.
fn kernel_time(t: SystemTime) -> Timespec {
    match std::time::UNIX_EPOCH.duration_since(t) {
        Ok(before) if !before.is_zero() => Timespec {
            sec: -(before.as_secs() as i64),
            nsec: before.subsec_nanos(),
        },
        _ => from_system(t),
    }
}

/// What the kernel is told of a new handle. One that cannot write has nothing to flush at
/// close, so the kernel skips that request (a round trip on every close of a file only
/// read); one that appends bypasses the page cache.
fn open_flags(flags: OpenFlags) -> FopenFlags {
    match flags.acc_mode() {
        OpenAccMode::O_RDONLY => FopenFlags::FOPEN_NOFLUSH,
        // Appends go where the mount knows the end is (`Core::end`), not where the
        // kernel's cached size says; its page cache must then not hold them elsewhere.
        _ if appends(flags) => FopenFlags::FOPEN_DIRECT_IO,
        _ => FopenFlags::empty(),
    }
}

/// For a request naming an inode rather than a name: an inode that is gone (another mount
/// removed it while this kernel still held a name for it) is a stale handle, and ESTALE
/// makes the kernel look the name up again and retry a path-based call once.
fn by_inode(e: FsError) -> FsError {
    match e {
        FsError::NotFound => FsError::Gone,
        e => e,
    }
}

fn appends(flags: OpenFlags) -> bool {
    flags.0 & libc::O_APPEND != 0
}

fn time_of(t: Option<TimeOrNow>) -> (Option<Timespec>, bool) {
    match t {
        Some(TimeOrNow::SpecificTime(t)) => (Some(kernel_time(t)), false),
        Some(TimeOrNow::Now) => (None, true),
        None => (None, false),
    }
}

struct Core {
    master: Arc<Master>,
    reader: Arc<Reader>,
    handles: Handles,
    listings: Listings,
    kernel: KernelCache,
    opts: MountOptions,
}

impl Core {
    fn attr(&self, a: &Attr) -> FileAttr {
        to_file_attr(a, self.handles.local_size(a.ino))
    }

    async fn flush(&self, ino: u64, writer: &FileWriter, sync: bool) -> Result<(), FsError> {
        self.flush_setting(ino, writer, sync, None).await.map(drop)
    }

    /// [`Core::flush`], setting `times` with it where the writer can (see
    /// [`FileWriter::flush_setting`]); returns whether it did.
    async fn flush_setting(
        &self,
        ino: u64,
        writer: &FileWriter,
        sync: bool,
        times: Option<Times>,
    ) -> Result<bool, FsError> {
        let r = writer.flush_setting(sync, times).await;
        // WriteEnd changed the size the cached chunk replies carry.
        self.reader.forget(ino);
        r
    }

    async fn open(&self, ino: u64) -> Result<u64, FsError> {
        let known = self.master.cached_attr(ino);
        let now = self.master.open(ino).await.map_err(by_inode)?;
        // Unlinked, and open nowhere on this mount: the kernel reached it by a name it
        // cached before another mount removed or replaced it (the node lives on while some
        // session still holds it). A reopen of a deleted file this mount holds is fine.
        if now.nlink == 0 && self.handles.writer(ino).is_none() {
            self.master.release(ino);
            return Err(FsError::Gone);
        }
        // Close-to-open: the kernel keeps attributes for attr_timeout, and a change made
        // through another mount did not pass it (it drops pages by itself at open).
        let stamp = |a: &Attr| (a.size, a.mtime, a.ctime);
        if known.is_none_or(|k| stamp(&k) != stamp(&now)) {
            self.kernel.forget_attrs(ino);
        }
        // And the handle starts with no cached locations (`Reader::opened`).
        Ok(self.handles.open(ino))
    }

    /// Where an append goes: the file's end as the master last said it, or past it as far
    /// as this mount's unflushed writes reach. The kernel would use its own cached size,
    /// which misses a change made through another mount within attr_timeout.
    async fn end(&self, ino: u64, writer: &FileWriter) -> Result<u64, FsError> {
        // The unflushed end first: a flush ending meanwhile puts its size in the cache
        // before it forgets its own.
        let unflushed = writer.local_size();
        Ok(self.master.getattr(ino).await?.size.max(unflushed))
    }

    async fn create(
        &self,
        parent: u64,
        name: Vec<u8>,
        mode: u32,
        caller: Option<Caller>,
        exclusive: bool,
    ) -> Result<(FileAttr, u64), FsError> {
        let req = MknodRequest {
            parent,
            name: name.clone(),
            kind: NodeKind::File as i32,
            mode,
            rdev: 0,
            caller,
            session: 0,
            open: true,
        };
        match self.master.mknod(req).await {
            Ok(a) => Ok((self.attr(&a), self.handles.open(a.ino))),
            // Created by someone else since the kernel's lookup: plain O_CREAT opens it.
            Err(FsError::Exists) if !exclusive => {
                let a = self.master.lookup(parent, name).await?;
                if a.kind() == NodeKind::Dir {
                    return Err(FsError::IsDir);
                }
                let fh = self.open(a.ino).await?;
                Ok((self.attr(&a), fh))
            }
            Err(e) => Err(e),
        }
    }

    async fn setattr(&self, req: SetAttrRequest) -> Result<FileAttr, FsError> {
        let ino = req.ino;
        let truncate_to = req.size;
        // Buffered writes end with a WriteEnd that sets mtime (and the size): they must
        // reach the master before a new size or explicit times, or they would undo them.
        let sets_times =
            req.atime.is_some() || req.mtime.is_some() || req.atime_now || req.mtime_now;
        let writer = self.handles.writer(ino);
        if truncate_to.is_some() || sets_times {
            if let Some(w) = &writer {
                // Only explicit times (as `cp -a` sets them) can go with the WriteEnd.
                let only_explicit_times = !req.atime_now
                    && !req.mtime_now
                    && truncate_to.is_none()
                    && req.mode.is_none()
                    && req.uid.is_none()
                    && req.gid.is_none();
                let times = only_explicit_times.then_some(Times {
                    atime: req.atime,
                    mtime: req.mtime,
                });
                if self.flush_setting(ino, w, false, times).await? {
                    return Ok(self.attr(&self.master.getattr(ino).await?));
                }
            }
        }
        let a = self.master.setattr(req).await?;
        if let Some(size) = truncate_to {
            self.reader.forget(ino);
            if let Some(w) = &writer {
                w.truncated(size).await;
            }
        }
        Ok(self.attr(&a))
    }

    async fn read(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Bytes, FsError> {
        if file.writer.is_dirty() {
            self.flush(file.ino, &file.writer, false).await?;
        }
        self.reader
            .read_ahead(
                &file.read_ahead,
                file.writer.generation(),
                file.ino,
                offset,
                u64::from(size),
            )
            .await
    }

    async fn release(&self, fh: u64, file: &OpenFile) -> Result<(), FsError> {
        let flushed = self.flush(file.ino, &file.writer, false).await;
        self.close(fh, file.ino);
        flushed
    }

    fn close(&self, fh: u64, ino: u64) {
        self.handles.close(fh);
        self.master.release(ino);
    }

    /// A listing page went to the kernel (`whole`: every entry fit): if it was the
    /// master's last page, the listing behind `fh` is known to end after it.
    fn page_sent(&self, fh: FileHandle, page: &ReadDirReply, whole: bool) {
        if let Some(last) = page.entries.last().filter(|_| page.eof && whole) {
            self.listings.ended_after(fh.0, last.cookie);
        }
    }

    /// Attributes for a readdirplus entry ("." and ".." may come without).
    async fn entry_attr(&self, e: &elkfs_proto::meta::DirEntry) -> Result<FileAttr, FsError> {
        match &e.attr {
            Some(a) => Ok(self.attr(a)),
            None => Ok(self.attr(&self.master.getattr(e.ino).await?)),
        }
    }
}

pub struct ElkFs {
    /// The data path: reads, writes and flushes, which stream to chunkservers.
    rt: Handle,
    /// Metadata requests: the thread that also runs the master connection
    /// ([`transport::rpc_runtime`]), so a request costs one wake-up, not one per task.
    meta_rt: Handle,
    core: Arc<Core>,
    at_end: AtEnd,
}

impl ElkFs {
    /// `kernel`: where to tell the kernel of changes it did not see. `at_end`: what to
    /// run once the session has ended.
    pub fn new(
        rt: Handle,
        master: Arc<Master>,
        opts: MountOptions,
        kernel: KernelCache,
        at_end: AtEnd,
    ) -> ElkFs {
        let meta_rt = transport::rpc_runtime().unwrap_or_else(|e| {
            warn!("metadata requests share the I/O threads: {e}");
            rt.clone()
        });
        let servers = Arc::new(ChunkServers::default());
        let reader = Arc::new(Reader::new(master.clone(), servers.clone()));
        let handles = Handles::new(WriteCtx::new(master.clone(), servers), reader.clone());
        ElkFs {
            rt,
            meta_rt,
            core: Arc::new(Core {
                master,
                reader,
                handles,
                listings: Listings::default(),
                kernel,
                opts,
            }),
            at_end,
        }
    }

    /// Runs metadata `work` and answers with `ok` or the error's errno.
    fn run<R, T, F, Fut>(
        &self,
        span: Span,
        reply: R,
        work: F,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ErrorReply + Send + 'static,
        T: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        self.spawn(&self.meta_rt, span, reply, work, ok);
    }

    /// [`ElkFs::run`] for the data path.
    fn run_data<R, T, F, Fut>(
        &self,
        span: Span,
        reply: R,
        work: F,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ErrorReply + Send + 'static,
        T: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        self.spawn(&self.rt, span, reply, work, ok);
    }

    fn spawn<R, T, F, Fut>(
        &self,
        rt: &Handle,
        span: Span,
        reply: R,
        work: F,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ErrorReply + Send + 'static,
        T: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let fut = work(self.core.clone());
        let task = async move {
            match fut.await {
                Ok(v) => ok(reply, v),
                Err(e) => fail(reply, e),
            }
        }
        .instrument(span);
        // Run here until it first waits, and on `rt` only once woken: a call to the master
        // goes out from this thread, and a request answered from memory is answered here.
        // Spawned at once, it would first wake `rt`'s thread just to send it (with that,
        // 8.4 context switches per create in the mount against 7.5, `bench/create_cost.sh`).
        // A panic ends only its task (its reply, dropped, answers EIO), as in a tokio task.
        let on_wake = rt.clone();
        let (first, task) = async_task::Builder::new().propagate_panic(true).spawn(
            |()| task,
            move |next: Runnable| {
                on_wake.spawn(async move {
                    next.run();
                });
            },
        );
        task.detach();
        let _in_runtime = rt.enter();
        first.run();
    }

    /// Runs `work` on the open file behind `fh` and answers `reply` with ok or the error.
    fn run_on_file<F, Fut>(&self, span: Span, fh: FileHandle, reply: ReplyEmpty, work: F)
    where
        F: FnOnce(Arc<Core>, Arc<OpenFile>) -> Fut,
        Fut: Future<Output = Result<(), FsError>> + Send + 'static,
    {
        let file = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return fail(reply, e),
        };
        self.run_data(span, reply, |c| work(c, file), |r, ()| r.ok());
    }

    fn ttls(&self) -> (Duration, Duration) {
        (self.core.opts.attr_timeout, self.core.opts.entry_timeout)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, FsError> {
        self.core
            .handles
            .get(fh.0)
            .ok_or_else(|| FsError::Invalid(format!("unknown file handle {}", fh.0)))
    }

    fn entry_reply(&self) -> impl FnOnce(ReplyEntry, FileAttr) + Send + 'static {
        let (attr_ttl, entry_ttl) = self.ttls();
        move |r: ReplyEntry, a: FileAttr| {
            r.entry_with_ttls(&attr_ttl, &entry_ttl, &a, Generation(0))
        }
    }

    fn new_node(&self, span: Span, reply: ReplyEntry, name: &OsStr, req: MknodRequest) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        let req = MknodRequest { name, ..req };
        let ok = self.entry_reply();
        self.run(
            span,
            reply,
            |c| async move { c.master.mknod(req).await.map(|a| c.attr(&a)) },
            ok,
        );
    }
}

impl Filesystem for ElkFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_REQUEST) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(KERNEL_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        use fuser::InitFlags;
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if config.add_capabilities(cap).is_err() {
                debug!("kernel lacks {cap:?}");
            }
        }
        info!(session = self.core.master.session(), "elkfs mounted");
        Ok(())
    }

    fn destroy(&mut self) {
        let writers = self.core.handles.all_writers();
        if !writers.is_empty() {
            info!(
                files = writers.len(),
                "flushing files still open at unmount"
            );
        }
        let master = self.core.master.clone();
        let flushed = self.rt.block_on(async move {
            tokio::time::timeout(FINAL_FLUSH, async {
                for w in writers {
                    if let Err(e) = w.flush(false).await {
                        warn!("final flush failed: {e}");
                    }
                }
                master.release_now().await;
            })
            .await
        });
        if flushed.is_err() {
            warn!("final flush timed out; unflushed data is lost");
        }
        if let Some(end) = lock(&self.at_end).take() {
            end();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let span = debug_span!("lookup", parent = parent.0, ?name);
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        let ok = self.entry_reply();
        // Answered here when the cache knows: no hop to the metadata thread.
        match self.core.master.cached_lookup(parent.0, &name) {
            Lookup::Found(a) => return ok(reply, self.core.attr(&a)),
            Lookup::Absent => return fail(reply, FsError::NotFound),
            Lookup::Unknown => {}
        }
        self.run(
            span,
            reply,
            |c| async move { c.master.lookup(parent.0, name).await.map(|a| c.attr(&a)) },
            ok,
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let span = debug_span!("getattr", ino = ino.0);
        let ttl = self.core.opts.attr_timeout;
        if let Some(a) = self.core.master.cached_attr(ino.0) {
            return reply.attr(&ttl, &self.core.attr(&a));
        }
        self.run(
            span,
            reply,
            |c| async move {
                let a = c.master.getattr(ino.0).await.map_err(by_inode)?;
                Ok(c.attr(&a))
            },
            move |r, a| r.attr(&ttl, &a),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let span = debug_span!("setattr", ino = ino.0, ?mode, ?uid, ?gid, ?size);
        let (atime, atime_now) = time_of(atime);
        let (mtime, mtime_now) = time_of(mtime);
        let req = SetAttrRequest {
            ino: ino.0,
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime,
            mtime,
            atime_now,
            mtime_now,
            session: 0,
        };
        let ttl = self.core.opts.attr_timeout;
        self.run(
            span,
            reply,
            |c| async move { c.setattr(req).await.map_err(by_inode) },
            move |r, a| r.attr(&ttl, &a),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let span = debug_span!("readlink", ino = ino.0);
        self.run(
            span,
            reply,
            |c| async move { c.master.readlink(ino.0).await },
            |r, t| r.data(&t),
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let span = debug_span!("mknod", parent = parent.0, ?name, mode, rdev);
        let Some(kind) = kind_from_mode(mode) else {
            return fail(reply, FsError::Invalid(format!("mknod of mode {mode:o}")));
        };
        let mreq = MknodRequest {
            parent: parent.0,
            name: Vec::new(),
            kind: kind as i32,
            mode: mode & 0o7777 & !umask,
            rdev,
            caller: caller(req),
            session: 0,
            open: false,
        };
        self.new_node(span, reply, name, mreq);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let span = debug_span!("mkdir", parent = parent.0, ?name, mode);
        let mreq = MknodRequest {
            parent: parent.0,
            name: Vec::new(),
            kind: NodeKind::Dir as i32,
            mode: mode & 0o7777 & !umask,
            rdev: 0,
            caller: caller(req),
            session: 0,
            open: false,
        };
        self.new_node(span, reply, name, mreq);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = debug_span!("unlink", parent = parent.0, ?name);
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        self.run(
            span,
            reply,
            |c| async move { c.master.unlink(parent.0, name).await },
            |r, ()| r.ok(),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = debug_span!("rmdir", parent = parent.0, ?name);
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        self.run(
            span,
            reply,
            |c| async move { c.master.rmdir(parent.0, name).await },
            |r, ()| r.ok(),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let span = debug_span!("symlink", parent = parent.0, ?link_name, ?target);
        let name = match name_of(link_name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        if target.len() > MAX_SYMLINK {
            return fail(reply, FsError::NameTooLong);
        }
        let sreq = SymlinkRequest {
            parent: parent.0,
            name,
            target,
            caller: caller(req),
        };
        let ok = self.entry_reply();
        self.run(
            span,
            reply,
            |c| async move { c.master.symlink(sreq).await.map(|a| c.attr(&a)) },
            ok,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let span = debug_span!("rename", parent = parent.0, ?name, newparent = newparent.0, ?newname, %flags);
        let (name, new_name) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return fail(reply, e),
        };
        let rreq = RenameRequest {
            parent: parent.0,
            name,
            new_parent: newparent.0,
            new_name,
            flags: flags.bits(),
        };
        self.run(
            span,
            reply,
            |c| async move { c.master.rename(rreq).await },
            |r, ()| r.ok(),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let span = debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname);
        let name = match name_of(newname) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        let ok = self.entry_reply();
        self.run(
            span,
            reply,
            |c| async move {
                c.master
                    .link(ino.0, newparent.0, name)
                    .await
                    .map(|a| c.attr(&a))
            },
            ok,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let span = debug_span!("open", ino = ino.0, flags = flags.0);
        self.run(
            span,
            reply,
            |c| async move { c.open(ino.0).await },
            move |r, fh| r.opened(FileHandle(fh), open_flags(flags)),
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let span = debug_span!("read", ino = ino.0, fh = fh.0, offset, size);
        let file = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return fail(reply, e),
        };
        self.run_data(
            span,
            reply,
            |c| async move { c.read(&file, offset, size).await },
            |r, d| r.data(&d),
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let span = debug_span!("write", ino = ino.0, fh = fh.0, offset, size = data.len());
        let file = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return fail(reply, e),
        };
        let data = Bytes::copy_from_slice(data);
        let n = data.len() as u32;
        // The kernel holds the inode's lock until this is answered: no other write to the
        // file from this mount comes between finding the end and writing there.
        self.run_data(
            span,
            reply,
            move |c| async move {
                let offset = if appends(flags) {
                    c.end(file.ino, &file.writer).await?
                } else {
                    offset
                };
                file.writer.write(offset, data).await
            },
            move |r, ()| r.written(n),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let span = debug_span!("flush", ino = ino.0, fh = fh.0);
        // Nothing was ever written through this inode here (every close of a freshly
        // created file): nothing to send, so no task either.
        if let Ok(f) = self.file(fh) {
            if f.writer.generation() == 0 {
                return reply.ok();
            }
        }
        self.run_on_file(span, fh, reply, |c, f| async move {
            c.flush(f.ino, &f.writer, false).await
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush (every close of a file only read, or created and left empty):
        // answered here, since the master hears of closes in batches anyway.
        if let Ok(f) = self.file(fh) {
            if f.writer.generation() == 0 {
                self.core.close(fh.0, f.ino);
                return reply.ok();
            }
        }
        let span = debug_span!("release", ino = ino.0, fh = fh.0);
        self.run_on_file(span, fh, reply, move |c, f| async move {
            c.release(fh.0, &f).await
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let span = debug_span!("fsync", ino = ino.0, fh = fh.0, datasync);
        self.run_on_file(span, fh, reply, |c, f| async move {
            c.flush(f.ino, &f.writer, true).await
        });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(self.core.listings.open()), FopenFlags::empty());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.listings.close(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        if self.core.listings.past_end(fh.0, offset) {
            return reply.ok();
        }
        let span = debug_span!("readdir", ino = ino.0, offset);
        let req = ReadDirRequest {
            ino: ino.0,
            cookie: offset,
            max_entries: READDIR_PAGE,
            plus: false,
        };
        let core = self.core.clone();
        self.run(
            span,
            reply,
            |c| async move { c.master.readdir(req).await },
            move |mut r, page| {
                let whole = page.entries.iter().all(|e| {
                    let kind = file_type(e.kind());
                    !r.add(INodeNo(e.ino), e.cookie, kind, OsStr::from_bytes(&e.name))
                });
                core.page_sent(fh, &page, whole);
                r.ok()
            },
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        if self.core.listings.past_end(fh.0, offset) {
            return reply.ok();
        }
        let span = debug_span!("readdirplus", ino = ino.0, offset);
        let req = ReadDirRequest {
            ino: ino.0,
            cookie: offset,
            max_entries: READDIR_PAGE,
            plus: true,
        };
        let ttl = self.core.opts.entry_timeout;
        let core = self.core.clone();
        self.run(
            span,
            reply,
            |c| async move {
                let page = c.master.readdir(req).await?;
                let mut attrs = Vec::with_capacity(page.entries.len());
                for e in &page.entries {
                    attrs.push(c.entry_attr(e).await?);
                }
                Ok((page, attrs))
            },
            move |mut r, (page, attrs)| {
                let whole = page.entries.iter().zip(&attrs).all(|(e, attr)| {
                    !r.add(
                        INodeNo(e.ino),
                        e.cookie,
                        OsStr::from_bytes(&e.name),
                        &ttl,
                        attr,
                        Generation(0),
                    )
                });
                core.page_sent(fh, &page, whole);
                r.ok()
            },
        );
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        fail(reply, FsError::NotSupported);
    }

    // Extended attributes are not supported. ENOSYS is FUSE's "not implemented": the kernel
    // then stops asking and answers EOPNOTSUPP itself, so `ls -l` and `cp -a` cost no
    // round trip per file. (fuser's defaults say the same but log a warning each.)
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The master makes every metadata change durable before it answers.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let span = debug_span!("statfs");
        self.run(
            span,
            reply,
            |c| async move { c.master.statfs().await },
            |r, s| {
                let free_inodes = u64::from(u32::MAX).saturating_sub(s.inodes);
                r.statfs(
                    s.total_bytes / STATFS_BLOCK,
                    s.free_bytes / STATFS_BLOCK,
                    s.free_bytes / STATFS_BLOCK,
                    s.inodes + free_inodes,
                    free_inodes,
                    STATFS_BLOCK as u32,
                    MAX_NAME as u32,
                    STATFS_BLOCK as u32,
                )
            },
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks permissions itself; this only says
        // whether the node exists.
        let span = debug_span!("access", ino = ino.0, %mask);
        self.run(
            span,
            reply,
            |c| async move { c.master.getattr(ino.0).await.map(drop) },
            |r, ()| r.ok(),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let span = debug_span!("create", parent = parent.0, ?name, mode, flags);
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return fail(reply, e),
        };
        let caller = caller(req);
        let exclusive = flags & libc::O_EXCL != 0;
        let ttl = self.core.opts.entry_timeout;
        self.run(
            span,
            reply,
            |c| async move {
                c.create(parent.0, name, mode & 0o7777 & !umask, caller, exclusive)
                    .await
            },
            move |r, (attr, fh)| {
                r.created(
                    &ttl,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    open_flags(OpenFlags(flags)),
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn kernel_times_before_1970_survive_fusers_conversion() {
        // What fuser 0.18 makes of the kernel's (sec -1_000_000_001, nsec 5).
        let from_fuser = UNIX_EPOCH - Duration::new(1_000_000_001, 5);
        assert_eq!(
            kernel_time(from_fuser),
            Timespec {
                sec: -1_000_000_001,
                nsec: 5
            }
        );
        let later = UNIX_EPOCH + Duration::new(5_000_000_000, 999_999_999);
        assert_eq!(
            kernel_time(later),
            Timespec {
                sec: 5_000_000_000,
                nsec: 999_999_999
            }
        );
        assert_eq!(kernel_time(UNIX_EPOCH), Timespec { sec: 0, nsec: 0 });
    }
}
