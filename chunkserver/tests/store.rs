//! Store-level tests: orders, version handling, damage, reserve, and index trust/rebuild.

use elkfs_chunkserver::chunk_file::HEADER_SIZE;
use elkfs_chunkserver::store::blanks::BLANKS_DIR;
use elkfs_chunkserver::store::{chunk_file_name, Store};
use elkfs_proto::limits::BLOCK_SIZE;
use elkfs_proto::FsError;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn chunk_path(dir: &Path, id: u64, version: u32) -> PathBuf {
    dir.join(format!("{:02X}", id & 0xFF))
        .join(chunk_file_name(id, version))
}

/// A store on one data directory.
fn open(dir: &Path) -> Store {
    Store::open(&[dir.to_owned()], 0).unwrap()
}

/// A store on a new empty data directory, which lives as long as the returned guard.
fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    (dir, store)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn write(store: &Store, id: u64, version: u32, offset: u64, data: &[u8]) {
    let w = store.writer(id, version).unwrap();
    store.write(&w, offset, data).unwrap();
}

/// Waits up to 5 s for `done`, which the store's background thread makes true.
fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    done()
}

#[test]
fn a_new_chunk_is_a_blank_file_made_ahead() {
    let (dir, store) = fresh();
    let blanks = dir.path().join(BLANKS_DIR);
    let ready = || -> HashSet<u64> {
        std::fs::read_dir(&blanks)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    assert!(eventually(|| ready().len() == 16));
    let before = ready();
    store.create(7, 1).unwrap();
    let path = chunk_path(dir.path(), 7, 1);
    let made = || std::fs::metadata(&path).unwrap();
    assert!(before.contains(&made().ino()));
    assert!(
        eventually(|| made().nlink() == 1),
        "the blank's own name goes"
    );
    let data = pattern(70_000, 3);
    write(&store, 7, 1, 0, &data);
    assert_eq!(store.read(7, 1, 0, data.len() as u64).unwrap(), data);
}

#[test]
fn layout_orders_and_versions() {
    let (dir, store) = fresh();
    for b in ["00", "7F", "FF"] {
        assert!(dir.path().join(b).is_dir());
    }
    let id = 0x1234_5678_9ABC_DEA7;
    store.create(id, 3).unwrap();
    assert!(matches!(store.create(id, 4), Err(FsError::Exists)));
    assert!(chunk_path(dir.path(), id, 3).exists());
    assert!(dir
        .path()
        .join("A7")
        .join("chunk_123456789ABCDEA7_00000003.elk")
        .exists());

    let data = pattern(100_000, 1);
    write(&store, id, 3, 0, &data);
    // A create of the version held (the master's order after a client's first write made
    // the chunk) leaves it as it is.
    store.create(id, 3).unwrap();
    assert_eq!(store.read(id, 3, 0, 1 << 20).unwrap(), data);
    assert!(matches!(store.read(id, 4, 0, 10), Err(FsError::Stale(_))));
    assert!(matches!(
        store.read(id + 1, 3, 0, 10),
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        store.read(id, 3, 0, 64 << 20),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        store.read(id, 3, (64 << 20) - 1, 2),
        Err(FsError::Invalid(_))
    ));

    // SetVersion renames the file and rewrites the header.
    assert!(matches!(
        store.set_version(id, 2, 5),
        Err(FsError::Stale(_))
    ));
    store.set_version(id, 3, 5).unwrap();
    assert!(!chunk_path(dir.path(), id, 3).exists());
    let raw = std::fs::read(chunk_path(dir.path(), id, 5)).unwrap();
    assert_eq!(&raw[16..20], &5u32.to_le_bytes());
    assert_eq!(store.read(id, 5, 0, 1 << 20).unwrap(), data);

    // A writer opened at the old version is stale now.
    let w = store.writer(id, 5).unwrap();
    store.set_version(id, 5, 6).unwrap();
    assert!(matches!(store.write(&w, 0, b"x"), Err(FsError::Stale(_))));

    // Truncate cuts, fixes the last CRC and moves the version.
    store.truncate(id, 6, 7, 70_000).unwrap();
    assert_eq!(store.read(id, 7, 0, 1 << 20).unwrap(), &data[..70_000]);
    store.truncate(id, 7, 8, 3 * BLOCK_SIZE).unwrap();
    let back = store.read(id, 8, 0, 1 << 20).unwrap();
    assert_eq!(&back[..70_000], &data[..70_000]);
    assert!(back[70_000..].iter().all(|&b| b == 0));
    assert_eq!(back.len() as u64, 3 * BLOCK_SIZE);
    let info = store.chunk_list();
    assert_eq!(info.len(), 1);
    assert_eq!(
        (info[0].version, info[0].length),
        (8, 3 * BLOCK_SIZE as u32)
    );

    assert!(matches!(store.delete(id, 7), Err(FsError::Stale(_))));
    store.delete(id, 0).unwrap();
    assert!(!chunk_path(dir.path(), id, 8).exists());
    assert!(matches!(store.delete(id, 0), Err(FsError::NotFound)));
    assert!(store.chunk_list().is_empty());
    // The id can be created again after a delete.
    store.create(id, 9).unwrap();
    assert_eq!(store.read(id, 9, 0, 10).unwrap(), Vec::<u8>::new());
}

#[test]
fn flipped_byte_on_disk_is_damaged() {
    let (dir, store) = fresh();
    store.create(1, 1).unwrap();
    write(&store, 1, 1, 0, &pattern(300_000, 4));
    let p = chunk_path(dir.path(), 1, 1);
    let mut raw = std::fs::read(&p).unwrap();
    raw[HEADER_SIZE as usize + 2 * BLOCK_SIZE as usize + 7] ^= 1;
    std::fs::write(&p, raw).unwrap();
    assert!(store.read(1, 1, 0, BLOCK_SIZE).is_ok());
    assert!(matches!(
        store.read(1, 1, 0, 300_000),
        Err(FsError::Damaged(_))
    ));
    // A partial write into the damaged block must not launder the damage.
    let w = store.writer(1, 1).unwrap();
    assert!(matches!(
        store.write(&w, 2 * BLOCK_SIZE + 1, b"zz"),
        Err(FsError::Damaged(_))
    ));
    // A full overwrite of the block replaces it.
    store
        .write(&w, 2 * BLOCK_SIZE, &vec![5u8; BLOCK_SIZE as usize])
        .unwrap();
    assert!(store.read(1, 1, 0, 300_000).is_ok());
}

#[test]
fn reserve_gives_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&[dir.path().to_owned()], u64::MAX / 4).unwrap();
    assert!(matches!(store.create(1, 1), Err(FsError::NoSpace)));
    let s = store.space();
    assert_eq!(s.avail_bytes, 0);
    assert!(s.total_bytes > 0);
}

