//! `portcullis-testkit-plugin`: one plugin whose behaviour its configuration chooses, so the
//! gateway's integration tests can exercise every kind of plugin outcome (allow, deny, patch,
//! filter, trap, timeout, memory cap, malformed verdict) with a single component.
//!
//! Build it with `cargo build --release --target wasm32-wasip2 -p portcullis-testkit-plugin`;
//! the component is `$CARGO_TARGET_DIR/wasm32-wasip2/release/portcullis_testkit_plugin.wasm`.
//!
//! # Configuration
//!
//! The plugin's `config` table is an object with an `action` and that action's fields:
//!
//! | `action` | fields | what it does |
//! |---|---|---|
//! | `allow` | | allows everything |
//! | `deny` | `message` (default `denied by testkit`), `status` (default 403) | denies every request |
//! | `patch-label` | `key`, `value` | on `container.create`, sets the label `key` to `value` with a JSON Patch (adds the whole `Labels` object when it is absent or `null`) |
//! | `label-caller` | `key` | on `container.create`, sets the label `key` to the caller as the plugin sees it: `user=<user> groups=<g1,g2> auth=<auth-method>` |
//! | `deny-if-label` | `key` | denies `container.create` when the body has the label `key` |
//! | `deny-if` | `pointer`, `equals` | denies when the JSON body's value at the RFC 6901 `pointer` equals `equals` |
//! | `filter-list` | `name_prefix` | in the response to `container.list`, removes the containers with a name starting with `/<name_prefix>` (JSON Patch `remove` ops, highest index first) |
//! | `trap` | | panics (the panic message goes to stderr, then the instance traps) |
//! | `spin` | | loops forever, until the gateway's deadline interrupts it |
//! | `hog` | `mb` | allocates and writes `mb` MiB, to run into the memory cap; allows if it survives |
//! | `bad-verdict` | | returns a patch whose body is not a valid JSON Patch (an unknown `op`) |
//! | `count` | | denies with `call <n>`, `n` counting the hook calls this instance has seen: always 1 on a fresh instance, growing on a reused one (`[plugins.reuse]`) |
//! | `tally` | | counts every hook call this instance runs (whatever its hook); in its own hook (default `response`) sets the header `x-testkit-calls` to that count: 2 in the response hook when the request hook ran in the same instance |
//!
//! Two optional fields work with every action:
//!
//! - `hook`: `request`, `response` or `audit`, the hook the action runs in (default: `response`
//!   for `filter-list`, `request` for the others). In every other hook the plugin allows. The
//!   plugin declares all three hooks, so the gateway calls each of them.
//! - `log`: a line written through `host.log` (at `info`) on every hook call.
//!
//! For example `{"action": "deny", "message": "no", "status": 401}` or
//! `{"action": "trap", "hook": "response"}`. Unknown actions or fields fail `init`, so a typo
//! in a test's configuration stops the gateway instead of passing silently.

use portcullis_plugin::prelude::*;
use serde::Deserialize;

/// The testkit plugin, built from its configuration.
struct Testkit {
    action: Action,
    hook: Hook,
    log: Option<String>,
}

/// What the plugin does in its hook: the configuration minus `hook` and `log`.
#[derive(Debug, Deserialize)]
///
/// Variants without fields are written `{}` so that `deny_unknown_fields` covers them too.
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
enum Action {
    Allow {},
    Deny {
        #[serde(default = "default_message")]
        message: String,
        #[serde(default = "default_status")]
        status: u16,
    },
    PatchLabel {
        key: String,
        value: String,
    },
    DenyIfLabel {
        key: String,
    },
    /// Denies when the JSON body's value at `pointer` (RFC 6901) equals `equals`: a plugin
    /// that reads canonical field names only, as real policies do.
    DenyIf {
        pointer: String,
        equals: Value,
    },
    LabelCaller {
        key: String,
    },
    FilterList {
        name_prefix: String,
    },
    Trap {},
    Spin {},
    Hog {
        mb: usize,
    },
    BadVerdict {},
    Count {},
    Tally {},
}

/// The hook an action runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Hook {
    Request,
    Response,
    Audit,
}

fn default_message() -> String {
    "denied by testkit".to_owned()
}

fn default_status() -> u16 {
    403
}

impl Plugin for Testkit {
    const NAME: &'static str = "testkit";
    const HOOKS: Hooks = Hooks::all();

    fn new(config: Value) -> Result<Self, String> {
        let error = |e: serde_json::Error| format!("testkit configuration: {e}");
        // `hook` and `log` are taken out first: serde cannot combine a flattened tagged enum
        // with `deny_unknown_fields`.
        let Value::Object(mut config) = config else {
            return Err("testkit configuration: expected a table with an `action`".to_owned());
        };
        let hook: Option<Hook> = config
            .remove("hook")
            .map(serde_json::from_value)
            .transpose()
            .map_err(error)?;
        let log: Option<String> = config
            .remove("log")
            .map(serde_json::from_value)
            .transpose()
            .map_err(error)?;
        let action: Action = serde_json::from_value(Value::Object(config)).map_err(error)?;
        let default_hook = match action {
            Action::FilterList { .. } | Action::Tally {} => Hook::Response,
            _ => Hook::Request,
        };
        Ok(Testkit {
            action,
            hook: hook.unwrap_or(default_hook),
            log,
        })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        self.run(Hook::Request, req, None)
    }

