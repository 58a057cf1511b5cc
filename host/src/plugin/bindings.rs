//! Host bindings generated from the WIT package in `sdk/wit/`, the single definition of the
//! plugin contract. One module per supported contract version; a released version is frozen.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
});

/// The contract version this host speaks, as it appears in export names.
pub const CONTRACT_VERSION: &str = "0.2.0";
/// The interface a plugin must export.
pub const POLICY_INTERFACE: &str = "portcullis:plugin/policy";

pub use portcullis::plugin::types;
