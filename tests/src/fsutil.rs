//! Small helpers the integration tests share.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as a C string for raw libc calls.
pub fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// The errno of a failed std call, or panics (naming `what`) if it did not fail.
#[track_caller]
pub fn errno_of<T: std::fmt::Debug>(result: io::Result<T>, what: &str) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Asserts `result` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(result: io::Result<T>, errno: i32, what: &str) {
    let got = errno_of(result, what);
    assert_eq!(
        got,
        errno,
        "{what}: expected {}, got {}",
        io::Error::from_raw_os_error(errno),
        io::Error::from_raw_os_error(got)
    );
}

/// Converts a raw libc return value (-1 = error) into a Result.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Runs `op` in a forked child that has dropped to `uid`/`gid` (no supplementary groups)
/// and returns what it returned: 0 for success or an errno. `op` runs after fork() in a
/// multi-threaded process, so it must only make raw syscalls: build every CString before.
pub fn as_user(uid: u32, gid: u32, op: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes async-signal-safe syscalls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                // Distinct from any errno so a failed drop of privileges is not mistaken
                // for the result under test.
                255
            } else {
                op()
            };
            libc::_exit(code);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid, "waitpid");
        assert!(libc::WIFEXITED(status), "child died: status {status}");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 255, "child could not switch to uid {uid} gid {gid}");
        code
    }
}

/// 0 if `ret` is not negative, else the current errno (for use inside [`as_user`]).
pub fn errno_result(ret: isize) -> i32 {
    if ret >= 0 {
        0
    } else {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }
}

/// A small deterministic generator (SplitMix64): reproducible data without a dependency.
/// The seed comes from ELKFS_TEST_SEED or the clock, and is printed so a failure can be
/// replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(label: &str) -> Rng {
        let seed = std::env::var("ELKFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{label}: ELKFS_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Index of the first differing byte, for readable assertion messages on large buffers.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Asserts two byte buffers are equal without printing megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(at) = first_difference(got, want) {
        panic!(
            "{what}: content differs at byte {at} (got {} bytes, want {} bytes)",
            got.len(),
            want.len()
        );
    }
}

/// A tmpfs of `size` (as mount's `size=` takes it) over `dir`, detached on drop: a small
/// disk of known size, whatever disk the test machine has.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem holding `dir` with one file in it; returns the file.
pub fn fill_up(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).expect("ballast file");
    let block = vec![1u8; 1 << 20];
    loop {
        if let Err(e) = f.write_all(&block) {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "filling {}: {e}",
                dir.display()
            );
            return path;
        }
    }
}
