//! The master link against a fake in-process master: registration retried until the master
//! appears, re-registration on request, heartbeats with space, damage reports.

use elkfs_chunkserver::master_link::{load_or_create_uuid, DamageReport, MasterLink};
use elkfs_chunkserver::store::Store;
use elkfs_proto::registry::registry_server::Registry;
use elkfs_proto::registry::{
    BucketReport, DamagedRequest, Empty, HeartbeatReply, HeartbeatRequest, RegisterReply,
    RegisterRequest,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

#[derive(Default, Clone)]
struct FakeMaster {
    registers: Arc<Mutex<Vec<RegisterRequest>>>,
    reports: Arc<Mutex<Vec<BucketReport>>>,
    heartbeats: Arc<Mutex<Vec<HeartbeatRequest>>>,
    damaged: Arc<Mutex<Vec<DamagedRequest>>>,
}

#[tonic::async_trait]
impl Registry for FakeMaster {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let mut regs = self.registers.lock().unwrap();
        let r = r.into_inner();
        // Like a master that knows nothing of the server: every bucket is listed.
        let list_buckets = r.buckets.iter().map(|b| b.bucket).collect();
        regs.push(r);
        Ok(Response::new(RegisterReply {
            server_id: 40 + regs.len() as u64,
            list_buckets,
        }))
    }

    async fn report_buckets(&self, r: Request<BucketReport>) -> Result<Response<Empty>, Status> {
        self.reports.lock().unwrap().push(r.into_inner());
        Ok(Response::new(Empty {}))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let mut hbs = self.heartbeats.lock().unwrap();
        hbs.push(r.into_inner());
        // The first heartbeat pretends the master forgot us.
        Ok(Response::new(HeartbeatReply {
            reregister: hbs.len() == 1,
        }))
    }

    async fn report_damaged(&self, r: Request<DamagedRequest>) -> Result<Response<Empty>, Status> {
        self.damaged.lock().unwrap().push(r.into_inner());
        Ok(Response::new(Empty {}))
    }
}

#[test]
fn uuid_is_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let a = load_or_create_uuid(dir.path()).unwrap();
    assert_eq!(a.len(), 36);
    assert_eq!(load_or_create_uuid(dir.path()).unwrap(), a);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(load_or_create_uuid(other.path()).unwrap(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_when_master_appears_and_reregisters_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    store.create(77, 4).unwrap();
    // A free port for a master that is not up yet.
    let master_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let link = MasterLink {
        store: store.clone(),
        masters: vec![master_addr.to_string()],
        addr: "127.0.0.1:9999".into(),
        uuid: "test-uuid".into(),
        heartbeat: Duration::from_millis(200),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (damage_tx, damage_rx) = mpsc::channel(16);
    let task = tokio::spawn(link.run(damage_rx, stop_rx));
    damage_tx
        .send(DamageReport {
            chunk_id: 77,
            version: 4,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let fake = FakeMaster::default();
    let listener = tokio::net::TcpListener::bind(master_addr).await.unwrap();
    let svc = elkfs_proto::transport::registry_service(fake.clone());
    tokio::spawn(
        elkfs_proto::transport::server()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fake.registers.lock().unwrap().len() < 2 || fake.heartbeats.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "link did not register twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();

    let regs = fake.registers.lock().unwrap();
    assert_eq!(regs[0].uuid, "test-uuid");
    assert_eq!(regs[0].addr, "127.0.0.1:9999");
    assert_eq!(regs[0].buckets.len(), 1);
    assert_eq!(
        (regs[0].buckets[0].bucket, regs[0].buckets[0].chunks),
        (77, 1)
    );
    let reports = fake.reports.lock().unwrap();
    assert_eq!(reports[0].buckets, vec![77]);
    assert_eq!(reports[0].chunks.len(), 1);
    assert_eq!(
        (reports[0].chunks[0].chunk_id, reports[0].chunks[0].version),
        (77, 4)
    );
    let space = regs[0].space.unwrap();
    assert_eq!(space.chunks, 1);
    assert!(space.total_bytes > 0);
    let hbs = fake.heartbeats.lock().unwrap();
    assert_eq!(hbs[0].server_id, 41);
    assert_eq!(hbs.last().unwrap().server_id, 42);
    let damaged = fake.damaged.lock().unwrap();
    assert_eq!(damaged.len(), 1);
    assert_eq!((damaged[0].chunk_id, damaged[0].version), (77, 4));
}
