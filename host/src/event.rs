//! The event envelope and its encoding in Redis stream entries.
//!
//! evhost writes one entry field per CloudEvents attribute (`id`, `type`, `source`, `time`,
//! `specversion`, `datacontenttype`, `data`, then extensions such as `correlationid`). It also
//! reads the formats of the producers evhost replaces:
//!
//! - a single `payload` field holding the event data as JSON (the auction kata): the type comes
//!   from the stream name, the id and time from the entry id;
//! - a single `data` field holding a JSON envelope with `id`, `type`, `timestamp`, `data`,
//!   `source_agent` and `metadata` (the workflow event bus).

use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use crate::broker::{EntryId, Fields};
use crate::keyspace::Keyspace;

/// CloudEvents spec version written by evhost.
pub const SPEC_VERSION: &str = "1.0";
/// Content type of JSON data.
pub const JSON: &str = "application/json";
/// Extension attribute carrying the id of the first event of a chain.
pub const CORRELATION_ID: &str = "correlationid";
/// Extension attribute carrying the id of the event that caused this one.
pub const CAUSATION_ID: &str = "causationid";
/// Extension attribute carrying the event's partition key (CloudEvents `partitionkey`), which a
/// plugin's publishes inherit (see [`crate::partition`]).
pub const PARTITION_KEY: &str = "partitionkey";

/// Namespace of the deterministic ids given to entries that carry no event id.
const ENTRY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6576_686f_7374_2d65_6e74_7279_2d69_6430);

/// Core attribute names; every other field of an entry is an extension.
const CORE_ATTRIBUTES: [&str; 7] = [
    "id",
    "type",
    "source",
    "time",
    "specversion",
    "datacontenttype",
    "data",
];

/// A CloudEvents 1.0 style event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (a UUID for events evhost creates).
    pub id: String,
    /// Event type, e.g. `AuctionEnded`.
    pub event_type: String,
    /// Producer of the event.
    pub source: String,
    /// When it happened, RFC 3339.
    pub time: String,
    /// CloudEvents spec version.
    pub specversion: String,
    /// Media type of `data`.
    pub datacontenttype: String,
    /// The payload.
    pub data: Vec<u8>,
    /// Extension attributes (`correlationid`, `causationid`, ...), in entry order.
    pub extensions: Vec<(String, String)>,
}

/// Why a stream entry is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEntry {
    /// The fields match none of the accepted formats.
    #[error(
        "unrecognised entry format (fields: {0}); expected CloudEvents attributes, a `payload` field or a `data` envelope"
    )]
    UnknownFormat(String),
    /// A required attribute is missing.
    #[error("missing attribute `{0}`")]
    Missing(&'static str),
    /// An attribute that must be text is not UTF-8.
    #[error("attribute `{0}` is not valid UTF-8")]
    NotUtf8(String),
    /// A field that must hold JSON does not.
    #[error("field `{field}` is not valid JSON: {reason}")]
    InvalidJson {
        /// The field.
        field: &'static str,
        /// What the JSON parser said.
        reason: String,
    },
}

