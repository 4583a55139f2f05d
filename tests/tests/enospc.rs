//! Full disks: a chunkserver below its reserve takes no new data, and a master whose disk
//! is full takes no metadata changes; both with a clean ENOSPC, nothing lost, and back to
//! normal by themselves once there is space again.

use elkfs_tests::fsutil::{assert_same_bytes, cstr, fill_up, Rng, Tmpfs};
use elkfs_tests::{Cluster, Opts};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn full_chunkserver_gives_enospc_and_keeps_data() {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    let mut rng = Rng::new("enospc");
    let existing = rng.bytes(3 << 20);
    {
        let m = c.mount();
        write_file(&m.join("existing"), &existing).expect("write with normal reserve");
    }

    // Reserve more than the disk has free: the server must refuse every new chunk.
    let dir = cstr(&c.chunkserver_data_dir(0));
    // SAFETY: zeroed statvfs is a valid out-parameter; dir is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(dir.as_ptr(), &mut st) },
        0,
        "statvfs"
    );
    let free = st.f_bavail * st.f_frsize;
    c.stop_chunkserver(0);
    c.set_reserve_bytes(0, free.saturating_mul(2).saturating_add(1 << 40));
    c.start_chunkserver(0);

    let m = c.mount();
    let err = write_file(&m.join("new"), &rng.bytes(1 << 20))
        .expect_err("writing a new file to a full cluster must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "error: {err}");
    let got = fs::read(m.join("existing")).expect("existing file still readable");
    assert_same_bytes(&got, &existing, "existing file after ENOSPC");
    drop(m);

    // Space back: writes work again.
    c.stop_chunkserver(0);
    c.set_reserve_bytes(0, Opts::default().reserve_bytes);
    c.start_chunkserver(0);
    let m = c.mount();
    let again = rng.bytes(1 << 20);
    write_file(&m.join("after"), &again).expect("write once space is back");
    assert_same_bytes(
        &fs::read(m.join("after")).expect("read"),
        &again,
        "file written after ENOSPC",
    );
}

/// Creates files named `{prefix}{i}` (long names, so records are large) until one fails;
/// returns the names created and the failure.
fn create_until_error(dir: &Path, prefix: &str, limit: usize) -> (Vec<OsString>, std::io::Error) {
    let mut created = Vec::new();
    for i in 0..limit {
        let name = OsString::from(format!("{prefix}{i:06}-{}", "n".repeat(180)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(&name))
        {
            Ok(_) => created.push(name),
            Err(e) => return (created, e),
        }
    }
    panic!("{limit} creates with {prefix} and none failed");
}

fn names(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

/// A running cluster of one chunkserver whose master keeps its data on a 24 MiB tmpfs.
fn master_on_small_disk(master_config: &str) -> (Cluster, Tmpfs) {
    let c = Cluster::create(Opts {
        chunkservers: 1,
        master_config: master_config.to_owned(),
        ..Opts::default()
    });
    let disk = Tmpfs::mount(&c.master_data_dir(), "24m");
    c.start_all();
    (c, disk)
}

#[test]
fn full_master_disk_refuses_changes_then_takes_them_again() {
    // Images and rotations are attempted while the disk is full, too.
    let (c, _disk) = master_on_small_disk("snapshot_interval_secs = 1\n");
    let m = c.mount();
    let dir = m.join("d");
    fs::create_dir(&dir).expect("mkdir");

    let ballast = fill_up(&c.master_data_dir());
    // Four writers at once, so refusals meet changes still in flight.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || create_until_error(&dir, &format!("w{t}-"), 200_000))
        })
        .collect();
    let mut acked = BTreeSet::new();
    for w in writers {
        let (created, err) = w.join().expect("writer thread");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOSPC),
            "create on a full master: {err}"
        );
        acked.extend(created);
    }
    assert!(!acked.is_empty(), "the reserve took some changes first");
    let err = fs::create_dir(dir.join("another")).expect_err("mkdir on a full master");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "mkdir: {err}");

    // Reads go on, and show exactly the acknowledged changes.
    assert_eq!(
        names(&dir),
        acked,
        "listing while the master's disk is full"
    );
    let log = fs::read_to_string(c.log_path("master")).expect("master log");
    assert!(
        log.contains("disk full: under 1 MiB of changelog space left"),
        "master log:\n{log}"
    );
    // A mount started now works too: reads need no record.
    let late = c.mount();
    assert_eq!(
        names(&late.join("d")),
        acked,
        "listing through a mount started while the master's disk is full"
    );
    drop(late);

    // Space back: changes are taken again, with no restart.
    fs::remove_file(&ballast).expect("removing the ballast");
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = dir.join("after");
    while let Err(e) = File::create_new(&after) {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "create once space is back: {e}"
        );
        assert!(
            Instant::now() < deadline,
            "changes still refused 20 s after space came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    acked.insert("after".into());
    drop(m);

    // Every acknowledged change is durable, and no refused one happened.
    c.kill_master();
    c.start_master();
    let m = c.mount();
    assert_eq!(
        names(&m.join("d")),
        acked,
        "listing after kill -9 and restart"
    );
    let log = fs::read_to_string(c.log_path("master")).expect("master log");
    assert!(!log.contains("panicked"), "master log:\n{log}");
}

/// A file unlinked while open whose last close comes while the master's disk is full is
/// purged once space is back, with no restart: its chunks do not stay allocated.
#[test]
fn an_orphan_closed_on_a_full_master_disk_is_purged_once_space_is_back() {
    let (c, _disk) = master_on_small_disk("");
    let m = c.mount();
    let dir = m.join("d");
    fs::create_dir(&dir).expect("mkdir");
    let path = m.join("held");
    let mut held = File::create(&path).expect("create");
    held.write_all(&[7u8; 1 << 16]).expect("write");
    held.sync_all().expect("fsync");
    fs::remove_file(&path).expect("unlink while open");
    let chunks = c.status().expect("status").chunks;
    assert_eq!(chunks, 1, "the open file's chunk");

    let ballast = fill_up(&c.master_data_dir());
    let (_, err) = create_until_error(&dir, "f", 200_000);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "create: {err}");
    // The last close: its purge is refused.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(c.log_path("master"))
        .expect("master log")
        .contains("purging an unlinked inode failed")
    {
        assert!(Instant::now() < deadline, "no purge was tried");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.status().expect("status").chunks, chunks);

    fs::remove_file(&ballast).expect("removing the ballast");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.status().expect("status").chunks == chunks {
        assert!(
            Instant::now() < deadline,
            "the orphan still holds its chunk 20 s after space came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.status().expect("status").chunks, 0);
}
