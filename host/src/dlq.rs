//! Dead letters: entries a plugin will never handle, kept with the reason, and re-driven on
//! request.
//!
//! An entry is dead-lettered when the plugin rejects it, when it failed `max_attempts` times,
//! when it cannot be parsed, or when it is larger than the plugin's `max_event_bytes`. It is
//! appended to `evhost:dlq:<plugin>` (in a partitioned keyspace, that of the entry's partition)
//! and acknowledged in the same atomic commit, so it is never in both places or in neither.
//!
//! `evhost dlq retry` moves dead letters to `evhost:redrive:<plugin>` (of the same partition), a
//! stream only that plugin's consumers read: the other groups of the original stream never see
//! the event again.

use jiff::Timestamp;

use crate::broker::{Broker, BrokerError, Commit, EntryId, Fields, Inspect, Op, StreamEntry};
use crate::keyspace::Keyspace;

/// Field of a redriven entry naming the stream the event originally came from.
pub const ORIGIN_STREAM: &str = "evhost-origin-stream";
/// Field of a redriven entry naming its original entry id.
pub const ORIGIN_ENTRY: &str = "evhost-origin-entry";
/// Prefix of the original fields inside a dead letter.
const FIELD_PREFIX: &str = "field:";

/// Why an entry was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The plugin rejected the event (permanent failure).
    Rejected,
    /// The event failed `max_attempts` times.
    MaxAttempts,
    /// The entry is not an event in any accepted format.
    Malformed,
    /// The entry is larger than the plugin's `max_event_bytes`.
    Oversized,
}

impl DeadLetterReason {
    /// Lower-case name, stored in the dead letter and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::MaxAttempts => "max-attempts",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Oversized => "oversized",
        }
    }
}

/// Everything a dead letter records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Id of the dead letter in its stream.
    pub dlq_id: String,
    /// The dead-letter stream it is in (`evhost:dlq:<plugin>`, or a partition's).
    pub dlq_stream: String,
    /// The partition of that stream.
    #[serde(skip)]
    pub partition: u32,
    /// The plugin that gave up.
    pub plugin: String,
    /// Its version at the time.
    pub plugin_version: String,
    /// Where the entry came from.
    pub stream: String,
    /// The original entry id.
    pub entry_id: String,
    /// The event id, when the entry could be parsed.
    pub event_id: String,
    /// Why (`rejected`, `max-attempts`, `malformed`, `oversized`).
    pub reason: String,
    /// The last error.
    pub error: String,
    /// Deliveries made.
    pub attempts: u32,
    /// When it was dead-lettered (RFC 3339).
    pub time: String,
    /// The original fields, with values as text (lossy for binary values).
    pub fields: Vec<(String, String)>,
    /// The original fields as stored.
    #[serde(skip)]
    pub raw_fields: Fields,
}

/// Why and by whom one entry is given up on: what its dead letter records beside the entry.
#[derive(Debug, Clone, Copy)]
pub struct GiveUp<'a> {
    /// The plugin that gives up.
    pub plugin: &'a str,
    /// Its version.
    pub plugin_version: &'a str,
    /// Where the entry came from (the original stream for a re-driven one).
    pub stream: &'a str,
    /// The entry id in `stream`.
    pub entry_id: EntryId,
    /// The event id, empty when the entry could not be parsed.
    pub event_id: &'a str,
    /// Why.
    pub reason: DeadLetterReason,
    /// The last error.
    pub error: &'a str,
    /// Deliveries made.
    pub attempts: u32,
}

impl GiveUp<'_> {
    /// The fields of the dead letter of an entry with `fields`.
    pub fn dead_letter_fields(&self, fields: &Fields) -> Fields {
        let mut letter: Fields = vec![
            ("plugin".into(), self.plugin.as_bytes().to_vec()),
            (
                "plugin_version".into(),
                self.plugin_version.as_bytes().to_vec(),
            ),
            ("stream".into(), self.stream.as_bytes().to_vec()),
            ("entry_id".into(), self.entry_id.to_string().into_bytes()),
            ("event_id".into(), self.event_id.as_bytes().to_vec()),
            ("reason".into(), self.reason.as_str().as_bytes().to_vec()),
            ("error".into(), self.error.as_bytes().to_vec()),
            ("attempts".into(), self.attempts.to_string().into_bytes()),
            ("time".into(), Timestamp::now().to_string().into_bytes()),
        ];
        for (name, value) in fields {
            letter.push((format!("{FIELD_PREFIX}{name}"), value.clone()));
        }
        letter
    }
}

