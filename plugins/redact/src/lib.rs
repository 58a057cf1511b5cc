//! `redact`: shapes audit records so that secrets do not end up in the audit trail.
//!
//! It implements only the `on-audit` hook and answers with a JSON Patch on the record:
//!
//! - **Env values** whose variable name looks secret are replaced: in `details.Env`
//!   (container create, exec create) and `details.ContainerSpec.Env` (service create),
//!   `"DB_PASSWORD=hunter2"` becomes `"DB_PASSWORD=<redacted>"`. The name stays, so the
//!   record still says *that* a secret was passed.
//! - **Registry credentials** anywhere in the record: the value of any object key named
//!   like a credential field of the Engine API (`password`, `auth`, `identitytoken`,
//!   `registrytoken`, `authorization`, `x-registry-auth`, `x-registry-config`) is replaced.
//!
//! # Configuration
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `env` | `*PASSWORD*`, `*PASSWD*`, `*SECRET*`, `*TOKEN*`, `*KEY*`, `*CREDENTIAL*`, `*PRIVATE*`, `*AUTH*` | name patterns (case-insensitive, `*` matches anything) of Env variables to redact; replaces the default list |
//! | `also_env` | none | patterns added to `env` |
//! | `keys` | the credential keys above | object keys (case-insensitive) whose values are redacted anywhere |
//! | `replacement` | `<redacted>` | what replaces a secret |
//!
//! ```toml
//! [[plugins]]
//! name = "redact"
//! path = "…/portcullis_redact_plugin.wasm"
//! endpoints = ["container.create", "container.exec", "service.create"]
//! [plugins.config]
//! also_env = ["*_DSN"]
//! ```

use portcullis_plugin::prelude::*;
use serde::Deserialize;

const DEFAULT_ENV: [&str; 8] = [
    "*PASSWORD*",
    "*PASSWD*",
    "*SECRET*",
    "*TOKEN*",
    "*KEY*",
    "*CREDENTIAL*",
    "*PRIVATE*",
    "*AUTH*",
];
const DEFAULT_KEYS: [&str; 7] = [
    "password",
    "auth",
    "identitytoken",
    "registrytoken",
    "authorization",
    "x-registry-auth",
    "x-registry-config",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    env: Option<Vec<String>>,
    #[serde(default)]
    also_env: Vec<String>,
    keys: Option<Vec<String>>,
    replacement: Option<String>,
}

/// The redaction plugin, built from its configuration.
struct Redact {
    env: Vec<String>,
    keys: Vec<String>,
    replacement: String,
}

impl Plugin for Redact {
    const NAME: &'static str = "redact";
    const HOOKS: Hooks = Hooks::AUDIT;

    fn new(config: Value) -> Result<Self, String> {
        let config: Config = match config {
            Value::Null => serde_json::from_value(json!({})),
            v => serde_json::from_value(v),
        }
        .map_err(|e| format!("redact config: {e}"))?;
        let mut env: Vec<String> = match config.env {
            Some(list) => list,
            None => DEFAULT_ENV.iter().map(|s| s.to_string()).collect(),
        };
        env.extend(config.also_env);
        let keys = config
            .keys
            .unwrap_or_else(|| DEFAULT_KEYS.iter().map(|s| s.to_string()).collect());
        Ok(Redact {
            env: env.iter().map(|p| p.to_ascii_uppercase()).collect(),
            keys: keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
            replacement: config.replacement.unwrap_or_else(|| "<redacted>".into()),
        })
    }

    fn on_audit(&self, _req: &Request, record: &Value) -> Verdict {
        let mut patch = Patch::new();
        for env_path in [
            &["details", "Env"][..],
            &["details", "ContainerSpec", "Env"][..],
        ] {
            let Some(Value::Array(env)) = env_path.iter().try_fold(record, |v, k| v.get(*k)) else {
                continue;
            };
            for (i, entry) in env.iter().enumerate() {
                let Some(entry) = entry.as_str() else {
                    continue;
                };
                let name = entry.split_once('=').map_or(entry, |(n, _)| n);
                if self.env.iter().any(|p| glob(p, &name.to_ascii_uppercase())) {
                    let mut path: Vec<String> = env_path.iter().map(|s| s.to_string()).collect();
                    path.push(i.to_string());
                    let value = format!("{name}={}", self.replacement);
                    patch = patch.replace(json_pointer(&path), Value::String(value));
                }
            }
        }
        let mut path = Vec::new();
        self.credential_keys(record, &mut path, &mut patch);
        if patch.is_empty() {
            Verdict::Allow
        } else {
            patch.into()
        }
    }
}

