//! The plugin's journal: an append-only, durable record log.
//!
//! The host writes each record to the stream `evhost:journal:<plugin>`, outside the `events:`
//! namespace, so a record triggers no plugin. Appends are committed together with the
//! acknowledgement of the event being handled: if the handler fails, nothing is appended.
//!
//! ```
//! use evhost_sdk::prelude::*;
//!
//! fn record(event: &Event) -> Result<()> {
//!     journal::append(&[("event_id", event.id()), ("type", event.event_type())])
//! }
//! ```

use crate::bindings::evhost::plugin::journal;
use crate::error::{Error, Result};

/// Appends one record made of `fields` (name, value pairs, in order).
///
/// # Errors
///
/// A *retry* error if the host refuses the append.
pub fn append(fields: &[(&str, &str)]) -> Result<()> {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    journal::append(&fields).map_err(|err| Error::retry(format!("journal append: {err}")))
}