#[test]
fn chooses_the_disk_and_reports_space() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = Store::open(&[a.path().to_owned(), b.path().to_owned()], 0).unwrap();
    for id in 0..20u64 {
        store.create(id, 1).unwrap();
        write(&store, id, 1, 0, &[1; 10]);
    }
    let on_disk = |d: &Path| {
        (0..20u64)
            .filter(|&id| chunk_path(d, id, 1).exists())
            .count()
    };
    assert_eq!(on_disk(a.path()) + on_disk(b.path()), 20);
    let s = store.space();
    assert_eq!(s.chunks, 20);
    assert_eq!(s.used_bytes, 20 * (HEADER_SIZE + 10));
}

#[test]
fn same_chunk_is_serialized_other_chunks_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    store.create(1, 1).unwrap();
    store.create(2, 1).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = 1 + t % 2;
                let w = store.writer(id, 1).unwrap();
                for i in 0..16u64 {
                    // Interleaved unaligned pieces: lost updates would break CRCs or data.
                    let off = (i * 4 + t / 2) * 1000;
                    store.write(&w, off, &[(t as u8) + 1; 1000]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for id in [1u64, 2] {
        let data = store.read(id, 1, 0, 1 << 20).unwrap();
        assert_eq!(data.len(), 64_000);
        for (i, piece) in data.chunks(1000).enumerate() {
            let writer = 2 * (i as u64 % 4) + (id - 1);
            assert!(
                piece.iter().all(|&b| b == writer as u8 + 1),
                "piece {i} of chunk {id}"
            );
        }
    }
}

/// Populates a store, shuts it down cleanly and returns the chunk list it had.
fn populate(dir: &Path) -> Vec<(u64, u32, u32)> {
    let store = Store::open(&[dir.to_owned()], 0).unwrap();
    for id in [5u64, 0x105, 0xFFEE] {
        store.create(id, 2).unwrap();
        write(
            &store,
            id,
            2,
            0,
            &pattern(1000 * id as usize % 200_000 + 1, 1),
        );
    }
    store.set_version(0x105, 2, 3).unwrap();
    store.shutdown().unwrap();
    assert!(dir.join("clean").exists());
    list(&store)
}

fn list(store: &Store) -> Vec<(u64, u32, u32)> {
    let mut v: Vec<_> = store
        .chunk_list()
        .into_iter()
        .map(|c| (c.chunk_id, c.version, c.length))
        .collect();
    v.sort();
    v
}

#[test]
fn clean_index_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let before = populate(dir.path());
    // A file the index does not know: only a scan would find it.
    std::fs::copy(
        chunk_path(dir.path(), 5, 2),
        chunk_path(dir.path(), 0x205, 1),
    )
    .unwrap();
    let store = open(dir.path());
    assert!(
        !dir.path().join("clean").exists(),
        "marker must be consumed"
    );
    assert_eq!(list(&store), before);
}

