//! `tenancy`: owner isolation between the callers of a shared engine.
//!
//! - **Stamp** (request, needs `phase = "mutate"`): creating a container, volume, network,
//!   service (and its tasks' containers), secret or config, or building an image, sets the
//!   owner label (`owner_label`, default `io.portcullis.owner`) to the caller's user name.
//!   Updates of services, secrets and configs keep the existing owner.
//! - **Guard** (request): a request on an existing object (inspect, start, stop, kill, logs,
//!   attach, exec, rm, archive, export, commit, update, rename, top, stats, wait, resize,
//!   network connect, ...) passes only for the object's owner or an administrator. The owner
//!   is read from `request.target`, which the gateway fills from the engine just before
//!   forwarding, so a reference by full id, unique prefix or name is judged by the object the
//!   engine will act on. An exec is judged by its container.
//! - **References** (request): the objects a body refers to (`request.related`: volumes a
//!   container mounts, networks it joins, containers whose volumes or namespaces it shares,
//!   containers connected to a network, secrets and configs of a service) must be the
//!   caller's own too, or shared networks (`shared_networks`: `bridge`, `host`, `none`). A
//!   named volume that does not exist yet is refused unless `implicit_volumes = true`: the
//!   engine would create it without an owner label.
//! - **Filter**: list, prune and event requests get the owner label added to their `filters`
//!   query parameter, so the engine itself returns (or prunes, or streams) only the caller's
//!   objects; `/system/df`, which cannot be filtered by query, is filtered in the response.
//! - **Events** (`events = "judge"`, response hook on `system.events`): instead of the label
//!   filter, which on engine 20.10 leaves out every volume, network and swarm event (they
//!   carry no labels), each event is judged by its object's owner: container and image events
//!   by the labels in `Actor.Attributes`, the others by `request.target`, which the gateway
//!   fills with the object the event is about.
//!
//! Images are shared by default (`shared_images = true`: base images are everyone's). With
//! `shared_images = false`, image requests are guarded and image lists filtered like the rest.
//! Objects without an owner label (made before the gateway, or directly on the engine) are
//! reachable only by administrators (`unowned = "deny"`), read-only (`"read"`) or by anyone
//! (`"allow"`).

use portcullis_plugin::prelude::*;
use serde::Deserialize;

/// What non-administrators may do with objects that have no owner label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unowned {
    /// Nothing.
    Deny,
    /// `GET` and `HEAD` requests (inspect, logs, list).
    Read,
    /// Everything.
    Allow,
}

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The owner label key.
    pub owner_label: String,
    /// Members of this group act on every object and see everything.
    pub admin_group: String,
    /// Users who are administrators regardless of groups.
    pub admin_users: Vec<String>,
    /// Images are not isolated.
    pub shared_images: bool,
    /// Access to objects without an owner label.
    pub unowned: Unowned,
    /// Networks everyone may join and connect to, by name (the engine's predefined ones).
    pub shared_networks: Vec<String>,
    /// Let a container mount a named volume that does not exist yet. The engine then creates
    /// it without an owner label, so only administrators can remove it later; by default such
    /// a create is refused with a hint to `docker volume create` the volume first.
    pub implicit_volumes: bool,
    /// How `/events` is isolated.
    pub events: Events,
}

/// How a caller's `/events` stream is restricted to its own objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Events {
    /// The owner label is added to the stream's `filters`: the engine streams only events
    /// that carry it, which on engine 20.10 are container and image events only.
    Filter,
    /// Every event is judged in the response hook by the owner of its object. Needs
    /// `system.events` among the plugin's response endpoints: without it the request is not
    /// filtered and nothing judges the events, so every caller sees every event.
    Judge,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            owner_label: "io.portcullis.owner".into(),
            admin_group: "docker-admin".into(),
            admin_users: Vec::new(),
            shared_images: true,
            unowned: Unowned::Deny,
            shared_networks: vec!["bridge".into(), "host".into(), "none".into()],
            implicit_volumes: false,
            events: Events::Filter,
        }
    }
}