    fn on_response(&self, req: &Request, resp: &Response) -> Verdict {
        self.run(Hook::Response, req, Some(resp))
    }

    fn on_audit(&self, req: &Request, _record: &Value) -> Verdict {
        self.run(Hook::Audit, req, None)
    }
}

impl Testkit {
    fn run(&self, hook: Hook, req: &Request, resp: Option<&Response>) -> Verdict {
        if let Some(line) = &self.log {
            log::info!("{line}");
        }
        // Counted in every hook, before the hook check: `tally` shows which calls shared
        // an instance.
        let tally = TALLY.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if hook != self.hook {
            return Verdict::Allow;
        }
        match &self.action {
            Action::Allow {} => Verdict::Allow,
            Action::Deny { message, status } => Verdict::deny_with(*status, message.clone()),
            Action::PatchLabel { key, value } => patch_label(req, key, value),
            Action::LabelCaller { key } => {
                let c = &req.caller;
                let auth = serde_json::to_value(c.auth)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let value = format!("user={} groups={} auth={auth}", c.user, c.groups.join(","));
                patch_label(req, key, &value)
            }
            Action::DenyIfLabel { key } => match req.container_create() {
                Some(c) if c.labels.contains_key(key) => {
                    Verdict::deny(format!("the label {key} is not allowed"))
                }
                _ => Verdict::Allow,
            },
            Action::DenyIf { pointer, equals } => match req.json_body() {
                Some(body) if body.pointer(pointer) == Some(equals) => {
                    Verdict::deny(format!("{pointer} is {equals}"))
                }
                _ => Verdict::Allow,
            },
            Action::FilterList { name_prefix } => match resp {
                Some(resp) if req.endpoint == "container.list" => filter_list(resp, name_prefix),
                _ => Verdict::Allow,
            },
            Action::Trap {} => panic!("testkit: trap requested"),
            #[allow(clippy::empty_loop)]
            Action::Spin {} => loop {},
            Action::Hog { mb } => {
                let memory = vec![0x5au8; mb.saturating_mul(1 << 20)];
                // Keeps the allocation and its writes from being optimized away.
                std::hint::black_box(&memory);
                Verdict::Allow
            }
            Action::BadVerdict {} => Patch::new()
                .op(json!({"op": "explode", "path": "/Image"}))
                .into(),
            Action::Tally {} => Patch::new()
                .set_header("x-testkit-calls", tally.to_string())
                .into(),
            Action::Count {} => {
                // State that outlives a call only when the gateway reuses the instance.
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Verdict::deny(format!("call {n}"))
            }
        }
    }
}

/// Hook calls of any kind this instance has run (`tally`).
static TALLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Hook calls this instance has run the `count` action in.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the label `key` on a `container.create` body.
fn patch_label(req: &Request, key: &str, value: &str) -> Verdict {
    if req.endpoint != "container.create" {
        return Verdict::Allow;
    }
    let Some(Value::Object(body)) = req.json_body() else {
        return Verdict::Allow;
    };
    let patch = match body.get("Labels") {
        // `add` on an existing member replaces it.
        Some(Value::Object(_)) => Patch::new().add(json_pointer(["Labels", key]), json!(value)),
        // Absent or `null`: `/Labels/key` has no parent to add to.
        _ => Patch::new().add("/Labels", json!({ key: value })),
    };
    patch.into()
}

/// Removes the `container.list` entries with a name starting with `/<prefix>`.
fn filter_list(resp: &Response, prefix: &str) -> Verdict {
    let Some(Value::Array(containers)) = resp.json_body() else {
        return Verdict::Allow;
    };
    let wanted = format!("/{prefix}");
    let hidden = containers.iter().enumerate().filter(|(_, c)| {
        c.get("Names")
            .and_then(Value::as_array)
            .is_some_and(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|n| n.starts_with(&wanted))
            })
    });
    let indexes: Vec<usize> = hidden.map(|(i, _)| i).collect();
    // Highest index first: each removal shifts the entries after it.
    indexes
        .into_iter()
        .rev()
        .fold(Patch::new(), |p, i| p.remove(format!("/{i}")))
        .into()
}

