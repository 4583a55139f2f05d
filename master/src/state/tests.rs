use super::*;
use elkfs_proto::changelog::{
    record, Link, Mknod, Promote, Purge, Rename, ReserveChunkIds, SetAttr, SetGoal, Truncate,
    Unlink, WriteChunk, WriteEnd,
};
use proptest::prelude::*;
use std::collections::HashMap;

fn t(sec: i64) -> Option<Timespec> {
    Some(Timespec { sec, nsec: 7 })
}

/// A random operation in terms of small indexes, turned into a concrete record against
/// the current state (so most of them are valid, some deliberately are not).
#[derive(Clone, Debug)]
enum Gen {
    Mknod {
        dir: usize,
        name: u8,
        kind: u8,
    },
    Link {
        node: usize,
        dir: usize,
        name: u8,
    },
    Unlink {
        dir: usize,
        name: u8,
        sustain: bool,
    },
    Rename {
        dir: usize,
        name: u8,
        to: usize,
        new_name: u8,
        flags: u32,
    },
    SetAttr {
        node: usize,
        mode: u32,
    },
    Truncate {
        node: usize,
        size: u64,
        cut: bool,
    },
    WriteChunk {
        node: usize,
        index: u64,
        create: bool,
    },
    WriteEnd {
        node: usize,
        size: u64,
        explicit_times: bool,
    },
    Purge {
        node: usize,
    },
    Reserve {
        ahead: u64,
    },
    SetGoal {
        node: usize,
        dir: bool,
        goal: u32,
        recursive: bool,
    },
    Promote {
        ahead: u64,
    },
}

fn gen() -> impl Strategy<Value = Gen> {
    let name = 0u8..6;
    prop_oneof![
        4 => (0usize..50, name.clone(), 0u8..4).prop_map(|(dir, name, kind)| Gen::Mknod { dir, name, kind }),
        1 => (0usize..50, 0usize..50, name.clone()).prop_map(|(node, dir, name)| Gen::Link { node, dir, name }),
        2 => (0usize..50, name.clone(), any::<bool>()).prop_map(|(dir, name, sustain)| Gen::Unlink { dir, name, sustain }),
        2 => (0usize..50, name.clone(), 0usize..50, name, prop_oneof![Just(0u32), Just(1), Just(2)])
            .prop_map(|(dir, name, to, new_name, flags)| Gen::Rename { dir, name, to, new_name, flags }),
        1 => (0usize..50, 0u32..0o7777).prop_map(|(node, mode)| Gen::SetAttr { node, mode }),
        1 => (0usize..50, 0u64..(3 * CHUNK_SIZE), any::<bool>()).prop_map(|(node, size, cut)| Gen::Truncate { node, size, cut }),
        2 => (0usize..50, 0u64..4, any::<bool>()).prop_map(|(node, index, create)| Gen::WriteChunk { node, index, create }),
        1 => (0usize..50, 0u64..(4 * CHUNK_SIZE), any::<bool>()).prop_map(|(node, size, explicit_times)| Gen::WriteEnd { node, size, explicit_times }),
        1 => (0usize..50).prop_map(|node| Gen::Purge { node }),
        1 => (0u64..3000).prop_map(|ahead| Gen::Reserve { ahead }),
        // Goals up to MAX_GOAL + 1 so some records are invalid.
        2 => (0usize..50, any::<bool>(), 0u32..=MAX_GOAL + 1, any::<bool>())
            .prop_map(|(node, dir, goal, recursive)| Gen::SetGoal { node, dir, goal, recursive }),
        // 0 ahead: a promotion to the current epoch, which must be refused.
        1 => (0u64..3).prop_map(|ahead| Gen::Promote { ahead }),
    ]
}

fn pick(s: &State, i: usize, want_dir: bool) -> u64 {
    let mut inos: Vec<u64> = s
        .inodes
        .values()
        .filter(|n| n.is_dir() == want_dir)
        .map(|n| n.ino)
        .collect();
    inos.sort_unstable();
    if inos.is_empty() {
        return 999_999;
    }
    inos[i % inos.len()]
}

fn name(n: u8) -> Vec<u8> {
    format!("n{n}").into_bytes()
}

