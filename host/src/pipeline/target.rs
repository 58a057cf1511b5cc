//! Target enrichment: for a request that acts on an existing object, ask the engine what
//! that object is *now* (full id, name, labels) and hand it to plugins as `request.target`.
//!
//! # Why the engine resolves the reference
//!
//! A client may name an object by full id, by a unique id prefix or by name, and dockerd
//! resolves them in its own order (exact id, then name, then prefix; ambiguous prefixes are
//! errors). Re-implementing that from a list would disagree with the engine somewhere, and a
//! cache would judge a name by the labels of the object that used to have it. So the gateway
//! asks the engine's own inspect endpoint with the very reference the request carries, just
//! before forwarding: the object it reports is the one the engine will act on.
//!
//! - `404` (or any other error status): no target. The engine answers the real request
//!   with the same error itself, so nothing is hidden from plugins that exists.
//! - A failure to ask (engine unreachable, too slow, answer too large or not JSON) is an
//!   error: plugins that rely on the target would otherwise judge a request blind, so the
//!   request fails closed with 502.
//!
//! The same goes for the other objects a body refers to (`request.related`, see
//! [`resolve_related`]): the volumes a container mounts, the networks it joins, the
//! containers whose volumes or namespaces it shares, the secrets and configs of a service.
//!
//! Each lookup is bounded in size ([`MAX_LOOKUP_BYTES`]) and time ([`LOOKUP_TIMEOUT`]), and
//! a request refers to at most [`MAX_REFERENCES`] objects.

use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::Body;
use crate::error::{DockerError, IntoDockerError};
use crate::model;
use crate::route::Route;
use crate::upstream::Upstream;

/// Largest inspect answer read. A container's inspect is a few KiB; thousands of labels or
/// mounts stay well inside this.
pub const MAX_LOOKUP_BYTES: usize = 4 * 1024 * 1024;

/// Longest one lookup may take (an exec lookup is two engine calls, each bounded by this).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the target could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The engine could not be asked, or did not answer in time or within the bound.
    #[error("cannot look up the {kind} {reference:?} on the engine: {reason}")]
    Lookup {
        kind: &'static str,
        reference: String,
        reason: String,
    },
    /// The body refers to more objects than the gateway looks up for one request.
    #[error("the request body refers to {count} objects (volumes, networks, containers, secrets, configs); at most {limit} are allowed")]
    TooManyReferences { count: usize, limit: usize },
}

impl IntoDockerError for TargetError {
    fn to_docker_error(&self) -> DockerError {
        let status = match self {
            TargetError::Lookup { .. } => StatusCode::BAD_GATEWAY,
            TargetError::TooManyReferences { .. } => StatusCode::BAD_REQUEST,
        };
        DockerError::new(status, format!("portcullis: {self}"))
    }
}

/// The kind of object an endpoint acts on and how to find the reference to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Container,
    Exec,
    Image,
    Volume,
    Network,
    Service,
    Secret,
    Config,
    Node,
    Plugin,
    Task,
}

