//! The set of data directories (disks) and the chunks they hold: paths, free-space reserve,
//! per-chunk locking, start-up from the index or a directory scan, and the operations the
//! gRPC service exposes. Every method here blocks on file I/O: call it from
//! `spawn_blocking`, never on a reactor thread.
//!
//! [`reader`]: verified whole-block reads for Fetch and scrub; [`incoming`]: replicas being
//! received, in temporary files until complete; [`blanks`]: empty files made ahead for new
//! chunks; `totals`: counts and bucket digests.

pub mod blanks;
mod incoming;
mod reader;
mod totals;

pub use incoming::Incoming;
pub use reader::ChunkReader;

use crate::chunk_file::{ChunkError, ChunkFile, HEADER_SIZE};
use crate::index::{Index, IndexEntry, IndexError, CLEAN_MARKER};
use blanks::Blanks;
use elkfs_proto::buckets::{bucket_of, Digest, BUCKETS};
use elkfs_proto::limits::{CHUNK_SIZE, MAX_IO};
use elkfs_proto::registry::{ChunkInfo, Space};
use elkfs_proto::FsError;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use totals::{Held, Totals};

/// Directory (in every data dir) for replicas being received; emptied at start-up.
pub const TMP_DIR: &str = "tmp";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no data directory configured")]
    NoDataDirs,
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("chunk index: {0}")]
    Index(#[from] IndexError),
    #[error("cannot start the thread that makes blank chunk files: {0}")]
    Thread(std::io::Error),
    #[error("clean marker {path}: {source}")]
    Marker {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where and what one held chunk is. `generation` tells a write session whether the chunk it
/// opened is still the same file (a delete + re-create in between changes it); `edits`
/// counts changes of its bytes, so a reader streaming it whole sees if it changed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkMeta {
    version: u32,
    disk: usize,
    len: u64,
    generation: u64,
    edits: u64,
    /// The file's directory entry is on disk (false for a new chunk until its first fsync).
    entry_durable: bool,
}

fn held(id: u64, m: &Option<ChunkMeta>) -> Option<Held> {
    m.map(|m| Held {
        id,
        version: m.version,
        len: m.len,
    })
}

/// The per-chunk lock. `detached` marks a slot already removed from the map, so a waiter
/// that got it before the removal goes back to the map instead of using a stale slot.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    meta: Option<ChunkMeta>,
    detached: bool,
}

struct Disk {
    root: PathBuf,
    /// Device id, so data dirs sharing a filesystem are counted once in the space report.
    dev: u64,
}

pub struct Store {
    disks: Vec<Disk>,
    reserve: u64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    index: Index,
    next_generation: AtomicU64,
    totals: Mutex<Totals>,
    blanks: Arc<Blanks>,
}

/// An open chunk for a write stream: the descriptor is kept for the whole stream, every
/// write still re-checks version and generation under the chunk lock.
pub struct Writer {
    id: u64,
    version: u32,
    generation: u64,
    file: ChunkFile,
}

/// Free space of the filesystem holding `path`: (total, free for unprivileged users).
fn statvfs(path: &Path) -> std::io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

pub fn chunk_file_name(id: u64, version: u32) -> String {
    format!("chunk_{id:016X}_{version:08X}.elk")
}

fn subdir_name(id: u64) -> String {
    format!("{:02X}", id & 0xFF)
}

/// Parses `chunk_<ID:016X>_<VER:08X>.elk`; only the exact canonical spelling is accepted.
fn parse_chunk_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".elk")?;
    let (id, ver) = rest.split_once('_')?;
    let id = u64::from_str_radix(id, 16).ok()?;
    let ver = u32::from_str_radix(ver, 16).ok()?;
    (chunk_file_name(id, ver) == name).then_some((id, ver))
}

fn chunk_error(id: u64, e: ChunkError) -> FsError {
    match e {
        ChunkError::Io(e) => FsError::from(e),
        ChunkError::Damaged { block } => {
            FsError::Damaged(format!("chunk {id:016X}: CRC mismatch in block {block}"))
        }
        ChunkError::BadHeader(s) => FsError::Damaged(format!("chunk {id:016X}: {s}")),
        ChunkError::OutOfRange { offset, len } => {
            FsError::Invalid(format!("range {offset}+{len} outside a chunk"))
        }
    }
}

