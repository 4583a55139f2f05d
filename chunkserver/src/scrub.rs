//! Scrub: re-reads every chunk in the background at a bounded rate, checks every block
//! against its CRC and reports damaged copies to the master, so rot in data nobody reads is
//! found and repaired. A pass walks the chunks held when it starts (chunks changed or
//! deleted meanwhile are skipped); after a pass it pauses, then starts over.

use crate::master_link::{note_damage, DamageSender};
use crate::service::{blocking, hex};
use crate::store::Store;
use elkfs_proto::limits::BLOCK_SIZE;
use elkfs_proto::FsError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Bytes read per step; the rate is enforced between steps.
const STEP: u64 = 1 << 20;
/// What each chunk counts against the rate at least: opening and checking a small chunk
/// costs about as much as reading a block, and a pass over many small chunks must not run
/// flat out on the chunkserver's CPU.
const MIN_CHARGE: u64 = BLOCK_SIZE;

pub struct Scrubber {
    pub store: Arc<Store>,
    pub damage: DamageSender,
    /// 0: no scrubbing.
    pub bytes_per_sec: u64,
    /// Between the end of a pass and the start of the next.
    pub pause: Duration,
}

#[derive(Debug, Default)]
struct Pass {
    chunks: u64,
    bytes: u64,
    damaged: u64,
    /// What the pass counts against the rate: `bytes`, with small chunks rounded up.
    charged: u64,
}

impl Scrubber {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.bytes_per_sec == 0 {
            tracing::info!("scrub disabled");
            return;
        }
        loop {
            let started = Instant::now();
            let pass = tokio::select! {
                p = self.pass().instrument(tracing::info_span!("scrub")) => p,
                _ = stop.changed() => return,
            };
            tracing::info!(
                chunks = pass.chunks,
                bytes = pass.bytes,
                damaged = pass.damaged,
                seconds = started.elapsed().as_secs_f64(),
                "scrub pass finished"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn pass(&self) -> Pass {
        let store = self.store.clone();
        let chunks = blocking(move || Ok(store.chunk_list()))
            .await
            .unwrap_or_default();
        let started = Instant::now();
        let mut pass = Pass::default();
        for c in chunks {
            match self.chunk(c.chunk_id, c.version, started, &mut pass).await {
                Ok(()) => pass.chunks += 1,
                // Deleted or changed since the pass began: nothing to check.
                Err(FsError::NotFound) | Err(FsError::Stale(_)) => {}
                Err(e @ FsError::Damaged(_)) => {
                    note_damage(&self.damage, &e, c.chunk_id, c.version);
                    pass.chunks += 1;
                    pass.damaged += 1;
                }
                Err(e) => {
                    tracing::warn!(chunk = %hex(c.chunk_id), version = c.version, error = %e, "scrub cannot read chunk")
                }
            }
        }
        pass
    }

    /// Reads one chunk whole, pacing the pass to `bytes_per_sec`.
    async fn chunk(
        &self,
        id: u64,
        version: u32,
        started: Instant,
        pass: &mut Pass,
    ) -> Result<(), FsError> {
        let store = self.store.clone();
        let reader = Arc::new(
            blocking(move || {
                let r = store.open_reader(id, version)?;
                // Check what is on the disk, not what is cached.
                r.drop_cache();
                Ok(r)
            })
            .await?,
        );
        let mut offset = 0;
        while offset < reader.length() {
            let (store, r) = (self.store.clone(), reader.clone());
            let (data, _) = blocking(move || store.read_piece(&r, offset, STEP)).await?;
            offset += data.len() as u64;
            pass.bytes += data.len() as u64;
            pass.charged += data.len() as u64;
            tokio::time::sleep(pace(pass.charged, self.bytes_per_sec, started.elapsed())).await;
        }
        pass.charged += MIN_CHARGE.saturating_sub(reader.length());
        tokio::time::sleep(pace(pass.charged, self.bytes_per_sec, started.elapsed())).await;
        let r = reader.clone();
        blocking(move || {
            r.drop_cache();
            Ok(())
        })
        .await
    }
}

/// How long to wait so that `bytes` read since the start of a pass took at least
/// `bytes / rate` seconds.
fn pace(bytes: u64, rate: u64, elapsed: Duration) -> Duration {
    Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64).saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_holds_the_rate() {
        let mib = 1 << 20;
        assert_eq!(
            pace(16 * mib, 16 * mib, Duration::ZERO),
            Duration::from_secs(1)
        );
        assert_eq!(
            pace(16 * mib, 16 * mib, Duration::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(pace(mib, 16 * mib, Duration::from_secs(5)), Duration::ZERO);
    }
}