impl Redact {
    /// Replaces, anywhere in `v`, the values of keys named like credential fields.
    fn credential_keys(&self, v: &Value, path: &mut Vec<String>, patch: &mut Patch) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    // Not the record's `caller`: the gateway writes it, and its `auth` names
                    // how the caller was authenticated (`peer-credentials`, ...), never a
                    // credential.
                    if path.is_empty() && k == "caller" {
                        continue;
                    }
                    path.push(k.clone());
                    if self.keys.contains(&k.to_ascii_lowercase()) && !child.is_null() {
                        let p = std::mem::take(patch);
                        *patch = p.replace(
                            json_pointer(path.iter()),
                            Value::String(self.replacement.clone()),
                        );
                    } else {
                        self.credential_keys(child, path, patch);
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.credential_keys(child, path, patch);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (both already
/// in the same case).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

export_plugin!(Redact);

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(config: Value, record: Value) -> Value {
        let plugin = Redact::new(config).unwrap();
        let req = Request::new("POST", "/containers/create", "container.create");
        let mut record = record;
        if let Verdict::Patch(p) = plugin.on_audit(&req, &record) {
            let ops: serde_json::Value = serde_json::from_str(&p.body().unwrap()).unwrap();
            for op in ops.as_array().unwrap() {
                assert_eq!(op["op"], "replace");
                *record.pointer_mut(op["path"].as_str().unwrap()).unwrap() = op["value"].clone();
            }
        }
        record
    }

    #[test]
    fn secret_looking_env_values_are_redacted_names_kept() {
        let out = redact(
            json!(null),
            json!({"details": {"Env": ["PATH=/bin", "DB_PASSWORD=hunter2", "api_key=k", "GITHUB_TOKEN=t", "X"]}}),
        );
        assert_eq!(
            out["details"]["Env"],
            json!([
                "PATH=/bin",
                "DB_PASSWORD=<redacted>",
                "api_key=<redacted>",
                "GITHUB_TOKEN=<redacted>",
                "X"
            ])
        );
        let out = redact(
            json!(null),
            json!({"details": {"ContainerSpec": {"Env": ["AWS_SECRET_ACCESS_KEY=s"]}}}),
        );
        assert_eq!(
            out["details"]["ContainerSpec"]["Env"][0],
            "AWS_SECRET_ACCESS_KEY=<redacted>"
        );
    }

    #[test]
    fn registry_credentials_are_redacted_anywhere() {
        let out = redact(
            json!(null),
            json!({"plugins": [{"patch": {"body": [{"op": "add", "path": "/x", "value": {"Password": "p", "ServerAddress": "r"}}]}}],
                   "details": {"auth": "dXNlcjpwYXNz", "IdentityToken": "t"}}),
        );
        let v = &out["plugins"][0]["patch"]["body"][0]["value"];
        assert_eq!(v["Password"], "<redacted>");
        assert_eq!(v["ServerAddress"], "r");
        assert_eq!(out["details"]["auth"], "<redacted>");
        assert_eq!(out["details"]["IdentityToken"], "<redacted>");
    }

    #[test]
    fn the_callers_authentication_method_is_kept() {
        let out = redact(
            json!(null),
            json!({"caller": {"user": "alice", "auth": "peer-credentials"},
                   "details": {"auth": "dXNlcjpwYXNz"}}),
        );
        assert_eq!(out["caller"]["auth"], "peer-credentials");
        assert_eq!(out["details"]["auth"], "<redacted>");
    }

    #[test]
    fn configuration_replaces_or_extends_the_patterns() {
        let record = json!({"details": {"Env": ["DB_DSN=postgres://u:p@h", "MY_KEY=1"]}});
        let out = redact(
            json!({"also_env": ["*_DSN"], "replacement": "***"}),
            record.clone(),
        );
        assert_eq!(out["details"]["Env"], json!(["DB_DSN=***", "MY_KEY=***"]));
        let out = redact(json!({"env": ["*_DSN"]}), record.clone());
        assert_eq!(
            out["details"]["Env"],
            json!(["DB_DSN=<redacted>", "MY_KEY=1"])
        );
        assert_eq!(
            Redact::new(json!({"typo": 1})).err().as_deref(),
            Some("redact config: unknown field `typo`, expected one of `env`, `also_env`, `keys`, `replacement`")
        );
        assert_eq!(
            redact(json!({}), json!({"details": {}})),
            json!({"details": {}})
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*KEY*", "API_KEY"));
        assert!(glob("*KEY*", "KEY"));
        assert!(glob("A*B*C", "AXXBYYC"));
        assert!(!glob("A*B*C", "AXXC"));
        assert!(!glob("*_DSN", "DSN"));
        assert!(glob("EXACT", "EXACT"));
        assert!(!glob("EXACT", "EXACTLY"));
        // The fixed ends must not overlap: "A" is no match of "A*A", "ABA" none of "AB*BA".
        assert!(!glob("A*A", "A"));
        assert!(!glob("AB*BA", "ABA"));
        assert!(glob("AB*BA", "ABBA"));
        assert!(glob("*TOKEN", "TOKEN"));
        // Each fixed part where it belongs: the start at the start, the end at the end.
        assert!(!glob("DB_*", "MY_DB_URL"));
        assert!(!glob("*_DSN", "DB_DSN_FILE"));
        assert!(glob("DB_*", "DB_"));
    }

    fn audit(config: Value, record: &Value) -> Verdict {
        let req = Request::new("POST", "/containers/create", "container.create");
        Redact::new(config).unwrap().on_audit(&req, record)
    }

    /// `env`: the request that triggers it gets the exact patch, its closest neighbours none.
    #[test]
    fn env_rule_exact_patch() {
        let record = json!({"details": {"Env": ["PATH=/bin", "DB_PASSWORD=hunter2", "api_key=k"]}});
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(
                Patch::new()
                    .replace("/details/Env/1", json!("DB_PASSWORD=<redacted>"))
                    .replace("/details/Env/2", json!("api_key=<redacted>"))
            )
        );
        let record = json!({"details": {"ContainerSpec": {"Env": ["A=1", "GITHUB_TOKEN=t"]}}});
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(Patch::new().replace(
                "/details/ContainerSpec/Env/1",
                json!("GITHUB_TOKEN=<redacted>")
            ))
        );
        // A variable without `=` is redacted by its name too.
        let record = json!({"details": {"Env": ["SECRET"]}});
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(Patch::new().replace("/details/Env/0", json!("SECRET=<redacted>")))
        );
        // Closest that pass: a secret-looking value under a plain name, non-string entries,
        // an Env that is not a list, an Env elsewhere in the record.
        for record in [
            json!({"details": {"Env": ["GREETING=password", "PATH=/bin"]}}),
            json!({"details": {"Env": [null, 1, {"PASSWORD": null}]}}),
            json!({"details": {"Env": "PASSWORD=x"}}),
            json!({"details": {"Config": {"Env": ["PASSWORD=x"]}}}),
            json!({"Env": ["PASSWORD=x"]}),
            json!({}),
        ] {
            assert_eq!(audit(Value::Null, &record), Verdict::Allow, "{record}");
        }
    }

