//! `elkfs-genmeta DIR FILES`: a master data directory holding an empty filesystem's image
//! and a changelog that creates FILES files (1000 per directory), written with the
//! master's own state machine and changelog writer. For measuring `elkfs-metarestore`
//! and master start-up at a million files without creating them through FUSE.

use anyhow::{bail, Context};
use elkfs_master::changelog::Changelog;
use elkfs_master::snapshot;
use elkfs_master::state::{State, Ts};
use elkfs_proto::changelog::{record::Op, Mknod, Record};
use elkfs_proto::limits::ROOT_INO;
use elkfs_proto::meta::NodeKind;
use prost::Message;
use std::path::PathBuf;

const PER_DIR: u64 = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, files] = args.as_slice() else {
        bail!("usage: elkfs-genmeta DIR FILES");
    };
    let dir = PathBuf::from(dir);
    let files: u64 = files.parse().context("FILES")?;
    std::fs::create_dir_all(&dir)?;
    let mut state = State::new(1, Ts::default());
    snapshot::write(&dir, &state)?;
    let log = Changelog::start(&dir, 1)?;
    let mut parent = ROOT_INO;
    for i in 0..files {
        if i % PER_DIR == 0 {
            parent = mknod(
                &mut state,
                &log,
                ROOT_INO,
                format!("d{}", i / PER_DIR),
                true,
            )?;
        }
        mknod(&mut state, &log, parent, format!("f{i}"), false)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(log.wait(state.version))?;
    println!(
        "{}: image 0 + {} records, {} inodes",
        dir.display(),
        state.version,
        state.inodes.len()
    );
    Ok(())
}

/// Apply a Mknod as the master would and log it; returns the new inode.
fn mknod(
    state: &mut State,
    log: &Changelog,
    parent: u64,
    name: String,
    dir: bool,
) -> anyhow::Result<u64> {
    let ino = state.next_ino;
    let (kind, mode) = if dir {
        (NodeKind::Dir, 0o755)
    } else {
        (NodeKind::File, 0o644)
    };
    let rec = Record {
        op: Some(Op::Mknod(Mknod {
            parent,
            name: name.into_bytes(),
            ino,
            kind: kind as i32,
            mode,
            goal: 1,
            ..Default::default()
        })),
    };
    let version = state.version + 1;
    state.apply(version, &rec)?;
    log.submit(version, &rec.encode_to_vec());
    Ok(ino)
}
