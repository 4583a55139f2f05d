//! In-memory shapes of inodes and directories.
//!
//! Maps are `imbl` persistent structures: cloning the whole state is O(1), which is how a
//! snapshot is taken without stalling clients (the copy is written out while the live
//! state keeps changing; only touched paths are copied).

use bytes::Bytes;
use elkfs_proto::meta::{Attr, NodeKind, Timespec};
use imbl::{HashMap as IMap, OrdMap, Vector};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ts {
    pub sec: i64,
    pub nsec: u32,
}

impl From<&Timespec> for Ts {
    fn from(t: &Timespec) -> Ts {
        Ts {
            sec: t.sec,
            nsec: t.nsec.min(999_999_999),
        }
    }
}

impl From<Ts> for Timespec {
    fn from(t: Ts) -> Timespec {
        Timespec {
            sec: t.sec,
            nsec: t.nsec,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ino: u64,
    /// Position for readdir: stable while other entries come and go.
    pub cookie: u64,
}

/// First cookie of a real entry; 1 and 2 are "." and "..".
pub const FIRST_COOKIE: u64 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct Dir {
    pub parent: u64,
    pub entries: IMap<Bytes, Entry>,
    pub by_cookie: OrdMap<u64, Bytes>,
    pub next_cookie: u64,
    pub subdirs: u32,
}

impl Dir {
    pub fn new(parent: u64) -> Dir {
        Dir {
            parent,
            entries: IMap::new(),
            by_cookie: OrdMap::new(),
            next_cookie: FIRST_COOKIE,
            subdirs: 0,
        }
    }

    pub fn insert(&mut self, name: Bytes, ino: u64) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.by_cookie.insert(cookie, name.clone());
        self.entries.insert(name, Entry { ino, cookie });
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.by_cookie.remove(&e.cookie);
        Some(e)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    File {
        size: u64,
        chunks: Vector<u64>,
    },
    Dir(Dir),
    Symlink(Bytes),
    /// FIFOs, sockets, device nodes: attributes only.
    Special,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inode {
    pub ino: u64,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: Ts,
    pub mtime: Ts,
    pub ctime: Ts,
    pub rdev: u32,
    pub goal: u32,
    pub body: Body,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    pub fn dir(&self) -> Option<&Dir> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.body {
            Body::File { size, .. } => *size,
            Body::Dir(d) => d.entries.len() as u64,
            Body::Symlink(t) => t.len() as u64,
            Body::Special => 0,
        }
    }

    pub fn attr(&self) -> Attr {
        Attr {
            ino: self.ino,
            kind: self.kind as i32,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size(),
            nlink: self.nlink,
            atime: Some(self.atime.into()),
            mtime: Some(self.mtime.into()),
            ctime: Some(self.ctime.into()),
            rdev: self.rdev,
            goal: self.goal,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub version: u32,
    /// Files (and later snapshots) referring to the chunk; 0 means it can be deleted.
    pub refs: u32,
}
