//! [`publish`], [`publish_keyed`] and [`publish_raw`]: emit events for other plugins and
//! services.

use serde::Serialize;

use crate::bindings::evhost::plugin::publisher;
use crate::bindings::evhost::plugin::types::OutgoingEvent;
use crate::error::{Error, Result};
use crate::event::short_type_name;

/// Publishes an event of type `event_type` whose data is `data` as JSON; returns the new
/// event's id.
///
/// The host appends the event to the stream `events:<event_type>` and sets its
/// `correlationid` and `causationid`, and its `partitionkey` to that of the event being
/// handled (see [`publish_keyed`] for another key). Publishes are buffered and committed together with the
/// acknowledgement of the event being handled: if the handler fails, nothing is published.
///
/// # Errors
///
/// A *reject* error if `data` cannot be serialized (the same data would fail on every retry);
/// a *retry* error if the host refuses the publish.
pub fn publish<T: Serialize + ?Sized>(event_type: &str, data: &T) -> Result<String> {
    let bytes = serde_json::to_vec(data).map_err(|err| {
        Error::reject(format!(
            "cannot serialize the data of {event_type} ({}) as JSON: {err}",
            short_type_name(std::any::type_name::<T>())
        ))
    })?;
    publish_raw(event_type, bytes, "application/json")
}

/// Publishes like [`publish`], with the partition key `key` (the CloudEvents `partitionkey`
/// extension) instead of the key of the event being handled, which [`publish`] carries on.
///
/// ```
/// # use evhost_sdk::prelude::*;
/// fn pay(auction_id: &str, bidder_id: &str) -> Result<String> {
///     // Keyed by the bidder, so that whoever keeps state per bidder sees it in order.
///     publish_keyed("PaymentProcessed", bidder_id, &serde_json::json!({ "auction_id": auction_id }))
/// }
/// ```
///
/// # Errors
///
/// As [`publish`].
pub fn publish_keyed<T: Serialize + ?Sized>(
    event_type: &str,
    key: &str,
    data: &T,
) -> Result<String> {
    let bytes = serde_json::to_vec(data).map_err(|err| {
        Error::reject(format!(
            "cannot serialize the data of {event_type} ({}) as JSON: {err}",
            short_type_name(std::any::type_name::<T>())
        ))
    })?;
    let event = OutgoingEvent {
        type_: event_type.to_owned(),
        data: bytes,
        datacontenttype: Some("application/json".to_owned()),
        extensions: vec![("partitionkey".to_owned(), key.to_owned())],
    };
    publisher::publish(&event)
        .map_err(|err| Error::retry(format!("publishing {event_type}: {err}")))
}

/// Publishes an event whose data is `data` of media type `content_type`; returns the new
/// event's id.
///
/// # Errors
///
/// A *retry* error if the host refuses the publish.
pub fn publish_raw(
    event_type: &str,
    data: impl Into<Vec<u8>>,
    content_type: &str,
) -> Result<String> {
    let event = OutgoingEvent {
        type_: event_type.to_owned(),
        data: data.into(),
        datacontenttype: Some(content_type.to_owned()),
        extensions: Vec::new(),
    };
    publisher::publish(&event)
        .map_err(|err| Error::retry(format!("publishing {event_type}: {err}")))
}
