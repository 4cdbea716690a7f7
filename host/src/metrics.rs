//! Prometheus metrics: the host's own and those plugins define through the `metrics` capability.
//!
//! Everything is rendered in the Prometheus text format by [`Metrics::render`], served at
//! `/metrics` by the admin endpoint. Plugin metrics are named `evhost_plugin_<name>` and carry a
//! `plugin` label. [`totals`] keeps per-plugin counters and handler-time quantiles for
//! `/api/plugins`.

mod compile;
mod plugin_defined;
mod rollout;
mod series;
pub mod totals;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use self::compile::CompileMetrics;
use self::plugin_defined::PluginFamily;
use self::rollout::RolloutMetrics;
use self::series::SeriesBudget;
pub use self::series::{MAX_SERIES_PER_METRIC, MAX_SERIES_PER_PLUGIN};
use self::totals::{PluginStats, PluginTotals, TotalsTable};

/// Label set of a metric sample.
pub type Labels = Vec<(String, String)>;
type CounterFamily = Family<Labels, Counter<f64, AtomicU64>>;
type CountFamily = Family<Labels, Counter>;
type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn handler_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

/// Cached metric handles of one consumer (see [`Metrics::handler_metrics`]).
#[derive(Debug, Clone)]
pub struct HandlerMetrics {
    /// The plugin, for outcomes other than `ok`.
    plugin: String,
    /// The stream, for outcomes other than `ok`.
    stream: String,
    /// `evhost_events_handled_total{outcome="ok"}` of this plugin and stream.
    ok: Counter,
    /// `evhost_handler_duration_seconds` of this plugin.
    duration: Histogram,
    /// The plugin's totals for `/api/plugins`.
    totals: Arc<PluginTotals>,
}

impl HandlerMetrics {
    /// Counts one handled entry (outcome `ok` without any lookup).
    pub fn record(&self, metrics: &Metrics, outcome: &str, duration: Duration) {
        if outcome == "ok" {
            self.ok.inc();
            self.duration.observe(duration.as_secs_f64());
            self.totals.record_call(true, duration);
        } else {
            metrics.record_handled(&self.plugin, &self.stream, outcome, duration);
        }
    }
}

