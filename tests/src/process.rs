//! One daemon process owned by a test: killed and reaped on drop, whatever happens.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub struct Daemon {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `bin args…` with stdout+stderr appended to `log`.
    pub fn spawn(name: &str, bin: &Path, args: &[OsString], log: &Path) -> Daemon {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log handle");
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe. PDEATHSIG makes the daemon die with the test
        // process even when that is SIGKILLed (e.g. a CI timeout), so no daemon outlives
        // its test. It fires when the spawning *thread* exits; the test thread owns the
        // Cluster for its whole life, so that is the same moment.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Daemon {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Some(status) if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the log tail when the daemon is no longer running.
    pub fn assert_alive(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {while_doing}; {} ends with:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 40)
            );
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status.
    pub fn terminate(mut self, grace: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} ignored SIGTERM for {}s, killing it",
            self.name,
            grace.as_secs()
        );
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("waiting for a killed daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of `path`.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
