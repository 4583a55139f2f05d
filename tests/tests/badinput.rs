//! Hostile or broken requests straight over gRPC and over the master's framed Meta calls:
//! each gets a clean elkfs error status, and the daemons stay up.

use elkfs_proto::calls::frame::{self, MAGIC};
use elkfs_proto::chunk::{write_message, ReadRequest, WriteData, WriteMessage, WriteStart};
use elkfs_proto::limits::{CHUNK_SIZE, ROOT_INO};
use elkfs_proto::meta::meta_client::MetaClient;
use elkfs_proto::meta::{
    Caller, ChunkRequest, EntryRequest, HelloRequest, InodeRequest, LinkRequest, LookupRequest,
    MknodRequest, NodeKind, OpenRequest, ReadDirRequest, RenameRequest, SetAttrRequest,
    SymlinkRequest, Timespec, WriteEndRequest,
};
use elkfs_proto::transport;
use elkfs_tests::{Cluster, Opts};
use std::fs;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;

/// A clean rejection carries the elkfs error kind; a crash or a transport failure does not.
#[track_caller]
fn assert_clean_error<T: std::fmt::Debug>(
    res: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) {
    match res {
        Ok(r) => panic!("{what}: accepted, replied {:?}", r.into_inner()),
        Err(s) => assert!(
            s.metadata().get("elkfs-error").is_some(),
            "{what}: not a clean elkfs error: {s:?}"
        ),
    }
}

const HUGE: u64 = (1 << 63) + 12345;

/// One chunkserver and a real file `f` (written through a mount) to aim at.
fn cluster_with_file(content: &[u8]) -> (Cluster, tokio::runtime::Runtime) {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    {
        let m = c.mount();
        fs::write(m.join("f"), content).expect("write");
    }
    (c, tokio::runtime::Runtime::new().expect("runtime"))
}

/// A raw Meta client with its own session, and the inode of `f`.
async fn connect(c: &Cluster) -> (MetaClient<Channel>, u64, u64) {
    let mut meta = transport::meta_client(transport::channel(&c.master_addr()).expect("channel"));
    let session = meta
        .hello(HelloRequest {
            client: "badinput".into(),
            ..Default::default()
        })
        .await
        .expect("hello")
        .into_inner()
        .session;
    let ino = meta
        .lookup(LookupRequest {
            parent: ROOT_INO,
            name: b"f".to_vec(),
        })
        .await
        .expect("lookup f")
        .into_inner()
        .attr
        .expect("attr")
        .ino;
    (meta, session, ino)
}