/// All metrics of one host process.
pub struct Metrics {
    /// The registry, locked for registration of plugin metrics and for rendering.
    registry: Mutex<Registry>,
    /// Plugin-defined families by metric name.
    plugin_families: Mutex<HashMap<String, PluginFamily>>,
    /// The series of each plugin's metrics, bounded.
    plugin_series: Mutex<SeriesBudget>,
    /// `evhost_plugin_metric_series_dropped_total{plugin}`: samples of new series past the
    /// bound.
    series_dropped: CountFamily,
    /// `evhost_events_handled_total{plugin,stream,outcome}`.
    handled: CountFamily,
    /// `evhost_handler_duration_seconds{plugin}`.
    handler_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// `evhost_events_published_total{plugin,type}`.
    published: CountFamily,
    /// `evhost_commit_failures_total{plugin}`.
    commit_failures: CountFamily,
    /// `evhost_kv_conflicts_total{plugin}`: entries handled again because a key their handler
    /// read changed before the commit.
    kv_conflicts: CountFamily,
    /// `evhost_retries_total{plugin}`.
    retries: CountFamily,
    /// `evhost_dead_letters_total{plugin,reason}`.
    dead_letters: CountFamily,
    /// `evhost_plugin_info{plugin,version,sha256}`.
    plugin_info: GaugeFamily,
    /// `evhost_plugin_reloads_total{plugin,result}`.
    reloads: CountFamily,
    /// `evhost_plugin_swap_duration_seconds`: file change seen → new version serving.
    swap_duration: Histogram,
    /// `evhost_effects_refused_total{plugin,reason}`: writes refused by the call budget.
    effects_refused: CountFamily,
    /// `evhost_plugin_log_lines_dropped_total{plugin}`: plugin log lines over the rate limit.
    log_lines_dropped: CountFamily,
    /// `evhost_retention_trimmed_total{stream}`: entries the retention rules trimmed.
    retention_trimmed: CountFamily,
    /// `evhost_doctor_findings{check,level}`: 1 for the level each start-up check found.
    doctor_findings: GaugeFamily,
    /// `evhost_relay_moved_total{from}`: entries the relay moved into their partition, from
    /// an outbox or an ingress stream.
    relay_moved: CountFamily,
    /// `evhost_replication_shortfalls_total`: writes fewer replicas confirmed than
    /// `--wait-replicas` asked for (the broker counts them; copied here on each scrape).
    replication_shortfalls: Counter,
    /// `evhost_relay_lag{from}`: entries of outboxes or ingress streams not yet read by the
    /// relay, as of its last look.
    relay_lag: GaugeFamily,
    /// `evhost_streams_unserved{plugin}`: streams the plugin's patterns match that this host
    /// leaves unconsumed (its bound of streams per plugin).
    streams_unserved: GaugeFamily,
    /// `evhost_group_lag{plugin,stream}`: entries not yet delivered to the plugin's group.
    group_lag: GaugeFamily,
    /// `evhost_group_pending{plugin,stream}`: delivered, not yet acknowledged entries.
    group_pending: GaugeFamily,
    /// The current info labels of each plugin, to replace them on reload.
    plugin_info_labels: Mutex<HashMap<String, Labels>>,
    /// Per-plugin totals for `/api/plugins`.
    totals: TotalsTable,
    /// `evhost_rollout_*`.
    rollouts: RolloutMetrics,
    /// `evhost_component_compiles_total`.
    compiles: CompileMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

impl Metrics {
    /// Creates the registry with the host's metric families.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("evhost");
        let handled = CountFamily::default();
        registry.register(
            "events_handled",
            "Events handled, by plugin, stream and outcome (ok, retry, reject, trap, malformed)",
            handled.clone(),
        );
        let handler_duration: HistogramFamily = Family::new_with_constructor(handler_histogram);
        registry.register(
            "handler_duration_seconds",
            "Time spent in a plugin's handle call",
            handler_duration.clone(),
        );
        let published = CountFamily::default();
        registry.register(
            "events_published",
            "Events published by plugins, by plugin and type (counted when committed)",
            published.clone(),
        );
        let commit_failures = CountFamily::default();
        registry.register(
            "commit_failures",
            "Batches whose commit (effects + XACK) failed; their events are delivered again",
            commit_failures.clone(),
        );
        let kv_conflicts = CountFamily::default();
        registry.register(
            "kv_conflicts",
            "Entries handled again because a key-value entry their handler read changed before the commit (or an earlier entry of the batch conflicted)",
            kv_conflicts.clone(),
        );
        let series_dropped = CountFamily::default();
        registry.register(
            "plugin_metric_series_dropped",
            "Plugin metric samples dropped because they would start a series past the bound (1000 per metric, 5000 per plugin)",
            series_dropped.clone(),
        );
        let retention_trimmed = CountFamily::default();
        registry.register(
            "retention_trimmed",
            "Entries trimmed from event streams by the retention rules (--retain-len, --retain-age)",
            retention_trimmed.clone(),
        );
        let doctor_findings = GaugeFamily::default();
        registry.register(
            "doctor_findings",
            "What the Redis checks of evhost doctor found when the host started: 1 per check at its level (ok, unknown, warning, danger)",
            doctor_findings.clone(),
        );
        let relay_moved = CountFamily::default();
        registry.register(
            "relay_moved",
            "Entries the relay moved into their partition exactly once, from an outbox (publishes across partitions) or an ingress stream (events:<type> of producers that know nothing of partitions)",
            relay_moved.clone(),
        );
        let replication_shortfalls = Counter::default();
        registry.register(
            "replication_shortfalls",
            "Commits and relay moves that fewer replicas confirmed than --wait-replicas asked for within --wait-timeout-ms (or whose WAIT failed): a crash of the primary could lose them",
            replication_shortfalls.clone(),
        );
        let relay_lag = GaugeFamily::default();
        registry.register(
            "relay_lag",
            "Entries of outboxes or ingress streams the relay has not read yet, as of its last look",
            relay_lag.clone(),
        );
        let streams_unserved = GaugeFamily::default();
        registry.register(
            "streams_unserved",
            "Streams a plugin's subscriptions match that this host leaves unconsumed (--max-streams-per-plugin)",
            streams_unserved.clone(),
        );
        let reloads = CountFamily::default();
        registry.register(
            "plugin_reloads",
            "Plugin file loads, by plugin and result (ok, failed, removed)",
            reloads.clone(),
        );
        let swap_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "plugin_swap_duration_seconds",
            "Time from reading a changed plugin file to serving its new version",
            swap_duration.clone(),
        );
        let retries = CountFamily::default();
        registry.register(
            "retries",
            "Failed calls whose event was left pending for another attempt",
            retries.clone(),
        );
        let dead_letters = CountFamily::default();
        registry.register(
            "dead_letters",
            "Events moved to a dead-letter stream, by plugin and reason",
            dead_letters.clone(),
        );
        let plugin_info = GaugeFamily::default();
        registry.register(
            "plugin_info",
            "Loaded plugin versions (value 1)",
            plugin_info.clone(),
        );
        let effects_refused = CountFamily::default();
        registry.register(
            "effects_refused",
            "Writes (publishes, journal appends, key-value sets and deletes) refused to a plugin's call, by plugin and reason (the limit's name, or invalid)",
            effects_refused.clone(),
        );
        let log_lines_dropped = CountFamily::default();
        registry.register(
            "plugin_log_lines_dropped",
            "Plugin log lines (wasi:logging, stdout, stderr) dropped by the per-plugin rate limit",
            log_lines_dropped.clone(),
        );
        let group_lag = GaugeFamily::default();
        registry.register(
            "group_lag",
            "Entries of the stream not yet delivered to the plugin's consumer group (at the last scrape)",
            group_lag.clone(),
        );
        let group_pending = GaugeFamily::default();
        registry.register(
            "group_pending",
            "Entries delivered to the plugin's consumer group and not yet acknowledged (at the last scrape)",
            group_pending.clone(),
        );
        let rollouts = RolloutMetrics::register(&mut registry);
        let compiles = CompileMetrics::register(&mut registry);
        Metrics {
            rollouts,
            compiles,
            registry: Mutex::new(registry),
            group_lag,
            group_pending,
            effects_refused,
            log_lines_dropped,
            plugin_families: Mutex::new(HashMap::new()),
            plugin_series: Mutex::new(SeriesBudget::default()),
            streams_unserved,
            doctor_findings,
            relay_moved,
            replication_shortfalls,
            relay_lag,
            retention_trimmed,
            series_dropped,
            handled,
            handler_duration,
            published,
            commit_failures,
            kv_conflicts,
            retries,
            dead_letters,
            plugin_info,
            plugin_info_labels: Mutex::new(HashMap::new()),
            reloads,
            swap_duration,
            totals: TotalsTable::default(),
        }
    }

    /// Counts one handled entry.
    pub fn record_handled(&self, plugin: &str, stream: &str, outcome: &str, duration: Duration) {
        self.handled
            .get_or_create(&labels(&[
                ("plugin", plugin),
                ("stream", stream),
                ("outcome", outcome),
            ]))
            .inc();
        self.handler_duration
            .get_or_create(&labels(&[("plugin", plugin)]))
            .observe(duration.as_secs_f64());
        self.totals
            .get(plugin)
            .record_call(outcome == "ok", duration);
    }

    /// Handled, failed, retried and dead-lettered counts and handler-time quantiles of
    /// `plugin` since the host started.
    pub fn plugin_stats(&self, plugin: &str) -> PluginStats {
        self.totals.snapshot(plugin)
    }

    /// Handles on one consumer's per-event metrics, so that the hot path does not build label
    /// sets or look up families.
    pub fn handler_metrics(&self, plugin: &str, stream: &str) -> HandlerMetrics {
        HandlerMetrics {
            plugin: plugin.to_string(),
            stream: stream.to_string(),
            ok: self.handled.get_or_create_owned(&labels(&[
                ("plugin", plugin),
                ("stream", stream),
                ("outcome", "ok"),
            ])),
            duration: self
                .handler_duration
                .get_or_create_owned(&labels(&[("plugin", plugin)])),
            totals: self.totals.get(plugin),
        }
    }

    /// Counts a committed publish.
    pub fn record_published(&self, plugin: &str, event_type: &str) {
        self.published
            .get_or_create(&labels(&[("plugin", plugin), ("type", event_type)]))
            .inc();
    }

    /// Counts a failed commit.
    pub fn record_commit_failure(&self, plugin: &str) {
        self.commit_failures
            .get_or_create(&labels(&[("plugin", plugin)]))
            .inc();
    }

    /// Counts entries trimmed from `stream` by the retention rules.
    pub fn record_trimmed(&self, stream: &str, entries: u64) {
        self.retention_trimmed
            .get_or_create(&labels(&[("stream", stream)]))
            .inc_by(entries);
    }

    /// Counts entries the relay moved into their partition from `from` (`outbox` or
    /// `ingress`).
    pub fn record_relay_moved(&self, from: &str, entries: u64) {
        self.relay_moved
            .get_or_create(&labels(&[("from", from)]))
            .inc_by(entries);
    }

    /// Brings `evhost_replication_shortfalls_total` up to the broker's count, `total`.
    pub fn sync_replication_shortfalls(&self, total: u64) {
        let shown = self.replication_shortfalls.get();
        if total > shown {
            self.replication_shortfalls.inc_by(total - shown);
        }
    }

    /// Sets how many entries of `from` (`outbox` or `ingress`) the relay has not read yet.
    pub fn set_relay_lag(&self, from: &str, entries: u64) {
        self.relay_lag
            .get_or_create(&labels(&[("from", from)]))
            .set(entries as f64);
    }

    /// Sets `evhost_doctor_findings` from a doctor report.
    pub fn set_doctor_findings(&self, report: &crate::doctor::Report) {
        self.doctor_findings.clear();
        for finding in &report.findings {
            self.doctor_findings
                .get_or_create(&labels(&[
                    ("check", finding.check),
                    ("level", finding.level.as_str()),
                ]))
                .set(1.0);
        }
    }

    /// Sets how many matching streams `plugin` leaves unserved.
    pub fn set_streams_unserved(&self, plugin: &str, streams: usize) {
        self.streams_unserved
            .get_or_create(&labels(&[("plugin", plugin)]))
            .set(streams as f64);
    }

    /// Counts entries whose settlement conflicted.
    pub fn record_kv_conflicts(&self, plugin: &str, entries: usize) {
        self.kv_conflicts
            .get_or_create(&labels(&[("plugin", plugin)]))
            .inc_by(u64::try_from(entries).unwrap_or(u64::MAX));
    }

    /// Counts a failed call left pending for a retry.
    pub fn record_retry(&self, plugin: &str) {
        self.retries
            .get_or_create(&labels(&[("plugin", plugin)]))
            .inc();
        self.totals.get(plugin).record_retry();
    }

    /// Counts a dead-lettered event.
    pub fn record_dead_letter(&self, plugin: &str, reason: &str) {
        self.dead_letters
            .get_or_create(&labels(&[("plugin", plugin), ("reason", reason)]))
            .inc();
        self.totals.get(plugin).record_dead_letter();
    }

    /// Counts `count` writes of a call of `plugin` refused for `reason`.
    pub fn record_effects_refused(&self, plugin: &str, reason: &str, count: u64) {
        self.effects_refused
            .get_or_create(&labels(&[("plugin", plugin), ("reason", reason)]))
            .inc_by(count);
    }

    /// The counter of `plugin`'s log lines dropped by the rate limit.
    pub fn log_lines_dropped(&self, plugin: &str) -> Counter {
        self.log_lines_dropped
            .get_or_create_owned(&labels(&[("plugin", plugin)]))
    }

    /// Counts a plugin file load with its result (`ok`, `failed`, `removed`).
    pub fn record_reload(&self, plugin: &str, result: &str) {
        self.reloads
            .get_or_create(&labels(&[("plugin", plugin), ("result", result)]))
            .inc();
    }

    /// Records how long a successful (re)load took.
    pub fn record_swap_duration(&self, duration: Duration) {
        self.swap_duration.observe(duration.as_secs_f64());
    }

    /// Marks `version` (with its `sha256`) as the loaded version of `plugin`, replacing the
    /// previous one.
    pub fn set_plugin_info(&self, plugin: &str, version: &str, sha256: &str) {
        let new = labels(&[("plugin", plugin), ("version", version), ("sha256", sha256)]);
        let mut current = self
            .plugin_info_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = current.insert(plugin.to_string(), new.clone()) {
            self.plugin_info.remove(&old);
        }
        self.plugin_info.get_or_create(&new).set(1.0);
    }

    /// Removes the info sample of `plugin` (it was unloaded).
    pub fn clear_plugin_info(&self, plugin: &str) {
        let mut current = self
            .plugin_info_labels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = current.remove(plugin) {
            self.plugin_info.remove(&old);
        }
    }

    /// Replaces every `evhost_group_lag` and `evhost_group_pending` sample with `groups`:
    /// `(plugin, stream, lag, pending)` for each consumer group of a loaded plugin.
    pub fn set_group_gauges(&self, groups: &[(String, String, Option<u64>, u64)]) {
        self.group_lag.clear();
        self.group_pending.clear();
        for (plugin, stream, lag, pending) in groups {
            let key = labels(&[("plugin", plugin), ("stream", stream)]);
            if let Some(lag) = lag {
                self.group_lag.get_or_create(&key).set(*lag as f64);
            }
            self.group_pending.get_or_create(&key).set(*pending as f64);
        }
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = String::new();
        if let Err(err) = encode(&mut text, &registry) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_host_and_plugin_metrics() {
        let metrics = Metrics::new();
        metrics.record_handled(
            "payment",
            "events:AuctionEnded",
            "ok",
            Duration::from_micros(20),
        );
        metrics
            .plugin_counter_add(
                "metrics",
                "events_total",
                1.0,
                vec![("type".into(), "A".into())],
            )
            .expect("valid counter");
        metrics
            .plugin_histogram_observe("metrics", "payment_amount", 12.5, vec![])
            .expect("valid histogram");
        let text = metrics.render();
        assert!(text.contains(
            "evhost_events_handled_total{plugin=\"payment\",stream=\"events:AuctionEnded\",outcome=\"ok\"} 1"
        ), "{text}");
        assert!(
            text.contains("evhost_plugin_events_total{plugin=\"metrics\",type=\"A\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("evhost_plugin_payment_amount_count{plugin=\"metrics\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn rejects_bad_plugin_metrics() {
        let metrics = Metrics::new();
        assert!(
            metrics
                .plugin_counter_add("p", "bad name", 1.0, vec![])
                .is_err()
        );
        assert!(metrics.plugin_counter_add("p", "c", -1.0, vec![]).is_err());
        assert!(
            metrics
                .plugin_counter_add("p", "c", 1.0, vec![("plugin".into(), "x".into())])
                .is_err()
        );
        metrics
            .plugin_counter_add("p", "c", 1.0, vec![])
            .expect("counter");
        assert!(
            metrics.plugin_gauge_set("p", "c", 1.0, vec![]).is_err(),
            "kind clash"
        );
    }
}
