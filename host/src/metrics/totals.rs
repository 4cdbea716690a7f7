//! Per-plugin totals and handler-time quantiles, for `/api/plugins` and `evhost stats`.
//!
//! prometheus-client does not expose the bucket counts of its histograms, so the host keeps
//! these few atomics beside them: one cached [`PluginTotals`] per plugin, updated with relaxed
//! atomic adds on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the handler-time buckets, in microseconds: 1 µs × 2^i (about 134 s at the
/// top); a last, unbounded bucket holds anything slower.
const BOUNDS: usize = 28;

fn bound_micros(index: usize) -> f64 {
    (1u64 << index) as f64
}

/// The first bucket whose bound is at least `duration`: ⌈log2(µs)⌉, without a loop.
fn bucket_of(duration: Duration) -> usize {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    if micros <= 1 {
        return 0;
    }
    let index = (u64::BITS - (micros - 1).leading_zeros()) as usize;
    index.min(BOUNDS)
}

/// Counters of one plugin since the host started.
#[derive(Debug, Default)]
pub struct PluginTotals {
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    buckets: [AtomicU64; BOUNDS + 1],
}

/// A snapshot of [`PluginTotals`], as served by `/api/plugins`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginStats {
    /// Calls that succeeded (outcome `ok`).
    pub handled: u64,
    /// Entries with any other outcome (retry, reject, trap, timeout, malformed, oversized).
    pub failed: u64,
    /// Failures left pending for another attempt.
    pub retried: u64,
    /// Events moved to the plugin's dead-letter stream.
    pub dead_lettered: u64,
    /// Median handler time in milliseconds (estimated from buckets), once anything ran.
    pub p50_ms: Option<f64>,
    /// 99th percentile handler time in milliseconds (estimated from buckets).
    pub p99_ms: Option<f64>,
}

impl PluginTotals {
    /// Counts one handled entry and its handler time.
    pub fn record_call(&self, ok: bool, duration: Duration) {
        let counter = if ok { &self.handled } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.buckets[bucket_of(duration)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure left pending for a retry.
    pub fn record_retry(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead-lettered event.
    pub fn record_dead_letter(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> PluginStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        PluginStats {
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            p50_ms: quantile_ms(&counts, 0.5),
            p99_ms: quantile_ms(&counts, 0.99),
        }
    }
}

/// The `q` quantile of bucketed durations, interpolated linearly within its bucket (as
/// Prometheus' `histogram_quantile` does); `None` without observations.
fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if index == 0 {
                0.0
            } else {
                bound_micros(index - 1)
            };
            if index >= BOUNDS {
                return Some(lower / 1000.0);
            }
            let upper = bound_micros(index);
            let fraction = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * fraction) / 1000.0);
        }
        below += count;
    }
    None
}

/// The totals of every plugin, by name.
#[derive(Debug, Default)]
pub struct TotalsTable {
    plugins: Mutex<HashMap<String, Arc<PluginTotals>>>,
}

impl TotalsTable {
    /// The totals of `plugin`, created on first use.
    pub fn get(&self, plugin: &str) -> Arc<PluginTotals> {
        let mut plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.entry(plugin.to_string()).or_default().clone()
    }

    /// A snapshot of the totals of `plugin` (zeros when it never ran).
    pub fn snapshot(&self, plugin: &str) -> PluginStats {
        self.plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(plugin)
            .map(|totals| totals.snapshot())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_estimates_quantiles() {
        let totals = PluginTotals::default();
        assert_eq!(totals.snapshot().p50_ms, None);
        for _ in 0..99 {
            totals.record_call(true, Duration::from_micros(100));
        }
        totals.record_call(false, Duration::from_millis(50));
        totals.record_retry();
        totals.record_dead_letter();
        let stats = totals.snapshot();
        assert_eq!((stats.handled, stats.failed), (99, 1));
        assert_eq!((stats.retried, stats.dead_lettered), (1, 1));
        let p50 = stats.p50_ms.expect("p50");
        assert!(
            (0.064..=0.128).contains(&p50),
            "100 µs lies in 64..128 µs: {p50}"
        );
        let p99 = stats.p99_ms.expect("p99");
        assert!(p99 <= 0.128, "99 of 100 calls took 100 µs: {p99}");
        assert_eq!(bucket_of(Duration::from_secs(1000)), BOUNDS);
        for micros in [0u64, 1, 2, 3, 4, 5, 1000, 1024, 1025] {
            let index = bucket_of(Duration::from_micros(micros));
            assert!(
                micros as f64 <= bound_micros(index),
                "{micros} µs in {index}"
            );
            assert!(
                index == 0 || micros as f64 > bound_micros(index - 1),
                "{micros} µs in {index}"
            );
        }
    }
}
