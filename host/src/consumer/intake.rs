//! Intake: turns the entries read into work for the plugin, and sorts out those it must never
//! see (too large, not an event, delivered too often), which are dead-lettered unhandled.

use std::hash::{Hash, Hasher};

use crate::broker::{Delivered, EntryId, Fields};
use crate::dlq::{self, DeadLetterReason};
use crate::event::Event;
use crate::plugin::PluginSettings;

/// One delivery of an entry: what its settlement, report and dead letter need.
pub(super) struct Attempt {
    /// Position in the batch read (stream order).
    pub position: usize,
    /// The entry as read, with its delivery count.
    pub delivered: Delivered,
    /// Where the event comes from (differs from the entry read for re-driven dead letters).
    pub origin_stream: String,
    /// The entry id in `origin_stream`.
    pub origin_entry: EntryId,
}

impl Attempt {
    /// The entry id read (what is acknowledged).
    pub fn id(&self) -> EntryId {
        self.delivered.entry.id
    }

    /// The delivery count, this delivery included.
    pub fn number(&self) -> u32 {
        self.delivered.deliveries
    }
}

/// An event ready for its plugin.
pub(super) struct Work {
    pub attempt: Attempt,
    /// The decoded event.
    pub event: Event,
    /// Hash of the event's partition key (0 without one): events with equal keys share a lane.
    pub key: u64,
}

/// An entry the plugin never sees, and why.
pub(super) struct Unhandled {
    pub attempt: Attempt,
    /// The event id, when the entry is an event.
    pub event_id: String,
    pub reason: DeadLetterReason,
    pub error: String,
}

/// Entries of one batch, sorted out.
#[derive(Default)]
pub(super) struct Intake {
    /// For the plugin, in stream order.
    pub work: Vec<Work>,
    /// To dead-letter unhandled.
    pub unhandled: Vec<Unhandled>,
}

fn entry_size(fields: &Fields) -> usize {
    fields
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// Hash of the value of the top-level `field` of JSON `data`, the same for equal values; 0
/// when the data is not a JSON object or lacks the field (such events share one lane).
pub(super) fn partition_hash(data: &[u8], field: &str) -> u64 {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(data) else {
        return 0;
    };
    let Some(value) = object.remove(field) else {
        return 0;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match value {
        serde_json::Value::String(text) => text.hash(&mut hasher),
        other => other.to_string().hash(&mut hasher),
    }
    hasher.finish()
}

impl Intake {
    /// Sorts out `entries` read from `stream` (`redrive`: the plugin's redrive stream, whose
    /// entries carry their origin) under the plugin's current `settings`.
    pub fn sort(
        entries: Vec<Delivered>,
        stream: &str,
        redrive: bool,
        settings: &PluginSettings,
    ) -> Self {
        let mut intake = Intake {
            work: Vec::with_capacity(entries.len()),
            unhandled: Vec::new(),
        };
        for (position, delivered) in entries.into_iter().enumerate() {
            let redriven = if redrive {
                dlq::split_redriven(&delivered.entry.fields)
            } else {
                None
            };
            let (origin_stream, origin_entry, fields) = match redriven {
                Some((stream, entry, fields)) => (stream, entry, Some(fields)),
                None => (stream.to_string(), delivered.entry.id, None),
            };
            let fields = fields.as_ref().unwrap_or(&delivered.entry.fields);
            let size = entry_size(fields);
            let decoded = if size > settings.max_event_bytes {
                Err((
                    DeadLetterReason::Oversized,
                    format!(
                        "entry of {size} bytes exceeds max_event_bytes = {}",
                        settings.max_event_bytes
                    ),
                ))
            } else {
                Event::from_entry(&origin_stream, origin_entry, fields)
                    .map_err(|reason| (DeadLetterReason::Malformed, reason.to_string()))
            };
            let attempt = Attempt {
                position,
                delivered,
                origin_stream,
                origin_entry,
            };
            let event = match decoded {
                Ok(event) => event,
                Err((reason, error)) => {
                    intake.unhandled.push(Unhandled {
                        attempt,
                        event_id: String::new(),
                        reason,
                        error,
                    });
                    continue;
                }
            };
            if settings.retry.exhausted(attempt.number()) {
                // Delivered more often than allowed without a verdict (e.g. the host crashed
                // while handling it): give up before it takes the host down again.
                let error = format!("delivered {} times without success", attempt.number());
                intake.unhandled.push(Unhandled {
                    attempt,
                    event_id: event.id,
                    reason: DeadLetterReason::MaxAttempts,
                    error,
                });
                continue;
            }
            let key = settings
                .partition_key
                .as_deref()
                .map_or(0, |field| partition_hash(&event.data, field));
            intake.work.push(Work {
                attempt,
                event,
                key,
            });
        }
        intake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_a_lane_whatever_their_json_type() {
        let text = partition_hash(br#"{"auction_id": "7", "price": 1}"#, "auction_id");
        let number = partition_hash(br#"{"price": 2, "auction_id": 7}"#, "auction_id");
        assert_eq!(
            text, number,
            "the payment plugin reads ids as strings or numbers"
        );
        assert_ne!(
            text,
            partition_hash(br#"{"auction_id": "8"}"#, "auction_id")
        );
    }

    #[test]
    fn events_without_the_key_share_lane_zero() {
        assert_eq!(partition_hash(br#"{"other": 1}"#, "auction_id"), 0);
        assert_eq!(partition_hash(b"not json", "auction_id"), 0);
        assert_eq!(partition_hash(br#"["auction_id"]"#, "auction_id"), 0);
    }

    fn delivered(id: u64, fields: &[(&str, &str)], deliveries: u32) -> Delivered {
        Delivered {
            entry: crate::broker::StreamEntry {
                id: EntryId::new(id, 0),
                fields: fields
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                    .collect(),
            },
            deliveries,
        }
    }

    #[test]
    fn sorts_out_what_the_plugin_must_not_see() {
        let settings = PluginSettings {
            max_event_bytes: 64,
            ..PluginSettings::default()
        };
        let big = "x".repeat(100);
        let intake = Intake::sort(
            vec![
                delivered(1, &[("payload", "{}")], 1),
                delivered(2, &[("foo", "bar")], 1),
                delivered(3, &[("payload", &big)], 1),
                delivered(4, &[("payload", "{}")], 6),
            ],
            "events:T",
            false,
            &settings,
        );
        assert_eq!(intake.work.len(), 1);
        assert_eq!(intake.work[0].attempt.position, 0);
        let reasons: Vec<_> = intake
            .unhandled
            .iter()
            .map(|unhandled| (unhandled.attempt.position, unhandled.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, DeadLetterReason::Malformed),
                (2, DeadLetterReason::Oversized),
                (3, DeadLetterReason::MaxAttempts),
            ]
        );
    }
}
