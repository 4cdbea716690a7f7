//! The smallest plugin: reads each event and acknowledges it.
//!
//! `evhost bench` uses it to measure the host's own overhead. Its name and subscriptions come
//! from the config values `name` (default `noop`) and `subscriptions` (comma-separated, default
//! `*`).

use evhost_sdk::prelude::*;

/// The plugin.
pub struct Noop;

impl Plugin for Noop {
    fn describe() -> PluginInfo {
        let name = config::get("name").unwrap_or_else(|| "noop".to_owned());
        let subscriptions = config::get("subscriptions").unwrap_or_else(|| "*".to_owned());
        PluginInfo::new(name, env!("CARGO_PKG_VERSION")).subscribe_all(
            subscriptions
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        )
    }

    fn handle(event: Event, _delivery: Delivery) -> Result<()> {
        std::hint::black_box(event.data().len());
        Ok(())
    }
}

evhost_sdk::export_plugin!(Noop);
