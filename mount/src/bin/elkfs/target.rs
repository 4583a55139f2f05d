//! Which master serves a path, and the path's inode number there.
//!
//! The mount does not publish its master address (mountinfo shows only `elkfs`), so the
//! `elkfs-mount` process serving the path's filesystem is found in /proc: its command line
//! is `elkfs-mount [-o OPTS] MASTER MOUNTPOINT`, and its mount point has the same device
//! number as the path. The mount hands the master's inode numbers to the kernel unchanged
//! (the FUSE root, 1, is the master's root), so `stat`'s inode number is the master's.

use crate::admin::{block_on, connect, rpc_error, Client};
use crate::mounts::is_elkfs_device;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Target {
    /// The master's address, as the mount was given it.
    pub master: String,
    pub ino: u64,
}

/// The master and inode of `path` (symlinks followed, as `stat` does). Error messages
/// leave the path to the caller.
fn resolve(path: &Path) -> Result<Target> {
    let meta = fs::metadata(path)?;
    if !is_elkfs_device(meta.dev())? {
        bail!("not on an elkfs mount");
    }
    let master = mount_master(meta.dev())?
        .context("on an elkfs mount, but no elkfs-mount process serving it is visible here")?;
    Ok(Target {
        master,
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
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let failed = block_on(async {
        let mut clients: HashMap<String, Client> = HashMap::new();
        let mut failed = 0;
        for path in paths {
            let result = async {
                let target = resolve(path)?;
                let client = match clients.get(&target.master) {
                    Some(c) => c.clone(),
                    None => {
                        let c = connect(&target.master)?;
                        clients.insert(target.master.clone(), c.clone());
                        c
                    }
                };
                op(client, target.ino)
                    .await
                    .map_err(|s| rpc_error(&target.master, s))
            }
            .await;
            match result {
                Ok(reply) => print!("{}", render(path, reply.get_ref())),
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

/// The master address of the `elkfs-mount` process whose mount point is on device `dev`.
fn mount_master(dev: u64) -> Result<Option<String>> {
    for entry in fs::read_dir("/proc").context("reading /proc")?.flatten() {
        let proc_dir = entry.path();
        // Processes come and go while we look: skip whatever cannot be read.
        let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let Some((master, mountpoint)) = parse_mount_cmdline(&cmdline) else {
            continue;
        };
        let mountpoint = proc_dir.join("cwd").join(mountpoint);
        if fs::metadata(&mountpoint).is_ok_and(|m| m.dev() == dev) {
            return Ok(Some(master));
        }
    }
    Ok(None)
}

/// MASTER and MOUNTPOINT of an `elkfs-mount` command line (NUL-separated arguments).
fn parse_mount_cmdline(cmdline: &[u8]) -> Option<(String, PathBuf)> {
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let program = Path::new(std::ffi::OsStr::from_bytes(args.next()?));
    if program.file_name()?.as_bytes() != b"elkfs-mount" {
        return None;
    }
    let mut positional = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg {
            b"-o" => skip_value = true,
            a if a.starts_with(b"-") => {}
            a => positional.push(a),
        }
    }
    match positional[..] {
        [master, mountpoint] => Some((
            String::from_utf8_lossy(master).into_owned(),
            PathBuf::from(std::ffi::OsStr::from_bytes(mountpoint)),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_command_lines() {
        let line = b"/usr/bin/elkfs-mount\0-o\0allow_other,ro\x00127.0.0.1:9520\0/mnt/a b\0";
        assert_eq!(
            parse_mount_cmdline(line),
            Some(("127.0.0.1:9520".into(), PathBuf::from("/mnt/a b")))
        );
        let options_last = b"elkfs-mount\0m:9520\0mnt\0-oro\0";
        assert_eq!(
            parse_mount_cmdline(options_last),
            Some(("m:9520".into(), PathBuf::from("mnt")))
        );
        assert_eq!(parse_mount_cmdline(b"elkfs-master\0a\0b\0"), None);
        assert_eq!(parse_mount_cmdline(b"elkfs-mount\0--help\0"), None);
        assert_eq!(parse_mount_cmdline(b""), None);
    }
}
