//! The evhost WIT world embedded in the binary, resolved with `wit-parser`.

use wit_parser::{Resolve, WorldId};

use super::GuestToolError;
use crate::scaffold::WIT;

/// Resolves the embedded `wit/` folder and selects the `evhost:plugin/plugin` world.
///
/// # Errors
///
/// [`GuestToolError::Wit`] if the embedded WIT does not resolve (it always does in a build
/// whose tests pass).
pub fn plugin_world() -> Result<(Resolve, WorldId), GuestToolError> {
    let dir = tempfile::tempdir().map_err(|err| GuestToolError::Wit(err.into()))?;
    for (path, contents) in WIT {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| GuestToolError::Wit(err.into()))?;
        }
        std::fs::write(&path, contents).map_err(|err| GuestToolError::Wit(err.into()))?;
    }
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(dir.path().join("wit"))
        .map_err(GuestToolError::Wit)?;
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .map_err(GuestToolError::Wit)?;
    Ok((resolve, world))
}
