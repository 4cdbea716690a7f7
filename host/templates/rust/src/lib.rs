//! {{name}}: an evhost plugin.
//!
//! Handles `Ping` events: counts them in the key-value store (key `pings`, an atomic
//! `increment`) and publishes a `Pong` event with the ping's `message`. Data that is not a JSON
//! object is rejected.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    // The WASI interfaces are vendored in `wit/deps`: generate their bindings here too.
    generate_all,
});

use evhost::plugin::publisher;
use evhost::plugin::types::{Delivery, Event, HandleError, OutgoingEvent, PluginInfo, RetryLater};
use wasi::keyvalue::{atomics, store};
use wasi::logging::logging::{Level, log};

const NAME: &str = "{{name}}";

struct Plugin;

/// A transient failure: the host delivers the event again later.
fn retry(reason: String) -> HandleError {
    HandleError::Retry(RetryLater {
        reason,
        delay_ms: None,
    })
}

fn kv_error(err: store::Error) -> HandleError {
    retry(format!("key-value store: {err:?}"))
}

impl exports::evhost::plugin::handler::Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            subscriptions: vec!["Ping".to_string()],
        }
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<(), HandleError> {
        let data: serde_json::Value = serde_json::from_slice(&event.data)
            .map_err(|err| HandleError::Reject(format!("event {}: not JSON: {err}", event.id)))?;
        let Some(ping) = data.as_object() else {
            return Err(HandleError::Reject(format!(
                "event {}: data is not a JSON object",
                event.id
            )));
        };
        let bucket = store::open("default").map_err(kv_error)?;
        // Committed with the event's acknowledgement; concurrent increments add up exactly.
        let count = atomics::increment(&bucket, "pings", 1).map_err(kv_error)?;
        let pong = serde_json::json!({
            "from": NAME,
            "message": ping.get("message").cloned().unwrap_or(serde_json::Value::Null),
            "count": count,
        });
        publisher::publish(&OutgoingEvent {
            type_: "Pong".to_string(),
            data: pong.to_string().into_bytes(),
            datacontenttype: None,
            extensions: Vec::new(),
        })
        .map_err(|err| retry(format!("publish: {err}")))?;
        log(Level::Info, NAME, &format!("ping {count} answered"));
        Ok(())
    }
}

export!(Plugin);
