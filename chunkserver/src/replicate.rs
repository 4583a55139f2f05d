//! Chunk.Replicate, the master's order to this (destination) server: pull one exact version
//! of a chunk from `source` with Fetch, check every block against the CRC it came with, and
//! keep it only complete and durable ([`crate::store::Incoming`]).
//!
//! At most `max_replications` run at once. An order beyond that fails at once with
//! Unavailable instead of queueing: the master learns the server is busy and can pick
//! another one or retry later, and no copy lands long after the master stopped waiting.

use crate::service::{blocking, hex, Context};
use crate::store::Incoming;
use crate::write_stream::failed_at;
use elkfs_proto::chunk::{FetchPiece, FetchRequest, ReplicateRequest};
use elkfs_proto::FsError;
use std::time::{Duration, Instant};
use tonic::Status;
use tracing::Instrument;

/// A source silent this long (a hung disk, a half-dead peer) fails the replication.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn replicate(ctx: &Context, r: ReplicateRequest) -> Result<(), Status> {
    let span = tracing::info_span!("replicate", chunk = %hex(r.chunk_id), version = r.version, source = %r.source);
    async move {
        let started = Instant::now();
        let res = run(ctx, &r).await;
        match &res {
            Ok(bytes) => tracing::info!(
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "replica placed"
            ),
            Err(s) => tracing::info!(error = %s.message(), "replication failed"),
        }
        res.map(|_| ())
    }
    .instrument(span)
    .await
}

/// Returns the bytes copied.
async fn run(ctx: &Context, r: &ReplicateRequest) -> Result<u64, Status> {
    let me = format!("chunkserver {}", ctx.addr);
    let _permit = ctx.replications.clone().try_acquire_owned().map_err(|_| {
        failed_at(
            &me,
            FsError::Unavailable("too many replications running".into()),
        )
    })?;
    let (id, version) = (r.chunk_id, r.version);
    let store = ctx.store.clone();
    blocking(move || store.refuse_held(id))
        .await
        .map_err(|e| failed_at(&me, e))?;

    let src = format!("source {}", r.source);
    let from_source = |e: FsError| failed_at(&src, e);
    let ch = ctx.peers.channel(&r.source).map_err(from_source)?;
    let mut client = elkfs_proto::transport::chunk_client(ch);
    let mut pieces = within(client.fetch(FetchRequest {
        chunk_id: id,
        version,
    }))
    .await
    .map_err(from_source)?
    .into_inner();
    let mut incoming: Option<Incoming> = None;
    while let Some(piece) = within(pieces.message()).await.map_err(from_source)? {
        let inc = match incoming.take() {
            Some(inc) => inc,
            None => {
                let (store, len) = (ctx.store.clone(), u64::from(piece.chunk_length));
                blocking(move || store.receive(id, version, len))
                    .await
                    .map_err(|e| failed_at(&me, e))?
            }
        };
        incoming = Some(
            blocking(move || write_piece(inc, &piece))
                .await
                .map_err(|e| failed_at(&me, e))?,
        );
    }
    let inc = incoming.ok_or_else(|| from_source(FsError::Io("sent no piece".into())))?;
    let bytes = inc.written();
    let store = ctx.store.clone();
    blocking(move || store.place(inc))
        .await
        .map_err(|e| failed_at(&me, e))?;
    Ok(bytes)
}

fn write_piece(mut inc: Incoming, p: &FetchPiece) -> Result<Incoming, FsError> {
    inc.write(u64::from(p.offset), &p.data, &p.block_crcs)?;
    Ok(inc)
}

/// A call to the source, bounded by [`SOURCE_TIMEOUT`].
async fn within<T>(
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, FsError> {
    match tokio::time::timeout(SOURCE_TIMEOUT, fut).await {
        Ok(res) => res.map_err(FsError::from),
        Err(_) => Err(FsError::Unavailable(format!(
            "nothing received for {} s",
            SOURCE_TIMEOUT.as_secs()
        ))),
    }
}