fn check_version(id: u64, held: u32, asked: u32) -> Result<(), FsError> {
    if held == asked {
        Ok(())
    } else {
        Err(FsError::Stale(format!(
            "chunk {id:016X} is at version {held}, asked for {asked}"
        )))
    }
}

fn check_io_range(offset: u64, len: u64) -> Result<(), FsError> {
    if len > u64::from(MAX_IO) {
        return Err(FsError::Invalid(format!(
            "{len} bytes exceed the I/O limit {MAX_IO}"
        )));
    }
    if offset + len > CHUNK_SIZE {
        return Err(FsError::Invalid(format!(
            "range {offset}+{len} outside a chunk"
        )));
    }
    Ok(())
}

impl Store {
    /// Prepares the data directories and loads the chunk list: from the index when the last
    /// shutdown was clean, otherwise by scanning the directories.
    pub fn open(dirs: &[PathBuf], reserve: u64) -> Result<Store, StoreError> {
        let first = dirs.first().ok_or(StoreError::NoDataDirs)?;
        let mut disks = Vec::with_capacity(dirs.len());
        for root in dirs {
            let dir_err = |source| StoreError::DataDir {
                path: root.clone(),
                source,
            };
            for b in 0..=255u8 {
                std::fs::create_dir_all(root.join(format!("{b:02X}"))).map_err(dir_err)?;
            }
            for path in empty_dir(&root.join(TMP_DIR)).map_err(dir_err)? {
                tracing::info!(file = %path.display(), "removed an unfinished replica");
            }
            blanks::prepare(root).map_err(dir_err)?;
            let dev = std::fs::metadata(root).map_err(dir_err)?.dev();
            disks.push(Disk {
                root: root.clone(),
                dev,
            });
        }
        let marker = first.join(CLEAN_MARKER);
        let clean = marker.exists();
        // The marker only vouches for the index as it was at shutdown: remove it before
        // anything can change.
        if clean {
            std::fs::remove_file(&marker).map_err(|source| StoreError::Marker {
                path: marker.clone(),
                source,
            })?;
        }
        let dirs_key = dirs_key(&disks);
        let trusted = if clean {
            match Index::open(first, false).and_then(|ix| Ok((ix.load()?, ix))) {
                Ok(((key, entries), ix)) if key == dirs_key => Some((entries, ix)),
                Ok(_) => {
                    tracing::warn!(
                        "chunk index was written for other data directories, rescanning"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "chunk index unusable, rescanning");
                    None
                }
            }
        } else {
            tracing::info!(
                "no clean-shutdown marker, rebuilding the chunk index from the data directories"
            );
            None
        };
        let (entries, index) = match trusted {
            Some(t) => t,
            None => {
                let entries = scan(&disks);
                let index = Index::open(first, true)?;
                index.replace_all(&dirs_key, &entries)?;
                (entries, index)
            }
        };
        let mut map = HashMap::with_capacity(entries.len());
        let mut totals = Totals::default();
        let mut generation = 0;
        for (id, e) in entries {
            generation += 1;
            let meta = ChunkMeta {
                version: e.version,
                disk: e.disk as usize,
                len: e.len,
                generation,
                edits: 0,
                entry_durable: true,
            };
            totals.add(Held {
                id,
                version: e.version,
                len: e.len,
            });
            map.insert(
                id,
                Arc::new(Slot {
                    state: Mutex::new(SlotState {
                        meta: Some(meta),
                        detached: false,
                    }),
                }),
            );
        }
        let blanks = Blanks::start(dirs).map_err(StoreError::Thread)?;
        tracing::info!(chunks = map.len(), disks = disks.len(), "chunk store ready");
        Ok(Store {
            blanks,
            disks,
            reserve,
            slots: Mutex::new(map),
            index,
            next_generation: AtomicU64::new(generation + 1),
            totals: Mutex::new(totals),
        })
    }

