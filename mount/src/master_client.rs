//! The connection to the master. Every Meta call goes through [`Master::call`], which keeps
//! retrying while the master is unreachable (e.g. restarting) and re-attaches the session
//! (Hello with `resume_session` and the open inodes) once it answers again, so a master
//! restart is invisible to applications. With several master addresses, the one that
//! accepts the session is used; when it stops answering, the session moves to whichever
//! answers next (a promoted standby), so a failover is invisible too.

use crate::entry_cache::{EntryCache, Lookup, Stamp};
use crate::locks::lock;
use elkfs_proto::calls::MetaCalls;
use elkfs_proto::limits::CHUNK_SIZE;
use elkfs_proto::meta::meta_client::MetaClient;
use elkfs_proto::meta::{
    Attr, AttrReply, ChunkDamagedRequest, ChunkReply, ChunkRequest, DirsReply, EntryRequest,
    EpochRequest, HelloRequest, InodeRequest, LinkRequest, LookupRequest, MknodRequest, NodeKind,
    OpenRequest, ReadDirReply, ReadDirRequest, ReleaseRequest, RenameRequest, SetAttrRequest,
    StatFsReply, SymlinkRequest, WriteEndRequest,
};
use elkfs_proto::transport;
use elkfs_proto::FsError;
use futures::future::join_all;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// How long a metadata call keeps retrying an unreachable master before giving up (EIO).
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How often the session is renewed (the master drops it after 120 s of silence).
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a starting mount waits for each master to tell its epoch.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Closes wait this long to be sent together: a run of opens and closes (an untar, a build)
/// then costs the master one request per this, not one per file.
const RELEASE_DELAY: Duration = Duration::from_millis(2);

pub struct Master {
    /// Every master, in the order given.
    masters: Vec<Remote>,
    /// Index in `masters` of the one that accepted the session.
    active: AtomicUsize,
    name: String,
    session: AtomicU64,
    /// Set after a transport failure: the next call first re-attaches the session.
    reattach: AtomicBool,
    /// A keepalive found no master; logged once, and again when a hello works.
    lost: AtomicBool,
    /// Serialises re-attaching, so concurrent calls send one Hello.
    hello_lock: tokio::sync::Mutex<()>,
    /// Inodes this mount holds open, with their open counts (re-asserted on reconnect).
    open: Mutex<HashMap<u64, u32>>,
    /// Names and attributes from replies, while the master's notices keep them true.
    cache: Mutex<EntryCache>,
    /// Closes the master has not been told of yet, one entry per close.
    closes: Mutex<Vec<u64>>,
    /// Wakes [`Master::send_releases`] when `closes` gets its first entry.
    closed: tokio::sync::Notify,
    /// Highest master epoch seen: a master of an older one was superseded by a promotion
    /// and is never attached to.
    epoch: AtomicU64,
}

/// One master: framed calls for requests, gRPC for the notice stream.
struct Remote {
    addr: String,
    calls: MetaCalls,
    grpc: MetaClient<Channel>,
}

/// One Meta call through [`Master::call`]; with `session`, the request's session field is
/// filled with the current session id on every attempt.
macro_rules! rpc {
    ($self:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $self
            .call(stringify!($method), move |c: MetaCalls, session: u64| {
                let req = req.clone();
                async move { c.$method(req, session).await }
            })
            .await
    }};
    ($self:expr, $method:ident, $req:expr, session) => {{
        let req = $req;
        $self
            .call(stringify!($method), move |c: MetaCalls, session: u64| {
                let mut req = req.clone();
                req.session = session;
                async move { c.$method(req, session).await }
            })
            .await
    }};
}

fn attr_of(reply: AttrReply) -> Result<Attr, FsError> {
    reply
        .attr
        .ok_or_else(|| FsError::Io("master reply without attributes".into()))
}

