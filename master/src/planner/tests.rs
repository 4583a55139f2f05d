use super::*;
use proptest::prelude::*;

const GIB: u64 = 1 << 30;

fn server(id: u64) -> ServerView {
    ServerView {
        id,
        connected: true,
        counts_while_away: true,
        maintenance: false,
        total: 100 * GIB,
        used: 10 * GIB,
        avail: 90 * GIB,
        chunks: 10,
    }
}

fn away(id: u64, counts: bool) -> ServerView {
    ServerView {
        connected: false,
        counts_while_away: counts,
        ..server(id)
    }
}

fn copy(server: u64, version: u32) -> Copy {
    Copy {
        server,
        version,
        damaged: false,
    }
}

fn limits() -> Limits {
    Limits {
        per_server: 4,
        total: 64,
        rebalance_threshold_pct: 10,
        rebalance_batch: 4,
        deletes: 1000,
    }
}

fn chunk(id: u64, goal: u32, copies: &[Copy]) -> ChunkView<'_> {
    ChunkView {
        id,
        version: 1,
        goal,
        hold: false,
        copies,
    }
}

fn replications(actions: &[Action]) -> Vec<(u64, u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Replicate {
                chunk,
                source,
                dest,
                ..
            } => Some((chunk, source, dest)),
            Action::Delete { .. } => None,
        })
        .collect()
}

fn deletions(actions: &[Action]) -> Vec<(u64, u64, Why)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Delete {
                chunk, server, why, ..
            } => Some((chunk, server, why)),
            Action::Replicate { .. } => None,
        })
        .collect()
}

