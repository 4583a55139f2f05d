//! A standby's control service (`elkfs.standby.Standby`): its state, and the promotion
//! request, which is checked here and carried out by [`crate::promote`].
//!
//! Promotion is refused once it has happened or while it is under way (one master per
//! standby), before the standby holds any metadata, and while any master it follows still
//! answers: a reachable master is either active (two masters would split the metadata)
//! or ahead of this standby. Stop that master first.

use crate::replica::Held;
use elkfs_proto::admin::StatusRequest;
use elkfs_proto::standby::standby_server::Standby;
use elkfs_proto::standby::{
    PromoteReply, PromoteRequest, StandbyStatusReply, StandbyStatusRequest,
};
use elkfs_proto::{transport, FsError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// How long a master gets to answer the liveness check before promotion.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standby,
    Promoting,
    Master,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Promoting => "promoting",
            Role::Master => "master",
        }
    }
}

/// What the daemon's main task needs to become the master: the master address already
/// bound (so a busy address fails the request while the standby still follows).
pub struct PromoteOrder {
    pub listener: TcpListener,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<PromoteReply, FsError>>,
}

pub struct Control {
    pub role: Mutex<Role>,
    /// Metadata held in memory.
    pub held: Arc<Held>,
    pub following: Arc<Mutex<String>>,
    pub master_listen: String,
    /// The masters this standby follows (its own `master_listen` is skipped).
    pub masters: Vec<String>,
    pub orders: mpsc::Sender<PromoteOrder>,
}

impl Control {
    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Standby → promoting, or why not.
    fn claim(&self) -> Result<(), FsError> {
        let mut role = self.role();
        match *role {
            Role::Standby => {
                *role = Role::Promoting;
                Ok(())
            }
            Role::Promoting => Err(FsError::Invalid(
                "a promotion of this standby is already under way".into(),
            )),
            Role::Master => Err(FsError::Invalid(format!(
                "already promoted: this standby is the master on {}",
                self.master_listen
            ))),
        }
    }

    async fn promote(&self) -> Result<PromoteReply, FsError> {
        let started = Instant::now();
        let version = self.held.version.load(Ordering::Relaxed);
        if !self.held.loaded.load(Ordering::Relaxed) {
            return Err(FsError::Invalid(
                "this standby has no metadata yet (no image received from a master)".into(),
            ));
        }
        for addr in self.masters.iter().filter(|a| **a != self.master_listen) {
            if let Some(theirs) = answering_master(addr).await {
                return Err(FsError::Invalid(format!(
                    "master {addr} is still active (metadata version {theirs}, this standby \
                     holds {version}); stop it before promoting"
                )));
            }
        }
        let listener = TcpListener::bind(&self.master_listen)
            .await
            .map_err(|e| FsError::Io(format!("binding {}: {e}", self.master_listen)))?;
        let (reply, answer) = oneshot::channel();
        let order = PromoteOrder {
            listener,
            started,
            reply,
        };
        self.orders
            .send(order)
            .await
            .map_err(|_| FsError::Io("the standby is shutting down".into()))?;
        answer
            .await
            .map_err(|_| FsError::Io("promotion failed; see the standby's log".into()))?
    }
}

/// The metadata version of the master at `addr` if it answers.
async fn answering_master(addr: &str) -> Option<u64> {
    let channel = transport::channel(addr).ok()?;
    let mut client = transport::admin_client(channel);
    match tokio::time::timeout(PROBE_TIMEOUT, client.status(StatusRequest {})).await {
        Ok(Ok(reply)) => Some(reply.into_inner().metadata_version),
        _ => None,
    }
}

pub struct ControlService(pub Arc<Control>);

#[tonic::async_trait]
impl Standby for ControlService {
    async fn status(
        &self,
        _: Request<StandbyStatusRequest>,
    ) -> Result<Response<StandbyStatusReply>, Status> {
        let c = &self.0;
        let following = c
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Response::new(StandbyStatusReply {
            role: c.role().name().into(),
            version: c.held.version.load(Ordering::Relaxed),
            master_listen: c.master_listen.clone(),
            following,
        }))
    }

    async fn promote(&self, _: Request<PromoteRequest>) -> Result<Response<PromoteReply>, Status> {
        self.0.claim()?;
        info!("promotion requested");
        let result = self.0.promote().await;
        let mut role = self.0.role();
        match &result {
            Ok(r) => {
                *role = Role::Master;
                info!(version = r.version, elapsed_ms = r.elapsed_ms, "promoted");
            }
            // Refused before the follower stopped: still a standby. (A failure after
            // that ends the process, see `promote`.)
            Err(e) => {
                if *role == Role::Promoting {
                    *role = Role::Standby;
                }
                warn!(error = %e, "promotion refused");
            }
        }
        Ok(Response::new(result?))
    }
}
