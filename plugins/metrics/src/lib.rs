//! Metrics plugin: counts events by type and payments by status.
//!
//! Subscribes to `*` and, through the host's Prometheus registry (exported as
//! `evhost_plugin_<name>{plugin="metrics", ...}`), records:
//!
//! - `events_total{type}`: +1 per event;
//! - for `PaymentProcessed`: `payments_total{status}` +1 and, when `amount` is a number,
//!   `payment_amount{status}` (histogram) observes it.
//!
//! It only counts: malformed data is never rejected; a `PaymentProcessed` without a usable
//! `status` is counted with `status="unknown"` and one without a numeric `amount` skips the
//! histogram.

use evhost_sdk::prelude::*;
use serde_json::Value;

/// One metric update.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Add `value` to the counter `name`.
    Counter {
        /// Metric name.
        name: &'static str,
        /// Amount added.
        value: f64,
        /// Label pairs.
        labels: Vec<(&'static str, String)>,
    },
    /// Record `value` in the histogram `name`.
    Histogram {
        /// Metric name.
        name: &'static str,
        /// Observed value.
        value: f64,
        /// Label pairs.
        labels: Vec<(&'static str, String)>,
    },
}

/// The metric updates for one event of type `event_type` with data `data`.
pub fn observations(event_type: &str, data: &[u8]) -> Vec<Observation> {
    let mut updates = vec![Observation::Counter {
        name: "events_total",
        value: 1.0,
        labels: vec![("type", event_type.to_owned())],
    }];
    if event_type == "PaymentProcessed" {
        let payment = serde_json::from_slice::<Value>(data).unwrap_or(Value::Null);
        let status = match payment.get("status").and_then(Value::as_str) {
            Some(status) if !status.is_empty() => status.to_owned(),
            _ => "unknown".to_owned(),
        };
        updates.push(Observation::Counter {
            name: "payments_total",
            value: 1.0,
            labels: vec![("status", status.clone())],
        });
        if let Some(amount) = payment.get("amount").and_then(Value::as_f64) {
            updates.push(Observation::Histogram {
                name: "payment_amount",
                value: amount,
                labels: vec![("status", status)],
            });
        }
    }
    updates
}

/// Sends one update to the host.
fn record(update: &Observation) -> Result<()> {
    let (Observation::Counter {
        name,
        value,
        labels,
    }
    | Observation::Histogram {
        name,
        value,
        labels,
    }) = update;
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    match update {
        Observation::Counter { .. } => metrics::counter_add(name, *value, &labels),
        Observation::Histogram { .. } => metrics::histogram_observe(name, *value, &labels),
    }
}

/// The metrics plugin.
pub struct Metrics;

impl Plugin for Metrics {
    fn describe() -> PluginInfo {
        PluginInfo::new("metrics", env!("CARGO_PKG_VERSION")).subscribe("*")
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<()> {
        for update in observations(event.event_type(), event.data()) {
            record(&update)?;
        }
        Ok(())
    }
}

evhost_sdk::export_plugin!(Metrics);

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &'static str, label: &'static str, value: &str) -> Observation {
        Observation::Counter {
            name,
            value: 1.0,
            labels: vec![(label, value.to_owned())],
        }
    }

    /// Any event is counted by type, whatever its data.
    #[test]
    fn counts_every_event() {
        assert_eq!(
            observations("BidPlaced", b"not even json"),
            vec![counter("events_total", "type", "BidPlaced")]
        );
    }

    /// A well-formed payment counts by status and observes the amount.
    #[test]
    fn payment_with_amount() {
        let data =
            br#"{"auction_id": "7", "bidder_id": "42", "amount": 120.5, "status": "succeeded"}"#;
        assert_eq!(
            observations("PaymentProcessed", data),
            vec![
                counter("events_total", "type", "PaymentProcessed"),
                counter("payments_total", "status", "succeeded"),
                Observation::Histogram {
                    name: "payment_amount",
                    value: 120.5,
                    labels: vec![("status", "succeeded".to_owned())]
                },
            ]
        );
    }

    /// Malformed payments are still counted; only the amount is skipped.
    #[test]
    fn malformed_payment_skips_the_amount() {
        for data in [
            &b"{"[..],
            br#"{"status": "failed", "amount": "12"}"#,
            br#"[1, 2]"#,
        ] {
            let updates = observations("PaymentProcessed", data);
            assert_eq!(updates.len(), 2, "{updates:?}");
            assert!(
                updates
                    .iter()
                    .all(|u| matches!(u, Observation::Counter { .. }))
            );
        }
        let updates = observations("PaymentProcessed", br#"{"amount": 3}"#);
        assert_eq!(updates[1], counter("payments_total", "status", "unknown"));
        assert!(
            matches!(&updates[2], Observation::Histogram { value, labels, .. } if *value == 3.0 && labels[0].1 == "unknown")
        );
    }
}