#[test]
fn master_rejects_bad_requests() {
    let (c, rt) = cluster_with_file(b"content");
    rt.block_on(async {
        let (mut meta, session, file) = connect(&c).await;
        let unknown = 0xdead_beef_u64;
        let caller = Some(Caller { uid: 0, gid: 0 });

        assert_clean_error(
            meta.get_attr(InodeRequest { ino: unknown }).await,
            "getattr unknown",
        );
        assert_clean_error(
            meta.get_attr(InodeRequest { ino: 0 }).await,
            "getattr inode 0",
        );
        assert_clean_error(
            meta.lookup(LookupRequest {
                parent: unknown,
                name: b"x".to_vec(),
            })
            .await,
            "lookup in unknown dir",
        );
        assert_clean_error(
            meta.lookup(LookupRequest {
                parent: file,
                name: b"x".to_vec(),
            })
            .await,
            "lookup in a file",
        );
        // An absent name is an answer, not an error: no attributes, the version it shows.
        let absent = meta
            .lookup(LookupRequest {
                parent: ROOT_INO,
                name: b"no-such-name".to_vec(),
            })
            .await
            .expect("lookup of an absent name")
            .into_inner();
        assert!(absent.attr.is_none() && absent.version > 0, "{absent:?}");
        assert_clean_error(
            meta.readlink(InodeRequest { ino: ROOT_INO }).await,
            "readlink dir",
        );
        assert_clean_error(
            meta.read_dir(ReadDirRequest {
                ino: unknown,
                ..Default::default()
            })
            .await,
            "readdir unknown",
        );
        assert_clean_error(
            meta.open(OpenRequest {
                ino: unknown,
                session,
            })
            .await,
            "open unknown",
        );

        let bad_names: [&[u8]; 6] = [b"", &[b'n'; 256], b"a/b", b".", b"..", b"nul\0byte"];
        for name in bad_names {
            let shown = String::from_utf8_lossy(name);
            assert_clean_error(
                meta.mknod(MknodRequest {
                    parent: ROOT_INO,
                    name: name.to_vec(),
                    kind: NodeKind::File as i32,
                    mode: 0o644,
                    caller,
                    session,
                    ..Default::default()
                })
                .await,
                &format!("mknod name {shown:?}"),
            );
            assert_clean_error(
                meta.symlink(SymlinkRequest {
                    parent: ROOT_INO,
                    name: name.to_vec(),
                    target: b"t".to_vec(),
                    caller,
                })
                .await,
                &format!("symlink name {shown:?}"),
            );
            assert_clean_error(
                meta.link(LinkRequest {
                    ino: file,
                    new_parent: ROOT_INO,
                    new_name: name.to_vec(),
                })
                .await,
                &format!("link name {shown:?}"),
            );
            assert_clean_error(
                meta.rename(RenameRequest {
                    parent: ROOT_INO,
                    name: b"f".to_vec(),
                    new_parent: ROOT_INO,
                    new_name: name.to_vec(),
                    flags: 0,
                })
                .await,
                &format!("rename to {shown:?}"),
            );
        }
        assert_clean_error(
            meta.mknod(MknodRequest {
                parent: ROOT_INO,
                name: b"k".to_vec(),
                kind: NodeKind::Unspecified as i32,
                caller,
                session,
                ..Default::default()
            })
            .await,
            "mknod without a kind",
        );
        assert_clean_error(
            meta.mknod(MknodRequest {
                parent: ROOT_INO,
                name: b"k".to_vec(),
                kind: 99,
                caller,
                session,
                ..Default::default()
            })
            .await,
            "mknod with an unknown kind",
        );
        assert_clean_error(
            meta.rename(RenameRequest {
                parent: ROOT_INO,
                name: b"f".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"g".to_vec(),
                flags: 0xff,
            })
            .await,
            "rename with unknown flags",
        );
        assert_clean_error(
            meta.unlink(EntryRequest {
                parent: unknown,
                name: b"f".to_vec(),
                session,
            })
            .await,
            "unlink in unknown dir",
        );
        assert_clean_error(
            meta.link(LinkRequest {
                ino: ROOT_INO,
                new_parent: ROOT_INO,
                new_name: b"rootlink".to_vec(),
            })
            .await,
            "hard link to a directory",
        );
        assert_clean_error(
            meta.set_attr(SetAttrRequest {
                ino: file,
                size: Some(HUGE),
                session,
                ..Default::default()
            })
            .await,
            "truncate past 2^63",
        );
        assert_clean_error(
            meta.set_attr(SetAttrRequest {
                ino: unknown,
                mode: Some(0o644),
                session,
                ..Default::default()
            })
            .await,
            "setattr unknown",
        );
        for index in [u64::MAX, HUGE / CHUNK_SIZE, 1 << 40] {
            assert_clean_error(
                meta.read_chunk(ChunkRequest {
                    ino: file,
                    index,
                    session,
                    ..Default::default()
                })
                .await,
                &format!("read chunk index {index}"),
            );
            assert_clean_error(
                meta.write_chunk(ChunkRequest {
                    ino: file,
                    index,
                    session,
                    ..Default::default()
                })
                .await,
                &format!("write chunk index {index}"),
            );
        }
        assert_clean_error(
            meta.read_chunk(ChunkRequest {
                ino: unknown,
                index: 0,
                session,
                ..Default::default()
            })
            .await,
            "read chunk of unknown inode",
        );
        assert_clean_error(
            meta.write_chunk(ChunkRequest {
                ino: ROOT_INO,
                index: 0,
                session,
                ..Default::default()
            })
            .await,
            "write chunk of a directory",
        );
        assert_clean_error(
            meta.write_end(WriteEndRequest {
                ino: file,
                index: 0,
                chunk_id: 1,
                session,
                file_size: HUGE,
                failed: false,
                ..Default::default()
            })
            .await,
            "write end past 2^63",
        );
        // A WriteEnd for a chunk the file does not have fails and changes nothing: the
        // master hands out a new chunk before its record is durable on the strength of it.
        assert_clean_error(
            meta.write_end(WriteEndRequest {
                ino: file,
                index: 0,
                chunk_id: 1 << 40,
                session,
                file_size: 1 << 20,
                ..Default::default()
            })
            .await,
            "write end of a chunk the file does not have",
        );
        // Out-of-range nanoseconds in explicit times are clamped, never stored.
        let odd = Timespec {
            sec: -1,
            nsec: u32::MAX,
        };
        let attr = meta
            .write_end(WriteEndRequest {
                ino: file,
                chunk_id: 1,
                session,
                atime: Some(odd),
                mtime: Some(odd),
                ..Default::default()
            })
            .await
            .expect("write end with explicit times")
            .into_inner()
            .attr
            .expect("attributes");
        let clamped = Some(Timespec {
            sec: -1,
            nsec: 999_999_999,
        });
        assert_eq!((attr.atime, attr.mtime), (clamped, clamped));
    });
    assert!(c.master_running(), "master died on bad input");
    // Still serving normally.
    let m = c.mount();
    assert_eq!(
        fs::read(m.join("f")).expect("read after bad input"),
        b"content"
    );
}

