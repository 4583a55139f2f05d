//! Epoch fencing. A promoted standby starts a new epoch with a Promote record; mounts and
//! chunkservers remember the highest epoch they have seen and send it with every Hello,
//! Epoch and Register. A master that hears of an epoch newer than its own was superseded
//! (it is an old master started again on its old data): from then on it refuses every
//! mount, chunkserver and metalogger request, changes no metadata and deletes no chunk,
//! so it can neither split the metadata nor destroy copies written after the promotion.
//! It also leaves a `superseded` file in its data directory, and a master refuses to start
//! on a directory that has one.

use crate::core::Master;
use elkfs_proto::changelog::{record::Op, Promote};
use elkfs_proto::daemon::write_durably;
use elkfs_proto::FsError;
use std::path::Path;
use std::sync::atomic::Ordering;
use tonic::{Request, Status};
use tracing::{error, info};

impl Master {
    pub fn epoch(&self) -> u64 {
        self.lock().state.epoch
    }

    /// A peer has seen `seen` as the highest epoch: if that is newer than ours, this master
    /// was superseded. Err while superseded; otherwise our epoch.
    pub fn check_epoch(&self, seen: u64, peer: &str) -> Result<u64, FsError> {
        let epoch = self.epoch();
        if seen > epoch && self.superseded.fetch_max(seen, Ordering::Relaxed) < seen {
            error!(
                epoch,
                newer = seen,
                %peer,
                "superseded: a standby was promoted after this master's metadata was written; \
                 refusing all requests (stop this master and start it empty as a standby)"
            );
            if let Err(e) =
                write_durably(&self.config.data_dir, SUPERSEDED_FILE, &format!("{seen}\n"))
            {
                error!(error = %e, "cannot leave the superseded mark in the data directory");
            }
        }
        self.refuse_if_superseded()?;
        Ok(epoch)
    }

    /// The newer epoch that superseded this master; 0 while it has not been.
    pub fn superseded_by(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded_by() != 0
    }

    pub fn refuse_if_superseded(&self) -> Result<(), FsError> {
        match self.superseded_by() {
            0 => Ok(()),
            newer => Err(FsError::Unavailable(format!(
                "this master was superseded by a promoted standby (epoch {newer})"
            ))),
        }
    }

    /// The first record of a promoted standby: every master of an older epoch is
    /// superseded from now on. Returns the new epoch once it is durable here (not waiting
    /// for metaloggers: none may have found the new master yet).
    pub async fn begin_epoch(&self) -> Result<u64, FsError> {
        let (version, epoch) = {
            let mut inner = self.lock();
            let epoch = inner.state.epoch + 1;
            (
                self.commit(&mut inner, Op::Promote(Promote { epoch }))?,
                epoch,
            )
        };
        self.locally_durable(version).await?;
        info!(epoch, "new master epoch");
        Ok(epoch)
    }
}

const SUPERSEDED_FILE: &str = "superseded";

/// Err when a master on `dir` was superseded: its metadata is older than the cluster's.
pub fn check_not_superseded(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(SUPERSEDED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(newer) => anyhow::bail!(
            "{}: this data directory's master was superseded by a promoted standby (epoch \
             {}); its metadata is out of date. Move the directory aside and start this \
             master empty as a standby of the current one (docs/recovery.md)",
            dir.display(),
            newer.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

/// A tonic interceptor for the services a superseded master must no longer offer.
pub fn interceptor(
    master: std::sync::Arc<Master>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req| {
        master.refuse_if_superseded()?;
        Ok(req)
    }
}
