//! [`Event`] and [`Delivery`]: what a handler receives.

use serde::de::DeserializeOwned;

use crate::bindings::evhost::plugin::types;
use crate::error::{Error, Result};

/// The extension attribute holding the id shared by every event of one business flow.
pub const CORRELATION_ID: &str = "correlationid";

/// The extension attribute holding the id of the event that caused this one.
pub const CAUSATION_ID: &str = "causationid";

/// An event as a plugin sees it: a CloudEvents 1.0 style envelope around a payload.
///
/// ```
/// use evhost_sdk::Event;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct BidPlaced {
///     amount: f64,
/// }
///
/// let event = Event::new("e-1", "BidPlaced", r#"{"amount": 12.5}"#)
///     .with_extension("correlationid", "flow-9");
/// assert_eq!(event.event_type(), "BidPlaced");
/// assert_eq!(event.correlation_id(), Some("flow-9"));
///
/// let bid: BidPlaced = event.data_json()?;
/// assert_eq!(bid.amount, 12.5);
///
/// // Data of the wrong shape is the event's fault: a *reject* error.
/// let bad = Event::new("e-2", "BidPlaced", r#"{"amount": "lots"}"#);
/// assert!(bad.data_json::<BidPlaced>().unwrap_err().is_reject());
/// # Ok::<(), evhost_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The envelope as the host sent it; the accessors borrow from it.
    inner: types::Event,
}

impl Event {
    /// Builds an event by hand, e.g. to unit-test a handler natively.
    ///
    /// The source and time are empty, the spec version is `1.0`, the content type is
    /// `application/json` and there are no extensions; the `with_*` methods change them.
    pub fn new(
        id: impl Into<String>,
        event_type: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            inner: types::Event {
                id: id.into(),
                type_: event_type.into(),
                source: String::new(),
                time: String::new(),
                specversion: "1.0".into(),
                datacontenttype: "application/json".into(),
                data: data.into(),
                extensions: Vec::new(),
            },
        }
    }

    /// Sets the source (builder style).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.inner.source = source.into();
        self
    }

    /// Sets the time, RFC 3339 (builder style).
    #[must_use]
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.inner.time = time.into();
        self
    }

    /// Sets the media type of the data (builder style).
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.inner.datacontenttype = content_type.into();
        self
    }

    /// Adds an extension attribute (builder style).
    #[must_use]
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.extensions.push((name.into(), value.into()));
        self
    }

    /// Unique id of the event (a UUID for events evhost creates).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Event type, e.g. `AuctionEnded`; the event came from the stream `events:<type>`.
    pub fn event_type(&self) -> &str {
        &self.inner.type_
    }

    /// Who produced the event: a plugin name, a service, `evhost-cli`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// When the event happened, RFC 3339.
    pub fn time(&self) -> &str {
        &self.inner.time
    }

    /// CloudEvents spec version, `1.0`.
    pub fn spec_version(&self) -> &str {
        &self.inner.specversion
    }

    /// Media type of [`data`](Event::data), usually `application/json`.
    pub fn content_type(&self) -> &str {
        &self.inner.datacontenttype
    }

    /// The payload, as bytes.
    pub fn data(&self) -> &[u8] {
        &self.inner.data
    }

    /// The payload, taken out of the event.
    pub fn into_data(self) -> Vec<u8> {
        self.inner.data
    }

    /// The payload parsed as JSON into `T`.
    ///
    /// # Errors
    ///
    /// A *reject* error naming `T` and the parser's message when the data is not valid JSON
    /// or does not fit `T`: the same data would fail again on every retry.
    pub fn data_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.inner.data).map_err(|err| {
            Error::reject(format!(
                "event {} ({}): data is not a valid {}: {err}",
                self.inner.id,
                self.inner.type_,
                short_type_name(std::any::type_name::<T>()),
            ))
        })
    }

    /// The value of the extension attribute `name`, if present.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.inner
            .extensions
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All extension attributes, in the order the host sent them.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .extensions
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The id shared by every event of one business flow (extension `correlationid`).
    pub fn correlation_id(&self) -> Option<&str> {
        self.extension(CORRELATION_ID)
    }

    /// The id of the event that caused this one (extension `causationid`).
    pub fn causation_id(&self) -> Option<&str> {
        self.extension(CAUSATION_ID)
    }

    /// The raw WIT record.
    pub fn as_wit(&self) -> &types::Event {
        &self.inner
    }
}

impl From<types::Event> for Event {
    fn from(inner: types::Event) -> Self {
        Self { inner }
    }
}

