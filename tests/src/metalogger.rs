//! A real `elkfs-metalogger` following a test cluster's master (or a standby ready to
//! take over), `elkfs-metarestore` runs on data directories, and the pieces of a cluster
//! that know both master addresses (chunkservers, mounts) for failover tests.

use crate::bins::bin;
use crate::changelog::last_version;
use crate::cluster::{Cluster, START_TIMEOUT};
use crate::mount::Mount;
use crate::process::Daemon;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub struct Metalogger {
    name: String,
    master: String,
    /// `--standby` arguments (control address, master address once promoted).
    standby: Option<(String, String)>,
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
            standby: None,
            dir: cluster.dir().join(name),
            log: cluster.log_path(name),
            daemon: None,
        };
        m.restart();
        m
    }

    /// A standby of `cluster`'s master: control service on port 9521 and master address
    /// port 9522 of the cluster's IP.
    pub fn start_standby(cluster: &Cluster, name: &str) -> Metalogger {
        let ip = cluster.ip();
        let mut m = Metalogger {
            name: name.to_owned(),
            master: cluster.master_addr(),
            standby: Some((format!("{ip}:9521"), format!("{ip}:9522"))),
            dir: cluster.dir().join(name),
            log: cluster.log_path(name),
            daemon: None,
        };
        m.restart();
        m
    }

    /// A standby's control address (for `elkfs promote`).
    pub fn control(&self) -> &str {
        self.standby.as_ref().map_or("", |s| s.0.as_str())
    }

    /// A standby's address as master once promoted.
    pub fn master_listen(&self) -> &str {
        self.standby.as_ref().map_or("", |s| s.1.as_str())
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
        let mut args = args;
        if let Some((control, listen)) = &self.standby {
            args.extend([
                "--standby".into(),
                "--control".into(),
                control.into(),
                "--master-listen".into(),
                listen.into(),
            ]);
        }
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

    /// Sends `sig` (SIGSTOP / SIGCONT: a metalogger that hangs, then goes on).
    pub fn signal(&self, sig: i32) {
        if let Some(d) = &self.daemon {
            d.signal(sig);
        }
    }

    /// Waits until it has received an image from the master (it follows from then on).
    pub fn wait_following(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !has_image(&self.dir) {
            self.assert_alive("waiting for the metalogger's first image");
            assert!(
                Instant::now() < deadline,
                "metalogger never got an image:\n{}",
                crate::process::log_tail(&self.log, 40)
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Panics with its log if it has exited.
    pub fn assert_alive(&mut self, while_doing: &str) {
        if let Some(d) = self.daemon.as_mut() {
            d.assert_alive(while_doing);
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
            self.assert_alive("waiting for the metalogger to catch up");
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

/// `elkfs promote ADDR` (with `--status`: only the standby's state).
pub fn promote(control: &str, status_only: bool) -> Restore {
    let mut cmd = Command::new(bin("elkfs"));
    cmd.arg("promote").arg(control);
    if status_only {
        cmd.arg("--status");
    }
    let out = cmd.output().expect("running elkfs promote");
    Restore {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Chunkserver `i` of a failover test, registering with every address of `masters`
/// (comma-separated), data in `<cluster dir>/fcs<i>`. Killed when dropped.
pub fn spawn_chunkserver(cluster: &Cluster, i: usize, masters: &str) -> Daemon {
    let dir = cluster.dir().join(format!("fcs{i}"));
    std::fs::create_dir_all(&dir).expect("creating chunkserver dir");
    let args: Vec<OsString> = vec![
        "--listen".into(),
        format!("{}:{}", cluster.ip(), 9530 + i).into(),
        "--master".into(),
        masters.into(),
        "--data".into(),
        dir.into(),
        "--reserve-bytes".into(),
        (64u64 << 20).to_string().into(),
    ];
    let name = format!("fcs{i}");
    Daemon::spawn(
        &name,
        &bin("elkfs-chunkserver"),
        &args,
        &cluster.log_path(&name),
    )
}

/// A FUSE mount given the master list `masters` (comma-separated) at `<cluster dir>/<name>`.
pub fn mount_masters<'c>(cluster: &'c Cluster, name: &str, masters: &str) -> Mount<'c> {
    let path = cluster.dir().join(name);
    std::fs::create_dir(&path).expect("creating mountpoint");
    let args: Vec<OsString> = vec![
        masters.into(),
        path.clone().into(),
        "-o".into(),
        "allow_other".into(),
    ];
    let daemon = Daemon::spawn(name, &bin("elkfs-mount"), &args, &cluster.log_path(name));
    Mount::wait_ready(cluster, path, daemon)
}
