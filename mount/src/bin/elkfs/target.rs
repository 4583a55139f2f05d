//! Which masters serve a path, and the path's inode number there.
//!
//! The mount does not publish its master addresses (mountinfo shows only `elkfs`), so the
//! `elkfs-mount` process serving the path's filesystem is found in /proc: its command line
//! is `elkfs-mount [-o OPTS] MASTER[,MASTER...] MOUNTPOINT` (more masters may come as
//! `-o master=ADDR`), and its mount point has the same device number as the path. The
//! mount hands the master's inode numbers to the kernel unchanged (the FUSE root, 1, is
//! the master's root), so `stat`'s inode number is the master's.

use crate::admin::{block_on, master_list, Client, Masters};
use crate::mounts::is_elkfs_device;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tonic::{Response, Status};

struct Target {
    /// The mount's master addresses, as it was given them.
    masters: Vec<String>,
    ino: u64,
}

/// The masters and inode of `path` (symlinks followed, as `stat` does). Error messages
/// leave the path to the caller.
fn resolve(path: &Path) -> Result<Target> {
    let meta = fs::metadata(path)?;
    if !is_elkfs_device(meta.dev())? {
        bail!("not on an elkfs mount");
    }
    let masters = mount_masters(meta.dev())?
        .context("on an elkfs mount, but no elkfs-mount process serving it is visible here")?;
    Ok(Target {
        masters,
        ino: meta.ino(),
    })
}

/// For every path: `op(client of its master, its inode)`, then `render(path, reply)` to
/// stdout, or the error to stderr. Every path is tried; fails if any of them failed.
pub fn each<R, Fut>(
    paths: &[PathBuf],
    mut op: impl FnMut(Client, u64) -> Fut,
    render: impl Fn(&Path, &R) -> String,
) -> Result<()>
where
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let failed = block_on(async {
        let mut masters = Masters::default();
        let mut failed = 0;
        for path in paths {
            let result = async {
                let target = resolve(path)?;
                masters
                    .call(&target.masters, |client| op(client, target.ino))
                    .await
            }
            .await;
            match result {
                Ok(reply) => print!("{}", render(path, &reply)),
                Err(e) => {
                    eprintln!("elkfs: {}: {e:#}", path.display());
                    failed += 1;
                }
            }
        }
        Ok(failed)
    })?;
    if failed > 0 {
        bail!("{failed} of {} paths failed", paths.len());
    }
    Ok(())
}

/// The master addresses of the `elkfs-mount` process whose mount point is on device `dev`.
fn mount_masters(dev: u64) -> Result<Option<Vec<String>>> {
    for entry in fs::read_dir("/proc").context("reading /proc")?.flatten() {
        let proc_dir = entry.path();
        // Processes come and go while we look: skip whatever cannot be read.
        let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let Some(mount) = parse_mount_cmdline(&cmdline) else {
            continue;
        };
        let mountpoint = proc_dir.join("cwd").join(mount.mountpoint);
        if fs::metadata(&mountpoint).is_ok_and(|m| m.dev() == dev) {
            return Ok(Some(mount.masters));
        }
    }
    Ok(None)
}

#[derive(Debug, PartialEq)]
struct MountCmdline {
    masters: Vec<String>,
    mountpoint: PathBuf,
}

/// An `elkfs-mount` command line (NUL-separated arguments).
fn parse_mount_cmdline(cmdline: &[u8]) -> Option<MountCmdline> {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let program = Path::new(OsStr::from_bytes(args.next()?));
    if program.file_name()?.as_bytes() != b"elkfs-mount" {
        return None;
    }
    let mut positional: Vec<&[u8]> = Vec::new();
    let mut options = Vec::new();
    let mut option_follows = false;
    for arg in args {
        if std::mem::take(&mut option_follows) {
            options.push(arg);
        } else if arg == b"-o" {
            option_follows = true;
        } else if let Some(opts) = arg.strip_prefix(b"-o") {
            options.push(opts);
        } else if !arg.starts_with(b"-") {
            positional.push(arg);
        }
    }
    let [master, mountpoint] = positional[..] else {
        return None;
    };
    let mut masters = master_list(&String::from_utf8_lossy(master));
    for opts in options {
        masters.extend(
            String::from_utf8_lossy(opts)
                .split(',')
                .filter_map(|o| o.strip_prefix("master="))
                .flat_map(master_list),
        );
    }
    Some(MountCmdline {
        masters,
        mountpoint: PathBuf::from(OsStr::from_bytes(mountpoint)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(masters: &[&str], mountpoint: &str) -> Option<MountCmdline> {
        Some(MountCmdline {
            masters: masters.iter().map(|m| m.to_string()).collect(),
            mountpoint: PathBuf::from(mountpoint),
        })
    }

    #[test]
    fn parses_mount_command_lines() {
        let line = b"/usr/bin/elkfs-mount\0-o\0allow_other,ro\x00127.0.0.1:9520\0/mnt/a b\0";
        assert_eq!(
            parse_mount_cmdline(line),
            parsed(&["127.0.0.1:9520"], "/mnt/a b")
        );
        let options_last = b"elkfs-mount\0m:9520\0mnt\0-oro,master=n:9520\0";
        assert_eq!(
            parse_mount_cmdline(options_last),
            parsed(&["m:9520", "n:9520"], "mnt")
        );
        let several = b"elkfs-mount\0a:1,b:2\0/m\0-o\0master=c:3\0";
        assert_eq!(
            parse_mount_cmdline(several),
            parsed(&["a:1", "b:2", "c:3"], "/m")
        );
        assert_eq!(parse_mount_cmdline(b"elkfs-master\0a\0b\0"), None);
        assert_eq!(parse_mount_cmdline(b"elkfs-mount\0--help\0"), None);
        assert_eq!(parse_mount_cmdline(b""), None);
    }
}
