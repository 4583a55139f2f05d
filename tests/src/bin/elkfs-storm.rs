//! One storm worker for the crash tests, in a process of its own: create+write+fsync,
//! rename, unlink, repeated in one directory until a stop file appears; then writes what
//! each name must be after a crash, from acknowledged operations only.
//!
//! It runs outside the test process because that process restarts the master with
//! fork+exec: files the storm holds open on the mount would be closed by exec in the child,
//! and each close (a FUSE FLUSH) waits for the master that the child is about to become.
//!
//! Usage: `elkfs-storm DIR SEED STOP_FILE MODEL_FILE`. The model file holds one line per
//! name (names never contain whitespace):
//!
//! * `file NAME LEN CRC32` — acked: the name holds LEN bytes with that CRC-32 (hex);
//! * `absent NAME` — acked: the name is gone;
//! * `unknown NAME` — the last operation on it failed: it may or may not have happened.

use elkfs_tests::fsutil::Rng;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone)]
enum Expect {
    File { len: usize, crc: u32 },
    Absent,
    Unknown,
}

fn storm(dir: &Path, seed: u64, stop: &Path) -> BTreeMap<String, Expect> {
    let mut rng = Rng::with_seed(seed);
    let mut model: BTreeMap<String, Expect> = BTreeMap::new();
    let mut next = 0u32;
    while !stop.exists() {
        let live: Vec<String> = model
            .iter()
            .filter(|(_, e)| matches!(e, Expect::File { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let op = if live.is_empty() { 0 } else { rng.below(4) };
        match op {
            0 | 1 => {
                let name = format!("f{next}");
                next += 1;
                let len = 1 + rng.below(20_000) as usize;
                let data = rng.bytes(len);
                let res = File::create(dir.join(&name)).and_then(|mut f| {
                    f.write_all(&data)?;
                    f.sync_all()
                });
                model.insert(
                    name,
                    if res.is_ok() {
                        Expect::File {
                            len,
                            crc: crc32fast::hash(&data),
                        }
                    } else {
                        Expect::Unknown
                    },
                );
            }
            2 => {
                let from = &live[rng.below(live.len() as u64) as usize];
                let to = format!("r{next}");
                next += 1;
                let content = model[from].clone();
                if fs::rename(dir.join(from), dir.join(&to)).is_ok() {
                    model.insert(from.clone(), Expect::Absent);
                    model.insert(to, content);
                } else {
                    model.insert(from.clone(), Expect::Unknown);
                    model.insert(to, Expect::Unknown);
                }
            }
            _ => {
                let victim = &live[rng.below(live.len() as u64) as usize];
                let outcome = match fs::remove_file(dir.join(victim)) {
                    Ok(()) => Expect::Absent,
                    Err(_) => Expect::Unknown,
                };
                model.insert(victim.clone(), outcome);
            }
        }
    }
    model
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, seed, stop, out] = &args[..] else {
        eprintln!("usage: elkfs-storm DIR SEED STOP_FILE MODEL_FILE");
        return ExitCode::from(2);
    };
    let Ok(seed) = seed.parse::<u64>() else {
        eprintln!("elkfs-storm: bad seed {seed:?}");
        return ExitCode::from(2);
    };
    let model = storm(Path::new(dir), seed, Path::new(stop));
    let mut text = String::new();
    for (name, expect) in &model {
        match expect {
            Expect::File { len, crc } => writeln!(text, "file {name} {len} {crc:08x}"),
            Expect::Absent => writeln!(text, "absent {name}"),
            Expect::Unknown => writeln!(text, "unknown {name}"),
        }
        .expect("formatting into a String");
    }
    // Written whole, then renamed: the test never reads a partial model.
    let tmp = PathBuf::from(format!("{out}.tmp"));
    if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, out)) {
        eprintln!("elkfs-storm: writing {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
