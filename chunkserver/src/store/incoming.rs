//! A replica being received: a file in `tmp/` (which reads, the index and registration
//! never see), filled in order with blocks checked against the CRCs they came with, and
//! moved into place only complete and synced. Dropped unplaced, it removes its file.

use super::{chunk_error, chunk_file_name, ChunkMeta, Store, TMP_DIR};
use crate::chunk_file::{ChunkError, ChunkFile, HEADER_SIZE};
use elkfs_proto::limits::{BLOCK_SIZE, CHUNK_SIZE};
use elkfs_proto::FsError;
use std::path::PathBuf;

pub struct Incoming {
    id: u64,
    version: u32,
    disk: usize,
    len: u64,
    written: u64,
    tmp: PathBuf,
    file: ChunkFile,
    placed: bool,
}

impl Incoming {
    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends the next piece: `offset` must be where the last one ended, `data` whole
    /// blocks (only the chunk's last block short), `crcs` one per block. A block that does
    /// not match its CRC was damaged in transit (the source checked it before sending).
    pub fn write(&mut self, offset: u64, data: &[u8], crcs: &[u32]) -> Result<(), FsError> {
        let end = offset + data.len() as u64;
        if offset != self.written || end > self.len {
            return Err(FsError::Invalid(format!(
                "piece {offset}+{} does not follow {} in a chunk of {}",
                data.len(),
                self.written,
                self.len
            )));
        }
        if !end.is_multiple_of(BLOCK_SIZE) && end != self.len {
            return Err(FsError::Invalid(format!(
                "piece {offset}+{} ends inside a block",
                data.len()
            )));
        }
        self.file
            .write_blocks(offset, data, crcs)
            .map_err(|e| match e {
                ChunkError::Damaged { block } => FsError::Damaged(format!(
                    "chunk {:016X}: block {block} arrived with a CRC mismatch",
                    self.id
                )),
                ChunkError::OutOfRange { offset, len } => FsError::Invalid(format!(
                    "piece {offset}+{len}: not whole blocks or wrong CRC count"
                )),
                e => chunk_error(self.id, e),
            })?;
        self.written = end;
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        match std::fs::remove_file(&self.tmp) {
            Ok(()) => tracing::debug!(file = %self.tmp.display(), "unfinished replica removed"),
            Err(e) => {
                tracing::warn!(file = %self.tmp.display(), error = %e, "cannot remove an unfinished replica")
            }
        }
    }
}

impl Store {
    /// Starts receiving `version` of chunk `id`, `len` bytes long, on the disk with the most
    /// room. Exists if any version of the chunk is held; NoSpace if it would take the disk
    /// under its reserve.
    pub fn receive(&self, id: u64, version: u32, len: u64) -> Result<Incoming, FsError> {
        if len > CHUNK_SIZE {
            return Err(FsError::Invalid(format!("length {len} exceeds a chunk")));
        }
        self.refuse_held(id)?;
        let disk = self.pick_disk(len + HEADER_SIZE)?;
        let tmp = self.disks[disk].root.join(TMP_DIR).join(format!(
            "{}.{}",
            chunk_file_name(id, version),
            self.new_generation()
        ));
        let file = match ChunkFile::create(&tmp, id, version) {
            Ok(f) => f,
            Err(e) => {
                // The header write may have failed after the file was made.
                let _ = std::fs::remove_file(&tmp);
                return Err(chunk_error(id, e));
            }
        };
        Ok(Incoming {
            id,
            version,
            disk,
            len,
            written: 0,
            tmp,
            file,
            placed: false,
        })
    }

    /// Exists if any version of chunk `id` is held.
    pub fn refuse_held(&self, id: u64) -> Result<(), FsError> {
        self.with_chunk(id, |held| match held {
            Some(_) => Err(FsError::Exists),
            None => Ok(()),
        })
    }

    /// Syncs a complete replica, renames it into place as the chunk's file and syncs the
    /// directory: when this returns Ok the copy is durable and held.
    pub fn place(&self, mut inc: Incoming) -> Result<(), FsError> {
        let id = inc.id;
        if inc.written != inc.len {
            return Err(FsError::Io(format!(
                "replica of chunk {id:016X} incomplete: {} of {} bytes",
                inc.written, inc.len
            )));
        }
        inc.file.sync_data().map_err(|e| chunk_error(id, e))?;
        self.with_chunk(id, |held| {
            if held.is_some() {
                return Err(FsError::Exists);
            }
            let path = self.path(id, inc.version, inc.disk);
            // A file nobody holds (should not exist) is never overwritten.
            if path.symlink_metadata().is_ok() {
                return Err(FsError::Exists);
            }
            std::fs::rename(&inc.tmp, &path)?;
            inc.placed = true;
            if let Err(e) = self.sync_dir(id, inc.disk) {
                // Not held: leave no file that would block a retry with Exists.
                if let Err(re) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %re, "cannot remove a replica after a failed directory sync");
                }
                return Err(e);
            }
            *held = Some(ChunkMeta {
                version: inc.version,
                disk: inc.disk,
                len: inc.len,
                generation: self.new_generation(),
                edits: 0,
                entry_durable: true,
            });
            Ok(())
        })
    }
}
