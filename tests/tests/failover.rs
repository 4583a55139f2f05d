//! Standby promotion with real processes: kill -9 of the master in the middle of a copy,
//! `elkfs promote` of the standby, and the copy finishes without an error and reads back
//! identical. Mounts and chunkservers know both master addresses.

use elkfs_tests::fsutil::Rng;
use elkfs_tests::metalogger::{
    mount_masters, promote, set_master_option, spawn_chunkserver, Metalogger,
};
use elkfs_tests::{admin_status, Cluster, Daemon, Opts};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const FILES: usize = 48;
const FILE_SIZE: usize = 1 << 20;

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

fn connected_servers(master: &str) -> usize {
    admin_status(master).map_or(0, |s| s.servers.iter().filter(|s| s.connected).count())
}

fn write_sources(dir: &Path) {
    std::fs::create_dir_all(dir).expect("source dir");
    let mut rng = Rng::new("failover-src");
    for i in 0..FILES {
        let mut data = vec![0u8; FILE_SIZE];
        rng.fill(&mut data);
        std::fs::write(dir.join(format!("f{i:03}")), data).expect("writing a source file");
    }
}

/// Starts the cluster's master on its data directory, expecting it to exit at once with an
/// error; returns what it logged.
fn master_start_refused(cluster: &Cluster) -> String {
    let log = cluster.log_path("master-refused");
    let out = std::fs::File::create(&log).expect("log file");
    let mut master = Command::new(elkfs_tests::bin("elkfs-master"))
        .arg("--config")
        .arg(cluster.dir().join("master.toml"))
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .expect("starting elkfs-master");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = master.try_wait().expect("waiting for the master") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = master.kill();
            let _ = master.wait();
            panic!("the master started on superseded data");
        }
        sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "the master exited cleanly on superseded data"
    );
    std::fs::read_to_string(log).expect("reading the log")
}

/// A master (goal 2 at the root), a standby following it, and 3 chunkservers registered
/// with the master; the list of both master addresses, master first. The master answers
/// only once the standby has each record (`sync_metaloggers = 1`): the tests check that a
/// promotion loses nothing acknowledged, which is what that setting promises.
fn with_standby() -> (Cluster, Metalogger, String, Vec<Daemon>) {
    let cluster = Cluster::start(Opts {
        chunkservers: 0,
        root_goal: Some(2),
        ..Opts::default()
    });
    set_master_option(&cluster, "sync_metaloggers = 1");
    cluster.stop_master();
    let mut standby = Metalogger::start_standby(&cluster, "standby");
    cluster.start_master();
    standby.wait_following();
    let masters = format!("{},{}", cluster.master_addr(), standby.master_listen());
    let chunkservers = (0..3)
        .map(|i| spawn_chunkserver(&cluster, i, &masters))
        .collect();
    wait_for("3 chunkservers on the master", || {
        connected_servers(&cluster.master_addr()) == 3
    });
    (cluster, standby, masters, chunkservers)
}

#[test]
fn copy_survives_kill_of_the_master_and_promotion_of_the_standby() {
    let (cluster, standby, masters, _chunkservers) = with_standby();

    let refused = promote(standby.control(), false);
    assert_ne!(refused.code, Some(0), "promoted while the master runs");
    assert!(
        refused.stderr.contains("still active"),
        "unclear refusal: {}",
        refused.stderr
    );

    let src = cluster.dir().join("src");
    write_sources(&src);
    let mount = mount_masters(&cluster, "mnt", &masters);
    let dst = mount.join("copy");
    let mut cp = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .spawn()
        .expect("starting cp");
    wait_for("the copy to start", || {
        std::fs::read_dir(&dst).is_ok_and(|d| d.count() >= 4)
    });
    cluster.kill_master();
    let promoted = promote(standby.control(), false);
    assert_eq!(
        promoted.code,
        Some(0),
        "promotion failed: {}{}",
        promoted.stdout,
        promoted.stderr
    );
    let status = cp.wait().expect("waiting for cp");
    assert!(status.success(), "cp failed across the failover: {status}");

    for i in 0..FILES {
        let name = format!("f{i:03}");
        let want = std::fs::read(src.join(&name)).expect("source");
        let got = std::fs::read(dst.join(&name)).expect("copy");
        assert!(got == want, "{name} differs after the failover");
    }
    let again = promote(standby.control(), false);
    assert_ne!(again.code, Some(0), "promoted twice");
    assert!(
        again.stderr.contains("already promoted"),
        "unclear error for a second promotion: {}",
        again.stderr
    );
    let state = admin_status(standby.master_listen()).expect("the new master answers");
    assert!(state.metadata_version > 0);
}

