//! The bound on plugin metric series: a plugin that labels a counter with a fresh value per
//! event would otherwise grow `/metrics` without end (100,000 series, 10 MB, were seen).
//!
//! Each plugin may have at most [`MAX_SERIES_PER_METRIC`] label sets per metric and
//! [`MAX_SERIES_PER_PLUGIN`] in all. Samples of existing series always go through; a new series
//! past a bound is dropped, counted, and the plugin told (the host warns once per plugin).

use std::collections::{HashMap, HashSet};

use super::Labels;

/// Most series (label sets) of one plugin metric.
pub const MAX_SERIES_PER_METRIC: usize = 1_000;
/// Most series of all the metrics of one plugin.
pub const MAX_SERIES_PER_PLUGIN: usize = 5_000;

/// A new series past a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRefused {
    /// What to tell the plugin.
    pub reason: String,
    /// Whether it is the plugin's first refusal (the host warns once).
    pub first: bool,
}

/// The series each plugin has, by metric.
#[derive(Debug, Default)]
pub struct SeriesBudget {
    plugins: HashMap<String, PluginSeries>,
}

#[derive(Debug, Default)]
struct PluginSeries {
    /// Series of all metrics.
    total: usize,
    /// Label sets by metric name.
    by_metric: HashMap<String, HashSet<Labels>>,
    /// Whether a series was refused already.
    refused: bool,
}

impl SeriesBudget {
    /// Lets the sample of `plugin`'s `metric` with `labels` through if its series exists or
    /// fits within the bounds (and then remembers it).
    pub fn admit(
        &mut self,
        plugin: &str,
        metric: &str,
        labels: &Labels,
    ) -> Result<(), SeriesRefused> {
        let series = self.plugins.entry(plugin.to_string()).or_default();
        let total = series.total;
        let known = series.by_metric.entry(metric.to_string()).or_default();
        if known.contains(labels) {
            return Ok(());
        }
        let reason = if known.len() >= MAX_SERIES_PER_METRIC {
            format!(
                "metric {metric:?} has {MAX_SERIES_PER_METRIC} series (label sets) already, the most a plugin metric may have; this new one is dropped"
            )
        } else if total >= MAX_SERIES_PER_PLUGIN {
            format!(
                "the plugin has {MAX_SERIES_PER_PLUGIN} metric series already, the most a plugin may have; this new one of {metric:?} is dropped"
            )
        } else {
            known.insert(labels.clone());
            series.total += 1;
            return Ok(());
        };
        let first = !series.refused;
        series.refused = true;
        Err(SeriesRefused { reason, first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(value: usize) -> Labels {
        vec![("id".to_string(), value.to_string())]
    }

    #[test]
    fn new_series_past_either_bound_are_refused_and_the_first_refusal_is_marked() {
        let mut budget = SeriesBudget::default();
        for n in 0..MAX_SERIES_PER_METRIC {
            assert_eq!(budget.admit("p", "a", &labels(n)), Ok(()));
        }
        // Existing series always pass; a new one of the full metric does not.
        assert_eq!(budget.admit("p", "a", &labels(0)), Ok(()));
        let refused = budget.admit("p", "a", &labels(MAX_SERIES_PER_METRIC));
        assert!(
            matches!(&refused, Err(SeriesRefused { first: true, .. })),
            "{refused:?}"
        );
        let again = budget.admit("p", "a", &labels(MAX_SERIES_PER_METRIC + 1));
        assert!(matches!(again, Err(SeriesRefused { first: false, .. })));
        // Other plugins are not affected.
        assert_eq!(
            budget.admit("q", "a", &labels(MAX_SERIES_PER_METRIC)),
            Ok(())
        );
        // The plugin's total bound: fill four more metrics, then a sixth is refused.
        for metric in ["b", "c", "d", "e"] {
            for n in 0..MAX_SERIES_PER_METRIC {
                assert_eq!(
                    budget.admit("p", metric, &labels(n)),
                    Ok(()),
                    "{metric} {n}"
                );
            }
        }
        let over = budget.admit("p", "f", &labels(0));
        assert!(
            matches!(&over, Err(SeriesRefused { reason, .. }) if reason.contains("the plugin has")),
            "{over:?}"
        );
    }
}
