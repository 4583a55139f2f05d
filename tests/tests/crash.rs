//! Master crashes: every acknowledged operation survives kill -9, a torn changelog tail
//! costs at most the torn record, and a changelog write that fails stops the master.

use elkfs_tests::changelog::records_end;
use elkfs_tests::fsutil::Rng;
use elkfs_tests::{Cluster, Opts};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The storm workers: `elkfs-storm` processes (see src/bin/elkfs-storm.rs). Not threads of
/// this process: it restarts the master with fork+exec, and exec would close the files they
/// hold open on the mount, each close a FUSE FLUSH waiting for the master the child is about
/// to become — until the mount's write retries give up, minutes later.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn_worker(dir: &Path, seed: u64, stop: &Path, model: &Path, log: &Path) -> Child {
    let log = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elkfs-storm"));
    cmd.arg(dir)
        .arg(seed.to_string())
        .arg(stop)
        .arg(model)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log handle"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe. The worker dies with the spawning (test) thread,
    // even when the test process is SIGKILLed.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("starting elkfs-storm")
}

#[test]
fn acked_ops_survive_master_kill() {
    let c = Cluster::start(Opts::default());
    let mut rng = Rng::new("crash storm");
    let m = c.mount();
    let stop = c.dir().join("storm.stop");
    let workers = 4;
    let mut dirs = Vec::new();
    let mut running = Workers(Vec::new());
    for w in 0..workers {
        let dir = m.join(format!("w{w}"));
        fs::create_dir(&dir).expect("mkdir worker dir");
        let model = c.dir().join(format!("storm-w{w}.model"));
        let log = c.log_path(&format!("storm-w{w}"));
        let seed = rng.next_u64();
        running
            .0
            .push(spawn_worker(&dir, seed, &stop, &model, &log));
        dirs.push((dir, model, log));
    }
    thread::sleep(Duration::from_secs(3));
    c.kill_master();
    thread::sleep(Duration::from_millis(500));
    c.start_master();
    // Keep going for a while against the restarted master (the mount reconnects).
    thread::sleep(Duration::from_secs(2));
    File::create(&stop).expect("creating the stop file");
    // Operations may hang only while the master is away; a worker stuck past this means
    // the mount never reconnected.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (child, (_, _, log)) in running.0.iter_mut().zip(&dirs) {
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for a storm worker") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "storm worker stuck after the master came back"
            );
            thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "storm worker failed ({status}); {}:\n{}",
            log.display(),
            fs::read_to_string(log).unwrap_or_default()
        );
    }

    // A fresh mount, so nothing comes from the old mount's caches.
    let fresh = c.mount();
    let mut acked = 0;
    for (dir, model, _) in &dirs {
        let dir = fresh.join(dir.file_name().expect("worker dir name"));
        let text = fs::read_to_string(model)
            .unwrap_or_else(|e| panic!("reading {}: {e}", model.display()));
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let path = dir.join(fields.get(1).copied().unwrap_or_default());
            match fields[..] {
                ["file", _, len, crc] => {
                    acked += 1;
                    let got = fs::read(&path)
                        .unwrap_or_else(|e| panic!("acked file {} lost: {e}", path.display()));
                    assert!(
                        got.len().to_string() == len
                            && format!("{:08x}", crc32fast::hash(&got)) == crc,
                        "acked file {} has wrong content",
                        path.display()
                    );
                }
                ["absent", _] => assert!(
                    !path.exists(),
                    "{} was removed (acked) but is back",
                    path.display()
                ),
                ["unknown", _] => {}
                _ => panic!("bad line in {}: {line:?}", model.display()),
            }
        }
    }
    assert!(acked > 0, "the storm acknowledged no file at all");
    check_tree(fresh.path());
}

/// Every directory's link count matches its subdirectories, every file's link count
/// matches the names pointing at it, and every file reads back at its full size.
fn check_tree(root: &Path) {
    let mut names_per_inode: HashMap<u64, (u64, Vec<PathBuf>)> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut subdirs = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        {
            let entry = entry.expect("dirent");
            let path = entry.path();
            let md = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            if md.is_dir() {
                subdirs += 1;
                stack.push(path);
            } else {
                if md.is_file() {
                    let data =
                        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                    assert_eq!(
                        data.len() as u64,
                        md.len(),
                        "{} reads short",
                        path.display()
                    );
                }
                let slot = names_per_inode
                    .entry(md.ino())
                    .or_insert((md.nlink(), Vec::new()));
                slot.1.push(path);
            }
        }
        let nlink = fs::metadata(&dir).expect("stat dir").nlink();
        assert_eq!(
            nlink,
            2 + subdirs,
            "{} nlink vs subdirectories",
            dir.display()
        );
    }
    for (ino, (nlink, paths)) in names_per_inode {
        assert_eq!(
            nlink,
            paths.len() as u64,
            "inode {ino} nlink vs names {paths:?}"
        );
    }
}

