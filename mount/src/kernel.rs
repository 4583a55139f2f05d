//! Tells the kernel to drop what it caches when something changed where the kernel could
//! not see it: through another mount. Attached once the FUSE session exists.
//!
//! Changes told by the master's notices go through a thread of their own: dropping a name
//! waits for the directory's lock, which a request in that directory holds until it is
//! answered, and answers come from the threads that would otherwise be the ones waiting.

use crate::entry_cache::{Change, Changed};
use crate::master_client::Master;
use fuser::{INodeNo, Notifier};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, warn};

/// How long a change waits before the kernel is told: the notice of this mount's own
/// change often comes just before its reply, and the reply tells the kernel itself. It is
/// also what gathers a run of changes into one wake-up of the thread.
const SETTLE: Duration = Duration::from_millis(5);

struct Attached {
    notifier: Notifier,
    changes: Sender<Vec<Change>>,
}

#[derive(Clone, Default)]
pub struct KernelCache(Arc<OnceLock<Attached>>);

impl KernelCache {
    pub fn attach(&self, notifier: Notifier, master: Arc<Master>) {
        let (changes, rx) = channel();
        let thread_notifier = notifier.clone();
        let started = std::thread::Builder::new()
            .name("elkfs-inval".into())
            .spawn(move || tell(&thread_notifier, &master, rx));
        if let Err(e) = started {
            warn!("no thread for kernel invalidation, names and attributes stay up to their timeouts: {e}");
            return;
        }
        let _ = self.0.set(Attached { notifier, changes });
    }

    /// The kernel asks for `ino`'s attributes again before it next uses them.
    pub fn forget_attrs(&self, ino: u64) {
        if let Some(k) = self.0.get() {
            forget_attrs(&k.notifier, ino);
        }
    }

    /// The kernel drops what these changes touched, unless a reply here told it already.
    pub fn forget(&self, changes: Vec<Change>) {
        if let (Some(k), false) = (self.0.get(), changes.is_empty()) {
            let _ = k.changes.send(changes);
        }
    }
}

fn forget_attrs(notifier: &Notifier, ino: u64) {
    // Only attributes (a negative offset): the pages go at every open anyway, as opens do
    // not keep the page cache. Fails harmlessly for an inode the kernel does not hold.
    if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
        debug!(ino, "kernel attribute invalidation: {e}");
    }
}

fn tell(notifier: &Notifier, master: &Master, rx: Receiver<Vec<Change>>) {
    while let Ok(mut changes) = rx.recv() {
        std::thread::sleep(SETTLE);
        while let Ok(more) = rx.try_recv() {
            changes.extend(more);
        }
        for c in changes {
            if master.cache().answered(&c) {
                continue;
            }
            match &c.what {
                Changed::Name { dir, name } => {
                    // Fails harmlessly for a name the kernel does not hold.
                    let name = OsStr::from_bytes(name);
                    if let Err(e) = notifier.inval_entry(INodeNo(*dir), name) {
                        debug!(dir, "kernel name invalidation: {e}");
                    }
                }
                Changed::Attrs { ino } => forget_attrs(notifier, *ino),
            }
        }
    }
}