impl ObjectKind {
    fn of(endpoint: &str) -> Option<ObjectKind> {
        let word = endpoint.split('.').next().unwrap_or("");
        Some(match word {
            "container" => ObjectKind::Container,
            "exec" => ObjectKind::Exec,
            "image" => ObjectKind::Image,
            "volume" => ObjectKind::Volume,
            "network" => ObjectKind::Network,
            "service" => ObjectKind::Service,
            "secret" => ObjectKind::Secret,
            "config" => ObjectKind::Config,
            "node" => ObjectKind::Node,
            "plugin" => ObjectKind::Plugin,
            "task" => ObjectKind::Task,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ObjectKind::Container | ObjectKind::Exec => "container",
            ObjectKind::Image => "image",
            ObjectKind::Volume => "volume",
            ObjectKind::Network => "network",
            ObjectKind::Service => "service",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
            ObjectKind::Node => "node",
            ObjectKind::Plugin => "plugin",
            ObjectKind::Task => "task",
        }
    }

    /// For objects the engine makes on behalf of another, with no labels of their own: the
    /// inspect field naming that object, and its kind. An exec is judged by its container,
    /// a task (the engine's work for a service) by its service, as their owners made them.
    fn belongs_to(self) -> Option<(&'static str, ObjectKind)> {
        match self {
            ObjectKind::Exec => Some(("ContainerID", ObjectKind::Container)),
            ObjectKind::Task => Some(("ServiceID", ObjectKind::Service)),
            _ => None,
        }
    }

    /// The engine path that inspects the object `reference` (before percent-encoding).
    fn inspect_path(self, reference: &str) -> String {
        match self {
            ObjectKind::Container => format!("/containers/{reference}/json"),
            ObjectKind::Exec => format!("/exec/{reference}/json"),
            ObjectKind::Image => format!("/images/{reference}/json"),
            ObjectKind::Volume => format!("/volumes/{reference}"),
            ObjectKind::Network => format!("/networks/{reference}"),
            ObjectKind::Service => format!("/services/{reference}"),
            ObjectKind::Secret => format!("/secrets/{reference}"),
            ObjectKind::Config => format!("/configs/{reference}"),
            ObjectKind::Node => format!("/nodes/{reference}"),
            ObjectKind::Plugin => format!("/plugins/{reference}/json"),
            ObjectKind::Task => format!("/tasks/{reference}"),
        }
    }
}

/// The object `route` (with its decoded `query`) acts on, and its kind; `None` for requests
/// on collections (list, create, prune, ...).
fn reference(route: &Route, query: &[(String, String)]) -> Option<(ObjectKind, String)> {
    let endpoint = route.endpoint.name;
    // `POST /commit?container=` acts on a container named in the query.
    if endpoint == "image.commit" {
        let c = query.iter().find(|(k, _)| k == "container")?;
        return Some((ObjectKind::Container, c.1.clone()));
    }
    let id = route.object_id.clone()?;
    Some((ObjectKind::of(endpoint)?, id))
}

/// Looks up the object the request acts on. `Ok(None)` when the request acts on no existing
/// object or the engine does not know it.
pub async fn resolve(
    upstream: &Upstream,
    seen: &Seen,
    route: &Route,
    query: &[(String, String)],
) -> Result<Option<model::Target>, TargetError> {
    let Some((kind, reference)) = reference(route, query) else {
        return Ok(None);
    };
    if reference.is_empty() {
        return Ok(None);
    }
    let lookup = |kind, reference| lookup(upstream, route, kind, reference);
    if kind == ObjectKind::Network {
        // `?scope=swarm` (how the docker CLI resolves a service's `--network`) picks among
        // networks of one name: the predefined `host` and `bridge` exist as a local and as a
        // swarm network. Asked without it, the engine names the local one, whose id the
        // request is then pinned to and which the swarm scope has not.
        if let Some((_, scope)) = query.iter().find(|(k, _)| k == "scope") {
            let doc = lookup_scoped(upstream, route, kind, reference, scope).await?;
            let target = doc.map(|doc| describe(kind, &doc));
            if let Some(t) = &target {
                seen.remember(t);
            }
            return Ok(target);
        }
    }
    let (kind, doc) = match kind.belongs_to() {
        Some((field, parent)) => {
            let Some(doc) = lookup(kind, reference).await? else {
                return Ok(None);
            };
            let Some(parent_id) = doc.get(field).and_then(Value::as_str) else {
                return Ok(None);
            };
            (parent, lookup(parent, parent_id.to_owned()).await?)
        }
        None => (kind, lookup(kind, reference).await?),
    };
    let target = doc.map(|doc| describe(kind, &doc));
    if let Some(t) = &target {
        seen.remember(t);
    }
    Ok(target)
}

/// The path to forward instead of `route.path` once plugins judged `target`: the reference
/// the client gave (a name or an id prefix) replaced by the object's full id. The lookup and
/// the engine's work are two requests; pinned to the id, the engine acts on the object the
/// plugins judged even when its name passes to another object in between (or answers 404
/// when it is gone), never on the newcomer.
///
/// Only for kinds whose id stands for the name in every endpoint: containers, networks,
/// services, secrets, configs and nodes. Image and plugin references are tags with a meaning
/// of their own (removing `name:tag` is not removing the image), a volume's name is its id,
/// and exec endpoints name the exec while their target is its container. The one image
/// endpoint pinned is `docker tag`: its source stands for the image it names, and a tag
/// judged as left where it is (see `tags`) must not move to whatever the source names
/// by the time the engine acts.
pub fn pinned_path(route: &Route, target: &model::Target) -> Option<String> {
    if route.endpoint.name == "image.tag" {
        let (algorithm, hex) = target.id.split_once(':')?;
        let digest =
            algorithm == "sha256" && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        return digest.then(|| format!("/images/{}/tag", target.id));
    }
    let kind = ObjectKind::of(route.endpoint.name)?;
    let pinnable = matches!(
        kind,
        ObjectKind::Container
            | ObjectKind::Network
            | ObjectKind::Service
            | ObjectKind::Secret
            | ObjectKind::Config
            | ObjectKind::Node
    );
    let reference = route.object_id.as_deref()?;
    let id = target.id.as_str();
    let plain_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !pinnable || !plain_id || id == reference {
        return None;
    }
    // Every pinnable endpoint is `/<collection>/{id}[/...]`.
    let mut segments: Vec<&str> = route.path.split('/').collect();
    if segments.get(2) != Some(&reference) {
        return None;
    }
    segments[2] = id;
    Some(segments.join("/"))
}

/// Asks the engine for its inspect document of the `kind` object `reference`, with the API
/// version of `route`: `Ok(None)` when it knows no such object.
async fn lookup(
    upstream: &Upstream,
    route: &Route,
    kind: ObjectKind,
    reference: String,
) -> Result<Option<Value>, TargetError> {
    lookup_scoped(upstream, route, kind, reference, "").await
}

/// [`lookup`] of a network within `scope` (`local`, `swarm`, `global`; empty: any).
async fn lookup_scoped(
    upstream: &Upstream,
    route: &Route,
    kind: ObjectKind,
    reference: String,
    scope: &str,
) -> Result<Option<Value>, TargetError> {
    let fail = |reason: String| TargetError::Lookup {
        kind: kind.name(),
        reference: reference.clone(),
        reason,
    };
    let mut path = Route {
        path: kind.inspect_path(&reference),
        ..route.clone()
    }
    .upstream_path();
    if !scope.is_empty() {
        let query = super::canonical::encode_query(&[("scope".to_owned(), scope.to_owned())]);
        path = format!("{path}?{}", query.unwrap_or_default());
    }
    tokio::time::timeout(LOOKUP_TIMEOUT, inspect(upstream, &path))
        .await
        .map_err(|_| fail(format!("no answer within {LOOKUP_TIMEOUT:?}")))?
        .map_err(fail)
}

/// The engine's inspect document of the image `reference` (a tag, digest reference or id):
/// `Ok(None)` when it knows no such image.
pub(super) async fn lookup_image(
    upstream: &Upstream,
    route: &Route,
    reference: &str,
) -> Result<Option<Value>, TargetError> {
    lookup(upstream, route, ObjectKind::Image, reference.to_owned()).await
}

/// The engine's image list entries for `repository` (the short form, `team/app`): the list's
/// `reference` filter matches a bare repository name against every tag in it, so one call
/// says whether the repository exists and which image each of its tags names.
pub(super) async fn repository_images(
    upstream: &Upstream,
    route: &Route,
    repository: &str,
) -> Result<Vec<Value>, TargetError> {
    let fail = |reason: String| TargetError::Lookup {
        kind: "repository",
        reference: repository.to_owned(),
        reason,
    };
    let filters = serde_json::json!({ "reference": { repository: true } }).to_string();
    let query = super::canonical::encode_query(&[("filters".to_owned(), filters)]);
    let path = Route {
        path: "/images/json".into(),
        ..route.clone()
    }
    .upstream_path();
    let path = format!("{path}?{}", query.unwrap_or_default());
    let list = tokio::time::timeout(LOOKUP_TIMEOUT, inspect(upstream, &path))
        .await
        .map_err(|_| fail(format!("no answer within {LOOKUP_TIMEOUT:?}")))?
        .map_err(fail)?;
    match list {
        Some(Value::Array(images)) => Ok(images),
        Some(_) => Err(fail("the image list is not a list".into())),
        None => Ok(Vec::new()),
    }
}

/// An image as plugins see it, from the engine's inspect document or an image list entry
/// (whose labels are at the top).
pub(super) fn describe_image(doc: &Value) -> model::Target {
    let mut t = describe(ObjectKind::Image, doc);
    if t.labels.is_empty() {
        if let Some(labels) = doc.get("Labels").and_then(Value::as_object) {
            t.labels = labels
                .iter()
                .map(|(k, v)| model::Pair {
                    name: k.clone(),
                    value: v.as_str().unwrap_or_default().to_owned(),
                })
                .collect();
        }
    }
    t
}

/// The objects the gateway has looked up lately, by kind and id, for the events of objects
/// that carry no labels in the event itself (volumes, networks, services, secrets, configs,
/// nodes on engine 20.10): once such an object is destroyed the engine cannot be asked any
/// more, so its destroy event is judged by what the gateway saw of it last (from a request
/// that acted on it, or an earlier event). Bounded: the least recently used entries go.
pub struct Seen {
    objects: std::sync::Mutex<lru::LruCache<SeenKey, (model::Target, Instant)>>,
}

/// An object's kind and id.
type SeenKey = (&'static str, String);

/// Objects remembered at most.
pub const SEEN_OBJECTS: usize = 4096;

/// How long a looked-up object stands for the engine's current answer when the next event
/// about it arrives: an event fans out to every open event stream, and each would otherwise
/// ask the engine the same question.
const SEEN_FRESH: Duration = Duration::from_secs(1);

impl Default for Seen {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(SEEN_OBJECTS).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            objects: std::sync::Mutex::new(lru::LruCache::new(cap)),
        }
    }
}

