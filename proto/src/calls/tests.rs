//! The call client against the call server on loopback, with a handler standing in for
//! the master's Meta service.

use super::*;
use crate::FsError;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Answers lookups: `parent` comes back as the inode; "missing" is not found, "hang" is
/// never answered.
async fn lookup(req: frame::Request) -> Result<Bytes, Status> {
    let r = LookupRequest::decode(req.body).map_err(|e| Status::invalid_argument(e.to_string()))?;
    match &r.name[..] {
        b"missing" => Err(FsError::NotFound.into()),
        b"hang" => std::future::pending().await,
        _ => Ok(AttrReply {
            attr: Some(Attr {
                ino: r.parent,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
        .into()),
    }
}

/// Serves call connections on `listener` until `stop` resolves.
async fn serve_on(listener: TcpListener, stop: impl Future<Output = ()>) {
    // Dropped at the end, which aborts the connections.
    let mut connections = tokio::task::JoinSet::new();
    let accepting = async {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                let mut magic = [0; 4];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic).await?;
                assert_eq!(magic, frame::MAGIC);
                serve(stream, peer, lookup, std::future::pending()).await;
                Ok::<_, std::io::Error>(())
            });
        }
    };
    tokio::select! {
        () = accepting => {}
        () = stop => {}
    }
}

fn ask(name: &str) -> LookupRequest {
    LookupRequest {
        parent: 42,
        name: name.into(),
    }
}

#[tokio::test]
async fn answers_and_errors_come_back_to_their_callers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(serve_on(listener, std::future::pending()));
    let calls = MetaCalls::new(&addr);
    let (found, missing) = tokio::join!(calls.lookup(ask("x"), 7), calls.lookup(ask("missing"), 7));
    assert_eq!(found.expect("found").attr.expect("attr").ino, 42);
    let e = FsError::from(missing.expect_err("not found"));
    assert!(matches!(e, FsError::NotFound), "{e:?}");
}

#[tokio::test]
async fn a_lost_connection_fails_its_waiting_calls_and_the_next_call_connects_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, async {
        let _ = stopped.await;
    }));
    let calls = MetaCalls::new(&addr.to_string());
    let waiting = tokio::spawn({
        let calls = calls.clone();
        async move { calls.lookup(ask("hang"), 7).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server goes away with the call unanswered, and its connections with it.
    let _ = stop.send(());
    server.await.expect("server stopped");
    let lost = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the call fails")
        .expect("task")
        .expect_err("no answer");
    assert!(matches!(FsError::from(lost), FsError::Unavailable(_)));

    let listener = TcpListener::bind(addr).await.expect("bind again");
    tokio::spawn(serve_on(listener, std::future::pending()));
    let again = calls
        .lookup(ask("y"), 7)
        .await
        .expect("answered after reconnecting");
    assert_eq!(again.attr.expect("attr").ino, 42);
}
