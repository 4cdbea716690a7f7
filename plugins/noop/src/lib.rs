//! The smallest plugin: reads each event and acknowledges it.
//!
//! `evhost bench` uses it to measure the host's own overhead. Its name and subscriptions come
//! from the config values `name` (default `noop`) and `subscriptions` (comma-separated, default
//! `*`).
//!
//! With the config value `count`, it also counts every event in its key-value entry `total`:
//! `get-set` reads and rewrites it (a read-modify-write, which conflicts when consumers race),
//! `increment` adds 1 atomically. The benchmark measures a hot key with both.

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
        // Read once per instance: the trivial measurement must not pay a host call per event.
        static COUNT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        match COUNT.get_or_init(|| config::get("count")).as_deref() {
            Some("get-set") => {
                let total: u64 = kv::get_json("total")?.unwrap_or(0);
                kv::set_json("total", &(total + 1))
            }
            Some("increment") => kv::increment("total", 1).map(|_| ()),
            _ => Ok(()),
        }
    }
}

evhost_sdk::export_plugin!(Noop);