    /// Syncs the index to the current state and writes the clean marker (clean shutdown).
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let entries: Vec<(u64, IndexEntry)> = self
            .all_metas()
            .into_iter()
            .map(|(id, m)| {
                (
                    id,
                    IndexEntry {
                        version: m.version,
                        disk: m.disk as u32,
                        len: m.len,
                    },
                )
            })
            .collect();
        self.index.replace_all(&dirs_key(&self.disks), &entries)?;
        let marker = self.disks[0].root.join(CLEAN_MARKER);
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&marker)?;
            f.sync_all()?;
            std::fs::File::open(&self.disks[0].root)?.sync_all()
        };
        write().map_err(|source| StoreError::Marker {
            path: marker.clone(),
            source,
        })?;
        tracing::info!(
            chunks = entries.len(),
            "chunk index synced, clean marker written"
        );
        Ok(())
    }

    fn path(&self, id: u64, version: u32, disk: usize) -> PathBuf {
        self.disks[disk]
            .root
            .join(subdir_name(id))
            .join(chunk_file_name(id, version))
    }

    /// fsyncs the `XX` directory holding chunk `id` on `disk`. A create or rename is durable
    /// only once its directory entry is: the entry's name carries the version, and a rename
    /// lost to a power cut brings the copy back under its old version (which the master then
    /// deletes as stale).
    fn sync_dir(&self, id: u64, disk: usize) -> Result<(), FsError> {
        let dir = self.disks[disk].root.join(subdir_name(id));
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }

    fn lock_map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // A panic elsewhere cannot leave the map half-updated (single inserts/removes).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with chunk `id` locked; `f` sees and may change what is held (None: nothing).
    /// Operations on one chunk are serialized, different chunks run in parallel.
    fn with_chunk<R>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Option<ChunkMeta>) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        loop {
            let slot = self.lock_map().entry(id).or_default().clone();
            let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.detached {
                continue;
            }
            let before = held(id, &st.meta);
            let r = f(&mut st.meta);
            let after = held(id, &st.meta);
            if after != before {
                self.lock_totals().change(before, after);
            }
            if st.meta.is_none() {
                // Nothing held: drop the slot so the map holds only real chunks.
                let mut map = self.lock_map();
                if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(&id);
                }
                st.detached = true;
            }
            return r;
        }
    }

    fn lock_totals(&self) -> MutexGuard<'_, Totals> {
        // Every update is a few additions done before the guard drops.
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all_metas(&self) -> Vec<(u64, ChunkMeta)> {
        let slots: Vec<(u64, Arc<Slot>)> = self
            .lock_map()
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(id, s)| {
                let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                st.meta.map(|m| (id, m))
            })
            .collect()
    }

    /// Fails with NoSpace when `grow` more bytes would take the disk under its reserve.
    fn check_space(&self, disk: usize, grow: u64) -> Result<(), FsError> {
        let (_, free) = statvfs(&self.disks[disk].root)?;
        if free < self.reserve.saturating_add(grow) {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// The disk with the most free space, if it can take `need` more bytes and stay above
    /// its reserve.
    fn pick_disk(&self, need: u64) -> Result<usize, FsError> {
        let mut best: Option<(usize, u64)> = None;
        for (i, d) in self.disks.iter().enumerate() {
            match statvfs(&d.root) {
                Ok((_, free)) if best.is_none_or(|(_, f)| free > f) => best = Some((i, free)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(disk = %d.root.display(), error = %e, "statvfs failed")
                }
            }
        }
        match best {
            Some((i, free)) if free > self.reserve.saturating_add(need) => Ok(i),
            _ => Err(FsError::NoSpace),
        }
    }

    fn new_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes chunk `id`, empty, at `version`. Holding it at that version already is fine
    /// (the master's order and a client's first write both create a new chunk, and either
    /// may come first); holding another version is `Exists`.
    pub fn create(&self, id: u64, version: u32) -> Result<(), FsError> {
        self.with_chunk(id, |held| {
            if let Some(m) = held {
                return match m.version == version {
                    true => Ok(()),
                    false => Err(FsError::Exists),
                };
            }
            let disk = self.pick_disk(0)?;
            let path = self.path(id, version, disk);
            let made = match self.blanks.claim(disk, &path) {
                Ok(Some(file)) => ChunkFile::init(file, id, version),
                Ok(None) => ChunkFile::create(&path, id, version),
                Err(e) => Err(ChunkError::Io(e)),
            };
            match made {
                Ok(_) => {}
                Err(ChunkError::Io(io)) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(FsError::Exists)
                }
                Err(e) => {
                    // Not held: leave no half-made file that would block a retry with Exists.
                    if let Err(re) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %re, "cannot remove chunk file after a failed create");
                    }
                    return Err(chunk_error(id, e));
                }
            }
            // Not synced here: a new chunk holds nothing acknowledged as durable until an
            // fsync of its data, which syncs the directory entry too (`Store::sync`). Lost
            // to a power cut before that, the copy is simply missing at the next scan.
            *held = Some(ChunkMeta {
                version,
                disk,
                len: 0,
                generation: self.new_generation(),
                edits: 0,
                entry_durable: false,
            });
            Ok(())
        })
    }

    /// Moves the chunk from `old` to `new` and makes the result durable before returning:
    /// header field, fdatasync of the file (so the header and any length/CRC change made by
    /// the caller are on disk before the new name can be), rename (the file name is
    /// authoritative), fsync of the `XX` directory. With `new` equal to the held version
    /// only the file is synced (a truncate that keeps its version).
    fn rename_version(
        &self,
        id: u64,
        meta: &mut ChunkMeta,
        file: &ChunkFile,
        new: u32,
    ) -> Result<(), FsError> {
        if meta.version == new {
            return file.sync_data().map_err(|e| chunk_error(id, e));
        }
        file.set_version(new).map_err(|e| chunk_error(id, e))?;
        file.sync_data().map_err(|e| chunk_error(id, e))?;
        if let Err(e) = std::fs::rename(
            self.path(id, meta.version, meta.disk),
            self.path(id, new, meta.disk),
        ) {
            // Keep the header matching the name that stayed (best effort: the name rules).
            if let Err(he) = file.set_version(meta.version) {
                tracing::warn!(chunk = format_args!("{id:016X}"), error = %he, "cannot restore the header version after a failed rename");
            }
            return Err(e.into());
        }
        // The rename happened: what is held is the new name even if its fsync fails.
        meta.version = new;
        self.sync_dir(id, meta.disk)?;
        meta.entry_durable = true;
        Ok(())
    }

    pub fn set_version(&self, id: u64, old: u32, new: u32) -> Result<(), FsError> {
        self.with_chunk(id, |held| {
            let meta = held.as_mut().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, old)?;
            let file = ChunkFile::open(&self.path(id, old, meta.disk), id)
                .map_err(|e| chunk_error(id, e))?;
            self.rename_version(id, meta, &file, new)
        })
    }

    pub fn truncate(&self, id: u64, old: u32, new: u32, length: u64) -> Result<(), FsError> {
        if length > CHUNK_SIZE {
            return Err(FsError::Invalid(format!("length {length} exceeds a chunk")));
        }
        self.with_chunk(id, |held| {
            let meta = held.as_mut().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, old)?;
            if length > meta.len {
                self.check_space(meta.disk, length - meta.len)?;
            }
            let file = ChunkFile::open(&self.path(id, old, meta.disk), id)
                .map_err(|e| chunk_error(id, e))?;
            file.truncate(meta.len, length)
                .map_err(|e| chunk_error(id, e))?;
            meta.len = length;
            meta.edits += 1;
            // Syncs the new length and CRCs (and the rename, if the version moves).
            self.rename_version(id, meta, &file, new)
        })
    }

    /// Deletes chunk `id`. A non-zero `version` deletes only that exact version and answers
    /// Stale when another one is held; 0 deletes whatever version is held.
    ///
    /// Deliberately not synced (no directory fsync): a delete lost to a power cut only
    /// resurrects the copy, which is reported at registration and deleted again by the
    /// master, so paying an fsync per delete buys nothing.
    pub fn delete(&self, id: u64, version: u32) -> Result<(), FsError> {
        self.with_chunk(id, |held| {
            let meta = held.as_ref().ok_or(FsError::NotFound)?;
            if version != 0 {
                check_version(id, meta.version, version)?;
            }
            match std::fs::remove_file(self.path(id, meta.version, meta.disk)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(chunk = format_args!("{id:016X}"), "chunk file already gone");
                }
                Err(e) => return Err(e.into()),
            }
            *held = None;
            // A copy made here later (at any version) starts without the old copy's mark.
            if let Err(e) = self.index.forget_damaged(id) {
                tracing::warn!(chunk = format_args!("{id:016X}"), error = %e, "damage mark not cleared");
            }
            Ok(())
        })
    }

    pub fn read(&self, id: u64, version: u32, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
        check_io_range(offset, len)?;
        self.with_chunk(id, |held| {
            let meta = held.as_ref().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, version)?;
            let file = ChunkFile::open(&self.path(id, version, meta.disk), id)
                .map_err(|e| chunk_error(id, e))?;
            file.read(meta.len, offset, len)
                .map_err(|e| chunk_error(id, e))
        })
    }

    /// [`Store::read`] if it can be done at once: `None` if another operation holds the
    /// chunk now or a byte would come from the disk (the caller then reads on the
    /// blocking pool).
    pub fn read_cached(
        &self,
        id: u64,
        version: u32,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, FsError> {
        check_io_range(offset, len)?;
        let Some(slot) = self.lock_map().get(&id).cloned() else {
            return Ok(None);
        };
        let st = match slot.state.try_lock() {
            Ok(st) => st,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let Some(meta) = st.meta.as_ref().filter(|_| !st.detached) else {
            return Ok(None);
        };
        check_version(id, meta.version, version)?;
        ChunkFile::read_cached(
            &self.path(id, version, meta.disk),
            id,
            meta.len,
            offset,
            len,
        )
        .map_err(|e| chunk_error(id, e))
    }

    /// Opens chunk `id` at `version` for a write stream.
    pub fn writer(&self, id: u64, version: u32) -> Result<Writer, FsError> {
        self.with_chunk(id, |held| {
            let meta = held.as_ref().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, version)?;
            let file = ChunkFile::open(&self.path(id, version, meta.disk), id)
                .map_err(|e| chunk_error(id, e))?;
            Ok(Writer {
                id,
                version,
                generation: meta.generation,
                file,
            })
        })
    }

    pub fn write(&self, w: &Writer, offset: u64, data: &[u8]) -> Result<(), FsError> {
        check_io_range(offset, data.len() as u64)?;
        let id = w.id;
        self.with_chunk(id, |held| {
            let meta = held.as_mut().ok_or(FsError::NotFound)?;
            check_version(id, meta.version, w.version)?;
            if meta.generation != w.generation {
                return Err(FsError::Stale(format!(
                    "chunk {id:016X} was re-created during the write"
                )));
            }
            let grow = (offset + data.len() as u64).saturating_sub(meta.len);
            if grow > 0 {
                self.check_space(meta.disk, grow)?;
            }
            meta.edits += 1;
            meta.len = w
                .file
                .write(meta.len, offset, data)
                .map_err(|e| chunk_error(id, e))?;
            Ok(())
        })
    }

    /// fdatasync without the chunk lock: it orders nothing, and reads need not wait for it.
    /// A chunk created since it was last synced also gets its directory entry synced.
    pub fn sync(&self, w: &Writer) -> Result<(), FsError> {
        w.file.sync_data().map_err(|e| chunk_error(w.id, e))?;
        self.with_chunk(w.id, |held| match held {
            Some(m) if !m.entry_durable && m.generation == w.generation => {
                self.sync_dir(w.id, m.disk)?;
                m.entry_durable = true;
                Ok(())
            }
            _ => Ok(()),
        })
    }

    /// Remembers, across restarts, that the copy of `id` at `version` is damaged.
    pub fn mark_damaged(&self, id: u64, version: u32) -> Result<(), StoreError> {
        Ok(self.index.mark_damaged(id, version)?)
    }

    /// The copies marked damaged that are still held; marks of copies since deleted or
    /// replaced by another version are dropped.
    pub fn damaged(&self) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut held = Vec::new();
        for (id, version) in self.index.damaged()? {
            if self.holds(id, version) {
                held.push((id, version));
            } else {
                self.index.forget_damaged(id)?;
            }
        }
        Ok(held)
    }

    /// Whether this copy, at this version, is held.
    fn holds(&self, id: u64, version: u32) -> bool {
        let slot = self.lock_map().get(&id).cloned();
        slot.is_some_and(|s| {
            let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            st.meta.is_some_and(|m| m.version == version)
        })
    }

    /// Everything held.
    pub fn chunk_list(&self) -> Vec<ChunkInfo> {
        self.chunks_in(|_| true)
    }

    /// The chunks of the buckets `want` says yes to, for registration with the master.
    pub fn chunks_in(&self, want: impl Fn(u8) -> bool) -> Vec<ChunkInfo> {
        let slots: Vec<(u64, Arc<Slot>)> = self
            .lock_map()
            .iter()
            .filter(|(id, _)| want(bucket_of(**id)))
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|(id, s)| {
                let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                st.meta.map(|m| ChunkInfo {
                    chunk_id: id,
                    version: m.version,
                    length: m.len as u32,
                })
            })
            .collect()
    }

    /// Every bucket's digest of what is held (kept up to date on every change).
    pub fn digests(&self) -> [Digest; BUCKETS] {
        self.lock_totals().buckets
    }

    /// Space report: filesystems shared by several data dirs are counted once; `used` is
    /// what the chunk files take, `avail` is free space above the reserve.
    pub fn space(&self) -> Space {
        let mut total = 0u64;
        let mut avail = 0u64;
        let mut seen = HashSet::new();
        for d in &self.disks {
            if !seen.insert(d.dev) {
                continue;
            }
            match statvfs(&d.root) {
                Ok((t, free)) => {
                    total += t;
                    avail += free.saturating_sub(self.reserve);
                }
                Err(e) => tracing::warn!(disk = %d.root.display(), error = %e, "statvfs failed"),
            }
        }
        let t = self.lock_totals();
        Space {
            total_bytes: total,
            used_bytes: t.bytes,
            avail_bytes: avail,
            chunks: t.chunks,
        }
    }
}

