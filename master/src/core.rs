//! The running master: metadata state, soft cluster state and sessions behind one lock,
//! the changelog, and the background work (snapshots, chunk deletions, expiry).
//!
//! A mutation: lock, build the record with every decided value, `State::apply` it, submit
//! it to the changelog (in version order, still under the lock), unlock, then wait until
//! it is durable before answering. The lock is never held across an await.

use crate::changelog::Changelog;
use crate::chunk_ops::ChunkOps;
use crate::cluster::{Cluster, Copy};
use crate::config::Config;
use crate::deleter::{self, Deletion};
use crate::feed::Feed;
use crate::files;
use crate::notices::{self, Notifier};
use crate::recovery::{self, Mode};
use crate::sessions::Sessions;
use crate::snapshot;
use crate::state::State;
use elkfs_proto::changelog::{record::Op, Record};
use elkfs_proto::FsError;
use prost::Message;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub struct Inner {
    pub state: State,
    pub cluster: Cluster,
    pub sessions: Sessions,
}

pub struct Master {
    inner: Mutex<Inner>,
    log: Changelog,
    pub config: Config,
    /// Chunk creation, version changes and truncation: one at a time per file.
    pub chunk_ops: ChunkOps,
    deletions: mpsc::UnboundedSender<Deletion>,
    /// Committed records for metaloggers, and their acks.
    pub feed: Feed,
    /// What committed changes touched, for watching mounts.
    pub notifier: Notifier,
    /// Held for the master's lifetime: one master per data directory.
    _data_lock: std::fs::File,
    /// Non-zero: the newer epoch that superseded this master (see `fence`).
    pub(crate) superseded: AtomicU64,
}