/// The tenancy plugin.
pub struct Tenancy {
    config: Config,
}

/// Endpoints whose `filters` query parameter restricts what the engine returns or acts on.
const FILTERED: [&str; 12] = [
    "container.list",
    "container.prune",
    "volume.list",
    "volume.prune",
    "network.list",
    "network.prune",
    "service.list",
    "secret.list",
    "config.list",
    "task.list",
    "system.events",
    "build.prune",
];

impl Plugin for Tenancy {
    const NAME: &'static str = "tenancy";
    const HOOKS: Hooks = Hooks::REQUEST.union(Hooks::RESPONSE);

    fn new(config: Value) -> Result<Self, String> {
        let config: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| format!("tenancy config: {e}"))?
        };
        if config.owner_label.is_empty() {
            return Err("tenancy config: owner_label must not be empty".into());
        }
        Ok(Tenancy { config })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        if self.is_admin(req) {
            // Administrators' objects are stamped too, so they stay attributable.
            return self.stamp(req).unwrap_or(Verdict::Allow);
        }
        if let Some(verdict) = self.guard(req) {
            return verdict;
        }
        if let Some(verdict) = self.check_related(req) {
            return verdict;
        }
        if let Some(verdict) = self.stamp(req) {
            return verdict;
        }
        if req.endpoint == "system.events"
            && self.config.events == Events::Judge
            && !labelled_events_only(req)
        {
            return Verdict::Allow;
        }
        if FILTERED.contains(&req.endpoint.as_str())
            || (!self.config.shared_images
                && matches!(req.endpoint.as_str(), "image.list" | "image.prune"))
        {
            return self.filter_query(req);
        }
        Verdict::Allow
    }

    fn on_response(&self, req: &Request, resp: &Response) -> Verdict {
        if req.endpoint == "system.events"
            && self.config.events == Events::Judge
            && !self.is_admin(req)
        {
            return self.judge_event(req, resp);
        }
        if req.endpoint != "system.data.usage" || self.is_admin(req) || resp.status != 200 {
            return Verdict::Allow;
        }
        let Some(body) = resp.json_body() else {
            return Verdict::Allow;
        };
        let user = req.caller.user.as_str();
        let own = |v: &Value| {
            v.pointer(&json_pointer(["Labels", self.config.owner_label.as_str()]))
                .and_then(Value::as_str)
                == Some(user)
        };
        let mut patch = Patch::new();
        let mut sections = vec!["Containers", "Volumes"];
        if !self.config.shared_images {
            sections.push("Images");
        }
        for section in sections {
            if let Some(list) = body.get(section).and_then(Value::as_array) {
                let mine: Vec<Value> = list.iter().filter(|v| own(v)).cloned().collect();
                patch = patch.replace(format!("/{section}"), Value::Array(mine));
            }
        }
        // Build cache records describe other callers' build steps and carry no owner.
        if body.get("BuildCache").is_some_and(Value::is_array) {
            patch = patch.replace("/BuildCache", json!([]));
        }
        Verdict::from(patch)
    }
}

impl Tenancy {
    fn is_admin(&self, req: &Request) -> bool {
        (!self.config.admin_group.is_empty() && req.caller.in_group(&self.config.admin_group))
            || self.config.admin_users.contains(&req.caller.user)
    }

    fn isolated(&self, kind: &str) -> bool {
        match kind {
            "container" | "volume" | "network" | "service" | "secret" | "config" | "task" => true,
            "image" => !self.config.shared_images,
            _ => false,
        }
    }

    fn shared_network(&self, t: &Target) -> bool {
        t.kind == "network"
            && t.name
                .as_ref()
                .is_some_and(|n| self.config.shared_networks.contains(n))
    }

