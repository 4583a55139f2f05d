//! `elkfs up`: a whole local cluster (master, metalogger, chunkservers, mount) as detached
//! background processes.

use crate::daemon::{self, Layout, MOUNT_BIN};
use crate::{mounts, status};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MASTER_PORT: u16 = elkfs_proto::limits::DEFAULT_MASTER_PORT;
const FIRST_CHUNKSERVER_PORT: u16 = elkfs_proto::limits::DEFAULT_CHUNKSERVER_PORT;
const DEFAULT_RESERVE_BYTES: u64 = 256 << 20;
/// Long enough for a cold start on a slow CI machine, short enough to report a stuck daemon.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    /// Directory for configs, data, logs and pid files (created if missing).
    data_dir: PathBuf,
    /// Where to mount the filesystem (created if missing).
    mountpoint: PathBuf,
    /// Number of chunkservers to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    chunkservers: u16,
    /// Address every daemon listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Copies of every chunk (goal of the root directory); used when the filesystem is
    /// created, an existing one keeps its goals.
    #[arg(long, default_value_t = elkfs_proto::limits::DEFAULT_GOAL, value_parser = clap::value_parser!(u32).range(1..=16))]
    goal: u32,
}

#[derive(Serialize)]
struct MasterConfig {
    listen: String,
    data_dir: PathBuf,
    root_goal: u32,
}

#[derive(Serialize)]
struct ChunkserverConfig {
    listen: String,
    master: String,
    data_dirs: Vec<PathBuf>,
    reserve_bytes: u64,
}

/// One daemon as `up` reports it.
struct Started {
    name: String,
    pid: i32,
    address: String,
    already_running: bool,
}

pub fn run(args: Args) -> Result<()> {
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let layout = Layout::new(
        fs::canonicalize(&args.data_dir)
            .with_context(|| format!("resolving {}", args.data_dir.display()))?,
    );
    let mountpoint = resolve_mountpoint(&args.mountpoint)?;
    let master_addr = SocketAddr::new(args.host, MASTER_PORT);
    let cs_names: Vec<String> = (1..=args.chunkservers).map(|i| format!("cs{i}")).collect();

    create_dirs(&layout, &cs_names)?;
    write_configs(&layout, &args, &cs_names)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut started = Vec::new();

    let etc = layout.etc();
    let master_conf = etc.join("master.toml");
    started.push(ensure(
        &layout,
        "master",
        Listen::On(master_addr),
        &[OsStr::new("--config"), master_conf.as_os_str()],
    )?);
    wait_for(
        &layout,
        "master",
        deadline,
        "the master to accept connections",
        || Ok(TcpStream::connect_timeout(&master_addr, Duration::from_millis(500)).is_ok()),
    )?;

    let master = master_addr.to_string();
    let metalogger_dir = layout.root().join("metalogger");
    started.push(ensure(
        &layout,
        "metalogger",
        Listen::Not(format!("follows {master}")),
        &[
            OsStr::new("--master"),
            OsStr::new(&master),
            OsStr::new("--data"),
            metalogger_dir.as_os_str(),
        ],
    )?);

    for (i, name) in cs_names.iter().enumerate() {
        let conf = etc.join(format!("{name}.toml"));
        let addr = chunkserver_addr(args.host, i)?;
        started.push(ensure(
            &layout,
            name,
            Listen::On(addr),
            &[OsStr::new("--config"), conf.as_os_str()],
        )?);
    }
    let wanted = usize::from(args.chunkservers);
    wait_for(
        &layout,
        "master",
        deadline,
        "all chunkservers to register",
        || {
            let reply = status::fetch_blocking(&master);
            Ok(reply.is_ok_and(|r| r.servers.iter().filter(|s| s.connected).count() >= wanted))
        },
    )
    .with_context(|| format!("see the logs in {}", layout.log_dir().display()))?;

    started.push(start_mount(&layout, &master, &mountpoint, deadline)?);
    print_summary(&layout, &started, &mountpoint);
    Ok(())
}

/// The mount point as an absolute path, created if missing. A path that already is a FUSE
/// mount point is not looked at: after a master crash the mount waits for it there, and
/// `up` is what brings it back.
fn resolve_mountpoint(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no directory to mount on", path.display()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let joined = fs::canonicalize(parent)
        .with_context(|| format!("resolving {}", parent.display()))?
        .join(name);
    if mounts::is_fuse_mounted(&joined)? {
        return Ok(joined);
    }
    fs::create_dir_all(&joined)
        .with_context(|| format!("creating mountpoint {}", joined.display()))?;
    fs::canonicalize(&joined).with_context(|| format!("resolving {}", joined.display()))
}

