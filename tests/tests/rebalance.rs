//! Rebalancing: when one server's disk is much fuller than another's, chunks move to the
//! emptier one until usage is even, and every chunk keeps exactly its goal of valid copies.

use elkfs_tests::copies::{at_goal, disks_at_goal, file_info, ino, wait_files};
use elkfs_tests::fsutil::{assert_same_bytes, Rng, Tmpfs};
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File};
use std::io::Write;

const MIB: usize = 1 << 20;

/// Valid copies of the file's chunks on the server at `addr`.
fn held_by(info: &elkfs_proto::admin::FileInfoReply, addr: &str) -> usize {
    info.chunks
        .iter()
        .filter(|ch| ch.copies.iter().any(|cp| cp.addr == addr))
        .count()
}

#[test]
fn chunks_move_from_a_full_server_to_an_empty_one() {
    let c = Cluster::create(Opts {
        chunkservers: 2,
        root_goal: Some(1),
        master_config: "chunkserver_timeout_secs = 3\n\
                        replication_grace_secs = 2\n\
                        rebalance_threshold_pct = 5\n\
                        rebalance_batch = 4\n"
            .to_owned(),
        ..Opts::default()
    });
    let _disks: Vec<Tmpfs> = (0..2)
        .map(|i| Tmpfs::mount(&c.chunkserver_data_dir(i), "1g"))
        .collect();
    c.start_all();
    let (full, empty) = (c.chunkserver_addr(0), c.chunkserver_addr(1));

    // Server 1 is away while the file is written: all 8 chunks (half of server 0's disk)
    // land on server 0.
    c.stop_chunkserver(1);
    c.wait_until("server 1 seen gone", |st| {
        !st.servers.iter().any(|s| s.addr == empty && s.connected)
    });
    let content = Rng::new("rebalance").bytes(8 * 64 * MIB);
    let ino = {
        let m = c.mount();
        let path = m.join("f");
        let mut f = File::create(&path).expect("create");
        f.write_all(&content).expect("write");
        f.sync_all().expect("fsync");
        ino(&path)
    };
    let info = file_info(&c.master_addr(), ino).expect("file info");
    assert_eq!(
        (info.chunks.len(), held_by(&info, &full)),
        (8, 8),
        "every chunk on server 0 first"
    );

    // Server 1 returns empty: 50% against 0%. Moving half the chunks evens it out; any
    // more would only swap the imbalance, so it must stop at 4 and 4.
    c.start_chunkserver(1);
    let both = [full.clone(), empty.clone()];
    // The disks too: one file per chunk, the moved ones deleted from server 0 (deletions
    // are sent in the background, after the master's view changed).
    wait_files(&c, "4 chunks moved to the empty server", &[ino], |info| {
        held_by(info, &empty) == 4
            && at_goal(info, 1, &both)
            && disks_at_goal(&c, info, 1, &content)
    });
    let info = file_info(&c.master_addr(), ino).expect("file info");
    assert_eq!((held_by(&info, &full), held_by(&info, &empty)), (4, 4));
    let m = c.mount();
    let got = fs::read(m.join("f")).expect("read back");
    assert_same_bytes(&got, &content, "after rebalancing");
}
