//! Client sessions and their open files. An inode whose last name is gone lives on while
//! any session has it open (POSIX unlink-while-open), then is purged.

use crate::core::Inner;
use crate::state::Body;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After a master restart, mounts get this long to re-assert their open files before
/// unlinked inodes nobody claimed are purged.
const REOPEN_GRACE: Duration = Duration::from_secs(30);

pub struct Sessions {
    next: u64,
    opens: HashMap<u64, HashMap<u64, u32>>,
    counts: HashMap<u64, u32>,
    started: Instant,
    orphans_checked: bool,
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
            counts: HashMap::new(),
            started: Instant::now(),
            orphans_checked: false,
        }
    }

    /// A mount says hello; a reconnecting one keeps its id and re-opens its files.
    pub fn hello(&mut self, resume: u64, open_inodes: &[u64]) -> u64 {
        let id = if resume != 0 {
            resume
        } else {
            self.next += 1;
            self.next
        };
        if resume != 0 && !self.opens.contains_key(&id) {
            for &ino in open_inodes {
                self.open(id, ino);
            }
        }
        self.opens.entry(id).or_default();
        id
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
