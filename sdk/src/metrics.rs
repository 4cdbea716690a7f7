//! Plugin-defined Prometheus metrics.
//!
//! The host exports a metric `name` as `evhost_plugin_<name>` with a `plugin` label added to
//! `labels`.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! fn count(event: &Event) -> Result<()> {
//!     metrics::counter_add("events_total", 1, &[("type", event.event_type())])?;
//!     metrics::histogram_observe("payload_bytes", event.data().len() as f64, &[])
//! }
//! ```

use crate::bindings::evhost::plugin::metrics;
use crate::error::{Error, Result};

/// Copies borrowed label pairs into the owned form the host call takes.
fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// Maps a host error to a retry error naming the metric.
fn host_error(name: &str, err: String) -> Error {
    Error::retry(format!("metric {name:?}: {err}"))
}

/// Adds `value` (non-negative) to the counter `name` with `labels`.
///
/// # Errors
///
/// A *retry* error if the host refuses (e.g. a negative value or conflicting labels).
pub fn counter_add(name: &str, value: impl Into<f64>, labels: &[(&str, &str)]) -> Result<()> {
    metrics::counter_add(name, value.into(), &owned(labels)).map_err(|err| host_error(name, err))
}

/// Sets the gauge `name` with `labels` to `value`.
///
/// # Errors
///
/// A *retry* error if the host refuses.
pub fn gauge_set(name: &str, value: impl Into<f64>, labels: &[(&str, &str)]) -> Result<()> {
    metrics::gauge_set(name, value.into(), &owned(labels)).map_err(|err| host_error(name, err))
}

/// Records one observation `value` in the histogram `name` with `labels`.
///
/// # Errors
///
/// A *retry* error if the host refuses.
pub fn histogram_observe(name: &str, value: impl Into<f64>, labels: &[(&str, &str)]) -> Result<()> {
    metrics::histogram_observe(name, value.into(), &owned(labels))
        .map_err(|err| host_error(name, err))
}
