//! What the gateway hands a plugin: the request (with its caller and target) and the
//! engine's response. They mirror the WIT records field for field, own their data, and can be
//! built and (de)serialized natively, so a plugin's unit tests need no gateway.

use serde::{Deserialize, Serialize};

use crate::bindings::portcullis::plugin::types as wit;
use crate::docker::{ContainerCreate, ExecCreate, ServiceSpec};

/// A name and a value: a header, a query parameter or a label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The name (header names are lowercase).
    pub name: String,
    /// The value.
    pub value: String,
}

impl Pair {
    /// A pair.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Pair {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// How the caller's identity was established.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Nothing proves who the caller is (plain TCP on loopback, or the configured anonymous
    /// identity).
    #[default]
    #[serde(alias = "None")]
    None,
    /// Unix socket peer credentials checked by the kernel.
    #[serde(alias = "PeerCredentials")]
    PeerCredentials,
    /// A client certificate verified against the configured client CA.
    #[serde(alias = "MutualTls")]
    MutualTls,
    /// A bearer token from the tokens file.
    #[serde(alias = "Token")]
    Token,
}

/// Who is making the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// How the identity was established.
    pub auth: AuthMethod,
    /// The transport peer, for the record: `unix(uid=1000, pid=42)`, `tcp(127.0.0.1:5555)`.
    pub peer: String,
}

impl Caller {
    /// Whether the caller belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// `template` with the caller filled in: `{user}` is its user name, `{group}` each of its
    /// groups (no value when it has none). For names bound to who asks: label namespaces
    /// (`com.acme.{group}.`), schema values, repository prefixes (`{user}/`).
    pub fn fill(&self, template: &str) -> Vec<String> {
        let with_user = template.replace("{user}", &self.user);
        if with_user.contains("{group}") {
            self.groups
                .iter()
                .map(|g| with_user.replace("{group}", g))
                .collect()
        } else {
            vec![with_user]
        }
    }
}

/// The existing object a request acts on, as the engine reported it just before the request
/// is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Target {
    /// The kind of object: `container`, `image`, `volume`, `network`, `service`, ...
    pub kind: String,
    /// The engine's full id of the object.
    pub id: String,
    /// The object's name, when it has one.
    pub name: Option<String>,
    /// The object's labels.
    pub labels: Vec<Pair>,
    /// Who owns the object by the gateway's own record: for a `tag`, the user who first made
    /// a tag in its repository through the gateway; none otherwise.
    pub owner: Option<String>,
}

impl Target {
    /// The value of the label `key`, if the object has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }
}

/// An object the request's body refers to besides its target (a volume it mounts, a network
/// it joins, a container whose volumes or namespaces it shares, a secret or config a service
/// uses), as the engine reported it just before the request is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reference {
    /// Where in the body the reference is, e.g. `HostConfig.Binds[0]`.
    pub field: String,
    /// The kind of object: `volume`, `network`, `container`, `secret`, `config`, `image` or
    /// `tag` (an image `repository:tag` the request creates, moves, pushes or removes).
    pub kind: String,
    /// The reference as the body gives it: a name, a full id or an id prefix.
    pub name: String,
    /// The object; none when the engine knows no such object (a volume it would create).
    pub object: Option<Target>,
}

/// A request exactly as the engine will act on it.
///
/// The fields are the WIT `request` record's. Lookups ([`Request::header`],
/// [`Request::query`], [`Request::target_label`]) and parsed views of the body
/// ([`Request::json_body`], [`Request::container_create`], ...) are methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// The gateway's id for this request, also in the audit record.
    pub id: u64,
    /// The HTTP method, uppercase.
    pub method: String,
    /// The canonical path without the version prefix, e.g. `/containers/web/start`.
    pub path: String,
    /// The API version from the path prefix (`1.41`), if the client sent one.
    pub api_version: Option<String>,
    /// The endpoint name, e.g. `container.create`, `container.exec`, `image.build`; a call
    /// inside a mediated BuildKit tunnel has its own (`build.solve`, `build.status`, ...: see
    /// docs/builds.md), its gRPC method as `path` and its judged fields as a JSON body.
    pub endpoint: String,
    /// The id or name of the object in the path, if any.
    pub object_id: Option<String>,
    /// The query parameters, in order, decoded.
    pub query: Vec<Pair>,
    /// The request headers (names lowercase), minus credentials unless granted.
    pub headers: Vec<Pair>,
    /// The body as canonical JSON text for endpoints that take JSON; none otherwise.
    pub body: Option<String>,
    /// Who is calling.
    pub caller: Caller,
    /// The object acted on, for requests on an existing object.
    pub target: Option<Target>,
    /// The other objects the body refers to, in body order.
    pub related: Vec<Reference>,
}