#[test]
fn missing_marker_rebuilds_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let before = populate(dir.path());
    std::fs::remove_file(dir.path().join("clean")).unwrap();
    // An older version of 0x105 (to be deleted), a junk file (to be left alone).
    std::fs::copy(
        chunk_path(dir.path(), 0x105, 3),
        chunk_path(dir.path(), 0x105, 1),
    )
    .unwrap();
    let junk = dir.path().join("05").join("notes.txt");
    std::fs::write(&junk, "hello").unwrap();
    let store = open(dir.path());
    assert_eq!(list(&store), before);
    assert!(!chunk_path(dir.path(), 0x105, 1).exists());
    assert!(chunk_path(dir.path(), 0x105, 3).exists());
    assert!(junk.exists());
    let len = before.iter().find(|c| c.0 == 0xFFEE).unwrap().2 as u64;
    assert_eq!(
        store.read(0xFFEE, 2, 0, 1 << 20).unwrap(),
        pattern(len as usize, 1)
    );
}

#[test]
fn corrupt_index_rebuilds_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let before = populate(dir.path());
    // Marker present, but sled's files are garbage.
    let ix = dir.path().join("index.sled");
    for e in std::fs::read_dir(&ix).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0xA5u8; 5000]).unwrap();
        }
    }
    let store = open(dir.path());
    assert_eq!(list(&store), before);
    drop(store);
    // And the rebuilt index is usable after the next clean shutdown.
    let store = open(dir.path());
    store.shutdown().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(list(&store), before);
}

#[test]
fn index_for_other_data_dirs_is_not_trusted() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let dirs = [a.path().to_owned(), b.path().to_owned()];
    let store = Store::open(&dirs, 0).unwrap();
    for id in 0..10u64 {
        store.create(id, 1).unwrap();
    }
    let before = list(&store);
    store.shutdown().unwrap();
    drop(store);
    // Same first dir, different list: disk numbers in the index would point elsewhere.
    let swapped = [
        a.path().to_owned(),
        tempfile::tempdir().unwrap().keep(),
        b.path().to_owned(),
    ];
    let store = Store::open(&swapped, 0).unwrap();
    assert_eq!(list(&store), before);
    for (id, v, _) in before {
        store.read(id, v, 0, 10).unwrap();
    }
}

#[test]
fn delete_with_a_version_deletes_only_that_version() {
    let (dir, store) = fresh();
    let id = 0x42;
    store.create(id, 3).unwrap();
    write(&store, id, 3, 0, b"hello");
    store.set_version(id, 3, 4).unwrap();
    // Older and newer versions than the one held: Stale, and the copy stays.
    for v in [3u32, 5, u32::MAX] {
        assert!(
            matches!(store.delete(id, v), Err(FsError::Stale(_))),
            "delete at version {v}"
        );
        assert!(chunk_path(dir.path(), id, 4).exists());
        assert_eq!(store.read(id, 4, 0, 10).unwrap(), b"hello");
    }
    assert_eq!(list(&store), vec![(id, 4, 5)]);
    // The exact version deletes it.
    store.delete(id, 4).unwrap();
    assert!(!chunk_path(dir.path(), id, 4).exists());
    assert!(store.chunk_list().is_empty());
    assert!(matches!(store.delete(id, 4), Err(FsError::NotFound)));
    // Re-created at another version: a delete of the old version must not touch it.
    store.create(id, 7).unwrap();
    assert!(matches!(store.delete(id, 4), Err(FsError::Stale(_))));
    assert!(chunk_path(dir.path(), id, 7).exists());
    store.delete(id, 7).unwrap();
    assert!(!chunk_path(dir.path(), id, 7).exists());
}

/// A create is not synced; the first fsync of the chunk's data syncs its directory entry
/// too (its path must be right, or the sync fails), and later ones only the data.
#[test]
fn the_first_sync_of_a_new_chunk_syncs_its_entry() {
    let (dir, store) = fresh();
    store.create(0x1A2, 1).unwrap();
    let w = store.writer(0x1A2, 1).unwrap();
    store.write(&w, 0, &pattern(10_000, 4)).unwrap();
    store.sync(&w).unwrap();
    store.write(&w, 10_000, &pattern(100, 5)).unwrap();
    store.sync(&w).unwrap();
    let mut want = pattern(10_000, 4);
    want.extend(pattern(100, 5));
    assert_eq!(store.read(0x1A2, 1, 0, 1 << 20).unwrap(), want);
    // A writer of a chunk since deleted and made again syncs its own file only.
    store.delete(0x1A2, 1).unwrap();
    store.create(0x1A2, 1).unwrap();
    store.sync(&w).unwrap();
    assert!(chunk_path(dir.path(), 0x1A2, 1).exists());
}

