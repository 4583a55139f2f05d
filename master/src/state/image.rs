//! State ↔ snapshot entries. Pure: writing them to disk is `snapshot.rs`'s job.

use super::{Body, ChunkMeta, Dir, Entry, Inode, State};
use bytes::Bytes;
use elkfs_proto::changelog::{self, snapshot_entry::Entry as E, SnapshotEntry};
use elkfs_proto::meta::NodeKind;
use elkfs_proto::FsError;
use imbl::{HashMap as IMap, Vector};

/// The entries of an image of `state`, lazily: header, inodes, chunks, end.
pub fn to_image(state: &State) -> impl Iterator<Item = SnapshotEntry> + '_ {
    let header = E::Header(changelog::SnapshotHeader {
        version: state.version,
        next_ino: state.next_ino,
        next_chunk_id: state.next_chunk_id,
        epoch: state.epoch,
    });
    let inodes = state.inodes.values().map(|n| E::Inode(inode_entry(n)));
    let chunks = state.chunks.iter().map(|(&id, c)| {
        E::Chunk(changelog::Chunk {
            chunk_id: id,
            version: c.version,
            refs: c.refs,
        })
    });
    let end = E::End(changelog::SnapshotEnd {
        inodes: state.inodes.len() as u64,
        chunks: state.chunks.len() as u64,
    });
    std::iter::once(header)
        .chain(inodes)
        .chain(chunks)
        .chain(std::iter::once(end))
        .map(|e| SnapshotEntry { entry: Some(e) })
}

fn inode_entry(n: &Inode) -> changelog::Inode {
    let mut out = changelog::Inode {
        attr: Some(n.attr()),
        ..Default::default()
    };
    match &n.body {
        Body::File { chunks, .. } => out.chunks = chunks.iter().copied().collect(),
        Body::Dir(d) => {
            out.parent = d.parent;
            out.next_cookie = d.next_cookie;
            out.entries = d
                .entries
                .iter()
                .map(|(name, e)| changelog::DirEntry {
                    name: name.to_vec(),
                    ino: e.ino,
                    cookie: e.cookie,
                })
                .collect();
        }
        Body::Symlink(t) => out.symlink_target = t.to_vec(),
        Body::Special => {}
    }
    out
}

fn bad(what: &str) -> FsError {
    FsError::Invalid(format!("snapshot: {what}"))
}

/// Rebuild a state from image entries. Fails on a missing header/end, counts that do not
/// match, or entries that contradict each other.
pub fn from_image(entries: impl IntoIterator<Item = SnapshotEntry>) -> Result<State, FsError> {
    let mut it = entries.into_iter();
    let Some(E::Header(h)) = it.next().and_then(|e| e.entry) else {
        return Err(bad("no header"));
    };
    let mut inodes = IMap::new();
    let mut chunks = IMap::new();
    for e in it {
        match e.entry.ok_or_else(|| bad("empty entry"))? {
            E::Inode(i) => {
                let node = inode_from(i)?;
                inodes.insert(node.ino, node);
            }
            E::Chunk(c) => {
                chunks.insert(
                    c.chunk_id,
                    ChunkMeta {
                        version: c.version,
                        refs: c.refs,
                    },
                );
            }
            E::End(end) => {
                if end.inodes != inodes.len() as u64 || end.chunks != chunks.len() as u64 {
                    return Err(bad("entry counts do not match the end marker"));
                }
                return Ok(State {
                    version: h.version,
                    next_ino: h.next_ino,
                    next_chunk_id: h.next_chunk_id,
                    epoch: h.epoch,
                    inodes,
                    chunks,
                });
            }
            E::Header(_) => return Err(bad("second header")),
        }
    }
    Err(bad("no end marker (truncated image)"))
}

fn inode_from(i: changelog::Inode) -> Result<Inode, FsError> {
    let a = i.attr.ok_or_else(|| bad("inode without attributes"))?;
    let kind = NodeKind::try_from(a.kind).map_err(|_| bad("node kind"))?;
    let body = match kind {
        NodeKind::File => Body::File {
            size: a.size,
            chunks: i.chunks.into_iter().collect::<Vector<u64>>(),
        },
        NodeKind::Dir => {
            let mut d = Dir::new(i.parent);
            d.next_cookie = i.next_cookie;
            for e in i.entries {
                let name = Bytes::from(e.name);
                d.by_cookie.insert(e.cookie, name.clone());
                d.entries.insert(
                    name,
                    Entry {
                        ino: e.ino,
                        cookie: e.cookie,
                    },
                );
            }
            // Every subdirectory adds one link to its parent (its "..").
            d.subdirs = a.nlink.saturating_sub(2);
            Body::Dir(d)
        }
        NodeKind::Symlink => Body::Symlink(Bytes::from(i.symlink_target)),
        NodeKind::Unspecified => return Err(bad("node kind")),
        _ => Body::Special,
    };
    let t =
        |t: &Option<elkfs_proto::meta::Timespec>| t.as_ref().map(Into::into).unwrap_or_default();
    Ok(Inode {
        ino: a.ino,
        kind,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        nlink: a.nlink,
        atime: t(&a.atime),
        mtime: t(&a.mtime),
        ctime: t(&a.ctime),
        rdev: a.rdev,
        goal: a.goal,
        body,
    })
}
