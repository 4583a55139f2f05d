//! Metaloggers with real processes: a metalogger's copy restores to exactly the master's
//! metadata; kill -9 of either side mid-storm leaves no gap and no duplicate; with
//! `sync_metaloggers = 1` losing the master's disk loses no acknowledged operation.

use elkfs_proto::limits::ROOT_INO;
use elkfs_proto::meta::meta_client::MetaClient;
use elkfs_proto::meta::{
    Caller, EntryRequest, LookupRequest, MknodRequest, NodeKind, RenameRequest, SetAttrRequest,
};
use elkfs_proto::transport;
use elkfs_tests::fsutil::{fill_up, Rng, Tmpfs};
use elkfs_tests::metalogger::{dump, metarestore, set_master_option, Metalogger, Restore};
use elkfs_tests::{Cluster, Opts};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tonic::transport::Channel;

fn one_chunkserver() -> Cluster {
    Cluster::start(Opts {
        chunkservers: 1,
        root_goal: Some(1),
        ..Opts::default()
    })
}

/// Path → (mode, size, content hash or link target) of everything under `root`.
fn listing(root: &Path) -> BTreeMap<String, (u32, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readdir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let hash = if m.is_file() {
                fnv(&std::fs::read(&p).expect("read"))
            } else {
                0
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(rel, (m.mode(), m.size(), hash));
        }
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Create/write/rename/chmod/unlink through a FUSE mount.
fn fuse_storm(root: &Path, ops: usize) {
    let mut rng = Rng::with_seed(7);
    for d in 0..3 {
        std::fs::create_dir(root.join(format!("d{d}"))).expect("mkdir");
    }
    let mut live: Vec<std::path::PathBuf> = Vec::new();
    for i in 0..ops {
        match rng.below(6) {
            0 if !live.is_empty() => {
                let p = live.swap_remove(rng.below(live.len() as u64) as usize);
                std::fs::remove_file(&p).expect("unlink");
            }
            1 if !live.is_empty() => {
                let k = rng.below(live.len() as u64) as usize;
                let to = root.join(format!("d{}/renamed{i}", i % 3));
                std::fs::rename(&live[k], &to).expect("rename");
                live[k] = to;
            }
            2 if !live.is_empty() => {
                let p = &live[rng.below(live.len() as u64) as usize];
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .expect("chmod");
            }
            _ => {
                let p = root.join(format!("d{}/f{i}", i % 3));
                let len = 1 + rng.below(50_000) as usize;
                std::fs::write(&p, rng.bytes(len)).expect("write");
                live.push(p);
            }
        }
    }
}

/// Waits for `ml` to hold `version`, stops it and the master, and asserts both data
/// directories restore to the same metadata at `version`; returns the metalogger's restore.
fn assert_same_metadata(c: &Cluster, ml: &mut Metalogger, version: u64) -> Restore {
    ml.wait_version(version);
    c.stop_master();
    ml.stop();
    // The same metadata, byte for byte in the readable dump.
    let from_master = metarestore(&c.master_data_dir());
    let from_ml = metarestore(ml.data_dir());
    assert_eq!(
        from_ml.code,
        Some(0),
        "{}\n{}",
        from_ml.stdout,
        from_ml.stderr
    );
    assert!(
        from_ml.stdout.contains("continuity: ok"),
        "{}",
        from_ml.stdout
    );
    assert_eq!(from_master.code, Some(0), "{}", from_master.stdout);
    let (a, b) = (dump(&from_master.image()), dump(&from_ml.image()));
    assert!(a.contains(&format!("image version={version} ")), "{a}");
    assert!(a == b, "metalogger's metadata differs from the master's");
    from_ml
}

#[test]
fn metalogger_copy_restores_to_the_masters_tree() {
    let c = one_chunkserver();
    let mut ml = Metalogger::start(&c, "ml0");
    let before = {
        let m = c.mount();
        fuse_storm(m.path(), 300);
        listing(m.path())
    };
    let version = c.status().expect("status").metadata_version;
    let from_ml = assert_same_metadata(&c, &mut ml, version);

    // A master started from the metalogger's copy alone serves the same tree.
    std::fs::remove_dir_all(c.master_data_dir()).expect("rm master dir");
    std::fs::create_dir(c.master_data_dir()).expect("mkdir master dir");
    let image = from_ml.image();
    std::fs::copy(
        &image,
        c.master_data_dir().join(image.file_name().expect("name")),
    )
    .expect("copy image");
    c.start_master();
    let m = c.mount();
    assert_eq!(listing(m.path()), before);
}

/// What a name is after the acknowledged operations on it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Known {
    Present,
    Absent,
    /// Its last operation failed: it may or may not have happened.
    Unknown,
}