fn record(s: &State, g: &Gen, clock: i64) -> Record {
    let op = match g.clone() {
        Gen::Mknod { dir, name: n, kind } => {
            let kind = [
                NodeKind::File,
                NodeKind::Dir,
                NodeKind::Symlink,
                NodeKind::Fifo,
            ][kind as usize];
            record::Op::Mknod(Mknod {
                parent: pick(s, dir, true),
                name: name(n),
                ino: s.next_ino,
                kind: kind as i32,
                mode: 0o644,
                uid: 1,
                gid: 2,
                rdev: 0,
                time: t(clock),
                goal: 2,
                symlink_target: if kind == NodeKind::Symlink {
                    b"target".to_vec()
                } else {
                    vec![]
                },
            })
        }
        Gen::Link { node, dir, name: n } => record::Op::Link(Link {
            ino: pick(s, node, false),
            parent: pick(s, dir, true),
            name: name(n),
            time: t(clock),
        }),
        Gen::Unlink {
            dir,
            name: n,
            sustain,
        } => record::Op::Unlink(Unlink {
            parent: pick(s, dir, true),
            name: name(n),
            time: t(clock),
            sustain,
        }),
        Gen::Rename {
            dir,
            name: n,
            to,
            new_name,
            flags,
        } => record::Op::Rename(Rename {
            parent: pick(s, dir, true),
            name: name(n),
            new_parent: pick(s, to, true),
            new_name: name(new_name),
            flags,
            time: t(clock),
            sustain: false,
        }),
        Gen::SetAttr { node, mode } => record::Op::SetAttr(SetAttr {
            ino: pick(s, node, false),
            mode: Some(mode),
            uid: None,
            gid: Some(5),
            atime: t(-clock),
            mtime: None,
            ctime: t(clock),
        }),
        Gen::Truncate { node, size, cut } => {
            let ino = pick(s, node, false);
            let cut_id = if cut {
                s.chunk_at(ino, size / CHUNK_SIZE).unwrap_or(0)
            } else {
                0
            };
            record::Op::Truncate(Truncate {
                ino,
                size,
                time: t(clock),
                cut_chunk_id: cut_id,
                cut_version: 9,
            })
        }
        Gen::WriteChunk {
            node,
            index,
            create,
        } => {
            let ino = pick(s, node, false);
            let existing = s.chunk_at(ino, index).unwrap_or(0);
            let (chunk_id, created) = if create || existing == 0 {
                (s.next_chunk_id, true)
            } else {
                (existing, false)
            };
            record::Op::WriteChunk(WriteChunk {
                ino,
                index,
                chunk_id,
                version: clock as u32,
                created,
            })
        }
        Gen::WriteEnd {
            node,
            size,
            explicit_times,
        } => record::Op::WriteEnd(WriteEnd {
            ino: pick(s, node, false),
            size,
            time: t(clock),
            atime: explicit_times.then(|| t(clock / 2)).flatten(),
            mtime: explicit_times.then(|| t(clock / 3)).flatten(),
        }),
        Gen::Purge { node } => record::Op::Purge(Purge {
            ino: pick(s, node, false),
        }),
        Gen::Reserve { ahead } => record::Op::ReserveChunkIds(ReserveChunkIds {
            next_chunk_id: s.next_chunk_id + ahead,
        }),
        Gen::SetGoal {
            node,
            dir,
            goal,
            recursive,
        } => record::Op::SetGoal(SetGoal {
            ino: pick(s, node, dir),
            goal,
            recursive,
        }),
        Gen::Promote { ahead } => record::Op::Promote(Promote {
            epoch: s.epoch + ahead,
        }),
    };
    Record { op: Some(op) }
}

