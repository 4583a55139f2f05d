//! `elkfs fileinfo` (every chunk of a file and its copies) and `elkfs checkfile` (chunks
//! counted by how many valid copies they have).

use crate::target;
use anyhow::Result;
use elkfs_proto::admin::{CopyState, FileInfoReply, InodeRequest};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(
    after_help = "Output, for each PATH (fields separated by single spaces, indented by tabs):\n\
PATH:\n\
\tino INO size BYTES goal GOAL chunks N\n\
\tchunk INDEX: id ID version VERSION length BYTES copies N\n\
\t\tcopy K: ADDRESS STATE\n\
ID is the chunk id in hex as in chunk file names; LENGTH is how much of the file lies in the \
chunk; STATE is valid, stale, damaged, offline or maintenance. Holes have no chunk line.\n\
Errors go to stderr as `elkfs: PATH: MESSAGE`; the exit status is 1 if any PATH failed."
)]
pub struct InfoArgs {
    /// Regular files on an elkfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(clap::Args)]
#[command(after_help = "Output, for each PATH:\n\
PATH:\n\
\tchunks with V valid copies: N\n\
one line per number of valid copies V that occurs, fewest first (`\\tno chunks` for a file \
without data). A chunk with 0 valid copies cannot be read.\n\
Errors go to stderr as `elkfs: PATH: MESSAGE`; the exit status is 1 if any PATH failed.")]
pub struct CheckArgs {
    /// Regular files on an elkfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn info(args: InfoArgs) -> Result<()> {
    target::each(&args.paths, fetch, render_info)
}

pub fn check(args: CheckArgs) -> Result<()> {
    target::each(&args.paths, fetch, render_check)
}

async fn fetch(
    mut client: crate::admin::Client,
    ino: u64,
) -> Result<tonic::Response<FileInfoReply>, tonic::Status> {
    client.file_info(InodeRequest { ino }).await
}

fn state_name(state: i32) -> String {
    match CopyState::try_from(state) {
        Ok(CopyState::Unspecified) | Err(_) => "unknown".to_owned(),
        Ok(s) => s.as_str_name().to_ascii_lowercase(),
    }
}

fn render_info(path: &Path, r: &FileInfoReply) -> String {
    let mut out = format!(
        "{}:\n\tino {} size {} goal {} chunks {}\n",
        path.display(),
        r.ino,
        r.size,
        r.goal,
        r.chunks.len()
    );
    for c in &r.chunks {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "\tchunk {}: id {:016X} version {} length {} copies {}",
            c.index,
            c.chunk_id,
            c.version,
            c.length,
            c.copies.len()
        );
        for (k, copy) in c.copies.iter().enumerate() {
            let _ = writeln!(
                out,
                "\t\tcopy {}: {} {}",
                k + 1,
                copy.addr,
                state_name(copy.state)
            );
        }
    }
    out
}

fn render_check(path: &Path, r: &FileInfoReply) -> String {
    let mut by_valid: BTreeMap<usize, u64> = BTreeMap::new();
    for c in &r.chunks {
        let valid = c
            .copies
            .iter()
            .filter(|copy| copy.state == CopyState::Valid as i32)
            .count();
        *by_valid.entry(valid).or_default() += 1;
    }
    let mut out = format!("{}:\n", path.display());
    if by_valid.is_empty() {
        out.push_str("\tno chunks\n");
    }
    for (valid, chunks) in by_valid {
        let _ = writeln!(out, "\tchunks with {valid} valid copies: {chunks}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::admin::{ChunkInfo, CopyInfo};

    fn copy(addr: &str, state: CopyState) -> CopyInfo {
        CopyInfo {
            server_id: 1,
            addr: addr.into(),
            version: 1,
            state: state.into(),
        }
    }

    fn reply() -> FileInfoReply {
        FileInfoReply {
            ino: 12,
            size: (64 << 20) + 5,
            goal: 2,
            chunks: vec![
                ChunkInfo {
                    index: 0,
                    chunk_id: 0x1a2,
                    version: 3,
                    length: 64 << 20,
                    copies: vec![
                        copy("127.0.0.1:9530", CopyState::Valid),
                        copy("127.0.0.1:9531", CopyState::Stale),
                    ],
                },
                ChunkInfo {
                    index: 1,
                    chunk_id: 0x1a3,
                    version: 1,
                    length: 5,
                    copies: vec![],
                },
            ],
        }
    }

    #[test]
    fn fileinfo_lists_chunks_and_copies() {
        assert_eq!(
            render_info(Path::new("/mnt/f"), &reply()),
            "/mnt/f:\n\
             \tino 12 size 67108869 goal 2 chunks 2\n\
             \tchunk 0: id 00000000000001A2 version 3 length 67108864 copies 2\n\
             \t\tcopy 1: 127.0.0.1:9530 valid\n\
             \t\tcopy 2: 127.0.0.1:9531 stale\n\
             \tchunk 1: id 00000000000001A3 version 1 length 5 copies 0\n"
        );
    }

    #[test]
    fn checkfile_counts_valid_copies() {
        assert_eq!(
            render_check(Path::new("/mnt/f"), &reply()),
            "/mnt/f:\n\tchunks with 0 valid copies: 1\n\tchunks with 1 valid copies: 1\n"
        );
        let empty = FileInfoReply::default();
        assert_eq!(
            render_check(Path::new("/mnt/e"), &empty),
            "/mnt/e:\n\tno chunks\n"
        );
    }
}