/// Mknod/rename/chmod/unlink over gRPC until `stop`, riding through master restarts.
/// Returns the acknowledged fate of every name.
async fn grpc_storm(addr: String, stop: Arc<AtomicBool>) -> HashMap<String, Known> {
    let ch = transport::channel(&addr).expect("channel");
    let mut meta: MetaClient<Channel> = transport::meta_client(ch);
    let mut model: HashMap<String, Known> = HashMap::new();
    let mut rng = Rng::with_seed(11);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let present: Vec<String> = model
            .iter()
            .filter(|(_, k)| **k == Known::Present)
            .map(|(n, _)| n.clone())
            .take(64)
            .collect();
        let op = if present.is_empty() { 0 } else { rng.below(5) };
        let pick = || present[(i as usize * 7919) % present.len()].clone();
        let ok = match op {
            1 => {
                let (from, to) = (pick(), format!("r{i}"));
                let ok = meta
                    .rename(RenameRequest {
                        parent: ROOT_INO,
                        name: from.clone().into_bytes(),
                        new_parent: ROOT_INO,
                        new_name: to.clone().into_bytes(),
                        flags: 0,
                    })
                    .await
                    .is_ok();
                model.insert(from, if ok { Known::Absent } else { Known::Unknown });
                model.insert(to, if ok { Known::Present } else { Known::Unknown });
                ok
            }
            2 => {
                let name = pick();
                let ino = meta
                    .lookup(LookupRequest {
                        parent: ROOT_INO,
                        name: name.clone().into_bytes(),
                    })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().attr)
                    .map(|a| a.ino);
                match ino {
                    Some(ino) => meta
                        .set_attr(SetAttrRequest {
                            ino,
                            mode: Some(0o600),
                            ..Default::default()
                        })
                        .await
                        .is_ok(),
                    None => false,
                }
            }
            3 => {
                let name = pick();
                let ok = meta
                    .unlink(EntryRequest {
                        parent: ROOT_INO,
                        name: name.clone().into_bytes(),
                        session: 0,
                    })
                    .await
                    .is_ok();
                model.insert(name, if ok { Known::Absent } else { Known::Unknown });
                ok
            }
            _ => {
                let name = format!("f{i}");
                let ok = meta
                    .mknod(MknodRequest {
                        parent: ROOT_INO,
                        name: name.clone().into_bytes(),
                        kind: NodeKind::File as i32,
                        mode: 0o644,
                        caller: Some(Caller { uid: 0, gid: 0 }),
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                model.insert(name, if ok { Known::Present } else { Known::Unknown });
                ok
            }
        };
        if !ok {
            // The master is down or restarting.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    model
}

fn start_storm(c: &Cluster) -> (Arc<AtomicBool>, thread::JoinHandle<HashMap<String, Known>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, s) = (c.master_addr(), stop.clone());
    let handle = thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(grpc_storm(addr, s))
    });
    (stop, handle)
}

#[test]
fn kill_9_of_metalogger_or_master_mid_storm_leaves_no_gap_and_no_duplicate() {
    let c = one_chunkserver();
    let mut ml = Metalogger::start(&c, "ml0");
    let (stop, storm) = start_storm(&c);
    thread::sleep(Duration::from_millis(1500));
    ml.kill();
    thread::sleep(Duration::from_millis(500));
    ml.restart();
    thread::sleep(Duration::from_millis(1500));
    c.kill_master();
    thread::sleep(Duration::from_millis(300));
    c.start_master();
    thread::sleep(Duration::from_millis(1500));
    ml.kill();
    ml.restart();
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    storm.join().expect("storm");

    let version = c.status().expect("status").metadata_version;
    assert!(version > 100, "storm made only {version} records");
    ml.wait_version(version);
    c.stop_master();
    ml.stop();
    let from_ml = metarestore(ml.data_dir());
    assert_eq!(
        from_ml.code,
        Some(0),
        "{}\n{}",
        from_ml.stdout,
        from_ml.stderr
    );
    assert!(
        from_ml.stdout.contains("continuity: ok"),
        "{}",
        from_ml.stdout
    );
    let from_master = metarestore(&c.master_data_dir());
    assert!(
        dump(&from_master.image()) == dump(&from_ml.image()),
        "metalogger's metadata differs from the master's:\n{}",
        from_ml.stdout
    );
}

/// Kill -9 the master mid-storm, destroy its data directory, restore it from the
/// metalogger; returns (acknowledged names checked, acknowledged outcomes lost).
fn master_host_lost(sync: bool) -> (usize, usize) {
    let c = one_chunkserver();
    if sync {
        set_master_option(&c, "sync_metaloggers = 1");
        c.stop_master();
    }
    let mut ml = Metalogger::start(&c, "ml0");
    if sync {
        c.start_master();
    }
    ml.wait_following();
    let (stop, storm) = start_storm(&c);
    thread::sleep(Duration::from_millis(3000));
    c.kill_master();
    stop.store(true, Ordering::Relaxed);
    let model = storm.join().expect("storm");
    // Everything the metalogger will ever get has arrived once the master is dead.
    thread::sleep(Duration::from_millis(300));
    ml.stop();

    std::fs::remove_dir_all(c.master_data_dir()).expect("rm master dir");
    std::fs::create_dir(c.master_data_dir()).expect("mkdir master dir");
    let restored = metarestore(ml.data_dir());
    assert_eq!(
        restored.code,
        Some(0),
        "{}\n{}",
        restored.stdout,
        restored.stderr
    );
    let image = restored.image();
    std::fs::copy(
        &image,
        c.master_data_dir().join(image.file_name().expect("name")),
    )
    .expect("copy image");
    c.start_master();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lost = rt.block_on(async {
        let mut meta = transport::meta_client(transport::channel(&c.master_addr()).expect("ch"));
        let mut lost = 0;
        for (name, known) in &model {
            let exists = meta
                .lookup(LookupRequest {
                    parent: ROOT_INO,
                    name: name.clone().into_bytes(),
                })
                .await
                .is_ok_and(|r| r.into_inner().attr.is_some());
            match known {
                Known::Present if !exists => lost += 1,
                Known::Absent if exists => lost += 1,
                _ => {}
            }
        }
        lost
    });
    let checked = model.values().filter(|k| **k != Known::Unknown).count();
    eprintln!(
        "sync_metaloggers={}: {checked} acknowledged outcomes, {lost} lost after restoring from the metalogger",
        sync as u8
    );
    (checked, lost)
}

