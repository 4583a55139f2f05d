//! Metalogger configuration: TOML file, overridden by flags; every key has a default.

use clap::Parser;
use elkfs_proto::limits::DEFAULT_MASTER_PORT;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The master's gRPC address, or several separated by commas: the one that accepts
    /// the feed is followed, and after a failure whichever answers next. In the file also
    /// a list: `master = ["a:9520", "b:9520"]`.
    #[serde(deserialize_with = "address_list")]
    pub master: String,
    /// Where the image and changelog copies are kept.
    pub data_dir: PathBuf,
    /// Name in the master's logs and acks; empty: `<hostname>:<data_dir>`.
    pub name: String,
    /// Seconds between fresh images fetched from the master.
    pub image_interval_secs: u64,
    /// Images kept (older ones and the changelogs only they need are removed).
    pub images_keep: usize,
    /// Also keep the metadata in memory and accept promotion to master.
    pub standby: bool,
    /// A standby's address as master, once promoted.
    pub master_listen: String,
    /// A standby's control service (`elkfs promote`, status).
    pub control: String,
    /// A standby's master settings once promoted (`listen` and `data_dir` are replaced by
    /// `master_listen` and this metalogger's data directory); none: the defaults.
    pub master_config: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            master: format!("127.0.0.1:{DEFAULT_MASTER_PORT}"),
            data_dir: PathBuf::from("/var/lib/elkfs/metalogger"),
            name: String::new(),
            image_interval_secs: 3600,
            images_keep: 3,
            standby: false,
            master_listen: format!("127.0.0.1:{DEFAULT_MASTER_PORT}"),
            control: format!("127.0.0.1:{DEFAULT_CONTROL_PORT}"),
            master_config: None,
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
    /// Keep the metadata in memory too, ready for `elkfs promote`.
    #[arg(long)]
    pub standby: bool,
    #[arg(long)]
    pub master_listen: Option<String>,
    #[arg(long)]
    pub control: Option<String>,
    #[arg(long)]
    pub master_config: Option<PathBuf>,
}

/// Default port of a standby's control service.
pub const DEFAULT_CONTROL_PORT: u16 = 9521;

impl Config {
    /// The master addresses to follow, in order of preference.
    pub fn masters(&self) -> Vec<String> {
        elkfs_proto::transport::address_list(&self.master)
    }

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
        c.standby |= args.standby;
        if let Some(v) = args.master_listen {
            c.master_listen = v;
        }
        if let Some(v) = args.control {
            c.control = v;
        }
        if let Some(v) = args.master_config {
            c.master_config = Some(v);
        }
        if c.masters().is_empty() {
            anyhow::bail!("no master address given");
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

/// `master` in the file: one string (possibly comma-separated) or a list of strings.
fn address_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s,
        List::Many(v) => v.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_lists() {
        let args = Args::parse_from(["m", "--master", "x:1,y:2", "--standby"]);
        let c = Config::load(args).expect("config");
        assert_eq!(c.masters(), vec!["x:1", "y:2"]);
        assert!(c.standby);
        assert!(Config::load(Args::parse_from(["m", "--master", ","])).is_err());
        let file: Config = toml::from_str("master = [\"p:1\", \"q:2\"]").expect("toml");
        assert_eq!(file.masters(), vec!["p:1", "q:2"]);
    }
}