impl Seen {
    /// Remembers `t` as the engine reported it now.
    pub fn remember(&self, t: &model::Target) {
        let Some(kind) = ObjectKind::of(&t.kind) else {
            return;
        };
        if let Ok(mut objects) = self.objects.lock() {
            objects.put((kind.name(), t.id.clone()), (t.clone(), Instant::now()));
        }
    }

    /// The `kind` object `id` as last seen, if seen within `within` (none: ever).
    fn get(&self, kind: ObjectKind, id: &str, within: Option<Duration>) -> Option<model::Target> {
        let mut objects = self.objects.lock().ok()?;
        let (t, at) = objects.get(&(kind.name(), id.to_owned()))?;
        within.is_none_or(|w| at.elapsed() < w).then(|| t.clone())
    }
}

/// The id of the object an event is about: `Actor.ID`, or for a volume, whose name is its
/// id, `Actor.Attributes.name` when the ID is empty (Podman's volume events).
fn event_object_id(kind: ObjectKind, event: &Value) -> Option<&str> {
    let id = event.pointer("/Actor/ID").and_then(Value::as_str)?;
    let id = match kind {
        ObjectKind::Volume if id.is_empty() => event
            .pointer("/Actor/Attributes/name")
            .and_then(Value::as_str)?,
        _ => id,
    };
    (!id.is_empty()).then_some(id)
}