/// The newest `changelog.<N>.elk` in the master's data directory.
fn newest_changelog(dir: &Path) -> PathBuf {
    let mut logs: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("reading master data dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let n = name
                .strip_prefix("changelog.")?
                .strip_suffix(".elk")?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    logs.sort();
    let listing: Vec<_> = fs::read_dir(dir)
        .expect("readdir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    logs.pop()
        .unwrap_or_else(|| panic!("no changelog.<N>.elk in {}: {listing:?}", dir.display()))
        .1
}

fn create_files(root: &Path, prefix: &str, n: usize) {
    for i in 0..n {
        fs::write(root.join(format!("{prefix}{i}")), prefix.as_bytes()).expect("create");
    }
}

fn assert_files(root: &Path, prefix: &str, n: usize, when: &str) {
    for i in 0..n {
        let p = root.join(format!("{prefix}{i}"));
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{when}: {} missing: {e}", p.display()));
        assert_eq!(got, prefix.as_bytes(), "{when}: {}", p.display());
    }
}

/// `path` made immutable (`chattr +i`) until dropped: every write to it fails, even
/// through a file descriptor opened before.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        chattr(path, "+i");
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr(&self.0, "-i");
    }
}

fn chattr(path: &Path, flag: &str) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("running chattr");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

/// A changelog write that fails (the file made immutable under the master) stops the
/// master rather than let it serve changes that are not on disk. Restarted, it has every
/// acknowledged change, and the change whose write failed exactly if it was acknowledged
/// (the mount retries it once the master is back, if the master died before answering).
#[test]
fn a_failed_changelog_write_stops_the_master() {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    let m = c.mount();
    create_files(m.path(), "before", 20);
    let frozen = Immutable::set(&newest_changelog(&c.master_data_dir()));
    let after = m.join("after");
    let create = {
        let after = after.clone();
        thread::spawn(move || File::create_new(after).map(drop))
    };
    let status = c.wait_master_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "master exit: {status}");
    let log = fs::read_to_string(c.log_path("master")).expect("master log");
    assert!(
        log.contains("changelog write failed: exiting"),
        "master log:\n{log}"
    );

    drop(frozen);
    c.start_master();
    let created = create.join().expect("create thread");
    assert_files(m.path(), "before", 20, "after the restart");
    assert_eq!(
        after.exists(),
        created.is_ok(),
        "the failed write's create returned {created:?}"
    );
}

/// A named way to damage a changelog file.
type Damage = (&'static str, fn(&Path));

#[test]
fn torn_changelog_tail() {
    let c = Cluster::start(Opts {
        chunkservers: 2,
        ..Opts::default()
    });
    let damages: [Damage; 2] = [
        ("truncated", |p| {
            let len = records_end(p);
            assert!(len > 3, "changelog too short to tear");
            OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open")
                .set_len(len - 3)
                .expect("truncate");
        }),
        ("flipped", |p| {
            let mut bytes = fs::read(p).expect("read changelog");
            let at = (records_end(p) as usize)
                .checked_sub(2)
                .expect("changelog too short to damage");
            bytes[at] ^= 0xff;
            fs::write(p, bytes).expect("write changelog");
        }),
    ];
    for (round, (how, damage)) in damages.iter().enumerate() {
        let prefix = format!("{how}-");
        {
            let m = c.mount();
            create_files(m.path(), &prefix, 20);
            // The newest record belongs to this marker, which may be lost with the tail.
            fs::write(m.join(format!("marker-{how}")), b"").expect("marker");
        }
        c.kill_master();
        damage(&newest_changelog(&c.master_data_dir()));
        c.start_master();
        let said = fs::read_to_string(c.log_path("master")).expect("master log");
        assert_eq!(
            said.matches("changelog replay stopped early").count(),
            round + 1,
            "the master says what it dropped ({how})"
        );
        let m = c.mount();
        assert_files(m.path(), &prefix, 20, &format!("{how} changelog tail"));
        for earlier in &damages[..round] {
            assert_files(m.path(), &format!("{}-", earlier.0), 20, "earlier round");
        }
        // The master keeps working after dropping the torn record.
        fs::write(m.join(format!("after-{how}")), b"ok").expect("write after recovery");
    }
    c.kill_master();
    c.start_master();
    let m = c.mount();
    for (how, _) in &damages {
        assert_eq!(
            fs::read(m.join(format!("after-{how}"))).expect("read"),
            b"ok"
        );
    }
}
