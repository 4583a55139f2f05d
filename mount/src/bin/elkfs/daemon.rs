//! Background daemons of a local cluster: where their files live, starting them detached,
//! recognising them by pid file, stopping them.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const MASTER_BIN: &str = "elkfs-master";
pub const CHUNKSERVER_BIN: &str = "elkfs-chunkserver";
pub const METALOGGER_BIN: &str = "elkfs-metalogger";
pub const MOUNT_BIN: &str = "elkfs-mount";

/// The files of one local cluster under its DATA_DIR.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }
    /// Where `up` records the mountpoint, so `down DATA_DIR` can find it.
    pub fn mountpoint_file(&self) -> PathBuf {
        self.run_dir().join("mountpoint")
    }
}

/// The binary a daemon named `name` (master, metalogger, cs<i>, mount) runs.
pub fn binary_of(name: &str) -> &'static str {
    match name {
        "master" => MASTER_BIN,
        "metalogger" => METALOGGER_BIN,
        "mount" => MOUNT_BIN,
        _ => CHUNKSERVER_BIN,
    }
}

/// The daemon binaries ship next to `elkfs`; PATH is the fallback for split installs.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found next to elkfs nor on PATH"))
}

/// The pid recorded in `pid_file`, if the file exists and holds a number.
pub fn read_pid(pid_file: &Path) -> Result<Option<i32>> {
    match fs::read_to_string(pid_file) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", pid_file.display())),
    }
}

/// True when `pid` is a live (not zombie) process running `binary`. Checking the binary
/// keeps a stale pid file from making us skip, or signal, an unrelated process that got
/// the same pid.
pub fn is_running(pid: i32, binary: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let matches = Path::new(OsStr::from_bytes(argv0))
        .file_name()
        .is_some_and(|n| n == binary);
    matches && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    // /proc/PID/stat: "pid (comm) S ..."; comm may contain spaces, so split after ')'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The pid of daemon `name` if its pid file points at a live process of its binary.
pub fn running_pid(layout: &Layout, name: &str) -> Result<Option<i32>> {
    Ok(read_pid(&layout.pid_file(name))?.filter(|&pid| is_running(pid, binary_of(name))))
}

/// Start `bin args…` detached from our session (its own process group and session, so a
/// terminal hang-up or Ctrl-C of the shell that ran `elkfs up` does not reach it), with
/// stdin from /dev/null and stdout+stderr appended to the daemon's log. Records the pid.
pub fn spawn_detached(layout: &Layout, name: &str, bin: &Path, args: &[&OsStr]) -> Result<i32> {
    let log_path = layout.log(name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_err = log.try_clone().context("duplicating log file handle")?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child is deliberately not waited for: it outlives us and is re-parented to init.
    drop(child);
    let pid_file = layout.pid_file(name);
    fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(pid)
}

/// How a daemon ended up after [`stop`].
pub enum Stopped {
    NotRunning,
    Terminated(i32),
    Killed(i32),
}

/// SIGTERM daemon `name`, wait up to `grace` for it to exit, SIGKILL after that.
/// Removes its pid file either way.
pub fn stop(layout: &Layout, name: &str, grace: Duration) -> Result<Stopped> {
    let pid_file = layout.pid_file(name);
    let outcome = match running_pid(layout, name)? {
        None => Stopped::NotRunning,
        Some(pid) => {
            signal(pid, libc::SIGTERM)?;
            if wait_exit(pid, binary_of(name), grace) {
                Stopped::Terminated(pid)
            } else {
                signal(pid, libc::SIGKILL)?;
                if !wait_exit(pid, binary_of(name), Duration::from_secs(5)) {
                    bail!("{name} (pid {pid}) survived SIGKILL");
                }
                Stopped::Killed(pid)
            }
        }
    };
    match fs::remove_file(&pid_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", pid_file.display())),
    }
    Ok(outcome)
}

fn signal(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: plain syscall; the pid was just checked to be our daemon.
    if unsafe { libc::kill(pid, sig) } < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signalling pid {pid}"));
        }
    }
    Ok(())
}

/// Waits until `pid` no longer runs `binary`; false on timeout.
pub fn wait_exit(pid: i32, binary: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_running(pid, binary) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
    true
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
