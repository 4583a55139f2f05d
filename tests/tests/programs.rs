//! Real programs on a mount: git and cargo exercise rename, link, fsync, mmap and many
//! small files the way users do.

use elkfs_tests::fsutil::Rng;
use elkfs_tests::{Cluster, Opts};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Longer than any of these commands takes on a slow machine; a command past it is stuck
/// on the mount (a hung FUSE request), and the test must fail rather than hang CI.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn run(dir: &Path, prog: &str, args: &[&str]) -> Output {
    // Output goes to files, not pipes: a full pipe would stall the polled child.
    let (out_file, err_file) = (
        tempfile::tempfile().expect("tempfile"),
        tempfile::tempfile().expect("tempfile"),
    );
    let mut child = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdout(out_file.try_clone().expect("dup"))
        .stderr(err_file.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let stack =
                fs::read_to_string(format!("/proc/{}/stack", child.id())).unwrap_or_default();
            let _ = child.kill();
            panic!(
                "{prog} {args:?} still running after {}s; kernel stack:\n{stack}",
                COMMAND_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let read_back = |mut f: fs::File| {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut buf))
            .expect("reading output");
        buf
    };
    let out = Output {
        status: child.wait().expect("wait"),
        stdout: read_back(out_file),
        stderr: read_back(err_file),
    };
    assert!(
        out.status.success(),
        "{prog} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn git_commit_and_fsck() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIPPED git_commit_and_fsck: git is not installed");
        return;
    }
    let c = Cluster::start(Opts::default());
    let m = c.mount();
    let repo = m.join("repo");
    fs::create_dir(&repo).expect("mkdir repo");
    let mut rng = Rng::new("git tree");
    for d in 0..50 {
        let dir = repo.join(format!("dir{d:02}"));
        fs::create_dir(&dir).expect("mkdir");
        for f in 0..50 {
            let len = rng.below(4000) as usize;
            let text: String = (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            fs::write(dir.join(format!("file{f:02}.txt")), text).expect("write");
        }
    }
    run(&repo, "git", &["init", "-q"]);
    run(&repo, "git", &["add", "-A"]);
    run(
        &repo,
        "git",
        &[
            "-c",
            "user.name=elkfs",
            "-c",
            "user.email=elkfs@test",
            "commit",
            "-q",
            "-m",
            "tree",
        ],
    );
    run(&repo, "git", &["fsck", "--full", "--strict"]);
    let status = run(&repo, "git", &["status", "--porcelain"]);
    assert!(
        status.stdout.is_empty(),
        "work tree differs from the commit"
    );
    let count = run(&repo, "git", &["ls-files"]);
    assert_eq!(count.stdout.iter().filter(|&&b| b == b'\n').count(), 2500);
    // A fresh clone on the same mount checks out identical content.
    run(&m.join("."), "git", &["clone", "-q", "repo", "clone"]);
    run(&m.join("clone"), "git", &["fsck", "--full"]);
    assert_eq!(
        fs::read(repo.join("dir07/file07.txt")).expect("read"),
        fs::read(m.join("clone/dir07/file07.txt")).expect("read clone")
    );
}

#[test]
fn cargo_builds_on_the_mount() {
    let c = Cluster::start(Opts::default());
    let m = c.mount();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    run(
        m.path(),
        &cargo,
        &["new", "--vcs", "none", "--quiet", "hello"],
    );
    let project = m.join("hello");
    run(&project, &cargo, &["build", "--offline", "--quiet"]);
    let out = run(
        &project,
        project
            .join("target/debug/hello")
            .to_str()
            .expect("utf-8 path"),
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Hello, world!");
}
