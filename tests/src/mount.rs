//! A FUSE mount of a test cluster.

use crate::cluster::{Cluster, START_TIMEOUT};
use crate::process::{log_tail, Daemon};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running `elkfs-mount`. Borrowing the cluster makes every mount go before its cluster.
/// Dropping it unmounts (lazily if busy) and stops the daemon.
pub struct Mount<'c> {
    cluster: &'c Cluster,
    path: PathBuf,
    daemon: Option<Daemon>,
}

impl<'c> Mount<'c> {
    pub(crate) fn wait_ready(cluster: &'c Cluster, path: PathBuf, daemon: Daemon) -> Mount<'c> {
        let mut mount = Mount {
            cluster,
            path,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if is_fuse_mounted(&mount.path) && std::fs::metadata(&mount.path).is_ok() {
                return mount;
            }
            if let Some(d) = mount.daemon.as_mut() {
                d.assert_alive("mounting");
            }
            assert!(
                Instant::now() < deadline,
                "{} never became a FUSE mount\n{}",
                mount.path.display(),
                cluster.log_tails()
            );
            sleep(Duration::from_millis(50));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()` joined with `rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    pub fn cluster(&self) -> &'c Cluster {
        self.cluster
    }

    /// The mount daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.cluster
            .log_path(&format!("mount{}", mount_number(&self.path)))
    }

    pub fn pid(&self) -> i32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }

    /// Unmounts and checks the daemon exits by itself afterwards.
    pub fn unmount(mut self) {
        self.teardown(true);
    }

    fn teardown(&mut self, strict: bool) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let c_path = CString::new(self.path.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: c_path is a valid C string for the duration of the calls.
        let clean = unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0;
        if !clean {
            let err = std::io::Error::last_os_error();
            // SAFETY: as above. Lazy: a busy or dead mount must not leak past the test.
            unsafe {
                libc::umount2(c_path.as_ptr(), libc::MNT_DETACH);
            }
            if strict {
                panic!("unmounting {}: {err}", self.path.display());
            }
        }
        // After the unmount the FUSE session ends and the daemon should exit by itself.
        let by_itself = if clean && strict {
            daemon.wait_exit(Duration::from_secs(10))
        } else {
            None
        };
        if strict && by_itself.is_none() {
            panic!(
                "elkfs-mount still ran 10 s after its unmount\n{}",
                log_tail(&self.log_path(), 40)
            );
        }
        let status = by_itself.unwrap_or_else(|| daemon.terminate(Duration::from_secs(10)));
        if strict && !status.success() {
            panic!(
                "elkfs-mount exited with {status} after unmount\n{}",
                log_tail(&self.log_path(), 40)
            );
        }
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        self.teardown(false);
    }
}

/// The N of a `mntN` mountpoint, which names its log `mountN.log`.
fn mount_number(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("mnt"))
        .unwrap_or_default()
        .to_owned()
}

/// True when `path` is the mount point of a fuse / fuse.* filesystem in mountinfo.
pub fn is_fuse_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Test paths contain no characters mountinfo escapes.
    let want = path.to_string_lossy();
    info.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else {
            return false;
        };
        let fstype = right.split(' ').next().unwrap_or_default();
        (fstype == "fuse" || fstype.starts_with("fuse.")) && left.split(' ').nth(4) == Some(&*want)
    })
}