#[test]
fn under_goal_copies_to_the_server_with_most_free_space() {
    let mut servers = vec![server(1), server(2), server(3)];
    servers[2].avail = 95 * GIB;
    let copies = [copy(1, 1)];
    let actions = plan(
        &servers,
        [chunk(7, 3, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(replications(&actions), vec![(7, 1, 3), (7, 1, 2)]);
}

#[test]
fn most_endangered_chunks_go_first_within_the_limits() {
    let servers = vec![server(1), server(2), server(3), server(4)];
    let one = [copy(1, 1)];
    let two = [copy(1, 1), copy(2, 1)];
    let tight = Limits {
        total: 1,
        ..limits()
    };
    let actions = plan(
        &servers,
        [chunk(5, 3, &two), chunk(6, 3, &one)],
        &InFlight::default(),
        &tight,
    );
    assert_eq!(replications(&actions).len(), 1);
    assert_eq!(replications(&actions)[0].0, 6);
}

#[test]
fn copies_on_a_server_in_grace_or_maintenance_count_but_lost_ones_do_not() {
    let copies = [copy(1, 1), copy(2, 1)];
    let within = vec![server(1), away(2, true), server(3)];
    let plan_for = |servers: &[ServerView]| {
        plan(
            servers,
            [chunk(7, 2, &copies)],
            &InFlight::default(),
            &limits(),
        )
    };
    assert!(plan_for(&within).is_empty());
    let lost = vec![server(1), away(2, false), server(3)];
    assert_eq!(replications(&plan_for(&lost)), vec![(7, 1, 3)]);
}

#[test]
fn damaged_copy_is_replaced_first_and_deleted_once_the_goal_is_met() {
    let servers = vec![server(1), server(2), server(3)];
    let mut copies = vec![copy(1, 1), copy(2, 1)];
    copies[1].damaged = true;
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(replications(&actions), vec![(7, 1, 3)]);
    assert!(deletions(&actions).is_empty());
    copies.push(copy(3, 1));
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(deletions(&actions), vec![(7, 2, Why::Damaged)]);
}

#[test]
fn the_last_copy_is_never_deleted_even_damaged() {
    let servers = vec![server(1)];
    let mut copies = vec![copy(1, 1)];
    copies[0].damaged = true;
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert!(actions.is_empty());
}

#[test]
fn extras_go_from_the_fullest_servers_and_stale_copies_are_deleted() {
    let mut servers = vec![server(1), server(2), server(3), server(4)];
    servers[1].used = 80 * GIB;
    let copies = [copy(1, 1), copy(2, 1), copy(3, 1), copy(4, 0)];
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert!(replications(&actions).is_empty());
    let mut d = deletions(&actions);
    d.sort_by_key(|d| d.1);
    assert_eq!(d, vec![(7, 2, Why::Extra), (7, 4, Why::Stale)]);
}

#[test]
fn extras_of_many_chunks_spread_over_equally_full_servers() {
    let servers = vec![server(1), server(2), server(3)];
    let copies = [copy(1, 1), copy(2, 1), copy(3, 1)];
    let chunks = (0..10).map(|id| chunk(id, 2, &copies));
    let actions = plan(&servers, chunks, &InFlight::default(), &limits());
    let per_server = |s| deletions(&actions).iter().filter(|d| d.1 == s).count();
    assert_eq!(deletions(&actions).len(), 10);
    assert!((1..=3).all(|s| per_server(s) <= 4), "{actions:?}");
}

#[test]
fn leased_and_busy_chunks_are_left_alone() {
    let servers = vec![server(1), server(2)];
    let copies = [copy(1, 1)];
    let mut leased = chunk(7, 2, &copies);
    leased.hold = true;
    assert!(plan(&servers, [leased], &InFlight::default(), &limits()).is_empty());
    let mut busy = InFlight::default();
    busy.add(7, 1, 2);
    assert!(plan(&servers, [chunk(7, 2, &copies)], &busy, &limits()).is_empty());
}

#[test]
fn rebalance_moves_from_fullest_to_emptiest_only_when_healthy() {
    let mut servers = vec![server(1), server(2), server(3)];
    servers[0].used = 60 * GIB;
    servers[0].avail = 40 * GIB;
    let copies = [copy(1, 1), copy(2, 1)];
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(replications(&actions), vec![(7, 1, 3)]);
    let sick = [copy(2, 1)];
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies), chunk(8, 2, &sick)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(replications(&actions), vec![(8, 2, 3)]);
    // A chunk that wants more copies than there are servers does not stop it.
    let everywhere = [copy(1, 1), copy(2, 1), copy(3, 1)];
    let actions = plan(
        &servers,
        [chunk(7, 2, &copies), chunk(8, 4, &everywhere)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(replications(&actions), vec![(7, 1, 3)]);
    // The move's second half: the extra copy goes from the fullest server.
    let moved = [copy(1, 1), copy(2, 1), copy(3, 1)];
    let actions = plan(
        &servers,
        [chunk(7, 2, &moved)],
        &InFlight::default(),
        &limits(),
    );
    assert_eq!(deletions(&actions), vec![(7, 1, Why::Extra)]);
    servers[0].used = 15 * GIB;
    assert!(plan(
        &servers,
        [chunk(7, 2, &copies)],
        &InFlight::default(),
        &limits()
    )
    .is_empty());
}

#[test]
fn rebalance_moves_at_most_half_the_gap() {
    const CHUNK: u64 = elkfs_proto::limits::CHUNK_SIZE;
    let disk = |id: u64, chunks: u64| ServerView {
        total: GIB,
        used: chunks * CHUNK,
        avail: GIB - chunks * CHUNK,
        chunks,
        ..server(id)
    };
    let limits = Limits {
        rebalance_threshold_pct: 1,
        ..limits()
    };
    let held: Vec<[Copy; 1]> = (0..5).map(|_| [copy(1, 1)]).collect();
    let chunks = || held.iter().enumerate().map(|(i, c)| chunk(i as u64, 1, c));
    // 5 against 3 chunks: one move evens it out; a second would make it 3 against 5.
    let actions = plan(
        &[disk(1, 5), disk(2, 3)],
        chunks(),
        &InFlight::default(),
        &limits,
    );
    assert_eq!(replications(&actions).len(), 1);
    // 1 against 0: any move only swaps the imbalance.
    let actions = plan(
        &[disk(1, 1), disk(2, 0)],
        chunks(),
        &InFlight::default(),
        &limits,
    );
    assert!(replications(&actions).is_empty());
}

#[test]
fn health_counts_goal_by_valid_copies() {
    let servers = vec![server(1), server(2), away(3, true)];
    let a = [copy(1, 1), copy(2, 1)];
    let b = [copy(1, 1), copy(3, 1)];
    let mut c = vec![copy(1, 1)];
    c[0].damaged = true;
    let h = health(
        &servers,
        [
            chunk(1, 2, &a),
            chunk(2, 2, &b),
            chunk(3, 1, &c),
            chunk(4, 1, &a),
        ],
    );
    assert_eq!(
        h.cells,
        BTreeMap::from([((2, 2), 1), ((2, 1), 1), ((1, 0), 1), ((1, 2), 1)])
    );
    assert_eq!(
        (h.missing, h.endangered, h.under_goal, h.over_goal),
        (1, 1, 2, 1)
    );
    assert_eq!(h.damaged_copies, 1);
}

/// A random cluster: servers (connected, counting while away) and chunks with goal and
/// copies (server, version 0 = stale, damaged).
#[derive(Debug, Clone)]
struct Sim {
    servers: Vec<ServerView>,
    chunks: Vec<(u32, bool, Vec<Copy>)>,
}

fn sim() -> impl Strategy<Value = Sim> {
    let servers = prop::collection::vec((any::<bool>(), any::<bool>(), 0u64..100), 1..7);
    servers.prop_flat_map(|servers| {
        let n = servers.len() as u64;
        let servers: Vec<ServerView> = (1..)
            .zip(servers)
            .map(|(id, (up, counts, used))| ServerView {
                connected: up || id == 1,
                counts_while_away: counts,
                used: used * GIB,
                ..server(id)
            })
            .collect();
        let copies = prop::collection::vec((1..=n, 0u32..2, any::<bool>()), 0..5);
        let chunk = (1u32..5, prop::bool::weighted(0.1), copies);
        prop::collection::vec(chunk, 0..12).prop_map(move |chunks| Sim {
            servers: servers.clone(),
            chunks: chunks
                .into_iter()
                .map(|(goal, leased, copies)| {
                    let mut out: Vec<Copy> = Vec::new();
                    for (s, v, damaged) in copies {
                        if !out.iter().any(|c| c.server == s) {
                            out.push(Copy {
                                server: s,
                                version: v,
                                damaged: damaged && v == 1,
                            });
                        }
                    }
                    (goal, leased, out)
                })
                .collect(),
        })
    })
}

fn valid(sim: &Sim, copies: &[Copy]) -> usize {
    copies
        .iter()
        .filter(|c| {
            c.version == 1
                && !c.damaged
                && sim.servers.iter().any(|s| s.id == c.server && s.connected)
        })
        .count()
}

proptest! {
    #[test]
    fn actions_are_safe_bounded_and_converge(mut sim in sim(), per_server in 1usize..3, total in 1usize..6) {
        let limits = Limits { per_server, total, rebalance_threshold_pct: 100, ..limits() };
        for _round in 0..40 {
            let views = sim.chunks.iter().enumerate().map(|(i, (goal, leased, copies))| ChunkView {
                id: i as u64, version: 1, goal: *goal, hold: *leased, copies,
            });
            let actions = plan(&sim.servers, views, &InFlight::default(), &limits);
            if actions.is_empty() {
                break;
            }
            let mut out: HashMap<u64, usize> = HashMap::new();
            let mut into: HashMap<u64, usize> = HashMap::new();
            let r = replications(&actions);
            prop_assert!(r.len() <= total);
            let before: Vec<usize> = sim.chunks.iter().map(|c| valid(&sim, &c.2)).collect();
            for (chunk, source, dest) in r {
                *out.entry(source).or_default() += 1;
                *into.entry(dest).or_default() += 1;
                let copies = &mut sim.chunks[chunk as usize].2;
                prop_assert!(!copies.iter().any(|c| c.server == dest), "two copies on one server");
                prop_assert!(copies.iter().any(|c| c.server == source && c.version == 1 && !c.damaged));
                copies.push(copy(dest, 1));
            }
            prop_assert!(out.values().chain(into.values()).all(|&n| n <= per_server));
            for (chunk, server, _) in deletions(&actions) {
                sim.chunks[chunk as usize].2.retain(|c| c.server != server);
            }
            for (i, c) in sim.chunks.iter().enumerate() {
                prop_assert!(before[i] == 0 || valid(&sim, &c.2) > 0, "last valid copy deleted");
                prop_assert!(!c.1 || before[i] == valid(&sim, &c.2), "leased chunk touched");
            }
        }
        // At rest: every chunk with a source is at goal or on every usable server, none is
        // over goal, and damaged or stale copies remain only where they are still needed.
        let views = sim.chunks.iter().enumerate().map(|(i, (goal, leased, copies))| ChunkView {
            id: i as u64, version: 1, goal: *goal, hold: *leased, copies,
        });
        prop_assert!(plan(&sim.servers, views, &InFlight::default(), &limits).is_empty());
        let up: Vec<u64> = sim.servers.iter().filter(|s| s.connected).map(|s| s.id).collect();
        for (goal, leased, copies) in &sim.chunks {
            let v = valid(&sim, copies);
            if *leased || v == 0 {
                continue;
            }
            prop_assert!(v <= *goal as usize);
            let counted = v + copies.iter().filter(|c| {
                c.version == 1 && !c.damaged && sim.servers.iter().any(|s| s.id == c.server && !s.connected && s.counts_while_away)
            }).count();
            prop_assert!(counted >= *goal as usize || up.iter().all(|s| copies.iter().any(|c| c.server == *s)));
            let on_up = |c: &&Copy| up.contains(&c.server);
            prop_assert!(!copies.iter().filter(on_up).any(|c| c.version != 1));
            prop_assert!(v < *goal as usize || !copies.iter().filter(on_up).any(|c| c.damaged));
        }
    }
}

proptest! {
    /// Rebalancing alone (everything at goal, every server connected): moves go from the
    /// fullest server to emptier ones, the extra copies are then removed, and it comes to
    /// rest with usage within the threshold or with nothing left to move.
    #[test]
    fn rebalancing_comes_to_rest(
        servers in 2u64..5,
        chunks in prop::collection::vec((1u32..3, 1u64..5), 10..60),
    ) {
        // Each copy uses 1% of a disk: the 10-point threshold is 10 copies, more than a
        // pass moves.
        let unit = GIB;
        let mut copies: Vec<(u32, Vec<Copy>)> = chunks
            .into_iter()
            .map(|(goal, second)| {
                let mut c = vec![copy(1, 1)];
                if goal == 2 {
                    c.push(copy(2 + second % (servers - 1), 1));
                }
                (goal, c)
            })
            .collect();
        let views = |copies: &[(u32, Vec<Copy>)]| -> Vec<ServerView> {
            (1..=servers)
                .map(|id| {
                    let n = copies.iter().filter(|(_, c)| c.iter().any(|c| c.server == id)).count() as u64;
                    ServerView { used: n * unit, avail: (100 - n) * unit, chunks: n, ..server(id) }
                })
                .collect()
        };
        let mut rested = false;
        for _round in 0..400 {
            let sv = views(&copies);
            let chunk_views = copies.iter().enumerate().map(|(i, (goal, c))| ChunkView {
                id: i as u64, version: 1, goal: *goal, hold: false, copies: c,
            });
            let actions = plan(&sv, chunk_views, &InFlight::default(), &limits());
            if actions.is_empty() {
                rested = true;
                break;
            }
            for (chunk, _, dest) in replications(&actions) {
                let c = &mut copies[chunk as usize].1;
                prop_assert!(!c.iter().any(|c| c.server == dest));
                c.push(copy(dest, 1));
            }
            for (chunk, server, why) in deletions(&actions) {
                prop_assert_eq!(why, Why::Extra);
                copies[chunk as usize].1.retain(|c| c.server != server);
            }
            for (goal, c) in &copies {
                prop_assert!(c.len() >= *goal as usize);
            }
        }
        prop_assert!(rested, "rebalancing did not come to rest");
        for (goal, c) in &copies {
            prop_assert_eq!(c.len(), *goal as usize);
        }
    }
}
