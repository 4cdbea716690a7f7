//! A core Wasm module with the evhost world's type section becomes a component.

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

use super::GuestToolError;

/// The interface every plugin exports.
const HANDLER_INTERFACE: &str = "evhost:plugin/handler@0.1.0";

/// Wraps `module`, a core Wasm module built with bindings of the evhost world (it embeds the
/// `component-type` custom section those bindings add), into a validated component.
///
/// Imports of WASI preview 1 (`wasi_snapshot_preview1`, as wasi-libc makes them) are served by
/// the reactor adapter of the wasmtime release this host runs, which turns them into WASI 0.2
/// imports. The host denies files, sockets and the environment to plugins whatever they import.
///
/// # Errors
///
/// [`GuestToolError::NotAPlugin`] when the module carries no world type or a world without
/// the `evhost:plugin/handler` export; [`GuestToolError::Componentize`] when the bytes are not a
/// core module, or it imports or exports something its world does not have.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, GuestToolError> {
    let (stripped, bindgen) =
        wit_component::metadata::decode(module).map_err(GuestToolError::Componentize)?;
    if stripped.is_none() {
        return Err(GuestToolError::NotAPlugin(
            "the module has no `component-type` section: link in plugin_component_type.o from \
             `evhost bindgen c`"
                .into(),
        ));
    }
    let world = &bindgen.resolve.worlds[bindgen.world];
    let exports_handler = world
        .exports
        .keys()
        .any(|key| bindgen.resolve.name_world_key(key) == HANDLER_INTERFACE);
    if !exports_handler {
        return Err(GuestToolError::NotAPlugin(format!(
            "its world `{}` does not export {HANDLER_INTERFACE}: build it with the bindings of \
             `evhost bindgen c`",
            world.name
        )));
    }
    let mut encoder = ComponentEncoder::default();
    encoder.validate(true);
    encoder
        .module(module)
        .map_err(GuestToolError::Componentize)?;
    encoder
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .map_err(GuestToolError::Componentize)?;
    encoder.encode().map_err(GuestToolError::Componentize)
}
