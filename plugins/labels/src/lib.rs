//! `labels`: label schema and namespacing.
//!
//! Validates the labels a request sets on containers (`container.create`, `image.commit`),
//! images (`image.build`'s `labels` query parameter), volumes, networks, services (the
//! service's and its tasks' container labels), configs and secrets against:
//!
//! 1. **Docker's key conventions** (`[convention]`): lowercase alphanumerics, dots and
//!    dashes, beginning and ending with a letter or digit, no `..` or `--`; optionally a
//!    reverse-DNS prefix (`require_reverse_dns`). Keys under the prefixes Docker reserves
//!    (`com.docker.`, `io.docker.`, `org.dockerproject.`) are refused.
//!
//! Keys under `tool_prefixes` are set by Docker's own tooling, not chosen by the caller:
//! compose (`com.docker.compose.project.config_files`, with its underscores), stack, swarm
//! and OCI image annotations. They pass the convention, reserved-prefix and namespace rules
//! and a schema's `additionalProperties: false`; a schema rule that names such a key still
//! applies, and gateway-owned keys stay refused whatever their prefix.
//! 2. **A schema** (`[schema]`) from configuration: a documented subset of JSON Schema applied
//!    to the labels object: `required`, `properties.<key>.{pattern, enum, const, minLength,
//!    maxLength}`, `patternProperties`, `additionalProperties: false`. `schemas.<kind>`
//!    overrides `schema` for one kind (`container`, `image`, `volume`, `network`, `service`,
//!    `config`, `secret`).
//! 3. **Per-caller namespaces** (`[namespace]`): with `namespace_template` set (e.g.
//!    `com.acme.{group}.`), every key must sit under the template filled with one of the
//!    caller's groups (or `{user}`), apart from `namespace_exempt` keys/prefixes.
//! 4. **Gateway-owned keys** (`[gateway-owned]`): keys (or prefixes ending in `*`) that only
//!    the gateway sets, such as tenancy's owner label. Clients cannot set them.
//!
//! A denial lists every violation at once. Run it as a `mutate` plugin *before* plugins
//! that stamp gateway-owned labels (tenancy), so it judges what the client sent.

use std::collections::BTreeMap;

use portcullis_plugin::prelude::*;
use regex::Regex;
use serde::Deserialize;

/// A subset of JSON Schema for a labels object (all string values).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Schema {
    /// Keys that must be present.
    pub required: Vec<String>,
    /// Rules per key.
    pub properties: BTreeMap<String, Property>,
    /// Rules per key regex.
    pub pattern_properties: BTreeMap<String, Property>,
    /// `false`: keys not in `properties` or matched by `patternProperties` are refused.
    pub additional_properties: Option<bool>,
    /// Accepted and ignored, so real schema files load: `$schema`, `$id`, `title`,
    /// `description`, `type`.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    #[serde(rename = "$id")]
    pub id: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// Rules for one label value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Property {
    /// A regex the value must match (unanchored, as in JSON Schema).
    pub pattern: Option<String>,
    /// The allowed values.
    #[serde(rename = "enum")]
    pub enum_: Option<Vec<String>>,
    /// The only allowed value.
    #[serde(rename = "const")]
    pub const_: Option<String>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Check Docker's key conventions.
    pub conventions: bool,
    /// Require a reverse-DNS prefix (a key with at least one dot).
    pub require_reverse_dns: bool,
    /// Prefixes reserved by Docker.
    pub reserved_prefixes: Vec<String>,
    /// Key prefixes Docker's own tools set (compose, stack, swarm, OCI annotations): not
    /// judged as the caller's own keys. (`allowed_reserved` is its former name.)
    #[serde(alias = "allowed_reserved")]
    pub tool_prefixes: Vec<String>,
    /// The schema for every kind.
    pub schema: Option<Schema>,
    /// Per-kind schemas, replacing `schema` for that kind.
    pub schemas: BTreeMap<String, Schema>,
    /// `com.acme.{group}.`: the prefix a caller's keys must have (`{group}`: any of the
    /// caller's groups; `{user}`: the caller's user name).
    pub namespace_template: Option<String>,
    /// Keys (or prefixes ending in `*`) anyone may set despite the namespace.
    pub namespace_exempt: Vec<String>,
    /// Keys (or prefixes ending in `*`) that only the gateway sets.
    pub gateway_owned: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conventions: true,
            require_reverse_dns: false,
            reserved_prefixes: vec![
                "com.docker.".into(),
                "io.docker.".into(),
                "org.dockerproject.".into(),
            ],
            tool_prefixes: vec![
                "com.docker.compose.".into(),
                "com.docker.stack.".into(),
                "com.docker.swarm.".into(),
                "org.opencontainers.image.".into(),
            ],
            schema: None,
            schemas: BTreeMap::new(),
            namespace_template: None,
            namespace_exempt: Vec::new(),
            gateway_owned: vec!["io.portcullis.*".into()],
        }
    }
}

/// A schema with its regexes compiled.
struct Compiled {
    schema: Schema,
    patterns: BTreeMap<String, Regex>,
    key_patterns: Vec<(Regex, Property)>,
}

impl Compiled {
    fn new(schema: Schema, at: &str) -> Result<Self, String> {
        let compile = |p: &str, key: &str| {
            Regex::new(p).map_err(|e| format!("labels config: {at}.{key}: bad pattern {p:?}: {e}"))
        };
        let mut patterns = BTreeMap::new();
        for (k, prop) in &schema.properties {
            if let Some(p) = &prop.pattern {
                patterns.insert(k.clone(), compile(p, &format!("properties.{k}.pattern"))?);
            }
        }
        let mut key_patterns = Vec::new();
        for (k, prop) in &schema.pattern_properties {
            key_patterns.push((compile(k, "patternProperties")?, prop.clone()));
        }
        for (k, prop) in &schema.pattern_properties {
            if let Some(p) = &prop.pattern {
                compile(p, &format!("patternProperties.{k}.pattern"))?;
            }
        }
        Ok(Compiled {
            schema,
            patterns,
            key_patterns,
        })
    }
}

/// The labels plugin.
pub struct Labels {
    config: Config,
    schema: Option<Compiled>,
    schemas: BTreeMap<String, Compiled>,
    /// Keys in anyone's namespace: `namespace_template` with each placeholder as one
    /// dot-free word.
    namespace_shape: Option<Regex>,
}

const KINDS: [&str; 7] = [
    "container",
    "image",
    "volume",
    "network",
    "service",
    "config",
    "secret",
];

