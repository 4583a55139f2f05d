//! Notices to mounts of what each committed change touched (`Meta.Watch`): the names and
//! inodes whose copies a mount may hold are now stale. [`touched`] works them out (pure),
//! [`Notifier`] hands them to every watcher, [`watch`] streams them to one mount. With them
//! a mount answers lookups and attribute requests from memory and still sees every other
//! mount's changes.

use crate::core::Master;
use crate::state::State;
use elkfs_proto::changelog::record::Op;
use elkfs_proto::meta::{Notice, Notices};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;
use tracing::debug;

/// Changes a watcher may fall behind before it is told to forget everything.
const BACKLOG: usize = 4096;

tokio::task_local! {
    /// The mount session whose request is being handled (0: none), set by
    /// [`crate::service::Origin`].
    pub static ORIGIN: u64;
}

/// What one committed change touched.
#[derive(Debug, Default, PartialEq)]
pub struct Touched {
    pub notices: Vec<Notice>,
    /// More than can be listed: every cached copy is stale.
    pub reset: bool,
    /// The mount session that made the change (0: none): its reply showed the change, so
    /// it is not sent these notices.
    pub origin: u64,
}

/// What `op`, about to be applied to `state` as `version`, touches.
pub fn touched(state: &State, version: u64, op: &Op) -> Touched {
    let entry = |dir: u64, name: &[u8]| Notice {
        version,
        dir,
        name: name.to_vec(),
        ino: 0,
    };
    let inode = |ino: u64| Notice {
        version,
        dir: 0,
        name: Vec::new(),
        ino,
    };
    let named = |dir: u64, name: &[u8]| state.lookup(dir, name).ok().map(|n| inode(n.ino));
    let notices = match op {
        Op::Mknod(r) => vec![entry(r.parent, &r.name), inode(r.parent)],
        Op::Link(r) => vec![entry(r.parent, &r.name), inode(r.parent), inode(r.ino)],
        // The removed node's link count changes too (it may have other names).
        Op::Unlink(r) => {
            let mut n = vec![entry(r.parent, &r.name), inode(r.parent)];
            n.extend(named(r.parent, &r.name));
            n
        }
        Op::Rename(r) => {
            let mut n = vec![
                entry(r.parent, &r.name),
                entry(r.new_parent, &r.new_name),
                inode(r.parent),
                inode(r.new_parent),
            ];
            n.extend(named(r.parent, &r.name));
            n.extend(named(r.new_parent, &r.new_name));
            n
        }
        Op::SetAttr(r) => vec![inode(r.ino)],
        Op::Truncate(r) => vec![inode(r.ino)],
        Op::WriteEnd(r) => vec![inode(r.ino)],
        Op::SetGoal(r) if r.recursive => {
            return Touched {
                reset: true,
                ..Touched::default()
            }
        }
        Op::SetGoal(r) => vec![inode(r.ino)],
        Op::WriteChunk(_)
        | Op::Purge(_)
        | Op::ChunkVersion(_)
        | Op::ReserveChunkIds(_)
        | Op::Promote(_) => Vec::new(),
    };
    Touched {
        notices,
        ..Touched::default()
    }
}

/// Hands every change's notices to every watching mount.
pub struct Notifier {
    tx: broadcast::Sender<Arc<Touched>>,
    /// Turned true at shutdown: watch streams never end by themselves, and the server
    /// waits for open streams to end.
    closing: watch::Sender<bool>,
    watchers: Watchers,
}

/// Open watch streams, counted by the session they watch for (0: none named).
type Watchers = Arc<Mutex<HashMap<u64, usize>>>;

fn lock_watchers(watchers: &Watchers) -> MutexGuard<'_, HashMap<u64, usize>> {
    watchers.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            tx: broadcast::channel(BACKLOG).0,
            closing: watch::channel(false).0,
            watchers: Watchers::default(),
        }
    }
}

/// One watch stream's receiver, counted among the watchers while it lives.
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<Touched>>,
    session: u64,
    watchers: Watchers,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut w = lock_watchers(&self.watchers);
        if let Some(n) = w.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.session);
            }
        }
    }
}

impl Notifier {
    /// End every watch stream (at shutdown); mounts watch the next master.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Notifier::close`] was called.
    pub async fn closed(&self) {
        let _ = self.closing.subscribe().wait_for(|c| *c).await;
    }

    pub fn subscribe(&self, session: u64) -> Subscription {
        *lock_watchers(&self.watchers).entry(session).or_default() += 1;
        Subscription {
            rx: self.tx.subscribe(),
            session,
            watchers: self.watchers.clone(),
        }
    }

    /// Whether a change made by `origin` is news to anyone: nothing needs to be worked
    /// out otherwise (a lone mount's own changes wake no watch task).
    pub fn watched_by_other_than(&self, origin: u64) -> bool {
        lock_watchers(&self.watchers)
            .keys()
            .any(|&s| s == 0 || s != origin)
    }