fn create_dirs(layout: &Layout, cs_names: &[String]) -> Result<()> {
    let mut dirs = vec![
        layout.etc(),
        layout.log_dir(),
        layout.run_dir(),
        layout.root().join("master"),
        layout.root().join("metalogger"),
    ];
    dirs.extend(cs_names.iter().map(|n| layout.root().join(n)));
    for dir in dirs {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn chunkserver_addr(host: IpAddr, index: usize) -> Result<SocketAddr> {
    let port = u16::try_from(index)
        .ok()
        .and_then(|i| FIRST_CHUNKSERVER_PORT.checked_add(i))
        .context("too many chunkservers for the port range")?;
    Ok(SocketAddr::new(host, port))
}

/// Configs are rewritten on every `up` so a changed --host or count takes effect; the data
/// directories they point at are what carries the filesystem from one run to the next.
fn write_configs(layout: &Layout, args: &Args, cs_names: &[String]) -> Result<()> {
    let master_addr = SocketAddr::new(args.host, MASTER_PORT).to_string();
    let header = "# Written by `elkfs up`; rewritten on every run.\n";
    let master = MasterConfig {
        listen: master_addr.clone(),
        data_dir: layout.root().join("master"),
        root_goal: args.goal,
    };
    write_toml(&layout.etc().join("master.toml"), header, &master)?;
    for (i, name) in cs_names.iter().enumerate() {
        let cs = ChunkserverConfig {
            listen: chunkserver_addr(args.host, i)?.to_string(),
            master: master_addr.clone(),
            data_dirs: vec![layout.root().join(name)],
            reserve_bytes: DEFAULT_RESERVE_BYTES,
        };
        write_toml(&layout.etc().join(format!("{name}.toml")), header, &cs)?;
    }
    Ok(())
}

fn write_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<()> {
    let body = toml::to_string(value).context("serialising config")?;
    fs::write(path, format!("{header}{body}"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Starts daemon `name` unless its pid file points at a live process of its binary.
/// Where a daemon listens, or what to show instead.
enum Listen {
    On(SocketAddr),
    Not(String),
}

fn ensure(layout: &Layout, name: &str, listen: Listen, args: &[&OsStr]) -> Result<Started> {
    let address = match &listen {
        Listen::On(addr) => addr.to_string(),
        Listen::Not(what) => what.clone(),
    };
    if let Some(pid) = daemon::running_pid(layout, name)? {
        return Ok(Started {
            name: name.to_owned(),
            pid,
            address,
            already_running: true,
        });
    }
    // A daemon started on a taken address exits at once, and the cluster would silently
    // use whatever answers there (another cluster's master).
    if let Listen::On(addr) = listen {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!(
                "{name}: {addr} is already in use ({e}): stop what listens there, or give \
                 this cluster another loopback address with --host"
            );
        }
    }
    let bin = daemon::find_binary(daemon::binary_of(name))?;
    let pid = daemon::spawn_detached(layout, name, &bin, args)?;
    Ok(Started {
        name: name.to_owned(),
        pid,
        address,
        already_running: false,
    })
}

fn start_mount(
    layout: &Layout,
    master: &str,
    mountpoint: &Path,
    deadline: Instant,
) -> Result<Started> {
    fs::write(
        layout.mountpoint_file(),
        mountpoint.as_os_str().as_encoded_bytes(),
    )
    .with_context(|| format!("writing {}", layout.mountpoint_file().display()))?;
    let address = mountpoint.display().to_string();
    if let Some(pid) = daemon::running_pid(layout, "mount")? {
        return Ok(Started {
            name: "mount".into(),
            pid,
            address,
            already_running: true,
        });
    }
    // A mount whose daemon died leaves "transport endpoint is not connected" behind.
    if mounts::is_fuse_mounted(mountpoint)? {
        mounts::unmount(mountpoint)?;
    }
    let bin = daemon::find_binary(MOUNT_BIN)?;
    let pid = daemon::spawn_detached(
        layout,
        "mount",
        &bin,
        &[OsStr::new(master), mountpoint.as_os_str()],
    )?;
    wait_for(
        layout,
        "mount",
        deadline,
        "the filesystem to be mounted",
        || Ok(mounts::is_fuse_mounted(mountpoint)? && fs::metadata(mountpoint).is_ok()),
    )?;
    Ok(Started {
        name: "mount".into(),
        pid,
        address,
        already_running: false,
    })
}

/// Polls `ready` until it is true. Fails early, with the log's tail, if daemon `name` died.
fn wait_for(
    layout: &Layout,
    name: &str,
    deadline: Instant,
    what: &str,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let log = layout.log(name);
    loop {
        if ready()? {
            return Ok(());
        }
        if daemon::running_pid(layout, name)?.is_none() {
            bail!(
                "{name} exited while waiting for {what}; its log {} ends with:\n{}",
                log.display(),
                daemon::log_tail(&log, 20)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for {what}; see {}",
                START_TIMEOUT.as_secs(),
                log.display()
            );
        }
        sleep(Duration::from_millis(200));
    }
}

fn print_summary(layout: &Layout, started: &[Started], mountpoint: &Path) {
    let name_w = started.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let addr_w = started.iter().map(|s| s.address.len()).max().unwrap_or(0);
    for s in started {
        let note = if s.already_running {
            " (already running)"
        } else {
            ""
        };
        println!(
            "{:<name_w$}  pid {:<7}  {:<addr_w$}  log {}{note}",
            s.name,
            s.pid,
            s.address,
            layout.log(&s.name).display(),
        );
    }
    println!("elkfs is mounted at {}", mountpoint.display());
    println!("stop it with: elkfs down {}", layout.root().display());
}