    /// Owner-only access to an existing object.
    fn guard(&self, req: &Request) -> Option<Verdict> {
        let target = req.target.as_ref()?;
        if !self.isolated(&target.kind) || self.shared_network(target) {
            return None;
        }
        let name = target.name.as_deref().unwrap_or(&target.id);
        match target.label(&self.config.owner_label) {
            Some(owner) if owner == req.caller.user => None,
            Some(_) => Some(Verdict::deny(format!(
                "[owner] {} {name:?} belongs to another user; {} may act only on its own {}s",
                target.kind, req.caller.user, target.kind
            ))),
            None => {
                let read = matches!(req.method.as_str(), "GET" | "HEAD");
                match self.config.unowned {
                    Unowned::Allow => None,
                    Unowned::Read if read => None,
                    _ => Some(Verdict::deny(format!(
                        "[owner] {} {name:?} has no owner label ({}); only administrators may act on it",
                        target.kind, self.config.owner_label
                    ))),
                }
            }
        }
    }

    /// Owner-only use of the objects a body refers to: another user's volume mounted, network
    /// joined, container whose volumes or namespaces are shared, secret or config given to a
    /// service. Every offending field is named at once.
    fn check_related(&self, req: &Request) -> Option<Verdict> {
        let user = req.caller.user.as_str();
        let problems: Vec<String> = req
            .related
            .iter()
            .filter_map(|r| {
                let (field, kind, name) = (&r.field, &r.kind, &r.name);
                let Some(object) = &r.object else {
                    if kind == "volume" && self.config.implicit_volumes {
                        return None;
                    }
                    let hint = if kind == "volume" {
                        format!(" (the engine would create it without an owner; create it first: docker volume create {name})")
                    } else {
                        String::new()
                    };
                    return Some(format!("{field}: no {kind} {name:?} exists{hint}"));
                };
                if !self.isolated(&object.kind) || self.shared_network(object) {
                    return None;
                }
                match object.label(&self.config.owner_label) {
                    Some(owner) if owner == user => None,
                    Some(_) => Some(format!("{field}: {kind} {name:?} belongs to another user")),
                    None if self.config.unowned == Unowned::Allow => None,
                    None => Some(format!(
                        "{field}: {kind} {name:?} has no owner label ({}); only administrators may use it",
                        self.config.owner_label
                    )),
                }
            })
            .collect();
        (!problems.is_empty()).then(|| {
            Verdict::deny(format!(
                "[owner] {user} may use only its own objects: {}",
                problems.join("; ")
            ))
        })
    }

    /// The owner label patch for create (and spec update) requests.
    fn stamp(&self, req: &Request) -> Option<Verdict> {
        let key = self.config.owner_label.as_str();
        let endpoint = req.endpoint.as_str();
        if endpoint == "image.build" {
            let mut labels: serde_json::Map<String, Value> = match req.query("labels") {
                Some(text) => match serde_json::from_str(text) {
                    Ok(m) => m,
                    Err(e) => {
                        return Some(Verdict::deny_with(
                            400,
                            format!("[owner] the labels query parameter is not a JSON object: {e}"),
                        ))
                    }
                },
                None => serde_json::Map::new(),
            };
            labels.insert(key.to_owned(), Value::String(req.caller.user.clone()));
            return Some(Verdict::from(
                Patch::new().set_query("labels", Value::Object(labels).to_string()),
            ));
        }
        let update = matches!(
            endpoint,
            "service.update" | "secret.update" | "config.update"
        );
        let create = matches!(
            endpoint,
            "container.create"
                | "volume.create"
                | "network.create"
                | "service.create"
                | "secret.create"
                | "config.create"
        );
        if !create && !update {
            return None;
        }
        // An update keeps the owner the object has (the guard checked it is the caller,
        // unless an administrator is updating it).
        let owner = update
            .then(|| req.target.as_ref().and_then(|t| t.label(key)))
            .flatten()
            .unwrap_or(&req.caller.user)
            .to_owned();
        // Only the label fields are read; the rest of the body is skipped, not built. (A
        // derived view also reads a JSON array, positionally: only an object is a body.)
        let object = req
            .body
            .as_deref()
            .is_some_and(|b| b.trim_start().starts_with('{'));
        let Some(body) = req.body_as::<LabelFields>().filter(|_| object) else {
            return Some(Verdict::deny_with(
                400,
                format!("[owner] {endpoint} needs a JSON object body to record the owner"),
            ));
        };
        let mut patch = Patch::new();
        patch = set_label(patch, body.labels.as_ref(), &["Labels"], key, &owner);
        if endpoint.starts_with("service.") {
            if let Some(spec) = body.container_spec().filter(|s| s.is_object()) {
                patch = set_label(
                    patch,
                    spec.get("Labels"),
                    &["TaskTemplate", "ContainerSpec", "Labels"],
                    key,
                    &owner,
                );
            }
        }
        Some(Verdict::from(patch))
    }

