//! {{name}}: an evhost plugin, written with the evhost SDK (vendored in `evhost-sdk/`).
//!
//! Handles `Ping` events: counts them in the key-value store (key `pings`, an atomic
//! `increment`) and publishes a `Pong` event with the ping's `message`. Data that is not a JSON
//! object is rejected.

use evhost_sdk::prelude::*;

const NAME: &str = "{{name}}";

/// The data of a `Ping` event.
#[derive(Deserialize)]
struct Ping {
    message: Option<serde_json::Value>,
}

struct Pinger;

impl Plugin for Pinger {
    fn describe() -> PluginInfo {
        PluginInfo::new(NAME, env!("CARGO_PKG_VERSION")).subscribe("Ping")
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<()> {
        // Not a JSON object: rejected (dead-lettered), retrying would read the same data.
        let ping: Ping = event.data_json()?;
        // Committed with the event's acknowledgement; concurrent increments add up exactly.
        let count = kv::increment("pings", 1)?;
        publish(
            "Pong",
            &serde_json::json!({ "from": NAME, "message": ping.message, "count": count }),
        )?;
        log::info(format!("ping {count} answered"));
        Ok(())
    }
}

evhost_sdk::export_plugin!(Pinger);