impl Plugin for Labels {
    const NAME: &'static str = "labels";
    const HOOKS: Hooks = Hooks::REQUEST;

    fn new(config: Value) -> Result<Self, String> {
        let config: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| format!("labels config: {e}"))?
        };
        let schema = match &config.schema {
            Some(s) => Some(Compiled::new(s.clone(), "schema")?),
            None => None,
        };
        let mut schemas = BTreeMap::new();
        for (kind, s) in &config.schemas {
            if !KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "labels config: schemas.{kind}: unknown kind (kinds: {})",
                    KINDS.join(", ")
                ));
            }
            schemas.insert(
                kind.clone(),
                Compiled::new(s.clone(), &format!("schemas.{kind}"))?,
            );
        }
        if let Some(t) = &config.namespace_template {
            if !t.contains("{group}") && !t.contains("{user}") {
                return Err(
                    "labels config: namespace_template must contain {group} or {user}".into(),
                );
            }
        }
        let namespace_shape = match &config.namespace_template {
            Some(t) => {
                let shape = regex::escape(t)
                    .replace(r"\{group\}", "[^.]+")
                    .replace(r"\{user\}", "[^.]+");
                Some(
                    Regex::new(&format!("^{shape}"))
                        .map_err(|e| format!("labels config: namespace_template: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Labels {
            config,
            schema,
            schemas,
            namespace_shape,
        })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        let mut problems = Vec::new();
        for (kind, field, labels) in label_sets(req, &mut problems) {
            self.check(req, kind, &field, &labels, &mut problems);
        }
        for (field, labels) in inherited(req) {
            self.check_inherited(req, &field, &labels, &mut problems);
        }
        if problems.is_empty() {
            Verdict::Allow
        } else {
            Verdict::deny(problems.join("; "))
        }
    }
}

/// The label sets a request carries: (object kind, field name for messages, labels).
fn label_sets(
    req: &Request,
    problems: &mut Vec<String>,
) -> Vec<(&'static str, String, BTreeMap<String, String>)> {
    let map = |v: Option<&Value>| -> BTreeMap<String, String> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = match req.endpoint.as_str() {
        "container.create" | "image.commit" => "container",
        "volume.create" => "volume",
        "network.create" => "network",
        "service.create" | "service.update" => "service",
        "config.create" | "config.update" => "config",
        "secret.create" | "secret.update" => "secret",
        "build.solve" => {
            let labels = map(req.json_body().as_ref().and_then(|b| b.get("Labels")));
            return vec![("image", "label (--label)".into(), labels)];
        }
        "image.build" => {
            let Some(text) = req.query("labels") else {
                return Vec::new();
            };
            return match serde_json::from_str::<BTreeMap<String, Option<String>>>(text) {
                Ok(m) => vec![(
                    "image",
                    "labels (query)".into(),
                    m.into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect(),
                )],
                Err(e) => {
                    problems.push(format!(
                        "[schema] labels (query) is not a JSON object of strings: {e}"
                    ));
                    Vec::new()
                }
            };
        }
        _ => return Vec::new(),
    };
    // Only the label fields are read: the rest of a create body (the docker CLI sends every
    // HostConfig field) is skipped, not built.
    let body: LabelFields = req.body_as().unwrap_or_default();
    let mut sets = vec![(kind, "Labels".to_owned(), map(body.labels.as_ref()))];
    if kind == "service" {
        sets.push((
            "container",
            "TaskTemplate.ContainerSpec.Labels".into(),
            map(body.container_spec().and_then(|s| s.get("Labels"))),
        ));
    }
    sets
}

/// The labels a container (or a service's task containers) will get from its image, beneath
/// its own: the engine merges the image's labels into the container's at create. The image is
/// the one the gateway looked up for the request (`request.related`, kind `image`).
fn inherited(req: &Request) -> Vec<(String, BTreeMap<String, String>)> {
    let (image_field, own_labels) = match req.endpoint.as_str() {
        "container.create" => ("Image", "/Labels"),
        "service.create" | "service.update" => (
            "TaskTemplate.ContainerSpec.Image",
            "/TaskTemplate/ContainerSpec/Labels",
        ),
        _ => return Vec::new(),
    };
    let Some((name, image)) = req
        .related
        .iter()
        .find(|r| r.kind == "image" && r.field == image_field)
        .and_then(|r| Some((&r.name, r.object.as_ref()?)))
    else {
        return Vec::new();
    };
    let body = req.json_body().unwrap_or(Value::Null);
    let own = body.pointer(own_labels).and_then(Value::as_object);
    let labels: BTreeMap<String, String> = image
        .labels
        .iter()
        .filter(|p| !own.is_some_and(|o| o.contains_key(&p.name)))
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    if labels.is_empty() {
        return Vec::new();
    }
    vec![(
        format!("{image_field} {name:?} (labels the container inherits)"),
        labels,
    )]
}

/// Whether `key` is `pattern` or, for a pattern ending in `*`, starts with its prefix.
fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

impl Labels {
    fn check(
        &self,
        req: &Request,
        kind: &str,
        field: &str,
        labels: &BTreeMap<String, String>,
        out: &mut Vec<String>,
    ) {
        let c = &self.config;
        for key in labels.keys() {
            if c.gateway_owned.iter().any(|p| matches(p, key)) {
                if !kept_unchanged(req, key, &labels[key]) {
                    out.push(format!(
                        "[gateway-owned] {field}[{key:?}]: the key is set by the gateway, not by clients"
                    ));
                }
                continue;
            }
            if self.is_tool_key(key) {
                continue;
            }
            if c.conventions {
                if let Some(why) = convention(key, c.require_reverse_dns) {
                    out.push(format!("[convention] {field}[{key:?}]: {why}"));
                }
                if c.reserved_prefixes
                    .iter()
                    .any(|p| key.starts_with(p.as_str()))
                {
                    out.push(format!(
                        "[convention] {field}[{key:?}]: the prefix is reserved by Docker"
                    ));
                }
            }
            out.extend(self.namespace_problem(req, field, key));
        }
        let schema = self.schemas.get(kind).or(self.schema.as_ref());
        if let Some(s) = schema {
            schema_check(s, field, labels, &req.caller, |k| self.is_tool_key(k), out);
        }
    }

    /// Why `key` is outside the caller's namespace, when a namespace is configured.
    fn namespace_problem(&self, req: &Request, field: &str, key: &str) -> Option<String> {
        let c = &self.config;
        let template = c.namespace_template.as_ref()?;
        let exempt = c.namespace_exempt.iter().any(|p| matches(p, key));
        let prefixes = req.caller.fill(template);
        if exempt || prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            return None;
        }
        let allowed = if prefixes.is_empty() {
            "the caller has no namespace".to_owned()
        } else {
            format!("allowed prefixes: {}", prefixes.join(", "))
        };
        Some(format!(
            "[namespace] {field}[{key:?}]: outside the caller's namespace ({allowed})"
        ))
    }

    /// The labels a container gets from its image (those its own labels do not override):
    /// judged by the rules that say whose a label is: the namespace, for keys shaped like
    /// someone's namespace (`com.acme.team-a.x` under `com.acme.{group}.`), and the schema's
    /// value rules for the keys it names. Docker's key conventions and reserved prefixes are left
    /// to whoever made the image (base images carry keys such as `maintainer`), and
    /// gateway-owned keys are the gateway's to overwrite.
    fn check_inherited(
        &self,
        req: &Request,
        field: &str,
        labels: &BTreeMap<String, String>,
        out: &mut Vec<String>,
    ) {
        let schema = self.schemas.get("container").or(self.schema.as_ref());
        for (key, value) in labels {
            let gateway_owned = self.config.gateway_owned.iter().any(|p| matches(p, key));
            if gateway_owned || self.is_tool_key(key) {
                continue;
            }
            // A key in nobody's namespace (`maintainer`) is the image maker's business; one
            // in another caller's namespace is not the caller's to hold.
            let namespaced = self
                .namespace_shape
                .as_ref()
                .is_some_and(|re| re.is_match(key));
            if namespaced {
                out.extend(self.namespace_problem(req, field, key));
            }
            if let Some(s) = schema {
                if let Some(prop) = s.schema.properties.get(key) {
                    property_check(
                        prop,
                        s.patterns.get(key),
                        field,
                        key,
                        value,
                        &req.caller,
                        out,
                    );
                }
            }
        }
    }

    fn is_tool_key(&self, key: &str) -> bool {
        self.config
            .tool_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }
}