    /// `keys`: credential fields anywhere in the record, nested in objects and lists; the
    /// gateway's own `caller` and null values are left as they are.
    #[test]
    fn keys_rule_exact_patch() {
        let record = json!({
            "caller": {"user": "alice", "auth": "token"},
            "details": {"X-Registry-Auth": "e30=", "auths": [{"x": {"Password": "p", "username": "u"}}],
                        "identitytoken": null}
        });
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(
                Patch::new()
                    .replace("/details/X-Registry-Auth", json!("<redacted>"))
                    .replace("/details/auths/0/x/Password", json!("<redacted>"))
            )
        );
        // `caller` is skipped only at the top: a nested one is the body's.
        let record = json!({"details": {"caller": {"auth": "x"}}});
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(Patch::new().replace("/details/caller/auth", json!("<redacted>")))
        );
        // A credential's value is replaced whole, not searched further.
        let record = json!({"details": {"auth": {"password": "p"}}});
        assert_eq!(
            audit(json!({"replacement": "***"}), &record),
            Verdict::from(Patch::new().replace("/details/auth", json!("***")))
        );
        // Configured keys replace the default ones, case-insensitively.
        let record = json!({"details": {"ApiKey": "k", "auth": "a"}});
        assert_eq!(
            audit(json!({"keys": ["APIKEY"]}), &record),
            Verdict::from(Patch::new().replace("/details/ApiKey", json!("<redacted>")))
        );
        // A key with a `/` in its name is escaped in the pointer.
        let record = json!({"details": {"a/b": {"auth": "x"}}});
        assert_eq!(
            audit(Value::Null, &record),
            Verdict::from(Patch::new().replace("/details/a~1b/auth", json!("<redacted>")))
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert_eq!(
            Redact::new(json!({"env": "PASSWORD"})).err().as_deref(),
            Some("redact config: invalid type: string \"PASSWORD\", expected a sequence")
        );
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&Redact::new(json!(null)).unwrap());
    }
}
