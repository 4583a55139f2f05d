//! Command line and TOML config (docs/architecture.md): flags override the file, every key
//! has a default.

use clap::Parser;
use elkfs_proto::transport::address_list;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9530";
pub const DEFAULT_MASTER: &str = "127.0.0.1:9520";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/elkfs/chunks";
pub const DEFAULT_RESERVE_BYTES: u64 = 256 << 20;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 1;
pub const DEFAULT_MAX_REPLICATIONS: usize = 2;
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 16 << 20;
pub const DEFAULT_SCRUB_PAUSE_SECS: u64 = 3600;

#[derive(Debug, Parser)]
#[command(name = "elkfs-chunkserver", version, about = "elkfs chunkserver")]
pub struct Args {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve on; also the address registered with the master.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Master address (host:port), or several separated by commas (active master and
    /// standbys: the one that answers is used).
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    pub master: Option<String>,
    /// A data directory (disk); repeat for several.
    #[arg(long = "data", value_name = "DIR")]
    pub data: Vec<PathBuf>,
    /// Free space below which a disk takes no new data.
    #[arg(long, value_name = "N")]
    pub reserve_bytes: Option<u64>,
    /// Bytes per second the background scrub reads (0: no scrub).
    #[arg(long, value_name = "N")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// Seconds between two scrub passes.
    #[arg(long, value_name = "SECS")]
    pub scrub_pause_secs: Option<u64>,
}

/// `master` in the file: "a:9520", "a:9520,b:9520" or ["a:9520", "b:9520"].
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Masters {
    One(String),
    Many(Vec<String>),
}

/// The file's keys; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    master: Option<Masters>,
    data_dirs: Option<Vec<PathBuf>>,
    reserve_bytes: Option<u64>,
    heartbeat_secs: Option<u64>,
    max_replications: Option<usize>,
    scrub_bytes_per_sec: Option<u64>,
    scrub_pause_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: String,
    /// Every master address, in the order they are tried.
    pub masters: Vec<String>,
    pub data_dirs: Vec<PathBuf>,
    pub reserve_bytes: u64,
    pub heartbeat_secs: u64,
    /// Replicate orders that may run at once; more fail with Unavailable.
    pub max_replications: usize,
    pub scrub_bytes_per_sec: u64,
    pub scrub_pause_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Config::merge(args, file)
    }

    fn merge(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
        let data_dirs = if !args.data.is_empty() {
            args.data
        } else {
            file.data_dirs
                .unwrap_or_else(|| vec![PathBuf::from(DEFAULT_DATA_DIR)])
        };
        let cfg = Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            masters: match (&args.master, &file.master) {
                (Some(m), _) | (None, Some(Masters::One(m))) => address_list(m),
                (None, Some(Masters::Many(v))) => v.iter().flat_map(|m| address_list(m)).collect(),
                (None, None) => vec![DEFAULT_MASTER.to_owned()],
            },
            data_dirs,
            reserve_bytes: args
                .reserve_bytes
                .or(file.reserve_bytes)
                .unwrap_or(DEFAULT_RESERVE_BYTES),
            heartbeat_secs: file.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS),
            max_replications: file.max_replications.unwrap_or(DEFAULT_MAX_REPLICATIONS),
            scrub_bytes_per_sec: args
                .scrub_bytes_per_sec
                .or(file.scrub_bytes_per_sec)
                .unwrap_or(DEFAULT_SCRUB_BYTES_PER_SEC),
            scrub_pause_secs: args
                .scrub_pause_secs
                .or(file.scrub_pause_secs)
                .unwrap_or(DEFAULT_SCRUB_PAUSE_SECS),
        };
        if cfg.masters.is_empty() {
            return Err(ConfigError::Invalid("no master address".into()));
        }
        if cfg.max_replications == 0 {
            return Err(ConfigError::Invalid(
                "max_replications must be at least 1".into(),
            ));
        }
        if cfg.data_dirs.is_empty() {
            return Err(ConfigError::Invalid("data_dirs is empty".into()));
        }
        if cfg.heartbeat_secs == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_secs must be at least 1".into(),
            ));
        }
        Ok(cfg)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_flag_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cs.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9531\"\nmaster = \"10.0.0.1:9520\"\ndata_dirs = [\"/a\", \"/b\"]\nheartbeat_secs = 3\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "elkfs-chunkserver",
            "--config",
            f.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9999",
            "--reserve-bytes",
            "5",
        ]);
        let c = Config::load(args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9999");
        assert_eq!(c.masters, vec!["10.0.0.1:9520"]);
        assert_eq!(c.data_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.reserve_bytes, 5);
        assert_eq!(c.heartbeat_secs, 3);

        let args = Args::parse_from(["elkfs-chunkserver", "--data", "/x", "--data", "/y"]);
        let c = Config::load(args).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.masters, vec![DEFAULT_MASTER]);
        assert_eq!(c.max_replications, DEFAULT_MAX_REPLICATIONS);
        assert_eq!(c.scrub_bytes_per_sec, DEFAULT_SCRUB_BYTES_PER_SEC);
        assert_eq!(c.scrub_pause_secs, DEFAULT_SCRUB_PAUSE_SECS);
        assert_eq!(c.reserve_bytes, DEFAULT_RESERVE_BYTES);
        assert_eq!(c.heartbeat_secs, 1);
        assert_eq!(c.data_dirs, vec![PathBuf::from("/x"), PathBuf::from("/y")]);

        for bad in [
            "bogus_key = 1",
            "heartbeat_secs = 0",
            "data_dirs = []",
            "master = []",
            "master = \" , \"",
            "max_replications = 0",
        ] {
            std::fs::write(&f, bad).unwrap();
            let args = Args::parse_from(["elkfs-chunkserver", "--config", f.to_str().unwrap()]);
            assert!(Config::load(args).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_masters_and_scrub_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cs.toml");
        let load = |text: &str, flags: &[&str]| {
            std::fs::write(&f, text).unwrap();
            let mut argv = vec!["elkfs-chunkserver", "--config", f.to_str().unwrap()];
            argv.extend_from_slice(flags);
            Config::load(Args::parse_from(argv)).unwrap()
        };
        let both = vec!["a:9520".to_owned(), "b:9520".to_owned()];
        assert_eq!(load("master = \"a:9520, b:9520\"", &[]).masters, both);
        assert_eq!(load("master = [\"a:9520\", \"b:9520\"]", &[]).masters, both);
        let c = load(
            "master = \"x:1\"\nmax_replications = 5\nscrub_bytes_per_sec = 0\nscrub_pause_secs = 9",
            &["--master", "a:9520,b:9520", "--scrub-pause-secs", "1"],
        );
        assert_eq!(c.masters, both);
        assert_eq!(c.max_replications, 5);
        assert_eq!(c.scrub_bytes_per_sec, 0);
        assert_eq!(c.scrub_pause_secs, 1);
    }
}