impl Master {
    /// Load metadata from the data directory and start the changelog.
    pub fn start(config: Config) -> anyhow::Result<Arc<Master>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_lock = files::lock_dir(&config.data_dir)?;
        crate::fence::check_not_superseded(&config.data_dir)?;
        let rec = recovery::recover(&config.data_dir, config.root_goal, Mode::Repair)?;
        let state = rec.state;
        if rec.image.is_none() || rec.records > 0 || rec.stop.is_some() {
            // Start-up replay work is done once: the next start loads this image. Without
            // it (a full disk) the next start replays the same records again.
            match snapshot::write(&config.data_dir, &state) {
                Ok(path) => {
                    info!(path = %path.display(), version = state.version, "metadata image written")
                }
                Err(e) => warn!(error = %e, "metadata image after replay not written"),
            }
        }
        Master::launch(config, state, data_lock)
    }

    /// Become the master from `state`, already in memory and durable in the data
    /// directory (a promoted standby's): no replay, no image written.
    pub fn from_state(config: Config, state: State) -> anyhow::Result<Arc<Master>> {
        let data_lock = files::lock_dir(&config.data_dir)?;
        Master::launch(config, state, data_lock)
    }

    fn launch(
        config: Config,
        state: State,
        data_lock: std::fs::File,
    ) -> anyhow::Result<Arc<Master>> {
        let log = Changelog::start(&config.data_dir, state.version + 1)?;
        snapshot::prune(&config.data_dir, config.snapshots_keep)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let feed = Feed::new(
            config.sync_metaloggers,
            Duration::from_millis(config.sync_metaloggers_timeout_ms),
        );
        let master = Arc::new(Master {
            inner: Mutex::new(Inner {
                state,
                cluster: Cluster::default(),
                sessions: Sessions::new(),
            }),
            log,
            config,
            chunk_ops: ChunkOps::default(),
            deletions: tx,
            feed,
            notifier: Notifier::default(),
            _data_lock: data_lock,
            superseded: AtomicU64::new(0),
        });
        tokio::spawn(deleter::run(master.clone(), rx));
        tokio::spawn(housekeeping(master.clone()));
        tokio::spawn(crate::healer::run(master.clone()));
        tokio::spawn(exit_on_log_failure(master.clone()));
        Ok(master)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave half-applied metadata (apply validates
        // before it mutates), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `op` as the next record and queue it for the changelog. Returns the version
    /// to wait for with [`Master::durable`].
    pub fn commit(&self, inner: &mut Inner, op: Op) -> Result<u64, FsError> {
        self.refuse_if_superseded()?;
        if self.log.durable().failed {
            return Err(FsError::Io("metadata log is not writable".into()));
        }
        // Checked before applying: a refused change is never visible.
        // A record is a few hundred bytes: well inside the margin `has_room` keeps.
        if !self.log.has_room(0) {
            return Err(FsError::NoSpace);
        }
        let version = inner.state.version + 1;
        let origin = notices::ORIGIN.try_with(|s| *s).unwrap_or(0);
        let touched = self
            .notifier
            .watched_by_other_than(origin)
            .then(|| notices::Touched {
                origin,
                ..notices::touched(&inner.state, version, &op)
            });
        let rec = Record { op: Some(op) };
        let effects = inner.state.apply(version, &rec)?;
        if let Some(t) = touched {
            self.notifier.publish(t);
        }
        let payload = rec.encode_to_vec();
        self.log.submit(version, &payload);
        self.feed.publish(version, payload);
        for chunk in effects.freed_chunks {
            for c in inner.cluster.forget_chunk(chunk) {
                self.queue_delete(c.server, chunk, c.version);
            }
        }
        Ok(version)
    }

    /// Wait until `version` may be acknowledged to a client: durable here and, with
    /// `sync_metaloggers`, on enough metaloggers.
    pub async fn durable(&self, version: u64) -> Result<(), FsError> {
        self.locally_durable(version).await?;
        self.feed.replicated(version).await
    }

    /// Wait until `version` is in the master's own changelog on disk.
    pub async fn locally_durable(&self, version: u64) -> Result<(), FsError> {
        self.log
            .wait(version)
            .await
            .map_err(|e| FsError::Io(e.to_string()))
    }

    /// `chunk` is now at `version` on exactly `holders`. Every other copy missed the
    /// change: it is stale, never served again, and deleted.
    pub fn set_copies(&self, inner: &mut Inner, chunk: u64, version: u32, holders: &[u64]) {
        let stale: Vec<Copy> = inner
            .cluster
            .locations
            .get(&chunk)
            .map(|c| {
                c.iter()
                    .filter(|c| !holders.contains(&c.server))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for c in stale {
            inner.cluster.drop_copy(chunk, c.server);
            self.queue_delete(c.server, chunk, c.version);
        }
        for &s in holders {
            inner.cluster.add_copy(chunk, s, version);
        }
    }

    /// Delete `version` of `chunk` on `server` in the background. The exact version is
    /// named so a delete can never hit a newer copy made after it was decided.
    pub fn queue_delete(&self, server: u64, chunk: u64, version: u32) {
        let _ = self.deletions.send(Deletion {
            server,
            chunk,
            version,
        });
    }

    /// Write a metadata image without stopping clients: the state is cloned in O(1)
    /// (persistent maps) and written from the copy.
    pub async fn snapshot(&self) -> anyhow::Result<()> {
        let copy = {
            let inner = self.lock();
            self.log.rotate(inner.state.version + 1);
            inner.state.clone()
        };
        // Only a durable state may become an image: after a failed changelog write the
        // state holds changes that are not on disk (and whose requests got an error).
        self.locally_durable(copy.version).await?;
        let dir = self.config.data_dir.clone();
        let keep = self.config.snapshots_keep;
        let started = std::time::Instant::now();
        let version = copy.version;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            snapshot::write(&dir, &copy)?;
            snapshot::prune(&dir, keep)?;
            Ok(())
        })
        .await??;
        info!(
            version,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "metadata image written"
        );
        Ok(())
    }

    pub fn metadata_version(&self) -> u64 {
        self.lock().state.version
    }
}

/// A failed changelog write leaves changes in memory that are not on disk. Retrying
/// could report as durable what the kernel already dropped (the lesson of PostgreSQL's
/// fsync failures), so the master stops; a restart (systemd's `Restart=on-failure`)
/// loads exactly what is durable, and mounts ride it out as they do any master restart.
async fn exit_on_log_failure(master: Arc<Master>) {
    master.log.failed().await;
    error!("changelog write failed: exiting so that a restart loads only durable metadata");
    std::process::exit(1);
}

async fn housekeeping(master: Arc<Master>) {
    let snapshot_every = Duration::from_secs(master.config.snapshot_interval_secs.max(1));
    let timeout = Duration::from_secs(master.config.chunkserver_timeout_secs.max(1));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_snapshot = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let (orphans, deferred) = {
            let mut inner = master.lock();
            for id in inner.cluster.expire(timeout) {
                warn!(
                    server = id,
                    "chunkserver stopped heartbeating; its copies are not used"
                );
            }
            inner.cluster.expire_leases(Duration::from_secs(120));
            let mut orphans = crate::sessions::unreferenced_orphans(&inner);
            crate::sessions::mark_orphans_checked(&mut inner);
            for ino in inner.sessions.expire(crate::sessions::SESSION_TIMEOUT) {
                if inner.state.inodes.get(&ino).is_some_and(|n| n.nlink == 0) {
                    orphans.push(ino);
                }
            }
            (orphans, inner.sessions.take_deferred())
        };
        for ino in orphans {
            crate::ops::purge_or_defer(&master, ino, false).await;
        }
        for ino in deferred {
            crate::ops::purge_or_defer(&master, ino, true).await;
        }
        if last_snapshot.elapsed() >= snapshot_every {
            last_snapshot = tokio::time::Instant::now();
            if let Err(e) = master.snapshot().await {
                error!(error = %e, "periodic metadata image failed");
            }
        }
    }
}
