//! The figures of one `evhost bench` run, and their table.

use super::{hot_key, partitioned};

/// Throughput of one measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// Events per second of the raw loop.
    pub raw_per_sec: f64,
    /// Events per second of evhost.
    pub evhost_per_sec: f64,
    /// evhost / raw.
    pub ratio: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Latency at one produce rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    /// Produce rate, events per second.
    pub rate: u32,
    /// The raw loop.
    pub raw: Percentiles,
    /// evhost (to handler entry).
    pub evhost: Percentiles,
}

/// Every figure of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The Redis server measured against.
    pub redis: String,
    /// Bytes of event data.
    pub event_bytes: usize,
    /// Events per throughput measurement.
    pub events: usize,
    /// Trivial plugin.
    pub trivial: Throughput,
    /// Four saga plugins.
    pub saga: Throughput,
    /// Consumers per stream of the payment and notification plugins in the saga.
    pub saga_concurrency: usize,
    /// Whether that concurrency was partitioned by a key of the event in one consumer.
    pub saga_partitioned: bool,
    /// The saga on a partitioned keyspace (`--partitions`).
    pub saga_partitions: Option<partitioned::PartitionedSaga>,
    /// Latencies by rate.
    pub latency: Vec<Latency>,
    /// One hot key: read-modify-write, increment and the hand-written loop.
    pub hot_key: hot_key::HotKey,
    /// Hot swap: file written → first event handled by the new version, in milliseconds.
    pub swap_ms: Vec<f64>,
    /// Median of `swap_ms`.
    pub swap_median_ms: f64,
    /// Maximum of `swap_ms`.
    pub swap_max_ms: f64,
    /// Rollback: `Host::roll_back` called → first event handled by the previous version, in
    /// milliseconds (one after each swap).
    pub rollback_ms: Vec<f64>,
    /// Median of `rollback_ms`.
    pub rollback_median_ms: f64,
    /// Maximum of `rollback_ms`.
    pub rollback_max_ms: f64,
    /// Host RSS at rest with the four plugins, MiB.
    pub rss_rest_mib: f64,
    /// Host RSS just before the `memory_events` events (same host, at rest), MiB.
    pub rss_before_mib: f64,
    /// Host RSS after `memory_events` events, MiB.
    pub rss_after_mib: f64,
    /// Events pushed for the memory figure.
    pub memory_events: usize,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
}

impl BenchReport {
    /// The report as an aligned table with the targets.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String,
                    what: &str,
                    raw: String,
                    evhost: String,
                    ratio: String,
                    target: &str| {
            out.push_str(&format!(
                "{what:<36} {raw:>14} {evhost:>14} {ratio:>10}   {target}\n"
            ));
        };
        out.push_str(&format!(
            "evhost bench: {} events of {} bytes, Redis at {}, {:.0} s\n\n",
            self.events, self.event_bytes, self.redis, self.seconds
        ));
        if self.saga_concurrency > 1 && self.saga_partitioned {
            out.push_str(&format!(
                "saga: payment and notification handle {} events at a time, partitioned by \
                 auction and bidder\n\n",
                self.saga_concurrency
            ));
        } else if self.saga_concurrency > 1 {
            out.push_str(&format!(
                "saga: payment and notification with {} consumers per stream\n\n",
                self.saga_concurrency
            ));
        }
        line(
            &mut out,
            "measurement",
            "raw".into(),
            "evhost".into(),
            "evhost/raw".into(),
            "target",
        );
        for (what, t, target) in [
            ("throughput, trivial plugin", &self.trivial, "ratio ≥ 0.8"),
            ("whole saga, auctions", &self.saga, "ratio ≥ 0.5"),
        ] {
            line(
                &mut out,
                what,
                format!("{:.0}/s", t.raw_per_sec),
                format!("{:.0}/s", t.evhost_per_sec),
                format!("{:.2}", t.ratio),
                target,
            );
        }
        if let Some(partitioned) = &self.saga_partitions {
            line(
                &mut out,
                &format!("whole saga on {} partitions", partitioned.partitions),
                format!("{:.0}/s", self.saga.raw_per_sec),
                format!("{:.0}/s", partitioned.evhost_per_sec),
                format!("{:.2}", partitioned.ratio),
                "",
            );
        }
        for latency in &self.latency {
            for (label, raw, evhost, target) in [
                (
                    "p50",
                    latency.raw.p50_ms,
                    latency.evhost.p50_ms,
                    if latency.rate == 5000 {
                        "ratio ≤ 1.5"
                    } else {
                        ""
                    },
                ),
                (
                    "p99",
                    latency.raw.p99_ms,
                    latency.evhost.p99_ms,
                    if latency.rate == 5000 {
                        "evhost ≤ 2 ms"
                    } else {
                        ""
                    },
                ),
                ("p99.9", latency.raw.p999_ms, latency.evhost.p999_ms, ""),
            ] {
                line(
                    &mut out,
                    &format!("latency {label} at {}/s", latency.rate),
                    format!("{raw:.3} ms"),
                    format!("{evhost:.3} ms"),
                    format!("{:.2}", evhost / raw),
                    target,
                );
            }
        }
        let hot = &self.hot_key;
        for (what, per_sec) in [
            ("get + set", hot.get_set_per_sec),
            ("increment", hot.increment_per_sec),
        ] {
            line(
                &mut out,
                &format!("one hot key, {} lanes, {what}", hot.lanes),
                format!("{:.0}/s", hot.raw_per_sec),
                format!("{per_sec:.0}/s"),
                format!("{:.2}", per_sec / hot.raw_per_sec),
                "",
            );
        }
        line(
            &mut out,
            &format!("  conflicts handled again, of {}", hot.events),
            String::new(),
            hot.get_set_conflicts.to_string(),
            String::new(),
            "",
        );
        line(
            &mut out,
            &format!("hot swap, median of {}", self.swap_ms.len()),
            String::new(),
            format!("{:.0} ms", self.swap_median_ms),
            String::new(),
            "≤ 250 ms",
        );
        line(
            &mut out,
            "hot swap, max",
            String::new(),
            format!("{:.0} ms", self.swap_max_ms),
            String::new(),
            "",
        );
        line(
            &mut out,
            &format!("rollback, median of {}", self.rollback_ms.len()),
            String::new(),
            format!("{:.1} ms", self.rollback_median_ms),
            String::new(),
            "≤ 250 ms",
        );
        line(
            &mut out,
            "rollback, max",
            String::new(),
            format!("{:.1} ms", self.rollback_max_ms),
            String::new(),
            "",
        );
        line(
            &mut out,
            "RSS at rest, four plugins",
            String::new(),
            format!("{:.1} MiB", self.rss_rest_mib),
            String::new(),
            "≤ 64 MiB",
        );
        line(
            &mut out,
            &format!("RSS before/after {} events", self.memory_events),
            String::new(),
            format!("{:.1}/{:.1} MiB", self.rss_before_mib, self.rss_after_mib),
            String::new(),
            "no growth",
        );
        out
    }
}