/// Whether an update sends back a gateway-owned label exactly as the object holds it: a
/// client that read the object (an administrator sees these labels) and returns the spec it
/// read changes nothing the gateway set.
fn kept_unchanged(req: &Request, key: &str, value: &str) -> bool {
    req.endpoint.ends_with(".update") && req.target_label(key) == Some(value)
}

/// Why `key` breaks Docker's label key conventions, if it does.
fn convention(key: &str, reverse_dns: bool) -> Option<String> {
    if key.is_empty() {
        return Some("empty key".into());
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Some(format!(
            "{c:?} is not allowed (lowercase letters, digits, '.' and '-' only)"
        ));
    }
    let first = key.chars().next()?;
    let last = key.chars().last()?;
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("must begin and end with a letter or digit".into());
    }
    if key.contains("..") || key.contains("--") {
        return Some("consecutive dots or dashes".into());
    }
    if reverse_dns && !key.contains('.') {
        return Some("must have a reverse-DNS prefix (com.example.key)".into());
    }
    None
}

fn schema_check(
    s: &Compiled,
    field: &str,
    labels: &BTreeMap<String, String>,
    caller: &Caller,
    tool_key: impl Fn(&str) -> bool,
    out: &mut Vec<String>,
) {
    for key in &s.schema.required {
        if !labels.contains_key(key) {
            out.push(format!("[schema] {field}: required key {key:?} is missing"));
        }
    }
    for (key, value) in labels {
        let mut known = false;
        if let Some(prop) = s.schema.properties.get(key) {
            known = true;
            property_check(prop, s.patterns.get(key), field, key, value, caller, out);
        }
        for (re, prop) in &s.key_patterns {
            if re.is_match(key) {
                known = true;
                // Compiled at load, so a pattern here always compiles.
                let value_re = prop.pattern.as_deref().and_then(|p| Regex::new(p).ok());
                property_check(prop, value_re.as_ref(), field, key, value, caller, out);
            }
        }
        if !known && !tool_key(key) && s.schema.additional_properties == Some(false) {
            out.push(format!(
                "[schema] {field}[{key:?}]: the key is not allowed by the schema"
            ));
        }
    }
}

fn property_check(
    prop: &Property,
    pattern: Option<&Regex>,
    field: &str,
    key: &str,
    value: &str,
    caller: &Caller,
    out: &mut Vec<String>,
) {
    let mut bad = |why: String| out.push(format!("[schema] {field}[{key:?}] = {value:?}: {why}"));
    if let (Some(re), Some(p)) = (pattern, &prop.pattern) {
        if !re.is_match(value) {
            bad(format!("does not match {p:?}"));
        }
    }
    if let Some(values) = &prop.enum_ {
        let values: Vec<String> = values.iter().flat_map(|v| caller.fill(v)).collect();
        if !values.iter().any(|v| v == value) {
            bad(format!("must be one of {values:?}"));
        }
    }
    if let Some(v) = &prop.const_ {
        let values = caller.fill(v);
        if !values.iter().any(|v| v == value) {
            match values.as_slice() {
                [one] => bad(format!("must be {one:?}")),
                _ => bad(format!("must be one of {values:?}")),
            }
        }
    }
    let len = value.chars().count();
    if prop.min_length.is_some_and(|m| len < m) {
        bad(format!(
            "shorter than {} characters",
            prop.min_length.unwrap_or(0)
        ));
    }
    if prop.max_length.is_some_and(|m| len > m) {
        bad(format!(
            "longer than {} characters",
            prop.max_length.unwrap_or(0)
        ));
    }
}

export_plugin!(Labels);

#[cfg(test)]
mod tests {
    use super::*;

    fn create(labels: Value) -> Request {
        Request::new("POST", "/containers/create", "container.create")
            .with_json_body(&json!({"Image": "x", "Labels": labels}))
    }

