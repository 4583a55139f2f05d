//! Which masters serve a path, and the path's inode number there.
//!
//! A mount names its masters in its source (`elkfs:MASTER[;MASTER…]` in mountinfo), found
//! by the path's device number. The mount hands the master's inode numbers to the kernel
//! unchanged (the FUSE root, 1, is the master's root), so `stat`'s inode number is the
//! master's.

use crate::admin::{block_on, Client, Masters};
use crate::mounts::elkfs_masters;
use anyhow::{bail, Context, Result};
use std::fs;
use std::future::Future;
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
    let masters = elkfs_masters(meta.dev())?.context("not on an elkfs mount")?;
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
