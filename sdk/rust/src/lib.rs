//! Write portcullis gateway plugins in Rust.
//!
//! A plugin is a WebAssembly component that the gateway runs, sandboxed, on every Docker
//! Engine API request its configuration selects. This crate turns the WIT contract in
//! `sdk/wit/0.2.0/plugin.wit` (`portcullis:plugin@0.2.0`) into a trait and a few friendly types:
//! implement [`Plugin`], call [`export_plugin!`], build for `wasm32-wasip2`.
//!
//! ```
//! use portcullis_plugin::prelude::*;
//!
//! /// Refuses `docker run --privileged` and host bind mounts under `/etc`.
//! struct NoPrivileged {
//!     /// Bind-mount sources that are refused, from the plugin's `config` table.
//!     denied_sources: Vec<String>,
//! }
//!
//! impl Plugin for NoPrivileged {
//!     const NAME: &'static str = "no-privileged";
//!     // Only `on_request` is overridden below, so only `on-request` is called.
//!     const HOOKS: Hooks = Hooks::REQUEST;
//!
//!     fn new(config: serde_json::Value) -> Result<Self, String> {
//!         let denied_sources = match config.get("denied_sources") {
//!             Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("denied_sources: {e}"))?,
//!             None => vec!["/etc".to_owned()],
//!         };
//!         Ok(NoPrivileged { denied_sources })
//!     }
//!
//!     fn on_request(&self, req: &Request) -> Verdict {
//!         let Some(create) = req.container_create() else { return Verdict::Allow };
//!         if create.host_config.privileged {
//!             return Verdict::deny("privileged containers are not allowed");
//!         }
//!         for source in create.host_config.bind_sources() {
//!             if self.denied_sources.iter().any(|d| source.starts_with(d.as_str())) {
//!                 log::warn!("{} tried to mount {source}", req.caller.user);
//!                 return Verdict::deny(format!("bind mounts of {source} are not allowed"));
//!             }
//!         }
//!         Verdict::Allow
//!     }
//! }
//!
//! export_plugin!(NoPrivileged);
//!
//! // The same code runs natively in unit tests.
//! let plugin = NoPrivileged::new(serde_json::json!({})).unwrap();
//! let req = Request::new("POST", "/containers/create", "container.create")
//!     .with_json_body(&serde_json::json!({"Image": "busybox", "HostConfig": {"Privileged": true}}));
//! assert_eq!(plugin.on_request(&req), Verdict::deny("privileged containers are not allowed"));
//! portcullis_plugin::testing::assert_hooks(&plugin);
//! ```
//!
//! # Layout
//!
//! - [`Plugin`] and [`export_plugin!`]: what a plugin implements and how it is exported.
//! - [`Request`], [`Response`], [`Caller`], [`Target`], [`Reference`]: what the gateway hands
//!   a plugin.
//! - [`docker`]: typed, tolerant views of the request bodies policies care about
//!   ([`Request::container_create`], [`Request::exec_create`], [`Request::service_spec`]).
//! - [`Verdict`] and [`Patch`]: what a plugin answers (allow, deny, or a JSON Patch plus
//!   header and query edits).
//! - [`log`]: lines in the gateway's log, through the `host.log` import.
//! - [`testing`]: checks for a plugin's own unit tests.
//!
//! # How the gateway calls a plugin
//!
//! Every request runs on a fresh instance: `init` (which builds your type with
//! [`Plugin::new`] from the `config` table) then its hook. A request's `on_response` usually
//! runs in the instance its `on_request` ran in, but not always (the gateway may have had no
//! room to keep it). Nothing survives between requests, so keep `new` cheap and keep no state
//! you expect to see again. The hooks the gateway calls
//! are the ones [`Plugin::HOOKS`] lists; see there for why they are declared rather than
//! detected.

mod message;
mod verdict;

pub mod docker;
pub mod log;
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use message::{AuthMethod, Caller, Pair, Reference, Request, Response, Target};
pub use verdict::{json_pointer, Denial, Edit, Patch, Verdict};

/// The hooks a plugin implements, as reported by `describe`: [`Hooks::REQUEST`],
/// [`Hooks::RESPONSE`], [`Hooks::AUDIT`]. Combine them in a `const` with
/// [`Hooks::union`] (`Hooks::REQUEST.union(Hooks::AUDIT)`).
pub use bindings::portcullis::plugin::types::Hooks;

/// The JSON library the SDK speaks, for plugins that do not depend on it themselves.
pub use serde_json;