impl Master {
    fn new(addrs: &[String], name: String) -> Result<Master, FsError> {
        if addrs.is_empty() {
            return Err(FsError::Invalid("no master address".into()));
        }
        let masters = addrs
            .iter()
            .map(|a| {
                Ok(Remote {
                    addr: a.clone(),
                    calls: MetaCalls::new(a),
                    grpc: transport::meta_client(transport::latency_channel(a)?),
                })
            })
            .collect::<Result<Vec<_>, FsError>>()?;
        Ok(Master {
            masters,
            active: AtomicUsize::new(0),
            name,
            session: AtomicU64::new(0),
            reattach: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            hello_lock: tokio::sync::Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            cache: Mutex::new(EntryCache::default()),
            closes: Mutex::new(Vec::new()),
            closed: tokio::sync::Notify::new(),
            epoch: AtomicU64::new(0),
        })
    }

    /// Connects to the first of `addrs` that accepts a session, retrying for a while if
    /// none is up yet (a whole cluster may be starting at once).
    pub async fn connect(addrs: &[String], name: String) -> Result<Master, FsError> {
        let master = Master::new(addrs, name)?;
        master.choose_newest().await;
        let start = Instant::now();
        loop {
            match master.hello().await {
                Ok(()) => break,
                Err(FsError::Unavailable(e)) if start.elapsed() < RETRY_FOR => {
                    warn!("no master reachable yet: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        info!(
            session = master.session(),
            "connected to master {}",
            master.active_addr()
        );
        Ok(master)
    }

    /// A client that has not said Hello (its channel connects lazily): for unit tests of
    /// code that holds a `Master` but does not call it.
    #[cfg(test)]
    pub(crate) fn unconnected(addr: &str) -> Master {
        Master::new(&[addr.to_owned()], "test".into()).expect("channel")
    }

    fn active_addr(&self) -> &str {
        &self.active().addr
    }

    fn active(&self) -> &Remote {
        &self.masters[self.active.load(Ordering::Relaxed)]
    }

    /// For the notice stream, which stays on gRPC.
    pub(crate) fn watch_client(&self) -> MetaClient<Channel> {
        self.active().grpc.clone()
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, EntryCache> {
        lock(&self.cache)
    }

    /// The notice stream current now: taken before a request is sent, so its reply is kept
    /// only if the stream did not break meanwhile. (Passed as the first argument of a call
    /// whose second is the request, it is taken first: arguments are evaluated in order.)
    fn stream(&self) -> u64 {
        self.cache().stream()
    }

    pub fn session(&self) -> u64 {
        self.session.load(Ordering::Relaxed)
    }

    fn open_inodes(&self) -> Vec<u64> {
        lock(&self.open).keys().copied().collect()
    }

    fn note_open(&self, ino: u64, opened: bool) {
        let mut open = lock(&self.open);
        if opened {
            *open.entry(ino).or_insert(0) += 1;
        } else if let Some(n) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
            }
        }
    }

    /// With several master addresses: makes the one of the newest epoch the active one, and
    /// tells the others of that epoch, so an old master started again after a promotion is
    /// superseded before this or any other mount can attach to it.
    async fn choose_newest(&self) {
        if self.masters.len() < 2 {
            return;
        }
        let probe = |i: usize, seen: u64| {
            let client = self.masters[i].calls.clone();
            async move {
                let asked = client.epoch(EpochRequest { epoch_seen: seen }, 0);
                match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
                    Ok(Ok(r)) => Some(r.epoch),
                    _ => None,
                }
            }
        };
        let epochs = join_all((0..self.masters.len()).map(|i| probe(i, 0))).await;
        let Some((best, newest)) = epochs
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|e| (i, e)))
            .max_by_key(|&(i, e)| (e, Reverse(i)))
        else {
            return;
        };
        self.active.store(best, Ordering::Relaxed);
        self.epoch.fetch_max(newest, Ordering::Relaxed);
        for (i, _) in epochs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some_and(|e| e < newest))
        {
            warn!(
                "master {} is at an older epoch than {}: superseded by a promotion",
                self.masters[i].addr, self.masters[best].addr
            );
            probe(i, newest).await;
        }
    }

    /// Says hello every [`KEEPALIVE`] so the master keeps this session (and the files it
    /// has open); after a master restart this also re-attaches an idle mount.
    pub async fn keepalive(self: Arc<Self>) {
        loop {
            tokio::time::sleep(KEEPALIVE).await;
            let _one = self.hello_lock.lock().await;
            if let Err(e) = self.hello().await {
                self.reattach.store(true, Ordering::Relaxed);
                if !self.lost.swap(true, Ordering::Relaxed) {
                    warn!("lost contact with the master, retrying: {e}");
                }
            }
        }
    }

    /// Says Hello to the active master; if it is unreachable, to the others in turn, and
    /// the first that answers becomes the active one.
    async fn hello(&self) -> Result<(), FsError> {
        let first = self.active.load(Ordering::Relaxed);
        let n = self.masters.len();
        let mut last = None;
        for i in (first..first + n).map(|i| i % n) {
            let Remote { addr, calls, .. } = &self.masters[i];
            match self.hello_to(calls).await {
                Err(FsError::Unavailable(e)) => {
                    debug!("master {addr} unavailable: {e}");
                    last = Some(FsError::Unavailable(format!("{addr}: {e}")));
                }
                result => {
                    if i != first && result.is_ok() {
                        info!("master {addr} is now the active one");
                        self.active.store(i, Ordering::Relaxed);
                    }
                    return result;
                }
            }
        }
        Err(last.unwrap_or_else(|| FsError::Unavailable("no master address".into())))
    }

    async fn hello_to(&self, client: &MetaCalls) -> Result<(), FsError> {
        let seen = self.epoch.load(Ordering::Relaxed);
        let req = HelloRequest {
            client: self.name.clone(),
            resume_session: self.session(),
            open_inodes: self.open_inodes(),
            epoch_seen: seen,
        };
        let reply = client.hello(req, 0).await?;
        if reply.epoch < seen {
            return Err(FsError::Unavailable(format!(
                "master at epoch {}, older than epoch {seen} seen before: superseded",
                reply.epoch
            )));
        }
        self.epoch.fetch_max(reply.epoch, Ordering::Relaxed);
        if reply.chunk_size != 0 && reply.chunk_size != CHUNK_SIZE {
            return Err(FsError::Invalid(format!(
                "master uses chunk size {}, this client {}",
                reply.chunk_size, CHUNK_SIZE
            )));
        }
        let old = self.session.swap(reply.session, Ordering::Relaxed);
        self.reattach.store(false, Ordering::Relaxed);
        let was_lost = self.lost.swap(false, Ordering::Relaxed);
        // Every keepalive says hello: only one after a lost contact is news.
        if old != 0 && (old != reply.session || was_lost) {
            info!(old, new = reply.session, "re-attached to the master");
        }
        Ok(())
    }

    /// Runs `f` (one RPC) until it succeeds, fails with a real error, or the master stays
    /// unreachable for [`RETRY_FOR`].
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, FsError>
    where
        F: Fn(MetaCalls, u64) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = async {
                if self.reattach.load(Ordering::Relaxed) {
                    let _one = self.hello_lock.lock().await;
                    if self.reattach.load(Ordering::Relaxed) {
                        self.hello().await?;
                    }
                }
                f(self.active().calls.clone(), self.session())
                    .await
                    .map_err(FsError::from)
            };
            match attempt.await {
                Err(FsError::Unavailable(e)) if start.elapsed() < RETRY_FOR => {
                    debug!(what, "master unavailable, retrying: {e}");
                    self.reattach.store(true, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                result => return result,
            }
        }
    }

    /// What the cache answers for `name` in `parent`, without asking the master.
    pub fn cached_lookup(&self, parent: u64, name: &[u8]) -> Lookup {
        self.cache().lookup(parent, name, Instant::now())
    }

    /// `ino`'s attributes if the cache holds them.
    pub fn cached_attr(&self, ino: u64) -> Option<Attr> {
        self.cache().attr(ino, Instant::now())
    }

    pub async fn lookup(&self, parent: u64, name: Vec<u8>) -> Result<Attr, FsError> {
        match self.cached_lookup(parent, &name) {
            Lookup::Found(a) => return Ok(a),
            Lookup::Absent => return Err(FsError::NotFound),
            Lookup::Unknown => {}
        }
        let stream = self.stream();
        let reply = rpc!(
            self,
            lookup,
            LookupRequest {
                parent,
                name: name.clone()
            }
        )?;
        if reply.attr.is_none() {
            let at = Stamp {
                stream,
                version: reply.version,
            };
            self.cache().entry(at, parent, &name, None);
            return Err(FsError::NotFound);
        }
        let (a, at) = self.keep(stream, reply)?;
        self.cache().entry(at, parent, &name, Some(a.ino));
        Ok(a)
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        if let Some(a) = self.cached_attr(ino) {
            return Ok(a);
        }
        Ok(self
            .keep(self.stream(), rpc!(self, get_attr, InodeRequest { ino })?)?
            .0)
    }

    pub async fn setattr(&self, req: SetAttrRequest) -> Result<Attr, FsError> {
        Ok(self
            .keep(self.stream(), rpc!(self, set_attr, req, session)?)?
            .0)
    }

    /// Keeps what a reply shows (its node and the directories it changed) in the cache;
    /// returns the node's attributes and where the reply stands. `stream`: taken before
    /// the request was sent ([`Master::stream`]).
    fn keep(&self, stream: u64, mut reply: AttrReply) -> Result<(Attr, Stamp), FsError> {
        let at = Stamp {
            stream,
            version: reply.version,
        };
        let dirs = std::mem::take(&mut reply.dirs);
        let a = attr_of(reply)?;
        let mut cache = self.cache();
        for d in dirs {
            cache.attr_at(at, d);
        }
        cache.attr_at(at, a);
        Ok((a, at))
    }

    /// A new node `name` in `parent`: keeps it and its directory in the cache.
    fn created(
        &self,
        stream: u64,
        parent: u64,
        name: &[u8],
        reply: AttrReply,
    ) -> Result<Attr, FsError> {
        let (a, at) = self.keep(stream, reply)?;
        let mut cache = self.cache();
        cache.entry(at, parent, name, Some(a.ino));
        if a.kind() == NodeKind::Dir {
            cache.created_dir(at, a.ino);
        }
        Ok(a)
    }

    /// After unlink, rmdir or rename: keeps the changed directories, names and nodes in the
    /// cache.
    fn moved(&self, stream: u64, reply: DirsReply, from: (u64, &[u8]), to: Option<(u64, &[u8])>) {
        let mut cache = self.cache();
        let at = Stamp {
            stream,
            version: reply.version,
        };
        cache.entry(at, from.0, from.1, reply.swapped.as_ref().map(|a| a.ino));
        if let Some((dir, name)) = to {
            cache.entry(at, dir, name, reply.moved.as_ref().map(|a| a.ino));
        }
        let touched = reply
            .dirs
            .into_iter()
            .chain(reply.moved)
            .chain(reply.swapped)
            .chain(reply.removed);
        for a in touched {
            cache.attr_at(at, a);
        }
    }

    /// Mknod; with `req.open` the new file is also open for this session.
    pub async fn mknod(&self, req: MknodRequest) -> Result<Attr, FsError> {
        let opens = req.open;
        let (parent, name) = (req.parent, req.name.clone());
        let attr = self.created(
            self.stream(),
            parent,
            &name,
            rpc!(self, mknod, req, session)?,
        )?;
        if opens {
            self.note_open(attr.ino, true);
        }
        Ok(attr)
    }

    pub async fn symlink(&self, req: SymlinkRequest) -> Result<Attr, FsError> {
        let (parent, name) = (req.parent, req.name.clone());
        self.created(self.stream(), parent, &name, rpc!(self, symlink, req)?)
    }

    pub async fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: Vec<u8>,
    ) -> Result<Attr, FsError> {
        let req = LinkRequest {
            ino,
            new_parent,
            new_name: new_name.clone(),
        };
        self.created(self.stream(), new_parent, &new_name, rpc!(self, link, req)?)
    }

    pub async fn unlink(&self, parent: u64, name: Vec<u8>) -> Result<(), FsError> {
        self.remove(parent, name, false).await
    }

    pub async fn rmdir(&self, parent: u64, name: Vec<u8>) -> Result<(), FsError> {
        self.remove(parent, name, true).await
    }

    async fn remove(&self, parent: u64, name: Vec<u8>, dir: bool) -> Result<(), FsError> {
        let req = EntryRequest {
            parent,
            name: name.clone(),
            session: 0,
        };
        let stream = self.stream();
        let reply = if dir {
            rpc!(self, rmdir, req, session)?
        } else {
            rpc!(self, unlink, req, session)?
        };
        self.moved(stream, reply, (parent, &name), None);
        Ok(())
    }

    pub async fn rename(&self, req: RenameRequest) -> Result<(), FsError> {
        let from = (req.parent, req.name.clone());
        let to = (req.new_parent, req.new_name.clone());
        let stream = self.stream();
        let reply = rpc!(self, rename, req)?;
        self.moved(stream, reply, (from.0, &from.1), Some((to.0, &to.1)));
        Ok(())
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        Ok(rpc!(self, readlink, InodeRequest { ino })?.target)
    }

    pub async fn readdir(&self, req: ReadDirRequest) -> Result<ReadDirReply, FsError> {
        rpc!(self, read_dir, req)
    }

    pub async fn statfs(&self) -> Result<StatFsReply, FsError> {
        rpc!(self, stat_fs, elkfs_proto::meta::Empty {})
    }

    pub async fn open(&self, ino: u64) -> Result<Attr, FsError> {
        let req = OpenRequest { ino, session: 0 };
        let (attr, _) = self.keep(self.stream(), rpc!(self, open, req, session)?)?;
        self.note_open(ino, true);
        Ok(attr)
    }

    /// Counts one close of `ino`; [`Master::send_releases`] tells the master within
    /// [`RELEASE_DELAY`]. Nothing waits for that: only an unlinked file's purge does.
    pub fn release(&self, ino: u64) {
        let first = {
            let mut closes = lock(&self.closes);
            closes.push(ino);
            closes.len() == 1
        };
        if first {
            self.closed.notify_one();
        }
    }

    /// Sends the closes [`Master::release`] collects, for as long as the mount runs.
    pub async fn send_releases(self: Arc<Self>) {
        loop {
            self.closed.notified().await;
            tokio::time::sleep(RELEASE_DELAY).await;
            self.release_now().await;
        }
    }

    /// Tells the master of every close collected so far.
    pub async fn release_now(&self) {
        let inos = std::mem::take(&mut *lock(&self.closes));
        if inos.is_empty() {
            return;
        }
        let req = ReleaseRequest {
            inos: inos.clone(),
            session: 0,
        };
        // Still counted open meanwhile: a Hello re-attaching the session inside this call
        // must re-assert these, or the release would take them off the master twice.
        if let Err(e) = rpc!(self, release, req, session) {
            warn!(
                closes = inos.len(),
                "cannot tell the master of closed files: {e}"
            );
        }
        for ino in inos {
            self.note_open(ino, false);
        }
    }

    pub async fn read_chunk(&self, ino: u64, index: u64) -> Result<ChunkReply, FsError> {
        let req = ChunkRequest {
            ino,
            index,
            session: 0,
            failed_servers: Vec::new(),
        };
        rpc!(self, read_chunk, req, session)
    }

    pub async fn write_chunk(
        &self,
        ino: u64,
        index: u64,
        failed_servers: Vec<u64>,
    ) -> Result<ChunkReply, FsError> {
        let req = ChunkRequest {
            ino,
            index,
            session: 0,
            failed_servers,
        };
        rpc!(self, write_chunk, req, session)
    }

    pub async fn write_end(&self, req: WriteEndRequest) -> Result<Attr, FsError> {
        Ok(self
            .keep(self.stream(), rpc!(self, write_end, req, session)?)?
            .0)
    }

    pub async fn chunk_damaged(&self, chunk_id: u64, version: u32, server_id: u64) {
        let req = ChunkDamagedRequest {
            chunk_id,
            version,
            server_id,
        };
        if let Err(e) = rpc!(self, chunk_damaged, req) {
            warn!(
                chunk_id,
                server_id, "could not report a damaged chunk copy: {e}"
            );
        }
    }
}
