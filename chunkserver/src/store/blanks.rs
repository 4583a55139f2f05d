//! Empty files made ahead of need, so a chunk create only links one into place.
//!
//! Making a file is the slow part of making a chunk on a filesystem that has freed many
//! inodes: ext4 skips every inode deleted in the last minutes while it looks for a free one,
//! 0.3–1.9 ms of kernel CPU per file on this project's test machine (`find_inode_bit`,
//! `recently_deleted` in `perf`), against 0.03 ms for a link. A chunk create is on the write
//! path of every new file, so a thread keeps [`WANT`] blanks per data directory in
//! `blanks/`, off that path.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Directory (in every data dir) holding the blanks; emptied at start-up.
pub const BLANKS_DIR: &str = "blanks";

/// Blanks kept ready per data directory: enough for a burst of new files between refills.
const WANT: usize = 16;

/// How long the refill thread sleeps when nothing wakes it: it retries a failed refill
/// (a full disk) and notices that its store is gone.
const IDLE: Duration = Duration::from_secs(1);

pub struct Blanks {
    dirs: Vec<PathBuf>,
    pools: Mutex<Pools>,
    taken: Condvar,
    next_name: AtomicU64,
}

struct Pools {
    /// Ready blanks, per data directory.
    ready: Vec<Vec<PathBuf>>,
    /// Names of blanks linked into place, for the refill thread to remove: a removal
    /// there waits for the blanks directory, which a create in progress holds.
    used: Vec<PathBuf>,
}

impl Blanks {
    /// Starts keeping blanks in the data directories `roots`, each [`prepare`]d. The refill
    /// thread ends once the returned value is dropped.
    pub fn start(roots: &[PathBuf]) -> io::Result<Arc<Blanks>> {
        let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(BLANKS_DIR)).collect();
        let blanks = Arc::new(Blanks {
            pools: Mutex::new(Pools {
                ready: vec![Vec::new(); dirs.len()],
                used: Vec::new(),
            }),
            dirs,
            taken: Condvar::new(),
            next_name: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&blanks);
        std::thread::Builder::new()
            .name("blanks".into())
            .spawn(move || refill_while_alive(weak))?;
        Ok(blanks)
    }

    fn pools(&self) -> MutexGuard<'_, Pools> {
        // Only pushes and pops happen under it: a poisoned lock is still consistent.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links a blank of data directory `disk` into place at `path` and opens it for reading
    /// and writing. `Ok(None)`: no blank is ready, make the file directly. Fails with
    /// `AlreadyExists` if `path` exists (the blank stays ready).
    pub fn claim(&self, disk: usize, path: &Path) -> io::Result<Option<File>> {
        let Some(blank) = self.pools().ready.get_mut(disk).and_then(Vec::pop) else {
            return Ok(None);
        };
        let linked = std::fs::hard_link(&blank, path);
        let mut pools = self.pools();
        match linked {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                pools.ready[disk].push(blank);
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(blank = %blank.display(), error = %e, "cannot link a blank into place, making the chunk file directly");
                pools.used.push(blank);
                self.taken.notify_one();
                return Ok(None);
            }
            Ok(()) => pools.used.push(blank),
        }
        drop(pools);
        self.taken.notify_one();
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Some)
    }

    /// Removes the names of used blanks (a chunk linked from one keeps its file), then
    /// makes blanks until every pool holds [`WANT`]. False if a data directory could not
    /// take one (full, or gone).
    fn refill(&self) -> bool {
        let used = std::mem::take(&mut self.pools().used);
        for blank in used {
            if let Err(e) = std::fs::remove_file(&blank) {
                tracing::warn!(blank = %blank.display(), error = %e, "cannot remove a used blank");
            }
        }
        for (disk, dir) in self.dirs.iter().enumerate() {
            while self.pools().ready[disk].len() < WANT {
                let n = self.next_name.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!("blank_{n}"));
                if let Err(e) = OpenOptions::new().write(true).create_new(true).open(&path) {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot make a blank");
                    return false;
                }
                self.pools().ready[disk].push(path);
            }
        }
        true
    }
}

/// Makes the blanks directory of data directory `root`, or empties it: a blank left by a
/// crash may already be linked as a chunk.
pub fn prepare(root: &Path) -> io::Result<()> {
    super::empty_dir(&root.join(BLANKS_DIR)).map(drop)
}

fn refill_while_alive(blanks: Weak<Blanks>) {
    while let Some(b) = blanks.upgrade() {
        let full = b.refill();
        let pools = b.pools();
        let idle = pools.used.is_empty() && pools.ready.iter().all(|p| p.len() >= WANT);
        if !full || idle {
            let _ = b.taken.wait_timeout(pools, IDLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    impl Blanks {
        fn ready(&self, disk: usize) -> Vec<PathBuf> {
            self.pools().ready[disk].clone()
        }
    }

    fn started(root: &Path) -> Arc<Blanks> {
        prepare(root).unwrap();
        Blanks::start(&[root.to_owned()]).unwrap()
    }

    fn wait_full(b: &Blanks) {
        for _ in 0..500 {
            if b.ready(0).len() == WANT {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the blanks were not made");
    }

    #[test]
    fn a_claim_links_a_ready_blank_and_the_pool_refills() {
        let dir = tempfile::tempdir().unwrap();
        let b = started(dir.path());
        wait_full(&b);
        let ready = b.ready(0);
        let target = dir.path().join("chunk");
        let mut f = b.claim(0, &target).unwrap().expect("a blank was ready");
        std::io::Write::write_all(&mut f, b"x").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
        // The refill thread removes the used name before it makes a new blank.
        wait_full(&b);
        let used: Vec<_> = ready.iter().filter(|p| !p.exists()).collect();
        assert_eq!(used.len(), 1, "exactly the claimed blank's name is gone");
        assert_eq!(std::fs::metadata(&target).unwrap().nlink(), 1);
    }

    #[test]
    fn a_claim_onto_an_existing_file_fails_and_keeps_the_blank() {
        let dir = tempfile::tempdir().unwrap();
        let b = started(dir.path());
        wait_full(&b);
        let target = dir.path().join("taken");
        std::fs::write(&target, b"old").unwrap();
        let e = b.claim(0, &target).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(b.ready(0).len(), WANT);
    }

    #[test]
    fn prepare_removes_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(BLANKS_DIR).join("blank_7");
        std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
        std::fs::write(&leftover, b"").unwrap();
        let linked = dir.path().join("chunk");
        std::fs::hard_link(&leftover, &linked).unwrap();
        prepare(dir.path()).unwrap();
        let kept = std::fs::metadata(&linked).unwrap();
        assert_eq!(
            kept.nlink(),
            1,
            "the leftover name is gone, the chunk stays"
        );
    }
}
