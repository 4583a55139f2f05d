//! The goal and visibility commands of the `elkfs` tool on a real cluster: `getgoal`,
//! `setgoal [-r]` (and that goals are in the changelog), `fileinfo`, `checkfile`, the new
//! `status` columns, and errors for paths the tool cannot serve. Whether copies are then
//! actually added or removed is the healing tests' business.

use elkfs_tests::fsutil::Rng;
use elkfs_tests::{bin, Cluster, Mount, Opts};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHUNK: u64 = 64 << 20;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn elkfs(args: &[&str]) -> Run {
    let out = Command::new(bin("elkfs"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running elkfs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `elkfs args... paths...`, which must succeed; returns its stdout.
fn elkfs_ok(args: &[&str], paths: &[&Path]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(paths.iter().map(|p| p.to_str().expect("utf-8 path")));
    let run = elkfs(&all);
    assert!(
        run.ok,
        "elkfs {all:?} failed:\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}

fn getgoal(path: &Path) -> u32 {
    let out = elkfs_ok(&["getgoal"], &[path]);
    let prefix = format!("{}: ", path.display());
    out.strip_prefix(&prefix)
        .and_then(|g| g.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("unexpected getgoal output {out:?}"))
}

fn write_file(path: &Path, len: usize) {
    let mut f = File::create(path).expect("create");
    f.write_all(&Rng::new("goal").bytes(len)).expect("write");
    f.sync_all().expect("fsync");
}

#[test]
fn goals_are_inherited_set_recursively_and_survive_a_master_crash() {
    let c = Cluster::start(Opts::default());
    let m = c.mount();
    let root = m.path();
    assert_eq!(getgoal(root), 2, "default goal of the root");

    let d = m.join("d");
    fs::create_dir_all(d.join("sub")).expect("mkdir");
    write_file(&d.join("a"), 1000);
    write_file(&d.join("sub/b"), 1000);
    write_file(&m.join("f"), 3000);
    assert_eq!(getgoal(&d.join("sub/b")), 2, "inherited from the root");

    // One file: one inode, its one chunk.
    let out = elkfs_ok(&["setgoal", "3"], &[&m.join("f")]);
    assert_eq!(
        out,
        format!(
            "{}: goal 3: 1 inodes changed, 0 unchanged, 1 chunks to re-replicate\n",
            m.join("f").display()
        )
    );
    // A directory without -r: only the directory, but new entries inherit from it.
    let out = elkfs_ok(&["setgoal", "1"], &[&d.join("sub")]);
    assert!(
        out.ends_with(": goal 1: 1 inodes changed, 0 unchanged, 0 chunks to re-replicate\n"),
        "{out}"
    );
    assert_eq!(getgoal(&d.join("sub/b")), 2, "not recursive");
    File::create(d.join("sub/c")).expect("create empty file");
    fs::create_dir(d.join("sub/e")).expect("mkdir");
    assert_eq!(getgoal(&d.join("sub/c")), 1, "a new file inherits");
    assert_eq!(getgoal(&d.join("sub/e")), 1, "a new directory inherits");
    write_file(&d.join("x"), 10);
    elkfs_ok(&["setgoal", "3"], &[&d.join("x")]);

    // d (2), a (2), sub (1), b (2), c (1), e (1) change; x already has 3. Chunks: a and b.
    let out = elkfs_ok(&["setgoal", "-r", "3"], &[&d]);
    assert_eq!(
        out,
        format!(
            "{}: goal 3: 6 inodes changed, 1 unchanged, 2 chunks to re-replicate\n",
            d.display()
        )
    );
    let again = elkfs_ok(&["setgoal", "-r", "3"], &[&d]);
    assert!(
        again.ends_with(": goal 3: 0 inodes changed, 7 unchanged, 0 chunks to re-replicate\n"),
        "{again}"
    );

    let paths: Vec<PathBuf> = [
        "d", "d/a", "d/sub", "d/sub/b", "d/sub/c", "d/sub/e", "d/x", "f",
    ]
    .iter()
    .map(|p| m.join(p))
    .collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let before = elkfs_ok(&["getgoal"], &refs);
    let want: String = paths
        .iter()
        .map(|p| format!("{}: 3\n", p.display()))
        .collect();
    assert_eq!(before, want);
    assert_eq!(getgoal(root), 2, "the root is outside the tree");

    // The goals are in the changelog: a master killed without a final image keeps them.
    c.kill_master();
    c.start_master();
    assert_eq!(elkfs_ok(&["getgoal"], &refs), want, "after a master crash");
    assert_eq!(getgoal(root), 2);
}

#[test]
fn fileinfo_and_checkfile_show_every_chunk_and_copy() {
    let c = Cluster::start(Opts::default());
    let m = c.mount();
    // Data in chunks 0, 2 and 3, a hole where chunk 1 would be.
    let f = m.join("big");
    {
        let file = File::create(&f).expect("create");
        let piece = Rng::new("fileinfo").bytes(1 << 20);
        for chunk in [0, 2, 3] {
            file.write_all_at(&piece, chunk * CHUNK).expect("write");
        }
        file.sync_all().expect("fsync");
    }
    let size = 3 * CHUNK + (1 << 20);

    let out = elkfs_ok(&["fileinfo"], &[&f]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(&*format!("{}:", f.display())));
    let ino = fs::metadata(&f).map(|md| std::os::unix::fs::MetadataExt::ino(&md));
    assert_eq!(
        lines.next(),
        Some(&*format!(
            "\tino {} size {size} goal 2 chunks 3",
            ino.expect("stat")
        )),
        "{out}"
    );
    let chunks = parse_chunks(lines, &out);
    let indexes: Vec<u64> = chunks.iter().map(|c| c.index).collect();
    assert_eq!(indexes, [0, 2, 3], "the hole is not listed\n{out}");
    let lengths: Vec<u64> = chunks.iter().map(|c| c.length).collect();
    assert_eq!(lengths, [CHUNK, CHUNK, 1 << 20], "{out}");
    let servers: Vec<String> = (0..3).map(|i| c.chunkserver_addr(i)).collect();
    for chunk in &chunks {
        assert_eq!(chunk.copies.len(), chunk.count, "{out}");
        assert_eq!(chunk.copies.len(), 2, "goal 2: two copies\n{out}");
        assert_ne!(
            chunk.copies[0].0, chunk.copies[1].0,
            "copies on distinct servers\n{out}"
        );
        for (addr, state) in &chunk.copies {
            assert_eq!(state, "valid", "{out}");
            // The copy is where fileinfo says: the chunk file named by id and version.
            let i = servers
                .iter()
                .position(|s| s == addr)
                .unwrap_or_else(|| panic!("{addr} is not a chunkserver of the cluster"));
            let name = format!("chunk_{}_{:08X}.elk", chunk.id, chunk.version);
            assert!(
                c.chunk_files(i)
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| n.to_str() == Some(&name))),
                "{name} not on chunkserver {i}"
            );
        }
    }

    let out = elkfs_ok(&["checkfile"], &[&f]);
    assert_eq!(
        out,
        format!("{}:\n\tchunks with 2 valid copies: 3\n", f.display())
    );
    let empty = m.join("empty");
    File::create(&empty).expect("create");
    assert_eq!(
        elkfs_ok(&["checkfile"], &[&empty]),
        format!("{}:\n\tno chunks\n", empty.display())
    );

    let status = elkfs_ok(&["status", "--master", &c.master_addr()], &[]);
    assert!(
        status.contains("MAINTENANCE  RESTING  REPL_IN  REPL_OUT"),
        "{status}"
    );
    assert!(
        status.contains("chunks by goal (rows) and valid copies (columns)"),
        "{status}"
    );

    errors_name_the_path_and_fail(&m);
}

/// A `chunk` line of `elkfs fileinfo` and its `copy` lines.
struct ChunkLine {
    index: u64,
    id: String,
    version: u32,
    length: u64,
    /// The `copies N` field; `copies` holds the copy lines.
    count: usize,
    copies: Vec<(String, String)>,
}

/// The chunk and copy lines of fileinfo output (`out`, for messages).
fn parse_chunks<'a>(lines: impl Iterator<Item = &'a str>, out: &str) -> Vec<ChunkLine> {
    let mut chunks: Vec<ChunkLine> = Vec::new();
    let number = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|_| panic!("{s:?} is not a number\n{out}"))
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix("\tchunk ") {
            let f: Vec<&str> = rest.split(' ').collect();
            match f[..] {
                [index, "id", id, "version", version, "length", length, "copies", copies] => chunks
                    .push(ChunkLine {
                        index: number(index.trim_end_matches(':')),
                        id: id.to_owned(),
                        version: number(version) as u32,
                        length: number(length),
                        count: number(copies) as usize,
                        copies: Vec::new(),
                    }),
                _ => panic!("bad chunk line {line:?}\n{out}"),
            }
        } else if let Some(rest) = line.strip_prefix("\t\tcopy ") {
            let (_, copy) = rest.split_once(": ").expect("copy line");
            let (addr, state) = copy.split_once(' ').expect("copy address and state");
            chunks
                .last_mut()
                .expect("copy after a chunk")
                .copies
                .push((addr.to_owned(), state.to_owned()));
        } else {
            panic!("unexpected fileinfo line {line:?}\n{out}");
        }
    }
    chunks
}

