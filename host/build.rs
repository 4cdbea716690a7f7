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
                env: &[],
            },
            Guest {
                constant: "NOTIFICATION",
                package: "evhost-plugin-notification",
                dir: "plugins/notification",
                env: &[],
            },
            Guest {
                constant: "AUDIT",
                package: "evhost-plugin-audit",
                dir: "plugins/audit",
                env: &[],
            },
            Guest {
                constant: "NOOP",
                package: "evhost-plugin-noop",
                dir: "plugins/noop",
                env: &[],
            },
            Guest {
                constant: "METRICS",
                package: "evhost-plugin-metrics",
                dir: "plugins/metrics",
                env: &[],
            },
        ],
        "example_plugins.rs",
    );
}
