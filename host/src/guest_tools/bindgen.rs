//! Guest bindings of the evhost world for languages that `wit-bindgen` supports as a library.

use std::path::{Path, PathBuf};

use super::{GuestToolError, plugin_world};

/// A language `evhost bindgen` writes bindings for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BindingsLanguage {
    /// C (and C++): `plugin.h`, `plugin.c` and `plugin_component_type.o`, from `wit-bindgen-c`.
    C,
}

/// Writes the bindings of the evhost world for `language` into `dir` (created if missing);
/// returns the files written.
///
/// For C, `plugin_component_type.o` must be linked into the module: it carries the world's
/// type, which [`componentize`](super::componentize) reads.
///
/// # Errors
///
/// [`GuestToolError::Bindgen`] if generation fails, [`GuestToolError::Write`] if a file
/// cannot be written.
pub fn write_bindings(
    language: BindingsLanguage,
    dir: &Path,
) -> Result<Vec<PathBuf>, GuestToolError> {
    let (mut resolve, world) = plugin_world()?;
    let mut files = wit_bindgen_core::Files::default();
    let mut generator = match language {
        BindingsLanguage::C => wit_bindgen_c::Opts::default().build(),
    };
    generator
        .generate(&mut resolve, world, &mut files)
        .map_err(GuestToolError::Bindgen)?;
    std::fs::create_dir_all(dir).map_err(|source| GuestToolError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, contents) in files.iter() {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|source| GuestToolError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
