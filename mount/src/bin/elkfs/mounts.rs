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

/// True when device `dev` (a `stat` st_dev) is an elkfs FUSE mount.
pub fn is_elkfs_device(dev: u64) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(info.lines().any(|line| elkfs_device(line) == Some(dev)))
}

/// The device number of an elkfs mount's mountinfo line: type `fuse` with source `elkfs`
/// (the mount's fsname), or `fuse.elkfs` where the subtype is shown. The third field is
/// `major:minor`.
fn elkfs_device(line: &str) -> Option<u64> {
    let (left, right) = line.split_once(" - ")?;
    let mut fields = right.split(' ');
    match (fields.next()?, fields.next()?) {
        ("fuse.elkfs", _) | ("fuse", "elkfs") => {}
        _ => return None,
    }
    let (major, minor) = left.split(' ').nth(2)?.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
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
        assert_eq!(elkfs_device(line), Some(libc::makedev(0, 50)));
        assert_eq!(elkfs_device(plain), None, "a FUSE mount of another kind");
        assert_eq!(elkfs_device(other), None);
        let no_subtype = "43 27 0:39 / /mnt/e rw,relatime - fuse elkfs rw,user_id=0";
        assert_eq!(elkfs_device(no_subtype), Some(libc::makedev(0, 39)));
    }
}
