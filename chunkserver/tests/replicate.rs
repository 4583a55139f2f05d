//! Replication between chunkservers over real gRPC on loopback: destinations are the crate's
//! service in-process (so the test can look at their stores); the source killed mid-stream
//! is the real `elkfs-chunkserver` binary, SIGSTOPped and then SIGKILLed.

use elkfs_chunkserver::chunk_file::HEADER_SIZE;
use elkfs_chunkserver::master_link::{DamageReport, DAMAGE_QUEUE};
use elkfs_chunkserver::service::{self, ChunkService};
use elkfs_chunkserver::store::{chunk_file_name, Store, TMP_DIR};
use elkfs_proto::chunk::{ReadRequest, ReplicateRequest};
use elkfs_proto::limits::CHUNK_SIZE;
use elkfs_proto::transport::{channel, chunk_client};
use elkfs_proto::FsError;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

struct Server {
    addr: String,
    store: Arc<Store>,
    damage: mpsc::Receiver<DamageReport>,
    dir: tempfile::TempDir,
}

async fn start_server(max_replications: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, damage) = mpsc::channel(DAMAGE_QUEUE);
    let svc = ChunkService::new(store.clone(), addr.clone(), tx, max_replications);
    tokio::spawn(service::serve(listener, svc, std::future::pending()));
    Server {
        addr,
        store,
        damage,
        dir,
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

fn put_chunk(store: &Store, id: u64, version: u32, data: &[u8]) {
    store.create(id, version).unwrap();
    let w = store.writer(id, version).unwrap();
    for (i, piece) in data.chunks(8 << 20).enumerate() {
        store.write(&w, (i as u64) << 23, piece).unwrap();
    }
}

fn chunk_path(dir: &Path, id: u64, version: u32) -> PathBuf {
    dir.join(format!("{:02X}", id & 0xFF))
        .join(chunk_file_name(id, version))
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join(TMP_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

async fn replicate(dest: &str, id: u64, version: u32, source: &str) -> Result<(), FsError> {
    chunk_client(channel(dest).unwrap())
        .replicate(ReplicateRequest {
            chunk_id: id,
            version,
            source: source.to_owned(),
        })
        .await
        .map(|_| ())
        .map_err(FsError::from)
}

async fn read_all(addr: &str, id: u64, version: u32) -> Result<Vec<u8>, FsError> {
    let mut client = chunk_client(channel(addr).unwrap());
    let mut out = Vec::new();
    while out.len() < CHUNK_SIZE as usize {
        let r = client
            .read(ReadRequest {
                chunk_id: id,
                version,
                offset: out.len() as u32,
                length: 8 << 20,
            })
            .await
            .map_err(FsError::from)?
            .into_inner();
        if r.data.is_empty() {
            break;
        }
        out.extend_from_slice(&r.data);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_is_byte_identical_at_the_same_version() {
    let src = start_server(2).await;
    let dst = start_server(2).await;
    let cases: [(u64, u32, Vec<u8>); 3] = [
        (0x101, 7, pattern((10 << 20) + 12_345, 1)),
        (0x202, 3, pattern(64 << 20, 2)),
        (0x303, 1, Vec::new()),
    ];
    for (id, version, data) in &cases {
        put_chunk(&src.store, *id, *version, data);
        replicate(&dst.addr, *id, *version, &src.addr)
            .await
            .unwrap();
        assert_eq!(&read_all(&dst.addr, *id, *version).await.unwrap(), data);
        let held = dst.store.chunk_list();
        let info = held.iter().find(|c| c.chunk_id == *id).unwrap();
        assert_eq!((info.version, info.length as usize), (*version, data.len()));
        // The copy is the normal chunk file of that version, with the source's header.
        let path = chunk_path(dst.dir.path(), *id, *version);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_SIZE + data.len() as u64
        );
        assert_eq!(std::fs::read(&path).unwrap()[..4096], {
            let p = chunk_path(src.dir.path(), *id, *version);
            std::fs::read(p).unwrap()[..4096].to_vec()
        });
    }
    assert!(tmp_files(dst.dir.path()).is_empty());
    assert_eq!(dst.store.space().chunks, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_nothing_behind() {
    let mut src = start_server(2).await;
    let dst = start_server(2).await;
    let data = pattern(3 << 20, 5);
    put_chunk(&src.store, 0x11, 4, &data);

    // Wrong or missing version at the source: as a read would answer.
    assert!(matches!(
        replicate(&dst.addr, 0x11, 5, &src.addr).await,
        Err(FsError::Stale(_))
    ));
    assert!(matches!(
        replicate(&dst.addr, 0x12, 1, &src.addr).await,
        Err(FsError::NotFound)
    ));

    // The destination holds a version of the chunk already (any version).
    dst.store.create(0x11, 2).unwrap();
    assert!(matches!(
        replicate(&dst.addr, 0x11, 4, &src.addr).await,
        Err(FsError::Exists)
    ));
    assert!(chunk_path(dst.dir.path(), 0x11, 2).exists());
    assert!(!chunk_path(dst.dir.path(), 0x11, 4).exists());
    dst.store.delete(0x11, 2).unwrap();

    // A flipped byte in the source's second MiB: Damaged, no file, damage reported by the
    // source (about its own copy), none by the destination.
    let path = chunk_path(src.dir.path(), 0x11, 4);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = HEADER_SIZE + (1 << 20) + 777;
    f.write_all_at(&[data[(1 << 20) + 777] ^ 0x10], at).unwrap();
    drop(f);
    let res = replicate(&dst.addr, 0x11, 4, &src.addr).await;
    assert!(matches!(res, Err(FsError::Damaged(_))), "{res:?}");
    assert!(dst.store.chunk_list().is_empty());
    assert!(!chunk_path(dst.dir.path(), 0x11, 4).exists());
    assert!(tmp_files(dst.dir.path()).is_empty());
    assert_eq!(
        src.damage.recv().await,
        Some(DamageReport {
            chunk_id: 0x11,
            version: 4
        })
    );
}

/// The real chunkserver binary serving `dir` on a free port (its master is unreachable).
struct Process {
    child: Child,
    addr: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_source(dir: &Path) -> Process {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_elkfs-chunkserver"))
        .args([
            "--listen",
            &addr,
            "--master",
            &refused,
            "--reserve-bytes",
            "0",
        ])
        .arg("--data")
        .arg(dir)
        .args(["--scrub-bytes-per-sec", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Process { child, addr };
    // Ready when it answers a read (with NotFound) instead of refusing the connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match read_all(&p.addr, 1, 1).await {
            Err(FsError::Unavailable(_)) => {
                assert!(tokio::time::Instant::now() < deadline, "source not ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return p,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_killed_mid_stream_leaves_no_temp_file_and_busy_server_refuses() {
    let src_dir = tempfile::tempdir().unwrap();
    let data = pattern(64 << 20, 9);
    {
        let store = Store::open(&[src_dir.path().to_owned()], 0).unwrap();
        put_chunk(&store, 0x77, 2, &data);
        put_chunk(&store, 0x78, 1, &data[..1 << 20]);
    }
    let mut source = spawn_source(src_dir.path()).await;
    let dst = start_server(1).await;

    let (dst_addr, src_addr) = (dst.addr.clone(), source.addr.clone());
    let first = tokio::spawn(async move { replicate(&dst_addr, 0x77, 2, &src_addr).await });
    // Freeze the source as soon as the copy has started landing: most of the chunk is
    // then still on the source's side.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tmp_files(dst.dir.path()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "copy never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pid = source.child.id() as libc::pid_t;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    // The one replication slot is taken: a second order is refused at once.
    let busy = replicate(&dst.addr, 0x78, 1, &source.addr).await;
    assert!(matches!(busy, Err(FsError::Unavailable(_))), "{busy:?}");

    source.child.kill().unwrap();
    source.child.wait().unwrap();
    let res = first.await.unwrap();
    assert!(matches!(res, Err(FsError::Unavailable(_))), "{res:?}");
    assert!(tmp_files(dst.dir.path()).is_empty());
    assert!(dst.store.chunk_list().is_empty());
    assert!(!chunk_path(dst.dir.path(), 0x77, 2).exists());
}

#[test]
fn temp_files_left_by_a_crash_are_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(&[dir.path().to_owned()], 0).unwrap());
    let stray = dir
        .path()
        .join(TMP_DIR)
        .join("chunk_0000000000000077_00000002.elk.5");
    std::fs::write(&stray, b"partial").unwrap();
    let store = Store::open(&[dir.path().to_owned()], 0).unwrap();
    assert!(!stray.exists());
    assert!(store.chunk_list().is_empty());
}
