//! `--dump FILE`: a changelog's records or an image's entries, one per line, for humans.
//! Image entries are sorted (inodes by number, names, chunks by id) so two images of the
//! same metadata print the same text.

use elkfs_master::frame::{Frame, FrameReader};
use elkfs_proto::changelog::record::Op;
use elkfs_proto::changelog::snapshot_entry::Entry;
use elkfs_proto::changelog::{Record, SnapshotEntry};
use elkfs_proto::meta::{NodeKind, Timespec};
use prost::Message;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

/// Print `path`; returns an error line for the first damaged frame, if any.
pub fn dump(path: &Path, out: &mut impl Write) -> anyhow::Result<Option<String>> {
    let file = File::open(path)?;
    let is_image = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("metadata."));
    let mut frames = Vec::new();
    let mut damage = None;
    for f in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
        match f {
            Ok(f) if is_image => frames.push(f),
            Ok(f) => writeln!(out, "{}", record_line(&f))?,
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        }
    }
    if is_image {
        for line in image_lines(&frames) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(damage)
}

fn name(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn time(t: &Option<Timespec>) -> String {
    t.as_ref()
        .map_or("-".into(), |t| format!("{}.{:09}", t.sec, t.nsec))
}

fn kind(k: i32) -> String {
    NodeKind::try_from(k).map_or(format!("kind{k}"), |k| k.as_str_name().to_ascii_lowercase())
}

fn record_line(f: &Frame) -> String {
    let op = match Record::decode(&f.payload[..]) {
        Ok(Record { op: Some(op) }) => op,
        Ok(Record { op: None }) => return format!("{}\t(empty record)", f.version),
        Err(e) => return format!("{}\t(undecodable: {e})", f.version),
    };
    let text = match op {
        Op::Mknod(r) => format!(
            "mknod parent={} name={} ino={} kind={} mode={:o} uid={} gid={} rdev={} goal={} time={}{}",
            r.parent,
            name(&r.name),
            r.ino,
            kind(r.kind),
            r.mode,
            r.uid,
            r.gid,
            r.rdev,
            r.goal,
            time(&r.time),
            if r.symlink_target.is_empty() {
                String::new()
            } else {
                format!(" target={}", name(&r.symlink_target))
            }
        ),
        Op::Link(r) => format!(
            "link ino={} parent={} name={} time={}",
            r.ino,
            r.parent,
            name(&r.name),
            time(&r.time)
        ),
        Op::Unlink(r) => format!(
            "unlink parent={} name={} sustain={} time={}",
            r.parent,
            name(&r.name),
            r.sustain,
            time(&r.time)
        ),
        Op::Rename(r) => format!(
            "rename parent={} name={} new_parent={} new_name={} flags={} sustain={} time={}",
            r.parent,
            name(&r.name),
            r.new_parent,
            name(&r.new_name),
            r.flags,
            r.sustain,
            time(&r.time)
        ),
        Op::SetAttr(r) => {
            let mut s = format!("setattr ino={}", r.ino);
            if let Some(m) = r.mode {
                let _ = write!(s, " mode={m:o}");
            }
            if let Some(u) = r.uid {
                let _ = write!(s, " uid={u}");
            }
            if let Some(g) = r.gid {
                let _ = write!(s, " gid={g}");
            }
            if r.atime.is_some() {
                let _ = write!(s, " atime={}", time(&r.atime));
            }
            if r.mtime.is_some() {
                let _ = write!(s, " mtime={}", time(&r.mtime));
            }
            let _ = write!(s, " ctime={}", time(&r.ctime));
            s
        }
        Op::Truncate(r) => format!(
            "truncate ino={} size={} cut_chunk={} cut_version={} time={}",
            r.ino,
            r.size,
            r.cut_chunk_id,
            r.cut_version,
            time(&r.time)
        ),
        Op::WriteChunk(r) => format!(
            "write_chunk ino={} index={} chunk={} version={} created={}",
            r.ino, r.index, r.chunk_id, r.version, r.created
        ),
        Op::WriteEnd(r) => format!(
            "write_end ino={} size={} time={} atime={} mtime={}",
            r.ino,
            r.size,
            time(&r.time),
            time(&r.atime),
            time(&r.mtime)
        ),
        Op::Purge(r) => format!("purge ino={}", r.ino),
        Op::ChunkVersion(r) => format!("chunk_version chunk={} version={}", r.chunk_id, r.version),
        Op::ReserveChunkIds(r) => format!("reserve_chunk_ids next={}", r.next_chunk_id),
        Op::SetGoal(r) => format!(
            "set_goal ino={} goal={} recursive={}",
            r.ino, r.goal, r.recursive
        ),
        Op::Promote(r) => format!("promote epoch={}", r.epoch),
    };
    format!("{}\t{text}", f.version)
}

fn image_lines(frames: &[Frame]) -> Vec<String> {
    let mut head = Vec::new();
    let mut inodes = Vec::new();
    let mut chunks = Vec::new();
    for f in frames {
        let entry = match SnapshotEntry::decode(&f.payload[..]) {
            Ok(SnapshotEntry { entry: Some(e) }) => e,
            Ok(_) => {
                head.push(format!("byte {}: empty entry", f.offset));
                continue;
            }
            Err(e) => {
                head.push(format!("byte {}: undecodable entry: {e}", f.offset));
                continue;
            }
        };
        match entry {
            Entry::Header(h) => head.push(format!(
                "image version={} next_ino={} next_chunk_id={} epoch={}",
                h.version, h.next_ino, h.next_chunk_id, h.epoch
            )),
            Entry::End(e) => head.push(format!("end inodes={} chunks={}", e.inodes, e.chunks)),
            Entry::Chunk(c) => chunks.push((
                c.chunk_id,
                format!("chunk {} version={} refs={}", c.chunk_id, c.version, c.refs),
            )),
            Entry::Inode(i) => {
                let a = i.attr.unwrap_or_default();
                let mut s = format!(
                    "inode {} {} mode={:o} uid={} gid={} size={} nlink={} rdev={} goal={} atime={} mtime={} ctime={}",
                    a.ino,
                    kind(a.kind),
                    a.mode,
                    a.uid,
                    a.gid,
                    a.size,
                    a.nlink,
                    a.rdev,
                    a.goal,
                    time(&a.atime),
                    time(&a.mtime),
                    time(&a.ctime)
                );
                if !i.chunks.is_empty() {
                    let _ = write!(s, " chunks={:?}", i.chunks);
                }
                if !i.symlink_target.is_empty() {
                    let _ = write!(s, " target={}", name(&i.symlink_target));
                }
                if a.kind == NodeKind::Dir as i32 {
                    let _ = write!(s, " parent={} next_cookie={}", i.parent, i.next_cookie);
                }
                let mut entries = i.entries;
                entries.sort_by(|x, y| x.name.cmp(&y.name));
                for e in entries {
                    let _ = write!(s, "\n  {} -> {} cookie={}", name(&e.name), e.ino, e.cookie);
                }
                inodes.push((a.ino, s));
            }
        }
    }
    inodes.sort_by_key(|(k, _)| *k);
    chunks.sort_by_key(|(k, _)| *k);
    head.into_iter()
        .chain(inodes.into_iter().map(|(_, s)| s))
        .chain(chunks.into_iter().map(|(_, s)| s))
        .collect()
}