fn parse(keyspace: Keyspace, plugin: &str, dlq_id: EntryId, fields: Fields) -> DeadLetter {
    let mut letter = DeadLetter {
        dlq_id: dlq_id.to_string(),
        dlq_stream: keyspace.dead_letters(plugin),
        partition: keyspace.partition(),
        plugin: String::new(),
        plugin_version: String::new(),
        stream: String::new(),
        entry_id: String::new(),
        event_id: String::new(),
        reason: String::new(),
        error: String::new(),
        attempts: 0,
        time: String::new(),
        fields: Vec::new(),
        raw_fields: Vec::new(),
    };
    for (name, value) in fields {
        let text = String::from_utf8_lossy(&value).into_owned();
        if let Some(original) = name.strip_prefix(FIELD_PREFIX) {
            letter.fields.push((original.to_string(), text));
            letter.raw_fields.push((original.to_string(), value));
            continue;
        }
        match name.as_str() {
            "plugin" => letter.plugin = text,
            "plugin_version" => letter.plugin_version = text,
            "stream" => letter.stream = text,
            "entry_id" => letter.entry_id = text,
            "event_id" => letter.event_id = text,
            "reason" => letter.reason = text,
            "error" => letter.error = text,
            "attempts" => letter.attempts = text.parse().unwrap_or(0),
            "time" => letter.time = text,
            _ => {}
        }
    }
    letter
}

/// Up to `count` dead letters of `plugin`, oldest first, from every partition of `layout`.
///
/// # Errors
///
/// When the broker fails.
pub async fn list(
    broker: &dyn Inspect,
    layout: Keyspace,
    plugin: &str,
    count: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut letters = Vec::new();
    for keyspace in layout.each_partition() {
        let entries = broker
            .range(
                &keyspace.dead_letters(plugin),
                EntryId::ZERO,
                EntryId::MAX,
                count,
            )
            .await?;
        letters.extend(
            entries
                .into_iter()
                .map(|entry| (entry.id, parse(keyspace, plugin, entry.id, entry.fields))),
        );
    }
    letters.sort_by_key(|(id, _)| *id);
    letters.truncate(count);
    Ok(letters.into_iter().map(|(_, letter)| letter).collect())
}

/// The dead letter `id` of `plugin`, in whichever partition of `layout` holds it.
///
/// # Errors
///
/// When the broker fails.
pub async fn get(
    broker: &dyn Inspect,
    layout: Keyspace,
    plugin: &str,
    id: EntryId,
) -> Result<Option<DeadLetter>, BrokerError> {
    for keyspace in layout.each_partition() {
        let found = broker
            .range(&keyspace.dead_letters(plugin), id, id, 1)
            .await?
            .into_iter()
            .next();
        if let Some(entry) = found {
            return Ok(Some(parse(keyspace, plugin, entry.id, entry.fields)));
        }
    }
    Ok(None)
}

/// Re-drives dead letters to `plugin` alone: each moves, atomically, from the dead-letter
/// stream to the plugin's redrive stream of the same partition, where the running host
/// delivers it again (attempts start over). Returns how many moved.
///
/// # Errors
///
/// When the broker fails (letters moved before the failure stay moved).
pub async fn redrive(
    broker: &dyn Broker,
    layout: Keyspace,
    plugin: &str,
    letters: &[DeadLetter],
) -> Result<usize, BrokerError> {
    let mut moved = 0;
    for letter in letters {
        let Ok(dlq_id) = letter.dlq_id.parse::<EntryId>() else {
            continue;
        };
        let keyspace = layout.at(letter.partition);
        let fields = redrive_fields(&letter.stream, &letter.entry_id, &letter.raw_fields);
        crate::stream_registry::register(broker, layout, &[keyspace.redrive(plugin)]).await?;
        broker
            .commit(&Commit {
                ops: vec![
                    Op::Add {
                        stream: keyspace.redrive(plugin),
                        fields,
                    },
                    Op::Remove {
                        stream: keyspace.dead_letters(plugin),
                        id: dlq_id,
                    },
                ],
                settlements: Vec::new(),
            })
            .await?;
        moved += 1;
    }
    Ok(moved)
}

