//! Who may talk to chunkservers between deciding a chunk change and logging it.
//!
//! Chunk creation, version changes and truncation send orders to chunkservers before their
//! record is committed. Two of them on one file must not interleave (they would decide
//! from the same chunk table), so they run one at a time per file; a chunk belongs to one
//! file, so changes to different files never meet and run side by side, and their records
//! share fdatasyncs. A chunkserver's report is reconciled with no such change in flight:
//! it waits for those running, and new ones wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, RwLock, RwLockWriteGuard,
};

/// Below this many entries the map of file locks is not pruned.
const PRUNE_FLOOR: usize = 64;

#[derive(Default)]
pub struct ChunkOps {
    /// Shared by file changes, exclusive for a report.
    all: Arc<RwLock<()>>,
    files: Mutex<FileLocks>,
}

/// The lock of each file with a change running or waiting. Entries of files nobody holds
/// any more are dropped when the map has doubled since it was last pruned.
#[derive(Default)]
struct FileLocks {
    locks: HashMap<u64, Weak<AsyncMutex<()>>>,
    prune_at: usize,
}

/// Held while a change to a file's chunks runs; owned, so a change may finish in a task
/// of its own after its caller got its answer.
pub struct FileChange {
    _file: OwnedMutexGuard<()>,
    _shared: OwnedRwLockReadGuard<()>,
}

impl ChunkOps {
    /// Wait until `ino`'s chunks may change.
    pub async fn file(&self, ino: u64) -> FileChange {
        let shared = self.all.clone().read_owned().await;
        let lock = self.lock_of(ino);
        FileChange {
            _file: lock.lock_owned().await,
            _shared: shared,
        }
    }

    /// Wait until no file's chunks are changing, and keep it so.
    pub async fn all(&self) -> RwLockWriteGuard<'_, ()> {
        self.all.write().await
    }

    fn lock_of(&self, ino: u64) -> Arc<AsyncMutex<()>> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = files.locks.get(&ino).and_then(Weak::upgrade) {
            return lock;
        }
        if files.locks.len() >= files.prune_at.max(PRUNE_FLOOR) {
            files.locks.retain(|_, l| l.strong_count() > 0);
            files.prune_at = 2 * files.locks.len();
        }
        let lock = Arc::new(AsyncMutex::new(()));
        files.locks.insert(ino, Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn one_change_per_file_and_files_side_by_side() {
        let ops = ChunkOps::default();
        let a = ops.file(1).await;
        assert!(
            timeout(SHORT, ops.file(1)).await.is_err(),
            "same file waits"
        );
        let b = timeout(SHORT, ops.file(2))
            .await
            .expect("another file runs");
        drop(a);
        let again = timeout(SHORT, ops.file(1)).await.expect("free again");
        drop((b, again));
        let files = ops.files.lock().expect("map");
        assert!(files.locks.values().all(|l| l.strong_count() == 0));
    }

    #[tokio::test]
    async fn locks_of_files_done_with_are_dropped() {
        let ops = ChunkOps::default();
        for ino in 0..1000 {
            drop(ops.file(ino).await);
        }
        assert!(ops.files.lock().expect("map").locks.len() <= PRUNE_FLOOR);
    }

    #[tokio::test]
    async fn a_report_waits_for_changes_and_holds_new_ones_off() {
        let ops = ChunkOps::default();
        let change = ops.file(1).await;
        assert!(timeout(SHORT, ops.all()).await.is_err(), "report waits");
        drop(change);
        let report = timeout(SHORT, ops.all()).await.expect("report runs");
        assert!(timeout(SHORT, ops.file(2)).await.is_err(), "changes wait");
        drop(report);
        timeout(SHORT, ops.file(2))
            .await
            .expect("changes run again");
    }
}
