//! Reconnect of a chunkserver holding 100,000 chunks: the first registration with a master
//! lists every bucket; a reconnect to a master that already knows the server sends bucket
//! digests only (nothing listed), whether the server stopped cleanly or was killed -9.
//!
//! Creating 100k chunks through FUSE would take many minutes, so the state is built
//! directly with the daemons' own code: a metadata image of 100k one-chunk files written
//! with the master crate's state machine and snapshot writer, and the matching small chunk
//! files written with the chunkserver crate's chunk file code.

use elkfs_chunkserver::chunk_file::ChunkFile;
use elkfs_chunkserver::store::chunk_file_name;
use elkfs_master::snapshot;
use elkfs_master::state::{State, Ts};
use elkfs_proto::changelog::{record::Op, Mknod, Record, WriteChunk, WriteEnd};
use elkfs_proto::limits::ROOT_INO;
use elkfs_proto::meta::{NodeKind, Timespec};
use elkfs_tests::{Cluster, Opts, StatusReply};
use std::path::Path;

const FILES: u64 = 100_000;
const BUCKETS: u64 = 256;

/// Applies `op` as the next record, as the master would have.
fn apply(state: &mut State, op: Op) {
    let version = state.version + 1;
    state
        .apply(version, &Record { op: Some(op) })
        .unwrap_or_else(|e| panic!("record {version}: {e}"));
}

/// A metadata image with files `f0`..`f99999` in the root, goal 1, each one chunk (ids
/// 1..=100000, version 1) holding the chunk id's 8 little-endian bytes.
fn write_image(dir: &Path) {
    let time = Timespec {
        sec: 1_700_000_000,
        nsec: 0,
    };
    let mut state = State::new(1, Ts::from(&time));
    for n in 0..FILES {
        let ino = state.next_ino;
        let chunk_id = state.next_chunk_id;
        apply(
            &mut state,
            Op::Mknod(Mknod {
                parent: ROOT_INO,
                name: format!("f{n}").into_bytes(),
                ino,
                kind: NodeKind::File as i32,
                mode: 0o644,
                time: Some(time),
                goal: 1,
                ..Mknod::default()
            }),
        );
        apply(
            &mut state,
            Op::WriteChunk(WriteChunk {
                ino,
                index: 0,
                chunk_id,
                version: 1,
                created: true,
            }),
        );
        apply(
            &mut state,
            Op::WriteEnd(WriteEnd {
                ino,
                size: 8,
                time: Some(time),
                ..Default::default()
            }),
        );
    }
    assert_eq!(state.chunks.len() as u64, FILES);
    snapshot::write(dir, &state).expect("writing the metadata image");
}

fn write_chunks(data_dir: &Path) {
    for b in 0..BUCKETS {
        std::fs::create_dir_all(data_dir.join(format!("{b:02X}"))).expect("bucket dir");
    }
    for id in 1..=FILES {
        let path = data_dir
            .join(format!("{:02X}", id & 0xFF))
            .join(chunk_file_name(id, 1));
        ChunkFile::create(&path, id, 1)
            .and_then(|f| f.write(0, 0, &id.to_le_bytes()))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

fn server(st: &StatusReply) -> Option<&elkfs_proto::admin::ServerStatus> {
    st.servers.iter().find(|s| s.connected)
}

/// Waits until the connected server holds every chunk and none is missing; returns what
/// its last registration listed (buckets, chunks).
fn wait_reconciled(c: &Cluster, what: &str) -> (u64, u64) {
    c.wait_until(what, |st| {
        st.missing == 0 && st.chunks == FILES && server(st).is_some_and(|s| s.chunks == FILES)
    });
    let st = c.status().expect("status");
    let s = server(&st).expect("a connected server");
    (s.listed_buckets, s.listed_chunks)
}

fn wait_disconnected(c: &Cluster) {
    c.wait_until("the master to see the chunkserver gone", |st| {
        server(st).is_none()
    });
}

#[test]
fn reconnect_of_100k_chunks_sends_bucket_digests_only() {
    let c = Cluster::create(Opts {
        chunkservers: 1,
        root_goal: Some(1),
        master_config: "chunkserver_timeout_secs = 3\n".to_owned(),
        ..Opts::default()
    });
    // The chunk files live in memory (tmpfs): writing back and deleting 100k files on a
    // shared CI disk takes minutes, and the disk is not what this test is about.
    let shm = tempfile::Builder::new()
        .prefix("elkfs-test-cs-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir in /dev/shm");
    let data = c.chunkserver_data_dir(0);
    std::fs::remove_dir(&data).expect("removing the empty data dir");
    std::os::unix::fs::symlink(shm.path(), &data).expect("data dir symlink to tmpfs");
    write_image(&c.master_data_dir());
    write_chunks(&data);
    c.start_all();
    assert_eq!(
        wait_reconciled(&c, "the first registration"),
        (BUCKETS, FILES),
        "a master meeting the server for the first time has it list everything"
    );

    c.stop_chunkserver(0);
    wait_disconnected(&c);
    c.start_chunkserver(0);
    assert_eq!(
        wait_reconciled(&c, "reconnect after a clean stop"),
        (0, 0),
        "nothing changed: digests only"
    );

    c.kill_chunkserver(0);
    wait_disconnected(&c);
    c.start_chunkserver(0);
    assert_eq!(
        wait_reconciled(&c, "reconnect after kill -9"),
        (0, 0),
        "nothing changed: digests only"
    );

    c.stop_master();
    c.start_master();
    assert_eq!(
        wait_reconciled(&c, "registration with a restarted master"),
        (BUCKETS, FILES),
        "a restarted master remembers nothing of the server: everything is listed"
    );

    let m = c.mount();
    for id in [1, FILES / 2, FILES] {
        let name = format!("f{}", id - 1);
        let got = std::fs::read(m.join(&name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert_eq!(got, id.to_le_bytes(), "{name} holds its chunk's bytes");
    }
    drop(m);
    // Daemons first, then their files.
    drop(c);
    drop(shm);
}

/// A chunkserver stopped cleanly tells the master, which stops counting it as connected
/// (and giving it new chunks) at once, not at its heartbeat timeout (10 s here); it takes
/// new data again once it is back.
#[test]
fn a_cleanly_stopped_chunkserver_leaves_at_once() {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        root_goal: Some(1),
        ..Opts::default()
    });
    let addr = c.chunkserver_addr(0);
    c.stop_chunkserver(0);
    let st = c.status().expect("status");
    let s = st
        .servers
        .iter()
        .find(|s| s.addr == addr)
        .expect("the master lists the server");
    assert!(!s.connected, "still connected after a clean stop: {s:?}");
    c.start_chunkserver(0);
    let m = c.mount();
    std::fs::write(m.join("after"), b"back").expect("write once the server is back");
    assert_eq!(std::fs::read(m.join("after")).expect("read"), b"back");
}
