//! The metadata state machine: pure, no I/O.
//!
//! Every mutation is a `changelog::Record` carrying all values the master decided (inode
//! number, times, chunk id, version). [`State::apply`] is the only code that mutates
//! metadata, both live and during replay, so replay cannot drift from live behaviour.
//! `apply` validates everything before it changes anything: a failed apply leaves the
//! state untouched.

mod goal;
mod image;
mod node;

pub use goal::{GoalSummary, MAX_GOAL};
pub use image::{from_image, to_image};
pub use node::{Body, ChunkMeta, Dir, Entry, Inode, Ts, FIRST_COOKIE};

use bytes::Bytes;
use elkfs_proto::changelog::{self, record::Op, Record};
use elkfs_proto::limits::{CHUNK_SIZE, MAX_FILE_SIZE, MAX_NAME, MAX_SYMLINK, ROOT_INO};
use elkfs_proto::meta::{NodeKind, Timespec};
use elkfs_proto::FsError;
use imbl::{HashMap as IMap, Vector};

/// Most names one inode may have (as ext4).
pub const MAX_LINKS: u32 = 65_000;
/// Linux rename(2) flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Metadata version: the number of the last record applied.
    pub version: u64,
    pub next_ino: u64,
    pub next_chunk_id: u64,
    /// Promotions of a standby so far: a master of an older epoch was superseded.
    pub epoch: u64,
    pub inodes: IMap<u64, Inode>,
    pub chunks: IMap<u64, ChunkMeta>,
}

/// What a record did that the I/O side must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Chunks no file refers to any more: delete them on the chunkservers.
    pub freed_chunks: Vec<u64>,
    /// What a SetGoal record changed.
    pub goal: GoalSummary,
}

fn ts(t: &Option<Timespec>) -> Ts {
    t.as_ref().map(Ts::from).unwrap_or_default()
}

