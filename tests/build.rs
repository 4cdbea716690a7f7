//! Compiles the test guests (hostile and probing plugins) to Wasm components.

#[path = "../host/guest_build.rs"]
mod guest_build;

use guest_build::Guest;

fn main() {
    guest_build::build(
        &[Guest {
            constant: "PROBE",
            package: "evhost-test-probe",
            dir: "tests/guests/probe",
        }],
        "test_guests.rs",
    );
}
