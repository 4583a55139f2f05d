//! A real `elkfs-metalogger` following a test cluster's master, and `elkfs-metarestore`
//! runs on data directories.

use crate::bins::bin;
use crate::cluster::{Cluster, START_TIMEOUT};
use crate::process::Daemon;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub struct Metalogger {
    name: String,
    master: String,
    dir: PathBuf,
    log: PathBuf,
    daemon: Option<Daemon>,
}

impl Metalogger {
    /// Starts `elkfs-metalogger` for `cluster` with its data in `<cluster dir>/<name>`.
    pub fn start(cluster: &Cluster, name: &str) -> Metalogger {
        let mut m = Metalogger {
            name: name.to_owned(),
            master: cluster.master_addr(),
            dir: cluster.dir().join(name),
            log: cluster.log_path(name),
            daemon: None,
        };
        m.restart();
        m
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts it again (after [`Metalogger::kill`] or [`Metalogger::stop`]).
    pub fn restart(&mut self) {
        assert!(self.daemon.is_none(), "metalogger {} running", self.name);
        let args: Vec<OsString> = vec![
            "--master".into(),
            self.master.clone().into(),
            "--data".into(),
            self.dir.clone().into(),
            "--name".into(),
            self.name.clone().into(),
        ];
        self.daemon = Some(Daemon::spawn(
            &self.name,
            &bin("elkfs-metalogger"),
            &args,
            &self.log,
        ));
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERM and wait; panics unless it exits cleanly.
    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let status = d.terminate(Duration::from_secs(30));
            assert!(status.success(), "metalogger exited with {status}");
        }
    }

    /// Waits until it has received an image from the master (it follows from then on).
    pub fn wait_following(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !has_image(&self.dir) {
            if let Some(d) = self.daemon.as_mut() {
                d.assert_alive("waiting for the metalogger's first image");
            }
            assert!(
                Instant::now() < deadline,
                "metalogger never got an image:\n{}",
                crate::process::log_tail(&self.log, 40)
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Highest version in its changelog files (whole frames only).
    pub fn version(&self) -> u64 {
        last_version(&self.dir)
    }

    /// Waits until it holds `version`; panics with its log on timeout or death.
    pub fn wait_version(&mut self, version: u64) {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.version() < version {
            if let Some(d) = self.daemon.as_mut() {
                d.assert_alive("waiting for the metalogger to catch up");
            }
            assert!(
                Instant::now() < deadline,
                "metalogger at {} never reached {version}:\n{}",
                self.version(),
                crate::process::log_tail(&self.log, 40)
            );
            sleep(Duration::from_millis(50));
        }
    }
}

fn has_image(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("metadata.") && n.ends_with(".elk")
        })
    })
}

/// Highest version of a whole frame in `dir`'s `changelog.*.elk` files (0: none).
pub fn last_version(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut last = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("changelog.") && name.ends_with(".elk")) {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            if at + 16 + len > bytes.len() {
                break;
            }
            let v = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
            last = last.max(v);
            at += 16 + len;
        }
    }
    last
}

/// Output of one `elkfs-metarestore` run.
pub struct Restore {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Restore {
    /// The image it wrote (`wrote <path>` line).
    pub fn image(&self) -> PathBuf {
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.split("; wrote ").nth(1))
            .unwrap_or_else(|| panic!("no image written:\n{}\n{}", self.stdout, self.stderr));
        PathBuf::from(line.trim())
    }
}

/// `elkfs-metarestore -a dir`.
pub fn metarestore(dir: &Path) -> Restore {
    let out = Command::new(bin("elkfs-metarestore"))
        .arg("-a")
        .arg(dir)
        .output()
        .expect("running elkfs-metarestore");
    Restore {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `elkfs-metarestore --dump file` (stdout).
pub fn dump(file: &Path) -> String {
    let out = Command::new(bin("elkfs-metarestore"))
        .arg("--dump")
        .arg(file)
        .output()
        .expect("running elkfs-metarestore --dump");
    assert!(out.status.success(), "dump of {} failed", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets a master config key; takes effect at the next master start.
pub fn set_master_option(cluster: &Cluster, line: &str) {
    let path = cluster.dir().join("master.toml");
    let mut conf = std::fs::read_to_string(&path).expect("reading master.toml");
    conf.push_str(line);
    conf.push('\n');
    std::fs::write(&path, conf).expect("writing master.toml");
}
