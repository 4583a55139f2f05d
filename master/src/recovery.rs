//! Start-up: newest valid image + every later changelog record, stopping cleanly at the
//! first torn or corrupt record or at a gap in versions.

use crate::files;
use crate::frame::FrameReader;
use crate::snapshot;
use crate::state::{State, Ts};
use elkfs_proto::changelog::Record;
use prost::Message;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("no valid metadata image in {0} although files are there; run elkfs-metarestore")]
    NoImage(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Records between progress lines during a long replay.
const PROGRESS_EVERY: u64 = 1_000_000;

/// Where replay stopped before the end of the available records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub file: PathBuf,
    /// Bytes of `file` that were good.
    pub offset: u64,
    pub reason: String,
    /// Later changelog files that were not used.
    pub skipped_files: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct Recovered {
    pub state: State,
    pub image: Option<PathBuf>,
    pub image_version: u64,
    pub records: u64,
    pub stop: Option<Stop>,
}

/// What to do with the files after a stop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Leave every file as it is (metarestore, inspection).
    ReadOnly,
    /// Set aside what could not be used (copy to `damaged/`, cut the bad file at its last
    /// good record, move later files there) so new records never follow a bad one.
    Repair,
}

/// Load the newest valid image in `dir` and replay later records. A directory with no
/// metadata files at all is a new filesystem.
pub fn recover(dir: &Path, root_goal: u32, mode: Mode) -> Result<Recovered, RecoveryError> {
    let images = files::images(dir)?;
    let logs = files::changelogs(dir)?;
    let mut loaded = None;
    for (_, path) in images.iter().rev() {
        match snapshot::load(path) {
            Ok(s) => {
                loaded = Some((s, path.clone()));
                break;
            }
            Err(e) => warn!(error = %e, "metadata image unusable, trying an older one"),
        }
    }
    let (mut state, image) = match loaded {
        Some((s, p)) => (s, Some(p)),
        None if images.is_empty() && logs.is_empty() => {
            info!(dir = %dir.display(), "no metadata: creating a new filesystem");
            let now = elkfs_proto::time::now();
            (State::new(root_goal, Ts::from(&now)), None)
        }
        None => return Err(RecoveryError::NoImage(dir.to_path_buf())),
    };
    let image_version = state.version;
    let mut records = 0;
    let mut stop = None;
    'files: for (i, (start, path)) in logs.iter().enumerate() {
        // Files entirely at or below the image version hold nothing new.
        if let Some((next_start, _)) = logs.get(i + 1) {
            if *next_start <= state.version + 1 {
                continue;
            }
        }
        if *start > state.version + 1 {
            stop = Some(Stop {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "gap: file starts at version {start}, metadata is at {}",
                    state.version
                ),
                skipped_files: Vec::new(),
            });
            break;
        }
        let file = File::open(path)?;
        for frame in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
            let bad = |offset: u64, reason: String| Stop {
                file: path.clone(),
                offset,
                reason,
                skipped_files: Vec::new(),
            };
            let f = match frame {
                Ok(f) => f,
                Err(e) => {
                    stop = Some(bad(e.offset(), e.to_string()));
                    break 'files;
                }
            };
            if f.version <= state.version {
                continue;
            }
            let applied = Record::decode(&f.payload[..])
                .map_err(|e| format!("undecodable record {}: {e}", f.version))
                .and_then(|rec| {
                    state
                        .apply(f.version, &rec)
                        .map_err(|e| format!("record {} does not apply: {e}", f.version))
                });
            if let Err(reason) = applied {
                stop = Some(bad(f.offset, reason));
                break 'files;
            }
            records += 1;
            if records % PROGRESS_EVERY == 0 {
                info!(records, version = state.version, file = %path.display(), "replaying changelog");
            }
        }
    }
    if let Some(s) = &mut stop {
        s.skipped_files = logs
            .iter()
            .map(|(_, p)| p)
            .skip_while(|p| **p != s.file)
            .skip(1)
            .cloned()
            .collect();
        warn!(
            file = %s.file.display(),
            offset = s.offset,
            reason = %s.reason,
            skipped = s.skipped_files.len(),
            version = state.version,
            "changelog replay stopped early; everything before it is kept"
        );
        if mode == Mode::Repair {
            set_aside(dir, s)?;
        }
    }
    info!(
        version = state.version,
        image_version,
        records,
        inodes = state.inodes.len(),
        chunks = state.chunks.len(),
        "metadata loaded"
    );
    Ok(Recovered {
        state,
        image,
        image_version,
        records,
        stop,
    })
}

fn set_aside(dir: &Path, stop: &Stop) -> std::io::Result<()> {
    let damaged = dir.join("damaged");
    std::fs::create_dir_all(&damaged)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = |p: &Path| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        damaged.join(format!("{name}.{stamp}"))
    };
    std::fs::copy(&stop.file, aside(&stop.file))?;
    let f = std::fs::OpenOptions::new().write(true).open(&stop.file)?;
    f.set_len(stop.offset)?;
    f.sync_all()?;
    for p in &stop.skipped_files {
        std::fs::rename(p, aside(p))?;
    }
    files::sync_dir(dir)?;
    warn!(
        to = %damaged.display(),
        "unusable changelog data moved aside"
    );
    Ok(())
}
