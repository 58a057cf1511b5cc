//! The audit record and how one is built while a request travels the pipeline: a
//! [`Draft`] is started when the request arrives, filled in as the pipeline learns things
//! (route, final body, plugin answers, error) and finished when the response head is ready.
//!
//! What never enters a record: request and response headers (so `Authorization`,
//! `X-Registry-Auth` and `X-Registry-Config` cannot), bodies other than the
//! security-relevant fields of container, exec and service creation, and the values of
//! credential headers a plugin sets.

use std::time::Instant;

use bytes::Bytes;
use http::{header, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DockerError;
use crate::identity::{Caller, IdentityError, Peer};
use crate::model;
use crate::pipeline::{Body, ChainError, Note, PipelineError, Trace};
use crate::route::{Route, RouteError};

/// The outcome of a request, as the policy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded to the engine (whatever the engine then answered).
    Allow,
    /// Refused by policy: a plugin denied, or the endpoint is unknown.
    Deny,
    /// Not forwarded because something failed: a malformed or oversized request, a failing
    /// plugin (fail-closed), the engine unreachable, the audit store unable to write.
    Error,
}

impl Decision {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "error" => Ok(Decision::Error),
            other => Err(format!("unknown decision {other:?} (allow, deny or error)")),
        }
    }
}