/// The object an event from `/events` is about, for the kinds whose events carry no labels:
/// what the engine says it is now, or, once it is gone (its destroy or remove event, or a
/// replayed event of an object removed since), what the gateway saw of it last. `None` for
/// other kinds (container and image events carry their labels in `Actor.Attributes`) and
/// for objects the gateway never saw. A failed lookup falls back to what was seen: an
/// event is never judged by another object's labels, only, at worst, by none.
pub async fn event_object(
    upstream: &Upstream,
    seen: &Seen,
    route: &Route,
    event: &Value,
) -> Option<model::Target> {
    let kind = ObjectKind::of(event.get("Type").and_then(Value::as_str)?).filter(|k| {
        matches!(
            k,
            ObjectKind::Volume
                | ObjectKind::Network
                | ObjectKind::Service
                | ObjectKind::Secret
                | ObjectKind::Config
                | ObjectKind::Node
        )
    })?;
    let id = event_object_id(kind, event)?;
    let action = event.get("Action").and_then(Value::as_str).unwrap_or("");
    if matches!(action, "destroy" | "remove" | "delete") {
        return seen.get(kind, id, None);
    }
    // A create may reuse the name (a volume's id) of an object just destroyed: always ask.
    if action != "create" {
        if let Some(t) = seen.get(kind, id, Some(SEEN_FRESH)) {
            return Some(t);
        }
    }
    match lookup(upstream, route, kind, id.to_owned()).await {
        Ok(Some(doc)) => {
            let t = describe(kind, &doc);
            seen.remember(&t);
            Some(t)
        }
        Ok(None) => seen.get(kind, id, None),
        Err(e) => {
            tracing::warn!(error = %e, "event object lookup failed; judging by what was seen of it");
            seen.get(kind, id, None)
        }
    }
}

/// Most references one request body may carry: each is an engine lookup before forwarding.
pub const MAX_REFERENCES: usize = 64;

/// Networks that are modes of the engine rather than objects anyone owns: named in
/// `NetworkMode` or `EndpointsConfig`, they are not looked up. (Referred to by id, they are,
/// and plugins see their names.)
const PREDEFINED_NETWORKS: [&str; 4] = ["default", "bridge", "host", "none"];

/// A reference to another object found in a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mention {
    field: String,
    kind: ObjectKind,
    name: String,
}

