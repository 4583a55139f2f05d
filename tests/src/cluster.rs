//! A cluster of real daemons on a loopback address of its own.

use crate::admin::admin_status;
use crate::bins::bin;
use crate::mount::Mount;
use crate::process::{log_tail, Daemon};
use elkfs_proto::admin::StatusReply;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const MASTER_PORT: u16 = 9520;
pub const FIRST_CHUNKSERVER_PORT: u16 = 9530;
/// Debug builds on a loaded 2-core CI machine start slowly; a daemon that takes longer than
/// this is stuck, not slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for a clean shutdown (the master writes its metadata image).
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Opts {
    pub chunkservers: usize,
    /// Free space every chunkserver keeps; can be changed per server later with
    /// [`Cluster::set_reserve_bytes`].
    pub reserve_bytes: u64,
    /// Goal of the root directory of the new filesystem (master config `root_goal`).
    pub root_goal: Option<u32>,
    /// Extra `master.toml` lines (e.g. healing settings).
    pub master_config: String,
    /// Extra lines of every chunkserver's config file (e.g. its scrub rate).
    pub chunkserver_config: String,
    /// The address the master and chunkservers bind; default a loopback address of the
    /// cluster's own ([`next_loopback_ip`]).
    pub ip: Option<Ipv4Addr>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            chunkservers: 3,
            // Small, so a test machine with a few GiB free still takes data.
            reserve_bytes: 64 << 20,
            root_goal: None,
            master_config: String::new(),
            chunkserver_config: String::new(),
            ip: None,
        }
    }
}

pub struct Cluster {
    // Declared before `dir` so daemons are gone before their directories are removed.
    state: Mutex<State>,
    dir: tempfile::TempDir,
    ip: Ipv4Addr,
    chunkservers: usize,
}

struct State {
    master: Option<Daemon>,
    chunkservers: Vec<Option<Daemon>>,
    reserve_bytes: Vec<u64>,
    /// Chunkservers that run inside a network namespace: its name and their address there.
    netns: Vec<Option<(String, Ipv4Addr)>>,
    mounts: u32,
}

/// Every cluster binds its own loopback address, 127.<pid bits>.<per-process counter>,
/// so tests in parallel threads and parallel test binaries can all use the standard ports
/// (9520, 9530+i) without colliding and without picking free ports (which would race).
/// Linux routes all of 127.0.0.0/8 to the loopback interface. Two processes whose pids
/// agree in the low 16 bits would share addresses; pids are rarely that far apart in a
/// single test run.
pub fn next_loopback_ip() -> Ipv4Addr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    assert!(n < 254, "more than 254 clusters in one test process");
    let pid = std::process::id();
    Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, n as u8 + 1)
}

impl Cluster {
    /// Starts a master and `opts.chunkservers` chunkservers and waits until every
    /// chunkserver is registered.
    pub fn start(opts: Opts) -> Cluster {
        let cluster = Cluster::create(opts);
        cluster.start_all();
        cluster
    }

