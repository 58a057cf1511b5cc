//! `tenancy`: owner isolation between the callers of a shared engine.
//!
//! - **Stamp** (request, needs `phase = "mutate"`): creating a container, volume, network,
//!   service (and its tasks' containers), secret or config sets the owner label
//!   (`owner_label`, default `io.portcullis.owner`) to the caller's user name; so does
//!   building an image when images are isolated (`shared_images = false`; with shared images
//!   a build is left as the client sent it, so the label changes no build cache). Updates of
//!   services, secrets and configs keep the existing owner.
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
//! - **Hide** (response, `hide_owner_label`): what a non-administrator reads back (inspect,
//!   lists, `system df`, events) carries no owner label, so clients and tools see their
//!   objects as they would without the gateway (docker-py and compose compare labels).
//!   Administrators see it.
//!
//! - **Image tags** (request, `[image-owner]`): a tag is a name in a repository, and the
//!   gateway records who made each repository (`request.related` `tag` entries carry the
//!   owner from that record, never from an image label, which whoever built the image chose).
//!   Only a repository's owner (or an administrator) points its tags elsewhere (`tag`,
//!   `build -t`, `commit`, `import`, `pull` over them), removes them (`rmi`, by tag or by id)
//!   or pushes them. Repositories that exist without a record (made before the gateway or on
//!   the engine) are shared images: everyone uses them, only administrators change them. A
//!   tag in a new repository is anyone's to create (it becomes theirs), unless
//!   `reserved_repositories` names it or `repository_prefix` (`{user}/`, `{group}/`) puts
//!   callers' repositories under a prefix. `docker load` is judged by the tags inside the
//!   archive (the gateway reads them before the engine does); `docker image prune -a`
//!   (tagged images) is for administrators.
//!
//! Images are shared by default (`shared_images = true`: everyone may run, build from and
//! inspect every image; the tags are owned as above). With `shared_images = false`, image
//! requests are also guarded by the image's owner label and image lists filtered by it.
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
    /// Remove the owner label from what non-administrators read back (needs the read
    /// endpoints among the plugin's response endpoints).
    pub hide_owner_label: bool,
    /// Repositories (exact names, or prefixes ending in `*`) in which only administrators
    /// create tags.
    pub reserved_repositories: Vec<String>,
    /// The prefix a non-administrator's new repositories must have: `{user}/` or `{group}/`
    /// (any of the caller's groups); none: any name.
    pub repository_prefix: Option<String>,
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
            hide_owner_label: true,
            reserved_repositories: Vec::new(),
            repository_prefix: None,
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
        if let Some(p) = &config.repository_prefix {
            if !p.contains("{user}") && !p.contains("{group}") {
                return Err(
                    "tenancy config: repository_prefix must contain {user} or {group}".into(),
                );
            }
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
        if let Some(verdict) = build_cache(req) {
            return verdict;
        }
        if let Some(verdict) = self.check_related(req) {
            return verdict;
        }
        if let Some(verdict) = self.check_tags(req) {
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
        if FILTERED.contains(&req.endpoint.as_str()) && !grpc(req)
            || (!self.config.shared_images
                && matches!(req.endpoint.as_str(), "image.list" | "image.prune"))
        {
            return self.filter_query(req);
        }
        Verdict::Allow
    }

    fn on_response(&self, req: &Request, resp: &Response) -> Verdict {
        if self.is_admin(req) {
            return Verdict::Allow;
        }
        if req.endpoint == "system.events" && self.config.events == Events::Judge {
            return self.judge_event(req, resp);
        }
        if !(200..300).contains(&resp.status) {
            return Verdict::Allow;
        }
        let Some(body) = resp.json_body() else {
            return Verdict::Allow;
        };
        if req.endpoint == "system.data.usage" {
            return allow_or(self.disk_usage(req, body));
        }
        allow_or(self.hide_labels(&body))
    }
}

/// Whether the request is a BuildKit gRPC call (its path is the gRPC method): those take no
/// query to filter by.
fn grpc(req: &Request) -> bool {
    req.path.starts_with("/moby.buildkit.")
}

/// BuildKit's cache is one for the whole engine, every user's build steps in it: listing or
/// pruning it is for administrators (the classic `docker system df` shows non-administrators
/// no build cache either).
fn build_cache(req: &Request) -> Option<Verdict> {
    let what = match req.endpoint.as_str() {
        "build.du" => "list",
        "build.prune" if grpc(req) => "prune",
        _ => return None,
    };
    Some(Verdict::deny(format!(
        "[build-cache] the build cache is shared by every user of the engine (their build steps are in it); only administrators {what} it"
    )))
}

/// The repository of a tag in the engine's short form (`team/app:1` → `team/app`,
/// `app@sha256:...` → `app`, `registry:5000/app` → itself).
fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    match name.rsplit_once(':') {
        // A colon followed by a path is a registry's port, not a tag.
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    }
}

/// Whether an image prune removes tagged images too (`dangling=false`, `docker image prune
/// -a`); dockerd prunes only untagged ones unless told so.
fn prunes_tagged(req: &Request) -> bool {
    let Some(filters) = req
        .query("filters")
        .and_then(|f| serde_json::from_str::<Value>(f).ok())
    else {
        return false;
    };
    let values: Vec<String> = match filters.get("dangling") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    values.iter().any(|v| v != "true" && v != "1")
}

/// `Allow` for a patch that changes nothing, so an unchanged response is handed on as the
/// engine's bytes.
fn allow_or(patch: Patch) -> Verdict {
    if patch.is_empty() {
        Verdict::Allow
    } else {
        Verdict::from(patch)
    }
}

/// Removes `key` from every `Labels` object in `v`, and from an event's `Actor.Attributes`.
fn strip_label(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "Labels" || k == "Actor" {
                    let labels = if k == "Actor" {
                        child.get_mut("Attributes")
                    } else {
                        Some(&mut *child)
                    };
                    if let Some(Value::Object(labels)) = labels {
                        labels.remove(key);
                    }
                }
                strip_label(child, key);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|c| strip_label(c, key)),
        _ => {}
    }
}

/// A patch that turns `before` into `after` by replacing the top-level members (or array
/// items) that differ: a list or inspect document with labels removed here and there.
fn replace_changed(before: &Value, after: &Value) -> Patch {
    let mut patch = Patch::new();
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in a {
                if b.get(k) != Some(v) {
                    patch = patch.replace(json_pointer([k.as_str()]), v.clone());
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
            for (i, (old, new)) in b.iter().zip(a).enumerate() {
                if old != new {
                    patch = patch.replace(format!("/{i}"), new.clone());
                }
            }
        }
        _ if before != after => patch = patch.replace("", after.clone()),
        _ => {}
    }
    patch
}

impl Tenancy {
    /// What a non-administrator reads back without the owner label (`hide_owner_label`).
    fn hide_labels(&self, body: &Value) -> Patch {
        if !self.config.hide_owner_label {
            return Patch::new();
        }
        let mut shown = body.clone();
        strip_label(&mut shown, &self.config.owner_label);
        replace_changed(body, &shown)
    }