/// The objects the canonical `body` of an `endpoint` request refers to, in body order, the
/// way dockerd reads each field. The body has Go's field names already (`canonical.rs`).
fn mentions(endpoint: &str, body: &Value) -> Vec<Mention> {
    let mut out = Vec::new();
    let mut add = |field: String, kind: ObjectKind, name: &str| {
        let predefined = kind == ObjectKind::Network && PREDEFINED_NETWORKS.contains(&name);
        if !(name.is_empty() || predefined) {
            out.push(Mention {
                field,
                kind,
                name: name.to_owned(),
            });
        }
    };
    let list = |v: &Value, ptr: &str| -> Vec<(usize, Value)> {
        v.pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| a.iter().cloned().enumerate().collect())
            .unwrap_or_default()
    };
    let text = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).map(str::to_owned);
    // `container:<ref>` in a namespace mode joins that container's namespace.
    let joined = |mode: &str| mode.strip_prefix("container:").map(str::to_owned);
    match endpoint {
        "container.create" => {
            // The engine gives the container the image's labels beneath its own.
            if let Some(image) = text(body, "/Image") {
                add("Image".into(), ObjectKind::Image, &image);
            }
            for (i, b) in list(body, "/HostConfig/Binds") {
                // `source:destination[:options]`; a source that is not an absolute path is a
                // volume name (dockerd's linux mount parser). A lone destination is anonymous.
                let parts: Vec<&str> = b.as_str().unwrap_or_default().split(':').collect();
                if parts.len() >= 2 && !parts[0].starts_with('/') {
                    add(
                        format!("HostConfig.Binds[{i}]"),
                        ObjectKind::Volume,
                        parts[0],
                    );
                }
            }
            for (i, m) in list(body, "/HostConfig/Mounts") {
                if text(&m, "/Type").as_deref() == Some("volume") {
                    add(
                        format!("HostConfig.Mounts[{i}].Source"),
                        ObjectKind::Volume,
                        &text(&m, "/Source").unwrap_or_default(),
                    );
                }
            }
            for (i, v) in list(body, "/HostConfig/VolumesFrom") {
                // `container[:ro|:rw]`
                let spec = v.as_str().unwrap_or_default();
                add(
                    format!("HostConfig.VolumesFrom[{i}]"),
                    ObjectKind::Container,
                    spec.split(':').next().unwrap_or_default(),
                );
            }
            for (i, l) in list(body, "/HostConfig/Links") {
                // `name:alias`, the name possibly with a leading slash.
                let name = l
                    .as_str()
                    .unwrap_or_default()
                    .split(':')
                    .next()
                    .unwrap_or_default();
                add(
                    format!("HostConfig.Links[{i}]"),
                    ObjectKind::Container,
                    name.trim_start_matches('/'),
                );
            }
            if let Some(mode) = text(body, "/HostConfig/NetworkMode") {
                match joined(&mode) {
                    Some(c) => add("HostConfig.NetworkMode".into(), ObjectKind::Container, &c),
                    None => add("HostConfig.NetworkMode".into(), ObjectKind::Network, &mode),
                }
            }
            for field in ["PidMode", "IpcMode"] {
                if let Some(c) = text(body, &format!("/HostConfig/{field}"))
                    .as_deref()
                    .and_then(joined)
                {
                    add(format!("HostConfig.{field}"), ObjectKind::Container, &c);
                }
            }
            if let Some(networks) = body
                .pointer("/NetworkingConfig/EndpointsConfig")
                .and_then(Value::as_object)
            {
                for name in networks.keys() {
                    add(
                        "NetworkingConfig.EndpointsConfig".into(),
                        ObjectKind::Network,
                        name,
                    );
                }
            }
        }
        "network.connect" | "network.disconnect" => {
            if let Some(c) = text(body, "/Container") {
                add("Container".into(), ObjectKind::Container, &c);
            }
        }
        "service.create" | "service.update" => {
            for at in ["/TaskTemplate/Networks", "/Networks"] {
                for (i, n) in list(body, at) {
                    let field = format!("{}[{i}].Target", at[1..].replace('/', "."));
                    add(
                        field,
                        ObjectKind::Network,
                        &text(&n, "/Target").unwrap_or_default(),
                    );
                }
            }
            let spec = "/TaskTemplate/ContainerSpec";
            if let Some(image) = text(body, &format!("{spec}/Image")) {
                add(
                    "TaskTemplate.ContainerSpec.Image".into(),
                    ObjectKind::Image,
                    &image,
                );
            }
            for (i, m) in list(body, &format!("{spec}/Mounts")) {
                if text(&m, "/Type").as_deref() == Some("volume") {
                    let field = format!("TaskTemplate.ContainerSpec.Mounts[{i}].Source");
                    add(
                        field,
                        ObjectKind::Volume,
                        &text(&m, "/Source").unwrap_or_default(),
                    );
                }
            }
            for (array, id, kind) in [
                ("Secrets", "/SecretID", ObjectKind::Secret),
                ("Configs", "/ConfigID", ObjectKind::Config),
            ] {
                for (i, r) in list(body, &format!("{spec}/{array}")) {
                    let field = format!(
                        "TaskTemplate.ContainerSpec.{array}[{i}]{}",
                        id.replace('/', ".")
                    );
                    add(field, kind, &text(&r, id).unwrap_or_default());
                }
            }
        }
        _ => {}
    }
    out
}

