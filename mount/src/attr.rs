//! meta.Attr (the master's view of a node) ↔ fuser's FileAttr and file types.

use elkfs_proto::meta::{self, NodeKind};
use elkfs_proto::time::to_system;
use fuser::{FileAttr, FileType, INodeNo};

/// st_blksize: the preferred I/O size; tools such as cp size their buffers from it.
const BLKSIZE: u32 = 1 << 20;

pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDev => FileType::CharDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        NodeKind::File | NodeKind::Unspecified => FileType::RegularFile,
    }
}

/// The node kind for the S_IFMT bits of a mknod mode.
pub fn kind_from_mode(mode: u32) -> Option<NodeKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(NodeKind::File),
        libc::S_IFIFO => Some(NodeKind::Fifo),
        libc::S_IFSOCK => Some(NodeKind::Socket),
        libc::S_IFCHR => Some(NodeKind::CharDev),
        libc::S_IFBLK => Some(NodeKind::BlockDev),
        _ => None,
    }
}

/// `size_at_least`: a local lower bound for the size (data written but not yet reported).
pub fn to_file_attr(a: &meta::Attr, size_at_least: u64) -> FileAttr {
    let t = |ts: &Option<meta::Timespec>| to_system(&ts.unwrap_or_default());
    let size = a.size.max(size_at_least);
    FileAttr {
        ino: INodeNo(a.ino),
        size,
        blocks: size.div_ceil(512),
        atime: t(&a.atime),
        mtime: t(&a.mtime),
        ctime: t(&a.ctime),
        crtime: t(&a.ctime),
        kind: file_type(a.kind()),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_kind_mode_and_times() {
        let a = meta::Attr {
            ino: 7,
            kind: NodeKind::Dir as i32,
            mode: 0o1777,
            size: 3,
            nlink: 2,
            mtime: Some(meta::Timespec { sec: -5, nsec: 7 }),
            ..Default::default()
        };
        let f = to_file_attr(&a, 0);
        assert_eq!(f.kind, FileType::Directory);
        assert_eq!(f.perm, 0o1777);
        assert_eq!(f.ino, INodeNo(7));
        assert_eq!(
            elkfs_proto::time::from_system(f.mtime),
            meta::Timespec { sec: -5, nsec: 7 }
        );
        assert_eq!(to_file_attr(&a, 10).size, 10);
        assert_eq!(kind_from_mode(libc::S_IFIFO | 0o644), Some(NodeKind::Fifo));
        assert_eq!(kind_from_mode(0o644), Some(NodeKind::File));
    }
}
