//! What healing does next. Pure: takes a view of chunks, copies and servers, returns
//! replications and deletions; the healer (`healer.rs`) carries them out.
//!
//! A copy is *valid* when its server is connected, it has the chunk's version and no CRC
//! failure was reported for it. Copies on a server that went away still *count* (they are
//! not re-replicated) during its grace period and while it is in maintenance, but they
//! are never a source and never make a chunk over goal.

use crate::cluster::Copy;
use crate::state::{Body, State};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the planner needs to know about one chunkserver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerView {
    pub id: u64,
    pub connected: bool,
    /// Away, but its copies still count (grace period or maintenance).
    pub counts_while_away: bool,
    pub maintenance: bool,
    pub total: u64,
    pub used: u64,
    /// Bytes new chunks may still use.
    pub avail: u64,
    pub chunks: u64,
}

impl ServerView {
    fn usage_ppm(&self) -> u64 {
        usage_ppm(self.used, self.total)
    }

    fn takes_copies(&self) -> bool {
        self.connected && !self.maintenance && self.avail > 0
    }
}

/// Used share of a disk in parts per million (0 for a server reporting no disk).
fn usage_ppm(used: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (u128::from(used) * 1_000_000 / u128::from(total)) as u64
}

/// One chunk as the metadata and the cluster see it.
#[derive(Clone, Copy, Debug)]
pub struct ChunkView<'a> {
    pub id: u64,
    pub version: u32,
    /// The highest goal among files referring to the chunk.
    pub goal: u32,
    /// Leave it alone: a writer holds it (copies are changing) or its last replication
    /// failed a moment ago.
    pub hold: bool,
    pub copies: &'a [Copy],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Replications in flight per server, as source and (separately) as destination.
    pub per_server: usize,
    /// Replications in flight in the whole cluster.
    pub total: usize,
    /// Disk usage spread (percentage points) above which chunks are moved.
    pub rebalance_threshold_pct: u32,
    /// Chunks moved per pass while rebalancing.
    pub rebalance_batch: usize,
    /// Deletions decided per pass (the rest wait for the next one).
    pub deletes: usize,
}

/// Replications running now (the planner leaves their chunks alone).
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    /// Chunk → replications of it running.
    pub chunks: HashMap<u64, usize>,
    pub out: HashMap<u64, usize>,
    pub into: HashMap<u64, usize>,
    running: usize,
}

impl InFlight {
    pub fn add(&mut self, chunk: u64, source: u64, dest: u64) {
        self.running += 1;
        for (map, key) in [
            (&mut self.chunks, chunk),
            (&mut self.out, source),
            (&mut self.into, dest),
        ] {
            *map.entry(key).or_default() += 1;
        }
    }

