//! Open files: FUSE file handles → per-handle read-ahead, and per-inode shared state
//! (the write-back buffer) that lives while the inode has open handles on this mount.

use crate::locks::lock;
use crate::reader::{ReadAhead, Reader};
use crate::writer::{FileWriter, WriteCtx};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct OpenFile {
    pub ino: u64,
    pub writer: Arc<FileWriter>,
    pub read_ahead: Mutex<ReadAhead>,
}

pub struct Handles {
    ctx: Arc<WriteCtx>,
    /// Its per-inode location cache lives as long as the inode's entry here.
    reader: Arc<Reader>,
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Inode → (open handles, shared writer).
    inodes: Mutex<HashMap<u64, (u32, Arc<FileWriter>)>>,
}

impl Handles {
    pub fn new(ctx: Arc<WriteCtx>, reader: Arc<Reader>) -> Handles {
        Handles {
            ctx,
            reader,
            next: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            inodes: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new open of `ino`; returns the file handle. The reader's cached
    /// locations of `ino` start afresh (close-to-open consistency).
    pub fn open(&self, ino: u64) -> u64 {
        let writer = {
            let mut inodes = lock(&self.inodes);
            // Under the lock, so it cannot interleave with the last close's `released`.
            self.reader.opened(ino);
            let entry = inodes
                .entry(ino)
                .or_insert_with(|| (0, Arc::new(FileWriter::new(ino, self.ctx.clone()))));
            entry.0 += 1;
            entry.1.clone()
        };
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let file = OpenFile {
            ino,
            writer,
            read_ahead: Mutex::new(ReadAhead::default()),
        };
        lock(&self.files).insert(fh, Arc::new(file));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&fh).cloned()
    }

    /// Forgets a handle; the inode's shared state (and cached locations) go with its last
    /// handle.
    pub fn close(&self, fh: u64) {
        let Some(file) = lock(&self.files).remove(&fh) else {
            return;
        };
        let mut inodes = lock(&self.inodes);
        if let Some(entry) = inodes.get_mut(&file.ino) {
            entry.0 -= 1;
            if entry.0 == 0 {
                inodes.remove(&file.ino);
                self.reader.released(file.ino);
            }
        }
    }

    /// The shared writer of `ino` if this mount has it open.
    pub fn writer(&self, ino: u64) -> Option<Arc<FileWriter>> {
        lock(&self.inodes).get(&ino).map(|(_, w)| w.clone())
    }

    /// Writers of every open inode (for the final flush at unmount).
    pub fn all_writers(&self) -> Vec<Arc<FileWriter>> {
        lock(&self.inodes)
            .values()
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// A lower bound for the size of `ino` from local unflushed writes.
    pub fn local_size(&self, ino: u64) -> u64 {
        self.writer(ino).map_or(0, |w| w.local_size())
    }
}