    /// One event of the caller's `/events` stream (`resp.body`): shown only when its object
    /// is the caller's (or shared: images with `shared_images`, unowned objects as
    /// `unowned` allows reading them). Events of other kinds (daemon, plugin, node) are
    /// administrators' business and left out.
    fn judge_event(&self, req: &Request, resp: &Response) -> Verdict {
        let hide = |why: &str| Verdict::deny(format!("[owner] event left out: {why}"));
        let Some(event) = resp.json_body() else {
            return hide("not a JSON event");
        };
        let kind = event.get("Type").and_then(Value::as_str).unwrap_or("");
        if kind == "image" && self.config.shared_images {
            return Verdict::Allow;
        }
        if !self.isolated(kind) {
            return hide("not an object callers own");
        }
        let owner = match kind {
            // These events carry their object's labels.
            "container" | "image" => event
                .pointer(&json_pointer([
                    "Actor",
                    "Attributes",
                    self.config.owner_label.as_str(),
                ]))
                .and_then(Value::as_str)
                .map(str::to_owned),
            // The gateway looked the object up (or remembers it, once destroyed).
            _ => match req.target.as_ref().filter(|t| t.kind == kind) {
                Some(t) => t.label(&self.config.owner_label).map(str::to_owned),
                None => return hide("the gateway does not know its object"),
            },
        };
        match owner {
            Some(owner) if owner == req.caller.user => Verdict::Allow,
            Some(_) => hide("another user's object"),
            None if self.config.unowned != Unowned::Deny => Verdict::Allow,
            None => hide("an object without owner"),
        }
    }

    /// Adds the owner to the `filters` query parameter (label filters are ANDed).
    fn filter_query(&self, req: &Request) -> Verdict {
        let wanted = format!("{}={}", self.config.owner_label, req.caller.user);
        let mut filters: serde_json::Map<String, Value> = match req.query("filters") {
            Some(text) if !text.is_empty() => match serde_json::from_str(text) {
                Ok(m) => m,
                Err(e) => {
                    return Verdict::deny_with(
                        400,
                        format!("[owner] the filters query parameter is not a JSON object: {e}"),
                    )
                }
            },
            _ => serde_json::Map::new(),
        };
        // dockerd reads `{"label": {"a=b": true}}` (its current form) or, failing that,
        // `{"label": ["a=b"]}` (the legacy one) for the whole object: a new entry takes the
        // form of the others, or dockerd refuses the mix.
        let legacy = filters.values().any(Value::is_array);
        match filters.get_mut("label") {
            Some(Value::Object(m)) => {
                m.insert(wanted, Value::Bool(true));
            }
            Some(Value::Array(list)) => list.push(Value::String(wanted)),
            _ if legacy => {
                filters.insert("label".into(), json!([wanted]));
            }
            _ => {
                filters.insert("label".into(), json!({ wanted: true }));
            }
        }
        Verdict::from(Patch::new().set_query("filters", Value::Object(filters).to_string()))
    }
}

