//! Damaged and stale copies are found and replaced by themselves: bit rot met by a reader,
//! bit rot nobody reads (scrub), and a chunkserver cut off by a network partition while a
//! client keeps writing. Reads never fail and never return wrong or stale data meanwhile.

use elkfs_proto::admin::{CopyState, FileInfoReply};
use elkfs_tests::copies::{
    at_goal, disk_copies, disks_at_goal, file_info, ino, read_locations, rot, wait_files,
    HEAL_TIMEOUT,
};
use elkfs_tests::fsutil::{assert_same_bytes, Rng};
use elkfs_tests::netns::Netns;
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// See replication.rs: healing starts within seconds, no rebalancing.
const FAST_HEALING: &str = "chunkserver_timeout_secs = 3\n\
                            replication_grace_secs = 2\n\
                            rebalance_threshold_pct = 100\n";

fn opts(goal: u32, chunkserver_config: &str) -> Opts {
    Opts {
        chunkservers: 3,
        root_goal: Some(goal),
        master_config: FAST_HEALING.to_owned(),
        chunkserver_config: chunkserver_config.to_owned(),
        ..Opts::default()
    }
}

fn all_addrs(c: &Cluster) -> Vec<String> {
    (0..c.chunkserver_count())
        .map(|i| c.chunkserver_addr(i))
        .collect()
}

fn write_file(path: &Path, content: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content).expect("write");
    f.sync_all().expect("fsync");
}

fn assert_read(c: &Cluster, name: &str, content: &[u8], when: &str) {
    let m = c.mount();
    let got = fs::read(m.join(name)).unwrap_or_else(|e| panic!("{when}: read {name}: {e}"));
    assert_same_bytes(&got, content, when);
}

/// Waits until master and disks agree on `goal` good copies of every chunk of `ino`.
fn wait_healed(c: &Cluster, what: &str, ino: u64, goal: usize, content: &[u8]) {
    let all = all_addrs(c);
    wait_files(c, what, &[ino], |info| {
        at_goal(info, goal, &all) && disks_at_goal(c, info, goal, content)
    });
}

/// Writes 10 MiB of `label`'s bytes to file "f" and waits for its 2 copies.
fn write_two_copies(c: &Cluster, label: &str) -> (u64, Vec<u8>) {
    let content = Rng::new(label).bytes(10 * MIB);
    let ino = {
        let m = c.mount();
        write_file(&m.join("f"), &content);
        ino(&m.join("f"))
    };
    wait_healed(c, "2 copies written", ino, 2, &content);
    (ino, content)
}

/// Rots the copy of the file's first chunk that a reader tries first (the master's order),
/// in two blocks, and returns that server's index. Replaced means [`disks_at_goal`] holds
/// again: that file is then gone or has the right bytes.
fn rot_first_copy(c: &Cluster, ino: u64) -> usize {
    let info = file_info(&c.master_addr(), ino).expect("fileinfo");
    let chunk = &info.chunks[0];
    let first = read_locations(&c.master_addr(), ino, 0).expect("read locations");
    let server = first
        .first()
        .and_then(|addr| c.chunkserver_index(addr))
        .unwrap_or_else(|| panic!("no known server among {first:?}"));
    let copy = disk_copies(c, chunk.chunk_id)
        .into_iter()
        .find(|d| d.server == server && d.version == chunk.version)
        .expect("the listed copy is on that server's disk");
    rot(&copy.path, &[1000, 5 * MIB as u64 + 77]);
    server
}

#[test]
fn reader_meets_bit_rot_gets_good_data_and_the_copy_is_replaced() {
    // No scrub: only the reader can find the damage.
    let c = Cluster::start(opts(2, "scrub_bytes_per_sec = 0\n"));
    let (ino, content) = write_two_copies(&c, "bitrot-read");
    rot_first_copy(&c, ino);

    assert_read(&c, "f", &content, "read with one rotten copy");
    wait_healed(&c, "the rotten copy replaced", ino, 2, &content);
    assert_read(&c, "f", &content, "after the repair");
}

#[test]
fn scrub_finds_bit_rot_nobody_reads_and_it_is_repaired() {
    let c = Cluster::start(opts(
        2,
        "scrub_bytes_per_sec = 1073741824\nscrub_pause_secs = 1\n",
    ));
    let (ino, content) = write_two_copies(&c, "bitrot-scrub");
    // No mount from here until it is repaired: nobody reads the file.
    rot_first_copy(&c, ino);
    wait_healed(
        &c,
        "scrub found the rotten copy and it was replaced",
        ino,
        2,
        &content,
    );
    assert_read(&c, "f", &content, "after the scrub repair");
}

