//! What each version of a rollout did: calls, failures and handler times, over the current
//! judging window and since the rollout started.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Handler times kept per window, and since the start, for the percentiles: enough for a p99
/// that means something, bounded whatever the traffic.
const MAX_SAMPLES: usize = 20_000;

/// The calls of one version, in one span of time.
#[derive(Debug, Default)]
pub(super) struct Tally {
    calls: u64,
    failures: u64,
    /// Handler times, in microseconds, the latest [`MAX_SAMPLES`].
    samples: VecDeque<u32>,
}

impl Tally {
    pub fn record(&mut self, failed: bool, elapsed: Duration) {
        self.calls += 1;
        if failed {
            self.failures += 1;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples
            .push_back(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Failed calls in percent of the calls (0 without calls).
    pub fn failure_pct(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 * 100.0 / self.calls as f64
        }
    }

    /// The `q` quantile (0–1) of the handler times (zero without calls).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted: Vec<u32> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
        Duration::from_micros(u64::from(sorted[rank - 1]))
    }

    /// Its figures, for status.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            calls: self.calls,
            failures: self.failures,
            failure_pct: self.failure_pct(),
            p50_ms: self.quantile(0.5).as_secs_f64() * 1000.0,
            p99_ms: self.quantile(0.99).as_secs_f64() * 1000.0,
        }
    }
}

/// The figures of one version over a span of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed: retries, rejects, traps and timeouts.
    pub failures: u64,
    /// `failures` in percent of `calls`.
    pub failure_pct: f64,
    /// Median handler time, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of the handler time, milliseconds.
    pub p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_failure_rate_of_a_tally() {
        let mut tally = Tally::default();
        for micros in 1..=100u64 {
            tally.record(micros % 10 == 0, Duration::from_micros(micros));
        }
        assert_eq!(tally.calls(), 100);
        assert!((tally.failure_pct() - 10.0).abs() < 1e-9);
        assert_eq!(tally.quantile(0.5), Duration::from_micros(50));
        assert_eq!(tally.quantile(0.99), Duration::from_micros(99));
        assert_eq!(Tally::default().quantile(0.99), Duration::ZERO);
    }

    #[test]
    fn a_tally_keeps_a_bounded_number_of_samples() {
        let mut tally = Tally::default();
        for _ in 0..MAX_SAMPLES + 10 {
            tally.record(false, Duration::from_micros(1));
        }
        assert_eq!(tally.samples.len(), MAX_SAMPLES);
        assert_eq!(tally.calls(), (MAX_SAMPLES + 10) as u64);
    }
}
