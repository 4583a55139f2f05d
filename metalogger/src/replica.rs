//! A standby's in-memory metadata: every record the store takes is applied with the
//! master's own `State::apply`, so promotion starts the master from here without replay.

use elkfs_master::snapshot::{self, SnapshotError};
use elkfs_master::state::State;
use elkfs_proto::changelog::Record;
use elkfs_proto::feed::FeedRecord;
use elkfs_proto::FsError;
use prost::Message;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("record {version} arrived before any image")]
    NoImage { version: u64 },
    #[error("record {got} does not follow version {have}")]
    Discontinuous { have: u64, got: u64 },
    #[error("record {version} is undecodable: {error}")]
    Undecodable {
        version: u64,
        error: prost::DecodeError,
    },
    #[error("record {version} does not apply as it did on the master: {error}")]
    Diverged { version: u64, error: FsError },
    #[error("{0}")]
    Image(#[from] SnapshotError),
}

/// What the status call shows of a replica.
#[derive(Default)]
pub struct Held {
    /// An image has been loaded (version 0 is a valid, empty filesystem).
    pub loaded: AtomicBool,
    /// The version applied.
    pub version: AtomicU64,
}

pub struct Replica {
    state: Option<State>,
    held: Arc<Held>,
}

impl Replica {
    /// Start from what the data directory held (`None`: wait for the master's image).
    pub fn new(state: Option<State>) -> Replica {
        let held = Held {
            loaded: AtomicBool::new(state.is_some()),
            version: AtomicU64::new(state.as_ref().map_or(0, |s| s.version)),
        };
        Replica {
            state,
            held: Arc::new(held),
        }
    }

    pub fn held(&self) -> Arc<Held> {
        self.held.clone()
    }

    /// Apply consecutive records, as the master did.
    pub fn apply(&mut self, records: &[FeedRecord]) -> Result<(), ReplicaError> {
        for r in records {
            let state = self
                .state
                .as_mut()
                .ok_or(ReplicaError::NoImage { version: r.version })?;
            if r.version != state.version + 1 {
                return Err(ReplicaError::Discontinuous {
                    have: state.version,
                    got: r.version,
                });
            }
            let rec =
                Record::decode(&r.payload[..]).map_err(|error| ReplicaError::Undecodable {
                    version: r.version,
                    error,
                })?;
            state
                .apply(r.version, &rec)
                .map_err(|error| ReplicaError::Diverged {
                    version: r.version,
                    error,
                })?;
            self.held.version.store(r.version, Ordering::Relaxed);
        }
        Ok(())
    }

    /// An image was installed in the data directory: continue from it unless the
    /// records applied here already go further (a periodic image refresh).
    pub fn image_installed(&mut self, path: &Path, version: u64) -> Result<(), ReplicaError> {
        if self.state.as_ref().is_some_and(|s| s.version >= version) {
            return Ok(());
        }
        let state = snapshot::load(path)?;
        self.held.version.store(state.version, Ordering::Relaxed);
        self.held.loaded.store(true, Ordering::Relaxed);
        self.state = Some(state);
        Ok(())
    }

    pub fn into_state(self) -> Option<State> {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_master::state::Ts;
    use elkfs_proto::changelog::record::Op;
    use elkfs_proto::changelog::Mknod;
    use elkfs_proto::meta::NodeKind;

    fn mknod(version: u64, name: &str) -> FeedRecord {
        let rec = Record {
            op: Some(Op::Mknod(Mknod {
                parent: 1,
                name: name.as_bytes().to_vec(),
                ino: version + 1,
                kind: NodeKind::File as i32,
                mode: 0o644,
                goal: 1,
                ..Default::default()
            })),
        };
        FeedRecord {
            version,
            payload: rec.encode_to_vec(),
            committed_unix_micros: 0,
        }
    }

    #[test]
    fn applies_records_in_order_and_refuses_gaps() {
        let mut r = Replica::new(Some(State::new(1, Ts::default())));
        r.apply(&[mknod(1, "a"), mknod(2, "b")]).expect("apply");
        assert_eq!(r.held().version.load(Ordering::Relaxed), 2);
        assert!(matches!(
            r.apply(&[mknod(4, "c")]),
            Err(ReplicaError::Discontinuous { have: 2, got: 4 })
        ));
        // The same name again fails exactly as it would on the master.
        assert!(matches!(
            r.apply(&[mknod(3, "a")]),
            Err(ReplicaError::Diverged { version: 3, .. })
        ));
        let state = r.into_state().expect("state");
        assert_eq!(state.version, 2);
    }

    #[test]
    fn records_wait_for_an_image() {
        let mut r = Replica::new(None);
        assert!(matches!(
            r.apply(&[mknod(1, "a")]),
            Err(ReplicaError::NoImage { version: 1 })
        ));
    }
}