#[test]
fn orders_survive_an_unclean_restart() {
    // No shutdown: the restart rebuilds from the files, so what the orders answered must
    // be what the names and lengths on disk say.
    let (dir, store) = fresh();
    store.create(1, 1).unwrap();
    store.create(2, 1).unwrap();
    store.create(3, 1).unwrap();
    write(&store, 1, 1, 0, &pattern(200_000, 2));
    write(&store, 2, 1, 0, &pattern(200_000, 3));
    store.set_version(1, 1, 2).unwrap();
    store.truncate(2, 1, 5, 70_000).unwrap();
    store.truncate(3, 1, 1, BLOCK_SIZE + 3).unwrap();
    let before = list(&store);
    assert_eq!(
        before,
        vec![
            (1, 2, 200_000),
            (2, 5, 70_000),
            (3, 1, BLOCK_SIZE as u32 + 3)
        ]
    );
    drop(store);
    assert!(!dir.path().join("clean").exists());
    let store = open(dir.path());
    assert_eq!(list(&store), before);
    assert!(!chunk_path(dir.path(), 1, 1).exists());
    assert!(!chunk_path(dir.path(), 2, 1).exists());
    for (id, v) in [(1u64, 2u32), (2, 5)] {
        let raw = std::fs::read(chunk_path(dir.path(), id, v)).unwrap();
        assert_eq!(&raw[16..20], &v.to_le_bytes());
    }
    assert_eq!(
        store.read(2, 5, 0, 1 << 20).unwrap(),
        &pattern(200_000, 3)[..70_000]
    );
    assert_eq!(store.read(1, 2, 0, 1 << 20).unwrap(), pattern(200_000, 2));
}

#[test]
fn damage_marks_survive_restarts_until_the_copy_goes() {
    let (dir, store) = fresh();
    for id in [7, 8] {
        store.create(id, 1).unwrap();
        store.mark_damaged(id, 1).unwrap();
    }
    drop(store);
    // Unclean restart: the chunk list is rebuilt from the files, the marks are kept.
    let store = open(dir.path());
    let mut marks = store.damaged().unwrap();
    marks.sort();
    assert_eq!(marks, vec![(7, 1), (8, 1)]);
    store.delete(8, 1).unwrap();
    store.shutdown().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.damaged().unwrap(), vec![(7, 1)]);
    // A new copy of a deleted chunk starts clean; a mark for another version is dropped.
    store.create(8, 1).unwrap();
    store.set_version(7, 1, 2).unwrap();
    assert_eq!(store.damaged().unwrap(), vec![]);
}

/// Reads served from the page cache on the spot give what the blocking path gives; once
/// any page would come from the disk, the cached path steps aside instead of waiting.
#[test]
fn cached_reads_answer_from_memory_or_step_aside() {
    use std::os::fd::AsRawFd;
    let (dir, store) = fresh();
    let id = 0x77;
    store.create(id, 1).unwrap();
    let data = pattern(3 * BLOCK_SIZE as usize + 5, 9);
    write(&store, id, 1, 0, &data);
    let (off, len) = (BLOCK_SIZE - 7, 2 * BLOCK_SIZE);
    let want = &data[off as usize..(off + len) as usize];
    assert_eq!(
        store.read_cached(id, 1, off, len).unwrap().as_deref(),
        Some(want)
    );
    assert!(matches!(
        store.read_cached(id, 2, 0, 10),
        Err(FsError::Stale(_))
    ));
    assert_eq!(store.read_cached(id + 1, 1, 0, 10).unwrap(), None);

    // Written back and dropped from the page cache: only the blocking path reads it.
    // Pages still in another CPU's LRU batch survive a DONTNEED, so it is repeated until
    // they are gone; while any is resident, answering from memory is right.
    let f = std::fs::File::open(chunk_path(dir.path(), id, 1)).unwrap();
    f.sync_all().unwrap();
    let dropped = (0..100).any(|_| {
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let stepped_aside = store.read_cached(id, 1, off, len).unwrap().is_none();
        if !stepped_aside {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stepped_aside
    });
    assert!(
        dropped,
        "the cached path never stepped aside for pages off the cache"
    );
    assert_eq!(store.read(id, 1, off, len).unwrap(), want);
    assert_eq!(
        store.read_cached(id, 1, off, len).unwrap().as_deref(),
        Some(want)
    );

    // A damaged block fails the same way on both paths.
    let mut bytes = std::fs::read(chunk_path(dir.path(), id, 1)).unwrap();
    bytes[(HEADER_SIZE + BLOCK_SIZE + 3) as usize] ^= 0x40;
    std::fs::write(chunk_path(dir.path(), id, 1), &bytes).unwrap();
    assert!(matches!(
        store.read_cached(id, 1, off, len),
        Err(FsError::Damaged(_))
    ));
}
