//! Compiles the test guests (hostile and probing plugins) to Wasm components.

#[path = "../host/guest_build.rs"]
mod guest_build;

use guest_build::Guest;

fn main() {
    guest_build::build(
        &[
            Guest {
                constant: "PROBE",
                package: "evhost-test-probe",
                dir: "tests/guests/probe",
                env: &[],
            },
            Guest {
                constant: "OTHER_WORLD",
                package: "evhost-test-other-world",
                dir: "tests/guests/other-world",
                env: &[],
            },
            // The same probe reporting version 2: a different component to hot-swap to.
            Guest {
                constant: "PROBE_V2",
                package: "evhost-test-probe",
                dir: "tests/guests/probe",
                env: &[("EVHOST_PROBE_VERSION", "2")],
            },
        ],
        "test_guests.rs",
    );
    // Where the tests cache the plugins they build with other toolchains (see script_build.rs).
    let target = guest_build::target_root(&guest_build::workspace_root());
    println!("cargo:rustc-env=EVHOST_TARGET_DIR={}", target.display());
}
