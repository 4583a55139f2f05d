//! Client sessions and their open files. An inode whose last name is gone lives on while
//! any session has it open (POSIX unlink-while-open), then is purged.

use crate::core::Inner;
use crate::state::Body;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After a master restart, mounts get this long to re-assert their open files before
/// unlinked inodes nobody claimed are purged.
const REOPEN_GRACE: Duration = Duration::from_secs(30);
/// A session not heard from for this long is gone (mounts say hello every 10 s): its open
/// files are released, so unlinked files it held can be purged.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Sessions {
    next: u64,
    opens: HashMap<u64, HashMap<u64, u32>>,
    seen: HashMap<u64, Instant>,
    counts: HashMap<u64, u32>,
    started: Instant,
    orphans_checked: bool,
    /// Unlinked inodes whose purge failed (a full disk): tried again every second.
    deferred: BTreeSet<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        // Seeded from the clock so ids from before a master restart are not handed out again.
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        Sessions {
            next: secs << 20,
            opens: HashMap::new(),
            seen: HashMap::new(),
            counts: HashMap::new(),
            started: Instant::now(),
            orphans_checked: false,
            deferred: BTreeSet::new(),
        }
    }

    /// A mount says hello; a reconnecting one keeps its id and re-opens its files. Returns
    /// the session and whether it was live already (a keepalive).
    pub fn hello(&mut self, resume: u64, open_inodes: &[u64]) -> (u64, bool) {
        let id = if resume != 0 {
            resume
        } else {
            self.next += 1;
            self.next
        };
        let live = self.opens.contains_key(&id);
        if resume != 0 && !live {
            for &ino in open_inodes {
                self.open(id, ino);
            }
        }
        self.opens.entry(id).or_default();
        self.seen.insert(id, Instant::now());
        (id, live)
    }

    /// Forget sessions silent for longer than `timeout`. Returns the inodes that are no
    /// longer open anywhere because of it.
    pub fn expire(&mut self, timeout: Duration) -> Vec<u64> {
        let gone: Vec<u64> = self
            .seen
            .iter()
            .filter(|(_, t)| t.elapsed() > timeout)
            .map(|(&s, _)| s)
            .collect();
        let mut closed = Vec::new();
        for s in gone {
            self.seen.remove(&s);
            for (ino, n) in self.opens.remove(&s).unwrap_or_default() {
                if let Some(c) = self.counts.get_mut(&ino) {
                    *c = c.saturating_sub(n);
                    if *c == 0 {
                        self.counts.remove(&ino);
                        closed.push(ino);
                    }
                }
            }
        }
        closed
    }

    pub fn open(&mut self, session: u64, ino: u64) {
        *self
            .opens
            .entry(session)
            .or_default()
            .entry(ino)
            .or_default() += 1;
        *self.counts.entry(ino).or_default() += 1;
    }

    /// Returns true when no session has `ino` open any more.
    pub fn release(&mut self, session: u64, ino: u64) -> bool {
        let Some(files) = self.opens.get_mut(&session) else {
            return !self.is_open(ino);
        };
        let Some(n) = files.get_mut(&ino) else {
            return !self.is_open(ino);
        };
        *n -= 1;
        if *n == 0 {
            files.remove(&ino);
        }
        if let Some(c) = self.counts.get_mut(&ino) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&ino);
            }
        }
        !self.is_open(ino)
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.counts.contains_key(&ino)
    }

    pub fn count(&self) -> usize {
        self.opens.len()
    }

    pub fn defer_purge(&mut self, ino: u64) {
        self.deferred.insert(ino);
    }

    /// The purges deferred so far, taken out of the list.
    pub fn take_deferred(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.deferred).into_iter().collect()
    }
}

/// Once, after the re-open grace period: unlinked inodes no session claimed.
pub fn unreferenced_orphans(inner: &Inner) -> Vec<u64> {
    let s = &inner.sessions;
    if s.orphans_checked || s.started.elapsed() < REOPEN_GRACE {
        return Vec::new();
    }
    inner
        .state
        .inodes
        .values()
        .filter(|n| n.nlink == 0 && matches!(n.body, Body::File { .. }) && !s.is_open(n.ino))
        .map(|n| n.ino)
        .collect()
}

pub fn mark_orphans_checked(inner: &mut Inner) {
    if inner.sessions.started.elapsed() >= REOPEN_GRACE {
        inner.sessions.orphans_checked = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_sessions_release_their_files() {
        let mut s = Sessions::new();
        let ((a, false), (b, false)) = (s.hello(0, &[]), s.hello(0, &[])) else {
            panic!("new sessions were live already");
        };
        assert_eq!(s.hello(a, &[]), (a, true), "a keepalive");
        s.open(a, 10);
        s.open(a, 10);
        s.open(b, 10);
        s.open(a, 11);
        assert!(s.expire(Duration::from_secs(60)).is_empty());
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(200))
            .expect("the clock has run for 200 s");
        s.seen.insert(a, long_ago);
        assert_eq!(s.expire(Duration::from_secs(60)), vec![11]);
        assert!(s.is_open(10), "b still holds 10");
        assert!(!s.is_open(11));
        // A mount that was expired and comes back re-asserts what it has open.
        assert_eq!(s.hello(a, &[11]), (a, false));
        assert!(s.is_open(11));
    }
}
