//! `elkfs down`: unmount and stop what `elkfs up` started.

use crate::daemon::{self, Layout, Stopped};
use crate::mounts;
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// Each daemon gets this long to finish cleanly (the master writes its metadata image on
/// SIGTERM) before SIGKILL.
const GRACE: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// The directory given to `elkfs up`.
    data_dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let layout = Layout::new(
        fs::canonicalize(&args.data_dir)
            .with_context(|| format!("no cluster at {}", args.data_dir.display()))?,
    );
    // The mount first so no client writes into chunkservers that are going away; the
    // master last so chunkservers can still report to it while they shut down and the
    // metalogger has every record. The mount unmounts itself on SIGTERM (unmounted from
    // outside, it would log a failed second unmount); whatever a dead or stuck mount left
    // mounted is unmounted here.
    stop(&layout, "mount")?;
    if let Ok(raw) = fs::read(layout.mountpoint_file()) {
        let mountpoint = PathBuf::from(OsStr::from_bytes(&raw));
        if mounts::is_fuse_mounted(&mountpoint)? {
            let how = mounts::unmount(&mountpoint)?;
            println!("unmounted {} ({how})", mountpoint.display());
        }
    }
    let mut names = chunkserver_names(&layout)?;
    names.push("metalogger".to_owned());
    names.push("master".to_owned());
    for name in &names {
        stop(&layout, name)?;
    }
    Ok(())
}

fn stop(layout: &Layout, name: &str) -> Result<()> {
    match daemon::stop(layout, name, GRACE)? {
        Stopped::NotRunning => {}
        Stopped::Terminated(pid) => println!("stopped {name} (pid {pid})"),
        Stopped::Killed(pid) => println!(
            "killed {name} (pid {pid}): it did not exit within {}s",
            GRACE.as_secs()
        ),
    }
    Ok(())
}

/// cs<i> names with a pid file, in numeric order.
fn chunkserver_names(layout: &Layout) -> Result<Vec<String>> {
    let run_dir = layout.run_dir();
    let entries = match fs::read_dir(&run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", run_dir.display())),
    };
    let mut numbered: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let name = file.strip_suffix(".pid")?;
            let n: u32 = name.strip_prefix("cs")?.parse().ok()?;
            Some((n, name.to_owned()))
        })
        .collect();
    numbered.sort();
    Ok(numbered.into_iter().map(|(_, name)| name).collect())
}
