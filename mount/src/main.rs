//! elkfs-mount: the elkfs FUSE client.
//!
//! `elkfs-mount MASTER[,MASTER...] MOUNTPOINT [-o opt,...]` mounts the filesystem of the
//! master at MASTER (host:port; with several, whichever is active, also after a failover)
//! and serves it in the foreground until unmounted, or until SIGTERM / SIGINT (which
//! unmount cleanly; a second signal exits at once).

mod attr;
mod chunkservers;
mod entry_cache;
mod fs;
mod handles;
mod kernel;
mod listings;
mod locks;
mod master_client;
mod options;
mod reader;
mod watch;
mod writer;

use anyhow::{bail, Context};
use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "elkfs-mount",
    version,
    about = "Mount an elkfs filesystem (FUSE client)"
)]
struct Args {
    /// Master address, host:port, or several separated by commas
    master: String,
    /// Where to mount
    mountpoint: PathBuf,
    /// Mount options: ro, allow_other, attr_timeout=S, entry_timeout=S, threads=N,
    /// entry_cache=0|1, master=ADDR (another master address; repeatable)
    #[arg(short = 'o', value_delimiter = ',', action = clap::ArgAction::Append)]
    options: Vec<String>,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates within it
    // or truncates, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Unmounts, at a stop signal or once the session ended (a no-op if the signal's unmount
/// came first); if the mount is busy, detaches it lazily so the session still ends once
/// the last open file is closed.
fn unmount(unmounter: &mut SessionUnmounter, mountpoint: &Path) {
    match unmounter.unmount() {
        Ok(()) => return,
        // Someone unmounted it first (a plain `umount`): the session is ending or ended.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            debug!("{} was already unmounted", mountpoint.display());
            return;
        }
        Err(e) => warn!(
            "unmount of {} failed ({e}); detaching lazily",
            mountpoint.display()
        ),
    }
    if let Ok(path) = CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: path is a valid NUL-terminated string.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    match std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => error!("fusermount3 -u -z failed: {s}"),
        Err(e) => error!("could not run fusermount3: {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    elkfs_proto::daemon::init_logging();
    let args = Args::parse();
    let (opts, unknown) = options::parse(args.options.iter().map(String::as_str))?;
    for o in unknown {
        warn!("ignoring unknown mount option {o}");
    }
    if !args.mountpoint.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    let mountpoint = args.mountpoint.canonicalize().context("mount point")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
        .thread_name("elkfs-io")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let client = format!("{}:{}", hostname(), mountpoint.display());
    let mut masters = elkfs_proto::transport::address_list(&args.master);
    masters.extend(opts.masters.iter().cloned());
    let master = rt
        .block_on(master_client::Master::connect(&masters, client))
        .with_context(|| format!("connecting to master {}", masters.join(",")))?;

    let mut config = Config::default();
    config.mount_options = vec![
        // The source column of mountinfo then names the masters, for the `elkfs` tool.
        MountOption::FSName(format!("elkfs:{}", masters.join(";"))),
        MountOption::Subtype("elkfs".into()),
        MountOption::DefaultPermissions,
        if opts.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads);
    config.clone_fd = true;

    let master = Arc::new(master);
    let kernel = kernel::KernelCache::default();
    rt.spawn(master.clone().keepalive());
    // Beside the master connection, so sending a batch or taking a notice wakes no other
    // thread.
    let meta_rt = elkfs_proto::transport::rpc_runtime().unwrap_or_else(|_| rt.handle().clone());
    meta_rt.spawn(master.clone().send_releases());
    if opts.entry_cache {
        meta_rt.spawn(watch::follow(master.clone(), kernel.clone()));
    }
    let at_end = fs::AtEnd::default();
    let filesystem = fs::ElkFs::new(
        rt.handle().clone(),
        master.clone(),
        opts,
        kernel.clone(),
        at_end.clone(),
    );
    let mut session = Session::new(filesystem, &mountpoint, &config)
        .with_context(|| format!("mounting {}", mountpoint.display()))?;
    kernel.attach(session.notifier(), master);
    info!(
        "mounted {} from {}",
        mountpoint.display(),
        masters.join(",")
    );

    let mut end_unmounter = session.unmount_callable();
    let end_mountpoint = mountpoint.clone();
    *locks::lock(&at_end) = Some(Box::new(move || {
        unmount(&mut end_unmounter, &end_mountpoint)
    }));
    let mut unmounter = session.unmount_callable();
    let signal_mountpoint = mountpoint.clone();
    rt.spawn(async move {
        if let Err(e) = elkfs_proto::daemon::shutdown_signal().await {
            error!("cannot watch signals: {e}");
            return;
        }
        info!(
            "signal received, unmounting {}",
            signal_mountpoint.display()
        );
        let detach =
            tokio::task::spawn_blocking(move || unmount(&mut unmounter, &signal_mountpoint));
        let _ = elkfs_proto::daemon::shutdown_signal().await;
        warn!("second signal, exiting without waiting for open files");
        drop(detach);
        std::process::exit(1);
    });

    session.run().context("FUSE session")?;
    info!("unmounted {}", mountpoint.display());
    Ok(())
}