impl Request {
    /// A request for tests: `Request::new("POST", "/containers/create", "container.create")`.
    pub fn new(method: &str, path: &str, endpoint: &str) -> Self {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            endpoint: endpoint.to_owned(),
            ..Request::default()
        }
    }

    /// This request with `body` as its JSON body, for tests.
    pub fn with_json_body(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string());
        self
    }

    /// Parses a request from JSON: the fields of this type, by their Rust names
    /// (`api_version`, `object_id`, ...), all optional; `body` is JSON text. It is the format
    /// of `portcullis plugin test --request`, so a plugin's tests can share its sample files.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The first value of the query parameter `name` (what dockerd's `r.Form.Get` reads).
    pub fn query(&self, name: &str) -> Option<&str> {
        find(&self.query, name)
    }

    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, if there is one and it is JSON.
    pub fn json_body(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.body.as_deref()?).ok()
    }

    /// The value of the label `key` on the target object, if there is a target with it.
    pub fn target_label(&self, key: &str) -> Option<&str> {
        self.target.as_ref()?.label(key)
    }

    /// The container configuration of a `container.create` request.
    ///
    /// `None` for other endpoints, and for a body that does not parse as one (which dockerd
    /// would refuse too: the view accepts everything dockerd's decoder does, including `null`
    /// for any field). A strict policy can deny `container.create` when this is `None`.
    pub fn container_create(&self) -> Option<ContainerCreate> {
        self.view(&["container.create"])
    }

    /// The exec configuration of a `container.exec` request (`POST /containers/{id}/exec`).
    /// `None` otherwise; see [`Request::container_create`].
    pub fn exec_create(&self) -> Option<ExecCreate> {
        self.view(&["container.exec"])
    }

    /// The service spec of a `service.create` or `service.update` request. `None` otherwise;
    /// see [`Request::container_create`].
    pub fn service_spec(&self) -> Option<ServiceSpec> {
        self.view(&["service.create", "service.update"])
    }

    /// The body read into `T`, your own view of the fields a policy needs (derive
    /// `Deserialize` with `#[serde(default)]`), or `None` when there is no body or it does not
    /// fit `T`. Only the fields `T` names are built; the rest of the body is skipped, which
    /// is several times cheaper than [`Request::json_body`] on a large body such as the
    /// docker CLI's container create. On a duplicated key the last one wins, as in Go.
    pub fn body_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let text = self.body.as_deref()?;
        // Straight from the text first. A derived `Deserialize` refuses a duplicated field,
        // which the gateway's canonical body never has; a hand-written body may (`plugin
        // test`), and then the parse goes through `Value`, where the last duplicate wins.
        serde_json::from_str(text)
            .ok()
            .or_else(|| serde_json::from_value(serde_json::from_str(text).ok()?).ok())
    }

    fn view<T: serde::de::DeserializeOwned>(&self, endpoints: &[&str]) -> Option<T> {
        if !endpoints.contains(&self.endpoint.as_str()) {
            return None;
        }
        self.body_as()
    }
}

/// The engine's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The response headers (names lowercase).
    pub headers: Vec<Pair>,
    /// The body as JSON text when the engine answered JSON within the gateway's bound; for
    /// `/events`, one event (see the `on-response` hook); none for other streams and bodies.
    pub body: Option<String>,
}

impl Response {
    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, if there is one and it is JSON.
    pub fn json_body(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.body.as_deref()?).ok()
    }
}

fn find<'a>(pairs: &'a [Pair], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

fn find_header<'a>(pairs: &'a [Pair], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_str())
}

impl From<wit::Pair> for Pair {
    fn from(p: wit::Pair) -> Self {
        Pair {
            name: p.name,
            value: p.value,
        }
    }
}

fn pairs(list: Vec<wit::Pair>) -> Vec<Pair> {
    list.into_iter().map(Pair::from).collect()
}

impl From<wit::AuthMethod> for AuthMethod {
    fn from(a: wit::AuthMethod) -> Self {
        match a {
            wit::AuthMethod::None => AuthMethod::None,
            wit::AuthMethod::PeerCredentials => AuthMethod::PeerCredentials,
            wit::AuthMethod::MutualTls => AuthMethod::MutualTls,
            wit::AuthMethod::Token => AuthMethod::Token,
        }
    }
}

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Request {
            id: r.id,
            method: r.method,
            path: r.path,
            api_version: r.api_version,
            endpoint: r.endpoint,
            object_id: r.object_id,
            query: pairs(r.query),
            headers: pairs(r.headers),
            body: r.body,
            caller: Caller {
                user: r.caller.user,
                groups: r.caller.groups,
                auth: r.caller.auth.into(),
                peer: r.caller.peer,
            },
            target: r.target.map(Target::from),
            related: r
                .related
                .into_iter()
                .map(|r| Reference {
                    field: r.field,
                    kind: r.kind,
                    name: r.name,
                    object: r.object.map(Target::from),
                })
                .collect(),
        }
    }
}

impl From<wit::Target> for Target {
    fn from(t: wit::Target) -> Self {
        Target {
            kind: t.kind,
            id: t.id,
            name: t.name,
            labels: pairs(t.labels),
            owner: t.owner,
        }
    }
}

