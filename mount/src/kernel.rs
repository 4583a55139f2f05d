//! Tells the kernel to drop what it caches when something changed where the kernel could
//! not see it: through another mount. Attached once the FUSE session exists.
//!
//! Names go through a thread of their own: dropping a name waits for the directory's lock,
//! which a request in that directory holds until it is answered, and answers come from the
//! threads that would otherwise be the ones waiting.

use crate::entry_cache::NameChange;
use crate::master_client::Master;
use fuser::{INodeNo, Notifier};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, warn};

/// How long a name change waits before the kernel is told: the notice of this mount's own
/// change often comes just before its reply, and the reply tells the kernel itself. It is
/// also what gathers a run of changes into one wake-up of the thread.
const SETTLE: Duration = Duration::from_millis(5);

struct Attached {
    notifier: Notifier,
    names: Sender<Vec<NameChange>>,
}

#[derive(Clone, Default)]
pub struct KernelCache(Arc<OnceLock<Attached>>);

impl KernelCache {
    pub fn attach(&self, notifier: Notifier, master: Arc<Master>) {
        let (names, rx) = channel();
        let thread_notifier = notifier.clone();
        let started = std::thread::Builder::new()
            .name("elkfs-inval".into())
            .spawn(move || drop_names(&thread_notifier, &master, rx));
        if let Err(e) = started {
            warn!("no thread for kernel name invalidation, names stay up to entry_timeout: {e}");
            return;
        }
        let _ = self.0.set(Attached { notifier, names });
    }

    /// The kernel asks for `ino`'s attributes again before it next uses them.
    pub fn forget_attrs(&self, ino: u64) {
        let Some(k) = self.0.get() else { return };
        // Only attributes (a negative offset): the pages go at every open anyway, as
        // opens do not keep the page cache. Fails harmlessly for an inode it forgot.
        if let Err(e) = k.notifier.inval_inode(INodeNo(ino), -1, 0) {
            debug!(ino, "kernel attribute invalidation: {e}");
        }
    }

    /// The kernel looks these names up again before it next uses them.
    pub fn forget_names(&self, changes: Vec<NameChange>) {
        if let (Some(k), false) = (self.0.get(), changes.is_empty()) {
            let _ = k.names.send(changes);
        }
    }
}

fn drop_names(notifier: &Notifier, master: &Master, rx: Receiver<Vec<NameChange>>) {
    while let Ok(mut changes) = rx.recv() {
        std::thread::sleep(SETTLE);
        while let Ok(more) = rx.try_recv() {
            changes.extend(more);
        }
        for c in changes {
            if master.cache().answered(c.dir, &c.name, c.version) {
                continue;
            }
            // Fails harmlessly for a name the kernel does not hold.
            if let Err(e) = notifier.inval_entry(INodeNo(c.dir), OsStr::from_bytes(&c.name)) {
                debug!(dir = c.dir, "kernel name invalidation: {e}");
            }
        }
    }
}
