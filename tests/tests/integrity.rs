//! Data integrity: what is written is what is read, across chunk boundaries, holes,
//! overwrites, remounts and restarts of every daemon.

use elkfs_tests::copies::{file_info, ino};
use elkfs_tests::fsutil::{assert_same_bytes, Rng};
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * MIB;

/// Regenerating content from a seed keeps only one big file in memory at a time.
fn content(seed: u64, len: u64) -> Vec<u8> {
    Rng::with_seed(seed).bytes(len as usize)
}

/// Writes `data` in pieces of random size, so writes straddle blocks and chunks unaligned.
fn write_in_pieces(path: &Path, data: &[u8], rng: &mut Rng) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut at = 0;
    while at < data.len() {
        let n = (1 + rng.below(3 * MIB) as usize).min(data.len() - at);
        f.write_all(&data[at..at + n]).expect("write piece");
        at += n;
    }
    f.sync_all().expect("fsync");
}

/// The file's size as its open handle reports it, then its bytes, are `want`.
fn verify(path: &Path, want: &[u8], when: &str) {
    let mut got = Vec::with_capacity(want.len());
    let len = File::open(path)
        .and_then(|mut f| Ok((f.metadata()?.len(), f.read_to_end(&mut got)?)))
        .unwrap_or_else(|e| panic!("{when}: reading {}: {e}", path.display()))
        .0;
    assert_eq!(len, want.len() as u64, "{when}: size of {}", path.display());
    assert_same_bytes(&got, want, &format!("{when}: {}", path.display()));
}

#[test]
fn sizes_survive_remount_and_restart() {
    let c = Cluster::start(Opts::default());
    let mut rng = Rng::new("sizes");
    let sizes = [
        0,
        1,
        65535,
        65536,
        65537,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        200 * MIB,
    ];
    let files: Vec<(String, u64, u64)> = sizes
        .iter()
        .map(|&len| (format!("size-{len}"), rng.next_u64(), len))
        .collect();
    let check_all = |root: &Path, when: &str| {
        for (name, seed, len) in &files {
            verify(&root.join(name), &content(*seed, *len), when);
            assert_eq!(fs::metadata(root.join(name)).expect("stat").len(), *len);
        }
    };
    {
        let m = c.mount();
        for (name, seed, len) in &files {
            write_in_pieces(&m.join(name), &content(*seed, *len), &mut rng);
        }
        check_all(m.path(), "after writing");
    }
    {
        let m = c.mount();
        check_all(m.path(), "after remount");
    }
    c.stop_all();
    c.start_all();
    let m = c.mount();
    check_all(m.path(), "after restarting every daemon");
}

