//! Tools for building plugins in languages without a component toolchain of their own (C,
//! C++, Zig, ...): bindings for the evhost WIT world, and the wrapping of a core Wasm module
//! into a component. They back `evhost bindgen` and `evhost componentize`, so a C author needs
//! clang and wasi-libc but neither `wit-bindgen-cli` nor `wasm-tools`.

mod bindgen;
mod componentize;
mod wit;

pub use bindgen::{BindingsLanguage, write_bindings};
pub use componentize::componentize;
pub use wit::plugin_world;

use std::path::PathBuf;

/// Why bindings or a component could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GuestToolError {
    /// The embedded WIT world did not resolve (a defect of this build of evhost).
    #[error("the evhost WIT world does not resolve: {0:#}")]
    Wit(anyhow::Error),
    /// The bindings generator failed.
    #[error("cannot generate the bindings: {0:#}")]
    Bindgen(anyhow::Error),
    /// The module is not built against the evhost world.
    #[error("this module is not an evhost plugin: {0}")]
    NotAPlugin(String),
    /// The core module cannot become a component of the evhost world.
    #[error("cannot make a component of this module: {0:#}")]
    Componentize(anyhow::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_bindings_declare_the_handler_export_and_carry_the_world_type() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = write_bindings(BindingsLanguage::C, dir.path()).expect("bindings");
        let names: Vec<_> = files
            .iter()
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect();
        for expected in ["plugin.h", "plugin.c", "plugin_component_type.o"] {
            assert!(names.iter().any(|name| name == expected), "{names:?}");
        }
        let header = std::fs::read_to_string(dir.path().join("plugin.h")).expect("plugin.h");
        assert!(header.contains("bool exports_evhost_plugin_handler_handle("));
        assert!(header.contains("evhost_plugin_publisher_publish("));
    }

    #[test]
    fn componentize_refuses_what_is_not_a_module_of_the_world() {
        let err = componentize(b"not wasm at all").expect_err("garbage");
        assert!(matches!(err, GuestToolError::Componentize(_)), "{err}");
        let err = componentize(b"\0asm\x01\0\0\0").expect_err("a module without the world");
        assert!(matches!(err, GuestToolError::NotAPlugin(_)), "{err}");
        assert!(err.to_string().contains("plugin_component_type.o"), "{err}");
    }
}
