//! In-process gRPC tests: two chunkservers on ephemeral ports, chain writes through both,
//! reads back from each, failures named by address, damage reported.

use elkfs_chunkserver::master_link::{DamageReport, DAMAGE_QUEUE};
use elkfs_chunkserver::service::{self, ChunkService};
use elkfs_chunkserver::store::Store;
use elkfs_proto::chunk::chunk_client::ChunkClient;
use elkfs_proto::chunk::write_message::Msg;
use elkfs_proto::chunk::{ReadRequest, WriteData, WriteMessage, WriteStart, WriteSync};
use elkfs_proto::transport::{channel, chunk_client};
use elkfs_proto::FsError;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::transport::Channel;

struct Server {
    addr: String,
    store: Arc<Store>,
    damage: mpsc::Receiver<DamageReport>,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&[dir.path().to_owned()], 0).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, damage) = mpsc::channel(DAMAGE_QUEUE);
    let svc = ChunkService::new(store.clone(), addr.clone(), tx, 2);
    tokio::spawn(service::serve(listener, svc, std::future::pending()));
    Server {
        addr,
        store,
        damage,
        _dir: dir,
    }
}

fn client(addr: &str) -> ChunkClient<Channel> {
    chunk_client(channel(addr).unwrap())
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// Streams `pieces` (offset, data) then a sync to `addr`; returns the acked seqs or the
/// stream's error.
async fn chain_write(
    addr: &str,
    id: u64,
    version: u32,
    chain: Vec<String>,
    pieces: Vec<(u32, Vec<u8>)>,
) -> Result<Vec<u64>, tonic::Status> {
    let start = WriteStart {
        chunk_id: id,
        version,
        chain,
        create: false,
    };
    stream_write(addr, start, pieces).await
}

/// [`chain_write`] from a given WriteStart.
async fn stream_write(
    addr: &str,
    start: WriteStart,
    pieces: Vec<(u32, Vec<u8>)>,
) -> Result<Vec<u64>, tonic::Status> {
    let n = pieces.len() as u64;
    let mut msgs = vec![WriteMessage {
        msg: Some(Msg::Start(start)),
    }];
    for (seq, (offset, data)) in pieces.into_iter().enumerate() {
        msgs.push(WriteMessage {
            msg: Some(Msg::Data(WriteData {
                seq: seq as u64,
                offset,
                data: data.into(),
            })),
        });
    }
    msgs.push(WriteMessage {
        msg: Some(Msg::Sync(WriteSync { seq: n })),
    });
    let mut acks = client(addr)
        .write(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    let mut seqs = Vec::new();
    let t = Instant::now();
    while let Some(ack) = acks.message().await? {
        if ack.seq + 1 == n {
            eprintln!("data acked after {:?}", t.elapsed());
        }
        seqs.push(ack.seq);
    }
    eprintln!("sync acked after {:?}", t.elapsed());
    Ok(seqs)
}

async fn read_all(addr: &str, id: u64, version: u32) -> Result<Vec<u8>, tonic::Status> {
    let mut out = Vec::new();
    loop {
        let r = client(addr)
            .read(ReadRequest {
                chunk_id: id,
                version,
                offset: out.len() as u32,
                length: (8 << 20).min((64 << 20) - out.len() as u32),
            })
            .await?
            .into_inner();
        if r.data.is_empty() || out.len() + r.data.len() == 64 << 20 {
            out.extend_from_slice(&r.data);
            return Ok(out);
        }
        out.extend_from_slice(&r.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_write_through_two_servers() {
    let a = start_server().await;
    let b = start_server().await;
    let id = 0xABCD_0001;
    a.store.create(id, 1).unwrap();
    b.store.create(id, 1).unwrap();
    const MIB: usize = 1 << 20;
    let pieces: Vec<(u32, Vec<u8>)> = (0..8)
        .map(|i| ((i * MIB) as u32, pattern(MIB, i as u8)))
        .chain([
            (100, pattern(5000, 200)),
            ((9 * MIB + 77) as u32, pattern(333, 7)),
        ])
        .collect();
    let mut model = vec![0u8; 9 * MIB + 77 + 333];
    for (off, d) in &pieces {
        model[*off as usize..*off as usize + d.len()].copy_from_slice(d);
    }
    let n = pieces.len() as u64;
    let seqs = chain_write(&a.addr, id, 1, vec![b.addr.clone()], pieces)
        .await
        .unwrap();
    assert_eq!(seqs, (0..=n).collect::<Vec<_>>());
    assert_eq!(read_all(&b.addr, id, 1).await.unwrap(), model);
    assert_eq!(read_all(&a.addr, id, 1).await.unwrap(), model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chunk_is_made_by_its_first_write_on_every_server_of_the_chain() {
    use elkfs_proto::chunk::CreateRequest;
    let a = start_server().await;
    let b = start_server().await;
    let id = 0xABCD_0003;
    // The master's create order reached the second server only.
    client(&b.addr)
        .create(CreateRequest {
            chunk_id: id,
            version: 1,
        })
        .await
        .unwrap();
    let data = pattern(150_000, 9);
    let plain = WriteStart {
        chunk_id: id,
        version: 1,
        chain: vec![b.addr.clone()],
        create: false,
    };
    let alone = WriteStart {
        chain: vec![],
        ..plain.clone()
    };
    let e = stream_write(&a.addr, alone, vec![(0, data.clone())])
        .await
        .unwrap_err();
    assert_eq!(FsError::from(e), FsError::NotFound, "no create, no chunk");
    let new = WriteStart {
        create: true,
        ..plain
    };
    stream_write(&a.addr, new, vec![(10, data.clone())])
        .await
        .unwrap();
    let mut model = vec![0u8; 10];
    model.extend_from_slice(&data);
    for s in [&a, &b] {
        assert!(
            read_all(&s.addr, id, 1).await.unwrap() == model,
            "{}",
            s.addr
        );
    }
    // The master's order arriving late leaves the written chunk as it is.
    client(&a.addr)
        .create(CreateRequest {
            chunk_id: id,
            version: 1,
        })
        .await
        .unwrap();
    assert!(read_all(&a.addr, id, 1).await.unwrap() == model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_write_throughput() {
    let a = start_server().await;
    let b = start_server().await;
    let id = 0xABCD_0002;
    a.store.create(id, 1).unwrap();
    b.store.create(id, 1).unwrap();
    const MIB: usize = 1 << 20;
    let pieces: Vec<(u32, Vec<u8>)> = (0..64)
        .map(|i| ((i * MIB) as u32, vec![i as u8; MIB]))
        .collect();
    let t = Instant::now();
    chain_write(&a.addr, id, 1, vec![b.addr.clone()], pieces)
        .await
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "chain of 2, 64 x 1 MiB + fdatasync: {:.0} MB/s",
        64.0 * MIB as f64 / secs / 1e6
    );
    let back = read_all(&b.addr, id, 1).await.unwrap();
    assert_eq!(back.len(), 64 * MIB);
    assert!(back[63 * MIB..].iter().all(|&x| x == 63));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_failures_name_the_server() {
    let a = start_server().await;
    let b = start_server().await;
    let id = 0xABCD_0003;
    a.store.create(id, 1).unwrap();
    // b holds another version: its Stale must reach the client, naming b.
    b.store.create(id, 2).unwrap();
    let err = chain_write(&a.addr, id, 1, vec![b.addr.clone()], vec![(0, vec![1; 10])])
        .await
        .unwrap_err();
    assert!(err.message().contains(&b.addr), "{err:?}");
    assert!(matches!(FsError::from(err), FsError::Stale(_)));

    // A dead address.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let err = chain_write(&a.addr, id, 1, vec![dead.clone()], vec![(0, vec![1; 10])])
        .await
        .unwrap_err();
    assert!(err.message().contains(&dead), "{err:?}");
    assert!(FsError::from(err).is_retryable());

    // Local failures name the first server: writing past the chunk end.
    let err = chain_write(&a.addr, id, 1, vec![], vec![((64 << 20) - 1, vec![1; 2])])
        .await
        .unwrap_err();
    assert!(err.message().contains(&a.addr), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_damage_over_grpc() {
    use elkfs_proto::chunk::{
        ChunkCopy, CreateRequest, DeleteRequest, ReadRequest, SetVersionRequest, TruncateRequest,
    };
    let mut a = start_server().await;
    let mut c = client(&a.addr);
    c.create(CreateRequest {
        chunk_id: 9,
        version: 1,
    })
    .await
    .unwrap();
    let e = c
        .create(CreateRequest {
            chunk_id: 9,
            version: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(FsError::from(e), FsError::Exists);
    chain_write(&a.addr, 9, 1, vec![], vec![(0, pattern(200_000, 3))])
        .await
        .unwrap();
    c.set_version(SetVersionRequest {
        chunk_id: 9,
        old_version: 1,
        new_version: 2,
    })
    .await
    .unwrap();
    let e = c
        .read(ReadRequest {
            chunk_id: 9,
            version: 1,
            offset: 0,
            length: 10,
        })
        .await
        .unwrap_err();
    assert!(matches!(FsError::from(e), FsError::Stale(_)));
    c.truncate(TruncateRequest {
        chunk_id: 9,
        old_version: 2,
        new_version: 3,
        length: 150_000,
    })
    .await
    .unwrap();
    assert_eq!(
        read_all(&a.addr, 9, 3).await.unwrap(),
        &pattern(200_000, 3)[..150_000]
    );

    // Flip a byte under the server: the read fails Damaged and the master gets told.
    let path = a
        ._dir
        .path()
        .join("09")
        .join("chunk_0000000000000009_00000003.elk");
    let mut raw = std::fs::read(&path).unwrap();
    raw[8192 + 100_000] ^= 0xFF;
    std::fs::write(&path, raw).unwrap();
    let e = c
        .read(ReadRequest {
            chunk_id: 9,
            version: 3,
            offset: 0,
            length: 150_000,
        })
        .await
        .unwrap_err();
    assert!(matches!(FsError::from(e), FsError::Damaged(_)));
    assert_eq!(
        a.damage.recv().await,
        Some(DamageReport {
            chunk_id: 9,
            version: 3
        })
    );
    let e = c
        .read(ReadRequest {
            chunk_id: 9,
            version: 3,
            offset: 0,
            length: (8 << 20) + 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(FsError::from(e), FsError::Invalid(_)));

    // One order for several copies: deleted, or not held (nothing to do), none failed.
    let r = c
        .delete(DeleteRequest {
            copies: vec![
                ChunkCopy {
                    chunk_id: 9,
                    version: 0,
                },
                ChunkCopy {
                    chunk_id: 10,
                    version: 1,
                },
            ],
        })
        .await
        .unwrap();
    assert!(r.into_inner().failed.is_empty());
    let e = c
        .read(ReadRequest {
            chunk_id: 9,
            version: 3,
            offset: 0,
            length: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(FsError::from(e), FsError::NotFound);
}