impl From<wit::Response> for Response {
    fn from(r: wit::Response) -> Self {
        Response {
            status: r.status,
            headers: pairs(r.headers),
            body: r.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Request {
        Request {
            query: vec![Pair::new("force", "1"), Pair::new("force", "0")],
            headers: vec![Pair::new("content-type", "application/json")],
            target: Some(Target {
                kind: "container".into(),
                id: "abc".into(),
                name: Some("web".into()),
                labels: vec![Pair::new("com.acme.team", "blue")],
                owner: None,
            }),
            caller: Caller {
                user: "alice".into(),
                groups: vec!["dev".into()],
                ..Caller::default()
            },
            ..Request::new("DELETE", "/containers/web", "container.delete")
        }
    }

    #[test]
    fn lookups() {
        let req = request();
        assert_eq!(req.query("force"), Some("1"));
        assert_eq!(req.query("v"), None);
        assert_eq!(req.header("Content-Type"), Some("application/json"));
        assert_eq!(req.target_label("com.acme.team"), Some("blue"));
        assert_eq!(req.target_label("missing"), None);
        assert_eq!(
            req.caller.fill("com.acme.{group}.{user}"),
            ["com.acme.dev.alice"]
        );
        assert_eq!(req.caller.fill("{user}/"), ["alice/"]);
        let lonely = Caller {
            groups: vec![],
            ..req.caller.clone()
        };
        assert!(lonely.fill("{group}/").is_empty());
        assert!(req.caller.in_group("dev"));
        assert!(!req.caller.in_group("ops"));
    }

    #[test]
    fn views_need_their_endpoint() {
        let body = json!({"Image": "busybox"});
        let req = request().with_json_body(&body);
        assert!(req.container_create().is_none());
        let req =
            Request::new("POST", "/containers/create", "container.create").with_json_body(&body);
        assert_eq!(req.container_create().unwrap().image, "busybox");
        assert!(req.exec_create().is_none());
        assert!(req.service_spec().is_none());
    }

    #[test]
    fn unparsable_body_has_no_view() {
        let mut req = Request::new("POST", "/containers/create", "container.create");
        assert!(req.container_create().is_none());
        req.body = Some("{not json".into());
        assert!(req.json_body().is_none());
        assert!(req.container_create().is_none());
        req.body = Some(r#"{"HostConfig": {"Privileged": "yes"}}"#.into());
        assert!(req.container_create().is_none());
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let mut req = Request::new("POST", "/containers/create", "container.create");
        req.body = Some(r#"{"HostConfig": {"Privileged": false, "Privileged": true}}"#.into());
        assert!(req.container_create().unwrap().host_config.privileged);
    }

    #[test]
    fn own_views_read_only_their_fields() {
        let mut req = Request::new("POST", "/services/create", "service.create").with_json_body(
            &json!({"Name": "web", "Labels": {"a": "1"}, "Mode": {"Replicated": {}},
                    "TaskTemplate": {"ContainerSpec": {"Image": "x", "Labels": null}}}),
        );
        let fields: crate::docker::LabelFields = req.body_as().unwrap();
        assert_eq!(fields.labels, Some(json!({"a": "1"})));
        assert_eq!(fields.container_spec().unwrap()["Image"], "x");
        assert!(fields.container_spec().unwrap()["Labels"].is_null());
        // A duplicated field goes through `Value`: the last one wins.
        req.body = Some(r#"{"Labels": {"a": "1"}, "Labels": {"b": "2"}}"#.into());
        let fields: crate::docker::LabelFields = req.body_as().unwrap();
        assert_eq!(fields.labels, Some(json!({"b": "2"})));
        req.body = Some("\"text\"".into());
        assert!(req.body_as::<crate::docker::LabelFields>().is_none());
        req.body = None;
        assert!(req.body_as::<crate::docker::LabelFields>().is_none());
    }

    #[test]
    fn from_json_is_lenient_and_round_trips() {
        let req = Request::from_json(
            r#"{"method": "POST", "endpoint": "container.create",
                "caller": {"user": "bob", "auth": "peer-credentials"},
                "body": "{\"Image\": \"alpine\"}"}"#,
        )
        .unwrap();
        assert_eq!(req.caller.auth, AuthMethod::PeerCredentials);
        assert_eq!(req.container_create().unwrap().image, "alpine");
        let again = Request::from_json(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(again, req);
        // The variant names wasmtime's serde derive uses are accepted too.
        let req = Request::from_json(r#"{"caller": {"auth": "MutualTls"}}"#).unwrap();
        assert_eq!(req.caller.auth, AuthMethod::MutualTls);
    }

    #[test]
    fn response_lookups() {
        let resp = Response {
            status: 200,
            headers: vec![Pair::new("api-version", "1.41")],
            body: Some("[]".into()),
        };
        assert_eq!(resp.header("API-Version"), Some("1.41"));
        assert_eq!(resp.json_body(), Some(json!([])));
    }
}