/// A framed call with any `body`, as a mount would send it.
fn raw_call(id: u64, method: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((17 + body.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    out.push(method);
    out.extend_from_slice(body);
    out
}

/// Sends `bytes` on `conn` and reads the reply, which must carry `id`.
async fn ask(conn: &mut TcpStream, id: u64, bytes: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    conn.write_all(bytes).await.expect("send");
    let reply = frame::read_reply(conn).await.expect("a reply");
    assert_eq!(reply.id, id);
    reply.outcome.map(|body| body.to_vec())
}

async fn calls_connection(addr: &str, magic: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(magic).await.expect("magic");
    conn
}

#[test]
fn master_answers_bad_framed_calls_cleanly() {
    let (c, rt) = cluster_with_file(b"content");
    rt.block_on(async {
        let mut conn = calls_connection(&c.master_addr(), &MAGIC).await;
        let not_a_message = ask(&mut conn, 1, &raw_call(1, 3, &[0xff, 0xff, 0xff])).await;
        assert_eq!(
            not_a_message.expect_err("refused").code(),
            Code::InvalidArgument
        );
        let no_such_call = ask(&mut conn, 2, &raw_call(2, 200, &[])).await;
        assert_eq!(
            no_such_call.expect_err("refused").code(),
            Code::Unimplemented
        );
        let unknown_parent = LookupRequest {
            parent: 0xdead_beef,
            name: b"f".to_vec(),
        };
        let err = ask(&mut conn, 3, &frame::request(3, 0, 3, &unknown_parent))
            .await
            .expect_err("refused");
        assert!(err.metadata().get("elkfs-error").is_some(), "{err:?}");
        let ping = ask(&mut conn, 4, &raw_call(4, 0, &[])).await;
        assert!(ping.expect("pong").is_empty());
        // The connection still serves.
        let f = LookupRequest {
            parent: ROOT_INO,
            name: b"f".to_vec(),
        };
        let found = ask(&mut conn, 5, &frame::request(5, 0, 3, &f)).await;
        let found: elkfs_proto::meta::AttrReply =
            prost::Message::decode(&found.expect("lookup f")[..]).expect("reply");
        assert!(found.attr.is_some());

        // A frame longer than any message, and a stranger's greeting: that connection
        // is closed, nothing else.
        conn.write_all(&u32::MAX.to_be_bytes()).await.expect("send");
        assert!(
            frame::read_reply(&mut conn).await.is_err(),
            "oversized frame answered"
        );
        let mut stranger = calls_connection(&c.master_addr(), b"ELKX").await;
        assert!(
            frame::read_reply(&mut stranger).await.is_err(),
            "bad magic served"
        );
    });
    assert!(c.master_running(), "master died on bad frames");
    let m = c.mount();
    assert_eq!(
        fs::read(m.join("f")).expect("read after bad frames"),
        b"content"
    );
}

#[test]
fn chunkserver_rejects_bad_requests() {
    let (c, rt) = cluster_with_file(&[7u8; 100_000]);
    rt.block_on(async {
        let (mut meta, session, ino) = connect(&c).await;
        let chunk = meta
            .read_chunk(ChunkRequest {
                ino,
                index: 0,
                session,
                ..Default::default()
            })
            .await
            .expect("read chunk")
            .into_inner();
        let mut cs =
            transport::chunk_client(transport::channel(&c.chunkserver_addr(0)).expect("channel"));
        let read = |chunk_id, version, offset, length| ReadRequest {
            chunk_id,
            version,
            offset,
            length,
        };

        assert_clean_error(
            cs.read(read(0xdead_beef, 1, 0, 10)).await,
            "read unknown chunk",
        );
        assert_clean_error(
            cs.read(read(chunk.chunk_id, chunk.version + 7, 0, 10))
                .await,
            "read with a wrong version",
        );
        let size = CHUNK_SIZE as u32;
        assert_clean_error(
            cs.read(read(chunk.chunk_id, chunk.version, size - 10, 100))
                .await,
            "read past the chunk end",
        );
        assert_clean_error(
            cs.read(read(chunk.chunk_id, chunk.version, u32::MAX, u32::MAX))
                .await,
            "read at u32::MAX",
        );
        assert_clean_error(
            cs.read(read(chunk.chunk_id, chunk.version, 0, u32::MAX))
                .await,
            "read longer than MAX_IO",
        );

        // Writes: unknown chunk, and data beyond the chunk end.
        for (what, id, offset) in [
            ("write to unknown chunk", 0xdead_beef, 0),
            ("write past the chunk end", chunk.chunk_id, size - 1),
        ] {
            let msgs = vec![
                WriteMessage {
                    msg: Some(write_message::Msg::Start(WriteStart {
                        chunk_id: id,
                        version: chunk.version,
                        chain: vec![],
                        create: false,
                    })),
                },
                WriteMessage {
                    msg: Some(write_message::Msg::Data(WriteData {
                        seq: 1,
                        offset,
                        data: vec![1, 2, 3].into(),
                    })),
                },
            ];
            match cs.write(tokio_stream::iter(msgs)).await {
                Err(s) => assert!(s.metadata().get("elkfs-error").is_some(), "{what}: {s:?}"),
                Ok(resp) => {
                    let mut acks = resp.into_inner();
                    let first = acks.message().await;
                    match first {
                        Err(s) => {
                            assert!(s.metadata().get("elkfs-error").is_some(), "{what}: {s:?}")
                        }
                        Ok(ack) => panic!("{what}: acknowledged {ack:?}"),
                    }
                }
            }
        }
    });
    assert!(c.chunkserver_running(0), "chunkserver died on bad input");
    assert!(c.master_running(), "master died");
    let m = c.mount();
    assert_eq!(
        fs::read(m.join("f")).expect("read after bad input"),
        vec![7u8; 100_000]
    );
}