#[test]
fn damage_found_before_a_restart_is_known_after_it() {
    // Two servers at goal 2: the damaged copy has nowhere to be replaced, so its mark
    // stays. No scrub: after a restart, only the chunkserver's report can bring it back.
    let c = Cluster::start(Opts {
        chunkservers: 2,
        ..opts(2, "scrub_bytes_per_sec = 0\n")
    });
    let (ino, content) = write_two_copies(&c, "bitrot-restart");
    let rotten = rot_first_copy(&c, ino);
    assert_read(&c, "f", &content, "read with one rotten copy");
    let one_damaged = |info: &FileInfoReply| {
        let mut states: Vec<i32> = info.chunks[0].copies.iter().map(|cp| cp.state).collect();
        states.sort();
        states == [CopyState::Valid as i32, CopyState::Damaged as i32]
    };
    wait_files(&c, "the rotten copy marked damaged", &[ino], one_damaged);
    c.kill_master();
    c.start_master();
    wait_files(
        &c,
        "the mark back after a master restart",
        &[ino],
        one_damaged,
    );
    c.kill_chunkserver(rotten);
    c.kill_master();
    c.start_master();
    c.start_chunkserver(rotten);
    wait_files(
        &c,
        "the mark back after a restart of the master and that chunkserver",
        &[ino],
        one_damaged,
    );
    assert_read(&c, "f", &content, "after the restarts");
}

/// Appends `content` to `path` 1 MiB at a time with an fsync every 8 MiB, counting in
/// `progress` the MiB written and returning the bytes acknowledged by the last fsync.
fn append_with_fsyncs(path: PathBuf, content: Arc<Vec<u8>>, progress: Arc<AtomicUsize>) -> usize {
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut acked = 0;
    for (i, piece) in content.chunks(MIB).enumerate() {
        f.write_all(piece)
            .unwrap_or_else(|e| panic!("write of MiB {i} (acknowledged so far {acked}): {e}"));
        progress.store(i + 1, Ordering::SeqCst);
        if (i + 1) % 8 == 0 || i + 1 == content.len().div_ceil(MIB) {
            f.sync_data()
                .unwrap_or_else(|e| panic!("fsync after MiB {i}: {e}"));
            acked = (i * MIB + piece.len()).min(content.len());
        }
    }
    acked
}

#[test]
fn partitioned_chunkserver_ends_stale_and_the_cluster_converges() {
    let ns = Netns::create();
    // Goal 3 on 3 servers: the cut-off server is in every chain.
    let c = Cluster::create(Opts {
        ip: Some(ns.host_ip()),
        ..opts(3, "")
    });
    c.run_chunkserver_in(2, ns.name(), ns.ns_ip());
    c.start_all();
    let cut_off = c.chunkserver_addr(2);
    let content = Arc::new(Rng::new("partition").bytes(96 * MIB));
    let m = c.mount();
    let path = m.join("log");

    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (path, content, progress) = (path.clone(), content.clone(), progress.clone());
        std::thread::spawn(move || append_with_fsyncs(path, content, progress))
    };
    let deadline = Instant::now() + HEAL_TIMEOUT;
    let mut cut = false;
    while !writer.is_finished() {
        if !cut && progress.load(Ordering::SeqCst) >= 16 {
            ns.cut();
            cut = true;
        }
        assert!(
            Instant::now() < deadline,
            "the writer is stuck at MiB {} since the partition\n{}",
            progress.load(Ordering::SeqCst),
            c.log_tails()
        );
        sleep(Duration::from_millis(50));
    }
    assert!(cut, "the partition started while the client was writing");
    let acked = writer.join().expect("the writer thread panicked");
    assert_eq!(acked, content.len(), "every write was acknowledged");
    let ino = ino(&path);
    drop(m);

    // Still cut off: the master counts 2 valid copies; the cut-off one is not valid.
    let reachable = [c.chunkserver_addr(0), c.chunkserver_addr(1)];
    wait_files(
        &c,
        "2 valid copies on the reachable servers, none on the cut-off one",
        &[ino],
        |info| {
            at_goal(info, 2, &reachable)
                && info.chunks.iter().all(|chunk| {
                    chunk.copies.iter().all(|cp| {
                        cp.addr != cut_off
                            || cp.state != CopyState::Valid as i32
                            || cp.version != chunk.version
                    })
                })
        },
    );
    // On the cut-off server's disk the first chunk (written before the cut) is behind.
    let info = file_info(&c.master_addr(), ino).expect("fileinfo");
    let on_cut_off: Vec<_> = disk_copies(&c, info.chunks[0].chunk_id)
        .into_iter()
        .filter(|d| d.server == 2)
        .collect();
    let behind = !on_cut_off.is_empty()
        && on_cut_off
            .iter()
            .all(|d| d.version < info.chunks[0].version);
    assert!(
        behind,
        "the cut-off copy is stale: {on_cut_off:?} vs {}",
        elkfs_tests::copies::describe(&info)
    );
    assert_read(&c, "log", &content, "during the partition");

    ns.heal();
    // Reads while the stale copies are being replaced must not return them.
    assert_read(&c, "log", &content, "just after the partition healed");
    wait_healed(
        &c,
        "the cut-off server's stale copies replaced",
        ino,
        3,
        &content,
    );
    assert_read(&c, "log", &content, "after convergence");
    let st = c.status().expect("status");
    assert_eq!(
        (st.missing, st.under_goal, st.over_goal),
        (0, 0, 0),
        "status totals after convergence: {st:?}"
    );
}
