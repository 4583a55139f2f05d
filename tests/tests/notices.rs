//! The master's notice stream (`Meta.Watch`) straight over gRPC: a watching mount hears
//! of every change except its own, whose replies already showed it.

use elkfs_proto::limits::ROOT_INO;
use elkfs_proto::meta::meta_client::MetaClient;
use elkfs_proto::meta::{HelloRequest, MknodRequest, NodeKind, Notices, WatchRequest};
use elkfs_proto::transport::{self, from_session};
use elkfs_tests::{Cluster, Opts};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Streaming;

async fn session(meta: &mut MetaClient<Channel>, name: &str) -> u64 {
    meta.hello(HelloRequest {
        client: name.into(),
        ..Default::default()
    })
    .await
    .expect("hello")
    .into_inner()
    .session
}

async fn create(meta: &mut MetaClient<Channel>, session: u64, name: &str) {
    let req = MknodRequest {
        parent: ROOT_INO,
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File as i32,
        mode: 0o644,
        ..Default::default()
    };
    meta.mknod(from_session(req, session))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

/// The names the stream tells of, up to and including `last` (notices come in version
/// order).
async fn names_until(stream: &mut Streaming<Notices>, last: &str) -> Vec<String> {
    let mut names = Vec::new();
    while !names.iter().any(|n| n == last) {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a notice in time")
            .expect("the stream stays up")
            .expect("the stream does not end");
        names.extend(
            message
                .notices
                .iter()
                .filter(|n| n.dir != 0)
                .map(|n| String::from_utf8_lossy(&n.name).into_owned()),
        );
    }
    names
}

#[test]
fn a_mount_hears_of_every_change_but_its_own() {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut meta =
            transport::meta_client(transport::channel(&c.master_addr()).expect("channel"));
        let a = session(&mut meta, "a").await;
        let b = session(&mut meta, "b").await;
        let mut a_hears = meta
            .watch(from_session(WatchRequest {}, a))
            .await
            .expect("watch as a")
            .into_inner();
        let mut anyone_hears = meta
            .watch(WatchRequest {})
            .await
            .expect("watch without a session")
            .into_inner();
        create(&mut meta, a, "by-a").await;
        create(&mut meta, b, "by-b").await;
        let heard = names_until(&mut a_hears, "by-b").await;
        assert!(
            !heard.iter().any(|n| n == "by-a"),
            "a was told of its own change: {heard:?}"
        );
        let heard = names_until(&mut anyone_hears, "by-b").await;
        assert!(
            heard.iter().any(|n| n == "by-a"),
            "a watcher without a session missed a's change: {heard:?}"
        );
    });
    c.assert_daemons_alive("watching notices");
}
