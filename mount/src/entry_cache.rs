//! Names and attributes this mount learned from the master's replies, kept true by the
//! master's notices (`Meta.Watch`), so most lookups and attribute requests need no round
//! trip. Pure state: [`crate::watch`] feeds it the stream, [`crate::master_client`] the
//! replies.
//!
//! Every reply and notice carries the metadata version it reflects. A slot keeps the
//! version it was last set at, and only something newer changes it: a reply overtaken by a
//! notice of a later change is never kept, whatever order the two arrived in. A directory
//! this mount created is *complete*: every name in it has a slot, so a name without one
//! does not exist. Nothing is trusted while the notice stream is quiet for longer than
//! [`QUIET_LIMIT`] (the master ticks four times a second): a mount cut off from its master
//! falls back to asking it.

use elkfs_proto::meta::{Attr, Notices};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Longest silence of the notice stream under which the cache is trusted.
pub const QUIET_LIMIT: Duration = Duration::from_secs(1);
/// Above this many slots everything is forgotten (and learned again as it is used).
const MAX_SLOTS: usize = 1 << 20;

/// Where a reply stands: the notice stream that was current when its request was sent
/// ([`EntryCache::stream`]) and the metadata version it shows. A reply to a request sent
/// before the stream broke is never kept: it may come from a master the new stream's
/// versions do not continue (one that died before its standby had its last changes).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub stream: u64,
    pub version: u64,
}

/// What a slot says, as of its version. `None`: a notice made it stale.
struct Slot<T> {
    version: u64,
    value: Option<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Attr),
    Absent,
    /// Ask the master.
    Unknown,
}

#[derive(Default)]
pub struct EntryCache {
    /// (directory, name) → the inode it names, or none.
    names: HashMap<(u64, Vec<u8>), Slot<Option<u64>>>,
    attrs: HashMap<u64, Slot<Attr>>,
    complete: HashSet<u64>,
    /// Replies older than this are not kept: the notices that may have overtaken them
    /// were forgotten.
    floor: u64,
    /// Newest version a notice message reported.
    latest: u64,
    /// When the notice stream last spoke; `None`: no stream.
    heard: Option<Instant>,
    /// Notice streams started so far.
    streams: u64,
}

/// Keep `value` at `version` unless the slot holds something newer. A notice (`None`) of
/// the version a reply showed is the reply's own change: the reply stands. Returns
/// whether the slot took it.
fn set<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Slot<T>>,
    key: K,
    version: u64,
    value: Option<T>,
) -> bool {
    match map.get_mut(&key) {
        Some(s) if s.version > version || (s.version == version && value.is_none()) => false,
        Some(s) => {
            *s = Slot { version, value };
            true
        }
        None => {
            map.insert(key, Slot { version, value });
            true
        }
    }
}

/// What a notice says changed: a name, or a node's attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    Name { dir: u64, name: Vec<u8> },
    Attrs { ino: u64 },
}

/// A change a notice told of, and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub what: Changed,
    pub version: u64,
}

impl EntryCache {
    fn trusted(&self, now: Instant) -> bool {
        self.heard
            .is_some_and(|t| now.saturating_duration_since(t) < QUIET_LIMIT)
    }

    pub fn lookup(&self, dir: u64, name: &[u8], now: Instant) -> Lookup {
        if !self.trusted(now) {
            return Lookup::Unknown;
        }
        match self.names.get(&(dir, name.to_vec())) {
            Some(Slot {
                value: Some(None), ..
            }) => Lookup::Absent,
            Some(Slot {
                value: Some(Some(ino)),
                ..
            }) => self.attr(*ino, now).map_or(Lookup::Unknown, Lookup::Found),
            Some(Slot { value: None, .. }) => Lookup::Unknown,
            None if self.complete.contains(&dir) => Lookup::Absent,
            None => Lookup::Unknown,
        }
    }

    pub fn attr(&self, ino: u64, now: Instant) -> Option<Attr> {
        if !self.trusted(now) {
            return None;
        }
        self.attrs.get(&ino)?.value
    }

    /// The current notice stream, to [`Stamp`] a request with before it is sent.
    pub fn stream(&self) -> u64 {
        self.streams
    }

    fn keeps(&mut self, at: Stamp) -> bool {
        let version = at.version;
        if self.heard.is_none() || at.stream != self.streams || version < self.floor {
            return false;
        }
        if self.names.len() + self.attrs.len() >= MAX_SLOTS {
            self.forget(self.latest.max(version));
        }
        true
    }

