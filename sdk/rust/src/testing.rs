//! Checks for a plugin's own unit tests (they run natively, with `cargo test`).

use crate::{Plugin, Request, Response};

/// Panics unless [`Plugin::HOOKS`] lists exactly the hooks `plugin`'s type overrides.
///
/// It calls each hook once with an empty [`Request`] (and an empty [`Response`] and audit
/// record) and watches whether the trait's default method ran, so the hooks must not panic on
/// an empty request.
///
/// ```
/// # use portcullis_plugin::prelude::*;
/// # struct Mine;
/// # impl Plugin for Mine {
/// #     const NAME: &'static str = "mine";
/// #     const HOOKS: Hooks = Hooks::AUDIT;
/// #     fn new(_: serde_json::Value) -> Result<Self, String> { Ok(Mine) }
/// #     fn on_audit(&self, _: &Request, _: &serde_json::Value) -> Verdict { Verdict::Allow }
/// # }
/// // In a `#[test]` function of the plugin crate:
/// let plugin = Mine::new(serde_json::json!({})).unwrap();
/// portcullis_plugin::testing::assert_hooks(&plugin);
/// ```
pub fn assert_hooks<P: Plugin>(plugin: &P) {
    use crate::__private::ran_default_hook;
    use crate::Hooks;

    let req = Request::default();
    let overridden = [
        (
            Hooks::REQUEST,
            "on_request",
            !ran_default_hook(|| drop(plugin.on_request(&req))),
        ),
        (
            Hooks::RESPONSE,
            "on_response",
            !ran_default_hook(|| drop(plugin.on_response(&req, &Response::default()))),
        ),
        (
            Hooks::AUDIT,
            "on_audit",
            !ran_default_hook(|| drop(plugin.on_audit(&req, &serde_json::json!({})))),
        ),
    ];
    for (flag, name, overridden) in overridden {
        let declared = P::HOOKS.contains(flag);
        assert!(
            declared == overridden,
            "plugin `{}`: {name} is {} but Plugin::HOOKS {} it",
            P::NAME,
            if overridden {
                "overridden"
            } else {
                "not overridden"
            },
            if declared { "lists" } else { "does not list" },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hooks, Verdict};

    struct RequestOnly;
    impl Plugin for RequestOnly {
        const NAME: &'static str = "request-only";
        const HOOKS: Hooks = Hooks::REQUEST;
        fn new(_: serde_json::Value) -> Result<Self, String> {
            Ok(RequestOnly)
        }
        fn on_request(&self, _: &Request) -> Verdict {
            Verdict::Allow
        }
    }

    struct Undeclared;
    impl Plugin for Undeclared {
        const NAME: &'static str = "undeclared";
        const HOOKS: Hooks = Hooks::empty();
        fn new(_: serde_json::Value) -> Result<Self, String> {
            Ok(Undeclared)
        }
        fn on_response(&self, _: &Request, _: &Response) -> Verdict {
            Verdict::deny("no")
        }
    }

    #[test]
    fn matching_declaration_passes() {
        assert_hooks(&RequestOnly);
    }

    #[test]
    #[should_panic(expected = "on_response is overridden but Plugin::HOOKS does not list it")]
    fn undeclared_hook_fails() {
        assert_hooks(&Undeclared);
    }

    #[test]
    #[should_panic(expected = "on_request is not overridden but Plugin::HOOKS lists it")]
    fn declared_default_fails() {
        struct Lazy;
        impl Plugin for Lazy {
            const NAME: &'static str = "lazy";
            const HOOKS: Hooks = Hooks::REQUEST;
            fn new(_: serde_json::Value) -> Result<Self, String> {
                Ok(Lazy)
            }
        }
        assert_hooks(&Lazy);
    }
}
