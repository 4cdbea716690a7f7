//! Host-side bindings of the `evhost:plugin/plugin` world, generated once for the whole host.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "evhost:plugin/plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::plugin::capabilities::Bucket,
    },
});
