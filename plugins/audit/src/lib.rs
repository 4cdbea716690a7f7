//! Audit plugin: journals one record per event, of every type.
//!
//! Subscribes to `*` and appends to its journal (the host writes it to the stream
//! `evhost:journal:audit`, outside `events:`, so it triggers no plugin) a record with the
//! fields `event_id`, `type`, `source`, `time`, `correlation_id` (empty when absent),
//! `stream`, `entry_id` and `data_sha256` (hex SHA-256 of the data). It never publishes.

use evhost_sdk::prelude::*;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The journal record for `event` delivered as `delivery`: field names and values, in order.
pub fn audit_record(event: &Event, delivery: &Delivery) -> Vec<(&'static str, String)> {
    vec![
        ("event_id", event.id().to_owned()),
        ("type", event.event_type().to_owned()),
        ("source", event.source().to_owned()),
        ("time", event.time().to_owned()),
        (
            "correlation_id",
            event.correlation_id().unwrap_or_default().to_owned(),
        ),
        ("stream", delivery.stream().to_owned()),
        ("entry_id", delivery.entry_id().to_owned()),
        ("data_sha256", sha256_hex(event.data())),
    ]
}

/// The audit plugin.
pub struct Audit;

impl Plugin for Audit {
    fn describe() -> PluginInfo {
        PluginInfo::new("audit", env!("CARGO_PKG_VERSION")).subscribe("*")
    }

    fn handle(event: Event, delivery: Delivery) -> Result<()> {
        let record = audit_record(&event, &delivery);
        let fields: Vec<(&str, &str)> = record
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        journal::append(&fields)?;
        log::debug(format!("audited {} {}", event.event_type(), event.id()));
        Ok(())
    }
}

evhost_sdk::export_plugin!(Audit);

#[cfg(test)]
mod tests {
    use super::*;

    /// Known SHA-256 test vectors.
    #[test]
    fn sha256_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// The record has every field, in order, taken from the event and the delivery.
    #[test]
    fn record_fields() {
        let event = Event::new("e-1", "AuctionEnded", "abc")
            .with_source("auctions")
            .with_time("2026-11-24T18:00:00Z")
            .with_extension("correlationid", "c-9");
        let delivery = Delivery::new("events:AuctionEnded", "1700000000000-0", 1, "audit");
        let record = audit_record(&event, &delivery);
        let expected: Vec<(&str, String)> = vec![
            ("event_id", "e-1".into()),
            ("type", "AuctionEnded".into()),
            ("source", "auctions".into()),
            ("time", "2026-11-24T18:00:00Z".into()),
            ("correlation_id", "c-9".into()),
            ("stream", "events:AuctionEnded".into()),
            ("entry_id", "1700000000000-0".into()),
            (
                "data_sha256",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            ),
        ];
        assert_eq!(record, expected);
    }

    /// Without a correlation id the field is present and empty; any data, even not JSON, is
    /// audited.
    #[test]
    fn record_without_correlation() {
        let record = audit_record(
            &Event::new("e", "T", vec![0xff, 0x00]),
            &Delivery::new("events:T", "1-0", 3, "audit"),
        );
        assert!(record.contains(&("correlation_id", String::new())));
        assert_eq!(record.len(), 8);
    }
}
