//! Compiles the example plugins to Wasm components and embeds them (see `guest_build.rs`).

#[path = "guest_build.rs"]
mod guest_build;

use guest_build::Guest;

fn main() {
    guest_build::build(
        &[
            Guest {
                constant: "PAYMENT",
                package: "evhost-plugin-payment",
                dir: "plugins/payment",
            },
            Guest {
                constant: "NOTIFICATION",
                package: "evhost-plugin-notification",
                dir: "plugins/notification",
            },
            Guest {
                constant: "AUDIT",
                package: "evhost-plugin-audit",
                dir: "plugins/audit",
            },
            Guest {
                constant: "METRICS",
                package: "evhost-plugin-metrics",
                dir: "plugins/metrics",
            },
        ],
        "example_plugins.rs",
    );
}