/// The fields of a redriven entry: its origin, then the original fields.
pub fn redrive_fields(origin_stream: &str, origin_entry: &str, fields: &Fields) -> Fields {
    let mut redriven: Fields = Vec::with_capacity(fields.len() + 2);
    redriven.push((ORIGIN_STREAM.into(), origin_stream.as_bytes().to_vec()));
    redriven.push((ORIGIN_ENTRY.into(), origin_entry.as_bytes().to_vec()));
    redriven.extend(fields.iter().cloned());
    redriven
}

/// Queues a past entry of `stream` for `plugin` alone (`evhost replay`): appends it to the
/// plugin's redrive stream, where the running host delivers it again to that plugin only;
/// returns its id there. Other groups and the plugin's group on `stream` are not touched.
///
/// # Errors
///
/// When the broker fails.
pub async fn replay(
    broker: &dyn Broker,
    layout: Keyspace,
    plugin: &str,
    stream: &str,
    entry: &StreamEntry,
) -> Result<EntryId, BrokerError> {
    // The redrive stream of the entry's own partition: the plugin's state of its key is there.
    let keyspace = layout
        .locate_event_stream(stream)
        .map_or(layout, |(keyspace, _)| keyspace);
    crate::stream_registry::register(broker, layout, &[keyspace.redrive(plugin)]).await?;
    broker
        .add(
            &keyspace.redrive(plugin),
            &redrive_fields(stream, &entry.id.to_string(), &entry.fields),
        )
        .await
}

/// Deletes dead letters of `plugin` (one commit per partition); returns how many.
///
/// # Errors
///
/// When the broker fails.
pub async fn purge(
    broker: &dyn Broker,
    layout: Keyspace,
    plugin: &str,
    letters: &[DeadLetter],
) -> Result<usize, BrokerError> {
    let mut count = 0;
    for keyspace in layout.each_partition() {
        let ops: Vec<Op> = letters
            .iter()
            .filter(|letter| letter.partition == keyspace.partition())
            .filter_map(|letter| letter.dlq_id.parse().ok())
            .map(|id| Op::Remove {
                stream: keyspace.dead_letters(plugin),
                id,
            })
            .collect();
        if ops.is_empty() {
            continue;
        }
        count += ops.len();
        broker
            .commit(&Commit {
                ops,
                settlements: Vec::new(),
            })
            .await?;
    }
    Ok(count)
}

/// Splits a redriven entry into its origin (stream, entry id) and the original fields.
pub fn split_redriven(fields: &Fields) -> Option<(String, EntryId, Fields)> {
    let mut stream = None;
    let mut entry = None;
    let mut original = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match name.as_str() {
            ORIGIN_STREAM => stream = String::from_utf8(value.clone()).ok(),
            ORIGIN_ENTRY => {
                entry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse().ok())
            }
            _ => original.push((name.clone(), value.clone())),
        }
    }
    Some((stream?, entry?, original))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip() {
        let fields: Fields = vec![("payload".into(), b"{}".to_vec())];
        let letter_fields = GiveUp {
            plugin: "payment",
            plugin_version: "1.0",
            stream: "events:AuctionEnded",
            entry_id: EntryId::new(5, 1),
            event_id: "e-1",
            reason: DeadLetterReason::Rejected,
            error: "bad data",
            attempts: 2,
        }
        .dead_letter_fields(&fields);
        let letter = parse(Keyspace::single(), "p", EntryId::new(9, 0), letter_fields);
        assert_eq!(letter.plugin, "payment");
        assert_eq!(letter.stream, "events:AuctionEnded");
        assert_eq!(letter.entry_id, "5-1");
        assert_eq!(letter.reason, "rejected");
        assert_eq!(letter.attempts, 2);
        assert_eq!(letter.raw_fields, fields);
        let redriven = redrive_fields("events:AuctionEnded", "5-1", &fields);
        assert_eq!(
            split_redriven(&redriven),
            Some((
                "events:AuctionEnded".to_string(),
                EntryId::new(5, 1),
                fields
            ))
        );
    }
}