/// Looks up every object the body of the request refers to (see [`mentions`]), each once.
/// Objects in `known` (the answer for the same request before mutating plugins changed its
/// body) are not asked again.
pub async fn resolve_related(
    upstream: &Upstream,
    route: &Route,
    body: Option<&Value>,
    known: &[model::Reference],
) -> Result<Vec<model::Reference>, TargetError> {
    let Some(body) = body else {
        return Ok(Vec::new());
    };
    let found = mentions(route.endpoint.name, body);
    if found.len() > MAX_REFERENCES {
        return Err(TargetError::TooManyReferences {
            count: found.len(),
            limit: MAX_REFERENCES,
        });
    }
    let mut known: Vec<(ObjectKind, String, Option<model::Target>)> = known
        .iter()
        .filter_map(|r| Some((ObjectKind::of(&r.kind)?, r.name.clone(), r.object.clone())))
        .collect();
    let mut out = Vec::with_capacity(found.len());
    for m in found {
        let object = match known.iter().find(|(k, n, _)| *k == m.kind && *n == m.name) {
            Some((_, _, object)) => object.clone(),
            None => {
                let object = lookup(upstream, route, m.kind, m.name.clone())
                    .await?
                    .map(|doc| describe(m.kind, &doc));
                known.push((m.kind, m.name.clone(), object.clone()));
                object
            }
        };
        out.push(model::Reference {
            field: m.field,
            kind: m.kind.name().to_owned(),
            name: m.name,
            object,
        });
    }
    Ok(out)
}

/// GETs `path` from the engine: `Ok(None)` on an error status, the JSON on 200.
async fn inspect(upstream: &Upstream, path: &str) -> Result<Option<Value>, String> {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = path.parse().map_err(|e| format!("bad lookup path: {e}"))?;
    // The pooled client sends no Host of its own, and Go's server refuses HTTP/1.1 without.
    req.headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_static("docker"));
    let resp = upstream.send(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        if resp.status() != StatusCode::NOT_FOUND {
            tracing::debug!(
                path,
                status = resp.status().as_u16(),
                "target lookup refused"
            );
        }
        return Ok(None);
    }
    let bytes = Limited::new(resp.into_body(), MAX_LOOKUP_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("the answer is not JSON: {e}"))
}