/// Whether the client's own `type` filter asks only for container events, which carry their
/// labels: the engine can then filter them by owner itself, and fewer events reach the
/// response hook.
fn labelled_events_only(req: &Request) -> bool {
    let Some(filters) = req
        .query("filters")
        .and_then(|f| serde_json::from_str::<Value>(f).ok())
    else {
        return false;
    };
    // `{"type": {"container": true}}` or the legacy `{"type": ["container"]}`.
    let types: Vec<&str> = match filters.get("type") {
        Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    !types.is_empty() && types.iter().all(|t| *t == "container")
}

/// Sets `labels_at/key` to `owner`. `labels` is what the body holds at `labels_at`; when it
/// is not an object (absent or `null`), the whole object is added.
fn set_label(
    patch: Patch,
    labels: Option<&Value>,
    labels_at: &[&str],
    key: &str,
    owner: &str,
) -> Patch {
    let ptr = json_pointer(labels_at.iter().copied());
    if labels.is_some_and(Value::is_object) {
        let mut path = labels_at.to_vec();
        path.push(key);
        patch.add(json_pointer(path), json!(owner))
    } else {
        patch.add(ptr, json!({ key: owner }))
    }
}

export_plugin!(Tenancy);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::{Pair, Reference, Target};

    fn as_user(mut req: Request, user: &str) -> Request {
        req.caller.user = user.into();
        req
    }

    fn container(owner: Option<&str>) -> Target {
        Target {
            kind: "container".into(),
            id: "abc".into(),
            name: Some("web".into()),
            labels: owner
                .map(|o| vec![Pair::new("io.portcullis.owner", o)])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&Tenancy::new(Value::Null).unwrap());
    }

    #[test]
    fn stamps_creates() {
        let p = Tenancy::new(Value::Null).unwrap();
        let req = as_user(
            Request::new("POST", "/containers/create", "container.create")
                .with_json_body(&json!({"Image": "x", "Labels": null})),
            "alice",
        );
        let Verdict::Patch(patch) = p.on_request(&req) else {
            panic!()
        };
        assert_eq!(
            patch.ops()[0],
            json!({"op": "add", "path": "/Labels", "value": {"io.portcullis.owner": "alice"}})
        );
        let req = as_user(
            Request::new("POST", "/services/create", "service.create").with_json_body(
                &json!({"Labels": {"a": "b"}, "TaskTemplate": {"ContainerSpec": {"Image": "x"}}}),
            ),
            "alice",
        );
        let Verdict::Patch(patch) = p.on_request(&req) else {
            panic!()
        };
        assert_eq!(patch.ops()[0]["path"], "/Labels/io.portcullis.owner");
        assert_eq!(patch.ops()[1]["path"], "/TaskTemplate/ContainerSpec/Labels");
        let req = as_user(
            Request::new("POST", "/volumes/create", "volume.create"),
            "alice",
        );
        assert!(matches!(p.on_request(&req), Verdict::Deny(_)));
        // A derived view would read an array positionally; the owner needs an object.
        let req = as_user(
            Request::new("POST", "/volumes/create", "volume.create")
                .with_json_body(&json!([{"a": "b"}])),
            "alice",
        );
        assert!(matches!(p.on_request(&req), Verdict::Deny(_)));
    }

    #[test]
    fn guards_by_owner() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let mut req = Request::new("POST", "/containers/web/stop", "container.stop");
        req.target = Some(container(Some("bob")));
        assert!(matches!(
            p.on_request(&as_user(req.clone(), "alice")),
            Verdict::Deny(_)
        ));
        assert_eq!(p.on_request(&as_user(req.clone(), "bob")), Verdict::Allow);
        assert_eq!(p.on_request(&as_user(req.clone(), "root")), Verdict::Allow);
        req.target = Some(container(None));
        assert!(matches!(
            p.on_request(&as_user(req.clone(), "bob")),
            Verdict::Deny(_)
        ));
        req.target = None;
        assert_eq!(p.on_request(&as_user(req, "bob")), Verdict::Allow);
    }

    fn reference(field: &str, kind: &str, name: &str, owner: Option<Option<&str>>) -> Reference {
        Reference {
            field: field.into(),
            kind: kind.into(),
            name: name.into(),
            object: owner.map(|o| Target {
                kind: kind.into(),
                id: format!("{name}-id"),
                name: Some(name.into()),
                labels: o
                    .map(|o| vec![Pair::new("io.portcullis.owner", o)])
                    .unwrap_or_default(),
            }),
        }
    }

    #[test]
    fn references_must_be_the_callers_own() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let create = |related: Vec<Reference>| {
            let mut req = Request::new("POST", "/containers/create", "container.create")
                .with_json_body(&json!({"Image": "x"}));
            req.related = related;
            req
        };
        let own = create(vec![
            reference("HostConfig.Binds[0]", "volume", "data", Some(Some("alice"))),
            reference(
                "NetworkingConfig.EndpointsConfig",
                "network",
                "bridge",
                Some(None),
            ),
        ]);
        assert!(matches!(
            p.on_request(&as_user(own, "alice")),
            Verdict::Patch(_)
        ));

        let theirs = create(vec![
            reference("HostConfig.Binds[0]", "volume", "data", Some(Some("bob"))),
            reference("HostConfig.VolumesFrom[0]", "container", "web", Some(None)),
            reference("HostConfig.Mounts[0].Source", "volume", "new", None),
        ]);
        let Verdict::Deny(d) = p.on_request(&as_user(theirs.clone(), "alice")) else {
            panic!()
        };
        assert!(
            d.message
                .contains(r#"HostConfig.Binds[0]: volume "data" belongs to another user"#),
            "{}",
            d.message
        );
        assert!(
            d.message
                .contains(r#"HostConfig.VolumesFrom[0]: container "web" has no owner label"#),
            "{}",
            d.message
        );
        assert!(
            d.message
                .contains(r#"HostConfig.Mounts[0].Source: no volume "new" exists"#),
            "{}",
            d.message
        );
        // Administrators use anything.
        assert!(matches!(
            p.on_request(&as_user(theirs, "root")),
            Verdict::Patch(_)
        ));

        let lenient = Tenancy::new(json!({"implicit_volumes": true})).unwrap();
        let missing = create(vec![reference(
            "HostConfig.Binds[0]",
            "volume",
            "new",
            None,
        )]);
        assert!(matches!(
            lenient.on_request(&as_user(missing, "alice")),
            Verdict::Patch(_)
        ));
    }

    #[test]
    fn shared_networks_are_everyones() {
        let p = Tenancy::new(Value::Null).unwrap();
        let mut req = Request::new("POST", "/networks/bridge/connect", "network.connect")
            .with_json_body(&json!({"Container": "web"}));
        req.target = Some(Target {
            kind: "network".into(),
            id: "n1".into(),
            name: Some("bridge".into()),
            labels: vec![],
        });
        req.related = vec![reference(
            "Container",
            "container",
            "web",
            Some(Some("alice")),
        )];
        assert_eq!(p.on_request(&as_user(req.clone(), "alice")), Verdict::Allow);
        assert!(matches!(
            p.on_request(&as_user(req, "bob")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn filters_lists() {
        let p = Tenancy::new(Value::Null).unwrap();
        let mut req = as_user(
            Request::new("GET", "/containers/json", "container.list"),
            "alice",
        );
        let Verdict::Patch(patch) = p.on_request(&req) else {
            panic!()
        };
        let filters = |patch: &Patch| match &patch.query_edits()[0] {
            portcullis_plugin::Edit::Set(pair) => {
                serde_json::from_str::<Value>(&pair.value).unwrap()
            }
            e => panic!("{e:?}"),
        };
        assert_eq!(
            filters(&patch),
            json!({"label": {"io.portcullis.owner=alice": true}})
        );
        req.query = vec![Pair::new(
            "filters",
            r#"{"label":{"x=1":true},"status":{"running":true}}"#,
        )];
        let Verdict::Patch(patch) = p.on_request(&req) else {
            panic!()
        };
        assert_eq!(
            filters(&patch),
            json!({"label": {"x=1": true, "io.portcullis.owner=alice": true}, "status": {"running": true}})
        );
        req.query = vec![Pair::new("filters", r#"{"type":["container"]}"#)];
        let Verdict::Patch(patch) = p.on_request(&req) else {
            panic!()
        };
        assert_eq!(
            filters(&patch),
            json!({"type": ["container"], "label": ["io.portcullis.owner=alice"]})
        );
    }

    #[test]
    fn filters_disk_usage() {
        let p = Tenancy::new(Value::Null).unwrap();
        let req = as_user(
            Request::new("GET", "/system/df", "system.data.usage"),
            "alice",
        );
        let resp = Response {
            status: 200,
            body: Some(json!({"Containers": [{"Id": "a", "Labels": {"io.portcullis.owner": "alice"}}, {"Id": "b", "Labels": {}}], "Volumes": null, "BuildCache": [{"ID": "x"}]}).to_string()),
            ..Response::default()
        };
        let Verdict::Patch(patch) = p.on_response(&req, &resp) else {
            panic!()
        };
        assert_eq!(patch.ops()[0]["value"].as_array().unwrap().len(), 1);
        assert_eq!(patch.ops()[1]["path"], "/BuildCache");
    }

    #[test]
    fn judges_events_by_their_objects_owner() {
        let p = Tenancy::new(json!({"events": "judge"})).unwrap();
        let req = as_user(Request::new("GET", "/events", "system.events"), "alice");
        // No label filter: the events are judged one by one instead.
        assert!(matches!(p.on_request(&req), Verdict::Allow));
        let event = |e: Value| Response {
            status: 200,
            body: Some(e.to_string()),
            ..Response::default()
        };
        let shown =
            |req: &Request, e: Value| matches!(p.on_response(req, &event(e)), Verdict::Allow);
        let container = |owner: &str| {
            json!({"Type": "container", "Action": "start",
            "Actor": {"ID": "abc", "Attributes": {"name": "web", "io.portcullis.owner": owner}}})
        };
        assert!(shown(&req, container("alice")));
        assert!(!shown(&req, container("bob")));
        let volume = json!({"Type": "volume", "Action": "destroy", "Actor": {"ID": "data", "Attributes": {"driver": "local"}}});
        // The gateway did not know the volume: left out.
        assert!(!shown(&req, volume.clone()));
        let with_target = |owner: Option<&str>| {
            let mut r = req.clone();
            r.target = Some(Target {
                kind: "volume".into(),
                id: "data".into(),
                name: Some("data".into()),
                labels: owner
                    .map(|o| vec![Pair::new("io.portcullis.owner", o)])
                    .unwrap_or_default(),
            });
            r
        };
        assert!(shown(&with_target(Some("alice")), volume.clone()));
        assert!(!shown(&with_target(Some("bob")), volume.clone()));
        assert!(!shown(&with_target(None), volume.clone()));
        // A target of another kind never stands for the event's object.
        let mut wrong = with_target(Some("alice"));
        wrong.target.as_mut().unwrap().kind = "network".into();
        assert!(!shown(&wrong, volume));
        // Shared images' events are everyone's; the daemon's are administrators'.
        assert!(shown(
            &req,
            json!({"Type": "image", "Action": "pull", "Actor": {"ID": "busybox"}})
        ));
        assert!(!shown(
            &req,
            json!({"Type": "daemon", "Action": "reload", "Actor": {"ID": "x"}})
        ));
        // Administrators see everything.
        let mut admin = req.clone();
        admin.caller.groups = vec!["docker-admin".into()];
        assert!(shown(&admin, container("bob")));
        // Asked for container events only, the engine filters them by owner itself.
        let mut containers = req.clone();
        containers.query = vec![Pair::new("filters", r#"{"type":{"container":true}}"#)];
        assert!(matches!(p.on_request(&containers), Verdict::Patch(_)));
        containers.query = vec![Pair::new("filters", r#"{"type":["container","volume"]}"#)];
        assert!(matches!(p.on_request(&containers), Verdict::Allow));
        // The default still filters by label in the query.
        let filter = Tenancy::new(Value::Null).unwrap();
        assert!(matches!(filter.on_request(&req), Verdict::Patch(_)));
    }
}
