//! The changelog writer: one thread appends framed records and makes them durable with
//! group commit (every record that arrived while the previous fdatasync ran is written and
//! synced together), then publishes the durable version so waiting requests can answer.

use crate::files;
use crate::frame;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Every record up to this version is on disk.
    pub version: u64,
    /// Writing failed: nothing after `version` will ever become durable.
    pub failed: bool,
}

enum Msg {
    Record(u64, Vec<u8>),
    /// Close the current file and continue in a new one starting at this version.
    Rotate(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("changelog write failed; metadata after version {0} is not durable")]
pub struct NotDurable(pub u64);

/// Handle to the writer thread. Submitting is cheap and never blocks.
pub struct Changelog {
    tx: mpsc::Sender<Msg>,
    durable: watch::Receiver<Durable>,
}

impl Changelog {
    /// Start writing at version `next` in a new file in `dir`.
    pub fn start(dir: &Path, next: u64) -> std::io::Result<Changelog> {
        let file = create(dir, next)?;
        let (tx, rx) = mpsc::channel();
        let (dtx, drx) = watch::channel(Durable {
            version: next - 1,
            failed: false,
        });
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("changelog".into())
            .spawn(move || writer(dir, file, rx, dtx))?;
        Ok(Changelog { tx, durable: drx })
    }

    /// Queue the record with `version` (callers submit in version order).
    pub fn submit(&self, version: u64, payload: &[u8]) {
        let mut buf = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode(version, payload, &mut buf);
        // A send error means the writer died; `wait` reports it through `failed`.
        let _ = self.tx.send(Msg::Record(version, buf));
    }

    /// Continue in a new file from `next` on (after a snapshot at `next - 1`).
    pub fn rotate(&self, next: u64) {
        let _ = self.tx.send(Msg::Rotate(next));
    }

    /// Wait until `version` is durable.
    pub async fn wait(&self, version: u64) -> Result<(), NotDurable> {
        let mut rx = self.durable.clone();
        let d = rx
            .wait_for(|d| d.failed || d.version >= version)
            .await
            .map(|d| *d)
            .unwrap_or(Durable {
                version: 0,
                failed: true,
            });
        if d.version >= version {
            Ok(())
        } else {
            Err(NotDurable(d.version))
        }
    }

    pub fn durable(&self) -> Durable {
        *self.durable.borrow()
    }
}

fn create(dir: &Path, start: u64) -> std::io::Result<File> {
    let path = files::changelog_path(dir, start);
    let f = OpenOptions::new().create(true).append(true).open(&path)?;
    files::sync_dir(dir)?;
    info!(path = %path.display(), "changelog file opened");
    Ok(f)
}

fn writer(dir: PathBuf, mut file: File, rx: mpsc::Receiver<Msg>, durable: watch::Sender<Durable>) {
    let mut last = durable.borrow().version;
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(msg) = next {
            match msg {
                Msg::Record(v, bytes) => {
                    buf.extend_from_slice(&bytes);
                    last = v;
                }
                Msg::Rotate(start) => {
                    result = flush(&mut file, &mut buf).and_then(|_| {
                        file = create(&dir, start)?;
                        Ok(())
                    });
                    if result.is_err() {
                        break;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let result = result.and_then(|_| flush(&mut file, &mut buf));
        match result {
            Ok(()) => {
                durable.send_replace(Durable {
                    version: last,
                    failed: false,
                });
            }
            Err(e) => {
                error!(error = %e, "changelog write failed: refusing further metadata changes");
                durable.send_modify(|d| d.failed = true);
                return;
            }
        }
    }
}

fn flush(file: &mut File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    file.write_all(buf)?;
    file.sync_data()?;
    buf.clear();
    Ok(())
}