    /// Prepares directories and config files without starting anything, so a test can
    /// place data first; [`Cluster::start_all`] starts the daemons.
    pub fn create(opts: Opts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("elkfs-test-")
            .tempdir()
            .expect("creating the cluster's temp dir");
        // tempdir makes 0700; other users must reach the mountpoints inside for the
        // permission tests.
        set_mode(dir.path(), 0o755);
        for sub in ["log", "master"] {
            std::fs::create_dir(dir.path().join(sub)).expect("creating cluster subdir");
        }
        for i in 0..opts.chunkservers {
            std::fs::create_dir(dir.path().join(format!("cs{i}"))).expect("creating cs dir");
        }
        let ip = opts.ip.unwrap_or_else(next_loopback_ip);
        let mut conf = format!(
            "listen = \"{ip}:{MASTER_PORT}\"\ndata_dir = \"{}\"\n",
            dir.path().join("master").display()
        );
        if let Some(goal) = opts.root_goal {
            conf.push_str(&format!("root_goal = {goal}\n"));
        }
        conf.push_str(&opts.master_config);
        std::fs::write(dir.path().join("master.toml"), conf).expect("writing master.toml");
        std::fs::write(
            dir.path().join("chunkserver.toml"),
            &opts.chunkserver_config,
        )
        .expect("writing chunkserver.toml");
        Cluster {
            state: Mutex::new(State {
                master: None,
                chunkservers: (0..opts.chunkservers).map(|_| None).collect(),
                reserve_bytes: vec![opts.reserve_bytes; opts.chunkservers],
                netns: vec![None; opts.chunkservers],
                mounts: 0,
            }),
            dir,
            ip,
            chunkservers: opts.chunkservers,
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn master_addr(&self) -> String {
        format!("{}:{MASTER_PORT}", self.ip)
    }

    pub fn chunkserver_addr(&self, i: usize) -> String {
        let ip = self.state().netns[i]
            .as_ref()
            .map_or(self.ip, |(_, ip)| *ip);
        format!("{ip}:{}", FIRST_CHUNKSERVER_PORT + i as u16)
    }

    /// Chunkserver `i` runs (from its next start) inside network namespace `netns`, where
    /// it binds `ip`; the namespace must reach the cluster's own address.
    pub fn run_chunkserver_in(&self, i: usize, netns: &str, ip: Ipv4Addr) {
        self.state().netns[i] = Some((netns.to_owned(), ip));
    }

    /// The index of the chunkserver registered as `addr`.
    pub fn chunkserver_index(&self, addr: &str) -> Option<usize> {
        (0..self.chunkservers).find(|&i| self.chunkserver_addr(i) == addr)
    }

    pub fn chunkserver_count(&self) -> usize {
        self.chunkservers
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn master_data_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    pub fn chunkserver_data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cs{i}"))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("log").join(format!("{name}.log"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock must not hide the original failure.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts whatever is not running: master, then chunkservers; waits for registration.
    pub fn start_all(&self) {
        if self.state().master.is_none() {
            self.start_master();
        }
        for i in 0..self.chunkservers {
            if self.state().chunkservers[i].is_none() {
                self.spawn_chunkserver(i);
            }
        }
        self.wait_chunkservers(self.chunkservers);
    }

    /// Starts the master and waits until it accepts connections and every running
    /// chunkserver has (re-)registered with it.
    pub fn start_master(&self) {
        let running_chunkservers = {
            let mut st = self.state();
            assert!(st.master.is_none(), "master already running");
            let args: Vec<OsString> = vec![
                "--config".into(),
                self.dir.path().join("master.toml").into(),
            ];
            st.master = Some(Daemon::spawn(
                "master",
                &bin("elkfs-master"),
                &args,
                &self.log_path("master"),
            ));
            st.chunkservers.iter().filter(|c| c.is_some()).count()
        };
        self.wait_master_port();
        self.wait_chunkservers(running_chunkservers);
    }

    /// SIGKILL the master (no clean shutdown, no final image).
    pub fn kill_master(&self) {
        let master = self.state().master.take().expect("master is not running");
        master.kill();
    }

    /// Waits up to `timeout` for the master to exit by itself; returns how it exited.
    pub fn wait_master_exit(&self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let mut st = self.state();
            let master = st.master.as_mut().expect("master is not running");
            if let Some(status) = master.exited() {
                st.master = None;
                return status;
            }
            drop(st);
            assert!(
                Instant::now() < deadline,
                "master still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM the master and wait for it to exit.
    pub fn stop_master(&self) {
        let master = self.state().master.take().expect("master is not running");
        let status = master.terminate(STOP_GRACE);
        assert!(status.success(), "master exited with {status} on SIGTERM");
    }

    /// Starts chunkserver `i` and waits until the master lists it as connected.
    pub fn start_chunkserver(&self, i: usize) {
        self.spawn_chunkserver(i);
        let addr = self.chunkserver_addr(i);
        self.wait_until(&format!("chunkserver {i} to register"), |st| {
            st.servers.iter().any(|s| s.connected && s.addr == addr)
        });
    }

    fn spawn_chunkserver(&self, i: usize) {
        let addr = self.chunkserver_addr(i);
        let mut st = self.state();
        assert!(
            st.chunkservers[i].is_none(),
            "chunkserver {i} already running"
        );
        let mut args: Vec<OsString> = vec![
            "--config".into(),
            self.dir.path().join("chunkserver.toml").into(),
            "--listen".into(),
            addr.into(),
            "--master".into(),
            self.master_addr().into(),
            "--data".into(),
            self.chunkserver_data_dir(i).into(),
            "--reserve-bytes".into(),
            st.reserve_bytes[i].to_string().into(),
        ];
        let mut program = bin("elkfs-chunkserver");
        if let Some((netns, _)) = &st.netns[i] {
            // `ip netns exec` execs the daemon in place: same pid, so kill -9 hits it.
            let mut wrapped: Vec<OsString> =
                vec!["netns".into(), "exec".into(), netns.into(), program.into()];
            wrapped.append(&mut args);
            args = wrapped;
            program = PathBuf::from("ip");
        }
        st.chunkservers[i] = Some(Daemon::spawn(
            &format!("cs{i}"),
            &program,
            &args,
            &self.log_path(&format!("cs{i}")),
        ));
    }

    /// SIGKILL chunkserver `i`.
    pub fn kill_chunkserver(&self, i: usize) {
        let cs = self.state().chunkservers[i]
            .take()
            .expect("chunkserver not running");
        cs.kill();
    }

    /// Send `sig` to chunkserver `i` (SIGSTOP / SIGCONT: a server that hangs and recovers).
    pub fn signal_chunkserver(&self, i: usize, sig: i32) {
        self.state().chunkservers[i]
            .as_ref()
            .expect("chunkserver not running")
            .signal(sig);
    }

    /// SIGTERM chunkserver `i` and wait for it to exit.
    pub fn stop_chunkserver(&self, i: usize) {
        let cs = self.state().chunkservers[i]
            .take()
            .expect("chunkserver not running");
        let status = cs.terminate(STOP_GRACE);
        assert!(
            status.success(),
            "chunkserver {i} exited with {status} on SIGTERM"
        );
    }

    /// Takes effect at the next start of chunkserver `i`.
    pub fn set_reserve_bytes(&self, i: usize, bytes: u64) {
        self.state().reserve_bytes[i] = bytes;
    }

    /// SIGTERM every daemon (chunkservers first, the master last) and check each exits
    /// cleanly. Mounts must be dropped before.
    pub fn stop_all(&self) {
        for i in 0..self.chunkservers {
            if self.state().chunkservers[i].is_some() {
                self.stop_chunkserver(i);
            }
        }
        if self.state().master.is_some() {
            self.stop_master();
        }
    }

    /// Chunk files (`chunk_*.elk`) in chunkserver `i`'s data directory, sorted.
    pub fn chunk_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect_chunk_files(&self.chunkserver_data_dir(i), &mut out);
        out.sort();
        out
    }

    pub fn status(&self) -> anyhow::Result<StatusReply> {
        admin_status(&self.master_addr())
    }

    /// Waits until at least `n` chunkservers are registered and connected.
    pub fn wait_chunkservers(&self, n: usize) {
        self.wait_until(&format!("{n} chunkservers to register"), |st| {
            st.servers.iter().filter(|s| s.connected).count() >= n
        });
    }

    /// Polls Admin.Status until `ready`; panics with the logs on timeout or a dead daemon.
    pub fn wait_until(&self, what: &str, ready: impl Fn(&StatusReply) -> bool) {
        self.wait_for(what, START_TIMEOUT, || {
            self.status().is_ok_and(|st| ready(&st))
        });
    }

    /// Polls `ready` until it holds; panics with the logs after `timeout` (a hang guard,
    /// not a speed requirement) or when a daemon of the cluster dies.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            self.assert_daemons_alive(what);
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status: {:?}\n{}",
                self.status(),
                self.log_tails()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn wait_master_port(&self) {
        let addr = SocketAddr::from((self.ip, MASTER_PORT));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            self.assert_daemons_alive("waiting for the master port");
            assert!(
                Instant::now() < deadline,
                "master never accepted on {addr}\n{}",
                self.log_tails()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Panics (with its log) if a daemon this cluster started has died.
    pub fn assert_daemons_alive(&self, while_doing: &str) {
        let mut st = self.state();
        if let Some(m) = st.master.as_mut() {
            m.assert_alive(while_doing);
        }
        for cs in st.chunkservers.iter_mut().flatten() {
            cs.assert_alive(while_doing);
        }
    }

    /// True while the master process runs (used after feeding it bad input).
    pub fn master_running(&self) -> bool {
        self.state()
            .master
            .as_mut()
            .is_some_and(|m| m.exited().is_none())
    }

    pub fn chunkserver_running(&self, i: usize) -> bool {
        self.state().chunkservers[i]
            .as_mut()
            .is_some_and(|c| c.exited().is_none())
    }

    /// A FUSE mount of this cluster at a new directory, with `allow_other` so the
    /// permission tests' non-root children can use it.
    pub fn mount(&self) -> Mount<'_> {
        self.mount_with(&[])
    }

    /// Like [`Cluster::mount`] with extra `-o` options (e.g. `attr_timeout=0`).
    pub fn mount_with(&self, options: &[&str]) -> Mount<'_> {
        let n = {
            let mut st = self.state();
            st.mounts += 1;
            st.mounts
        };
        let path = self.dir.path().join(format!("mnt{n}"));
        std::fs::create_dir(&path).expect("creating mountpoint");
        let mut opts = vec!["allow_other"];
        opts.extend_from_slice(options);
        let args: Vec<OsString> = vec![
            self.master_addr().into(),
            path.clone().into(),
            "-o".into(),
            opts.join(",").into(),
        ];
        let name = format!("mount{n}");
        let daemon = Daemon::spawn(&name, &bin("elkfs-mount"), &args, &self.log_path(&name));
        Mount::wait_ready(self, path, daemon)
    }

    /// The last lines of every daemon log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("log"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.sort();
        logs.iter()
            .map(|p| format!("===== {} =====\n{}\n", p.display(), log_tail(p, 40)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Mount<'_> borrows the cluster, so every mount is already gone; the daemons are
        // SIGKILLed by their own Drop. Print the logs when a test is failing so CI output
        // explains it (the test harness shows a failing test's captured output).
        if std::thread::panicking() {
            eprintln!(
                "elkfs cluster {} ({}) logs:\n{}",
                self.ip,
                self.dir.path().display(),
                self.log_tails()
            );
        }
        let mut st = self.state();
        st.chunkservers.clear();
        st.master = None;
    }
}

fn collect_chunk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            // Skip the sled index; chunks live in the 00..FF subdirectories.
            if name.len() == 2 {
                collect_chunk_files(&path, out);
            }
        } else if name.starts_with("chunk_") && name.ends_with(".elk") {
            out.push(path);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
