//! What each client request does, as plain methods on [`Master`]: `namespace` (names,
//! attributes, sessions), `chunks` (where data lives, writes, truncation), `goal` (goals
//! and file info for the admin tool) and `health` (cluster status, maintenance).

mod chunks;
mod goal;
mod health;
mod namespace;

use crate::core::{Inner, Master};
use elkfs_proto::changelog::{record::Op, Purge};
use elkfs_proto::meta::{Attr, AttrReply, Timespec};
use elkfs_proto::FsError;
use tracing::{debug, warn};

fn now() -> Option<Timespec> {
    Some(elkfs_proto::time::now())
}

/// A time a client set explicitly, with nanoseconds kept in range.
fn explicit(t: &Option<Timespec>) -> Option<Timespec> {
    t.as_ref().map(|t| Timespec {
        sec: t.sec,
        nsec: t.nsec.min(999_999_999),
    })
}

/// `attr` as of the current metadata version.
fn versioned(inner: &Inner, attr: Attr) -> AttrReply {
    AttrReply {
        attr: Some(attr),
        dirs: Vec::new(),
        version: inner.state.version,
    }
}

impl Master {
    /// Run `f` under the lock; it returns the version its last commit produced (or the
    /// current one if it committed nothing). Answer once that version is durable.
    pub async fn mutate<T>(
        &self,
        f: impl FnOnce(&Master, &mut Inner) -> Result<(u64, T), FsError>,
    ) -> Result<T, FsError> {
        let (version, out) = {
            let mut inner = self.lock();
            f(self, &mut inner)?
        };
        self.durable(version).await?;
        Ok(out)
    }
}

/// [`purge`], or when it fails (a full disk refuses the record) leaves `ino` to be tried
/// again every second: an orphan that is not purged keeps its chunks until a restart.
/// `retry`: it failed before and was logged then.
pub async fn purge_or_defer(master: &Master, ino: u64, retry: bool) {
    if let Err(e) = purge(master, ino).await {
        if retry {
            debug!(ino, error = %e, "purging an unlinked inode failed again");
        } else {
            warn!(ino, error = %e, "purging an unlinked inode failed; trying again every second");
        }
        master.lock().sessions.defer_purge(ino);
    }
}

/// Remove an unlinked inode nobody has open any more.
pub async fn purge(master: &Master, ino: u64) -> Result<(), FsError> {
    master
        .mutate(|m, inner| {
            let gone = inner
                .state
                .inodes
                .get(&ino)
                .is_none_or(|n| n.nlink != 0 || inner.sessions.is_open(ino));
            if gone {
                return Ok((inner.state.version, ()));
            }
            Ok((m.commit(inner, Op::Purge(Purge { ino }))?, ()))
        })
        .await
}
