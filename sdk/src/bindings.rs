//! The raw bindings that `wit_bindgen::generate!` produces for the `evhost:plugin/plugin` world.
//!
//! Plugins rarely need these: the rest of this crate wraps every import and the `handler`
//! export. They are public so that a plugin can reach a capability the wrappers do not cover
//! yet, and because [`export_plugin!`](crate::export_plugin) expands to code that names them.
#![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]

wit_bindgen::generate!({
    world: "plugin",
    path: "../wit",
    // The WASI interfaces are vendored in `wit/deps`: generate their bindings here too.
    generate_all,
    // Lets `Event`, `Delivery` and handler results be compared in tests.
    additional_derives: [PartialEq, Eq],
    pub_export_macro: true,
    default_bindings_module: "evhost_sdk::bindings",
});