/// Structural invariants that every reachable state must satisfy.
fn check_invariants(s: &State) {
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut chunk_refs: HashMap<u64, u32> = HashMap::new();
    for n in s.inodes.values() {
        assert!((1..=MAX_GOAL).contains(&n.goal), "goal of {}", n.ino);
        match &n.body {
            Body::Dir(d) => {
                let subdirs = d
                    .entries
                    .values()
                    .filter(|e| s.inodes.get(&e.ino).is_some_and(Inode::is_dir))
                    .count() as u32;
                assert_eq!(d.subdirs, subdirs, "subdir count of {}", n.ino);
                assert_eq!(n.nlink, 2 + subdirs, "nlink of dir {}", n.ino);
                assert_eq!(d.entries.len(), d.by_cookie.len());
                for (name, e) in d.entries.iter() {
                    assert_eq!(d.by_cookie.get(&e.cookie), Some(name));
                    let child = s.inodes.get(&e.ino).expect("entry points at a live inode");
                    if let Some(cd) = child.dir() {
                        assert_eq!(cd.parent, n.ino, "parent pointer of {}", e.ino);
                    }
                    *names.entry(e.ino).or_default() += 1;
                }
            }
            Body::File { chunks, .. } => {
                for &c in chunks.iter().filter(|&&c| c != 0) {
                    *chunk_refs.entry(c).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    for n in s.inodes.values() {
        if n.ino == ROOT_INO || n.is_dir() {
            continue;
        }
        assert_eq!(
            n.nlink,
            names.get(&n.ino).copied().unwrap_or(0),
            "nlink of {}",
            n.ino
        );
    }
    for (id, c) in s.chunks.iter() {
        assert_eq!(Some(&c.refs), chunk_refs.get(id), "refs of chunk {id}");
    }
    assert_eq!(
        chunk_refs.len(),
        s.chunks.len(),
        "chunk referenced but unknown"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn replay_and_snapshot_give_the_live_state(ops in prop::collection::vec(gen(), 1..150), cut in 0usize..150) {
        let start = State::new(2, Ts { sec: 1, nsec: 0 });
        let mut live = start.clone();
        let mut log = Vec::new();
        let mut image_at = None;
        for (i, g) in ops.iter().enumerate() {
            let rec = record(&live, g, i as i64 + 10);
            let before = live.clone();
            let v = live.version + 1;
            match live.apply(v, &rec) {
                Ok(_) => log.push((v, rec)),
                Err(_) => prop_assert_eq!(&live, &before, "a failed apply changed the state"),
            }
            check_invariants(&live);
            if i == cut {
                image_at = Some(to_image(&live).collect::<Vec<_>>());
            }
        }
        let mut replayed = start;
        for (v, rec) in &log {
            replayed.apply(*v, rec).expect("replaying a logged record succeeds");
        }
        prop_assert_eq!(&replayed, &live);

        if let Some(image) = image_at {
            let mut restored = from_image(image).expect("image loads");
            let from = restored.version;
            for (v, rec) in log.iter().filter(|(v, _)| *v > from) {
                restored.apply(*v, rec).expect("replay after image");
            }
            prop_assert_eq!(&restored, &live);
        }
    }
}

fn mk(s: &mut State, parent: u64, n: &str, kind: NodeKind) -> Result<u64, FsError> {
    let ino = s.next_ino;
    let v = s.version + 1;
    s.apply(
        v,
        &Record {
            op: Some(record::Op::Mknod(Mknod {
                parent,
                name: n.as_bytes().to_vec(),
                ino,
                kind: kind as i32,
                mode: 0o755,
                time: t(5),
                goal: 1,
                ..Default::default()
            })),
        },
    )?;
    Ok(ino)
}

fn rename(
    s: &mut State,
    p: u64,
    n: &str,
    np: u64,
    nn: &str,
    flags: u32,
) -> Result<Effects, FsError> {
    let v = s.version + 1;
    s.apply(
        v,
        &Record {
            op: Some(record::Op::Rename(Rename {
                parent: p,
                name: n.as_bytes().to_vec(),
                new_parent: np,
                new_name: nn.as_bytes().to_vec(),
                flags,
                time: t(6),
                sustain: false,
            })),
        },
    )
}

#[test]
fn rename_errors_follow_posix() {
    let mut s = State::new(2, Ts::default());
    let a = mk(&mut s, ROOT_INO, "a", NodeKind::Dir).unwrap();
    let b = mk(&mut s, a, "b", NodeKind::Dir).unwrap();
    mk(&mut s, b, "f", NodeKind::File).unwrap();
    mk(&mut s, ROOT_INO, "g", NodeKind::File).unwrap();
    assert!(matches!(
        rename(&mut s, ROOT_INO, "a", b, "x", 0),
        Err(FsError::Invalid(_))
    ));
    assert_eq!(
        rename(&mut s, ROOT_INO, "g", a, "b", 0),
        Err(FsError::IsDir)
    );
    assert_eq!(
        rename(&mut s, a, "b", ROOT_INO, "g", 0),
        Err(FsError::NotDir)
    );
    assert_eq!(
        rename(&mut s, ROOT_INO, "g", a, "b", RENAME_NOREPLACE),
        Err(FsError::Exists)
    );
    assert_eq!(
        rename(&mut s, ROOT_INO, "nope", a, "z", 0),
        Err(FsError::NotFound)
    );
    let e = mk(&mut s, ROOT_INO, "e", NodeKind::Dir).unwrap();
    assert_eq!(
        rename(&mut s, ROOT_INO, "e", ROOT_INO, "a", 0),
        Err(FsError::NotEmpty)
    );
    // Exchange a file and a directory across parents.
    rename(&mut s, ROOT_INO, "g", a, "b", RENAME_EXCHANGE).unwrap();
    assert!(s.lookup(a, b"b").unwrap().kind == NodeKind::File);
    assert_eq!(s.lookup(ROOT_INO, b"g").unwrap().ino, b);
    assert_eq!(s.dir(b).unwrap().parent, ROOT_INO);
    rename(&mut s, ROOT_INO, "e", a, "e2", 0).unwrap();
    assert_eq!(s.dir(e).unwrap().parent, a);
    check_invariants(&s);
}

#[test]
fn names_are_checked() {
    let mut s = State::new(2, Ts::default());
    let long = "x".repeat(256);
    assert_eq!(
        mk(&mut s, ROOT_INO, &long, NodeKind::File),
        Err(FsError::NameTooLong)
    );
    assert!(mk(&mut s, ROOT_INO, "a/b", NodeKind::File).is_err());
    assert!(mk(&mut s, ROOT_INO, "", NodeKind::File).is_err());
    assert!(mk(&mut s, ROOT_INO, "..", NodeKind::File).is_err());
    assert!(mk(&mut s, ROOT_INO, &"y".repeat(255), NodeKind::File).is_ok());
    assert_eq!(
        mk(&mut s, 12345, "a", NodeKind::File),
        Err(FsError::NotFound)
    );
    assert_eq!(s.version, 1, "only the valid mknod advanced the version");
}

fn set_goal(s: &mut State, ino: u64, goal: u32, recursive: bool) -> Result<GoalSummary, FsError> {
    let v = s.version + 1;
    let effects = s.apply(
        v,
        &Record {
            op: Some(record::Op::SetGoal(SetGoal {
                ino,
                goal,
                recursive,
            })),
        },
    )?;
    Ok(effects.goal)
}

fn add_chunk(s: &mut State, ino: u64, index: u64) {
    let v = s.version + 1;
    let chunk_id = s.next_chunk_id;
    s.apply(
        v,
        &Record {
            op: Some(record::Op::WriteChunk(WriteChunk {
                ino,
                index,
                chunk_id,
                version: 1,
                created: true,
            })),
        },
    )
    .unwrap();
}

#[test]
fn set_goal_counts_a_tree_once_per_inode() {
    let mut s = State::new(2, Ts::default());
    // mk() creates everything with goal 1.
    let a = mk(&mut s, ROOT_INO, "a", NodeKind::Dir).unwrap();
    let b = mk(&mut s, a, "b", NodeKind::Dir).unwrap();
    let f = mk(&mut s, b, "f", NodeKind::File).unwrap();
    let g = mk(&mut s, a, "g", NodeKind::File).unwrap();
    add_chunk(&mut s, f, 0);
    add_chunk(&mut s, f, 2);
    add_chunk(&mut s, g, 0);
    // A second name for f inside the same tree must not count it twice.
    let v = s.version + 1;
    s.apply(
        v,
        &Record {
            op: Some(record::Op::Link(Link {
                ino: f,
                parent: a,
                name: b"f2".to_vec(),
                time: t(7),
            })),
        },
    )
    .unwrap();
    set_goal(&mut s, g, 3, false).unwrap();

    let summary = set_goal(&mut s, a, 3, true).unwrap();
    assert_eq!(
        summary,
        GoalSummary {
            changed: 3,   // a, b, f
            unchanged: 1, // g
            chunks: 2,    // f's two chunks
        }
    );
    for ino in [a, b, f, g] {
        assert_eq!(s.inode(ino).unwrap().goal, 3);
    }
    assert_eq!(s.inode(ROOT_INO).unwrap().goal, 2, "outside the tree");

    let only_dir = set_goal(&mut s, a, 1, false).unwrap();
    assert_eq!(only_dir.changed, 1);
    assert_eq!(s.inode(b).unwrap().goal, 3, "not recursive");
    assert_eq!(
        s.plan_goal(&SetGoal {
            ino: a,
            goal: 1,
            recursive: true
        }),
        Ok(GoalSummary {
            changed: 3,
            unchanged: 1,
            chunks: 3
        })
    );
}

#[test]
fn set_goal_rejects_bad_goals_and_unknown_inodes() {
    let mut s = State::new(2, Ts::default());
    assert!(matches!(
        set_goal(&mut s, ROOT_INO, 0, false),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        set_goal(&mut s, ROOT_INO, MAX_GOAL + 1, true),
        Err(FsError::Invalid(_))
    ));
    assert_eq!(set_goal(&mut s, 4242, 3, false), Err(FsError::NotFound));
    assert_eq!(s.version, 0, "failed records change nothing");
    assert_eq!(
        set_goal(&mut s, ROOT_INO, MAX_GOAL, false).map(|g| g.changed),
        Ok(1)
    );
    let configured_too_high = State::new(MAX_GOAL + 3, Ts::default());
    assert_eq!(configured_too_high.inode(ROOT_INO).unwrap().goal, MAX_GOAL);
}