    pub fn remove(&mut self, chunk: u64, source: u64, dest: u64) {
        self.running = self.running.saturating_sub(1);
        for (map, key) in [
            (&mut self.chunks, chunk),
            (&mut self.out, source),
            (&mut self.into, dest),
        ] {
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    pub fn contains(&self, chunk: u64) -> bool {
        self.chunks.contains_key(&chunk)
    }

    /// Replications running.
    pub fn len(&self) -> usize {
        self.running
    }

    pub fn is_empty(&self) -> bool {
        self.running == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Older version than the metadata's.
    Stale,
    /// CRC failures reported; the chunk has its goal in valid copies again.
    Damaged,
    /// More valid copies than the goal (also the second half of a rebalancing move).
    Extra,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Order `dest` to copy `version` of `chunk` from `source`.
    Replicate {
        chunk: u64,
        version: u32,
        source: u64,
        dest: u64,
    },
    Delete {
        chunk: u64,
        version: u32,
        server: u64,
        why: Why,
    },
}

/// A chunk's copies sorted by what they are worth.
#[derive(Debug, Default)]
struct Assessed {
    valid: Vec<u64>,
    /// Current, undamaged copies on servers that are away but still count.
    away: usize,
    damaged: Vec<u64>,
    /// (server, version) of old copies on connected servers.
    stale: Vec<(u64, u32)>,
}

impl Assessed {
    fn counted(&self) -> usize {
        self.valid.len() + self.away
    }
}

fn assess(chunk: &ChunkView, servers: &HashMap<u64, &ServerView>) -> Assessed {
    let mut a = Assessed::default();
    for c in chunk.copies {
        let Some(s) = servers.get(&c.server) else {
            continue;
        };
        if !s.connected {
            if s.counts_while_away && c.version == chunk.version && !c.damaged {
                a.away += 1;
            }
        } else if c.version != chunk.version {
            a.stale.push((c.server, c.version));
        } else if c.damaged {
            a.damaged.push(c.server);
        } else {
            a.valid.push(c.server);
        }
    }
    a
}

/// Chunks below goal that have a source, most endangered first.
struct Needy {
    id: u64,
    version: u32,
    missing: usize,
    valid: Vec<u64>,
    holders: Vec<u64>,
}

/// Decide the next actions. Replications stay within `limits` counting `in_flight`;
/// chunks being replicated or written are left alone.
pub fn plan<'a>(
    servers: &[ServerView],
    chunks: impl IntoIterator<Item = ChunkView<'a>>,
    in_flight: &InFlight,
    limits: &Limits,
) -> Vec<Action> {
    let by_id: HashMap<u64, &ServerView> = servers.iter().map(|s| (s.id, s)).collect();
    // Copies deleted so far in this pass, so extras spread over the fullest servers rather
    // than all coming from one.
    let mut freed: HashMap<u64, u64> = HashMap::new();
    let usage = |id: &u64, freed: &HashMap<u64, u64>| {
        by_id.get(id).map_or(0, |s| {
            let gone = freed.get(id).copied().unwrap_or(0) * elkfs_proto::limits::CHUNK_SIZE;
            usage_ppm(s.used.saturating_sub(gone), s.total)
        })
    };
    let movable = rebalance_pair(servers, limits);
    let mut actions = Vec::new();
    let mut deletes = 0;
    let mut needy = Vec::new();
    let mut moves = Vec::new();
    for chunk in chunks {
        if chunk.hold || in_flight.contains(chunk.id) {
            continue;
        }
        let a = assess(&chunk, &by_id);
        let goal = chunk.goal.max(1) as usize;
        let mut delete = |server: u64, version: u32, why: Why| {
            if deletes < limits.deletes {
                deletes += 1;
                actions.push(Action::Delete {
                    chunk: chunk.id,
                    version,
                    server,
                    why,
                });
            }
        };
        if !a.valid.is_empty() {
            for &(server, version) in &a.stale {
                delete(server, version, Why::Stale);
            }
        }
        if a.counted() < goal {
            if !a.valid.is_empty() {
                needy.push(Needy {
                    id: chunk.id,
                    version: chunk.version,
                    missing: goal - a.counted(),
                    holders: chunk.copies.iter().map(|c| c.server).collect(),
                    valid: a.valid,
                });
            }
            continue;
        }
        if a.valid.len() < goal {
            continue;
        }
        for &server in &a.damaged {
            delete(server, chunk.version, Why::Damaged);
        }
        let mut valid = a.valid;
        if valid.len() > goal {
            // Fullest servers first.
            valid.sort_by_key(|s| (std::cmp::Reverse(usage(s, &freed)), *s));
            for &server in &valid[..valid.len() - goal] {
                delete(server, chunk.version, Why::Extra);
                *freed.entry(server).or_default() += 1;
            }
        } else if let Some(r) = &movable {
            if moves.len() < limits.rebalance_batch.min(r.chunks) && valid.contains(&r.from) {
                let dest =
                    r.to.iter()
                        .find(|&&s| !chunk.copies.iter().any(|c| c.server == s));
                if let Some(&dest) = dest {
                    moves.push((chunk.id, chunk.version, r.from, dest));
                }
            }
        }
    }
    let mut busy = in_flight.clone();
    needy.sort_by_key(|n| (n.valid.len(), std::cmp::Reverse(n.missing), n.id));
    // Chunks no server can take another copy of (goal above the servers there are) do not
    // hold rebalancing up.
    let healing = needy.iter().any(|n| {
        servers
            .iter()
            .any(|s| s.takes_copies() && !n.holders.contains(&s.id))
    });
    for n in needy {
        if busy.len() >= limits.total {
            break;
        }
        let mut holders = n.holders;
        for _ in 0..n.missing {
            let Some(source) = pick_source(&n.valid, &busy, limits) else {
                break;
            };
            let Some(dest) = pick_dest(servers, &holders, &busy, limits) else {
                break;
            };
            if busy.len() >= limits.total {
                break;
            }
            busy.add(n.id, source, dest);
            holders.push(dest);
            actions.push(Action::Replicate {
                chunk: n.id,
                version: n.version,
                source,
                dest,
            });
        }
    }
    // Moving data is the last thing to spend copies on: only when nothing needs healing
    // and the previous moves are done (their extra copies deleted).
    if !healing && in_flight.is_empty() && deletes == 0 {
        for (chunk, version, source, dest) in moves {
            if busy.len() >= limits.total
                || !has_room(&busy.out, source, limits)
                || !has_room(&busy.into, dest, limits)
            {
                break;
            }
            busy.add(chunk, source, dest);
            actions.push(Action::Replicate {
                chunk,
                version,
                source,
                dest,
            });
        }
    }
    actions
}

fn has_room(busy: &HashMap<u64, usize>, server: u64, limits: &Limits) -> bool {
    busy.get(&server).copied().unwrap_or(0) < limits.per_server
}

/// The least busy valid copy that may still send.
fn pick_source(valid: &[u64], busy: &InFlight, limits: &Limits) -> Option<u64> {
    valid
        .iter()
        .copied()
        .filter(|&s| has_room(&busy.out, s, limits))
        .min_by_key(|s| (busy.out.get(s).copied().unwrap_or(0), *s))
}

/// The best server without any copy of the chunk: most free space (less what is already
/// on its way there), then fewest chunks, then least busy.
fn pick_dest(
    servers: &[ServerView],
    holders: &[u64],
    busy: &InFlight,
    limits: &Limits,
) -> Option<u64> {
    const INCOMING: u64 = elkfs_proto::limits::CHUNK_SIZE;
    servers
        .iter()
        .filter(|s| s.takes_copies() && !holders.contains(&s.id))
        .filter(|s| has_room(&busy.into, s.id, limits))
        .min_by_key(|s| {
            let incoming = busy.into.get(&s.id).copied().unwrap_or(0);
            let free = s.avail.saturating_sub(incoming as u64 * INCOMING);
            (std::cmp::Reverse(free), s.chunks, incoming, s.id)
        })
        .map(|s| s.id)
}

/// A rebalancing pass: from the fullest server to the others whose usage is lower by more
/// than the threshold (emptiest first), at most `chunks` chunks.
struct Rebalance {
    from: u64,
    to: Vec<u64>,
    /// Half the gap to the emptiest server, in chunks: moving more would overshoot into the
    /// opposite imbalance (and the next pass would move chunks back).
    chunks: usize,
}

fn rebalance_pair(servers: &[ServerView], limits: &Limits) -> Option<Rebalance> {
    let eligible = || servers.iter().filter(|s| s.takes_copies() && s.total > 0);
    let full = eligible().max_by_key(|s| (s.usage_ppm(), s.id))?;
    let threshold = u64::from(limits.rebalance_threshold_pct) * 10_000;
    let mut emptier: Vec<&ServerView> = eligible()
        .filter(|s| full.usage_ppm() - s.usage_ppm() > threshold)
        .collect();
    emptier.sort_by_key(|s| (s.usage_ppm(), s.id));
    let emptiest = emptier.first()?;
    let gap_ppm = u128::from(full.usage_ppm() - emptiest.usage_ppm());
    let disk = u128::from(full.total.min(emptiest.total));
    let chunks = gap_ppm * disk / 2_000_000 / u128::from(elkfs_proto::limits::CHUNK_SIZE);
    (chunks > 0).then(|| Rebalance {
        from: full.id,
        to: emptier.iter().map(|s| s.id).collect(),
        chunks: usize::try_from(chunks).unwrap_or(usize::MAX),
    })
}

/// The metadata and the copies at one moment, for walking outside the master's lock
/// (both are persistent maps: taking the view is O(1)).
pub struct View {
    pub state: State,
    pub locations: imbl::HashMap<u64, Vec<Copy>>,
    /// Chunks to leave alone (see [`ChunkView::hold`]).
    pub hold: HashSet<u64>,
    pub servers: Vec<ServerView>,
    goals: HashMap<u64, u32>,
}

impl View {
    pub fn new(
        state: State,
        locations: imbl::HashMap<u64, Vec<Copy>>,
        hold: HashSet<u64>,
        servers: Vec<ServerView>,
    ) -> View {
        let goals = chunk_goals(&state);
        View {
            state,
            locations,
            hold,
            servers,
            goals,
        }
    }

    /// Every chunk of the metadata with its goal and copies.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkView<'_>> {
        self.state.chunks.iter().map(|(&id, meta)| ChunkView {
            id,
            version: meta.version,
            // A chunk no file refers to any more is being deleted; keep one copy meanwhile.
            goal: self.goals.get(&id).copied().unwrap_or(1),
            hold: self.hold.contains(&id),
            copies: self.locations.get(&id).map_or(&[], |c| c.as_slice()),
        })
    }
}

/// The goal of every chunk: the highest goal among the files referring to it.
fn chunk_goals(state: &State) -> HashMap<u64, u32> {
    let mut goals: HashMap<u64, u32> = HashMap::with_capacity(state.chunks.len());
    for node in state.inodes.values() {
        if let Body::File { chunks, .. } = &node.body {
            for &id in chunks.iter().filter(|&&id| id != 0) {
                let g = goals.entry(id).or_default();
                *g = (*g).max(node.goal);
            }
        }
    }
    goals
}

/// Chunk health for `elkfs status`: counts by goal × valid copies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// (goal, valid copies) → chunks.
    pub cells: BTreeMap<(u32, u32), u64>,
    pub missing: u64,
    pub endangered: u64,
    pub under_goal: u64,
    pub over_goal: u64,
    pub damaged_copies: u64,
}

pub fn health<'a>(
    servers: &[ServerView],
    chunks: impl IntoIterator<Item = ChunkView<'a>>,
) -> Health {
    let by_id: HashMap<u64, &ServerView> = servers.iter().map(|s| (s.id, s)).collect();
    let mut h = Health::default();
    for chunk in chunks {
        let a = assess(&chunk, &by_id);
        let valid = a.valid.len() as u32;
        let goal = chunk.goal.max(1);
        *h.cells.entry((goal, valid)).or_default() += 1;
        h.missing += u64::from(valid == 0);
        h.endangered += u64::from(valid == 1 && goal > 1);
        h.under_goal += u64::from(valid < goal);
        h.over_goal += u64::from(valid > goal);
        h.damaged_copies += chunk.copies.iter().filter(|c| c.damaged).count() as u64;
    }
    h
}

#[cfg(test)]
mod tests;