/// The bindings generated from the WIT package. Not part of the API: use the types above.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "portcullis:plugin/plugin",
        // The `export!` macro is invoked from the plugin's crate by `export_plugin!`.
        pub_export_macro: true,
        export_macro_name: "__export_policy",
    });
}

/// Everything a plugin usually needs, for `use portcullis_plugin::prelude::*;`.
pub mod prelude {
    pub use crate::docker::{
        ContainerCreate, ExecCreate, HostConfig, LabelFields, Mount, ServiceSpec,
    };
    pub use crate::log;
    pub use serde_json::{json, Value};

    pub use crate::{
        export_plugin, json_pointer, Caller, Hooks, Patch, Plugin, Reference, Request, Response,
        Target, Verdict,
    };
}

/// A portcullis plugin.
///
/// Implement it for your type and export the type with [`export_plugin!`]. The gateway calls
/// [`Plugin::new`] with the plugin's configuration, then one of the hooks listed in
/// [`Plugin::HOOKS`]. A hook that is not overridden allows everything.
///
/// A panic in any method traps the plugin; the gateway then fails the request closed
/// (unless the operator configured the plugin to fail open) and logs the panic message.
pub trait Plugin: Sized + 'static {
    /// A short name, e.g. `baseline`; the gateway prefixes denial messages with it.
    const NAME: &'static str;

    /// The plugin's own version. Empty (the default) means the version of the crate that
    /// invokes [`export_plugin!`] (its `CARGO_PKG_VERSION`).
    const VERSION: &'static str = "";

    /// The hooks the gateway should call: exactly the ones this type overrides.
    ///
    /// Rust cannot tell at compile time whether a default trait method was overridden, so
    /// the plugin declares it. There is deliberately no default: a hook that is overridden but
    /// not declared would silently never run, and a policy that never runs is worse than a
    /// compile error. Declaring a hook you did not override is harmless but costs an instance
    /// per call. [`testing::assert_hooks`] checks the declaration in a unit test.
    const HOOKS: Hooks;

    /// Builds the plugin from its `config` table (JSON; `null` when the gateway configuration
    /// has none). Runs on every fresh instance before a hook, and once when the gateway starts:
    /// an `Err` there stops the gateway with this message, so say what is wrong and where.
    fn new(config: serde_json::Value) -> Result<Self, String>;

    /// Judges a request before it is forwarded to the engine: allow, deny, or (for plugins
    /// configured as `mutate`) patch it.
    fn on_request(&self, req: &Request) -> Verdict {
        let _ = req;
        __private::default_hook_ran();
        Verdict::Allow
    }

    /// Judges or rewrites the engine's response to `req` before the client gets it.
    fn on_response(&self, req: &Request, resp: &Response) -> Verdict {
        let _ = (req, resp);
        __private::default_hook_ran();
        Verdict::Allow
    }

    /// Shapes the audit record of `req` (a JSON object): a [`Patch`] adds or redacts fields.
    /// A denial is ignored (the record is always written).
    fn on_audit(&self, req: &Request, record: &serde_json::Value) -> Verdict {
        let _ = (req, record);
        __private::default_hook_ran();
        Verdict::Allow
    }
}

/// Exports a [`Plugin`] type as the component's `portcullis:plugin/policy` implementation.
///
/// Invoke it once, at the top level of the plugin's `cdylib` crate:
///
/// ```ignore
/// export_plugin!(NoPrivileged);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct PortcullisExport;

            impl $crate::__private::Guest for PortcullisExport {
                fn describe() -> $crate::__private::Info {
                    $crate::__private::describe::<$plugin>(::core::env!("CARGO_PKG_VERSION"))
                }
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$plugin>(config)
                }
                fn on_request(
                    request: $crate::__private::WitRequest,
                ) -> $crate::__private::WitVerdict {
                    $crate::__private::on_request::<$plugin>(request)
                }
                fn on_response(
                    request: $crate::__private::WitRequest,
                    response: $crate::__private::WitResponse,
                ) -> $crate::__private::WitVerdict {
                    $crate::__private::on_response::<$plugin>(request, response)
                }
                fn on_audit(
                    request: $crate::__private::WitRequest,
                    record: ::std::string::String,
                ) -> $crate::__private::WitVerdict {
                    $crate::__private::on_audit::<$plugin>(request, record)
                }
            }

    $crate::bindings::__export_policy!(PortcullisExport with_types_in $crate::bindings);
        };
    };
}
