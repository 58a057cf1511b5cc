//! `{{name}}`: a portcullis plugin.
//!
//! Denies containers that are privileged or that lack the labels the configuration
//! requires. Configuration (the plugin's `config` table in the gateway configuration):
//!
//! ```toml
//! required_labels = ["com.example.owner"]
//! ```

use portcullis_plugin::prelude::*;
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Labels every new container must carry.
    required_labels: Vec<String>,
}

/// The plugin: built from its configuration before every call.
struct MyPlugin {
    config: Config,
}

impl Plugin for MyPlugin {
    const NAME: &'static str = "{{name}}";
    // Exactly the hooks overridden below (`testing::assert_hooks` checks it).
    const HOOKS: Hooks = Hooks::REQUEST;

    fn new(config: Value) -> Result<Self, String> {
        let config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| format!("{}: {e}", Self::NAME))?
        };
        Ok(MyPlugin { config })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        let Some(create) = req.container_create() else {
            return Verdict::Allow;
        };
        if create.host_config.privileged {
            return Verdict::deny("privileged containers are not allowed");
        }
        for label in &self.config.required_labels {
            if !create.labels.contains_key(label) {
                log::info!("{} created a container without {label}", req.caller.user);
                return Verdict::deny(format!("containers must have the label {label}"));
            }
        }
        Verdict::Allow
    }
}

export_plugin!(MyPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> MyPlugin {
        MyPlugin::new(json!({"required_labels": ["com.example.owner"]})).unwrap()
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&plugin());
    }

    #[test]
    fn sample_request_is_denied() {
        // The same file `portcullis plugin test` reads.
        let req = Request::from_json(include_str!("../tests/request.json")).unwrap();
        assert_eq!(
            plugin().on_request(&req),
            Verdict::deny("privileged containers are not allowed")
        );
    }

    #[test]
    fn labelled_container_is_allowed() {
        let req = Request::new("POST", "/containers/create", "container.create").with_json_body(
            &json!({"Image": "busybox", "Labels": {"com.example.owner": "alice"}}),
        );
        assert_eq!(plugin().on_request(&req), Verdict::Allow);
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(MyPlugin::new(json!({"required_label": "typo"})).is_err());
    }
}