/// Creates the temporary directory, or removes what a crash left in it: replicas that were
/// never completed.
/// Makes `dir`, or removes every file in it; returns what it removed.
fn empty_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut removed = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let path = ent?.path();
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

/// Identifies the data directory list, in order: the index's disk numbers are only
/// meaningful for the list it was written with.
fn dirs_key(disks: &[Disk]) -> Vec<u8> {
    let mut key = Vec::new();
    for d in disks {
        key.extend_from_slice(d.root.as_os_str().as_bytes());
        key.push(0);
    }
    key
}

/// Builds the chunk list from the files. Unparseable names are logged and left alone; of
/// two versions of one chunk the higher is kept and the lower deleted.
fn scan(disks: &[Disk]) -> Vec<(u64, IndexEntry)> {
    let mut found: HashMap<u64, (IndexEntry, PathBuf)> = HashMap::new();
    for (di, disk) in disks.iter().enumerate() {
        for b in 0..=255u8 {
            let dir = disk.root.join(format!("{b:02X}"));
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot list chunk directory");
                    continue;
                }
            };
            for ent in rd.flatten() {
                let path = ent.path();
                let parsed = ent.file_name().to_str().and_then(parse_chunk_name);
                let Some((id, version)) = parsed.filter(|(id, _)| (id & 0xFF) as u8 == b) else {
                    tracing::warn!(file = %path.display(), "ignoring unexpected file in chunk directory");
                    continue;
                };
                let size = match ent.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot stat chunk file");
                        continue;
                    }
                };
                let len = match size.checked_sub(HEADER_SIZE) {
                    Some(l) if l <= CHUNK_SIZE => l,
                    _ => {
                        tracing::warn!(file = %path.display(), size, "ignoring chunk file of impossible size");
                        continue;
                    }
                };
                let entry = IndexEntry {
                    version,
                    disk: di as u32,
                    len,
                };
                let loser = match found.get(&id) {
                    Some((old, _)) if old.version >= version => path,
                    Some((_, old_path)) => {
                        let p = old_path.clone();
                        found.insert(id, (entry, path));
                        p
                    }
                    None => {
                        found.insert(id, (entry, path));
                        continue;
                    }
                };
                // Not synced, like any delete: a copy that comes back is older again next scan.
                tracing::warn!(file = %loser.display(), "deleting older copy of a chunk");
                if let Err(e) = std::fs::remove_file(&loser) {
                    tracing::warn!(file = %loser.display(), error = %e, "cannot delete older copy");
                }
            }
        }
    }
    let mut entries: Vec<(u64, IndexEntry)> =
        found.into_iter().map(|(id, (e, _))| (id, e)).collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    entries
}
