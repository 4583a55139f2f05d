//! Names and attributes: lookup, create, remove, rename, links, attributes, directory
//! listings, sessions and open files. Client ↔ master only; no chunkserver involved.

use super::{explicit, now, purge_or_defer, versioned};
use crate::core::{Inner, Master};
use crate::state::{check_name, Body, RENAME_EXCHANGE};
use elkfs_proto::changelog::{record::Op, Link, Mknod, Rename, SetAttr, Unlink};
use elkfs_proto::limits::MAX_SYMLINK;
use elkfs_proto::meta::{
    Attr, AttrReply, DirEntry, DirsReply, LinkRequest, MknodRequest, NodeKind, ReadDirReply,
    ReadDirRequest, RenameRequest, SetAttrRequest, StatFsReply, SymlinkRequest,
};
use elkfs_proto::FsError;

const S_ISGID: u32 = 0o2000;

/// A node to create, as the caller asked for it.
struct NewNode<'a> {
    kind: NodeKind,
    mode: u32,
    rdev: u32,
    uid: u32,
    gid: u32,
    target: &'a [u8],
    /// FUSE create: also open it for this session.
    open_for: Option<u64>,
}
const MAX_READDIR: usize = 4096;

impl Master {
    /// A name the directory does not hold is an answer too (no attributes, the version):
    /// a mount keeps it until a notice says the name changed.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<AttrReply, FsError> {
        let inner = self.lock();
        match inner.state.lookup(parent, name) {
            Ok(node) => Ok(versioned(&inner, node.attr())),
            Err(FsError::NotFound) if inner.state.dir(parent).is_ok() => Ok(AttrReply {
                version: inner.state.version,
                ..AttrReply::default()
            }),
            Err(e) => Err(e),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<AttrReply, FsError> {
        let inner = self.lock();
        let a = inner.state.inode(ino)?.attr();
        Ok(versioned(&inner, a))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        match &self.lock().state.inode(ino)?.body {
            Body::Symlink(t) => Ok(t.to_vec()),
            _ => Err(FsError::Invalid("not a symlink".into())),
        }
    }

    pub async fn mknod(&self, req: MknodRequest) -> Result<AttrReply, FsError> {
        let kind = NodeKind::try_from(req.kind)
            .ok()
            .filter(|k| !matches!(k, NodeKind::Unspecified | NodeKind::Symlink))
            .ok_or_else(|| FsError::Invalid(format!("node kind {}", req.kind)))?;
        let caller = req.caller.unwrap_or_default();
        let node = NewNode {
            kind,
            mode: req.mode,
            rdev: req.rdev,
            uid: caller.uid,
            gid: caller.gid,
            target: &[],
            // Registered in the same step as the creation, so an unlink that arrives before
            // the reply already sees the file as open.
            open_for: req.open.then_some(req.session),
        };
        self.create_node(req.parent, &req.name, node).await
    }

    pub async fn symlink(&self, req: SymlinkRequest) -> Result<AttrReply, FsError> {
        if req.target.len() > MAX_SYMLINK {
            return Err(FsError::NameTooLong);
        }
        if req.target.is_empty() {
            return Err(FsError::NotFound);
        }
        let caller = req.caller.unwrap_or_default();
        let node = NewNode {
            kind: NodeKind::Symlink,
            mode: 0o777,
            rdev: 0,
            uid: caller.uid,
            gid: caller.gid,
            target: &req.target,
            open_for: None,
        };
        self.create_node(req.parent, &req.name, node).await
    }

    async fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        n: NewNode<'_>,
    ) -> Result<AttrReply, FsError> {
        check_name(name)?;
        self.mutate(|m, inner| {
            let p = inner.state.inode(parent)?;
            p.dir().ok_or(FsError::NotDir)?;
            let (mut mode, mut gid) = (n.mode & 0o7777, n.gid);
            // BSD group semantics in setgid directories (as ext4): inherit the group,
            // and subdirectories inherit the setgid bit.
            if p.mode & S_ISGID != 0 {
                gid = p.gid;
                if n.kind == NodeKind::Dir {
                    mode |= S_ISGID;
                }
            }
            let ino = inner.state.next_ino;
            let v = m.commit(
                inner,
                Op::Mknod(Mknod {
                    parent,
                    name: name.to_vec(),
                    ino,
                    kind: n.kind as i32,
                    mode,
                    uid: n.uid,
                    gid,
                    rdev: n.rdev,
                    time: now(),
                    goal: p.goal,
                    symlink_target: n.target.to_vec(),
                }),
            )?;
            if let Some(session) = n.open_for {
                inner.sessions.open(session, ino);
            }
            Ok((v, attr_reply(inner, ino, &[parent])?))
        })
        .await
    }

