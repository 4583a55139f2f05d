//! The highest master epoch this server has registered under. Kept in `master_epoch`
//! beside the uuid (not in the index, which is rebuilt when damaged), so after a restart
//! the server still refuses a master that a promotion superseded, and tells it so.

use elkfs_proto::daemon::write_durably;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const EPOCH_FILE: &str = "master_epoch";

pub struct Epoch {
    dir: PathBuf,
    seen: AtomicU64,
}

impl Epoch {
    /// The epoch recorded in `dir` (0 when none is).
    pub fn load(dir: &Path) -> io::Result<Epoch> {
        let seen = match std::fs::read_to_string(dir.join(EPOCH_FILE)) {
            Ok(s) => s.trim().parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(EPOCH_FILE).display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Epoch {
            dir: dir.to_path_buf(),
            seen: AtomicU64::new(seen),
        })
    }

    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Records `epoch` if it is newer than any seen. It counts at once; Err: it could not
    /// be written to disk, and is forgotten at the next restart.
    pub fn note(&self, epoch: u64) -> io::Result<()> {
        if self.seen.fetch_max(epoch, Ordering::Relaxed) >= epoch {
            return Ok(());
        }
        tracing::info!(epoch, "registered under a new master epoch");
        write_durably(&self.dir, EPOCH_FILE, &format!("{epoch}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_survives_a_restart_and_never_goes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Epoch::load(dir.path()).expect("load");
        assert_eq!(e.seen(), 0);
        e.note(2).expect("note 2");
        e.note(1).expect("note 1");
        assert_eq!(e.seen(), 2);
        assert_eq!(Epoch::load(dir.path()).expect("reload").seen(), 2);
        std::fs::write(dir.path().join(EPOCH_FILE), "x").expect("damage");
        assert!(
            Epoch::load(dir.path()).is_err(),
            "a damaged epoch file must not read as 0"
        );
    }
}