#[test]
fn random_overwrites_and_holes() {
    let c = Cluster::start(Opts::default());
    let mut rng = Rng::new("overwrites");
    // Spans three chunks; a model buffer says what every byte must be.
    let limit = 2 * CHUNK + 8 * MIB;
    let mut model: Vec<u8> = Vec::new();
    let m = c.mount();
    let path = m.join("churn");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    for round in 0..120 {
        let op = rng.below(10);
        if op == 0 && !model.is_empty() {
            // Truncate down or up.
            let len = rng.below(model.len() as u64 + 4 * MIB);
            f.set_len(len).expect("ftruncate");
            model.resize(len as usize, 0);
            continue;
        }
        let len = match rng.below(4) {
            0 => 1 + rng.below(16),
            1 => 1 + rng.below(200_000),
            _ => 1 + rng.below(2 * MIB),
        };
        // Favour offsets around block and chunk boundaries.
        let offset = match rng.below(3) {
            0 => {
                let boundary = (1 + rng.below(2)) * CHUNK;
                boundary.saturating_sub(rng.below(len + 1)) + rng.below(2)
            }
            1 => rng.below(limit / 65536) * 65536 + rng.below(3),
            _ => rng.below(limit - len),
        };
        let data = rng.bytes(len as usize);
        f.write_all_at(&data, offset).expect("pwrite");
        let end = (offset + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(&data);
        if round % 40 == 39 {
            f.sync_all().expect("fsync");
            verify(&path, &model, &format!("round {round}"));
        }
    }
    f.sync_all().expect("fsync");
    drop(f);
    verify(&path, &model, "after the last write");
    m.unmount();
    {
        let m = c.mount();
        verify(&m.join("churn"), &model, "after remount");
    }
    c.stop_all();
    c.start_all();
    let m = c.mount();
    verify(&m.join("churn"), &model, "after restarting every daemon");
}

/// An fsync through a handle that wrote nothing (the writes came through one closed since,
/// as `sync FILE` does it, or from another mount) syncs every chunk of the file: holes
/// are skipped, and the file is intact afterwards.
#[test]
fn fsync_through_a_later_handle() {
    let c = Cluster::start(Opts::default());
    let a = c.mount();
    let b = c.mount();
    let mut rng = Rng::new("later-fsync");
    let head = rng.bytes(MIB as usize);
    let tail = rng.bytes(1000);
    let path = a.join("written-then-closed");
    {
        let f = File::create(&path).expect("create");
        f.write_all_at(&head, 0).expect("write chunk 0");
        f.write_all_at(&tail, 2 * CHUNK + 5).expect("write chunk 2");
    }
    File::open(&path)
        .and_then(|f| f.sync_all())
        .expect("fsync through a read-only handle");
    File::open(b.join("written-then-closed"))
        .and_then(|f| f.sync_data())
        .expect("fdatasync on another mount");
    let mut want = head;
    want.resize((2 * CHUNK + 5) as usize, 0);
    want.extend_from_slice(&tail);
    verify(&path, &want, "after the fsyncs");
}

/// A write soon after an fsync joins the chunk's lease at its version (no bump: a chunk
/// order and three syncs saved); once the lease has lapsed, the next write bumps it. Every
/// copy follows, and the bytes read back whole.
#[test]
fn writes_soon_after_an_fsync_keep_the_version() {
    let c = Cluster::start(Opts::default());
    let m = c.mount();
    let path = m.join("appended");
    let mut rng = Rng::new("linger");
    let mut want = Vec::new();
    let f = File::create(&path).expect("create");
    let version = |when: &str| {
        let info = file_info(&c.master_addr(), ino(&path)).expect("fileinfo");
        let chunk = &info.chunks[0];
        assert!(!chunk.copies.is_empty(), "{when}: no copies");
        for copy in &chunk.copies {
            assert_eq!(copy.version, chunk.version, "{when}: copy on {}", copy.addr);
        }
        chunk.version
    };
    let mut append = |when: &str| {
        let piece = rng.bytes(100_000);
        f.write_all_at(&piece, want.len() as u64).expect(when);
        f.sync_all().expect(when);
        want.extend_from_slice(&piece);
    };
    append("first write");
    let first = version("after the first fsync");
    append("second write");
    assert_eq!(version("right after the second fsync"), first);
    // The lease lingers 2 s; the master drops lapsed ones every second.
    std::thread::sleep(Duration::from_secs(4));
    append("write after the lease lapsed");
    assert_eq!(version("after the lease lapsed"), first + 1);
    verify(&path, &want, "after three appends");
}

#[test]
fn two_mounts_close_to_open() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let c = Cluster::start(Opts::default());
    let mut rng = Rng::new("close-to-open");
    let a = c.mount();
    // B's kernel keeps names and attributes for a minute: what B sees after an open must
    // not depend on them running out.
    let b = c.mount_with(&["entry_timeout=60", "attr_timeout=60"]);

    // A new file written and closed on A reads back whole on B.
    let first = rng.bytes(3 * MIB as usize);
    fs::write(a.join("shared"), &first).expect("write on A");
    verify(&b.join("shared"), &first, "B after A closed");

    // In-place overwrite of the same length: B's open must not serve its stale pages.
    let second = rng.bytes(3 * MIB as usize);
    OpenOptions::new()
        .write(true)
        .open(a.join("shared"))
        .and_then(|mut f| f.write_all(&second))
        .expect("overwrite on A");
    verify(&b.join("shared"), &second, "B after A overwrote");

    // Changes on one mount right after the other wrote the file and looked at it: that
    // one's kernel then holds the size for attr_timeout (1 s), and its next open must
    // neither read nor append by that old size.
    let wrote_and_looked = |path: &Path, data: &[u8]| {
        fs::write(path, data).expect("write");
        fs::metadata(path).expect("stat");
    };
    let mut want = rng.bytes(MIB as usize);
    wrote_and_looked(&b.join("shared"), &want);
    let more = rng.bytes(MIB as usize);
    OpenOptions::new()
        .write(true)
        .open(a.join("shared"))
        .and_then(|f| f.write_all_at(&more, MIB))
        .expect("write past the end on A");
    want.extend_from_slice(&more);
    verify(&b.join("shared"), &want, "B after A grew the file");

    wrote_and_looked(&a.join("shared"), &want);
    want.truncate((MIB / 2) as usize);
    fs::write(b.join("shared"), &want).expect("shorter rewrite on B");
    OpenOptions::new()
        .append(true)
        .open(a.join("shared"))
        .and_then(|mut f| f.write_all(&more))
        .expect("append on A");
    want.extend_from_slice(&more);
    verify(&b.join("shared"), &want, "B after A appended");

    wrote_and_looked(&a.join("shared"), &want);
    OpenOptions::new()
        .write(true)
        .open(b.join("shared"))
        .and_then(|f| f.set_len(MIB / 3))
        .expect("truncate on B");
    want.truncate((MIB / 3) as usize);
    verify(&a.join("shared"), &want, "A after B truncated");

    // A name the other mount replaced (saving by rename) opens as the new file, though
    // B's kernel holds the name with the old node, which B's own close of a moment ago
    // may still keep alive on the master. Allow for the rename's notice to travel; never
    // for the old content.
    for round in 0..10 {
        let (old, new) = (format!("old {round}"), format!("new {round}"));
        fs::write(a.join("doc"), &old).expect("write on A");
        assert_eq!(fs::read(b.join("doc")).expect("read on B"), old.as_bytes());
        fs::write(a.join("doc.tmp"), &new).expect("write on A");
        fs::rename(a.join("doc.tmp"), a.join("doc")).expect("rename on A");
        c.wait_for(
            "B to open the new doc",
            Duration::from_secs(3),
            || match fs::read(b.join("doc")) {
                Ok(got) => {
                    assert_ne!(
                        got,
                        old.as_bytes(),
                        "round {round}: B read the replaced file"
                    );
                    got == new.as_bytes()
                }
                Err(_) => false,
            },
        );
    }

    // Attributes too: B's kernel lets go of a size and a mode A changed, with no open.
    fs::write(a.join("attrs"), b"1").expect("write on A");
    assert_eq!(fs::metadata(b.join("attrs")).expect("stat on B").len(), 1);
    fs::write(a.join("attrs"), b"12345").expect("rewrite on A");
    fs::set_permissions(a.join("attrs"), fs::Permissions::from_mode(0o600)).expect("chmod on A");
    c.wait_for("B to see A's size and mode", Duration::from_secs(3), || {
        fs::metadata(b.join("attrs")).is_ok_and(|m| m.len() == 5 && m.mode() & 0o7777 == 0o600)
    });

    // A name removed on A while its node lives on under another name: B's kernel must
    // let the name go, or B's next create by that name would write into A's file.
    fs::write(a.join("kept"), b"kept").expect("write on A");
    fs::hard_link(a.join("kept"), a.join("alias")).expect("link on A");
    assert_eq!(fs::read(b.join("alias")).expect("read on B"), b"kept");
    fs::remove_file(a.join("alias")).expect("unlink on A");
    c.wait_for(
        "B to let the removed name go",
        Duration::from_secs(3),
        || !b.join("alias").exists(),
    );
    fs::write(b.join("alias"), b"new").expect("create on B");
    assert_eq!(fs::read(a.join("kept")).expect("read on A"), b"kept");
    assert_eq!(fs::read(a.join("alias")).expect("read on A"), b"new");

    // And back: B's changes are visible on A.
    fs::write(b.join("from-b"), b"written on B").expect("write on B");
    assert_eq!(
        fs::read(a.join("from-b")).expect("read on A"),
        b"written on B"
    );
    fs::remove_file(b.join("from-b")).expect("unlink on B");
    c.wait_for("A to see B's unlink", Duration::from_secs(3), || {
        !a.join("from-b").exists()
    });
}