    #[test]
    fn labels_a_container_inherits_from_its_image_are_judged() {
        let p = Labels::new(json!({
            "namespace_template": "com.acme.{group}.",
            "namespace_exempt": ["com.acme.team"],
            "schema": {"properties": {"com.acme.team": {"const": "{group}"}}},
        }))
        .unwrap();
        let run = |image_labels: &[(&str, &str)], own: Value| {
            let mut req = create(own);
            req.caller.groups = vec!["team-b".into()];
            req.related = vec![Reference {
                field: "Image".into(),
                kind: "image".into(),
                name: "x".into(),
                object: Some(Target {
                    kind: "image".into(),
                    labels: image_labels
                        .iter()
                        .map(|(k, v)| portcullis_plugin::Pair::new(*k, *v))
                        .collect(),
                    ..Target::default()
                }),
            }];
            req
        };
        // Another team's namespace and another team's value, by way of the image.
        assert_eq!(
            p.on_request(&run(
                &[("com.acme.team-a.x", "1"), ("com.acme.team", "team-a")],
                json!({}),
            )),
            deny(concat!(
                r#"[schema] Image "x" (labels the container inherits)["com.acme.team"] = "team-a": must be "team-b"; "#,
                r#"[namespace] Image "x" (labels the container inherits)["com.acme.team-a.x"]: outside the caller's namespace (allowed prefixes: com.acme.team-b.)"#
            ))
        );
        // The container's own labels override the image's; keys no one owns pass, and so do
        // the tools' and the gateway's (tenancy stamps its owner label over the image's).
        let fine = run(
            &[
                ("maintainer", "someone"),
                ("com.acme.team", "team-a"),
                ("io.portcullis.owner", "alice"),
                ("org.opencontainers.image.title", "x"),
            ],
            json!({"com.acme.team": "team-b"}),
        );
        let fine_p =
            Labels::new(json!({"schema": {"properties": {"com.acme.team": {"const": "{group}"}}}}))
                .unwrap();
        assert_eq!(fine_p.on_request(&fine), Verdict::Allow);
        assert_eq!(p.on_request(&fine), Verdict::Allow);
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&Labels::new(Value::Null).unwrap());
    }

    #[test]
    fn conventions_and_reserved_prefixes() {
        let p = Labels::new(Value::Null).unwrap();
        assert_eq!(
            p.on_request(&create(
                json!({"com.acme.team": "a", "portcullis-test": "1"})
            )),
            Verdict::Allow
        );
        assert_eq!(p.on_request(&create(Value::Null)), Verdict::Allow);
        assert_eq!(
            p.on_request(&create(json!({"com.docker.compose.project": "x"}))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&create(
                json!({"Team": "a", "com..x": "b", "com.docker.x": "c", "-a": "", "io.portcullis.owner": "me"}),
            )),
            deny(concat!(
                r#"[convention] Labels["-a"]: must begin and end with a letter or digit; "#,
                r#"[convention] Labels["Team"]: 'T' is not allowed (lowercase letters, digits, '.' and '-' only); "#,
                r#"[convention] Labels["com..x"]: consecutive dots or dashes; "#,
                r#"[convention] Labels["com.docker.x"]: the prefix is reserved by Docker; "#,
                r#"[gateway-owned] Labels["io.portcullis.owner"]: the key is set by the gateway, not by clients"#
            ))
        );
    }

    #[test]
    fn keys_set_by_docker_tooling_are_not_the_callers() {
        // What docker-compose 1.29 and `docker stack deploy` put on their objects.
        let tool_keys = json!({
            "com.docker.compose.project.config_files": "/srv/app/docker-compose.yml",
            "com.docker.compose.project.working_dir": "/srv/app",
            "com.docker.compose.config-hash": "abc",
            "com.docker.stack.namespace": "app",
            "com.docker.swarm.affinities": "[]",
            "org.opencontainers.image.source": "https://example.com/app",
        });
        let p = Labels::new(json!({
            "require_reverse_dns": true,
            "namespace_template": "com.acme.{group}.",
            "schema": {"additionalProperties": false,
                       "properties": {"com.acme.team-a.app": {"minLength": 1}}},
        }))
        .unwrap();
        let mut req = create(tool_keys.clone());
        req.caller.groups = vec!["team-a".into()];
        assert_eq!(p.on_request(&req), Verdict::Allow);
        // The caller's own keys are still judged, and gateway-owned ones refused.
        let mut labels = tool_keys.clone();
        labels["Own_Key"] = json!("1");
        labels["io.portcullis.owner"] = json!("me");
        let mut req = create(labels);
        req.caller.groups = vec!["team-a".into()];
        // The gateway's key is no key of the schema either.
        assert_eq!(
            p.on_request(&req),
            deny(concat!(
                r#"[convention] Labels["Own_Key"]: 'O' is not allowed (lowercase letters, digits, '.' and '-' only); "#,
                r#"[namespace] Labels["Own_Key"]: outside the caller's namespace (allowed prefixes: com.acme.team-a.); "#,
                r#"[gateway-owned] Labels["io.portcullis.owner"]: the key is set by the gateway, not by clients; "#,
                r#"[schema] Labels["Own_Key"]: the key is not allowed by the schema; "#,
                r#"[schema] Labels["io.portcullis.owner"]: the key is not allowed by the schema"#
            ))
        );
        // Configurable: without the tool prefixes compose's keys break the conventions.
        let strict = Labels::new(json!({"tool_prefixes": []})).unwrap();
        assert_eq!(
            strict.on_request(&create(tool_keys)),
            deny(concat!(
                r#"[convention] Labels["com.docker.compose.config-hash"]: the prefix is reserved by Docker; "#,
                r#"[convention] Labels["com.docker.compose.project.config_files"]: '_' is not allowed (lowercase letters, digits, '.' and '-' only); "#,
                r#"[convention] Labels["com.docker.compose.project.config_files"]: the prefix is reserved by Docker; "#,
                r#"[convention] Labels["com.docker.compose.project.working_dir"]: '_' is not allowed (lowercase letters, digits, '.' and '-' only); "#,
                r#"[convention] Labels["com.docker.compose.project.working_dir"]: the prefix is reserved by Docker; "#,
                r#"[convention] Labels["com.docker.stack.namespace"]: the prefix is reserved by Docker; "#,
                r#"[convention] Labels["com.docker.swarm.affinities"]: the prefix is reserved by Docker"#
            ))
        );
    }

    #[test]
    fn an_update_may_send_back_the_gateways_label_unchanged() {
        let p = Labels::new(Value::Null).unwrap();
        let update = |owner: &str| {
            let mut req = Request::new("POST", "/services/s/update", "service.update")
                .with_json_body(&json!({"Labels": {"io.portcullis.owner": owner}}));
            req.target = Some(portcullis_plugin::Target {
                kind: "service".into(),
                id: "s".into(),
                name: None,
                labels: vec![portcullis_plugin::Pair::new("io.portcullis.owner", "alice")],
                ..Default::default()
            });
            req
        };
        assert_eq!(p.on_request(&update("alice")), Verdict::Allow);
        let refused = deny(
            r#"[gateway-owned] Labels["io.portcullis.owner"]: the key is set by the gateway, not by clients"#,
        );
        assert_eq!(p.on_request(&update("bob")), refused);
        let mut create = update("alice");
        create.endpoint = "service.create".into();
        assert_eq!(p.on_request(&create), refused);
    }

    #[test]
    fn schema_subset() {
        let p = Labels::new(json!({"schema": {
            "required": ["com.acme.team"],
            "properties": {"com.acme.team": {"enum": ["a", "b"]}, "com.acme.cost": {"pattern": "^[0-9]+$", "maxLength": 4}},
            "patternProperties": {"^com\\.acme\\.x-": {"minLength": 1}},
            "additionalProperties": false
        }})).unwrap();
        assert_eq!(
            p.on_request(&create(json!({"com.acme.team": "a", "com.acme.x-y": "1"}))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&create(
                json!({"com.acme.cost": "12345x", "other": "1", "com.acme.x-z": ""})
            )),
            deny(concat!(
                r#"[schema] Labels: required key "com.acme.team" is missing; "#,
                r#"[schema] Labels["com.acme.cost"] = "12345x": does not match "^[0-9]+$"; "#,
                r#"[schema] Labels["com.acme.cost"] = "12345x": longer than 4 characters; "#,
                r#"[schema] Labels["com.acme.x-z"] = "": shorter than 1 characters; "#,
                r#"[schema] Labels["other"]: the key is not allowed by the schema"#
            ))
        );
    }

    #[test]
    fn schema_values_bound_to_the_caller() {
        let p = Labels::new(json!({"schema": {"properties": {
            "com.acme.team": {"const": "{group}"},
            "com.acme.owner": {"enum": ["{user}", "shared"]},
        }}}))
        .unwrap();
        let labelled = |team: &str, owner: &str| {
            let mut req = create(json!({"com.acme.team": team, "com.acme.owner": owner}));
            req.caller.user = "bob".into();
            req.caller.groups = vec!["team-b".into(), "ci".into()];
            req
        };
        assert_eq!(p.on_request(&labelled("team-b", "bob")), Verdict::Allow);
        assert_eq!(p.on_request(&labelled("ci", "shared")), Verdict::Allow);
        assert_eq!(
            p.on_request(&labelled("team-a", "alice")),
            deny(concat!(
                r#"[schema] Labels["com.acme.owner"] = "alice": must be one of ["bob", "shared"]; "#,
                r#"[schema] Labels["com.acme.team"] = "team-a": must be one of ["team-b", "ci"]"#
            ))
        );
        // A caller without groups matches no `{group}` value.
        let mut req = labelled("team-b", "bob");
        req.caller.groups.clear();
        assert_eq!(
            p.on_request(&req),
            deny(r#"[schema] Labels["com.acme.team"] = "team-b": must be one of []"#)
        );
    }

    #[test]
    fn namespaces_per_group() {
        let p = Labels::new(json!({"namespace_template": "com.acme.{group}.", "namespace_exempt": ["portcullis-test"]})).unwrap();
        let mut req = create(json!({"com.acme.team-a.app": "x", "portcullis-test": "1"}));
        req.caller.groups = vec!["team-a".into()];
        assert_eq!(p.on_request(&req), Verdict::Allow);
        let mut req = create(json!({"com.acme.team-b.app": "x", "com.acme.app": "y"}));
        req.caller.groups = vec!["team-a".into()];
        assert_eq!(
            p.on_request(&req),
            deny(concat!(
                r#"[namespace] Labels["com.acme.app"]: outside the caller's namespace (allowed prefixes: com.acme.team-a.); "#,
                r#"[namespace] Labels["com.acme.team-b.app"]: outside the caller's namespace (allowed prefixes: com.acme.team-a.)"#
            ))
        );
    }

    #[test]
    fn build_labels_query_and_services() {
        let p = Labels::new(Value::Null).unwrap();
        let mut req = Request::new("POST", "/build", "image.build");
        req.query
            .push(portcullis_plugin::Pair::new("labels", r#"{"Bad":"x"}"#));
        assert_eq!(
            p.on_request(&req),
            deny(
                r#"[convention] labels (query)["Bad"]: 'B' is not allowed (lowercase letters, digits, '.' and '-' only)"#
            )
        );
        let svc =
            Request::new("POST", "/services/create", "service.create").with_json_body(&json!({
                "Labels": {"ok": "1"}, "TaskTemplate": {"ContainerSpec": {"Labels": {"NOPE": "1"}}}
            }));
        assert_eq!(
            p.on_request(&svc),
            deny(
                r#"[convention] TaskTemplate.ContainerSpec.Labels["NOPE"]: 'N' is not allowed (lowercase letters, digits, '.' and '-' only)"#
            )
        );
    }

    #[test]
    fn buildkit_build_labels() {
        let p = Labels::new(json!({"gateway_owned": ["io.portcullis.*"]})).unwrap();
        let solve = |labels: Value| {
            Request::new("POST", "/moby.buildkit.v1.Control/Solve", "build.solve")
                .with_json_body(&json!({"Labels": labels}))
        };
        assert_eq!(
            p.on_request(&solve(json!({"Bad": "x"}))),
            deny(
                r#"[convention] label (--label)["Bad"]: 'B' is not allowed (lowercase letters, digits, '.' and '-' only)"#
            )
        );
        assert_eq!(
            p.on_request(&solve(json!({"io.portcullis.owner": "alice"}))),
            deny(
                r#"[gateway-owned] label (--label)["io.portcullis.owner"]: the key is set by the gateway, not by clients"#
            )
        );
        assert_eq!(
            p.on_request(&solve(json!({"com.example.ok": "1"}))),
            Verdict::Allow
        );
    }

    fn deny(message: &str) -> Verdict {
        Verdict::deny(message)
    }

    fn labels(config: Value) -> Labels {
        Labels::new(config).unwrap()
    }

    fn with_groups(mut req: Request, user: &str, groups: &[&str]) -> Request {
        req.caller.user = user.into();
        req.caller.groups = groups.iter().map(|g| g.to_string()).collect();
        req
    }

    /// `[convention]`: each way a key breaks Docker's conventions, with the closest key that
    /// keeps them.
    #[test]
    fn convention_rule_each_way() {
        let p = labels(Value::Null);
        for (key, why) in [
            ("", "empty key"),
            (
                "Team",
                "'T' is not allowed (lowercase letters, digits, '.' and '-' only)",
            ),
            (
                "com.acme_app",
                "'_' is not allowed (lowercase letters, digits, '.' and '-' only)",
            ),
            ("-a", "must begin and end with a letter or digit"),
            ("a.", "must begin and end with a letter or digit"),
            ("com..acme", "consecutive dots or dashes"),
            ("com.acme--x", "consecutive dots or dashes"),
        ] {
            assert_eq!(
                p.on_request(&create(json!({key: "v"}))),
                deny(&format!("[convention] Labels[{key:?}]: {why}")),
                "{key}"
            );
        }
        for key in [
            "a",
            "9",
            "com.acme.app",
            "com.acme-x.a-b.c1",
            "com.dockerx.y",
        ] {
            assert_eq!(
                p.on_request(&create(json!({key: "v"}))),
                Verdict::Allow,
                "{key}"
            );
        }
        // Reserved prefixes; the tools' keys under them pass.
        assert_eq!(
            p.on_request(&create(
                json!({"com.docker.x": "v", "io.docker.y": "v", "org.dockerproject.z": "v"})
            )),
            deny(
                r#"[convention] Labels["com.docker.x"]: the prefix is reserved by Docker; [convention] Labels["io.docker.y"]: the prefix is reserved by Docker; [convention] Labels["org.dockerproject.z"]: the prefix is reserved by Docker"#
            )
        );
        assert_eq!(
            p.on_request(&create(json!({"com.docker.composer": "v"}))),
            deny(r#"[convention] Labels["com.docker.composer"]: the prefix is reserved by Docker"#)
        );
        assert_eq!(
            p.on_request(&create(json!({"com.docker.compose.project_dir": "v"}))),
            Verdict::Allow
        );
        // A reverse-DNS prefix, when required.
        let dns = labels(json!({"require_reverse_dns": true}));
        assert_eq!(
            dns.on_request(&create(json!({"app": "v"}))),
            deny(r#"[convention] Labels["app"]: must have a reverse-DNS prefix (com.example.key)"#)
        );
        assert_eq!(
            dns.on_request(&create(json!({"acme.app": "v"}))),
            Verdict::Allow
        );
        // Switched off, neither the conventions nor the reserved prefixes are judged.
        let off = labels(json!({"conventions": false}));
        assert_eq!(
            off.on_request(&create(json!({"Team": "v", "com.docker.x": "v"}))),
            Verdict::Allow
        );
    }

    /// `[gateway-owned]`: keys and prefixes only the gateway sets, even under a tool's prefix.
    #[test]
    fn gateway_owned_rule() {
        let p = labels(json!({"gateway_owned": ["io.portcullis.*", "com.docker.compose.owner"]}));
        assert_eq!(
            p.on_request(&create(
                json!({"io.portcullis.owner": "me", "com.docker.compose.owner": "x"})
            )),
            deny(
                r#"[gateway-owned] Labels["com.docker.compose.owner"]: the key is set by the gateway, not by clients; [gateway-owned] Labels["io.portcullis.owner"]: the key is set by the gateway, not by clients"#
            )
        );
        assert_eq!(
            p.on_request(&create(
                json!({"io.portcullis": "me", "com.docker.compose.owners": "x"})
            )),
            Verdict::Allow
        );
        // Sent back unchanged by an update: only what the object holds, only on an update.
        let update = |endpoint: &str, value: &str, held: Option<&str>| {
            let mut req = Request::new("POST", "/x", endpoint)
                .with_json_body(&json!({"Labels": {"io.portcullis.owner": value}}));
            req.target = held.map(|v| Target {
                labels: vec![portcullis_plugin::Pair::new("io.portcullis.owner", v)],
                ..Target::default()
            });
            p.on_request(&req)
        };
        let refused = deny(
            r#"[gateway-owned] Labels["io.portcullis.owner"]: the key is set by the gateway, not by clients"#,
        );
        assert_eq!(
            update("secret.update", "alice", Some("alice")),
            Verdict::Allow
        );
        assert_eq!(
            update("config.update", "alice", Some("alice")),
            Verdict::Allow
        );
        assert_eq!(update("secret.update", "alice", Some("bob")), refused);
        assert_eq!(update("secret.update", "alice", None), refused);
        assert_eq!(update("secret.create", "alice", Some("alice")), refused);
    }

    /// `[namespace]`: keys under the template filled for the caller, or exempt.
    #[test]
    fn namespace_rule() {
        let p = labels(json!({"namespace_template": "com.acme.{group}.",
                               "namespace_exempt": ["com.acme.team", "org.example.*"]}));
        let req = |labels: Value, groups: &[&str]| with_groups(create(labels), "alice", groups);
        assert_eq!(
            p.on_request(&req(
                json!({"com.acme.b.x": "1", "com.acme.team": "a", "org.example.y": "1"}),
                &["a", "b"]
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&req(
                json!({"com.acme.c.x": "1", "com.acme.teams": "1", "org.examples": "1"}),
                &["a", "b"]
            )),
            deny(
                r#"[namespace] Labels["com.acme.c.x"]: outside the caller's namespace (allowed prefixes: com.acme.a., com.acme.b.); [namespace] Labels["com.acme.teams"]: outside the caller's namespace (allowed prefixes: com.acme.a., com.acme.b.); [namespace] Labels["org.examples"]: outside the caller's namespace (allowed prefixes: com.acme.a., com.acme.b.)"#
            )
        );
        assert_eq!(
            p.on_request(&req(json!({"com.acme.a.x": "1"}), &[])),
            deny(
                r#"[namespace] Labels["com.acme.a.x"]: outside the caller's namespace (the caller has no namespace)"#
            )
        );
        let user = labels(json!({"namespace_template": "org.{user}."}));
        assert_eq!(
            user.on_request(&req(json!({"org.alice.x": "1"}), &[])),
            Verdict::Allow
        );
        assert_eq!(
            user.on_request(&req(json!({"org.alicex": "1"}), &[])),
            deny(
                r#"[namespace] Labels["org.alicex"]: outside the caller's namespace (allowed prefixes: org.alice.)"#
            )
        );
    }

    /// `[schema]`: each keyword, with the value that breaks it and the closest that passes.
    #[test]
    fn schema_rule_each_keyword() {
        let p = labels(json!({"schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["com.acme.team"],
            "properties": {
                "com.acme.team": {"enum": ["a", "b"], "description": "the team", "type": "string"},
                "com.acme.cost": {"pattern": "^[0-9]+$", "minLength": 2, "maxLength": 4},
                "com.acme.env": {"const": "prod"}
            },
            "patternProperties": {"^com\\.acme\\.x-": {"pattern": "^y", "maxLength": 2}},
            "additionalProperties": false
        }}));
        let judge = |extra: Value| {
            let mut l = json!({"com.acme.team": "a"});
            l.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            p.on_request(&create(l))
        };
        let ok = [
            json!({"com.acme.cost": "12"}),
            json!({"com.acme.cost": "1234"}),
            json!({"com.acme.env": "prod"}),
            json!({"com.acme.x-1": "y1"}),
            json!({"com.docker.compose.project": "p"}),
        ];
        for extra in ok {
            assert_eq!(judge(extra.clone()), Verdict::Allow, "{extra}");
        }
        for (extra, why) in [
            (
                json!({"com.acme.cost": "1"}),
                r#"["com.acme.cost"] = "1": shorter than 2 characters"#,
            ),
            (
                json!({"com.acme.cost": "12345"}),
                r#"["com.acme.cost"] = "12345": longer than 4 characters"#,
            ),
            (
                json!({"com.acme.cost": "1a"}),
                r#"["com.acme.cost"] = "1a": does not match "^[0-9]+$""#,
            ),
            (
                json!({"com.acme.env": "dev"}),
                r#"["com.acme.env"] = "dev": must be "prod""#,
            ),
            (
                json!({"com.acme.x-1": "z"}),
                r#"["com.acme.x-1"] = "z": does not match "^y""#,
            ),
            (
                json!({"com.acme.x-1": "yyy"}),
                r#"["com.acme.x-1"] = "yyy": longer than 2 characters"#,
            ),
            (
                json!({"com.acme.other": "1"}),
                r#"["com.acme.other"]: the key is not allowed by the schema"#,
            ),
            (
                json!({"com.acme.team": "c"}),
                r#"["com.acme.team"] = "c": must be one of ["a", "b"]"#,
            ),
        ] {
            assert_eq!(
                judge(extra.clone()),
                deny(&format!("[schema] Labels{why}")),
                "{extra}"
            );
        }
        // Lengths count characters, not bytes.
        assert_eq!(judge(json!({"com.acme.x-1": "yé"})), Verdict::Allow);
        assert_eq!(
            p.on_request(&create(json!({}))),
            deny(r#"[schema] Labels: required key "com.acme.team" is missing"#)
        );
        // Without `additionalProperties: false` other keys pass.
        let open = labels(json!({"schema": {"properties": {"com.acme.env": {"const": "prod"}}}}));
        assert_eq!(
            open.on_request(&create(json!({"com.acme.other": "1"}))),
            Verdict::Allow
        );
        let explicit = labels(json!({"schema": {"additionalProperties": true}}));
        assert_eq!(
            explicit.on_request(&create(json!({"com.acme.other": "1"}))),
            Verdict::Allow
        );
    }

    /// Which labels each endpoint carries, and which kind's schema judges them.
    #[test]
    fn label_sets_per_endpoint_and_kind() {
        let kinds = [
            "container",
            "image",
            "volume",
            "network",
            "service",
            "config",
            "secret",
        ];
        let schemas: serde_json::Map<String, Value> = kinds
            .iter()
            .map(|k| (k.to_string(), json!({"required": [format!("{k}.kind")]})))
            .collect();
        let p = labels(json!({"schemas": schemas}));
        let missing = |field: &str, kind: &str| {
            format!(r#"[schema] {field}: required key "{kind}.kind" is missing"#)
        };
        for (endpoint, kind) in [
            ("container.create", "container"),
            ("image.commit", "container"),
            ("volume.create", "volume"),
            ("network.create", "network"),
            ("config.create", "config"),
            ("config.update", "config"),
            ("secret.create", "secret"),
            ("secret.update", "secret"),
        ] {
            let req = |labels: Value| {
                Request::new("POST", "/x", endpoint).with_json_body(&json!({"Labels": labels}))
            };
            assert_eq!(
                p.on_request(&req(json!({}))),
                deny(&missing("Labels", kind)),
                "{endpoint}"
            );
            assert_eq!(
                p.on_request(&req(json!({format!("{kind}.kind"): "x"}))),
                Verdict::Allow,
                "{endpoint}"
            );
        }
        for endpoint in ["service.create", "service.update"] {
            let req = |labels: Value, task: Value| {
                Request::new("POST", "/x", endpoint).with_json_body(
                    &json!({"Labels": labels, "TaskTemplate": {"ContainerSpec": {"Labels": task}}}),
                )
            };
            assert_eq!(
                p.on_request(&req(json!({}), Value::Null)),
                deny(&format!(
                    "{}; {}",
                    missing("Labels", "service"),
                    missing("TaskTemplate.ContainerSpec.Labels", "container")
                )),
                "{endpoint}"
            );
            assert_eq!(
                p.on_request(&req(
                    json!({"service.kind": "x"}),
                    json!({"container.kind": "x"})
                )),
                Verdict::Allow,
                "{endpoint}"
            );
        }
        // Images: a BuildKit build's labels, a classic build's `labels` query.
        let solve = |labels: Value| {
            Request::new("POST", "/x", "build.solve").with_json_body(&json!({"Labels": labels}))
        };
        assert_eq!(
            p.on_request(&solve(Value::Null)),
            deny(&missing("label (--label)", "image"))
        );
        assert_eq!(
            p.on_request(&solve(json!({"image.kind": "x"}))),
            Verdict::Allow
        );
        let build = |labels: Option<&str>| {
            let mut req = Request::new("POST", "/build", "image.build");
            req.query = labels
                .map(|l| vec![portcullis_plugin::Pair::new("labels", l)])
                .unwrap_or_default();
            req
        };
        assert_eq!(p.on_request(&build(None)), Verdict::Allow);
        assert_eq!(
            p.on_request(&build(Some("{}"))),
            deny(&missing("labels (query)", "image"))
        );
        assert_eq!(
            p.on_request(&build(Some(r#"{"image.kind": null}"#))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&build(Some(r#"["a"]"#))),
            deny("[schema] labels (query) is not a JSON object of strings: invalid type: sequence, expected a map at line 1 column 0")
        );
        // Other endpoints carry no labels to judge.
        let other = Request::new("POST", "/x", "container.update")
            .with_json_body(&json!({"Labels": {"Bad": "x"}}));
        assert_eq!(p.on_request(&other), Verdict::Allow);
        // A kind without a schema of its own falls back to `schema`.
        let fallback = labels(json!({"schema": {"required": ["a"]}, "schemas": {"volume": {}}}));
        let vol =
            Request::new("POST", "/x", "volume.create").with_json_body(&json!({"Labels": {}}));
        assert_eq!(fallback.on_request(&vol), Verdict::Allow);
        let net =
            Request::new("POST", "/x", "network.create").with_json_body(&json!({"Labels": null}));
        assert_eq!(
            fallback.on_request(&net),
            deny(r#"[schema] Labels: required key "a" is missing"#)
        );
    }

    /// What a container inherits from its image is judged by whose it is only.
    #[test]
    fn inherited_labels_exactly() {
        // The schema names a gateway-owned key and a tool's key as well: inherited, they are
        // still not the caller's (the gateway stamps its own over the image's).
        let p = labels(json!({
            "namespace_template": "com.acme.{group}.",
            "schemas": {"container": {"properties": {
                "com.acme.tier": {"enum": ["web"]},
                "io.portcullis.owner": {"const": "{user}"},
                "com.docker.compose.project": {"const": "mine"},
            }}},
        }));
        let image = |field: &str, found: Option<&[(&str, &str)]>| Reference {
            field: field.into(),
            kind: "image".into(),
            name: "app".into(),
            object: found.map(|l| Target {
                kind: "image".into(),
                labels: l
                    .iter()
                    .map(|(k, v)| portcullis_plugin::Pair::new(*k, *v))
                    .collect(),
                ..Target::default()
            }),
        };
        let theirs: &[(&str, &str)] = &[
            ("com.acme.a.x", "1"),
            ("com.acme.tier", "db"),
            ("Maintainer", "someone"),
            ("io.portcullis.owner", "bob"),
            ("com.docker.compose.project", "p"),
            ("com.docker.x", "y"),
        ];
        let create_from = |own: Value, reference: Reference| {
            let mut req = with_groups(create(own), "alice", &["b"]);
            req.related = vec![reference];
            req
        };
        assert_eq!(
            p.on_request(&create_from(json!({}), image("Image", Some(theirs)))),
            deny(
                r#"[namespace] Image "app" (labels the container inherits)["com.acme.a.x"]: outside the caller's namespace (allowed prefixes: com.acme.b.); [schema] Image "app" (labels the container inherits)["com.acme.tier"] = "db": must be one of ["web"]"#
            )
        );
        // The container's own labels override the image's.
        assert_eq!(
            p.on_request(&create_from(
                json!({"com.acme.b.tier": "1", "com.acme.a.x": null, "com.acme.tier": "web"}),
                image("Image", Some(theirs))
            )),
            deny(
                r#"[namespace] Labels["com.acme.a.x"]: outside the caller's namespace (allowed prefixes: com.acme.b.); [namespace] Labels["com.acme.tier"]: outside the caller's namespace (allowed prefixes: com.acme.b.)"#
            )
        );
        // Only the image the body runs, and only one the engine knows.
        assert_eq!(
            p.on_request(&create_from(
                json!({}),
                image("TaskTemplate.ContainerSpec.Image", Some(theirs))
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&create_from(json!({}), image("Image", None))),
            Verdict::Allow
        );
        let mut volume = image("Image", Some(theirs));
        volume.kind = "volume".into();
        assert_eq!(
            p.on_request(&create_from(json!({}), volume)),
            Verdict::Allow
        );
        // A service's task containers inherit from the task's image.
        let mut svc = with_groups(
            Request::new("POST", "/x", "service.update").with_json_body(&json!({
                "Labels": {"com.acme.b.x": "1"},
                "TaskTemplate": {"ContainerSpec": {"Labels": {"com.acme.tier": "db"}}}})),
            "alice",
            &["b"],
        );
        svc.related = vec![image("TaskTemplate.ContainerSpec.Image", Some(theirs))];
        assert_eq!(
            p.on_request(&svc),
            deny(
                r#"[namespace] TaskTemplate.ContainerSpec.Labels["com.acme.tier"]: outside the caller's namespace (allowed prefixes: com.acme.b.); [schema] TaskTemplate.ContainerSpec.Labels["com.acme.tier"] = "db": must be one of ["web"]; [namespace] TaskTemplate.ContainerSpec.Image "app" (labels the container inherits)["com.acme.a.x"]: outside the caller's namespace (allowed prefixes: com.acme.b.)"#
            )
        );
        // Other endpoints inherit nothing.
        let mut commit = with_groups(
            Request::new("POST", "/x", "image.commit").with_json_body(&json!({"Labels": {}})),
            "alice",
            &["b"],
        );
        commit.related = vec![image("Image", Some(theirs))];
        assert_eq!(p.on_request(&commit), Verdict::Allow);
        // Without a namespace or schema, an image's labels are not the caller's business.
        let plain = labels(Value::Null);
        assert_eq!(
            plain.on_request(&create_from(json!({}), image("Image", Some(theirs)))),
            Verdict::Allow
        );
    }

    #[test]
    fn configuration_errors_are_exact() {
        let err = |config: Value| Labels::new(config).err().unwrap_or_default();
        // The regex crate's own words follow the field.
        let bad = |p: &str| Regex::new(p).err().unwrap();
        assert_eq!(
            err(json!({"schema": {"properties": {"a": {"pattern": "("}}}})),
            format!(
                "labels config: schema.properties.a.pattern: bad pattern \"(\": {}",
                bad("(")
            )
        );
        assert_eq!(
            err(json!({"schemas": {"volume": {"patternProperties": {"[": {}}}}})),
            format!(
                "labels config: schemas.volume.patternProperties: bad pattern \"[\": {}",
                bad("[")
            )
        );
        assert_eq!(
            err(json!({"schema": {"patternProperties": {"^a": {"pattern": "("}}}})),
            format!(
                "labels config: schema.patternProperties.^a.pattern: bad pattern \"(\": {}",
                bad("(")
            )
        );
        assert_eq!(
            err(json!({"schemas": {"vm": {}}})),
            "labels config: schemas.vm: unknown kind (kinds: container, image, volume, network, service, config, secret)"
        );
        assert_eq!(
            err(json!({"namespace_template": "com.acme."})),
            "labels config: namespace_template must contain {group} or {user}"
        );
        assert_eq!(
            err(json!({"schema": {"minProperties": 1}})),
            "labels config: unknown field `minProperties`, expected one of `required`, `properties`, `patternProperties`, `additionalProperties`, `$schema`, `$id`, `title`, `description`, `type`"
        );
    }
}