/// A single path component as Linux accepts it.
pub fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid(format!(
            "bad name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn kind_of(k: i32) -> Result<NodeKind, FsError> {
    match NodeKind::try_from(k) {
        Ok(NodeKind::Unspecified) | Err(_) => Err(FsError::Invalid(format!("node kind {k}"))),
        Ok(k) => Ok(k),
    }
}

impl State {
    /// A new filesystem: just the root directory, its goal brought within 1..=MAX_GOAL.
    pub fn new(root_goal: u32, time: Ts) -> State {
        let root = Inode {
            ino: ROOT_INO,
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            atime: time,
            mtime: time,
            ctime: time,
            rdev: 0,
            goal: root_goal.clamp(1, MAX_GOAL),
            body: Body::Dir(Dir::new(ROOT_INO)),
        };
        State {
            version: 0,
            next_ino: ROOT_INO + 1,
            next_chunk_id: 1,
            epoch: 0,
            inodes: IMap::unit(ROOT_INO, root),
            chunks: IMap::new(),
        }
    }

    pub fn inode(&self, ino: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    pub fn dir(&self, ino: u64) -> Result<&Dir, FsError> {
        self.inode(ino)?.dir().ok_or(FsError::NotDir)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<&Inode, FsError> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        let e = self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        self.inode(e.ino)
    }

    /// Chunk id at `index` of file `ino` (0 for a hole or past the end).
    pub fn chunk_at(&self, ino: u64, index: u64) -> Result<u64, FsError> {
        match &self.inode(ino)?.body {
            Body::File { chunks, .. } => Ok(usize::try_from(index)
                .ok()
                .and_then(|i| chunks.get(i).copied())
                .unwrap_or(0)),
            Body::Dir(_) => Err(FsError::IsDir),
            _ => Err(FsError::Invalid("not a regular file".into())),
        }
    }

    /// Is `ino` the directory `ancestor` or somewhere below it?
    fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).and_then(Inode::dir) {
                Some(d) if d.parent != ino => ino = d.parent,
                _ => return false,
            }
        }
    }

    /// Apply the record with metadata version `version` (must be the next one).
    pub fn apply(&mut self, version: u64, rec: &Record) -> Result<Effects, FsError> {
        if version != self.version + 1 {
            return Err(FsError::Invalid(format!(
                "record version {version} does not follow {}",
                self.version
            )));
        }
        let op = rec
            .op
            .as_ref()
            .ok_or_else(|| FsError::Invalid("empty record".into()))?;
        let effects = match op {
            Op::Mknod(r) => self.mknod(r),
            Op::Link(r) => self.link(r),
            Op::Unlink(r) => self.unlink(r),
            Op::Rename(r) => self.rename(r),
            Op::SetAttr(r) => self.set_attr(r),
            Op::Truncate(r) => self.truncate(r),
            Op::WriteChunk(r) => self.write_chunk(r),
            Op::WriteEnd(r) => self.write_end(r),
            Op::Purge(r) => self.purge(r.ino),
            Op::ChunkVersion(r) => self.chunk_version(r),
            Op::ReserveChunkIds(r) => {
                self.next_chunk_id = self.next_chunk_id.max(r.next_chunk_id);
                Ok(Effects::default())
            }
            Op::SetGoal(r) => self.set_goal(r).map(|goal| Effects {
                goal,
                ..Effects::default()
            }),
            Op::Promote(r) => self.promote(r.epoch),
        }?;
        self.version = version;
        Ok(effects)
    }

    fn promote(&mut self, epoch: u64) -> Result<Effects, FsError> {
        if epoch <= self.epoch {
            return Err(FsError::Invalid(format!(
                "promotion to epoch {epoch}, already at {}",
                self.epoch
            )));
        }
        self.epoch = epoch;
        Ok(Effects::default())
    }

    fn mknod(&mut self, r: &changelog::Mknod) -> Result<Effects, FsError> {
        check_name(&r.name)?;
        let kind = kind_of(r.kind)?;
        if self.dir(r.parent)?.entries.contains_key(&r.name[..]) {
            return Err(FsError::Exists);
        }
        if kind == NodeKind::Dir && self.inode(r.parent)?.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        if r.ino <= ROOT_INO || self.inodes.contains_key(&r.ino) {
            return Err(FsError::Invalid(format!("inode {} in use", r.ino)));
        }
        let body = match kind {
            NodeKind::File => Body::File {
                size: 0,
                chunks: Vector::new(),
            },
            NodeKind::Dir => Body::Dir(Dir::new(r.parent)),
            NodeKind::Symlink => {
                if r.symlink_target.is_empty() || r.symlink_target.len() > MAX_SYMLINK {
                    return Err(FsError::Invalid("symlink target length".into()));
                }
                Body::Symlink(Bytes::copy_from_slice(&r.symlink_target))
            }
            _ => Body::Special,
        };
        let time = ts(&r.time);
        let is_dir = kind == NodeKind::Dir;
        self.inodes.insert(
            r.ino,
            Inode {
                ino: r.ino,
                kind,
                mode: r.mode & 0o7777,
                uid: r.uid,
                gid: r.gid,
                nlink: if is_dir { 2 } else { 1 },
                atime: time,
                mtime: time,
                ctime: time,
                rdev: r.rdev,
                goal: r.goal.max(1),
                body,
            },
        );
        let parent = self.parent_mut(r.parent)?;
        parent.mtime = time;
        parent.ctime = time;
        if is_dir {
            parent.nlink += 1;
        }
        if let Some(d) = parent.dir_mut() {
            d.insert(Bytes::copy_from_slice(&r.name), r.ino);
            if is_dir {
                d.subdirs += 1;
            }
        }
        self.next_ino = self.next_ino.max(r.ino + 1);
        Ok(Effects::default())
    }

    fn parent_mut(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn link(&mut self, r: &changelog::Link) -> Result<Effects, FsError> {
        check_name(&r.name)?;
        let target = self.inode(r.ino)?;
        if target.is_dir() {
            return Err(FsError::Perm);
        }
        if target.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        if target.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if self.dir(r.parent)?.entries.contains_key(&r.name[..]) {
            return Err(FsError::Exists);
        }
        let time = ts(&r.time);
        if let Some(t) = self.inodes.get_mut(&r.ino) {
            t.nlink += 1;
            t.ctime = time;
        }
        let parent = self.parent_mut(r.parent)?;
        parent.mtime = time;
        parent.ctime = time;
        if let Some(d) = parent.dir_mut() {
            d.insert(Bytes::copy_from_slice(&r.name), r.ino);
        }
        Ok(Effects::default())
    }

    /// Would removing the name `name` in `parent` be allowed? Returns the inode it names.
    fn check_removable(&self, parent: u64, name: &[u8]) -> Result<&Inode, FsError> {
        check_name(name)?;
        let victim = self.lookup(parent, name)?;
        if let Some(d) = victim.dir() {
            if !d.entries.is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        Ok(victim)
    }

    /// Drop one link of `ino` (whose name is already gone). Returns freed chunks.
    fn drop_link(&mut self, ino: u64, time: Ts, sustain: bool) -> Effects {
        let Some(node) = self.inodes.get_mut(&ino) else {
            return Effects::default();
        };
        if node.is_dir() {
            self.inodes.remove(&ino);
            return Effects::default();
        }
        node.nlink = node.nlink.saturating_sub(1);
        node.ctime = time;
        if node.nlink == 0 && !sustain {
            return self.remove_inode(ino);
        }
        Effects::default()
    }

    fn remove_inode(&mut self, ino: u64) -> Effects {
        let mut effects = Effects::default();
        if let Some(Inode {
            body: Body::File { chunks, .. },
            ..
        }) = self.inodes.remove(&ino)
        {
            for id in chunks.into_iter().filter(|&id| id != 0) {
                self.unref_chunk(id, &mut effects);
            }
        }
        effects
    }

    fn unref_chunk(&mut self, id: u64, effects: &mut Effects) {
        if let Some(c) = self.chunks.get_mut(&id) {
            c.refs = c.refs.saturating_sub(1);
            if c.refs == 0 {
                self.chunks.remove(&id);
                effects.freed_chunks.push(id);
            }
        }
    }

    /// Remove a name from a directory, keeping the parent's subdir count and nlink right.
    fn detach(&mut self, parent: u64, name: &[u8], time: Ts) -> Result<u64, FsError> {
        let p = self.parent_mut(parent)?;
        let d = p.dir_mut().ok_or(FsError::NotDir)?;
        let e = d.remove(name).ok_or(FsError::NotFound)?;
        p.mtime = time;
        p.ctime = time;
        let moved_dir = self.inodes.get(&e.ino).is_some_and(Inode::is_dir);
        if moved_dir {
            if let Some(p) = self.inodes.get_mut(&parent) {
                p.nlink = p.nlink.saturating_sub(1);
                if let Some(d) = p.dir_mut() {
                    d.subdirs = d.subdirs.saturating_sub(1);
                }
            }
        }
        Ok(e.ino)
    }

    /// Add a name to a directory; a directory moved there gets its ".." pointed at it.
    fn attach(&mut self, parent: u64, name: &[u8], ino: u64, time: Ts) -> Result<(), FsError> {
        let is_dir = self.inodes.get(&ino).is_some_and(Inode::is_dir);
        let p = self.parent_mut(parent)?;
        p.mtime = time;
        p.ctime = time;
        if is_dir {
            p.nlink += 1;
        }
        let d = p.dir_mut().ok_or(FsError::NotDir)?;
        d.insert(Bytes::copy_from_slice(name), ino);
        if is_dir {
            d.subdirs += 1;
        }
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.ctime = time;
            if let Some(d) = node.dir_mut() {
                d.parent = parent;
            }
        }
        Ok(())
    }

    fn unlink(&mut self, r: &changelog::Unlink) -> Result<Effects, FsError> {
        self.check_removable(r.parent, &r.name)?;
        let time = ts(&r.time);
        let ino = self.detach(r.parent, &r.name, time)?;
        Ok(self.drop_link(ino, time, r.sustain))
    }

    fn rename(&mut self, r: &changelog::Rename) -> Result<Effects, FsError> {
        check_name(&r.name)?;
        check_name(&r.new_name)?;
        if r.flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || r.flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(FsError::Invalid(format!("rename flags {:#x}", r.flags)));
        }
        self.dir(r.new_parent)?;
        let src = self.lookup(r.parent, &r.name)?;
        let (src_ino, src_dir) = (src.ino, src.is_dir());
        let dst = match self.lookup(r.new_parent, &r.new_name) {
            Ok(d) => Some((
                d.ino,
                d.is_dir(),
                d.dir().is_some_and(|d| !d.entries.is_empty()),
            )),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let time = ts(&r.time);
        if r.flags & RENAME_EXCHANGE != 0 {
            let (dst_ino, dst_dir, _) = dst.ok_or(FsError::NotFound)?;
            if src_ino == dst_ino {
                return Ok(Effects::default());
            }
            if (src_dir && self.is_within(r.new_parent, src_ino))
                || (dst_dir && self.is_within(r.parent, dst_ino))
            {
                return Err(FsError::Invalid(
                    "cannot move a directory into itself".into(),
                ));
            }
            self.detach(r.parent, &r.name, time)?;
            self.detach(r.new_parent, &r.new_name, time)?;
            self.attach(r.parent, &r.name, dst_ino, time)?;
            self.attach(r.new_parent, &r.new_name, src_ino, time)?;
            return Ok(Effects::default());
        }
        if let Some((dst_ino, dst_dir, dst_nonempty)) = dst {
            if r.flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if dst_ino == src_ino {
                return Ok(Effects::default());
            }
            match (src_dir, dst_dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if dst_nonempty => return Err(FsError::NotEmpty),
                _ => {}
            }
        }
        if src_dir && self.is_within(r.new_parent, src_ino) {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        if src_dir && r.new_parent != r.parent && self.inode(r.new_parent)?.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        let mut effects = Effects::default();
        if let Some((dst_ino, _, _)) = dst {
            self.detach(r.new_parent, &r.new_name, time)?;
            effects = self.drop_link(dst_ino, time, r.sustain);
        }
        self.detach(r.parent, &r.name, time)?;
        self.attach(r.new_parent, &r.new_name, src_ino, time)?;
        Ok(effects)
    }

    fn set_attr(&mut self, r: &changelog::SetAttr) -> Result<Effects, FsError> {
        let node = self.inodes.get_mut(&r.ino).ok_or(FsError::NotFound)?;
        if let Some(m) = r.mode {
            node.mode = m & 0o7777;
        }
        if let Some(u) = r.uid {
            node.uid = u;
        }
        if let Some(g) = r.gid {
            node.gid = g;
        }
        if let Some(t) = &r.atime {
            node.atime = t.into();
        }
        if let Some(t) = &r.mtime {
            node.mtime = t.into();
        }
        node.ctime = ts(&r.ctime);
        Ok(Effects::default())
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        let node = self.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        match node.body {
            Body::File { .. } => Ok(node),
            Body::Dir(_) => Err(FsError::IsDir),
            _ => Err(FsError::Invalid("not a regular file".into())),
        }
    }

    fn truncate(&mut self, r: &changelog::Truncate) -> Result<Effects, FsError> {
        if r.size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let keep = r.size.div_ceil(CHUNK_SIZE) as usize;
        let cut_index = (r.size / CHUNK_SIZE) as usize;
        {
            let chunks = match &self.inode(r.ino)?.body {
                Body::File { chunks, .. } => chunks,
                Body::Dir(_) => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("not a regular file".into())),
            };
            if r.cut_chunk_id != 0
                && (chunks.get(cut_index) != Some(&r.cut_chunk_id)
                    || !self.chunks.contains_key(&r.cut_chunk_id))
            {
                return Err(FsError::Invalid("cut chunk is not the file's last".into()));
            }
        }
        let time = ts(&r.time);
        let node = self.file_mut(r.ino)?;
        node.mtime = time;
        node.ctime = time;
        let mut dropped = Vec::new();
        if let Body::File { size, chunks } = &mut node.body {
            *size = r.size;
            if chunks.len() > keep {
                dropped.extend(chunks.split_off(keep).into_iter().filter(|&id| id != 0));
            }
        }
        let mut effects = Effects::default();
        for id in dropped {
            self.unref_chunk(id, &mut effects);
        }
        if r.cut_chunk_id != 0 {
            if let Some(c) = self.chunks.get_mut(&r.cut_chunk_id) {
                c.version = r.cut_version;
            }
        }
        Ok(effects)
    }

    fn write_chunk(&mut self, r: &changelog::WriteChunk) -> Result<Effects, FsError> {
        let index = usize::try_from(r.index)
            .ok()
            .filter(|&i| (i as u64) < MAX_FILE_SIZE / CHUNK_SIZE)
            .ok_or(FsError::TooBig)?;
        if r.chunk_id == 0 {
            return Err(FsError::Invalid("chunk id 0".into()));
        }
        let current = self.chunk_at(r.ino, r.index)?;
        if r.created {
            if self.chunks.contains_key(&r.chunk_id) {
                return Err(FsError::Invalid(format!("chunk {} exists", r.chunk_id)));
            }
        } else if current != r.chunk_id || !self.chunks.contains_key(&r.chunk_id) {
            return Err(FsError::Invalid(format!(
                "chunk {} is not at index {index}",
                r.chunk_id
            )));
        }
        let mut effects = Effects::default();
        if r.created {
            if let Body::File { chunks, .. } = &mut self.file_mut(r.ino)?.body {
                if chunks.len() <= index {
                    chunks.extend(std::iter::repeat_n(0, index + 1 - chunks.len()));
                }
                chunks.set(index, r.chunk_id);
            }
            if current != 0 {
                self.unref_chunk(current, &mut effects);
            }
            self.chunks.insert(
                r.chunk_id,
                ChunkMeta {
                    version: r.version,
                    refs: 1,
                },
            );
            self.next_chunk_id = self.next_chunk_id.max(r.chunk_id + 1);
        } else if let Some(c) = self.chunks.get_mut(&r.chunk_id) {
            c.version = r.version;
        }
        Ok(effects)
    }

    fn write_end(&mut self, r: &changelog::WriteEnd) -> Result<Effects, FsError> {
        if r.size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let time = ts(&r.time);
        let node = self.file_mut(r.ino)?;
        if let Body::File { size, .. } = &mut node.body {
            *size = (*size).max(r.size);
        }
        node.mtime = r.mtime.as_ref().map_or(time, Ts::from);
        if let Some(t) = &r.atime {
            node.atime = t.into();
        }
        node.ctime = time;
        Ok(Effects::default())
    }

    fn purge(&mut self, ino: u64) -> Result<Effects, FsError> {
        if self.inode(ino)?.nlink != 0 {
            return Err(FsError::Invalid(format!("inode {ino} still linked")));
        }
        Ok(self.remove_inode(ino))
    }

    fn chunk_version(&mut self, r: &changelog::ChunkVersion) -> Result<Effects, FsError> {
        let c = self.chunks.get_mut(&r.chunk_id).ok_or(FsError::NotFound)?;
        c.version = r.version;
        Ok(Effects::default())
    }
}

#[cfg(test)]
mod tests;
