//! The mount's one way to take a mutex.

use std::sync::{Mutex, MutexGuard};

/// Every mutex in the mount guards plain bookkeeping that each critical section leaves
/// consistent, so a panic elsewhere while holding it (poisoning) does not make it unusable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
