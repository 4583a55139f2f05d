//! The master link against a fake in-process master: registration retried until the master
//! appears, re-registration on request, heartbeats with space, damage reports, bucket
//! digests with the chunk lists split over several calls, failover between masters.

use elkfs_chunkserver::chunk_file::MAGIC;
use elkfs_chunkserver::master_link::epoch::Epoch;
use elkfs_chunkserver::master_link::{load_or_create_uuid, DamageReport, MasterLink};
use elkfs_chunkserver::store::{chunk_file_name, Store};
use elkfs_proto::registry::registry_server::Registry;
use elkfs_proto::registry::{
    BucketDigest, BucketReport, DamagedRequest, Empty, HeartbeatReply, HeartbeatRequest,
    LeaveRequest, RegisterReply, RegisterRequest,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
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
    leaves: Arc<Mutex<Vec<u64>>>,
    /// Like the real master: remember each bucket's digest and list only the buckets that
    /// changed. Otherwise every bucket is listed, as by a master that knows nothing.
    digest_aware: bool,
    known: Arc<Mutex<HashMap<u32, BucketDigest>>>,
}

#[tonic::async_trait]
impl Registry for FakeMaster {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let mut regs = self.registers.lock().unwrap();
        let r = r.into_inner();
        let list_buckets = if self.digest_aware {
            let mut known = self.known.lock().unwrap();
            let now: HashMap<u32, BucketDigest> =
                r.buckets.iter().map(|b| (b.bucket, *b)).collect();
            let mut differ: Vec<u32> = now
                .keys()
                .chain(known.keys())
                .filter(|b| now.get(b) != known.get(b))
                .copied()
                .collect::<HashSet<u32>>()
                .into_iter()
                .collect();
            differ.sort_unstable();
            *known = now;
            differ
        } else {
            r.buckets.iter().map(|b| b.bucket).collect()
        };
        regs.push(r);
        Ok(Response::new(RegisterReply {
            server_id: 40 + regs.len() as u64,
            list_buckets,
            epoch: 0,
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

    async fn leave(&self, r: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        self.leaves.lock().unwrap().push(r.into_inner().server_id);
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
        epoch: Arc::new(Epoch::load(dir.path()).unwrap()),
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
    // Reported once, and again after the re-registration: that master may have forgotten.
    let damaged = fake.damaged.lock().unwrap();
    let reported: Vec<_> = damaged.iter().map(|d| (d.chunk_id, d.version)).collect();
    assert_eq!(reported, vec![(77, 4), (77, 4)]);
    // Stopping said goodbye, under the current registration's id.
    assert_eq!(*fake.leaves.lock().unwrap(), vec![42]);
}

/// Serves `fake` on `addr` until `stop` fires.
fn serve_fake(
    fake: FakeMaster,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let svc = elkfs_proto::transport::registry_service(fake);
    tokio::spawn(
        elkfs_proto::transport::server()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop,
            ),
    );
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Header-only chunk files (sparse, so many of them cost little), found by the scan.
fn make_chunk_files(dir: &Path, ids: impl Iterator<Item = u64>) {
    for id in ids {
        let sub = dir.join(format!("{:02X}", id & 0xFF));
        std::fs::create_dir_all(&sub).unwrap();
        let mut header = Vec::with_capacity(20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        let f = std::fs::File::create(sub.join(chunk_file_name(id, 1))).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &header, 0).unwrap();
        f.set_len(8192).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_chunks_are_listed_in_bounded_calls_and_unchanged_buckets_not_at_all() {
    // More than one call holds (50,000), few enough to create quickly.
    const CHUNKS: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    make_chunk_files(dir.path(), 1..=CHUNKS);
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    assert_eq!(store.space().chunks, CHUNKS);

    let fake = FakeMaster {
        digest_aware: true,
        ..FakeMaster::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap().to_string();
    serve_fake(fake.clone(), listener, std::future::pending());
    let link = MasterLink {
        store,
        masters: vec![master],
        addr: "127.0.0.1:9999".into(),
        uuid: "many".into(),
        heartbeat: Duration::from_millis(100),
        epoch: Arc::new(Epoch::load(dir.path()).unwrap()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_damage_tx, damage_rx) = mpsc::channel(16);
    let task = tokio::spawn(link.run(damage_rx, stop_rx));
    // The first heartbeat asks for a second registration: nothing changed in between.
    wait_for("a second registration and a heartbeat after it", || {
        fake.heartbeats.lock().unwrap().len() >= 2
    })
    .await;
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();

    let regs = fake.registers.lock().unwrap();
    assert!(regs.len() >= 2);
    assert_eq!(regs[0].buckets.len(), 256);
    assert_eq!(
        regs[0].buckets.iter().map(|b| b.chunks).sum::<u64>(),
        CHUNKS
    );
    assert_eq!(regs[1].buckets, regs[0].buckets);
    // Only the first registration listed chunks: several calls, bounded, whole buckets,
    // `done` on the last only.
    let reports = fake.reports.lock().unwrap();
    assert!(reports.len() >= 2, "{} calls", reports.len());
    let mut buckets = HashSet::new();
    let mut ids = HashSet::new();
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.chunks.len() <= 50_000,
            "{} chunks in one call",
            r.chunks.len()
        );
        assert_eq!(r.done, i + 1 == reports.len());
        for c in &r.chunks {
            assert!(r.buckets.contains(&((c.chunk_id & 0xFF) as u32)));
            assert!(ids.insert(c.chunk_id));
        }
        for b in &r.buckets {
            assert!(buckets.insert(*b), "bucket {b} listed twice");
        }
    }
    assert_eq!(buckets.len(), 256);
    assert_eq!(ids.len() as u64, CHUNKS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_master_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    store.create(0x42, 1).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    // A standby that is not listening, the active master, another standby.
    let (refused, a_addr, b_addr) = (free(), free(), free());
    let (a, b) = (FakeMaster::default(), FakeMaster::default());
    let (a_stop_tx, a_stop) = tokio::sync::oneshot::channel::<()>();
    serve_fake(
        a.clone(),
        tokio::net::TcpListener::bind(&a_addr).await.unwrap(),
        async move {
            let _ = a_stop.await;
        },
    );
    let link = MasterLink {
        store,
        masters: vec![refused, a_addr, b_addr.clone()],
        addr: "127.0.0.1:9998".into(),
        uuid: "failover".into(),
        heartbeat: Duration::from_millis(100),
        epoch: Arc::new(Epoch::load(dir.path()).unwrap()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (damage_tx, damage_rx) = mpsc::channel(16);
    let task = tokio::spawn(link.run(damage_rx, stop_rx));
    wait_for("registration with the active master", || {
        a.heartbeats.lock().unwrap().len() >= 2
    })
    .await;

    // The active master dies; the standby after it is promoted.
    a_stop_tx.send(()).unwrap();
    serve_fake(
        b.clone(),
        tokio::net::TcpListener::bind(&b_addr).await.unwrap(),
        std::future::pending(),
    );
    wait_for("registration with the promoted standby", || {
        !b.registers.lock().unwrap().is_empty()
    })
    .await;
    damage_tx
        .send(DamageReport {
            chunk_id: 0x42,
            version: 1,
        })
        .await
        .unwrap();
    wait_for("the damage report at the new master", || {
        !b.damaged.lock().unwrap().is_empty()
    })
    .await;
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();

    let regs = b.registers.lock().unwrap();
    assert_eq!(regs[0].uuid, "failover");
    assert_eq!(regs[0].buckets.len(), 1);
    let reports = b.reports.lock().unwrap();
    assert_eq!(reports[0].chunks.len(), 1);
    assert!(reports[0].done);
    assert!(a.damaged.lock().unwrap().is_empty());
}