    pub async fn link(&self, req: LinkRequest) -> Result<AttrReply, FsError> {
        check_name(&req.new_name)?;
        self.mutate(|m, inner| {
            let v = m.commit(
                inner,
                Op::Link(Link {
                    ino: req.ino,
                    parent: req.new_parent,
                    name: req.new_name.clone(),
                    time: now(),
                }),
            )?;
            Ok((v, attr_reply(inner, req.ino, &[req.new_parent])?))
        })
        .await
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`).
    pub async fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<DirsReply, FsError> {
        if name == b"." {
            return Err(FsError::Invalid("cannot remove \".\"".into()));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        check_name(name)?;
        self.mutate(|m, inner| {
            let victim = inner.state.lookup(parent, name)?;
            match (dir, victim.is_dir()) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                _ => {}
            }
            let sustain = victim.nlink <= 1 && inner.sessions.is_open(victim.ino);
            let before = victim.attr();
            let v = m.commit(
                inner,
                Op::Unlink(Unlink {
                    parent,
                    name: name.to_vec(),
                    time: now(),
                    sustain,
                }),
            )?;
            let mut reply = dirs_reply(inner, &[parent]);
            reply.removed = Some(as_now(inner, before));
            Ok((v, reply))
        })
        .await
    }

    pub async fn rename(&self, req: RenameRequest) -> Result<DirsReply, FsError> {
        check_name(&req.name)?;
        check_name(&req.new_name)?;
        self.mutate(|m, inner| {
            let target = inner.state.lookup(req.new_parent, &req.new_name).ok();
            let sustain = target
                .is_some_and(|n| !n.is_dir() && n.nlink <= 1 && inner.sessions.is_open(n.ino));
            let replaced = target
                .map(|n| n.attr())
                .filter(|_| req.flags & RENAME_EXCHANGE == 0);
            let v = m.commit(
                inner,
                Op::Rename(Rename {
                    parent: req.parent,
                    name: req.name.clone(),
                    new_parent: req.new_parent,
                    new_name: req.new_name.clone(),
                    flags: req.flags,
                    time: now(),
                    sustain,
                }),
            )?;
            let mut reply = dirs_reply(inner, &[req.parent, req.new_parent]);
            let now_at =
                |dir: u64, name: &[u8]| inner.state.lookup(dir, name).ok().map(|n| n.attr());
            reply.moved = now_at(req.new_parent, &req.new_name);
            if req.flags & RENAME_EXCHANGE != 0 {
                reply.swapped = now_at(req.parent, &req.name);
            }
            reply.removed = replaced.map(|a| as_now(inner, a));
            Ok((v, reply))
        })
        .await
    }

    pub async fn setattr(&self, req: SetAttrRequest) -> Result<AttrReply, FsError> {
        if let Some(size) = req.size {
            self.truncate(req.ino, size).await?;
        }
        let touches_more = req.mode.is_some()
            || req.uid.is_some()
            || req.gid.is_some()
            || req.atime.is_some()
            || req.mtime.is_some()
            || req.atime_now
            || req.mtime_now;
        if !touches_more {
            return self.getattr(req.ino);
        }
        let time = now();
        let pick = |set_now: bool, t: &Option<elkfs_proto::meta::Timespec>| {
            if set_now {
                time
            } else {
                explicit(t)
            }
        };
        self.mutate(|m, inner| {
            let v = m.commit(
                inner,
                Op::SetAttr(SetAttr {
                    ino: req.ino,
                    mode: req.mode,
                    uid: req.uid,
                    gid: req.gid,
                    atime: pick(req.atime_now, &req.atime),
                    mtime: pick(req.mtime_now, &req.mtime),
                    ctime: time,
                }),
            )?;
            let a = inner.state.inode(req.ino)?.attr();
            Ok((v, versioned(inner, a)))
        })
        .await
    }

    pub fn readdir(&self, req: &ReadDirRequest) -> Result<ReadDirReply, FsError> {
        let inner = self.lock();
        let node = inner.state.inode(req.ino)?;
        let dir = node.dir().ok_or(FsError::NotDir)?;
        let max = (req.max_entries as usize).clamp(1, MAX_READDIR);
        let mut entries = Vec::new();
        let attr_of = |ino: u64| {
            if req.plus {
                inner.state.inodes.get(&ino).map(|n| n.attr())
            } else {
                None
            }
        };
        let dot = |name: &[u8], ino: u64, cookie: u64| DirEntry {
            name: name.to_vec(),
            ino,
            kind: NodeKind::Dir as i32,
            cookie,
            attr: attr_of(ino),
        };
        if req.cookie < 1 {
            entries.push(dot(b".", node.ino, 1));
        }
        if req.cookie < 2 {
            entries.push(dot(b"..", dir.parent, 2));
        }
        let mut eof = true;
        for (&cookie, name) in dir.by_cookie.range(req.cookie.max(2).saturating_add(1)..) {
            if entries.len() >= max {
                eof = false;
                break;
            }
            let Some(e) = dir.entries.get(name) else {
                continue;
            };
            let Some(child) = inner.state.inodes.get(&e.ino) else {
                continue;
            };
            entries.push(DirEntry {
                name: name.to_vec(),
                ino: e.ino,
                kind: child.kind as i32,
                cookie,
                attr: if req.plus { Some(child.attr()) } else { None },
            });
        }
        Ok(ReadDirReply { entries, eof })
    }

    pub fn statfs(&self) -> StatFsReply {
        let inner = self.lock();
        let up = inner.cluster.servers.values().filter(|s| s.connected);
        let (total, free, n) = up.fold((0, 0, 0), |(t, f, n), s| {
            (t + s.space.total_bytes, f + s.space.avail_bytes, n + 1)
        });
        StatFsReply {
            total_bytes: total,
            free_bytes: free,
            inodes: inner.state.inodes.len() as u64,
            chunkservers: n,
        }
    }

    pub fn hello(&self, resume: u64, open_inodes: &[u64]) -> (u64, bool) {
        self.lock().sessions.hello(resume, open_inodes)
    }

    pub fn open(&self, session: u64, ino: u64) -> Result<AttrReply, FsError> {
        let mut inner = self.lock();
        let attr = inner.state.inode(ino)?.attr();
        inner.sessions.open(session, ino);
        Ok(versioned(&inner, attr))
    }

    /// One close of each of `inos` (an inode closed twice is listed twice). The closes
    /// always count; a purge that fails is left to housekeeping.
    pub async fn release(&self, session: u64, inos: &[u64]) {
        let orphans: Vec<u64> = {
            let mut inner = self.lock();
            inos.iter()
                .copied()
                .filter(|&ino| {
                    let last = inner.sessions.release(session, ino);
                    last && inner.state.inodes.get(&ino).is_some_and(|n| n.nlink == 0)
                })
                .collect()
        };
        for ino in orphans {
            purge_or_defer(self, ino, false).await;
        }
    }
}

fn attr_reply(inner: &Inner, ino: u64, dirs: &[u64]) -> Result<AttrReply, FsError> {
    Ok(AttrReply {
        dirs: dirs_reply(inner, dirs).dirs,
        ..versioned(inner, inner.state.inode(ino)?.attr())
    })
}

/// A node that lost a name, as it is now: `before` with nlink 0 when it is gone.
fn as_now(inner: &Inner, before: Attr) -> Attr {
    inner
        .state
        .inodes
        .get(&before.ino)
        .map_or(Attr { nlink: 0, ..before }, |n| n.attr())
}

/// The attributes of `dirs` (each once) as they are now.
fn dirs_reply(inner: &Inner, dirs: &[u64]) -> DirsReply {
    let mut out: Vec<Attr> = Vec::with_capacity(dirs.len());
    for &d in dirs {
        if out.iter().all(|a| a.ino != d) {
            out.extend(inner.state.inodes.get(&d).map(|n| n.attr()));
        }
    }
    DirsReply {
        dirs: out,
        version: inner.state.version,
        moved: None,
        swapped: None,
        removed: None,
    }
}