    pub fn publish(&self, t: Touched) {
        if t.reset || !t.notices.is_empty() {
            // No receiver left is fine: nobody caches anything.
            let _ = self.tx.send(Arc::new(t));
        }
    }
}

/// Messages buffered per watcher; behind that the notices wait in the broadcast backlog.
pub const WATCH_QUEUE: usize = 16;
/// How often a watcher hears from the master when nothing changes: a mount stops trusting
/// its cache when the stream goes quiet for longer (see `elkfs_mount::entry_cache`).
const WATCH_TICK: Duration = Duration::from_millis(250);

/// Sends `Notices` to one watching mount (of `session`, 0 if unknown) until it goes away
/// or this master is superseded. Changes the mount made itself are left out.
pub async fn watch(master: Arc<Master>, session: u64, tx: mpsc::Sender<Result<Notices, Status>>) {
    let mut sub = master.notifier.subscribe(session);
    let mut tick = tokio::time::interval(WATCH_TICK);
    let closed = master.notifier.closed();
    tokio::pin!(closed);
    loop {
        let mut out = Notices::default();
        tokio::select! {
            changed = sub.rx.recv() => match changed {
                Ok(t) => {
                    // Everything else already waiting goes in the same message.
                    let mut next = Some(t);
                    while let Some(t) = next {
                        out.reset |= t.reset;
                        if session == 0 || t.origin != session {
                            out.notices.extend(t.notices.iter().cloned());
                        }
                        next = match sub.rx.try_recv() {
                            Ok(t) => Some(t),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                debug!(dropped = n, "watcher fell behind: told to reset");
                                out.reset = true;
                                None
                            }
                            Err(_) => None,
                        };
                    }
                    if !out.reset && out.notices.is_empty() {
                        continue;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!(dropped = n, "watcher fell behind: told to reset");
                    out.reset = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if let Err(s) = master.refuse_if_superseded() {
                    let _ = tx.send(Err(s.into())).await;
                    return;
                }
            }
            () = tx.closed() => return,
            () = &mut closed => return,
        }
        // Notices come in version order. Ticks and resets tell the master's version: a
        // reset mount keeps no reply older than it.
        out.version = match out.notices.last() {
            Some(n) if !out.reset => n.version,
            _ => master.lock().state.version,
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Ts;
    use elkfs_proto::changelog::{Link, Mknod, Record, Rename, SetGoal, Unlink};
    use elkfs_proto::limits::ROOT_INO;
    use elkfs_proto::meta::NodeKind;

    fn apply(s: &mut State, op: Op) -> Touched {
        let v = s.version + 1;
        let t = touched(s, v, &op);
        s.apply(v, &Record { op: Some(op) }).expect("valid record");
        t
    }

    fn file(s: &mut State, name: &str) -> u64 {
        let ino = s.next_ino;
        apply(
            s,
            Op::Mknod(Mknod {
                parent: ROOT_INO,
                name: name.into(),
                ino,
                kind: NodeKind::File as i32,
                goal: 1,
                ..Mknod::default()
            }),
        );
        ino
    }

    fn said(t: &Touched) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
        let entries = t.notices.iter().filter(|n| n.dir != 0);
        let inodes = t.notices.iter().filter(|n| n.dir == 0);
        (
            entries.map(|n| (n.dir, n.name.clone())).collect(),
            inodes.map(|n| n.ino).collect(),
        )
    }

    #[test]
    fn every_name_and_inode_a_change_touches_is_told() {
        let mut s = State::new(1, Ts::default());
        let a = file(&mut s, "a");
        let b = file(&mut s, "b");
        // A second name for `a`: removing it changes a's link count, seen under "a".
        apply(
            &mut s,
            Op::Link(Link {
                ino: a,
                parent: ROOT_INO,
                name: b"a2".to_vec(),
                time: None,
            }),
        );
        let t = apply(
            &mut s,
            Op::Unlink(Unlink {
                parent: ROOT_INO,
                name: b"a2".to_vec(),
                ..Unlink::default()
            }),
        );
        assert_eq!(
            said(&t),
            (vec![(ROOT_INO, b"a2".to_vec())], vec![ROOT_INO, a])
        );
        assert!(t.notices.iter().all(|n| n.version == s.version));

        // Renaming onto "b" replaces it: both names, both nodes, the directory.
        let t = apply(
            &mut s,
            Op::Rename(Rename {
                parent: ROOT_INO,
                name: b"a".to_vec(),
                new_parent: ROOT_INO,
                new_name: b"b".to_vec(),
                ..Rename::default()
            }),
        );
        let (entries, inodes) = said(&t);
        assert_eq!(
            entries,
            vec![(ROOT_INO, b"a".to_vec()), (ROOT_INO, b"b".to_vec())]
        );
        assert!(inodes.contains(&a) && inodes.contains(&b) && inodes.contains(&ROOT_INO));

        let t = apply(
            &mut s,
            Op::SetGoal(SetGoal {
                ino: ROOT_INO,
                goal: 2,
                recursive: true,
            }),
        );
        assert!(t.reset);
    }
}
