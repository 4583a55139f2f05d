//! The changelog writer: one thread appends framed records and makes them durable with
//! group commit (every record that arrived while the previous fdatasync ran is written and
//! synced together), then publishes the durable version so waiting requests can answer.
//!
//! Records nobody waits for (a metalogger's, when its master does not wait for acks) may
//! gather for up to [`RELAXED_SYNC`] per fdatasync: on a host shared with a master, one
//! fsync per record would queue behind the master's own in the disk's journal.

use crate::files;
use crate::frame;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Every record up to this version is on disk.
    pub version: u64,
    /// Writing failed: nothing after `version` will ever become durable.
    pub failed: bool,
}

/// Longest a relaxed record waits for its fdatasync.
const RELAXED_SYNC: Duration = Duration::from_millis(10);

enum Msg {
    /// Version, framed bytes, and whether someone waits for it to be durable.
    Record(u64, Vec<u8>, bool),
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

    /// Queue the record with `version` (callers submit in version order) and make it
    /// durable as soon as possible.
    pub fn submit(&self, version: u64, payload: &[u8]) {
        self.queue(version, payload, true);
    }

    /// Queue the record with `version`; it may wait up to [`RELAXED_SYNC`] to be synced
    /// together with later ones.
    pub fn submit_relaxed(&self, version: u64, payload: &[u8]) {
        self.queue(version, payload, false);
    }

    fn queue(&self, version: u64, payload: &[u8], urgent: bool) {
        let mut buf = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode(version, payload, &mut buf);
        // A send error means the writer died; `wait` reports it through `failed`.
        let _ = self.tx.send(Msg::Record(version, buf, urgent));
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

/// The file being written and what is waiting for the next fdatasync.
struct Writer {
    dir: PathBuf,
    file: File,
    buf: Vec<u8>,
    last: u64,
    urgent: bool,
}

impl Writer {
    fn take(&mut self, msg: Msg) -> std::io::Result<()> {
        match msg {
            Msg::Record(v, bytes, urgent) => {
                self.buf.extend_from_slice(&bytes);
                self.last = v;
                self.urgent |= urgent;
            }
            Msg::Rotate(start) => {
                flush(&mut self.file, &mut self.buf)?;
                self.file = create(&self.dir, start)?;
            }
        }
        Ok(())
    }
}

fn writer(dir: PathBuf, file: File, rx: mpsc::Receiver<Msg>, durable: watch::Sender<Durable>) {
    let mut w = Writer {
        dir,
        file,
        buf: Vec::new(),
        last: durable.borrow().version,
        urgent: false,
    };
    let mut synced = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut result = w.take(first);
        while result.is_ok() {
            match rx.try_recv() {
                Ok(msg) => result = w.take(msg),
                Err(_) => break,
            }
        }
        let relaxed_until = synced + RELAXED_SYNC;
        while result.is_ok() && !w.urgent {
            let left = relaxed_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(msg) => result = w.take(msg),
                Err(_) => break,
            }
        }
        w.urgent = false;
        let result = result.and_then(|_| flush(&mut w.file, &mut w.buf));
        synced = Instant::now();
        match result {
            Ok(()) => {
                durable.send_replace(Durable {
                    version: w.last,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameReader;

    fn versions_on_disk(dir: &Path) -> Vec<u64> {
        let file = File::open(files::changelog_path(dir, 1)).expect("changelog file");
        FrameReader::new(std::io::BufReader::new(file))
            .map(|f| f.expect("intact frame").version)
            .collect()
    }

    #[tokio::test]
    async fn relaxed_and_urgent_records_all_become_durable_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Changelog::start(dir.path(), 1).expect("start");
        log.submit_relaxed(1, b"a");
        log.submit_relaxed(2, b"b");
        log.wait(2).await.expect("relaxed records synced");
        log.submit_relaxed(3, b"c");
        log.submit(4, b"d");
        log.wait(4).await.expect("urgent record synced");
        assert_eq!(log.durable().version, 4);
        assert_eq!(versions_on_disk(dir.path()), vec![1, 2, 3, 4]);
    }
}