/// One request, as the audit trail keeps it (serialized as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the store (assigned by the writer; 0 before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// When the record was written (RFC 3339, UTC, ms): the response head was ready.
    /// Never decreases along the sequence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
    /// The gateway's request id (also in its logs; restarts from 1 with the gateway).
    pub request_id: u64,
    /// Who called: user, groups, how authenticated, transport peer.
    pub caller: Value,
    /// HTTP method.
    pub method: String,
    /// Canonical path (without the version prefix); the raw path when it could not be
    /// classified (truncated to 1 KiB).
    pub path: String,
    /// API version from the path, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Endpoint name (`container.create`, ...); `unknown` when the request was refused
    /// before it could be classified.
    pub endpoint: String,
    /// The object acted on: the id or name in the path, or the `name` of a creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The target object (kind, id, name, labels) when the pipeline looked it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Value>,
    /// allow, deny or error.
    pub decision: Decision,
    /// What each plugin answered (deny messages, patches applied, failures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Note>,
    /// The error message sent to the client, for denials and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// Time from the request's arrival to the response head, in microseconds.
    pub duration_us: u64,
    /// Of `duration_us`, the time the engine took to answer the forwarded request (to its
    /// response head). The rest is the gateway's own: parsing, the plugin chain, lookups of
    /// the objects a request names, and reading a response that plugins filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_us: Option<u64>,
    /// Request body bytes (read, or announced by Content-Length for streamed uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Response body bytes when known at the response head (not for streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// For container create, exec create and service create: the security-relevant part
    /// of the body the engine acted on (image, command, privileged, mounts, capabilities,
    /// network mode, labels, env, user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// The caller's user name.
    pub fn user(&self) -> &str {
        self.caller
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// The user of records of requests refused because nothing named their caller.
pub const UNIDENTIFIED: &str = "unknown";

/// Longest raw path kept for requests that could not be classified.
const MAX_RAW_PATH: usize = 1024;

/// A record under construction. Inert (and allocation-free) when auditing is off.
pub struct Draft {
    partial: Option<Box<Partial>>,
    trace: Trace,
}

struct Partial {
    record: Record,
    started: Instant,
    view: Option<model::Request>,
    /// The last body given to [`Draft::request`]: `details` are taken from it once, when
    /// the record is finished (a create's body was parsed twice per request before).
    body: Option<Bytes>,
}

impl Draft {
    /// A draft that records nothing.
    pub fn off() -> Self {
        Self {
            partial: None,
            trace: Trace::default(),
        }
    }

    /// Starts the record of a request that just arrived.
    pub fn start<B>(
        on: bool,
        id: u64,
        req: &Request<B>,
        caller: &Caller,
        started: Instant,
    ) -> Self {
        if !on {
            return Self::off();
        }
        let mut path = req.uri().path().to_owned();
        if path.len() > MAX_RAW_PATH {
            let mut cut = MAX_RAW_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        let bytes_in = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let record = Record {
            seq: 0,
            time: String::new(),
            request_id: id,
            caller: serde_json::to_value(caller).unwrap_or(Value::Null),
            method: req.method().as_str().to_owned(),
            path,
            api_version: None,
            endpoint: "unknown".into(),
            object: None,
            target: None,
            decision: Decision::Allow,
            plugins: Vec::new(),
            error: None,
            status: 0,
            duration_us: 0,
            engine_us: None,
            bytes_in,
            bytes_out: None,
            details: None,
        };
        Self {
            partial: Some(Box::new(Partial {
                record,
                started,
                view: None,
                body: None,
            })),
            trace: Trace::enabled(),
        }
    }

    /// The record of a request refused before it had a caller (the identity layer's 401):
    /// decision deny, user `unknown`, how identification failed, the transport peer, and
    /// the endpoint it asked for when the path can be classified.
    pub fn unidentified<B>(
        id: u64,
        req: &Request<B>,
        peer: &Peer,
        why: &IdentityError,
        sent: &DockerError,
        started: Instant,
    ) -> Self {
        let nobody = Caller {
            user: UNIDENTIFIED.into(),
            groups: Vec::new(),
            auth: crate::identity::AuthMethod::None,
            peer: peer.clone(),
        };
        let mut draft = Self::start(true, id, req, &nobody, started);
        if let Some(p) = &mut draft.partial {
            if let Some(c) = p.record.caller.as_object_mut() {
                c.insert("refused".into(), Value::String(why.to_string()));
            }
            p.record.decision = Decision::Deny;
            p.record.error = Some(sent.message.clone());
        }
        if let Ok(route) = crate::route::classify(req.method(), req.uri().path()) {
            draft.routed(&route);
        }
        draft
    }

    /// Whether this draft records anything.
    pub fn is_on(&self) -> bool {
        self.partial.is_some()
    }

    /// Where plugins' answers are collected.
    pub fn trace(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// The request was classified.
    pub fn routed(&mut self, route: &Route) {
        if let Some(p) = &mut self.partial {
            let r = &mut p.record;
            r.path = route.path.clone();
            r.api_version = route.version.map(|(a, b)| format!("{a}.{b}"));
            r.endpoint = route.endpoint.name.to_owned();
            r.object = route.object_id.clone();
        }
    }

    /// The request's query and body: called as read (so that refusals show what was asked)
    /// and again as forwarded (after mutating plugins: what the engine acts on).
    pub fn request(&mut self, query: &[(String, String)], body: Option<&Bytes>) {
        let Some(p) = &mut self.partial else { return };
        let r = &mut p.record;
        if let Some(b) = body {
            r.bytes_in = Some(b.len() as u64);
        }
        if r.object.is_none() {
            r.object = query
                .iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.clone());
        }
        p.body = body.cloned();
    }

    /// Keeps the plugin view of the request for the audit hooks.
    pub fn keep_view(&mut self, view: &model::Request) {
        if let Some(p) = &mut self.partial {
            p.record.target = view.target.as_ref().map(target_json);
            p.view = Some(view.clone());
        }
    }

    /// The engine answered the forwarded request's head after `took`.
    pub fn engine_answered(&mut self, took: std::time::Duration) {
        if let Some(p) = &mut self.partial {
            p.record.engine_us = Some(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// The request was refused or failed with `err`, answered as `sent`.
    pub fn failed(&mut self, err: &PipelineError, sent: &DockerError) {
        let Some(p) = &mut self.partial else { return };
        p.record.decision = match err {
            PipelineError::Chain(ChainError::Denied { .. })
            | PipelineError::Route(RouteError::UnknownEndpoint { .. }) => Decision::Deny,
            _ => Decision::Error,
        };
        p.record.error = Some(sent.message.clone());
    }

    /// Completes the record with the response head. Returns the record and the plugin
    /// view (for audit hooks), or nothing when auditing is off.
    pub(crate) fn finish(self, resp: &Response<Body>) -> Option<(Record, Option<model::Request>)> {
        use http_body::Body as _;
        let mut p = self.partial?;
        let r = &mut p.record;
        r.status = resp.status().as_u16();
        r.duration_us = u64::try_from(p.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        r.bytes_out = resp.body().size_hint().exact().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        r.plugins = self.trace.notes;
        let json = || {
            p.body
                .as_ref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        };
        r.details = match r.endpoint.as_str() {
            "container.create" => json().map(|v| container_details(&v)),
            "container.exec" => json().map(|v| exec_details(&v)),
            "service.create" => json().map(|v| service_details(&v)),
            _ => None,
        };
        Some((p.record, p.view))
    }
}

fn target_json(t: &model::Target) -> Value {
    let labels: Map<String, Value> = t
        .labels
        .iter()
        .map(|p| (p.name.clone(), Value::String(p.value.clone())))
        .collect();
    let mut v = serde_json::json!({"kind": t.kind, "id": t.id, "name": t.name, "labels": labels});
    if let Some(owner) = &t.owner {
        v["owner"] = Value::String(owner.clone());
    }
    v
}

/// A field looked up the way Go's `encoding/json` matches names: case-insensitively
/// (an exact match wins).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// Copies the named fields that are present and say something (not null, not an empty
/// string, list or object), under their canonical names: records stay small.
fn pick(from: &Value, names: &[&str], into: &mut Map<String, Value>) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    for name in names {
        if let Some(v) = field(from, name).filter(|v| !empty(v)) {
            into.insert((*name).to_owned(), v.clone());
        }
    }
}

fn container_details(body: &Value) -> Value {
    let mut out = Map::new();
    pick(
        body,
        &[
            "Image",
            "Cmd",
            "Entrypoint",
            "User",
            "Env",
            "Labels",
            "WorkingDir",
            "Volumes",
        ],
        &mut out,
    );
    if let Some(hc) = field(body, "HostConfig") {
        let mut h = Map::new();
        pick(
            hc,
            &[
                "Privileged",
                "Binds",
                "Mounts",
                "CapAdd",
                "CapDrop",
                "NetworkMode",
                "PidMode",
                "IpcMode",
                "UTSMode",
                "UsernsMode",
                "CgroupnsMode",
                "SecurityOpt",
                "Devices",
                "DeviceCgroupRules",
                "ReadonlyRootfs",
                "PortBindings",
                "PublishAllPorts",
                "VolumesFrom",
                "Sysctls",
            ],
            &mut h,
        );
        if !h.is_empty() {
            out.insert("HostConfig".into(), Value::Object(h));
        }
    }
    Value::Object(out)
}

fn exec_details(body: &Value) -> Value {
    let mut out = Map::new();
    pick(
        body,
        &[
            "Cmd",
            "User",
            "Privileged",
            "Env",
            "WorkingDir",
            "Tty",
            "AttachStdin",
        ],
        &mut out,
    );
    Value::Object(out)
}

fn service_details(body: &Value) -> Value {
    let mut out = Map::new();
    pick(body, &["Name", "Labels", "Mode", "Networks"], &mut out);
    if let Some(spec) = field(body, "TaskTemplate").and_then(|t| field(t, "ContainerSpec")) {
        let mut c = Map::new();
        pick(
            spec,
            &[
                "Image",
                "Command",
                "Args",
                "User",
                "Env",
                "Labels",
                "Mounts",
                "Privileges",
                "CapabilityAdd",
                "CapabilityDrop",
                "Sysctls",
                "ReadOnly",
            ],
            &mut c,
        );
        out.insert("ContainerSpec".into(), Value::Object(c));
    }
    if let Some(nets) = field(body, "TaskTemplate").and_then(|t| field(t, "Networks")) {
        out.insert("TaskNetworks".into(), nets.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_details_match_go_field_names_case_insensitively() {
        let body = serde_json::json!({
            "image": "busybox", "Cmd": ["sh"], "Env": ["A=1"],
            "hostconfig": {"privileged": true, "Binds": ["/:/host"], "CapAdd": ["SYS_ADMIN"], "Memory": 5},
            "Tty": true
        });
        let d = container_details(&body);
        assert_eq!(d["Image"], "busybox");
        assert_eq!(d["HostConfig"]["Privileged"], true);
        assert_eq!(d["HostConfig"]["Binds"][0], "/:/host");
        assert_eq!(d["HostConfig"]["CapAdd"][0], "SYS_ADMIN");
        assert!(d["HostConfig"].get("Memory").is_none());
        assert!(d.get("Tty").is_none());
    }

    #[test]
    fn service_details_keep_the_container_spec() {
        let body = serde_json::json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {
            "Image": "busybox", "Mounts": [{"Source": "/", "Target": "/h"}]}}});
        let d = service_details(&body);
        assert_eq!(d["Name"], "web");
        assert_eq!(d["ContainerSpec"]["Mounts"][0]["Source"], "/");
    }

    #[test]
    fn decisions_parse() {
        assert_eq!("deny".parse::<Decision>(), Ok(Decision::Deny));
        assert!("nope".parse::<Decision>().is_err());
    }
}
