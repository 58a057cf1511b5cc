//! Host bindings generated from the WIT packages in `sdk/wit/<version>/`, the single
//! definition of the plugin contract: one module per supported contract version, each
//! converting its generated types to and from [`crate::model`]. A released version is frozen;
//! a new version is a new directory and a new module here, and nothing else in the host names
//! generated types.

pub mod v0_2_0;

pub use v0_2_0 as latest;

/// The contract version this host speaks, as it appears in export names.
pub const CONTRACT_VERSION: &str = latest::VERSION;
/// The interface a plugin must export.
pub const POLICY_INTERFACE: &str = latest::POLICY_INTERFACE;
