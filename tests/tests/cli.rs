//! The `elkfs` tool: `up` starts a working cluster, `up` again is a no-op or restarts a
//! master killed under a live mount, `down` stops everything, and a second `up` brings back
//! the same filesystem.

use elkfs_tests::copies::elkfs;
use elkfs_tests::next_loopback_ip;
use std::fs;
use std::path::Path;

fn pids(run_dir: &Path) -> Vec<i32> {
    fs::read_dir(run_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .filter_map(|e| fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills whatever `up` left running if the test fails half-way.
struct Cleanup<'a>(&'a Path, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let mnt = std::ffi::CString::new(self.1.to_str().unwrap_or_default()).unwrap_or_default();
        // SAFETY: valid C string; plain syscalls on pids this test started.
        unsafe {
            libc::umount2(mnt.as_ptr(), libc::MNT_DETACH);
            for pid in pids(&self.0.join("run")) {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn up_down_up_keeps_the_filesystem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, mnt) = (tmp.path().join("data"), tmp.path().join("mnt"));
    fs::create_dir(&mnt).expect("mkdir mnt");
    let _cleanup = Cleanup(&data, &mnt);
    let host = next_loopback_ip().to_string();
    let (data_s, mnt_s) = (data.to_str().expect("utf-8"), mnt.to_str().expect("utf-8"));
    let up = ["up", data_s, mnt_s, "--chunkservers", "2", "--host", &host];

    let text = elkfs(&up);
    for name in ["master", "metalogger", "cs1", "cs2", "mount"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "no line for {name}:\n{text}"
        );
    }
    for file in [
        "etc/master.toml",
        "etc/cs1.toml",
        "etc/cs2.toml",
        "run/master.pid",
        "log/master.log",
    ] {
        assert!(data.join(file).exists(), "{file} missing");
    }
    fs::write(mnt.join("kept"), b"across restarts").expect("write through the mount");

    let again = elkfs(&up);
    assert_eq!(
        again.matches("already running").count(),
        5,
        "second up starts nothing new"
    );
    // A master killed -9 under a live mount: `up` brings it back without touching the
    // mount point, where the mount waits for the master.
    let master_pid: i32 = fs::read_to_string(data.join("run/master.pid"))
        .expect("master pid file")
        .trim()
        .parse()
        .expect("master pid");
    // SAFETY: a plain kill of the master this test started.
    unsafe { libc::kill(master_pid, libc::SIGKILL) };
    // Past the kernel's attribute cache (1 s): a stat of the mount point now waits for the
    // master.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let restarted = elkfs(&up);
    assert_eq!(
        restarted.matches("already running").count(),
        4,
        "only the master started again:\n{restarted}"
    );
    assert_eq!(
        fs::read(mnt.join("kept")).expect("read after the master came back"),
        b"across restarts"
    );
    let status = elkfs(&["status", "--master", &format!("{host}:9520")]);
    assert_eq!(
        status.matches(" yes ").count(),
        2,
        "two connected chunkservers:\n{status}"
    );

    let running = pids(&data.join("run"));
    elkfs(&["down", data_s]);
    assert!(pids(&data.join("run")).is_empty(), "pid files removed");
    for pid in running {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || is_zombie(pid),
            "pid {pid} still running"
        );
    }
    assert!(
        fs::read_dir(&mnt).expect("readdir").next().is_none(),
        "mountpoint empty after down"
    );
    let mount_log = fs::read_to_string(data.join("log/mount.log")).expect("mount log");
    assert!(
        mount_log.contains("signal received, unmounting")
            && !mount_log.contains("Failed to umount"),
        "the mount unmounted itself, with no failed second unmount:\n{mount_log}"
    );
    assert!(
        fs::read_dir(data.join("metalogger"))
            .expect("metalogger directory")
            .next()
            .is_some(),
        "the metalogger kept copies of the metadata"
    );

    elkfs(&up);
    assert_eq!(
        fs::read(mnt.join("kept")).expect("read after up again"),
        b"across restarts"
    );
    elkfs(&["down", data_s]);
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn up_refuses_an_address_in_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, mnt) = (tmp.path().join("data"), tmp.path().join("mnt"));
    let _cleanup = Cleanup(&data, &mnt);
    let host = next_loopback_ip();
    // Something else (another cluster's master, say) listens where this master would.
    let _taken = std::net::TcpListener::bind((host, 9520)).expect("bind the master port");
    let out = std::process::Command::new(elkfs_tests::bin("elkfs"))
        .arg("up")
        .args([&data, &mnt])
        .args(["--chunkservers", "1", "--host", &host.to_string()])
        .output()
        .expect("run elkfs up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up succeeded on a taken address");
    assert!(
        err.contains(&format!("master: {host}:9520 is already in use")),
        "unclear error: {err}"
    );
    assert!(pids(&data.join("run")).is_empty(), "a daemon was started");
}
