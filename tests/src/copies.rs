//! Chunk copies as the master reports them (Admin.FileInfo) and as they lie on the
//! chunkservers' disks, and waiting for the cluster to heal.

use crate::cluster::Cluster;
use elkfs_proto::admin::{CopyState, FileInfoReply, InodeRequest};
use elkfs_proto::meta::ChunkRequest;
use elkfs_proto::transport;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A hang guard for healing, not a speed requirement: debug builds on a loaded 2-core
/// machine copying a few hundred MiB.
pub const HEAL_TIMEOUT: Duration = Duration::from_secs(240);

/// Chunk data starts after the 8 KiB header (docs/architecture.md).
pub const DATA_OFFSET: u64 = 8192;
pub const CHUNK_SIZE: u64 = 64 << 20;

/// Admin.FileInfo of inode `ino` from the master at `master`.
pub fn file_info(master: &str, ino: u64) -> anyhow::Result<FileInfoReply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = transport::channel(master)?;
        let reply = transport::admin_client(channel)
            .file_info(InodeRequest { ino })
            .await?;
        Ok(reply.into_inner())
    })
}

/// The servers (addresses) Meta.ReadChunk offers for chunk `index` of `ino`, in the order
/// a reader tries them.
pub fn read_locations(master: &str, ino: u64, index: u64) -> anyhow::Result<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = transport::channel(master)?;
        let reply = transport::meta_client(channel)
            .read_chunk(ChunkRequest {
                ino,
                index,
                ..ChunkRequest::default()
            })
            .await?;
        Ok(reply
            .into_inner()
            .locations
            .into_iter()
            .map(|l| l.addr)
            .collect())
    })
}

/// The master's inode number of a file on a mount (the mount passes it through).
pub fn ino(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// True when every chunk of the file has exactly `goal` copies on the servers `servers`
/// (addresses), all valid, on distinct servers: no stale, damaged or extra copy among them.
/// Copies on other servers (e.g. a dead one the master may still list) are not looked at;
/// pass every server for the strict check.
pub fn at_goal(info: &FileInfoReply, goal: usize, servers: &[String]) -> bool {
    info.chunks.iter().all(|chunk| {
        let mine: Vec<_> = chunk
            .copies
            .iter()
            .filter(|c| servers.contains(&c.addr))
            .collect();
        let distinct: BTreeSet<&str> = mine.iter().map(|c| c.addr.as_str()).collect();
        mine.len() == goal
            && distinct.len() == goal
            && mine
                .iter()
                .all(|c| c.state == CopyState::Valid as i32 && c.version == chunk.version)
    })
}

/// Valid copies of each chunk, in chunk order.
pub fn valid_counts(info: &FileInfoReply) -> Vec<usize> {
    info.chunks
        .iter()
        .map(|chunk| {
            chunk
                .copies
                .iter()
                .filter(|c| c.state == CopyState::Valid as i32 && c.version == chunk.version)
                .count()
        })
        .collect()
}

/// One line per chunk, for failure messages.
pub fn describe(info: &FileInfoReply) -> String {
    let mut out = format!("ino {} size {} goal {}\n", info.ino, info.size, info.goal);
    for chunk in &info.chunks {
        out.push_str(&format!(
            "  chunk {} id {:016X} v{}:",
            chunk.index, chunk.chunk_id, chunk.version
        ));
        for c in &chunk.copies {
            let state = CopyState::try_from(c.state).map_or("?", |s| s.as_str_name());
            out.push_str(&format!(" {} v{} {state};", c.addr, c.version));
        }
        out.push('\n');
    }
    out
}

/// A chunk file on a chunkserver's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCopy {
    pub server: usize,
    pub version: u32,
    pub path: PathBuf,
}

/// Every file of chunk `id` on every chunkserver's disk, whatever its version.
pub fn disk_copies(c: &Cluster, id: u64) -> Vec<DiskCopy> {
    let prefix = format!("chunk_{id:016X}_");
    let mut out = Vec::new();
    for server in 0..c.chunkserver_count() {
        let dir = c
            .chunkserver_data_dir(server)
            .join(format!("{:02X}", id & 0xFF));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_prefix(&prefix)
                .and_then(|v| v.strip_suffix(".elk"))
                .and_then(|v| u32::from_str_radix(v, 16).ok())
            else {
                continue;
            };
            out.push(DiskCopy {
                server,
                version,
                path: e.path(),
            });
        }
    }
    out.sort_by_key(|d| d.server);
    out
}

/// True when the disks hold exactly `goal` files of every chunk of the file, each at the
/// chunk's current version, each with `content`'s bytes for that chunk (the file's data
/// from offset 0): stale, damaged and surplus copies are gone from disk too.
pub fn disks_at_goal(c: &Cluster, info: &FileInfoReply, goal: usize, content: &[u8]) -> bool {
    info.chunks.iter().all(|chunk| {
        let copies = disk_copies(c, chunk.chunk_id);
        let start = (chunk.index * CHUNK_SIZE) as usize;
        let end = (start + CHUNK_SIZE as usize).min(content.len());
        copies.len() == goal
            && copies
                .iter()
                .all(|d| d.version == chunk.version && chunk_data_is(&d.path, &content[start..end]))
    })
}

/// True when the data part of a chunk file is exactly `want` (a missing or short file is
/// not).
pub fn chunk_data_is(path: &Path, want: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        bytes.len() as u64 == DATA_OFFSET + want.len() as u64
            && &bytes[DATA_OFFSET as usize..] == want
    })
}

/// Flips the bytes of a chunk file's data at `offsets` (relative to the data start),
/// leaving the CRCs as they were: bit rot.
pub fn rot(path: &Path, offsets: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    for &at in offsets {
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, DATA_OFFSET + at)
            .expect("reading a chunk byte");
        f.write_all_at(&[byte[0] ^ 0xA5], DATA_OFFSET + at)
            .expect("flipping a chunk byte");
    }
    f.sync_all().expect("fsync of the rotten chunk file");
}

/// Polls the master's FileInfo of `inos` until `ready` holds for all of them; panics after
/// [`HEAL_TIMEOUT`] with the last answers and the logs.
pub fn wait_files(
    c: &Cluster,
    what: &str,
    inos: &[u64],
    mut ready: impl FnMut(&FileInfoReply) -> bool,
) {
    let master = c.master_addr();
    let mut shown = String::new();
    c.wait_for(what, HEAL_TIMEOUT, || {
        let mut last = String::new();
        let mut all = true;
        for &ino in inos {
            match file_info(&master, ino) {
                Ok(info) => {
                    last.push_str(&describe(&info));
                    all &= ready(&info);
                }
                Err(e) => {
                    last.push_str(&format!("ino {ino}: {e}\n"));
                    all = false;
                }
            }
            if !all {
                break;
            }
        }
        // Each new state once: the test harness shows it if the test fails.
        if !all && last != shown {
            eprintln!("waiting for {what}:\n{last}");
            shown = last;
        }
        all
    });
}

/// Runs the `elkfs` tool; panics with its output unless it succeeds. Returns stdout.
pub fn elkfs(args: &[&str]) -> String {
    let out: Output = Command::new(crate::bins::bin("elkfs"))
        .args(args)
        .output()
        .expect("running elkfs");
    assert!(
        out.status.success(),
        "elkfs {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