    /// A reply: `name` in `dir` names `ino` (or nothing).
    pub fn entry(&mut self, at: Stamp, dir: u64, name: &[u8], ino: Option<u64>) {
        if name != b"." && name != b".." && self.keeps(at) {
            set(&mut self.names, (dir, name.to_vec()), at.version, Some(ino));
        }
    }

    /// A reply showing `attr`.
    pub fn attr_at(&mut self, at: Stamp, attr: Attr) {
        if self.keeps(at) {
            set(&mut self.attrs, attr.ino, at.version, Some(attr));
        }
    }

    /// `dir` was created empty by this mount (the reply `at`).
    pub fn created_dir(&mut self, at: Stamp, dir: u64) {
        if self.keeps(at) {
            self.complete.insert(dir);
        }
    }

    /// Whether a reply to this mount showed what `c` changed, as of its version or later:
    /// the kernel was told then.
    pub fn answered(&self, c: &Change) -> bool {
        let shown = |version: u64, value_known: bool| version >= c.version && value_known;
        match &c.what {
            Changed::Name { dir, name } => self
                .names
                .get(&(*dir, name.clone()))
                .is_some_and(|s| shown(s.version, s.value.is_some())),
            Changed::Attrs { ino } => self
                .attrs
                .get(ino)
                .is_some_and(|s| shown(s.version, s.value.is_some())),
        }
    }

    /// A message of the notice stream. Returns the changes it told of that no reply here
    /// had shown yet.
    pub fn notices(&mut self, n: &Notices, now: Instant) -> Vec<Change> {
        if self.heard.is_none() {
            // The first message of a new stream: what came before it is unknown.
            self.streams += 1;
            self.forget(n.version);
        }
        self.heard = Some(now);
        self.latest = self.latest.max(n.version);
        if n.reset {
            self.forget(self.latest);
        }
        let mut news = Vec::new();
        for notice in &n.notices {
            let (what, taken) = if notice.dir != 0 {
                let key = (notice.dir, notice.name.clone());
                let taken = set(&mut self.names, key, notice.version, None);
                let (dir, name) = (notice.dir, notice.name.clone());
                (Changed::Name { dir, name }, taken)
            } else {
                let taken = set(&mut self.attrs, notice.ino, notice.version, None);
                (Changed::Attrs { ino: notice.ino }, taken)
            };
            if taken {
                news.push(Change {
                    what,
                    version: notice.version,
                });
            }
        }
        news
    }

    /// The notice stream broke: nothing is trusted until a new one starts.
    pub fn disconnected(&mut self) {
        self.heard = None;
        self.forget(self.latest);
    }

