//! The metalogger's data directory, in the master's formats: `metadata.<V>.elk` images and
//! `changelog.<N>.elk` files written by the master's own group-commit writer, so the master
//! and `elkfs-metarestore` read it unchanged.

use elkfs_master::changelog::Changelog;
use elkfs_master::frame::{self, FrameReader};
use elkfs_master::recovery::{self, Mode, RecoveryError};
use elkfs_master::state::State;
use elkfs_master::{files, snapshot};
use elkfs_proto::feed::{FeedRecord, ImagePiece};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record {got} does not follow version {have}")]
    Discontinuous { have: u64, got: u64 },
    #[error("image piece for version {version} at byte {offset}, expected {expected_version} at byte {expected_offset}")]
    ImageOrder {
        version: u64,
        offset: u64,
        expected_version: u64,
        expected_offset: u64,
    },
    #[error("received image {path} is invalid: {why}")]
    BadImage { path: PathBuf, why: String },
    #[error("changelog write failed: {0}")]
    NotDurable(#[from] elkfs_master::changelog::NotDurable),
    #[error("disk full: no room for more records")]
    NoSpace,
    #[error("{0}")]
    Recovery(#[from] RecoveryError),
    #[error("{0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Store {
    dir: PathBuf,
    keep: usize,
    log: Arc<Changelog>,
    /// Last version submitted to `log` (durable once `log.wait` says so).
    version: u64,
    /// The image being received.
    image: Option<ImageInProgress>,
    _lock: File,
}

struct ImageInProgress {
    version: u64,
    tmp: PathBuf,
    file: File,
    written: u64,
}

impl Store {
    /// Open `dir`: load what it holds (cutting a torn or corrupt tail, as the master does)
    /// and continue writing after the last good version. Also returns the metadata it
    /// holds (none: wait for the master's image).
    pub fn open(dir: &Path, keep: usize) -> Result<(Store, Option<State>), StoreError> {
        std::fs::create_dir_all(dir)?;
        let lock = files::lock_dir(dir)?;
        let state = match recovery::recover(dir, elkfs_proto::limits::DEFAULT_GOAL, Mode::Repair) {
            Ok(r) if r.image.is_some() => Some(r.state),
            // Nothing usable (an empty directory, or changelogs whose image is gone):
            // start over from the master's image.
            Ok(_) => None,
            Err(RecoveryError::NoImage(_)) => {
                warn!(dir = %dir.display(), "changelogs without a usable image: moving them aside, starting over");
                set_aside_changelogs(dir)?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        let version = state.as_ref().map_or(0, |s| s.version);
        let log = Arc::new(Changelog::start(dir, version + 1)?);
        info!(dir = %dir.display(), version, "metalogger data loaded");
        let store = Store {
            dir: dir.to_path_buf(),
            keep,
            log,
            version,
            image: None,
            _lock: lock,
        };
        Ok((store, state))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last version held (submitted; durable soon after).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn log(&self) -> Arc<Changelog> {
        self.log.clone()
    }

    /// Append consecutive records after [`Store::version`]. `awaited`: the master waits
    /// for them (sync them at once); otherwise they may wait a little to share an fsync.
    pub async fn append(
        &mut self,
        records: &[FeedRecord],
        awaited: bool,
    ) -> Result<(), StoreError> {
        let durable = self.log.durable();
        if durable.failed {
            return Err(elkfs_master::changelog::NotDurable(durable.version).into());
        }
        let bytes = records
            .iter()
            .map(|r| (r.payload.len() + frame::HEADER_LEN) as u64)
            .sum();
        if !self.log.wait_for_room(bytes).await {
            return Err(StoreError::NoSpace);
        }
        for r in records {
            if r.version != self.version + 1 {
                return Err(StoreError::Discontinuous {
                    have: self.version,
                    got: r.version,
                });
            }
            if awaited {
                self.log.submit(r.version, &r.payload);
            } else {
                self.log.submit_relaxed(r.version, &r.payload);
            }
            self.version = r.version;
        }
        Ok(())
    }

    /// Forget a partly received image (the stream broke).
    pub fn abandon_image(&mut self) {
        if let Some(img) = self.image.take() {
            let _ = std::fs::remove_file(&img.tmp);
        }
    }

    /// Write one piece; the last one installs the image. Returns the image version when
    /// it was installed.
    pub fn image_piece(&mut self, p: ImagePiece) -> Result<Option<u64>, StoreError> {
        if self.image.is_none() && p.offset == 0 {
            let tmp = files::image_path(&self.dir, p.version).with_extension("elk.tmp");
            self.image = Some(ImageInProgress {
                version: p.version,
                file: File::create(&tmp)?,
                tmp,
                written: 0,
            });
        }
        let (expected_version, expected_offset) = self
            .image
            .as_ref()
            .map_or((p.version, 0), |i| (i.version, i.written));
        let Some(img) = self
            .image
            .as_mut()
            .filter(|i| i.version == p.version && i.written == p.offset)
        else {
            self.abandon_image();
            return Err(StoreError::ImageOrder {
                version: p.version,
                offset: p.offset,
                expected_version,
                expected_offset,
            });
        };
        img.file.write_all(&p.data)?;
        img.written += p.data.len() as u64;
        if !p.last {
            return Ok(None);
        }
        let Some(img) = self.image.take() else {
            return Ok(None);
        };
        self.install(img)?;
        Ok(Some(p.version))
    }

    /// fsync, check, rename into place; then continue the changelog in a new file (as the
    /// master does after each image) and prune old images like the master.
    fn install(&mut self, img: ImageInProgress) -> Result<(), StoreError> {
        img.file.sync_all()?;
        drop(img.file);
        if let Err(why) = check_image(&img.tmp, img.version) {
            let _ = std::fs::remove_file(&img.tmp);
            return Err(StoreError::BadImage { path: img.tmp, why });
        }
        let path = files::image_path(&self.dir, img.version);
        std::fs::rename(&img.tmp, &path)?;
        files::sync_dir(&self.dir)?;
        // Records after a newer image continue from it; older records are not needed.
        self.version = self.version.max(img.version);
        self.log.rotate(self.version + 1);
        snapshot::prune(&self.dir, self.keep)?;
        info!(path = %path.display(), version = img.version, "metadata image received");
        Ok(())
    }
}

/// Every frame whole and at `version`: cheap (no state is built) and enough to know the
/// transfer is complete; the master wrote and checked the content.
fn check_image(path: &Path, version: u64) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut frames = 0u64;
    for f in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
        let f = f.map_err(|e| e.to_string())?;
        if f.version != version {
            return Err(format!(
                "entry at byte {} has version {}, not {version}",
                f.offset, f.version
            ));
        }
        frames += 1;
    }
    if frames < 2 {
        return Err("no header and end entries".into());
    }
    Ok(())
}

/// Move changelog files to `damaged/` so a new history never mixes with them.
fn set_aside_changelogs(dir: &Path) -> std::io::Result<()> {
    let damaged = dir.join("damaged");
    std::fs::create_dir_all(&damaged)?;
    for (_, p) in files::changelogs(dir)? {
        if let Some(name) = p.file_name() {
            std::fs::rename(&p, damaged.join(name))?;
        }
    }
    files::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn out_of_order_records_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(tmp.path(), 3).expect("open");
        let rec = |version| FeedRecord {
            version,
            payload: Vec::new(),
            committed_unix_micros: 0,
        };
        assert!(matches!(
            store.append(&[rec(2)], true).await,
            Err(StoreError::Discontinuous { have: 0, got: 2 })
        ));
        store.append(&[rec(1)], true).await.expect("first record");
        assert!(matches!(
            store.append(&[rec(1)], true).await,
            Err(StoreError::Discontinuous { have: 1, got: 1 })
        ));
    }
}
