//! Replication lag as operators want it: time from commit on the master to durable here,
//! summarised in the log every interval (median, p99, max).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::info;

const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct Lag {
    samples_us: Vec<u64>,
    since: Instant,
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Lag {
    pub fn new() -> Lag {
        Lag {
            samples_us: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Records committed at `committed` (master clock, µs) are durable now. Records read
    /// back from the master's files carry 0 and are not live lag, so they are skipped.
    pub fn durable(&mut self, committed: &[u64]) {
        let now = now_micros();
        self.samples_us.extend(
            committed
                .iter()
                .filter(|&&c| c != 0)
                .map(|&c| now.saturating_sub(c)),
        );
        if self.since.elapsed() >= REPORT_EVERY {
            self.report();
        }
    }

    fn report(&mut self) {
        self.since = Instant::now();
        if self.samples_us.is_empty() {
            return;
        }
        self.samples_us.sort_unstable();
        let n = self.samples_us.len();
        let at = |q: f64| self.samples_us[((n as f64 * q) as usize).min(n - 1)] as f64 / 1000.0;
        info!(
            records = n,
            median_ms = at(0.5),
            p99_ms = at(0.99),
            max_ms = at(1.0),
            "lag: commit on the master to durable here"
        );
        self.samples_us.clear();
    }
}

impl Default for Lag {
    fn default() -> Self {
        Lag::new()
    }
}
