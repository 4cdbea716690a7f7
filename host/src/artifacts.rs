//! The example plugins (payment, notification, audit, metrics, and `noop` for the benchmark),
//! compiled to Wasm components by the build script and embedded in the binary, so that
//! `evhost demo`, `evhost examples` and `evhost bench` need nothing else.

include!(concat!(env!("OUT_DIR"), "/example_plugins.rs"));

/// File name of each example plugin: `payment.wasm`, ...
pub fn examples() -> [(&'static str, &'static [u8]); 4] {
    [
        ("payment", PAYMENT),
        ("notification", NOTIFICATION),
        ("audit", AUDIT),
        ("metrics", METRICS),
    ]
}
