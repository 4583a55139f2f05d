//! Master configuration: TOML file, overridden by flags; every key has a default.

use clap::Parser;
use elkfs_proto::limits::{DEFAULT_GOAL, DEFAULT_MASTER_PORT};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC address for mounts, chunkservers and the admin tool.
    pub listen: String,
    /// Snapshots and changelogs.
    pub data_dir: PathBuf,
    /// Seconds between periodic metadata images.
    pub snapshot_interval_secs: u64,
    /// Images kept (older ones and the changelogs only they need are removed).
    pub snapshots_keep: usize,
    /// Goal of the root directory of a new filesystem.
    pub root_goal: u32,
    /// A chunkserver silent this long is treated as gone.
    pub chunkserver_timeout_secs: u64,
    /// Metaloggers that must have a record on disk before the client is answered
    /// (0: answer once it is durable on the master alone).
    pub sync_metaloggers: usize,
    /// How long a request waits for those metaloggers before it fails with EIO.
    pub sync_metaloggers_timeout_ms: u64,
    /// A chunkserver gone this long (after `chunkserver_timeout_secs`) has its chunks
    /// re-replicated elsewhere; not while it is in maintenance.
    pub replication_grace_secs: u64,
    /// Replications in flight per chunkserver, as source and (separately) as destination.
    pub replications_per_server: usize,
    /// Replications in flight in the whole cluster.
    pub replications_total: usize,
    /// How long a chunkserver may take to copy one chunk before the order counts as failed.
    pub replication_timeout_secs: u64,
    /// Disk usage spread (percentage points between the fullest and the emptiest
    /// connected server) above which chunks are moved; 100 turns rebalancing off.
    pub rebalance_threshold_pct: u32,
    /// Chunks moved at a time while rebalancing.
    pub rebalance_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: format!("127.0.0.1:{DEFAULT_MASTER_PORT}"),
            data_dir: PathBuf::from("/var/lib/elkfs/master"),
            snapshot_interval_secs: 3600,
            snapshots_keep: 3,
            root_goal: DEFAULT_GOAL,
            chunkserver_timeout_secs: 10,
            sync_metaloggers: 0,
            sync_metaloggers_timeout_ms: 5000,
            replication_grace_secs: 60,
            replications_per_server: 2,
            replications_total: 64,
            replication_timeout_secs: 120,
            rebalance_threshold_pct: 10,
            rebalance_batch: 4,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "elkfs-master", version, about = "elkfs metadata server")]
pub struct Args {
    /// TOML config file (keys as in deploy/master.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub snapshot_interval_secs: Option<u64>,
    #[arg(long)]
    pub snapshots_keep: Option<usize>,
    #[arg(long)]
    pub root_goal: Option<u32>,
    #[arg(long)]
    pub chunkserver_timeout_secs: Option<u64>,
    #[arg(long)]
    pub sync_metaloggers: Option<usize>,
    #[arg(long)]
    pub sync_metaloggers_timeout_ms: Option<u64>,
    #[arg(long)]
    pub replication_grace_secs: Option<u64>,
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.snapshot_interval_secs {
            c.snapshot_interval_secs = v;
        }
        if let Some(v) = self.snapshots_keep {
            c.snapshots_keep = v;
        }
        if let Some(v) = self.root_goal {
            c.root_goal = v;
        }
        if let Some(v) = self.chunkserver_timeout_secs {
            c.chunkserver_timeout_secs = v;
        }
        if let Some(v) = self.sync_metaloggers {
            c.sync_metaloggers = v;
        }
        if let Some(v) = self.sync_metaloggers_timeout_ms {
            c.sync_metaloggers_timeout_ms = v;
        }
        if let Some(v) = self.replication_grace_secs {
            c.replication_grace_secs = v;
        }
        Ok(c)
    }
}