export_plugin!(Testkit);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: Value) -> Testkit {
        Testkit::new(config).unwrap()
    }

    fn create(body: Value) -> Request {
        Request::new("POST", "/containers/create", "container.create").with_json_body(&body)
    }

    fn ops(v: Verdict) -> Vec<Value> {
        match v {
            Verdict::Patch(p) => p.ops().to_vec(),
            other => panic!("not a patch: {other:?}"),
        }
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&plugin(json!({"action": "allow"})));
    }

    #[test]
    fn config_errors() {
        for bad in [
            json!(null),
            json!({}),
            json!({"action": "frobnicate"}),
            json!({"action": "patch-label", "key": "k"}),
            json!({"action": "allow", "typo": 1}),
            json!({"action": "allow", "hook": "later"}),
        ] {
            assert!(Testkit::new(bad.clone()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn deny_defaults_and_overrides() {
        let req = Request::new("GET", "/containers/json", "container.list");
        assert_eq!(
            plugin(json!({"action": "deny"})).on_request(&req),
            Verdict::deny("denied by testkit")
        );
        assert_eq!(
            plugin(json!({"action": "deny", "message": "no", "status": 401})).on_request(&req),
            Verdict::deny_with(401, "no")
        );
        assert_eq!(
            plugin(json!({"action": "deny"})).on_response(&req, &Response::default()),
            Verdict::Allow
        );
        let p = plugin(json!({"action": "deny", "hook": "response"}));
        assert_eq!(p.on_request(&req), Verdict::Allow);
        assert_eq!(
            p.on_response(&req, &Response::default()),
            Verdict::deny("denied by testkit")
        );
    }

    #[test]
    fn patch_label_adds_or_overwrites() {
        let p = plugin(json!({"action": "patch-label", "key": "com.acme/team", "value": "blue"}));
        let whole =
            vec![json!({"op": "add", "path": "/Labels", "value": {"com.acme/team": "blue"}})];
        assert_eq!(
            ops(p.on_request(&create(json!({"Image": "busybox"})))),
            whole
        );
        assert_eq!(ops(p.on_request(&create(json!({"Labels": null})))), whole);
        assert_eq!(
            ops(p.on_request(&create(
                json!({"Labels": {"com.acme/team": "red", "a": "b"}})
            ))),
            vec![json!({"op": "add", "path": "/Labels/com.acme~1team", "value": "blue"})]
        );
        let list = Request::new("GET", "/containers/json", "container.list");
        assert_eq!(p.on_request(&list), Verdict::Allow);
    }

    #[test]
    fn label_caller_shows_the_caller() {
        use portcullis_plugin::AuthMethod;
        let p = plugin(json!({"action": "label-caller", "key": "who"}));
        let mut req = create(json!({"Labels": {}}));
        req.caller.user = "alice".into();
        req.caller.groups = vec!["team-a".into(), "devs".into()];
        req.caller.auth = AuthMethod::MutualTls;
        assert_eq!(
            ops(p.on_request(&req)),
            vec![json!({"op": "add", "path": "/Labels/who",
                        "value": "user=alice groups=team-a,devs auth=mutual-tls"})]
        );
    }

    #[test]
    fn deny_if_label() {
        let p = plugin(json!({"action": "deny-if-label", "key": "evil"}));
        assert!(matches!(
            p.on_request(&create(json!({"Labels": {"evil": null}}))),
            Verdict::Deny(_)
        ));
        assert_eq!(
            p.on_request(&create(json!({"Labels": {"good": "1"}}))),
            Verdict::Allow
        );
        assert_eq!(p.on_request(&create(json!({}))), Verdict::Allow);
    }

    #[test]
    fn filter_list_removes_from_the_end() {
        let p = plugin(json!({"action": "filter-list", "name_prefix": "secret"}));
        let req = Request::new("GET", "/containers/json", "container.list");
        let resp = Response {
            status: 200,
            body: Some(
                json!([
                    {"Names": ["/secret-a"]},
                    {"Names": ["/web"]},
                    {"Names": null},
                    {"Names": ["/web2", "/secret-b"]},
                    {"Names": ["/notsecret"]}
                ])
                .to_string(),
            ),
            ..Response::default()
        };
        assert_eq!(p.on_request(&req), Verdict::Allow);
        assert_eq!(
            ops(p.on_response(&req, &resp)),
            vec![
                json!({"op": "remove", "path": "/3"}),
                json!({"op": "remove", "path": "/0"})
            ]
        );
        let none = Response {
            body: Some("[]".into()),
            ..resp.clone()
        };
        assert_eq!(p.on_response(&req, &none), Verdict::Patch(Patch::new()));
        let other = Request::new("GET", "/images/json", "image.list");
        assert_eq!(p.on_response(&other, &resp), Verdict::Allow);
    }

    #[test]
    fn bad_verdict_is_not_a_json_patch() {
        let v = plugin(json!({"action": "bad-verdict"})).on_request(&create(json!({})));
        assert_eq!(ops(v), vec![json!({"op": "explode", "path": "/Image"})]);
    }

    #[test]
    fn hog_survives_a_small_allocation() {
        let req = Request::default();
        assert_eq!(
            plugin(json!({"action": "hog", "mb": 1})).on_request(&req),
            Verdict::Allow
        );
    }

    #[test]
    #[should_panic(expected = "testkit: trap requested")]
    fn trap_panics() {
        plugin(json!({"action": "trap"})).on_request(&Request::default());
    }
}
