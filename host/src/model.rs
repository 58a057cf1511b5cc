//! The gateway's own view of what it exchanges with plugins: a request as the engine will act
//! on it, the engine's response, and a plugin's verdict.
//!
//! These mirror the plugin contract (`sdk/wit/<version>/plugin.wit`) field for field, but
//! belong to the host: the pipeline, the audit trail and the Rego and OPA backends work on
//! them, and only `plugin::bindings` converts them to and from the types of a contract
//! version. A new contract version therefore changes one bindings module, not the host. The
//! contract's `///` comments are the reference for each field.

/// A name and a value: a header, a query parameter or a label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pair {
    /// The name (header names are lowercase).
    pub name: String,
    /// The value.
    pub value: String,
}

/// How the caller's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// Nothing proves who the caller is.
    #[default]
    None,
    /// Unix socket peer credentials checked by the kernel.
    PeerCredentials,
    /// A client certificate verified against the configured client CA.
    MutualTls,
    /// A bearer token from the tokens file.
    Token,
}

/// Who is making the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// The existing object a request acts on, as the engine reports it just before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The kind of object: `container`, `image`, `volume`, `network`, `service`, ...
    pub kind: String,
    /// The engine's full id of the object.
    pub id: String,
    /// The object's name, when it has one.
    pub name: Option<String>,
    /// The object's labels.
    pub labels: Vec<Pair>,
    /// Who owns the object by the gateway's own record (image tags only).
    pub owner: Option<String>,
}

/// An object the request refers to besides its target (a mounted volume, a joined network,
/// the image a container runs, a tag it creates, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reference {
    /// Where in the request the reference is, e.g. `HostConfig.Binds[0]`.
    pub field: String,
    /// The kind of object referred to.
    pub kind: String,
    /// The reference as the request gives it.
    pub name: String,
    /// The object, as the engine reports it; none when the engine knows no such object.
    pub object: Option<Target>,
}

/// A request exactly as the engine will act on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The gateway's id for this request, also in the audit record.
    pub id: u64,
    /// The HTTP method, uppercase.
    pub method: String,
    /// The canonical path without the version prefix.
    pub path: String,
    /// The API version from the path prefix, if the client sent one.
    pub api_version: Option<String>,
    /// The endpoint name, e.g. `container.create`.
    pub endpoint: String,
    /// The id or name of the object in the path, if any.
    pub object_id: Option<String>,
    /// The query parameters, in order, decoded.
    pub query: Vec<Pair>,
    /// The request headers, minus credentials unless granted.
    pub headers: Vec<Pair>,
    /// The body as canonical JSON text for endpoints that take JSON.
    pub body: Option<String>,
    /// Who is calling.
    pub caller: Caller,
    /// The object acted on, for requests on an existing object.
    pub target: Option<Target>,
    /// The other objects the request refers to, in body order.
    pub related: Vec<Reference>,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<Pair>,
    /// The body as JSON text when the engine answered JSON within the gateway's bound.
    pub body: Option<String>,
}

/// A change to headers or query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Set the named entry to this value, replacing every existing one.
    Set(Pair),
    /// Remove every entry with this name.
    Remove(String),
}

/// A change to the request, the response or the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patch {
    /// An RFC 6902 JSON Patch document (JSON text) for the body or the audit record.
    pub body: Option<String>,
    /// Header edits, applied in order.
    pub headers: Vec<Edit>,
    /// Query parameter edits, applied in order (requests only).
    pub query: Vec<Edit>,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The HTTP status sent to the client, usually 403.
    pub status: u16,
    /// Why.
    pub message: String,
}

/// A plugin's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it pass unchanged.
    Allow,
    /// Refuse it.
    Deny(Denial),
    /// Let it pass with these changes.
    Patch(Patch),
}

bitflags::bitflags! {
    /// The hooks a plugin implements.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Hooks: u8 {
        /// `on-request` is implemented.
        const REQUEST = 1;
        /// `on-response` is implemented.
        const RESPONSE = 1 << 1;
        /// `on-audit` is implemented.
        const AUDIT = 1 << 2;
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    /// A short name, e.g. `baseline`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The hooks the gateway should call.
    pub hooks: Hooks,
}

/// Severity of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Useful when debugging a policy.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off.
    Warn,
    /// Something failed.
    Error,
}
