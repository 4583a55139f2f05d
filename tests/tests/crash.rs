//! Master crashes: every acknowledged operation survives kill -9, and a torn changelog tail
//! costs at most the torn record.

use elkfs_tests::fsutil::Rng;
use elkfs_tests::{Cluster, Opts};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// What a name must be after the crash, from acknowledged operations only.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    File(Vec<u8>),
    Absent,
    /// The last operation on this name failed: it may or may not have happened.
    Unknown,
}

/// One storm worker in its own directory: create+write+fsync, rename, unlink, repeated.
fn storm(dir: PathBuf, seed: u64, stop: Arc<AtomicBool>) -> HashMap<String, Expect> {
    let mut rng = Rng::with_seed(seed);
    let mut model: HashMap<String, Expect> = HashMap::new();
    let mut next = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let live: Vec<String> = model
            .iter()
            .filter(|(_, e)| matches!(e, Expect::File(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let op = if live.is_empty() { 0 } else { rng.below(4) };
        match op {
            0 | 1 => {
                let name = format!("f{next}");
                next += 1;
                let len = 1 + rng.below(20_000) as usize;
                let data = rng.bytes(len);
                let res = File::create(dir.join(&name)).and_then(|mut f| {
                    f.write_all(&data)?;
                    f.sync_all()
                });
                model.insert(
                    name,
                    if res.is_ok() {
                        Expect::File(data)
                    } else {
                        Expect::Unknown
                    },
                );
            }
            2 => {
                let from = &live[rng.below(live.len() as u64) as usize];
                let to = format!("r{next}");
                next += 1;
                let content = model[from].clone();
                if fs::rename(dir.join(from), dir.join(&to)).is_ok() {
                    model.insert(from.clone(), Expect::Absent);
                    model.insert(to, content);
                } else {
                    model.insert(from.clone(), Expect::Unknown);
                    model.insert(to, Expect::Unknown);
                }
            }
            _ => {
                let victim = &live[rng.below(live.len() as u64) as usize];
                let outcome = match fs::remove_file(dir.join(victim)) {
                    Ok(()) => Expect::Absent,
                    Err(_) => Expect::Unknown,
                };
                model.insert(victim.clone(), outcome);
            }
        }
    }
    model
}

#[test]
fn acked_ops_survive_master_kill() {
    let c = Cluster::start(Opts::default());
    let mut rng = Rng::new("crash storm");
    let m = c.mount();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let workers = 4;
    for w in 0..workers {
        let dir = m.join(format!("w{w}"));
        fs::create_dir(&dir).expect("mkdir worker dir");
        let (stop, tx, seed) = (stop.clone(), done_tx.clone(), rng.next_u64());
        thread::spawn(move || {
            let model = storm(dir.clone(), seed, stop);
            let _ = tx.send((dir, model));
        });
    }
    thread::sleep(Duration::from_secs(3));
    c.kill_master();
    thread::sleep(Duration::from_millis(500));
    c.start_master();
    // Keep going for a while against the restarted master (the mount reconnects).
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut models = Vec::new();
    for _ in 0..workers {
        // Operations may hang only while the master is away; a worker stuck past this
        // means the mount never reconnected.
        let got = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("storm worker stuck after the master came back");
        models.push(got);
    }

    // A fresh mount, so nothing comes from the old mount's caches.
    let fresh = c.mount();
    let mut acked = 0;
    for (dir, model) in &models {
        let dir = fresh.join(dir.file_name().expect("worker dir name"));
        for (name, expect) in model {
            let path = dir.join(name);
            match expect {
                Expect::File(data) => {
                    acked += 1;
                    let got = fs::read(&path)
                        .unwrap_or_else(|e| panic!("acked file {} lost: {e}", path.display()));
                    assert!(
                        got == *data,
                        "acked file {} has wrong content",
                        path.display()
                    );
                }
                Expect::Absent => assert!(
                    !path.exists(),
                    "{} was removed (acked) but is back",
                    path.display()
                ),
                Expect::Unknown => {}
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

#[test]
fn torn_changelog_tail() {
    let c = Cluster::start(Opts {
        chunkservers: 2,
        ..Opts::default()
    });
    let damages: [(&str, fn(&Path)); 2] = [
        ("truncated", |p| {
            let len = fs::metadata(p).expect("stat changelog").len();
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
            let at = bytes
                .len()
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
