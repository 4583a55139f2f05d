//! Metalogger configuration: TOML file, overridden by flags; every key has a default.

use clap::Parser;
use elkfs_proto::limits::DEFAULT_MASTER_PORT;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The master's gRPC address.
    pub master: String,
    /// Where the image and changelog copies are kept.
    pub data_dir: PathBuf,
    /// Name in the master's logs and acks; empty: `<hostname>:<data_dir>`.
    pub name: String,
    /// Seconds between fresh images fetched from the master.
    pub image_interval_secs: u64,
    /// Images kept (older ones and the changelogs only they need are removed).
    pub images_keep: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            master: format!("127.0.0.1:{DEFAULT_MASTER_PORT}"),
            data_dir: PathBuf::from("/var/lib/elkfs/metalogger"),
            name: String::new(),
            image_interval_secs: 3600,
            images_keep: 3,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "elkfs-metalogger",
    version,
    about = "Keeps live copies of an elkfs master's metadata"
)]
pub struct Args {
    /// TOML config file (keys as below, `data_dir` for --data).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub master: Option<String>,
    #[arg(long = "data")]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub image_interval_secs: Option<u64>,
    #[arg(long)]
    pub images_keep: Option<usize>,
}

impl Config {
    pub fn load(args: Args) -> anyhow::Result<Config> {
        let mut c = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = args.master {
            c.master = v;
        }
        if let Some(v) = args.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = args.name {
            c.name = v;
        }
        if let Some(v) = args.image_interval_secs {
            c.image_interval_secs = v;
        }
        if let Some(v) = args.images_keep {
            c.images_keep = v;
        }
        if c.name.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            c.name = format!("{host}:{}", c.data_dir.display());
        }
        Ok(c)
    }
}