/// Paths the tool cannot serve: every one is reported, the others still answered, and the
/// exit status says something failed.
fn errors_name_the_path_and_fail(m: &Mount) {
    let outside = tempfile::tempdir().expect("tempdir");
    let outside = outside.path();
    let missing = m.join("no-such-file");
    let dir = m.join("dir");
    fs::create_dir(&dir).expect("mkdir");
    let good = m.join("empty");

    let run = elkfs(&[
        "getgoal",
        outside.to_str().expect("utf-8"),
        good.to_str().expect("utf-8"),
    ]);
    assert!(!run.ok, "a path outside elkfs fails");
    assert_eq!(
        run.stdout,
        format!("{}: 2\n", good.display()),
        "the good path is still answered"
    );
    assert!(
        run.stderr.contains(&format!(
            "elkfs: {}: not on an elkfs mount",
            outside.display()
        )),
        "{}",
        run.stderr
    );

    let run = elkfs(&["fileinfo", missing.to_str().expect("utf-8")]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );

    let run = elkfs(&["fileinfo", dir.to_str().expect("utf-8")]);
    assert!(!run.ok, "fileinfo of a directory");
    assert!(run.stderr.contains("is a directory"), "{}", run.stderr);

    for goal in ["0", "10"] {
        let run = elkfs(&["setgoal", goal, good.to_str().expect("utf-8")]);
        assert!(!run.ok, "goal {goal} is refused");
        assert!(
            run.stderr
                .contains(&format!("goal {goal} is not within 1..=9")),
            "{}",
            run.stderr
        );
    }
    assert_eq!(getgoal(&good), 2, "a refused goal changes nothing");

    let run = elkfs(&["status", "--master", "127.0.0.1:1"]);
    assert!(!run.ok, "status of an unreachable master");
    assert!(
        run.stderr.contains("master 127.0.0.1:1 is unreachable"),
        "{}",
        run.stderr
    );
}