#[test]
fn with_sync_metaloggers_losing_the_master_host_loses_nothing_acknowledged() {
    let (checked, lost) = master_host_lost(true);
    assert!(checked > 50, "only {checked} acknowledged operations");
    assert_eq!(lost, 0);
}

#[test]
fn without_sync_metaloggers_losing_the_master_host_is_reported() {
    let (checked, _lost) = master_host_lost(false);
    assert!(checked > 50, "only {checked} acknowledged operations");
}

/// A metalogger `ml0` of `c` with its data on a 16 MiB tmpfs (unmounted when dropped).
fn metalogger_on_small_disk(c: &Cluster) -> (Tmpfs, Metalogger) {
    let dir = c.dir().join("ml0");
    std::fs::create_dir(&dir).expect("metalogger dir");
    let disk = Tmpfs::mount(&dir, "16m");
    let mut ml = Metalogger::start(c, "ml0");
    ml.wait_following();
    (disk, ml)
}

/// `ml`, whose disk is full, stays up without all records up to `version`; once
/// `ballast` is removed it catches up to a copy equal to the master's.
fn assert_paused_then_caught_up(c: &Cluster, ml: &mut Metalogger, version: u64, ballast: &Path) {
    thread::sleep(Duration::from_secs(2));
    ml.assert_alive("its disk is full");
    assert!(
        ml.version() < version,
        "a full metalogger took every record"
    );
    std::fs::remove_file(ballast).expect("removing the ballast");
    assert_same_metadata(c, ml, version);
}

/// A metalogger whose disk fills up stops taking records (it stays up; the master goes
/// on) and catches up by itself once space is freed, to a copy equal to the master's.
#[test]
fn a_full_metalogger_disk_pauses_it_until_space_is_freed() {
    let c = one_chunkserver();
    let (_disk, mut ml) = metalogger_on_small_disk(&c);
    let dir = ml.data_dir().to_owned();
    let ballast = fill_up(&dir);
    let log = c.log_path("ml0");
    let m = c.mount();
    let long = "n".repeat(200);
    let create = |from: usize, n: usize| {
        for i in from..from + n {
            std::fs::File::create(m.join(format!("{i:06}-{long}")))
                .expect("create while the metalogger's disk is full");
        }
        from + n
    };
    let mut created = 0;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("disk full: under 1 MiB of changelog space left")
    {
        assert!(created < 100_000, "the metalogger never ran out of room");
        created = create(created, 500);
    }
    // More records than the 1 MiB left: a metalogger that kept taking them would fail.
    create(created, 4000);
    let version = c.status().expect("status").metadata_version;
    drop(m);
    assert_paused_then_caught_up(&c, &mut ml, version, &ballast);
}

/// A metalogger that comes back far behind, to a disk with only its changelog's reserve
/// left, takes the records it missed in messages small enough for that reserve: it pauses
/// at "disk full" instead of failing a write and exiting, and catches up once space is
/// freed. (1,100 symlinks with 4 KiB targets are 4.6 MB of records, over a reserve of at
/// most 4 MiB.)
#[test]
fn a_metalogger_far_behind_takes_its_backlog_in_pieces_that_fit_its_disk() {
    let c = one_chunkserver();
    let (_disk, mut ml) = metalogger_on_small_disk(&c);
    let dir = ml.data_dir().to_owned();
    ml.signal(libc::SIGSTOP);
    let m = c.mount();
    let target = "t/".repeat(2047);
    for i in 0..1100 {
        std::os::unix::fs::symlink(&target, m.join(format!("link{i:04}")))
            .expect("symlink while the metalogger hangs");
    }
    let version = c.status().expect("status").metadata_version;
    let ballast = fill_up(&dir);
    ml.signal(libc::SIGCONT);
    let log = c.log_path("ml0");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("disk full: under 1 MiB of changelog space left")
    {
        ml.assert_alive("catching up onto a full disk");
        assert!(
            std::time::Instant::now() < deadline,
            "the metalogger never reported its disk full"
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(m);
    assert_paused_then_caught_up(&c, &mut ml, version, &ballast);
}