impl Event {
    /// Creates a new event with a fresh UUID, the current time and JSON data.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, data: Vec<u8>) -> Self {
        Event {
            id: Uuid::new_v4().to_string(),
            event_type: event_type.into(),
            source: source.into(),
            time: Timestamp::now().to_string(),
            specversion: SPEC_VERSION.to_string(),
            datacontenttype: JSON.to_string(),
            data,
            extensions: Vec::new(),
        }
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Sets an extension attribute, replacing an earlier value.
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.extensions.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value,
            None => self.extensions.push((name.to_string(), value)),
        }
    }

    /// The correlation id: the extension when present, else this event's own id.
    pub fn correlation_id(&self) -> &str {
        self.extension(CORRELATION_ID).unwrap_or(&self.id)
    }

    /// The stream this event belongs in within `layout`: `events:<type>` in the single
    /// layout, else the stream of its type in the partition of its key.
    pub fn stream_in(&self, layout: Keyspace) -> String {
        layout
            .for_key(crate::partition::key_of(self))
            .event_stream(&self.event_type)
    }

    /// Encodes the event as stream entry fields, one per attribute.
    pub fn to_fields(&self) -> Fields {
        let mut fields: Fields = Vec::with_capacity(7 + self.extensions.len());
        fields.push(("id".into(), self.id.clone().into_bytes()));
        fields.push(("type".into(), self.event_type.clone().into_bytes()));
        fields.push(("source".into(), self.source.clone().into_bytes()));
        fields.push(("time".into(), self.time.clone().into_bytes()));
        fields.push(("specversion".into(), self.specversion.clone().into_bytes()));
        fields.push((
            "datacontenttype".into(),
            self.datacontenttype.clone().into_bytes(),
        ));
        fields.push(("data".into(), self.data.clone()));
        for (name, value) in &self.extensions {
            if !CORE_ATTRIBUTES.contains(&name.as_str()) {
                fields.push((name.clone(), value.clone().into_bytes()));
            }
        }
        fields
    }

    /// Decodes a stream entry in any accepted format.
    ///
    /// `stream` and `entry_id` supply the type, id and time of formats that lack them.
    ///
    /// # Errors
    ///
    /// [`MalformedEntry`] when the entry is in no accepted format or misses a required part.
    pub fn from_entry(
        stream: &str,
        entry_id: EntryId,
        fields: &Fields,
    ) -> Result<Event, MalformedEntry> {
        let has = |name: &str| fields.iter().any(|(key, _)| key == name);
        if has("specversion") || has("id") {
            return from_attributes(stream, entry_id, fields);
        }
        match fields.as_slice() {
            [(name, payload)] if name == "payload" => from_payload(stream, entry_id, payload),
            [(name, envelope)] if name == "data" => from_envelope(stream, entry_id, envelope),
            _ => Err(MalformedEntry::UnknownFormat(
                fields
                    .iter()
                    .map(|(key, _)| key.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }
}

/// Checks that an event type is usable in a stream name: non-empty, printable, no spaces.
///
/// # Errors
///
/// A message saying what is wrong with the name.
pub fn validate_type(event_type: &str) -> Result<(), String> {
    if event_type.is_empty() {
        return Err("event type must not be empty".into());
    }
    if event_type.len() > 256 {
        return Err("event type must be at most 256 bytes".into());
    }
    if let Some(bad) = event_type
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']'))
    {
        return Err(format!(
            "event type {event_type:?} contains {bad:?}; use letters, digits, '.', '_', '-' or ':'"
        ));
    }
    Ok(())
}

fn text(name: &str, value: &[u8]) -> Result<String, MalformedEntry> {
    String::from_utf8(value.to_vec()).map_err(|_| MalformedEntry::NotUtf8(name.to_string()))
}

fn entry_time(entry_id: EntryId) -> String {
    i64::try_from(entry_id.ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

fn entry_uuid(stream: &str, entry_id: EntryId) -> String {
    Uuid::new_v5(
        &ENTRY_ID_NAMESPACE,
        format!("{stream}/{entry_id}").as_bytes(),
    )
    .to_string()
}

fn from_attributes(
    stream: &str,
    entry_id: EntryId,
    fields: &Fields,
) -> Result<Event, MalformedEntry> {
    let mut event = Event {
        id: String::new(),
        event_type: String::new(),
        source: String::new(),
        time: String::new(),
        specversion: SPEC_VERSION.to_string(),
        datacontenttype: JSON.to_string(),
        data: Vec::new(),
        extensions: Vec::new(),
    };
    for (name, value) in fields {
        match name.as_str() {
            "id" => event.id = text(name, value)?,
            "type" => event.event_type = text(name, value)?,
            "source" => event.source = text(name, value)?,
            "time" => event.time = text(name, value)?,
            "specversion" => event.specversion = text(name, value)?,
            "datacontenttype" => event.datacontenttype = text(name, value)?,
            "data" => event.data = value.clone(),
            _ => event.extensions.push((name.clone(), text(name, value)?)),
        }
    }
    if event.id.is_empty() {
        return Err(MalformedEntry::Missing("id"));
    }
    if event.event_type.is_empty() {
        event.event_type = crate::keyspace::event_type_in(stream)
            .ok_or(MalformedEntry::Missing("type"))?
            .to_string();
    }
    if event.source.is_empty() {
        event.source = stream.to_string();
    }
    if event.time.is_empty() {
        event.time = entry_time(entry_id);
    }
    Ok(event)
}

fn from_payload(stream: &str, entry_id: EntryId, payload: &[u8]) -> Result<Event, MalformedEntry> {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).map_err(|err| {
        MalformedEntry::InvalidJson {
            field: "payload",
            reason: err.to_string(),
        }
    })?;
    let event_type =
        crate::keyspace::event_type_in(stream).ok_or(MalformedEntry::Missing("type"))?;
    Ok(Event {
        id: entry_uuid(stream, entry_id),
        event_type: event_type.to_string(),
        source: stream.to_string(),
        time: entry_time(entry_id),
        specversion: SPEC_VERSION.to_string(),
        datacontenttype: JSON.to_string(),
        data: payload.to_vec(),
        extensions: Vec::new(),
    })
}

fn from_envelope(
    stream: &str,
    entry_id: EntryId,
    envelope: &[u8],
) -> Result<Event, MalformedEntry> {
    let value: Value =
        serde_json::from_slice(envelope).map_err(|err| MalformedEntry::InvalidJson {
            field: "data",
            reason: err.to_string(),
        })?;
    let Value::Object(mut envelope) = value else {
        return Err(MalformedEntry::InvalidJson {
            field: "data",
            reason: "expected a JSON object envelope".into(),
        });
    };
    let mut take_string = |key: &str| match envelope.remove(key) {
        Some(Value::String(text)) => Some(text),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let id = take_string("id").unwrap_or_else(|| entry_uuid(stream, entry_id));
    let event_type = match take_string("type") {
        Some(event_type) => event_type,
        None => crate::keyspace::event_type_in(stream)
            .ok_or(MalformedEntry::Missing("type"))?
            .to_string(),
    };
    let time = take_string("timestamp")
        .or_else(|| take_string("time"))
        .unwrap_or_else(|| entry_time(entry_id));
    let source = take_string("source_agent")
        .or_else(|| take_string("source"))
        .unwrap_or_else(|| stream.to_string());
    let data = match envelope.remove("data") {
        Some(data) => data.to_string().into_bytes(),
        None => b"null".to_vec(),
    };
    let mut extensions = Vec::new();
    let metadata = envelope.remove("metadata");
    for (key, value) in envelope.into_iter().chain(match metadata {
        Some(Value::Object(metadata)) => metadata.into_iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    }) {
        let name = extension_name(&key);
        if name.is_empty() || CORE_ATTRIBUTES.contains(&name.as_str()) || value.is_null() {
            continue;
        }
        let value = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        extensions.push((name, value));
    }
    Ok(Event {
        id,
        event_type,
        source,
        time,
        specversion: SPEC_VERSION.to_string(),
        datacontenttype: JSON.to_string(),
        data,
        extensions,
    })
}

/// CloudEvents extension names are lower-case ASCII letters and digits: `workflow_id` becomes
/// `workflowid`, `correlation_id` becomes `correlationid`.
fn extension_name(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn round_trips_attribute_format() {
        let mut event = Event::new("AuctionEnded", "test", br#"{"a":1}"#.to_vec());
        event.set_extension(CORRELATION_ID, "c-1");
        let decoded = Event::from_entry(
            "events:AuctionEnded",
            EntryId::new(1, 0),
            &event.to_fields(),
        )
        .expect("decodes");
        assert_eq!(decoded, event);
        assert_eq!(decoded.correlation_id(), "c-1");
    }

    #[test]
    fn reads_seed_payload_format() {
        let entry = fields(&[("payload", r#"{"auction_id":"a1","winning_price":10}"#)]);
        let id = EntryId::new(1_700_000_000_000, 3);
        let event = Event::from_entry("events:AuctionEnded", id, &entry).expect("decodes");
        assert_eq!(event.event_type, "AuctionEnded");
        assert_eq!(event.time, "2023-11-14T22:13:20Z");
        assert_eq!(event.data, br#"{"auction_id":"a1","winning_price":10}"#);
        let again = Event::from_entry("events:AuctionEnded", id, &entry).expect("decodes");
        assert_eq!(
            event.id, again.id,
            "the derived id is stable across deliveries"
        );
        assert!(Uuid::parse_str(&event.id).is_ok());
    }

    #[test]
    fn reads_seed_envelope_format() {
        let envelope = r#"{"id":"e-1","type":"WORKFLOW_STARTED","workflow_id":"w-9",
            "timestamp":"2025-01-01T00:00:00Z","data":{"step":1},"source_agent":"CoordinatorAgent",
            "metadata":{"correlation_id":"c-7","attempt":2}}"#;
        let event = Event::from_entry(
            "events:workflow.started",
            EntryId::new(5, 0),
            &fields(&[("data", envelope)]),
        )
        .expect("decodes");
        assert_eq!(event.id, "e-1");
        assert_eq!(event.event_type, "WORKFLOW_STARTED");
        assert_eq!(event.source, "CoordinatorAgent");
        assert_eq!(event.time, "2025-01-01T00:00:00Z");
        assert_eq!(event.data, br#"{"step":1}"#);
        assert_eq!(event.extension("workflowid"), Some("w-9"));
        assert_eq!(event.correlation_id(), "c-7");
        assert_eq!(event.extension("attempt"), Some("2"));
    }

    #[test]
    fn rejects_malformed_entries() {
        let unknown = Event::from_entry("events:X", EntryId::ZERO, &fields(&[("foo", "bar")]));
        assert!(matches!(unknown, Err(MalformedEntry::UnknownFormat(_))));
        let bad_json =
            Event::from_entry("events:X", EntryId::ZERO, &fields(&[("payload", "{nope")]));
        assert!(matches!(
            bad_json,
            Err(MalformedEntry::InvalidJson {
                field: "payload",
                ..
            })
        ));
        let no_id = Event::from_entry(
            "events:X",
            EntryId::ZERO,
            &fields(&[("specversion", "1.0")]),
        );
        assert_eq!(no_id, Err(MalformedEntry::Missing("id")));
        let not_envelope =
            Event::from_entry("events:X", EntryId::ZERO, &fields(&[("data", "[1]")]));
        assert!(not_envelope.is_err());
    }

    #[test]
    fn validates_types() {
        assert!(validate_type("AuctionEnded").is_ok());
        assert!(validate_type("workflow.started").is_ok());
        assert!(validate_type("").is_err());
        assert!(validate_type("a b").is_err());
        assert!(validate_type("Pay*").is_err());
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Arbitrary field maps (names, values, counts, invalid UTF-8, JSON-ish text) never
        /// panic the parser: they decode or give a `MalformedEntry`.
        #[test]
        fn parsing_arbitrary_entries_never_panics(
            stream in "(events:)?[A-Za-z.*]{0,12}",
            ms in proptest::num::u64::ANY,
            seq in proptest::num::u64::ANY,
            fields in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just("payload".to_string()),
                        proptest::strategy::Just("data".to_string()),
                        proptest::strategy::Just("id".to_string()),
                        proptest::strategy::Just("type".to_string()),
                        proptest::strategy::Just("specversion".to_string()),
                        "[a-z_]{0,10}",
                    ],
                    proptest::prop_oneof![
                        proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                        "\\{\"(id|type|data|timestamp|metadata|source_agent)\":(\"[a-z]{0,5}\"|[0-9]{1,3}|null|\\{\\}|\\[\\]|\\{\"a\":1\\}),?\\}".prop_map(String::into_bytes),
                    ],
                ),
                0..6,
            ),
        ) {
            let _ = Event::from_entry(&stream, EntryId::new(ms, seq), &fields);
        }
    }
}