/// The target as plugins see it, from the engine's inspect document of a `kind`.
fn describe(kind: ObjectKind, doc: &Value) -> model::Target {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let at = |ptr: &str| doc.pointer(ptr).and_then(s);
    let (id, name, labels) = match kind {
        ObjectKind::Container | ObjectKind::Exec => (
            at("/Id"),
            // Docker reports container names with a leading slash.
            at("/Name").map(|n| n.trim_start_matches('/').to_owned()),
            doc.pointer("/Config/Labels"),
        ),
        ObjectKind::Image => (at("/Id"), at("/RepoTags/0"), doc.pointer("/Config/Labels")),
        ObjectKind::Volume => (at("/Name"), at("/Name"), doc.get("Labels")),
        ObjectKind::Network | ObjectKind::Plugin => (at("/Id"), at("/Name"), doc.get("Labels")),
        ObjectKind::Service | ObjectKind::Secret | ObjectKind::Config => {
            (at("/ID"), at("/Spec/Name"), doc.pointer("/Spec/Labels"))
        }
        ObjectKind::Node => (
            at("/ID"),
            at("/Description/Hostname"),
            doc.pointer("/Spec/Labels"),
        ),
        ObjectKind::Task => (at("/ID"), at("/Name"), doc.get("Labels")),
    };
    let labels = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| model::Pair {
                    name: k.clone(),
                    value: v.as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    model::Target {
        kind: kind.name().to_owned(),
        id: id.unwrap_or_default(),
        name,
        labels,
        owner: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(method: Method, path: &str) -> Route {
        crate::route::classify(&method, path).unwrap()
    }

    #[test]
    fn seen_objects_are_bounded_and_age() {
        let seen = Seen::default();
        let volume = |id: String| model::Target {
            kind: "volume".into(),
            id,
            name: None,
            labels: Vec::new(),
            owner: None,
        };
        for i in 0..=SEEN_OBJECTS {
            seen.remember(&volume(format!("v{i}")));
        }
        // The oldest went; the newest is there, fresh and ever.
        assert!(seen.get(ObjectKind::Volume, "v0", None).is_none());
        let last = format!("v{SEEN_OBJECTS}");
        assert!(seen
            .get(ObjectKind::Volume, &last, Some(SEEN_FRESH))
            .is_some());
        assert!(seen
            .get(ObjectKind::Volume, &last, Some(Duration::ZERO))
            .is_none());
        assert!(seen.get(ObjectKind::Volume, &last, None).is_some());
        // Kinds are apart: a network of that id is another object.
        assert!(seen.get(ObjectKind::Network, &last, None).is_none());
    }

    #[test]
    fn references_come_from_the_path_or_the_commit_query() {
        let r = route(Method::POST, "/v1.41/containers/web/stop");
        assert_eq!(
            reference(&r, &[]),
            Some((ObjectKind::Container, "web".into()))
        );
        let r = route(Method::POST, "/exec/abc/start");
        assert_eq!(reference(&r, &[]), Some((ObjectKind::Exec, "abc".into())));
        let r = route(Method::POST, "/commit");
        let q = [("container".to_owned(), "web".to_owned())];
        assert_eq!(
            reference(&r, &q),
            Some((ObjectKind::Container, "web".into()))
        );
        assert_eq!(
            reference(&route(Method::GET, "/containers/json"), &[]),
            None
        );
        assert_eq!(
            reference(&route(Method::POST, "/volumes/create"), &[]),
            None
        );
        assert_eq!(reference(&route(Method::GET, "/_ping"), &[]), None);
    }

    #[test]
    fn the_forwarded_path_names_the_judged_object_by_its_id() {
        let id = "3f2a".repeat(16);
        let target = |kind: &str, id: &str| model::Target {
            kind: kind.into(),
            id: id.into(),
            name: Some("web".into()),
            labels: Vec::new(),
            owner: None,
        };
        let pinned = |method, path: &str, t: &model::Target| {
            let r = route(method, path);
            pinned_path(&r, t).map(|p| Route { path: p, ..r }.upstream_path())
        };
        let c = target("container", &id);
        // A name or a short id becomes the full id; the rest of the path and the version stay.
        assert_eq!(
            pinned(Method::POST, "/v1.41/containers/web/stop", &c),
            Some(format!("/v1.41/containers/{id}/stop"))
        );
        assert_eq!(
            pinned(Method::DELETE, "/containers/3f2a", &c),
            Some(format!("/containers/{id}"))
        );
        assert_eq!(
            pinned(Method::GET, "/networks/backend", &target("network", &id)),
            Some(format!("/networks/{id}"))
        );
        assert_eq!(
            pinned(
                Method::POST,
                "/services/api/update",
                &target("service", "svc1")
            ),
            Some("/services/svc1/update".to_owned())
        );
        // Already the id; kinds whose references mean more than the object; execs (the
        // target is the exec's container, the path names the exec); no id.
        assert_eq!(
            pinned(Method::POST, &format!("/containers/{id}/stop"), &c),
            None
        );
        assert_eq!(
            pinned(
                Method::DELETE,
                "/images/busybox:latest",
                &target("image", &format!("sha256:{id}"))
            ),
            None
        );
        assert_eq!(
            pinned(Method::DELETE, "/volumes/data", &target("volume", "data")),
            None
        );
        assert_eq!(pinned(Method::POST, "/exec/abc/start", &c), None);
        // `docker tag`'s source, by the image's id, whatever the name's slashes.
        let image = target("image", &format!("sha256:{id}"));
        assert_eq!(
            pinned(
                Method::POST,
                "/v1.41/images/reg:5000/team/app:1/tag",
                &image
            ),
            Some(format!("/v1.41/images/sha256:{id}/tag"))
        );
        assert_eq!(
            pinned(Method::POST, "/images/app/tag", &target("image", "")),
            None
        );
        assert_eq!(
            pinned(
                Method::POST,
                "/containers/web/stop",
                &target("container", "")
            ),
            None
        );
    }

    #[test]
    fn body_references_are_found_as_dockerd_reads_them() {
        let body = json!({
            "Image": "x",
            "HostConfig": {
                "Binds": ["/srv:/srv", "data:/data:ro", "/anon", "cache:/c"],
                "Mounts": [{"Type": "volume", "Source": "logs"}, {"Type": "bind", "Source": "/etc"}, {"Type": "volume"}],
                "VolumesFrom": ["web:ro"],
                "Links": ["/db:database"],
                "NetworkMode": "container:abc",
                "PidMode": "container:def",
                "IpcMode": "shareable",
            },
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {}, "backend": {}}},
        });
        let found: Vec<(String, ObjectKind, String)> = mentions("container.create", &body)
            .into_iter()
            .map(|m| (m.field, m.kind, m.name))
            .collect();
        let want = [
            ("Image", ObjectKind::Image, "x"),
            ("HostConfig.Binds[1]", ObjectKind::Volume, "data"),
            ("HostConfig.Binds[3]", ObjectKind::Volume, "cache"),
            ("HostConfig.Mounts[0].Source", ObjectKind::Volume, "logs"),
            ("HostConfig.VolumesFrom[0]", ObjectKind::Container, "web"),
            ("HostConfig.Links[0]", ObjectKind::Container, "db"),
            ("HostConfig.NetworkMode", ObjectKind::Container, "abc"),
            ("HostConfig.PidMode", ObjectKind::Container, "def"),
            (
                "NetworkingConfig.EndpointsConfig",
                ObjectKind::Network,
                "backend",
            ),
        ];
        let want: Vec<(String, ObjectKind, String)> = want
            .iter()
            .map(|(f, k, n)| (f.to_string(), *k, n.to_string()))
            .collect();
        assert_eq!(found, want);

        let plain = json!({"HostConfig": {"NetworkMode": "bridge", "Binds": null}, "NetworkingConfig": {"EndpointsConfig": {"default": {}}}});
        assert!(mentions("container.create", &plain).is_empty());
        let named = json!({"HostConfig": {"NetworkMode": "backend"}});
        assert_eq!(
            mentions("container.create", &named)[0].kind,
            ObjectKind::Network
        );

        let service = json!({"TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Mounts": [{"Type": "volume", "Source": "v"}], "Secrets": [{"SecretID": "s1"}], "Configs": [{"ConfigID": "c1"}]},
            "Networks": [{"Target": "front"}]}});
        let fields: Vec<String> = mentions("service.update", &service)
            .into_iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(
            fields,
            [
                "TaskTemplate.Networks[0].Target",
                "TaskTemplate.ContainerSpec.Image",
                "TaskTemplate.ContainerSpec.Mounts[0].Source",
                "TaskTemplate.ContainerSpec.Secrets[0].SecretID",
                "TaskTemplate.ContainerSpec.Configs[0].ConfigID",
            ]
        );
        let connect = json!({"Container": "web"});
        assert_eq!(
            mentions("network.connect", &connect)[0].kind,
            ObjectKind::Container
        );
        assert!(mentions("container.start", &connect).is_empty());
    }

    #[test]
    fn lookup_paths_are_encoded_like_the_request() {
        let r = route(Method::DELETE, "/v1.41/images/reg:5000/a%20b:1");
        let (kind, id) = reference(&r, &[]).unwrap();
        let path = Route {
            path: kind.inspect_path(&id),
            ..r.clone()
        }
        .upstream_path();
        assert_eq!(path, "/v1.41/images/reg:5000/a%20b:1/json");
    }

    #[test]
    fn targets_from_inspect_documents() {
        let t = describe(
            ObjectKind::Container,
            &json!({"Id": "abc123", "Name": "/web", "Config": {"Labels": {"a": "1"}}}),
        );
        assert_eq!((t.kind.as_str(), t.id.as_str()), ("container", "abc123"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.labels[0].name, "a");
        let t = describe(ObjectKind::Volume, &json!({"Name": "data", "Labels": null}));
        assert_eq!((t.id.as_str(), t.labels.len()), ("data", 0));
        let t = describe(
            ObjectKind::Secret,
            &json!({"ID": "s1", "Spec": {"Name": "pw", "Labels": {"o": "alice"}}}),
        );
        assert_eq!((t.id.as_str(), t.name.as_deref()), ("s1", Some("pw")));
        assert_eq!(t.labels[0].value, "alice");
    }

    #[test]
    fn the_object_of_an_event() {
        let id = |kind, event: Value| event_object_id(kind, &event).map(str::to_owned);
        // dockerd's volume and network events.
        let docker_volume = json!({"Actor": {"ID": "data", "Attributes": {"driver": "local"}}});
        assert_eq!(id(ObjectKind::Volume, docker_volume), Some("data".into()));
        let network = json!({"Actor": {"ID": "n1", "Attributes": {"name": "net"}}});
        assert_eq!(id(ObjectKind::Network, network), Some("n1".into()));
        // Podman's volume events name the volume only in the attributes.
        let podman_volume = json!({"Actor": {"ID": "", "Attributes": {"name": "data"}}});
        assert_eq!(id(ObjectKind::Volume, podman_volume), Some("data".into()));
        // Only for volumes: another kind's name is not its id.
        let unnamed = json!({"Actor": {"ID": "", "Attributes": {"name": "net"}}});
        assert_eq!(id(ObjectKind::Network, unnamed), None);
        let nothing = json!({"Actor": {"ID": "", "Attributes": {"name": ""}}});
        assert_eq!(id(ObjectKind::Volume, nothing), None);
        assert_eq!(id(ObjectKind::Volume, json!({"Type": "volume"})), None);
    }
}
