//! Metadata images on disk: written to a temp file, fsync'd, renamed; older ones pruned
//! together with the changelog files only they needed.

use crate::files;
use crate::frame::{self, FrameReader};
use crate::state::{self, State};
use elkfs_proto::changelog::SnapshotEntry;
use prost::Message;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write an image of `state` into `dir`; returns its path.
pub fn write(dir: &Path, state: &State) -> Result<PathBuf, SnapshotError> {
    let path = files::image_path(dir, state.version);
    let tmp = path.with_extension("elk.tmp");
    match write_to(dir, state, &path, &tmp) {
        Ok(()) => Ok(path),
        Err(e) => {
            // A partial image on a full disk would hold the space the changelog needs.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_to(dir: &Path, state: &State, path: &Path, tmp: &Path) -> Result<(), SnapshotError> {
    let file = File::create(tmp).map_err(io(tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut payload = Vec::new();
    for entry in state::to_image(state) {
        payload.clear();
        entry
            .encode(&mut payload)
            .map_err(|e| SnapshotError::Invalid {
                path: tmp.to_path_buf(),
                why: e.to_string(),
            })?;
        buf.clear();
        frame::encode(state.version, &payload, &mut buf);
        out.write_all(&buf).map_err(io(tmp))?;
    }
    let file = out.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
    file.sync_all().map_err(io(tmp))?;
    std::fs::rename(tmp, path).map_err(io(path))?;
    files::sync_dir(dir).map_err(io(dir))
}

/// Load and fully check one image.
pub fn load(path: &Path) -> Result<State, SnapshotError> {
    let invalid = |why: String| SnapshotError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let file = File::open(path).map_err(io(path))?;
    let mut entries = Vec::new();
    let mut version = None;
    for f in FrameReader::new(BufReader::with_capacity(1 << 20, file)) {
        let f = f.map_err(|e| invalid(e.to_string()))?;
        if *version.get_or_insert(f.version) != f.version {
            return Err(invalid(format!(
                "entry at byte {} has another version",
                f.offset
            )));
        }
        entries.push(
            SnapshotEntry::decode(&f.payload[..])
                .map_err(|e| invalid(format!("entry at byte {}: {e}", f.offset)))?,
        );
    }
    let state = state::from_image(entries).map_err(|e| invalid(e.to_string()))?;
    if Some(state.version) != version {
        return Err(invalid("header version differs from frame versions".into()));
    }
    Ok(state)
}

/// Keep the newest `keep` images; delete older ones and every changelog file whose
/// records are all covered by the oldest image kept.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let images = files::images(dir)?;
    if images.len() <= keep.max(1) {
        return Ok(());
    }
    let (old, kept) = images.split_at(images.len() - keep.max(1));
    for (_, p) in old {
        std::fs::remove_file(p)?;
        info!(path = %p.display(), "old metadata image removed");
    }
    let oldest_kept = kept[0].0;
    let logs = files::changelogs(dir)?;
    for pair in logs.windows(2) {
        let ((_, path), (next_start, _)) = (&pair[0], &pair[1]);
        if *next_start <= oldest_kept + 1 {
            if let Err(e) = std::fs::remove_file(path) {
                warn!(path = %path.display(), error = %e, "could not remove old changelog");
            }
        }
    }
    Ok(())
}