    fn forget(&mut self, floor: u64) {
        self.names.clear();
        self.attrs.clear();
        self.complete.clear();
        self.floor = self.floor.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::meta::Notice;

    fn at(c: &EntryCache, version: u64) -> Stamp {
        Stamp {
            stream: c.stream(),
            version,
        }
    }

    fn attr(ino: u64, size: u64) -> Attr {
        Attr {
            ino,
            size,
            ..Attr::default()
        }
    }

    fn msg(version: u64, notices: Vec<Notice>) -> Notices {
        Notices {
            version,
            notices,
            reset: false,
        }
    }

    fn entry_notice(version: u64, dir: u64, name: &[u8]) -> Notice {
        Notice {
            version,
            dir,
            name: name.to_vec(),
            ino: 0,
        }
    }

    fn inode_notice(version: u64, ino: u64) -> Notice {
        Notice {
            version,
            dir: 0,
            name: Vec::new(),
            ino,
        }
    }

    fn started(version: u64) -> (EntryCache, Instant) {
        let mut c = EntryCache::default();
        let now = Instant::now();
        c.notices(&msg(version, Vec::new()), now);
        (c, now)
    }

    #[test]
    fn nothing_is_kept_or_trusted_without_a_stream() {
        let mut c = EntryCache::default();
        let now = Instant::now();
        c.entry(at(&c, 5), 1, b"a", Some(2));
        c.attr_at(at(&c, 5), attr(2, 0));
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
        c.notices(&msg(5, Vec::new()), now);
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
    }

    #[test]
    fn replies_answer_until_a_newer_notice() {
        let (mut c, now) = started(10);
        c.entry(at(&c, 11), 1, b"a", Some(2));
        c.attr_at(at(&c, 11), attr(2, 7));
        assert_eq!(c.lookup(1, b"a", now), Lookup::Found(attr(2, 7)));
        // The notice of the change the reply already shows changes nothing.
        c.notices(&msg(11, vec![inode_notice(11, 2)]), now);
        assert_eq!(c.lookup(1, b"a", now), Lookup::Found(attr(2, 7)));
        c.notices(&msg(12, vec![inode_notice(12, 2)]), now);
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
        c.attr_at(at(&c, 12), attr(2, 9));
        assert_eq!(c.lookup(1, b"a", now), Lookup::Found(attr(2, 9)));
        c.notices(&msg(13, vec![entry_notice(13, 1, b"a")]), now);
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
    }

    #[test]
    fn notices_report_the_changes_no_reply_showed() {
        let (mut c, now) = started(10);
        c.entry(at(&c, 11), 1, b"mine", Some(2));
        c.attr_at(at(&c, 11), attr(1, 0));
        let notices = vec![
            entry_notice(11, 1, b"mine"),
            inode_notice(11, 1),
            entry_notice(12, 1, b"theirs"),
            inode_notice(12, 3),
        ];
        let news = c.notices(&msg(12, notices), now);
        let name = |name: &[u8], version| Change {
            what: Changed::Name {
                dir: 1,
                name: name.to_vec(),
            },
            version,
        };
        let attrs = |ino, version| Change {
            what: Changed::Attrs { ino },
            version,
        };
        assert_eq!(news, vec![name(b"theirs", 12), attrs(3, 12)]);
        assert!(c.answered(&name(b"mine", 11)));
        assert!(c.answered(&attrs(1, 11)));
        assert!(!c.answered(&name(b"theirs", 12)));
        assert!(!c.answered(&attrs(3, 12)));
        // A reply that comes after its own change's notice still answers for it.
        c.entry(at(&c, 12), 1, b"theirs", None);
        c.attr_at(at(&c, 12), attr(3, 5));
        assert!(c.answered(&name(b"theirs", 12)));
        assert!(c.answered(&attrs(3, 12)));
        assert!(!c.answered(&name(b"theirs", 13)));
    }

    #[test]
    fn a_reply_overtaken_by_a_notice_is_not_kept() {
        let (mut c, now) = started(10);
        c.notices(&msg(12, vec![entry_notice(12, 1, b"a")]), now);
        c.entry(at(&c, 11), 1, b"a", Some(2));
        c.attr_at(at(&c, 11), attr(2, 0));
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
        // Older than the stream: notices before it were never heard.
        c.entry(at(&c, 9), 1, b"b", Some(3));
        c.attr_at(at(&c, 9), attr(3, 0));
        assert_eq!(c.lookup(1, b"b", now), Lookup::Unknown);
    }

    #[test]
    fn a_created_directory_answers_absent_names() {
        let (mut c, now) = started(10);
        c.created_dir(at(&c, 11), 5);
        assert_eq!(c.lookup(5, b"x", now), Lookup::Absent);
        assert_eq!(c.lookup(6, b"x", now), Lookup::Unknown);
        // Another mount created "y" in it.
        c.notices(&msg(12, vec![entry_notice(12, 5, b"y")]), now);
        assert_eq!(c.lookup(5, b"y", now), Lookup::Unknown);
        c.entry(at(&c, 13), 5, b"x", None);
        assert_eq!(c.lookup(5, b"x", now), Lookup::Absent);
    }

    #[test]
    fn silence_reset_and_disconnection_stop_trust() {
        let (mut c, now) = started(10);
        c.entry(at(&c, 11), 1, b"a", Some(2));
        c.attr_at(at(&c, 11), attr(2, 0));
        assert_eq!(c.lookup(1, b"a", now + QUIET_LIMIT), Lookup::Unknown);
        c.notices(
            &Notices {
                version: 12,
                notices: Vec::new(),
                reset: true,
            },
            now,
        );
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
        c.entry(at(&c, 12), 1, b"a", Some(2));
        c.attr_at(at(&c, 12), attr(2, 0));
        c.disconnected();
        c.notices(&msg(20, Vec::new()), now);
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);
        c.entry(at(&c, 15), 1, b"a", Some(2));
        assert_eq!(c.lookup(1, b"a", now), Lookup::Unknown);

        // Asked before the stream broke, answered (at a high version) after a new one
        // started: perhaps by the old master, so not kept.
        let before = at(&c, 30);
        c.disconnected();
        c.notices(&msg(25, Vec::new()), now);
        c.entry(before, 1, b"b", Some(3));
        c.attr_at(before, attr(3, 0));
        assert_eq!(c.lookup(1, b"b", now), Lookup::Unknown);
    }
}
