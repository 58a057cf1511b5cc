//! The audit record: what the trail keeps of one request, and of each plugin's answer to it
//! ([`Note`]). The pipeline builds a record once, from its request context, when the
//! response head is ready.
//!
//! What never enters a record: request and response headers (so `Authorization`,
//! `X-Registry-Auth` and `X-Registry-Config` cannot), bodies other than the
//! security-relevant fields of container, exec and service creation, and the values of
//! credential headers a plugin sets.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model;

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
    /// Which of a request's two records this is, for requests the engine may act on (all
    /// but reads): the `decision`, written before the request is forwarded, or the
    /// `outcome`, written at the response head. Absent: the request's only record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// On an outcome record: the sequence of its decision record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<u64>,
}

/// The two records of a request the engine may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// What the policy decided and what is forwarded; on disk before the engine sees it.
    Decision,
    /// What followed: status, times, bytes, the response plugins' answers.
    Outcome,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// One view of a request recorded in two: `self` (its outcome) completed with its
    /// `decision` record's plugins, target and details. The outcome keeps its own sequence
    /// and names the decision's in `decided`.
    pub fn joined(mut self, decision: Record) -> Record {
        let mut plugins = decision.plugins;
        plugins.append(&mut self.plugins);
        self.plugins = plugins;
        self.target = self.target.or(decision.target);
        self.details = self.details.or(decision.details);
        self
    }

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

/// One plugin's answer to one request, after its mode and failure policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The plugin's configured name.
    pub plugin: String,
    /// `request`, `response` or `audit` (the hook that shaped the record).
    pub hook: String,
    /// What it answered.
    pub verdict: Outcome,
    /// Its message (denials) or what went wrong (failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The patch it asked for, as data (credential header values removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
}

/// What a plugin's answer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Denied, enforced.
    Deny,
    /// Patched, applied.
    Patch,
    /// Would have denied: the plugin runs in dry-run mode.
    WouldDeny,
    /// Would have patched: the plugin runs in dry-run mode.
    WouldPatch,
    /// Failed; the request was denied (fail-closed).
    Failed,
    /// Failed; the request went on (`fail_open`, or dry-run mode).
    FailedOpen,
    /// A denial from the hook that shapes the record: the record is always written.
    Ignored,
}

impl Outcome {
    /// The name the record uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Patch => "patch",
            Outcome::WouldDeny => "would-deny",
            Outcome::WouldPatch => "would-patch",
            Outcome::Failed => "failed",
            Outcome::FailedOpen => "failed-open",
            Outcome::Ignored => "ignored",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The target object as the record shows it: kind, id, name, labels and owner.
pub fn target_json(t: &model::Target) -> Value {
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

/// For container create, exec create and service create: the security-relevant part of the
/// body (JSON bytes) the engine acted on. Other endpoints' bodies are not parsed.
pub fn details(endpoint: &str, body: &[u8]) -> Option<Value> {
    let pick: fn(&Value) -> Value = match endpoint {
        "container.create" => container_details,
        "container.exec" => exec_details,
        "service.create" => service_details,
        _ => return None,
    };
    serde_json::from_slice::<Value>(body).ok().map(|v| pick(&v))
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
