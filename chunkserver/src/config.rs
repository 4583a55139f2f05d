//! Command line and TOML config (docs/architecture.md): flags override the file, every key
//! has a default.

use clap::Parser;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9530";
pub const DEFAULT_MASTER: &str = "127.0.0.1:9520";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/elkfs/chunks";
pub const DEFAULT_RESERVE_BYTES: u64 = 256 << 20;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 1;

#[derive(Debug, Parser)]
#[command(name = "elkfs-chunkserver", version, about = "elkfs chunkserver")]
pub struct Args {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve on; also the address registered with the master.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Master address (host:port).
    #[arg(long, value_name = "ADDR")]
    pub master: Option<String>,
    /// A data directory (disk); repeat for several.
    #[arg(long = "data", value_name = "DIR")]
    pub data: Vec<PathBuf>,
    /// Free space below which a disk takes no new data.
    #[arg(long, value_name = "N")]
    pub reserve_bytes: Option<u64>,
}

/// The file's keys; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    master: Option<String>,
    data_dirs: Option<Vec<PathBuf>>,
    reserve_bytes: Option<u64>,
    heartbeat_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: String,
    pub master: String,
    pub data_dirs: Vec<PathBuf>,
    pub reserve_bytes: u64,
    pub heartbeat_secs: u64,
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
            master: args
                .master
                .or(file.master)
                .unwrap_or_else(|| DEFAULT_MASTER.to_owned()),
            data_dirs,
            reserve_bytes: args
                .reserve_bytes
                .or(file.reserve_bytes)
                .unwrap_or(DEFAULT_RESERVE_BYTES),
            heartbeat_secs: file.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS),
        };
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
        assert_eq!(c.master, "10.0.0.1:9520");
        assert_eq!(c.data_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.reserve_bytes, 5);
        assert_eq!(c.heartbeat_secs, 3);

        let args = Args::parse_from(["elkfs-chunkserver", "--data", "/x", "--data", "/y"]);
        let c = Config::load(args).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.master, DEFAULT_MASTER);
        assert_eq!(c.reserve_bytes, DEFAULT_RESERVE_BYTES);
        assert_eq!(c.heartbeat_secs, 1);
        assert_eq!(c.data_dirs, vec![PathBuf::from("/x"), PathBuf::from("/y")]);

        for bad in ["bogus_key = 1", "heartbeat_secs = 0", "data_dirs = []"] {
            std::fs::write(&f, bad).unwrap();
            let args = Args::parse_from(["elkfs-chunkserver", "--config", f.to_str().unwrap()]);
            assert!(Config::load(args).is_err(), "{bad}");
        }
    }
}
