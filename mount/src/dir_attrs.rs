//! Directory attributes the master sent back with a change (create, unlink, rename …).
//!
//! The kernel drops its copy of a directory's attributes after every change made in it, and
//! with `default_permissions` asks for them again at the next path walk through it: one more
//! round trip per create or unlink. The master's reply to the change already carries them,
//! so that next GETATTR is answered from here, once, within the attribute timeout: exactly
//! as fresh as the kernel's own cache would have been.

use crate::locks::lock;
use elkfs_proto::meta::Attr;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many entries, expired ones are dropped on the next insert.
const PRUNE_ABOVE: usize = 1024;

pub struct DirAttrs {
    ttl: Duration,
    held: Mutex<HashMap<u64, (Attr, Instant)>>,
}

fn ctime(a: &Attr) -> (i64, u32) {
    a.ctime.as_ref().map_or((i64::MIN, 0), |t| (t.sec, t.nsec))
}

impl DirAttrs {
    pub fn new(ttl: Duration) -> DirAttrs {
        DirAttrs {
            ttl,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Attr, Instant)>> {
        lock(&self.held)
    }

    /// Keep `dirs` from a change's reply. Of two replies for one directory (concurrent
    /// changes), the later change wins, whatever order the replies arrived in.
    pub fn remember(&self, dirs: Vec<Attr>) {
        if dirs.is_empty() || self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut held = self.held();
        if held.len() > PRUNE_ABOVE {
            held.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        }
        for a in dirs {
            match held.get(&a.ino) {
                Some((old, _)) if ctime(old) > ctime(&a) => {}
                _ => {
                    held.insert(a.ino, (a, now));
                }
            }
        }
    }

    /// The attributes of `ino` if a change's reply brought them within the timeout; each
    /// is handed out once (afterwards the kernel holds them).
    pub fn take(&self, ino: u64) -> Option<Attr> {
        let (a, at) = self.held().remove(&ino)?;
        (at.elapsed() < self.ttl).then_some(a)
    }

    /// `ino` changed in a way no held reply shows (e.g. chmod of the directory).
    pub fn forget(&self, ino: u64) {
        self.held().remove(&ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::meta::Timespec;

    fn dir(ino: u64, nlink: u32, sec: i64) -> Attr {
        Attr {
            ino,
            nlink,
            ctime: Some(Timespec { sec, nsec: 0 }),
            ..Attr::default()
        }
    }

    #[test]
    fn handed_out_once() {
        let d = DirAttrs::new(Duration::from_secs(1));
        d.remember(vec![dir(5, 3, 10)]);
        assert_eq!(d.take(5).map(|a| a.nlink), Some(3));
        assert!(d.take(5).is_none());
    }

    #[test]
    fn the_later_change_wins() {
        let d = DirAttrs::new(Duration::from_secs(1));
        d.remember(vec![dir(5, 4, 11)]);
        d.remember(vec![dir(5, 3, 10)]);
        assert_eq!(d.take(5).map(|a| a.nlink), Some(4));
    }

    #[test]
    fn forgotten_expired_or_disabled_is_not_served() {
        let d = DirAttrs::new(Duration::from_secs(1));
        d.remember(vec![dir(5, 3, 10)]);
        d.forget(5);
        assert!(d.take(5).is_none());

        let d = DirAttrs::new(Duration::from_millis(1));
        d.remember(vec![dir(6, 3, 10)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(d.take(6).is_none());

        let d = DirAttrs::new(Duration::ZERO);
        d.remember(vec![dir(7, 3, 10)]);
        assert!(d.take(7).is_none());
    }
}