#[test]
fn mount_starts_when_the_first_listed_master_is_down() {
    let cluster = Cluster::start(Opts::default());
    // Nothing listens on port 9599 of the cluster's address.
    let masters = format!("{}:9599,{}", cluster.ip(), cluster.master_addr());
    let mount = mount_masters(&cluster, "mnt", &masters);
    let mut data = vec![0u8; 3 << 20];
    Rng::new("first-down").fill(&mut data);
    std::fs::write(mount.join("f"), &data).expect("write");
    assert!(std::fs::read(mount.join("f")).expect("read") == data);
}

/// The old master started again on its old data after a promotion is fenced, first by a
/// chunkserver (which keeps the newest epoch across its restart), then, with the mark that
/// left removed and the old master restarted, by a new mount: each lists the old master
/// first, ends on the promoted one, and tells the old one, which then refuses everything
/// and marks its data directory so it does not start on it again. Nothing written after
/// the promotion is lost.
#[test]
fn old_master_started_again_after_a_promotion_is_fenced() {
    let (cluster, standby, masters, mut chunkservers) = with_standby();
    let old = cluster.master_addr();
    let new = standby.master_listen().to_owned();
    let mount = mount_masters(&cluster, "mnt", &masters);
    std::fs::write(mount.join("before"), b"written before the promotion").expect("write");

    cluster.kill_master();
    let promoted = promote(standby.control(), false);
    assert_eq!(
        promoted.code,
        Some(0),
        "promotion failed: {}",
        promoted.stderr
    );
    let mut after = vec![0u8; 5 << 20];
    Rng::new("fenced").fill(&mut after);
    std::fs::write(mount.join("after"), &after).expect("write after the promotion");
    wait_for("3 chunkservers on the promoted master", || {
        connected_servers(&new) == 3
    });
    let superseded = || {
        std::fs::read_to_string(cluster.log_path("master"))
            .expect("master log")
            .matches("superseded:")
            .count()
    };

    // The old master comes back; a chunkserver restarts and tries it first.
    cluster.start_master();
    assert_eq!(superseded(), 0);
    chunkservers.remove(0).kill();
    chunkservers.insert(0, spawn_chunkserver(&cluster, 0, &masters));
    wait_for("the chunkserver to fence the old master", || {
        superseded() == 1
    });
    assert_eq!(
        connected_servers(&old),
        0,
        "a chunkserver registered with the old master"
    );
    let status = admin_status(&old).expect("the old master's status");
    assert_eq!((status.epoch, status.superseded_by), (0, 1));
    assert_eq!(
        admin_status(&new).expect("the new master's status").epoch,
        1
    );

    // The mark it left keeps it from starting again on that data.
    cluster.kill_master();
    let refusal = master_start_refused(&cluster);
    assert!(
        refusal.contains("superseded by a promoted standby"),
        "{refusal}"
    );

    // Without the mark, a new mount is the first to meet it.
    std::fs::remove_file(cluster.master_data_dir().join("superseded")).expect("the mark");
    cluster.start_master();
    let second = mount_masters(&cluster, "mnt2", &masters);
    assert_eq!(
        superseded(),
        2,
        "the new mount did not fence the old master"
    );
    assert!(
        std::fs::read(second.join("after")).expect("read through the new mount") == after,
        "the new mount does not see what was written after the promotion"
    );
    assert_eq!(connected_servers(&old), 0);
    assert_eq!(
        std::fs::read(mount.join("before")).expect("read the older file"),
        b"written before the promotion"
    );
}
