//! Tells the kernel to drop what it caches of an inode when the inode changed where the
//! kernel could not see it: through another mount. Attached once the FUSE session exists.

use fuser::{INodeNo, Notifier};
use std::sync::{Arc, OnceLock};
use tracing::debug;

#[derive(Clone, Default)]
pub struct KernelCache(Arc<OnceLock<Notifier>>);

impl KernelCache {
    pub fn attach(&self, notifier: Notifier) {
        let _ = self.0.set(notifier);
    }

    /// The kernel asks for `ino`'s attributes again before it next uses them.
    pub fn forget_attrs(&self, ino: u64) {
        let Some(n) = self.0.get() else { return };
        // Only attributes (a negative offset): the pages go at every open anyway, as
        // opens do not keep the page cache. Fails harmlessly for an inode it forgot.
        if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
            debug!(ino, "kernel attribute invalidation: {e}");
        }
    }
}
