//! Metrics that plugins define through the `metrics` capability: names and labels checked,
//! series bounded per metric and per plugin, families created on first use.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::{CounterFamily, GaugeFamily, HistogramFamily, Labels, Metrics, labels};

/// Longest metric or label name a plugin may use.
const MAX_NAME_LEN: usize = 100;
/// Most label pairs a plugin may attach to one sample.
const MAX_LABELS: usize = 8;
/// Most distinct metric names per host, across plugins.
const MAX_PLUGIN_METRICS: usize = 500;

fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 16))
}

/// A plugin-defined metric family.
pub(super) enum PluginFamily {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

impl PluginFamily {
    fn kind(&self) -> &'static str {
        match self {
            PluginFamily::Counter(_) => "counter",
            PluginFamily::Gauge(_) => "gauge",
            PluginFamily::Histogram(_) => "histogram",
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
}

impl Metrics {
    fn plugin_labels(plugin: &str, extra: Labels) -> Result<Labels, String> {
        if extra.len() > MAX_LABELS {
            return Err(format!("at most {MAX_LABELS} labels per sample"));
        }
        let mut all = Vec::with_capacity(extra.len() + 1);
        all.push(("plugin".to_string(), plugin.to_string()));
        for (key, value) in extra {
            if !valid_name(&key) || key == "plugin" || key.starts_with("__") {
                return Err(format!(
                    "invalid label name {key:?}: use [a-zA-Z_][a-zA-Z0-9_]*, not `plugin`"
                ));
            }
            all.push((key, value));
        }
        all.sort();
        Ok(all)
    }

    /// Lets a sample of a new series of `plugin`'s metric `name` through only within the bounds
    /// (see [`series`]); past them it is dropped, counted and, the first time, warned about.
    fn admit_series(&self, plugin: &str, name: &str, sample: &Labels) -> Result<(), String> {
        let admitted = self
            .plugin_series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .admit(plugin, name, sample);
        admitted.map_err(|refused| {
            self.series_dropped
                .get_or_create(&labels(&[("plugin", plugin)]))
                .inc();
            if refused.first {
                tracing::warn!(plugin, reason = %refused.reason, "plugin metric series bound reached: new series of this plugin are dropped from now on (counted in evhost_plugin_metric_series_dropped_total)");
            }
            refused.reason
        })
    }

    /// Looks up (or registers) the plugin family `name` of the given kind.
    fn with_family<R>(
        &self,
        name: &str,
        kind: &'static str,
        create: impl FnOnce() -> PluginFamily,
        use_family: impl FnOnce(&PluginFamily) -> R,
    ) -> Result<R, String> {
        if !valid_name(name) {
            return Err(format!(
                "invalid metric name {name:?}: use [a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_NAME_LEN} characters"
            ));
        }
        let mut families = self
            .plugin_families
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(family) = families.get(name) {
            if family.kind() != kind {
                return Err(format!(
                    "metric {name:?} is already a {}, not a {kind}",
                    family.kind()
                ));
            }
            return Ok(use_family(family));
        }
        if families.len() >= MAX_PLUGIN_METRICS {
            return Err(format!(
                "too many plugin metrics (limit {MAX_PLUGIN_METRICS})"
            ));
        }
        let family = create();
        let registered_name = format!("plugin_{}", name.strip_suffix("_total").unwrap_or(name));
        let help = format!("Plugin-defined {kind} {name}");
        {
            let mut registry = self
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &family {
                PluginFamily::Counter(counter) => {
                    registry.register(registered_name, help, counter.clone())
                }
                PluginFamily::Gauge(gauge) => {
                    registry.register(registered_name, help, gauge.clone())
                }
                PluginFamily::Histogram(histogram) => {
                    registry.register(registered_name, help, histogram.clone())
                }
            }
        }
        let result = use_family(&family);
        families.insert(name.to_string(), family);
        Ok(result)
    }

    /// Adds `value` to the plugin counter `name`.
    ///
    /// # Errors
    ///
    /// A message for the plugin when the name, labels or value are invalid.
    pub fn plugin_counter_add(
        &self,
        plugin: &str,
        name: &str,
        value: f64,
        extra: Labels,
    ) -> Result<(), String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "counter increments must be finite and >= 0, got {value}"
            ));
        }
        let labels = Self::plugin_labels(plugin, extra)?;
        self.with_family(
            name,
            "counter",
            || PluginFamily::Counter(CounterFamily::default()),
            |family| {
                self.admit_series(plugin, name, &labels)?;
                if let PluginFamily::Counter(counter) = family {
                    counter.get_or_create(&labels).inc_by(value);
                }
                Ok(())
            },
        )?
    }

    /// Sets the plugin gauge `name` to `value`.
    ///
    /// # Errors
    ///
    /// A message for the plugin when the name, labels or value are invalid.
    pub fn plugin_gauge_set(
        &self,
        plugin: &str,
        name: &str,
        value: f64,
        extra: Labels,
    ) -> Result<(), String> {
        if value.is_nan() {
            return Err("gauge value must not be NaN".into());
        }
        let labels = Self::plugin_labels(plugin, extra)?;
        self.with_family(
            name,
            "gauge",
            || PluginFamily::Gauge(GaugeFamily::default()),
            |family| {
                self.admit_series(plugin, name, &labels)?;
                if let PluginFamily::Gauge(gauge) = family {
                    gauge.get_or_create(&labels).set(value);
                }
                Ok(())
            },
        )?
    }

    /// Records `value` in the plugin histogram `name`.
    ///
    /// # Errors
    ///
    /// A message for the plugin when the name, labels or value are invalid.
    pub fn plugin_histogram_observe(
        &self,
        plugin: &str,
        name: &str,
        value: f64,
        extra: Labels,
    ) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!(
                "histogram observations must be finite, got {value}"
            ));
        }
        let labels = Self::plugin_labels(plugin, extra)?;
        self.with_family(
            name,
            "histogram",
            || PluginFamily::Histogram(Family::new_with_constructor(plugin_histogram)),
            |family| {
                self.admit_series(plugin, name, &labels)?;
                if let PluginFamily::Histogram(histogram) = family {
                    histogram.get_or_create(&labels).observe(value);
                }
                Ok(())
            },
        )?
    }
}
