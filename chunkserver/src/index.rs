//! The sled chunk index: chunk id → (version, disk, length), so a clean start-up needs no
//! directory scan. Only trusted when the `clean` marker says the last shutdown synced it;
//! the chunk files stay the source of truth. Beside it, the copies found damaged, written
//! as they are found. Everything written is flushed where it is written, so sled's
//! background flush (two fsyncs a second on an idle server) is off.

use std::path::Path;

/// Name of the marker written (next to the index) after a clean shutdown synced the index.
pub const CLEAN_MARKER: &str = "clean";
pub const INDEX_DIR: &str = "index.sled";
const META_TREE: &str = "meta";
const DIRS_KEY: &str = "data_dirs";
/// Chunk id → version of a copy found damaged.
const DAMAGED_TREE: &str = "damaged";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("index entry for key {key:02x?} is malformed")]
    Malformed { key: Vec<u8> },
    #[error("index I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub version: u32,
    pub disk: u32,
    pub len: u64,
}

impl IndexEntry {
    fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[0..4].copy_from_slice(&self.version.to_le_bytes());
        v[4..8].copy_from_slice(&self.disk.to_le_bytes());
        v[8..16].copy_from_slice(&self.len.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<IndexEntry> {
        Some(IndexEntry {
            version: u32::from_le_bytes(v.get(0..4)?.try_into().ok()?),
            disk: u32::from_le_bytes(v.get(4..8)?.try_into().ok()?),
            len: u64::from_le_bytes(v.get(8..16)?.try_into().ok()?),
        })
    }
}

/// Chunk id and entry, as loaded from or stored into the index.
pub type Entries = Vec<(u64, IndexEntry)>;

pub struct Index {
    db: sled::Db,
    /// Opened once: every chunk deletion clears a possible mark here.
    damaged: sled::Tree,
}

impl Index {
    /// Opens the index under `data_dir`; a directory sled cannot open is wiped and re-created
    /// when `wipe_on_error` (the caller will rebuild it from the files anyway).
    pub fn open(data_dir: &Path, wipe_on_error: bool) -> Result<Index, IndexError> {
        let dir = data_dir.join(INDEX_DIR);
        let open = || sled::Config::new().path(&dir).flush_every_ms(None).open();
        match open() {
            Ok(db) => Index::on(db),
            Err(e) if wipe_on_error => {
                tracing::warn!(dir = %dir.display(), error = %e, "chunk index unreadable, re-creating it");
                std::fs::remove_dir_all(&dir)?;
                Index::on(open()?)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn on(db: sled::Db) -> Result<Index, IndexError> {
        let damaged = db.open_tree(DAMAGED_TREE)?;
        Ok(Index { db, damaged })
    }

    /// The data directories the index was written for (its disk numbers index this list),
    /// and every entry, failing on the first malformed one (a sign it cannot be trusted).
    pub fn load(&self) -> Result<(Vec<u8>, Entries), IndexError> {
        let dirs = self
            .db
            .open_tree(META_TREE)?
            .get(DIRS_KEY)?
            .map(|v| v.to_vec())
            .unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.db.iter() {
            let (k, v) = kv?;
            let id = k
                .as_ref()
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
                .ok_or_else(|| IndexError::Malformed { key: k.to_vec() })?;
            let e =
                IndexEntry::decode(&v).ok_or_else(|| IndexError::Malformed { key: k.to_vec() })?;
            out.push((id, e));
        }
        Ok((dirs, out))
    }

    /// Remembers that the copy of `id` at `version` is damaged, on disk before returning.
    pub fn mark_damaged(&self, id: u64, version: u32) -> Result<(), IndexError> {
        self.damaged
            .insert(id.to_be_bytes(), &version.to_le_bytes())?;
        self.damaged.flush()?;
        Ok(())
    }

    /// Every copy marked damaged (malformed entries are skipped: a mark only speeds up
    /// what scrub would find again).
    pub fn damaged(&self) -> Result<Vec<(u64, u32)>, IndexError> {
        let mut out = Vec::new();
        for kv in self.damaged.iter() {
            let (k, v) = kv?;
            let id = k.as_ref().try_into().ok().map(u64::from_be_bytes);
            let version = v.as_ref().try_into().ok().map(u32::from_le_bytes);
            if let (Some(id), Some(version)) = (id, version) {
                out.push((id, version));
            }
        }
        Ok(out)
    }

    /// Drops the mark of `id`, if any, on disk before returning.
    pub fn forget_damaged(&self, id: u64) -> Result<(), IndexError> {
        // Nearly every deleted chunk has no mark: no flush for those.
        if self.damaged.remove(id.to_be_bytes())?.is_some() {
            self.damaged.flush()?;
        }
        Ok(())
    }

    /// Makes the index hold exactly `entries` for the data directories `dirs` (an opaque
    /// key compared at start-up), then flushes it to disk.
    pub fn replace_all(
        &self,
        dirs: &[u8],
        entries: &[(u64, IndexEntry)],
    ) -> Result<(), IndexError> {
        self.db.open_tree(META_TREE)?.insert(DIRS_KEY, dirs)?;
        self.db.clear()?;
        let mut batch = sled::Batch::default();
        for (id, e) in entries {
            batch.insert(&id.to_be_bytes(), &e.encode());
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}