/// Where and how often an event was delivered.
///
/// ```
/// use evhost_sdk::Delivery;
///
/// let delivery = Delivery::new("events:AuctionEnded", "1700000000000-0", 2, "payment");
/// assert!(delivery.is_redelivery());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The record as the host sent it; the accessors borrow from it.
    inner: types::Delivery,
}

impl Delivery {
    /// Builds a delivery by hand, e.g. to unit-test a handler natively.
    pub fn new(
        stream: impl Into<String>,
        entry_id: impl Into<String>,
        attempt: u32,
        group: impl Into<String>,
    ) -> Self {
        Self {
            inner: types::Delivery {
                stream: stream.into(),
                entry_id: entry_id.into(),
                attempt,
                group: group.into(),
            },
        }
    }

    /// The Redis stream the entry was read from, e.g. `events:AuctionEnded`.
    pub fn stream(&self) -> &str {
        &self.inner.stream
    }

    /// The stream entry id, e.g. `1700000000000-0`.
    pub fn entry_id(&self) -> &str {
        &self.inner.entry_id
    }

    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// `true` when this event was delivered before (attempt 2 or later).
    pub fn is_redelivery(&self) -> bool {
        self.inner.attempt > 1
    }

    /// The consumer group: the plugin's name.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The raw WIT record.
    pub fn as_wit(&self) -> &types::Delivery {
        &self.inner
    }
}

impl From<types::Delivery> for Delivery {
    fn from(inner: types::Delivery) -> Self {
        Self { inner }
    }
}

/// `my_plugin::model::Order<alloc::string::String>` → `Order<String>`: type names without
/// their module paths, for error messages.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut short = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            short.push_str(segment.rsplit("::").next().unwrap_or_default());
            segment.clear();
            short.push(c);
        }
    }
    short.push_str(segment.rsplit("::").next().unwrap_or_default());
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Order {
        id: u64,
        item: String,
    }

    /// Well-formed JSON parses into the asked type.
    #[test]
    fn data_json_parses() {
        let event = Event::new("e-1", "OrderPlaced", r#"{"id": 7, "item": "lamp"}"#);
        assert_eq!(
            event.data_json::<Order>(),
            Ok(Order {
                id: 7,
                item: "lamp".into()
            })
        );
    }

    /// Invalid JSON and missing fields are reject errors naming the event, the type and the
    /// parser's complaint.
    #[test]
    fn data_json_rejects_bad_data() {
        let err = Event::new("e-2", "OrderPlaced", "not json")
            .data_json::<Order>()
            .expect_err("must fail");
        assert!(err.is_reject());
        assert!(
            err.message()
                .starts_with("event e-2 (OrderPlaced): data is not a valid Order: expected"),
            "{err}"
        );

        let err = Event::new("e-3", "OrderPlaced", r#"{"id": 7}"#)
            .data_json::<Order>()
            .expect_err("must fail");
        assert!(err.is_reject());
        assert!(err.message().contains("missing field `item`"), "{err}");
    }

    /// Extensions are looked up by name; correlation and causation ids are extensions.
    #[test]
    fn extensions() {
        let event = Event::new("e", "T", "{}")
            .with_extension(CORRELATION_ID, "c-1")
            .with_extension(CAUSATION_ID, "e-0")
            .with_extension("tenant", "acme");
        assert_eq!(event.correlation_id(), Some("c-1"));
        assert_eq!(event.causation_id(), Some("e-0"));
        assert_eq!(event.extension("tenant"), Some("acme"));
        assert_eq!(event.extension("missing"), None);
        assert_eq!(event.extensions().count(), 3);
    }

    /// The builder sets every envelope attribute.
    #[test]
    fn builder() {
        let event = Event::new("e", "T", vec![1, 2])
            .with_source("svc")
            .with_time("2026-01-01T00:00:00Z")
            .with_content_type("application/octet-stream");
        assert_eq!(
            (
                event.id(),
                event.event_type(),
                event.source(),
                event.time(),
                event.content_type(),
                event.spec_version()
            ),
            (
                "e",
                "T",
                "svc",
                "2026-01-01T00:00:00Z",
                "application/octet-stream",
                "1.0"
            )
        );
        assert_eq!(event.data(), &[1, 2]);
        assert_eq!(event.into_data(), vec![1, 2]);
    }

    /// Module paths are stripped from type names, also inside generics.
    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name("my_plugin::model::Order"), "Order");
        assert_eq!(
            short_type_name(
                "serde_json::map::Map<alloc::string::String, serde_json::value::Value>"
            ),
            "Map<String, Value>"
        );
        assert_eq!(short_type_name("u32"), "u32");
    }
}