    /// `/system/df` shows only the caller's containers and volumes (and images, when they are
    /// isolated); build cache records carry no owner and describe others' builds.
    fn disk_usage(&self, req: &Request, body: Value) -> Patch {
        let user = req.caller.user.as_str();
        let own = |v: &Value| {
            v.pointer(&json_pointer(["Labels", self.config.owner_label.as_str()]))
                .and_then(Value::as_str)
                == Some(user)
        };
        let mut shown = body.clone();
        let mut sections = vec!["Containers", "Volumes"];
        if !self.config.shared_images {
            sections.push("Images");
        }
        for section in sections {
            if let Some(list) = shown.get_mut(section).and_then(Value::as_array_mut) {
                list.retain(own);
            }
        }
        if let Some(cache) = shown.get_mut("BuildCache").filter(|c| c.is_array()) {
            *cache = json!([]);
        }
        if self.config.hide_owner_label {
            strip_label(&mut shown, &self.config.owner_label);
        }
        replace_changed(&body, &shown)
    }

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
                // Images are judged by their tags' owners (`check_tags`), not here.
                if matches!(kind.as_str(), "image" | "tag") {
                    return None;
                }
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
                if !self.isolated(&object.kind)
                    || self.shared_network(object)
                {
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

    /// Image tags: only a repository's owner changes, removes or pushes its tags; a new
    /// repository is the caller's if its name is allowed. Every offending tag is named.
    fn check_tags(&self, req: &Request) -> Option<Verdict> {
        if req.endpoint == "image.prune" && prunes_tagged(req) {
            return Some(Verdict::deny(
                "[image-owner] `docker image prune -a` removes every unused tagged image, other users' and shared ones too; only administrators prune tagged images (`docker image prune` removes the untagged ones)",
            ));
        }
        let user = req.caller.user.as_str();
        let verb = match req.endpoint.as_str() {
            "image.delete" => "remove",
            "image.push" => "push",
            _ => "change",
        };
        let problems: Vec<String> = req
            .related
            .iter()
            .filter(|r| r.kind == "tag")
            .filter_map(|r| {
                let (field, name) = (&r.field, &r.name);
                let repository = repository_of(name);
                let Some(tag) = &r.object else {
                    return self.new_repository_problem(req, repository).map(|why| format!("{field}: {why}"));
                };
                match tag.owner.as_deref() {
                    Some(owner) if owner == user => None,
                    Some(_) => Some(format!(
                        "{field}: tag {name:?} belongs to another user (the repository {repository:?} is theirs); {user} may {verb} only its own tags"
                    )),
                    None if self.config.unowned == Unowned::Allow => None,
                    None => Some(format!(
                        "{field}: tag {name:?} is a shared image (the repository {repository:?} has no owner: it was made before the gateway or on the engine); only administrators {verb} it"
                    )),
                }
            })
            .collect();
        (!problems.is_empty())
            .then(|| Verdict::deny(format!("[image-owner] {}", problems.join("; "))))
    }

    /// Why the caller may not create `repository`, a name nobody has yet.
    fn new_repository_problem(&self, req: &Request, repository: &str) -> Option<String> {
        let reserved =
            self.config
                .reserved_repositories
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => repository.starts_with(prefix),
                    None => p == repository,
                });
        if reserved {
            return Some(format!(
                "the repository {repository:?} is reserved for administrators"
            ));
        }
        let template = self.config.repository_prefix.as_deref()?;
        let prefixes = req.caller.fill(template);
        if prefixes.iter().any(|p| repository.starts_with(p.as_str())) {
            return None;
        }
        let allowed = if prefixes.is_empty() {
            "the caller has no group to name them after".to_owned()
        } else {
            format!("allowed: {}", prefixes.join(", "))
        };
        Some(format!(
            "new repositories of {} must be under its own prefix ({allowed}); {repository:?} is not",
            req.caller.user
        ))
    }

    /// The owner label patch for create (and spec update) requests.
    fn stamp(&self, req: &Request) -> Option<Verdict> {
        let key = self.config.owner_label.as_str();
        let endpoint = req.endpoint.as_str();
        if endpoint == "build.solve" {
            if self.config.shared_images {
                return None;
            }
            let path = json_pointer(["FrontendAttrs".to_owned(), format!("label:{key}")]);
            return Some(Verdict::from(
                Patch::new().add(path, Value::String(req.caller.user.clone())),
            ));
        }
        if endpoint == "image.build" {
            if self.config.shared_images {
                return None;
            }
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
        let show = || allow_or(self.hide_labels(&event));
        if kind == "image" && self.config.shared_images {
            return show();
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
            Some(owner) if owner == req.caller.user => show(),
            Some(_) => hide("another user's object"),
            None if self.config.unowned != Unowned::Deny => show(),
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
            ..Target::default()
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
        assert_eq!(
            p.on_request(&req),
            Verdict::from(Patch::new().add("/Labels", json!({"io.portcullis.owner": "alice"})))
        );
        let req = as_user(
            Request::new("POST", "/services/create", "service.create").with_json_body(
                &json!({"Labels": {"a": "b"}, "TaskTemplate": {"ContainerSpec": {"Image": "x"}}}),
            ),
            "alice",
        );
        assert_eq!(
            p.on_request(&req),
            Verdict::from(
                Patch::new()
                    .add("/Labels/io.portcullis.owner", json!("alice"))
                    .add(
                        "/TaskTemplate/ContainerSpec/Labels",
                        json!({"io.portcullis.owner": "alice"})
                    )
            )
        );
        let req = as_user(
            Request::new("POST", "/volumes/create", "volume.create"),
            "alice",
        );
        let no_object = Verdict::deny_with(
            400,
            "[owner] volume.create needs a JSON object body to record the owner",
        );
        assert_eq!(p.on_request(&req), no_object);
        // A derived view would read an array positionally; the owner needs an object.
        let req = as_user(
            Request::new("POST", "/volumes/create", "volume.create")
                .with_json_body(&json!([{"a": "b"}])),
            "alice",
        );
        assert_eq!(p.on_request(&req), no_object);
    }

    #[test]
    fn guards_by_owner() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let mut req = Request::new("POST", "/containers/web/stop", "container.stop");
        req.target = Some(container(Some("bob")));
        assert_eq!(
            p.on_request(&as_user(req.clone(), "alice")),
            Verdict::deny(
                r#"[owner] container "web" belongs to another user; alice may act only on its own containers"#
            )
        );
        assert_eq!(p.on_request(&as_user(req.clone(), "bob")), Verdict::Allow);
        assert_eq!(p.on_request(&as_user(req.clone(), "root")), Verdict::Allow);
        req.target = Some(container(None));
        assert_eq!(
            p.on_request(&as_user(req.clone(), "bob")),
            Verdict::deny(
                r#"[owner] container "web" has no owner label (io.portcullis.owner); only administrators may act on it"#
            )
        );
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
                ..Target::default()
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
        let stamped = |user: &str| {
            Verdict::from(Patch::new().add("/Labels", json!({"io.portcullis.owner": user})))
        };
        assert_eq!(p.on_request(&as_user(own, "alice")), stamped("alice"));

        let theirs = create(vec![
            reference("HostConfig.Binds[0]", "volume", "data", Some(Some("bob"))),
            reference("HostConfig.VolumesFrom[0]", "container", "web", Some(None)),
            reference("HostConfig.Mounts[0].Source", "volume", "new", None),
        ]);
        assert_eq!(
            p.on_request(&as_user(theirs.clone(), "alice")),
            Verdict::deny(concat!(
                r#"[owner] alice may use only its own objects: "#,
                r#"HostConfig.Binds[0]: volume "data" belongs to another user; "#,
                r#"HostConfig.VolumesFrom[0]: container "web" has no owner label (io.portcullis.owner); only administrators may use it; "#,
                r#"HostConfig.Mounts[0].Source: no volume "new" exists (the engine would create it without an owner; create it first: docker volume create new)"#
            ))
        );
        // Administrators use anything.
        assert_eq!(p.on_request(&as_user(theirs, "root")), stamped("root"));

        let lenient = Tenancy::new(json!({"implicit_volumes": true})).unwrap();
        let missing = create(vec![reference(
            "HostConfig.Binds[0]",
            "volume",
            "new",
            None,
        )]);
        assert_eq!(
            lenient.on_request(&as_user(missing, "alice")),
            stamped("alice")
        );
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
            ..Target::default()
        });
        req.related = vec![reference(
            "Container",
            "container",
            "web",
            Some(Some("alice")),
        )];
        assert_eq!(p.on_request(&as_user(req.clone(), "alice")), Verdict::Allow);
        assert_eq!(
            p.on_request(&as_user(req, "bob")),
            Verdict::deny(
                r#"[owner] bob may use only its own objects: Container: container "web" belongs to another user"#
            )
        );
    }

    #[test]
    fn filters_lists() {
        let p = Tenancy::new(Value::Null).unwrap();
        let mut req = as_user(
            Request::new("GET", "/containers/json", "container.list"),
            "alice",
        );
        assert_eq!(
            p.on_request(&req),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=alice": true}})
            )
        );
        req.query = vec![Pair::new(
            "filters",
            r#"{"label":{"x=1":true},"status":{"running":true}}"#,
        )];
        assert_eq!(
            p.on_request(&req),
            patch_query(
                "filters",
                json!({"label": {"x=1": true, "io.portcullis.owner=alice": true}, "status": {"running": true}})
            )
        );
        req.query = vec![Pair::new("filters", r#"{"type":["container"]}"#)];
        assert_eq!(
            p.on_request(&req),
            patch_query(
                "filters",
                json!({"type": ["container"], "label": ["io.portcullis.owner=alice"]})
            )
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
        // No build cache; alice's container only, and without the owner label.
        assert_eq!(
            p.on_response(&req, &resp),
            Verdict::from(
                Patch::new()
                    .replace("/BuildCache", json!([]))
                    .replace("/Containers", json!([{"Id": "a", "Labels": {}}]))
            )
        );
    }

    #[test]
    fn hides_the_owner_label_from_what_callers_read() {
        let p = Tenancy::new(Value::Null).unwrap();
        let read = |endpoint: &str, body: Value, user: &str| {
            let mut req = as_user(Request::new("GET", "/x", endpoint), user);
            if user == "root" {
                req.caller.groups = vec!["docker-admin".into()];
            }
            let resp = Response {
                status: 200,
                body: Some(body.to_string()),
                ..Response::default()
            };
            let mut shown = body;
            if let Verdict::Patch(patch) = p.on_response(&req, &resp) {
                let ops: Vec<Value> = patch.ops().to_vec();
                let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
                json_patch::patch(&mut shown, &patch).unwrap();
            }
            shown
        };
        let owner = json!({"io.portcullis.owner": "alice", "app": "web"});
        let inspect = json!({"Id": "c1", "Config": {"Labels": owner, "Image": "x"}});
        assert_eq!(
            read("container.inspect", inspect.clone(), "alice"),
            json!({"Id": "c1", "Config": {"Labels": {"app": "web"}, "Image": "x"}})
        );
        // Administrators see the owner.
        assert_eq!(
            read("container.inspect", inspect, "root")["Config"]["Labels"],
            owner
        );
        let list = json!([{"Id": "a", "Labels": owner}, {"Id": "b", "Labels": null}]);
        assert_eq!(
            read("container.list", list, "alice"),
            json!([{"Id": "a", "Labels": {"app": "web"}}, {"Id": "b", "Labels": null}])
        );
        let service = json!([{"ID": "s", "Spec": {"Labels": owner,
            "TaskTemplate": {"ContainerSpec": {"Labels": {"io.portcullis.owner": "alice"}}}}}]);
        assert_eq!(
            read("service.list", service, "alice"),
            json!([{"ID": "s", "Spec": {"Labels": {"app": "web"},
                "TaskTemplate": {"ContainerSpec": {"Labels": {}}}}}])
        );
        let volumes = json!({"Volumes": [{"Name": "v", "Labels": owner}], "Warnings": null});
        assert_eq!(
            read("volume.list", volumes, "alice"),
            json!({"Volumes": [{"Name": "v", "Labels": {"app": "web"}}], "Warnings": null})
        );
        // A body without the label is handed on untouched.
        let mut req = as_user(Request::new("GET", "/x", "network.inspect"), "alice");
        req.caller.groups = vec![];
        let resp = Response {
            status: 200,
            body: Some(json!({"Name": "n", "Labels": {"a": "b"}}).to_string()),
            ..Response::default()
        };
        assert_eq!(p.on_response(&req, &resp), Verdict::Allow);
        // Off by configuration.
        let shown = Tenancy::new(json!({"hide_owner_label": false})).unwrap();
        let resp = Response {
            status: 200,
            body: Some(json!({"Labels": owner}).to_string()),
            ..Response::default()
        };
        assert_eq!(shown.on_response(&req, &resp), Verdict::Allow);
        // An event shown to its owner loses the label too.
        let events = Tenancy::new(json!({"events": "judge"})).unwrap();
        let req = as_user(Request::new("GET", "/events", "system.events"), "alice");
        let resp = Response {
            status: 200,
            body: Some(json!({"Type": "container", "Actor": {"ID": "c", "Attributes": {"io.portcullis.owner": "alice", "name": "web"}}}).to_string()),
            ..Response::default()
        };
        assert_eq!(
            events.on_response(&req, &resp),
            Verdict::from(
                Patch::new().replace("/Actor", json!({"ID": "c", "Attributes": {"name": "web"}}))
            )
        );
    }

    fn tag(field: &str, name: &str, object: Option<Option<&str>>) -> Reference {
        Reference {
            field: field.into(),
            kind: "tag".into(),
            name: name.into(),
            object: object.map(|owner| Target {
                kind: "tag".into(),
                id: "sha256:1".into(),
                name: Some(name.into()),
                owner: owner.map(str::to_owned),
                ..Target::default()
            }),
        }
    }

    #[test]
    fn tags_are_changed_removed_and_pushed_by_their_owners_only() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let request = |endpoint: &str, related: Vec<Reference>, user: &str| {
            let mut req = as_user(Request::new("POST", "/x", endpoint), user);
            req.related = related;
            req
        };
        let alices = || vec![tag("repo", "alice-app:latest", Some(Some("alice")))];
        assert_eq!(
            p.on_request(&request("image.tag", alices(), "alice")),
            Verdict::Allow
        );
        for (endpoint, verb) in [
            ("image.tag", "change"),
            ("image.delete", "remove"),
            ("image.push", "push"),
        ] {
            assert_eq!(
                p.on_request(&request(endpoint, alices(), "bob")),
                Verdict::deny(format!(
                    r#"[image-owner] repo: tag "alice-app:latest" belongs to another user (the repository "alice-app" is theirs); bob may {verb} only its own tags"#
                ))
            );
        }
        assert_eq!(
            p.on_request(&request("image.delete", alices(), "root")),
            Verdict::Allow
        );
        // A shared image: used by all, changed by administrators.
        let shared = || vec![tag("t[0]", "portcullis/busybox:latest", Some(None))];
        assert_eq!(
            p.on_request(&request("image.build", shared(), "alice")),
            Verdict::deny(
                r#"[image-owner] t[0]: tag "portcullis/busybox:latest" is a shared image (the repository "portcullis/busybox" has no owner: it was made before the gateway or on the engine); only administrators change it"#
            )
        );
        assert_eq!(
            p.on_request(&request("image.build", shared(), "root")),
            Verdict::Allow
        );
        // A new name is anyone's; every offending tag is named at once.
        let new = || vec![tag("t[0]", "fresh:1", None)];
        assert_eq!(
            p.on_request(&request("image.build", new(), "bob")),
            Verdict::Allow
        );
        let mixed = vec![
            tag("RepoTags[0]", "bob-app:1", Some(Some("bob"))),
            tag("RepoTags[1]", "alice-app:1", Some(Some("alice"))),
            tag("RepoDigests[0]", "base@sha256:ab", Some(None)),
        ];
        assert_eq!(
            p.on_request(&request("image.delete", mixed, "bob")),
            Verdict::deny(concat!(
                r#"[image-owner] RepoTags[1]: tag "alice-app:1" belongs to another user (the repository "alice-app" is theirs); bob may remove only its own tags; "#,
                r#"RepoDigests[0]: tag "base@sha256:ab" is a shared image (the repository "base" has no owner: it was made before the gateway or on the engine); only administrators remove it"#
            ))
        );
        assert_eq!(
            repository_of("registry:5000/team/app:1"),
            "registry:5000/team/app"
        );
        assert_eq!(repository_of("registry:5000/app"), "registry:5000/app");
        assert_eq!(repository_of("app@sha256:ab"), "app");

        // Reserved repositories and per-user prefixes bind new names only.
        let strict = Tenancy::new(json!({"reserved_repositories": ["portcullis/*", "base"],
                                         "repository_prefix": "{user}/"}))
        .unwrap();
        let judge = |name: &str, object| {
            strict.on_request(&request(
                "image.tag",
                vec![tag("repo", name, object)],
                "bob",
            ))
        };
        assert_eq!(judge("bob/app:1", None), Verdict::Allow);
        assert_eq!(
            judge("app:1", None),
            Verdict::deny(
                r#"[image-owner] repo: new repositories of bob must be under its own prefix (allowed: bob/); "app" is not"#
            )
        );
        assert_eq!(
            judge("portcullis/tools:1", None),
            Verdict::deny(
                r#"[image-owner] repo: the repository "portcullis/tools" is reserved for administrators"#
            )
        );
        assert_eq!(
            judge("base:1", None),
            Verdict::deny(
                r#"[image-owner] repo: the repository "base" is reserved for administrators"#
            )
        );
        // An existing repository of the caller's is its own, whatever its name.
        assert_eq!(judge("app:2", Some(Some("bob"))), Verdict::Allow);
    }

    #[test]
    fn tagged_prunes_are_for_administrators_and_loads_judged_by_their_tags() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let prune = |filters: Option<&str>, user: &str| {
            let mut req = as_user(Request::new("POST", "/images/prune", "image.prune"), user);
            if let Some(f) = filters {
                req.query = vec![Pair::new("filters", f)];
            }
            p.on_request(&req)
        };
        assert_eq!(prune(None, "bob"), Verdict::Allow);
        assert_eq!(
            prune(Some(r#"{"dangling":{"true":true}}"#), "bob"),
            Verdict::Allow
        );
        let tagged = Verdict::deny(
            "[image-owner] `docker image prune -a` removes every unused tagged image, other users' and shared ones too; only administrators prune tagged images (`docker image prune` removes the untagged ones)",
        );
        assert_eq!(prune(Some(r#"{"dangling":{"false":true}}"#), "bob"), tagged);
        assert_eq!(prune(Some(r#"{"dangling":["0"]}"#), "bob"), tagged);
        assert_eq!(
            prune(Some(r#"{"dangling":{"false":true}}"#), "root"),
            Verdict::Allow
        );
        // A load is judged by the tags its archive names.
        let mut load = as_user(Request::new("POST", "/images/load", "image.load"), "bob");
        load.related = vec![tag(
            "manifest.json[0].RepoTags[0]",
            "alice-app:1",
            Some(Some("alice")),
        )];
        assert_eq!(
            p.on_request(&load),
            Verdict::deny(
                r#"[image-owner] manifest.json[0].RepoTags[0]: tag "alice-app:1" belongs to another user (the repository "alice-app" is theirs); bob may change only its own tags"#
            )
        );
        load.related = vec![tag("manifest.json[0].RepoTags[0]", "bob-app:1", None)];
        assert_eq!(p.on_request(&load), Verdict::Allow);
    }

    #[test]
    fn builds_are_stamped_only_when_images_are_isolated() {
        let build = as_user(Request::new("POST", "/build", "image.build"), "alice");
        let shared = Tenancy::new(Value::Null).unwrap();
        assert_eq!(shared.on_request(&build), Verdict::Allow);
        let isolated = Tenancy::new(json!({"shared_images": false})).unwrap();
        assert_eq!(
            isolated.on_request(&build),
            patch_query("labels", json!({"io.portcullis.owner": "alice"}))
        );
    }

    #[test]
    fn judges_events_by_their_objects_owner() {
        let p = Tenancy::new(json!({"events": "judge"})).unwrap();
        let req = as_user(Request::new("GET", "/events", "system.events"), "alice");
        // No label filter: the events are judged one by one instead.
        assert_eq!(p.on_request(&req), Verdict::Allow);
        let event = |e: Value| Response {
            status: 200,
            body: Some(e.to_string()),
            ..Response::default()
        };
        // Shown as it is, or without the owner label; a denial leaves the event out.
        let judged = |req: &Request, e: Value| p.on_response(req, &event(e));
        let left_out = |why: &str| Verdict::deny(format!("[owner] event left out: {why}"));
        let container = |owner: &str| {
            json!({"Type": "container", "Action": "start",
            "Actor": {"ID": "abc", "Attributes": {"name": "web", "io.portcullis.owner": owner}}})
        };
        assert_eq!(
            judged(&req, container("alice")),
            Verdict::from(Patch::new().replace(
                "/Actor",
                json!({"ID": "abc", "Attributes": {"name": "web"}})
            ))
        );
        assert_eq!(
            judged(&req, container("bob")),
            left_out("another user's object")
        );
        let volume = json!({"Type": "volume", "Action": "destroy", "Actor": {"ID": "data", "Attributes": {"driver": "local"}}});
        // The gateway did not know the volume: left out.
        assert_eq!(
            judged(&req, volume.clone()),
            left_out("the gateway does not know its object")
        );
        let with_target = |owner: Option<&str>| {
            let mut r = req.clone();
            r.target = Some(Target {
                kind: "volume".into(),
                id: "data".into(),
                name: Some("data".into()),
                labels: owner
                    .map(|o| vec![Pair::new("io.portcullis.owner", o)])
                    .unwrap_or_default(),
                ..Target::default()
            });
            r
        };
        assert_eq!(
            judged(&with_target(Some("alice")), volume.clone()),
            Verdict::Allow
        );
        assert_eq!(
            judged(&with_target(Some("bob")), volume.clone()),
            left_out("another user's object")
        );
        assert_eq!(
            judged(&with_target(None), volume.clone()),
            left_out("an object without owner")
        );
        // A target of another kind never stands for the event's object.
        let mut wrong = with_target(Some("alice"));
        wrong.target.as_mut().unwrap().kind = "network".into();
        assert_eq!(
            judged(&wrong, volume),
            left_out("the gateway does not know its object")
        );
        // Shared images' events are everyone's; the daemon's are administrators'.
        assert_eq!(
            judged(
                &req,
                json!({"Type": "image", "Action": "pull", "Actor": {"ID": "busybox"}})
            ),
            Verdict::Allow
        );
        assert_eq!(
            judged(
                &req,
                json!({"Type": "daemon", "Action": "reload", "Actor": {"ID": "x"}})
            ),
            left_out("not an object callers own")
        );
        // Administrators see everything.
        let mut admin = req.clone();
        admin.caller.groups = vec!["docker-admin".into()];
        assert_eq!(judged(&admin, container("bob")), Verdict::Allow);
        // Asked for container events only, the engine filters them by owner itself.
        let mut containers = req.clone();
        containers.query = vec![Pair::new("filters", r#"{"type":{"container":true}}"#)];
        assert_eq!(
            p.on_request(&containers),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=alice": true}, "type": {"container": true}})
            )
        );
        containers.query = vec![Pair::new("filters", r#"{"type":["container","volume"]}"#)];
        assert_eq!(p.on_request(&containers), Verdict::Allow);
        // The default still filters by label in the query.
        let filter = Tenancy::new(Value::Null).unwrap();
        assert_eq!(
            filter.on_request(&req),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=alice": true}})
            )
        );
    }

    #[test]
    fn buildkit_cache_and_stamps() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let du = Request::new("POST", "/moby.buildkit.v1.Control/DiskUsage", "build.du");
        assert_eq!(
            p.on_request(&as_user(du.clone(), "alice")),
            Verdict::deny("[build-cache] the build cache is shared by every user of the engine (their build steps are in it); only administrators list it")
        );
        assert_eq!(p.on_request(&as_user(du, "root")), Verdict::Allow);
        let prune = Request::new("POST", "/moby.buildkit.v1.Control/Prune", "build.prune");
        assert_eq!(
            p.on_request(&as_user(prune, "alice")),
            Verdict::deny("[build-cache] the build cache is shared by every user of the engine (their build steps are in it); only administrators prune it")
        );
        // The classic prune is filtered as before, not refused here.
        let classic = Request::new("POST", "/build/prune", "build.prune");
        assert_eq!(
            p.on_request(&as_user(classic, "alice")),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=alice": true}})
            )
        );
        // Isolated images: the build's image is stamped with its builder.
        let isolated = Tenancy::new(json!({"shared_images": false})).unwrap();
        let solve = Request::new("POST", "/moby.buildkit.v1.Control/Solve", "build.solve")
            .with_json_body(&json!({"FrontendAttrs": {}}));
        assert_eq!(
            isolated.on_request(&as_user(solve, "alice")),
            Verdict::from(
                Patch::new().add("/FrontendAttrs/label:io.portcullis.owner", json!("alice"))
            )
        );
    }

    fn deny(message: &str) -> Verdict {
        Verdict::deny(message)
    }

    fn patch_query(name: &str, value: Value) -> Verdict {
        let value = match value {
            Value::String(s) => s,
            v => v.to_string(),
        };
        Verdict::from(Patch::new().set_query(name, value))
    }

    fn on(kind: &str, name: Option<&str>, owner: Option<&str>) -> Target {
        Target {
            kind: kind.into(),
            id: format!("{kind}-id"),
            name: name.map(str::to_owned),
            labels: owner
                .map(|o| vec![Pair::new("io.portcullis.owner", o)])
                .unwrap_or_default(),
            ..Target::default()
        }
    }

    fn acting(method: &str, endpoint: &str, target: Target, user: &str) -> Request {
        let mut req = as_user(Request::new(method, "/x", endpoint), user);
        req.target = Some(target);
        req
    }

    /// `[owner]` on the object acted on: every isolated kind, the owner and the closest
    /// others (another user, no owner label).
    #[test]
    fn guard_rule_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        for kind in [
            "container",
            "volume",
            "network",
            "service",
            "secret",
            "config",
            "task",
        ] {
            let req = |owner| acting("POST", "x.update", on(kind, Some("it"), owner), "alice");
            assert_eq!(p.on_request(&req(Some("alice"))), Verdict::Allow, "{kind}");
            assert_eq!(
                p.on_request(&req(Some("bob"))),
                deny(&format!(
                    "[owner] {kind} \"it\" belongs to another user; alice may act only on its own {kind}s"
                )),
                "{kind}"
            );
            assert_eq!(
                p.on_request(&req(None)),
                deny(&format!(
                    "[owner] {kind} \"it\" has no owner label (io.portcullis.owner); only administrators may act on it"
                )),
                "{kind}"
            );
        }
        // Without a name, the id names it.
        assert_eq!(
            p.on_request(&acting("POST", "container.kill", on("container", None, Some("bob")), "alice")),
            deny("[owner] container \"container-id\" belongs to another user; alice may act only on its own containers")
        );
        // Shared images and kinds nobody owns are not guarded; isolated images are.
        for kind in ["image", "node", "plugin"] {
            let req = acting(
                "DELETE",
                "x.delete",
                on(kind, Some("it"), Some("bob")),
                "alice",
            );
            assert_eq!(p.on_request(&req), Verdict::Allow, "{kind}");
        }
        let isolated = Tenancy::new(json!({"shared_images": false})).unwrap();
        assert_eq!(
            isolated.on_request(&acting("GET", "image.inspect", on("image", Some("app"), Some("bob")), "alice")),
            deny("[owner] image \"app\" belongs to another user; alice may act only on its own images")
        );
        // The predefined networks are everyone's; a container named like one is not.
        assert_eq!(
            p.on_request(&acting(
                "POST",
                "network.connect",
                on("network", Some("host"), None),
                "alice"
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&acting("POST", "container.kill", on("container", Some("bridge"), None), "alice")),
            deny("[owner] container \"bridge\" has no owner label (io.portcullis.owner); only administrators may act on it")
        );
        assert_eq!(
            p.on_request(&acting("POST", "network.connect", on("network", None, None), "alice")),
            deny("[owner] network \"network-id\" has no owner label (io.portcullis.owner); only administrators may act on it")
        );
        // Another owner label key.
        let custom = Tenancy::new(json!({"owner_label": "com.acme.owner"})).unwrap();
        assert_eq!(
            custom.on_request(&acting("POST", "container.kill", on("container", Some("web"), Some("alice")), "alice")),
            deny("[owner] container \"web\" has no owner label (com.acme.owner); only administrators may act on it")
        );
    }

    #[test]
    fn unowned_objects_as_configured() {
        let unowned = on("volume", Some("old"), None);
        let denied = deny("[owner] volume \"old\" has no owner label (io.portcullis.owner); only administrators may act on it");
        let read = Tenancy::new(json!({"unowned": "read"})).unwrap();
        assert_eq!(
            read.on_request(&acting("GET", "volume.inspect", unowned.clone(), "alice")),
            Verdict::Allow
        );
        assert_eq!(
            read.on_request(&acting("HEAD", "volume.inspect", unowned.clone(), "alice")),
            Verdict::Allow
        );
        assert_eq!(
            read.on_request(&acting("DELETE", "volume.delete", unowned.clone(), "alice")),
            denied
        );
        let deny_all = Tenancy::new(json!({"unowned": "deny"})).unwrap();
        assert_eq!(
            deny_all.on_request(&acting("GET", "volume.inspect", unowned.clone(), "alice")),
            denied
        );
        let allow = Tenancy::new(json!({"unowned": "allow"})).unwrap();
        assert_eq!(
            allow.on_request(&acting("DELETE", "volume.delete", unowned, "alice")),
            Verdict::Allow
        );
        // Another user's object stays theirs whatever `unowned` says.
        assert_eq!(
            allow.on_request(&acting("DELETE", "volume.delete", on("volume", Some("v"), Some("bob")), "alice")),
            deny("[owner] volume \"v\" belongs to another user; alice may act only on its own volumes")
        );
    }

    #[test]
    fn administrators_by_group_or_name() {
        let p = Tenancy::new(json!({"admin_users": ["root"], "admin_group": "ops"})).unwrap();
        let theirs = |user: &str, groups: &[&str]| {
            let mut req = acting(
                "POST",
                "container.kill",
                on("container", Some("web"), Some("bob")),
                user,
            );
            req.caller.groups = groups.iter().map(|g| g.to_string()).collect();
            p.on_request(&req)
        };
        assert_eq!(theirs("root", &[]), Verdict::Allow);
        assert_eq!(theirs("alice", &["dev", "ops"]), Verdict::Allow);
        let refused = deny("[owner] container \"web\" belongs to another user; alice may act only on its own containers");
        assert_eq!(theirs("alice", &["docker-admin"]), refused);
        // An empty group has no members.
        let nobody = Tenancy::new(json!({"admin_group": ""})).unwrap();
        let mut req = acting(
            "POST",
            "container.kill",
            on("container", Some("web"), Some("bob")),
            "alice",
        );
        req.caller.groups = vec!["".into()];
        assert_eq!(nobody.on_request(&req), refused);
        // Administrators read owner labels back.
        let resp = Response {
            status: 200,
            body: Some(json!({"Labels": {"io.portcullis.owner": "bob"}}).to_string()),
            ..Response::default()
        };
        let mut admin = as_user(Request::new("GET", "/x", "volume.inspect"), "root");
        assert_eq!(p.on_response(&admin, &resp), Verdict::Allow);
        admin.caller.user = "alice".into();
        assert_eq!(
            p.on_response(&admin, &resp),
            Verdict::from(Patch::new().replace("/Labels", json!({})))
        );
    }

    #[test]
    fn build_cache_rule() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        let grpc = |method: &str, endpoint: &str, user: &str| {
            p.on_request(&as_user(
                Request::new(
                    "POST",
                    &format!("/moby.buildkit.v1.Control/{method}"),
                    endpoint,
                ),
                user,
            ))
        };
        assert_eq!(
            grpc("DiskUsage", "build.du", "alice"),
            deny("[build-cache] the build cache is shared by every user of the engine (their build steps are in it); only administrators list it")
        );
        assert_eq!(
            grpc("Prune", "build.prune", "alice"),
            deny("[build-cache] the build cache is shared by every user of the engine (their build steps are in it); only administrators prune it")
        );
        assert_eq!(grpc("Prune", "build.prune", "root"), Verdict::Allow);
        assert_eq!(grpc("Status", "build.status", "alice"), Verdict::Allow);
        // The classic prune is filtered by owner instead.
        let classic = as_user(Request::new("POST", "/build/prune", "build.prune"), "alice");
        assert_eq!(
            p.on_request(&classic),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=alice": true}})
            )
        );
    }

    #[test]
    fn related_objects_rule_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        let create = |related: Vec<Reference>| {
            let mut req = as_user(
                Request::new("POST", "/containers/create", "container.create")
                    .with_json_body(&json!({"Labels": {}})),
                "alice",
            );
            req.related = related;
            req
        };
        let stamped =
            Verdict::from(Patch::new().add("/Labels/io.portcullis.owner", json!("alice")));
        assert_eq!(
            p.on_request(&create(vec![
                reference("HostConfig.Binds[0]", "volume", "data", Some(Some("bob"))),
                reference("HostConfig.VolumesFrom[0]", "container", "web", Some(None)),
                reference("HostConfig.Mounts[0].Source", "volume", "new", None),
                reference("NetworkMode", "network", "gone", None),
            ])),
            deny(
                r#"[owner] alice may use only its own objects: HostConfig.Binds[0]: volume "data" belongs to another user; HostConfig.VolumesFrom[0]: container "web" has no owner label (io.portcullis.owner); only administrators may use it; HostConfig.Mounts[0].Source: no volume "new" exists (the engine would create it without an owner; create it first: docker volume create new); NetworkMode: no network "gone" exists"#
            )
        );
        // The closest that pass: the caller's own, the shared networks, images and tags
        // (judged by their tags' owners), kinds nobody owns.
        assert_eq!(
            p.on_request(&create(vec![
                reference("HostConfig.Binds[0]", "volume", "data", Some(Some("alice"))),
                reference("NetworkMode", "network", "host", Some(None)),
                reference("Image", "image", "app", Some(Some("bob"))),
                reference("Image", "image", "gone", None),
                reference("t[0]", "tag", "app:1", None),
                reference("x", "plugin", "p", Some(Some("bob"))),
            ])),
            stamped
        );
        // Unowned objects: only `unowned = "allow"` lets them be used.
        let unowned = || {
            create(vec![reference(
                "HostConfig.Binds[0]",
                "volume",
                "old",
                Some(None),
            )])
        };
        assert_eq!(
            Tenancy::new(json!({"unowned": "read"}))
                .unwrap()
                .on_request(&unowned()),
            deny(
                r#"[owner] alice may use only its own objects: HostConfig.Binds[0]: volume "old" has no owner label (io.portcullis.owner); only administrators may use it"#
            )
        );
        assert_eq!(
            Tenancy::new(json!({"unowned": "allow"}))
                .unwrap()
                .on_request(&unowned()),
            stamped
        );
        // `implicit_volumes` lets a missing volume be made, not a missing network.
        let implicit = Tenancy::new(json!({"implicit_volumes": true})).unwrap();
        assert_eq!(
            implicit.on_request(&create(vec![
                reference("HostConfig.Binds[0]", "volume", "new", None),
                reference("NetworkMode", "network", "gone", None),
            ])),
            deny(
                r#"[owner] alice may use only its own objects: NetworkMode: no network "gone" exists"#
            )
        );
    }

    #[test]
    fn tag_rule_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        let judge = |endpoint: &str, related: Vec<Reference>| {
            let mut req = as_user(Request::new("POST", "/x", endpoint), "bob");
            req.related = related;
            p.on_request(&req)
        };
        for (endpoint, verb) in [
            ("image.delete", "remove"),
            ("image.push", "push"),
            ("image.tag", "change"),
            ("image.load", "change"),
        ] {
            assert_eq!(
                judge(
                    endpoint,
                    vec![
                        tag("RepoTags[0]", "bob-app:1", Some(Some("bob"))),
                        tag("RepoTags[1]", "team/app:1", Some(Some("alice"))),
                        tag("RepoDigests[0]", "base@sha256:ab", Some(None)),
                        reference("Image", "image", "x", Some(Some("alice"))),
                    ]
                ),
                deny(&format!(
                    r#"[image-owner] RepoTags[1]: tag "team/app:1" belongs to another user (the repository "team/app" is theirs); bob may {verb} only its own tags; RepoDigests[0]: tag "base@sha256:ab" is a shared image (the repository "base" has no owner: it was made before the gateway or on the engine); only administrators {verb} it"#
                )),
                "{endpoint}"
            );
        }
        // `unowned = "allow"` makes shared images anyone's to change.
        let open = Tenancy::new(json!({"unowned": "allow"})).unwrap();
        let mut req = as_user(Request::new("POST", "/x", "image.tag"), "bob");
        req.related = vec![tag("repo", "base:1", Some(None))];
        assert_eq!(open.on_request(&req), Verdict::Allow);
        // Repositories: the engine's short form.
        for (name, repository) in [
            ("app", "app"),
            ("app:1", "app"),
            ("team/app:1", "team/app"),
            ("registry:5000/app", "registry:5000/app"),
            ("registry:5000/app:1", "registry:5000/app"),
            ("app@sha256:ab", "app"),
            ("app:1@sha256:ab", "app"),
        ] {
            assert_eq!(repository_of(name), repository, "{name}");
        }
    }

    #[test]
    fn new_repositories_rule() {
        let p = Tenancy::new(json!({"reserved_repositories": ["library/*", "base"],
                                    "repository_prefix": "{group}/"}))
        .unwrap();
        let judge = |name: &str, groups: &[&str]| {
            let mut req = as_user(Request::new("POST", "/x", "image.tag"), "bob");
            req.caller.groups = groups.iter().map(|g| g.to_string()).collect();
            req.related = vec![tag("repo", name, None)];
            p.on_request(&req)
        };
        assert_eq!(judge("ops/app:1", &["dev", "ops"]), Verdict::Allow);
        assert_eq!(
            judge("qa/app:1", &["dev", "ops"]),
            deny(
                r#"[image-owner] repo: new repositories of bob must be under its own prefix (allowed: dev/, ops/); "qa/app" is not"#
            )
        );
        assert_eq!(
            judge("ops/app:1", &[]),
            deny(
                r#"[image-owner] repo: new repositories of bob must be under its own prefix (the caller has no group to name them after); "ops/app" is not"#
            )
        );
        for name in ["library/x:1", "base:1"] {
            assert_eq!(
                judge(name, &["library"]),
                deny(&format!(
                    r#"[image-owner] repo: the repository "{}" is reserved for administrators"#,
                    repository_of(name)
                )),
                "{name}"
            );
        }
        // Exact names are exact.
        let base = Tenancy::new(json!({"reserved_repositories": ["base"]})).unwrap();
        let mut req = as_user(Request::new("POST", "/x", "image.tag"), "bob");
        req.related = vec![tag("repo", "baseline:1", None)];
        assert_eq!(base.on_request(&req), Verdict::Allow);
    }

    #[test]
    fn tagged_prunes_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        let prune = |filters: &str| {
            let mut req = as_user(Request::new("POST", "/images/prune", "image.prune"), "bob");
            req.query = vec![Pair::new("filters", filters)];
            p.on_request(&req)
        };
        let refused = deny("[image-owner] `docker image prune -a` removes every unused tagged image, other users' and shared ones too; only administrators prune tagged images (`docker image prune` removes the untagged ones)");
        for tagged in [
            r#"{"dangling":{"false":true}}"#,
            r#"{"dangling":["true","0"]}"#,
            r#"{"dangling":["false"]}"#,
        ] {
            assert_eq!(prune(tagged), refused, "{tagged}");
        }
        for untagged in [
            r#"{"dangling":{"true":true}}"#,
            r#"{"dangling":["1"]}"#,
            r#"{"dangling":"false"}"#,
            r#"{"until":["24h"]}"#,
            "{",
        ] {
            assert_eq!(prune(untagged), Verdict::Allow, "{untagged}");
        }
        // With isolated images a prune is filtered by owner, after the tagged check.
        let isolated = Tenancy::new(json!({"shared_images": false})).unwrap();
        let mut req = as_user(Request::new("POST", "/images/prune", "image.prune"), "bob");
        assert_eq!(
            isolated.on_request(&req),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=bob": true}})
            )
        );
        req.endpoint = "image.list".into();
        assert_eq!(
            isolated.on_request(&req),
            patch_query(
                "filters",
                json!({"label": {"io.portcullis.owner=bob": true}})
            )
        );
        assert_eq!(p.on_request(&req), Verdict::Allow);
    }

    /// The owner label on every create, exactly where the body keeps its labels.
    #[test]
    fn stamp_rule_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        for endpoint in [
            "container.create",
            "volume.create",
            "network.create",
            "service.create",
            "secret.create",
            "config.create",
        ] {
            let req = |body: Value| {
                as_user(
                    Request::new("POST", "/x", endpoint).with_json_body(&body),
                    "alice",
                )
            };
            assert_eq!(
                p.on_request(&req(json!({"Name": "x"}))),
                Verdict::from(Patch::new().add("/Labels", json!({"io.portcullis.owner": "alice"}))),
                "{endpoint}"
            );
            assert_eq!(
                p.on_request(&req(json!({"Labels": {"a": "b"}}))),
                Verdict::from(Patch::new().add("/Labels/io.portcullis.owner", json!("alice"))),
                "{endpoint}"
            );
            assert_eq!(
                p.on_request(&req(json!("text"))),
                Verdict::deny_with(
                    400,
                    format!("[owner] {endpoint} needs a JSON object body to record the owner")
                ),
                "{endpoint}"
            );
        }
        // A service's task containers: their labels object, or a new one; no container spec,
        // no second label.
        let svc = |spec: Value| {
            as_user(
                Request::new("POST", "/x", "service.create").with_json_body(
                    &json!({"Labels": null, "TaskTemplate": {"ContainerSpec": spec}}),
                ),
                "alice",
            )
        };
        assert_eq!(
            p.on_request(&svc(json!({"Labels": {"a": "b"}}))),
            Verdict::from(
                Patch::new()
                    .add("/Labels", json!({"io.portcullis.owner": "alice"}))
                    .add(
                        "/TaskTemplate/ContainerSpec/Labels/io.portcullis.owner",
                        json!("alice")
                    )
            )
        );
        assert_eq!(
            p.on_request(&svc(Value::Null)),
            Verdict::from(Patch::new().add("/Labels", json!({"io.portcullis.owner": "alice"})))
        );
        // Other requests are not stamped.
        let start = as_user(Request::new("POST", "/x", "container.start"), "alice");
        assert_eq!(p.on_request(&start), Verdict::Allow);
        // Another label key.
        let custom = Tenancy::new(json!({"owner_label": "com.acme/owner"})).unwrap();
        let vol = as_user(
            Request::new("POST", "/x", "volume.create").with_json_body(&json!({"Labels": {}})),
            "alice",
        );
        assert_eq!(
            custom.on_request(&vol),
            Verdict::from(Patch::new().add("/Labels/com.acme~1owner", json!("alice")))
        );
    }

    /// Updates keep the owner the object has; administrators' objects are stamped too.
    #[test]
    fn updates_keep_their_owner() {
        let p = Tenancy::new(json!({"admin_users": ["root"]})).unwrap();
        for endpoint in ["service.update", "secret.update", "config.update"] {
            let kind = endpoint.split('.').next().unwrap();
            let mut req = acting("POST", endpoint, on(kind, Some("s"), Some("bob")), "root");
            req.body = Some(json!({"Labels": {}}).to_string());
            assert_eq!(
                p.on_request(&req),
                Verdict::from(Patch::new().add("/Labels/io.portcullis.owner", json!("bob"))),
                "{endpoint}"
            );
            req.target = None;
            assert_eq!(
                p.on_request(&req),
                Verdict::from(Patch::new().add("/Labels/io.portcullis.owner", json!("root"))),
                "{endpoint}"
            );
        }
        // A create takes its caller, whatever the target says.
        let mut create = acting(
            "POST",
            "volume.create",
            on("volume", Some("v"), Some("bob")),
            "root",
        );
        create.body = Some("{}".into());
        assert_eq!(
            p.on_request(&create),
            Verdict::from(Patch::new().add("/Labels", json!({"io.portcullis.owner": "root"})))
        );
        let admin = as_user(Request::new("POST", "/x", "container.start"), "root");
        assert_eq!(p.on_request(&admin), Verdict::Allow);
    }

    #[test]
    fn isolated_builds_are_stamped_exactly() {
        let p = Tenancy::new(json!({"shared_images": false})).unwrap();
        let build = |labels: Option<&str>| {
            let mut req = as_user(Request::new("POST", "/build", "image.build"), "alice");
            req.query = labels
                .map(|l| vec![Pair::new("labels", l)])
                .unwrap_or_default();
            p.on_request(&req)
        };
        assert_eq!(
            build(None),
            patch_query("labels", json!({"io.portcullis.owner": "alice"}))
        );
        assert_eq!(
            build(Some(r#"{"a":"b"}"#)),
            patch_query("labels", json!({"a": "b", "io.portcullis.owner": "alice"}))
        );
        assert_eq!(
            build(Some(r#"{"io.portcullis.owner":"bob"}"#)),
            patch_query("labels", json!({"io.portcullis.owner": "alice"}))
        );
        assert_eq!(
            build(Some("[]")),
            Verdict::deny_with(400, "[owner] the labels query parameter is not a JSON object: invalid type: sequence, expected a map at line 1 column 0")
        );
        let solve = as_user(
            Request::new("POST", "/moby.buildkit.v1.Control/Solve", "build.solve"),
            "alice",
        );
        assert_eq!(
            p.on_request(&solve),
            Verdict::from(
                Patch::new().add("/FrontendAttrs/label:io.portcullis.owner", json!("alice"))
            )
        );
        assert_eq!(
            Tenancy::new(Value::Null).unwrap().on_request(&solve),
            Verdict::Allow
        );
    }

    #[test]
    fn list_filters_exactly() {
        let p = Tenancy::new(Value::Null).unwrap();
        let own = json!({"label": {"io.portcullis.owner=alice": true}});
        for endpoint in FILTERED {
            let req = as_user(Request::new("GET", "/x", endpoint), "alice");
            assert_eq!(
                p.on_request(&req),
                patch_query("filters", own.clone()),
                "{endpoint}"
            );
        }
        let list = |filters: &str| {
            let mut req = as_user(Request::new("GET", "/x", "volume.list"), "alice");
            req.query = vec![Pair::new("filters", filters)];
            p.on_request(&req)
        };
        assert_eq!(list(""), patch_query("filters", own));
        assert_eq!(
            list(r#"{"label":["x=1"]}"#),
            patch_query(
                "filters",
                json!({"label": ["x=1", "io.portcullis.owner=alice"]})
            )
        );
        assert_eq!(
            list(r#"{"dangling":["true"]}"#),
            patch_query(
                "filters",
                json!({"dangling": ["true"], "label": ["io.portcullis.owner=alice"]})
            )
        );
        assert_eq!(
            list(r#"{"dangling":{"true":true}}"#),
            patch_query(
                "filters",
                json!({"dangling": {"true": true}, "label": {"io.portcullis.owner=alice": true}})
            )
        );
        assert_eq!(
            list("[1]"),
            Verdict::deny_with(400, "[owner] the filters query parameter is not a JSON object: invalid type: sequence, expected a map at line 1 column 0")
        );
        // Not lists: no filter.
        for endpoint in ["container.inspect", "image.list", "node.list"] {
            let req = as_user(Request::new("GET", "/x", endpoint), "alice");
            assert_eq!(p.on_request(&req), Verdict::Allow, "{endpoint}");
        }
    }

    #[test]
    fn event_streams_asked_of_the_engine() {
        let judge = Tenancy::new(json!({"events": "judge"})).unwrap();
        let events = |filters: Option<&str>| {
            let mut req = as_user(Request::new("GET", "/events", "system.events"), "alice");
            req.query = filters
                .map(|f| vec![Pair::new("filters", f)])
                .unwrap_or_default();
            req
        };
        for (filters, only_containers) in [
            (None, false),
            (Some(r#"{"type":{"container":true}}"#), true),
            (Some(r#"{"type":["container"]}"#), true),
            (Some(r#"{"type":["container","volume"]}"#), false),
            (Some(r#"{"type":[]}"#), false),
            (Some(r#"{"type":"container"}"#), false),
            (Some(r#"{"event":["start"]}"#), false),
            (Some("{"), false),
        ] {
            let req = events(filters);
            let expected = if only_containers {
                let mut f: Value = serde_json::from_str(filters.unwrap()).unwrap();
                let own = if f["type"].is_array() {
                    json!(["io.portcullis.owner=alice"])
                } else {
                    json!({"io.portcullis.owner=alice": true})
                };
                f["label"] = own;
                patch_query("filters", f)
            } else {
                Verdict::Allow
            };
            assert_eq!(judge.on_request(&req), expected, "{filters:?}");
        }
        // `events = "filter"` always asks the engine.
        let filter = Tenancy::new(json!({"events": "filter"})).unwrap();
        assert_eq!(
            filter.on_request(&events(Some(r#"{"type":["volume"]}"#))),
            patch_query(
                "filters",
                json!({"type": ["volume"], "label": ["io.portcullis.owner=alice"]})
            )
        );
    }

    /// `events = "judge"`: each event shown (without the owner label) or left out, and why.
    #[test]
    fn judged_events_exactly() {
        let p = Tenancy::new(json!({"events": "judge"})).unwrap();
        let req = as_user(Request::new("GET", "/events", "system.events"), "alice");
        let event = |req: &Request, p: &Tenancy, e: Value| {
            p.on_response(
                req,
                &Response {
                    status: 200,
                    body: Some(e.to_string()),
                    ..Response::default()
                },
            )
        };
        let left_out = |why: &str| deny(&format!("[owner] event left out: {why}"));
        let container = |owner: Option<&str>| {
            let mut attributes = json!({"name": "web"});
            if let Some(o) = owner {
                attributes["io.portcullis.owner"] = json!(o);
            }
            json!({"Type": "container", "Actor": {"ID": "c", "Attributes": attributes}})
        };
        assert_eq!(
            event(&req, &p, container(Some("alice"))),
            Verdict::from(
                Patch::new().replace("/Actor", json!({"ID": "c", "Attributes": {"name": "web"}}))
            )
        );
        assert_eq!(
            event(&req, &p, container(Some("bob"))),
            left_out("another user's object")
        );
        assert_eq!(
            event(&req, &p, container(None)),
            left_out("an object without owner")
        );
        let read = Tenancy::new(json!({"events": "judge", "unowned": "read"})).unwrap();
        assert_eq!(event(&req, &read, container(None)), Verdict::Allow);
        assert_eq!(
            event(&req, &p, json!({"Type": "daemon", "Actor": {"ID": "d"}})),
            left_out("not an object callers own")
        );
        assert_eq!(
            event(&req, &p, json!({"Actor": {"ID": "d"}})),
            left_out("not an object callers own")
        );
        let mut text = req.clone();
        text.caller.groups = vec![];
        assert_eq!(
            p.on_response(
                &text,
                &Response {
                    status: 200,
                    body: Some("not json".into()),
                    ..Response::default()
                }
            ),
            left_out("not a JSON event")
        );
        // Images: everyone's while shared, else by the label they carry.
        let image = json!({"Type": "image", "Actor": {"ID": "i", "Attributes": {"io.portcullis.owner": "bob"}}});
        assert_eq!(
            event(&req, &p, image.clone()),
            Verdict::from(Patch::new().replace("/Actor", json!({"ID": "i", "Attributes": {}})))
        );
        let isolated = Tenancy::new(json!({"events": "judge", "shared_images": false})).unwrap();
        assert_eq!(
            event(&req, &isolated, image),
            left_out("another user's object")
        );
        // Other kinds by the object the gateway looked up, of the event's own kind.
        let network =
            json!({"Type": "network", "Actor": {"ID": "n", "Attributes": {"name": "back"}}});
        assert_eq!(
            event(&req, &p, network.clone()),
            left_out("the gateway does not know its object")
        );
        let mut known = req.clone();
        known.target = Some(on("network", Some("back"), Some("alice")));
        assert_eq!(event(&known, &p, network.clone()), Verdict::Allow);
        known.target = Some(on("volume", Some("back"), Some("alice")));
        assert_eq!(
            event(&known, &p, network.clone()),
            left_out("the gateway does not know its object")
        );
        known.target = Some(on("network", Some("back"), Some("bob")));
        assert_eq!(
            event(&known, &p, network),
            left_out("another user's object")
        );
        // Any status: an event stream's own.
        let mut admin = req.clone();
        admin.caller.user = "x".into();
        admin.caller.groups = vec!["docker-admin".into()];
        assert_eq!(event(&admin, &p, container(Some("bob"))), Verdict::Allow);
    }

    #[test]
    fn responses_shown_without_the_owner_label() {
        let p = Tenancy::new(Value::Null).unwrap();
        let req = as_user(Request::new("GET", "/x", "container.list"), "alice");
        let resp = |status: u16, body: Option<Value>| Response {
            status,
            body: body.map(|b| b.to_string()),
            ..Response::default()
        };
        let list = json!([
            {"Id": "a", "Labels": {"io.portcullis.owner": "alice", "app": "web"}},
            {"Id": "b", "Labels": {"app": "db"}},
            {"Id": "c", "Config": {"io.portcullis.owner": "alice"}, "Labels": null},
            {"Id": "d", "Labels": {"io.portcullis.owner": "alice"}}
        ]);
        assert_eq!(
            p.on_response(&req, &resp(200, Some(list.clone()))),
            Verdict::from(
                Patch::new()
                    .replace("/0", json!({"Id": "a", "Labels": {"app": "web"}}))
                    .replace("/3", json!({"Id": "d", "Labels": {}}))
            )
        );
        assert_eq!(
            p.on_response(
                &req,
                &resp(
                    299,
                    Some(json!({"Labels": {"io.portcullis.owner": "x"}, "Name": "n"}))
                )
            ),
            Verdict::from(Patch::new().replace("/Labels", json!({})))
        );
        // Not shown, or nothing to hide: the engine's bytes go on.
        assert_eq!(
            p.on_response(&req, &resp(404, Some(list.clone()))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_response(&req, &resp(199, Some(list.clone()))),
            Verdict::Allow
        );
        assert_eq!(p.on_response(&req, &resp(300, Some(list))), Verdict::Allow);
        assert_eq!(p.on_response(&req, &resp(200, None)), Verdict::Allow);
        assert_eq!(
            p.on_response(&req, &resp(200, Some(json!("text")))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_response(&req, &resp(200, Some(json!([1, 2])))),
            Verdict::Allow
        );
    }

    /// The patch between a body and what is shown: the members or items that differ, or the
    /// whole document when they cannot be matched one to one.
    #[test]
    fn replace_changed_patches() {
        assert_eq!(
            replace_changed(&json!({"a": 1, "b": [1]}), &json!({"a": 1, "b": [2]})),
            Patch::new().replace("/b", json!([2]))
        );
        assert_eq!(
            replace_changed(&json!([1, 2, 3]), &json!([1, 5, 6])),
            Patch::new().replace("/1", json!(5)).replace("/2", json!(6))
        );
        assert_eq!(
            replace_changed(&json!([1, 2]), &json!([1])),
            Patch::new().replace("", json!([1]))
        );
        assert_eq!(
            replace_changed(&json!("a"), &json!("b")),
            Patch::new().replace("", json!("b"))
        );
        for same in [json!({"a": 1}), json!([1]), json!("a"), Value::Null] {
            assert_eq!(replace_changed(&same, &same), Patch::new(), "{same}");
        }
    }

    /// `events = "judge"` judges the events stream only; other responses are shown without
    /// the owner label as usual.
    #[test]
    fn judged_events_leave_other_responses_alone() {
        let p = Tenancy::new(json!({"events": "judge"})).unwrap();
        let req = as_user(Request::new("GET", "/x", "container.inspect"), "alice");
        let resp = Response {
            status: 200,
            body: Some(
                json!({"Id": "c", "Config": {"Labels": {"io.portcullis.owner": "alice"}}})
                    .to_string(),
            ),
            ..Response::default()
        };
        assert_eq!(
            p.on_response(&req, &resp),
            Verdict::from(Patch::new().replace("/Config", json!({"Labels": {}})))
        );
    }

    #[test]
    fn disk_usage_shows_the_callers_own() {
        let body = json!({
            "Containers": [
                {"Id": "a", "Labels": {"io.portcullis.owner": "alice"}},
                {"Id": "b", "Labels": {"io.portcullis.owner": "bob"}},
                {"Id": "c"}
            ],
            "Volumes": [{"Name": "v", "Labels": {"io.portcullis.owner": "alice", "x": "1"}}],
            "Images": [{"Id": "i", "Labels": {"io.portcullis.owner": "bob"}}],
            "BuildCache": [{"ID": "x"}],
            "LayersSize": 1
        });
        let req = as_user(
            Request::new("GET", "/system/df", "system.data.usage"),
            "alice",
        );
        let resp = Response {
            status: 200,
            body: Some(body.to_string()),
            ..Response::default()
        };
        assert_eq!(
            Tenancy::new(Value::Null).unwrap().on_response(&req, &resp),
            Verdict::from(
                Patch::new()
                    .replace("/BuildCache", json!([]))
                    .replace("/Containers", json!([{"Id": "a", "Labels": {}}]))
                    .replace("/Images", json!([{"Id": "i", "Labels": {}}]))
                    .replace("/Volumes", json!([{"Name": "v", "Labels": {"x": "1"}}]))
            )
        );
        let isolated =
            Tenancy::new(json!({"shared_images": false, "hide_owner_label": false})).unwrap();
        assert_eq!(
            isolated.on_response(&req, &resp),
            Verdict::from(
                Patch::new()
                    .replace("/BuildCache", json!([]))
                    .replace(
                        "/Containers",
                        json!([{"Id": "a", "Labels": {"io.portcullis.owner": "alice"}}])
                    )
                    .replace("/Images", json!([]))
            )
        );
        // Nothing of others' and no build cache: unchanged.
        let mine = json!({"Containers": [], "Volumes": null, "BuildCache": null});
        let resp = Response {
            status: 200,
            body: Some(mine.to_string()),
            ..Response::default()
        };
        assert_eq!(
            Tenancy::new(Value::Null).unwrap().on_response(&req, &resp),
            Verdict::Allow
        );
    }

    #[test]
    fn configuration_errors_are_exact() {
        let err = |config: Value| Tenancy::new(config).err().unwrap_or_default();
        assert_eq!(
            err(json!({"owner_label": ""})),
            "tenancy config: owner_label must not be empty"
        );
        assert_eq!(
            err(json!({"repository_prefix": "team/"})),
            "tenancy config: repository_prefix must contain {user} or {group}"
        );
        assert_eq!(
            err(json!({"events": "all"})),
            "tenancy config: unknown variant `all`, expected `filter` or `judge`"
        );
        assert!(Tenancy::new(json!({"repository_prefix": "{user}/"})).is_ok());
        assert!(Tenancy::new(json!({"repository_prefix": "{group}/"})).is_ok());
    }
}
