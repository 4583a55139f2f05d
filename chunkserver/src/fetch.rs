//! Chunk.Fetch: streams one exact version of a chunk to a peer building a replica, in
//! pieces of whole 64 KiB blocks with their stored CRCs. Every block is checked against its
//! CRC as it is read; damage ends the stream with Damaged and is reported to the master.

use crate::service::{blocking, hex, Context};
use crate::store::ChunkReader;
use elkfs_proto::chunk::{FetchPiece, FetchRequest};
use elkfs_proto::FsError;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

/// Bytes per piece: 16 blocks.
pub const PIECE: u64 = 1 << 20;
/// Pieces read ahead of the peer.
const QUEUE: usize = 4;

/// Opens the chunk (a wrong version or a missing chunk fails here, as a read would) and
/// starts streaming it.
pub async fn start(
    ctx: Context,
    req: FetchRequest,
) -> Result<ReceiverStream<Result<FetchPiece, Status>>, Status> {
    let (id, version) = (req.chunk_id, req.version);
    let span = tracing::info_span!("fetch", chunk = %hex(id), version);
    let store = ctx.store.clone();
    let reader = blocking(move || store.open_reader(id, version))
        .instrument(span.clone())
        .await
        .map_err(|e| {
            span.in_scope(|| tracing::info!(error = %e, "fetch refused"));
            ctx.note_damage(&e, id, version);
            Status::from(e)
        })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(
        async move {
            match send_pieces(&ctx, Arc::new(reader), &tx).await {
                Ok(bytes) => tracing::debug!(bytes, "fetch done"),
                Err(e) => {
                    tracing::info!(error = %e, "fetch failed");
                    ctx.note_damage(&e, id, version);
                    // The peer may be gone already; then nobody needs the error.
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
        }
        .instrument(span),
    );
    Ok(ReceiverStream::new(rx))
}

/// Sends every piece (one empty piece for an empty chunk); returns the bytes sent.
async fn send_pieces(
    ctx: &Context,
    reader: Arc<ChunkReader>,
    tx: &mpsc::Sender<Result<FetchPiece, Status>>,
) -> Result<u64, FsError> {
    let len = reader.length();
    let mut offset = 0;
    loop {
        let (store, r) = (ctx.store.clone(), reader.clone());
        let (data, crcs) = blocking(move || store.read_piece(&r, offset, PIECE)).await?;
        let n = data.len() as u64;
        let piece = FetchPiece {
            offset: offset as u32,
            data: data.into(),
            block_crcs: crcs,
            chunk_length: len as u32,
        };
        if tx.send(Ok(piece)).await.is_err() {
            return Err(FsError::Unavailable("the peer stopped fetching".into()));
        }
        offset += n;
        if n == 0 || offset >= len {
            return Ok(offset);
        }
    }
}
