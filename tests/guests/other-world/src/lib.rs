//! Test guest: a valid component of another world (it exports `run`, not the evhost handler).
//! The host must refuse it with a clear message.

wit_bindgen::generate!({
    inline: "
        package evhost-test:other;

        world other {
            export run: func() -> u32;
        }
    ",
});

/// The component.
struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
