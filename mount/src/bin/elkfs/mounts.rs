//! Finding and removing FUSE mounts.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// True when `mountpoint` (absolute, canonical) is the mount point of a FUSE filesystem.
pub fn is_fuse_mounted(mountpoint: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(info.lines().any(|line| {
        fuse_mount_point(line).is_some_and(|mp| mp.as_bytes() == mountpoint.as_os_str().as_bytes())
    }))
}

/// The master addresses of the elkfs mount with device number `dev` (a `stat` st_dev),
/// or None when no elkfs mount has that device.
pub fn elkfs_masters(dev: u64) -> Result<Option<Vec<String>>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(info
        .lines()
        .filter_map(elkfs_mount)
        .find(|(d, _)| *d == dev)
        .map(|(_, masters)| masters))
}

/// Device number and masters of an elkfs mountinfo line: type `fuse.elkfs` (or `fuse` where
/// the subtype is not shown) with source `elkfs:MASTER[;MASTER…]` (the mount's fsname).
/// Format: `id parent maj:min root MOUNTPOINT opts [optional…] - FSTYPE source superopts`.
fn elkfs_mount(line: &str) -> Option<(u64, Vec<String>)> {
    let (left, right) = line.split_once(" - ")?;
    let mut fields = right.split(' ');
    if !matches!(fields.next()?, "fuse.elkfs" | "fuse") {
        return None;
    }
    let masters = unescape(fields.next()?.strip_prefix("elkfs:")?)
        .split(';')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    let (major, minor) = left.split(' ').nth(2)?.split_once(':')?;
    Some((
        libc::makedev(major.parse().ok()?, minor.parse().ok()?),
        masters,
    ))
}

/// The mount point of a mountinfo line whose filesystem type is fuse or fuse.<subtype>.
/// Format: `id parent maj:min root MOUNTPOINT opts [optional…] - FSTYPE source superopts`.
fn fuse_mount_point(line: &str) -> Option<String> {
    let (left, right) = line.split_once(" - ")?;
    let fstype = right.split(' ').next()?;
    if fstype != "fuse" && !fstype.starts_with("fuse.") {
        return None;
    }
    left.split(' ').nth(4).map(unescape)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `mountpoint`: umount(2) first (works for root), then `fusermount3 -u` (works
/// for the user who mounted it), and a lazy detach as the last resort so a busy or dead
/// mount never blocks shutdown. Returns how it was done.
pub fn unmount(mountpoint: &Path) -> Result<&'static str> {
    let c_path = CString::new(mountpoint.as_os_str().as_bytes()).context("mountpoint has NUL")?;
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
        return Ok("umount");
    }
    if run_quiet("fusermount3", &["-u"], mountpoint) {
        return Ok("fusermount3 -u");
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok("lazy umount");
    }
    if run_quiet("fusermount3", &["-u", "-z"], mountpoint) {
        return Ok("fusermount3 -u -z");
    }
    bail!(
        "could not unmount {}: {}",
        mountpoint.display(),
        std::io::Error::last_os_error()
    )
}

fn run_quiet(prog: &str, args: &[&str], path: &Path) -> bool {
    Command::new(prog)
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_lines_and_escapes() {
        let line = "88 27 0:50 / /tmp/a\\040b rw,nosuid - fuse.elkfs elkfs rw,user_id=0";
        assert_eq!(fuse_mount_point(line).as_deref(), Some("/tmp/a b"));
        let plain = "88 27 0:50 / /mnt/x rw shared:5 - fuse 127.0.0.1:9520 rw";
        assert_eq!(fuse_mount_point(plain).as_deref(), Some("/mnt/x"));
        let other = "22 27 0:21 / /proc rw,relatime - proc proc rw";
        assert_eq!(fuse_mount_point(other), None);
        assert_eq!(elkfs_mount(line), None, "a source that names no master");
        let masters = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let elkfs = "88 27 0:50 / /tmp/a\\040b rw - fuse.elkfs elkfs:10.0.0.1:9520;m2:9520 rw";
        assert_eq!(
            elkfs_mount(elkfs),
            Some((libc::makedev(0, 50), masters(&["10.0.0.1:9520", "m2:9520"])))
        );
        assert_eq!(elkfs_mount(plain), None, "a FUSE mount of another kind");
        assert_eq!(elkfs_mount(other), None);
        let no_subtype = "43 27 0:39 / /mnt/e rw,relatime - fuse elkfs:m:9520 rw,user_id=0";
        assert_eq!(
            elkfs_mount(no_subtype),
            Some((libc::makedev(0, 39), masters(&["m:9520"])))
        );
    }
}