/// A write in flight on one mount while another truncates its chunk away: the writer
/// gets EIO, or the file holds its data, or nothing (the truncation came after the write).
/// Never a success with a hole in the data's place, never ENOENT.
#[test]
fn a_write_truncated_away_meanwhile_fails_or_lands() {
    let c = Cluster::start(Opts::default());
    let a = c.mount();
    let b = c.mount();
    let data = content(11, 4 * MIB);
    let mut f = File::create(a.join("cut")).expect("create on A");
    f.write_all(&data).expect("write on A");
    // Long enough for the pieces to reach the chunkserver under A's lease.
    std::thread::sleep(Duration::from_millis(500));
    OpenOptions::new()
        .write(true)
        .open(b.join("cut"))
        .and_then(|f| f.set_len(0))
        .expect("truncate on B");
    match f.sync_all() {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "A's fsync: {e}"),
        Ok(()) => {
            let got = fs::read(a.join("cut")).expect("read on A");
            assert!(
                got.is_empty() || got == data,
                "after A's fsync: {} bytes that are not A's data",
                got.len()
            );
        }
    }
}

/// The mounts' entry caches (answers from the master's replies, kept true by its notices)
/// with the kernel's own caches off: every change one mount makes shows on the other,
/// including in a directory the other created and so answers absent names for itself.
#[test]
fn cached_names_and_attributes_follow_the_other_mount() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let c = Cluster::start(Opts::default());
    let no_kernel_cache = ["entry_timeout=0", "attr_timeout=0"];
    let a = c.mount_with(&no_kernel_cache);
    let b = c.mount_with(&no_kernel_cache);
    // Notices travel beside the replies; allow for a loaded machine, never for a miss:
    // a mount that missed one would keep its answer for good.
    let eventually = |what: &str, ok: &dyn Fn() -> bool| {
        c.wait_for(what, Duration::from_secs(3), ok);
    };

    fs::create_dir(a.join("d")).expect("mkdir on A");
    fs::write(a.join("d/x"), b"x").expect("create on A");
    assert!(!a.join("d/y").exists(), "A answers an absent name");

    fs::write(b.join("d/y"), b"from B").expect("create on B");
    eventually("A to see B's new file", &|| a.join("d/y").exists());
    assert_eq!(fs::read(a.join("d/y")).expect("read on A"), b"from B");

    // In a directory B made, A asks the master about an absent name and keeps the answer,
    // until B creates the name.
    fs::create_dir(b.join("e")).expect("mkdir on B");
    eventually("A to see B's directory", &|| a.join("e").exists());
    assert!(!a.join("e/n").exists(), "A is told the name is absent");
    assert!(!a.join("e/n").exists(), "and answers so again");
    fs::write(b.join("e/n"), b"n").expect("create on B");
    eventually("A to see the name it was told is absent", &|| {
        a.join("e/n").exists()
    });

    fs::rename(b.join("d/y"), b.join("d/z")).expect("rename on B");
    eventually("A to see B's rename", &|| {
        !a.join("d/y").exists() && a.join("d/z").exists()
    });

    fs::remove_file(b.join("d/x")).expect("unlink on B");
    eventually("A to see B's unlink", &|| !a.join("d/x").exists());

    fs::set_permissions(b.join("d/z"), fs::Permissions::from_mode(0o600)).expect("chmod on B");
    eventually("A to see B's chmod", &|| {
        fs::metadata(a.join("d/z")).is_ok_and(|m| m.mode() & 0o7777 == 0o600)
    });

    fs::write(b.join("d/z"), vec![7u8; 100_000]).expect("rewrite on B");
    eventually("A to see the new size", &|| {
        fs::metadata(a.join("d/z")).is_ok_and(|m| m.len() == 100_000)
    });

    fs::hard_link(b.join("d/z"), b.join("d/w")).expect("link on B");
    eventually("A to see the new link count", &|| {
        fs::metadata(a.join("d/z")).is_ok_and(|m| m.nlink() == 2)
    });
    fs::remove_file(b.join("d/w")).expect("unlink of the link on B");
    eventually("A to see the link count drop", &|| {
        fs::metadata(a.join("d/z")).is_ok_and(|m| m.nlink() == 1)
    });

    // A's cache survives a master restart only as far as the master's word goes: after
    // it, names made meanwhile by B are seen.
    c.stop_master();
    c.start_master();
    fs::write(b.join("d/after-restart"), b"r").expect("create on B after the restart");
    eventually("A to see a file made after the master restarted", &|| {
        a.join("d/after-restart").exists()
    });
}
