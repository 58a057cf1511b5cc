//! The glue [`export_plugin!`](crate::export_plugin) expands to: the generated `Guest` trait's
//! functions, written once here as generics over [`Plugin`]. Not part of the API.

use std::any::Any;
use std::cell::{Cell, RefCell};

use crate::bindings::exports::portcullis::plugin::policy;
use crate::{Plugin, Request, Response, Verdict};

pub use policy::Guest;
pub use policy::{Info, Request as WitRequest, Response as WitResponse, Verdict as WitVerdict};

thread_local! {
    /// The plugin built by the last `init` on this instance. A component instance is
    /// single-threaded and the gateway uses each for one call, so this lives for one call.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// Set by the default hook methods, so [`crate::testing::assert_hooks`] can tell which
    /// hooks a type overrides.
    static DEFAULT_HOOK_RAN: Cell<bool> = const { Cell::new(false) };
}

/// `describe`: the plugin's name, version and declared hooks.
pub fn describe<P: Plugin>(crate_version: &str) -> Info {
    let version = if P::VERSION.is_empty() {
        crate_version
    } else {
        P::VERSION
    };
    Info {
        name: P::NAME.to_owned(),
        version: version.to_owned(),
        hooks: P::HOOKS,
    }
}

/// `init`: parses the configuration and builds the plugin for the hooks that follow.
pub fn init<P: Plugin>(config: String) -> Result<(), String> {
    let config = parse_config(&config)?;
    let plugin = P::new(config)?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

/// The configuration as JSON; empty text (no `config` table) is `null`.
pub(crate) fn parse_config(config: &str) -> Result<serde_json::Value, String> {
    if config.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(config)
        .map_err(|e| format!("the plugin configuration is not valid JSON: {e}"))
}

/// `on-request`.
pub fn on_request<P: Plugin>(request: WitRequest) -> WitVerdict {
    let request = Request::from(request);
    with_plugin::<P>(|p| p.on_request(&request))
}

/// `on-response`.
pub fn on_response<P: Plugin>(request: WitRequest, response: WitResponse) -> WitVerdict {
    let (request, response) = (Request::from(request), Response::from(response));
    with_plugin::<P>(|p| p.on_response(&request, &response))
}

/// `on-audit`.
pub fn on_audit<P: Plugin>(request: WitRequest, record: String) -> WitVerdict {
    let request = Request::from(request);
    let record = match serde_json::from_str(&record) {
        Ok(record) => record,
        Err(e) => {
            // The gateway always sends an object; if it ever does not, shaping the record
            // is impossible, and the record is written anyway.
            crate::log::log(
                crate::log::Level::Error,
                &format!("the audit record is not JSON ({e}); left unchanged"),
            );
            return Verdict::Allow.into();
        }
    };
    with_plugin::<P>(|p| p.on_audit(&request, &record))
}

/// Runs a hook on the plugin `init` built. A hook without a prior successful `init` is a
/// gateway bug; the request is refused rather than judged by a plugin that does not exist.
fn with_plugin<P: Plugin>(hook: impl FnOnce(&P) -> Verdict) -> WitVerdict {
    INSTANCE
        .with(|slot| {
            let slot = slot.borrow();
            match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
                Some(plugin) => hook(plugin),
                None => Verdict::deny_with(500, "the plugin was called before a successful init"),
            }
        })
        .into()
}

/// Called by the default hook methods of [`Plugin`].
pub fn default_hook_ran() {
    DEFAULT_HOOK_RAN.with(|flag| flag.set(true));
}

/// Runs `hook` and says whether it was a default method.
pub(crate) fn ran_default_hook(hook: impl FnOnce()) -> bool {
    DEFAULT_HOOK_RAN.with(|flag| flag.set(false));
    hook();
    DEFAULT_HOOK_RAN.with(|flag| flag.replace(false))
}
