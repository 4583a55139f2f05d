//! Whole-chunk reads for Fetch and scrub: a chunk opened once at one version and read piece
//! by piece, each piece checked under the chunk lock to still be the same bytes, so a copy
//! streamed to a peer is never a mix of two states of the chunk.

use super::{check_version, chunk_error, Store};
use crate::chunk_file::ChunkFile;
use elkfs_proto::FsError;

pub struct ChunkReader {
    id: u64,
    version: u32,
    generation: u64,
    edits: u64,
    len: u64,
    file: ChunkFile,
}

impl ChunkReader {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// The chunk's length when it was opened.
    pub fn length(&self) -> u64 {
        self.len
    }

    /// See [`ChunkFile::drop_cache`].
    pub fn drop_cache(&self) {
        self.file.drop_cache();
    }
}

impl Store {
    /// Opens chunk `id` at exactly `version` for reading it whole.
    pub fn open_reader(&self, id: u64, version: u32) -> Result<ChunkReader, FsError> {
        self.with_chunk(id, |held| {
            let meta = held.as_ref().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, version)?;
            let file = ChunkFile::open(&self.path(id, version, meta.disk), id)
                .map_err(|e| chunk_error(id, e))?;
            Ok(ChunkReader {
                id,
                version,
                generation: meta.generation,
                edits: meta.edits,
                len: meta.len,
                file,
            })
        })
    }

    /// The verified whole blocks from the block-aligned `offset`, up to `max` bytes, with
    /// their stored CRCs. Stale when the chunk changed since `r` was opened.
    pub fn read_piece(
        &self,
        r: &ChunkReader,
        offset: u64,
        max: u64,
    ) -> Result<(Vec<u8>, Vec<u32>), FsError> {
        self.with_chunk(r.id, |held| {
            let meta = held.as_ref().ok_or(FsError::NotFound)?;
            check_version(r.id, meta.version, r.version)?;
            if (meta.generation, meta.edits) != (r.generation, r.edits) {
                return Err(FsError::Stale(format!(
                    "chunk {:016X} changed while being read whole",
                    r.id
                )));
            }
            r.file
                .read_blocks(r.len, offset, max)
                .map_err(|e| chunk_error(r.id, e))
        })
    }
}
