//! Running one plugin without a gateway: the `portcullis plugin test` and `plugin inspect`
//! loop for plugin authors. Requests and responses are read from friendly JSON files
//! (every field optional, bodies as JSON values) and verdicts printed as JSON.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Hook, LoadError, Plugin, PluginFailure, Runtime};
use crate::config::{PluginConfig, RuntimeConfig};
use crate::model;

/// A request as a plugin author writes it for a test. Unset fields take neutral defaults;
/// the endpoint, version and object id are derived from `method` and `path` when unset.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RequestFile {
    pub id: u64,
    pub method: Option<String>,
    pub path: Option<String>,
    pub api_version: Option<String>,
    pub endpoint: Option<String>,
    pub object_id: Option<String>,
    pub query: Vec<PairFile>,
    pub headers: Vec<PairFile>,
    /// A JSON value, or a string holding JSON text (the contract's own form).
    pub body: Option<Value>,
    pub caller: CallerFile,
    pub target: Option<TargetFile>,
    /// The other objects the body refers to (the contract's `related`).
    pub related: Vec<ReferenceFile>,
}

/// A name and a value, written `["name", "value"]` or `{"name": .., "value": ..}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PairFile {
    /// `["name", "value"]`
    Tuple(String, String),
    /// `{"name": "...", "value": "..."}`
    Named { name: String, value: String },
}

impl PairFile {
    fn into_pair(self) -> model::Pair {
        match self {
            PairFile::Tuple(name, value) | PairFile::Named { name, value } => {
                model::Pair { name, value }
            }
        }
    }
}

/// A body as written in a test file: JSON text stays as it is, any other value is serialized.
fn body_text(v: Value) -> String {
    match v {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// The caller part of a [`RequestFile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallerFile {
    pub user: String,
    pub groups: Vec<String>,
    /// `none`, `peer-credentials`, `mutual-tls` or `token`.
    pub auth: String,
    pub peer: String,
}

impl Default for CallerFile {
    fn default() -> Self {
        Self {
            user: "test".into(),
            groups: Vec::new(),
            auth: "none".into(),
            peer: "test".into(),
        }
    }
}

/// The target part of a [`RequestFile`].
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TargetFile {
    pub kind: String,
    pub id: String,
    pub name: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub owner: Option<String>,
}

/// One entry of a [`RequestFile`]'s `related`: `object` absent when the engine knows no
/// such object.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceFile {
    pub field: String,
    pub kind: String,
    pub name: String,
    pub object: Option<TargetFile>,
}

impl TargetFile {
    fn into_target(self) -> model::Target {
        model::Target {
            kind: self.kind,
            id: self.id,
            name: self.name,
            labels: self
                .labels
                .into_iter()
                .map(|(name, value)| model::Pair { name, value })
                .collect(),
            owner: self.owner,
        }
    }
}

/// A response as written for a test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseFile {
    pub status: u16,
    pub headers: Vec<PairFile>,
    pub body: Option<Value>,
}

impl Default for ResponseFile {
    fn default() -> Self {
        Self {
            status: 200,
            headers: vec![PairFile::Tuple(
                "content-type".into(),
                "application/json".into(),
            )],
            body: None,
        }
    }
}

fn pairs(v: Vec<PairFile>) -> Vec<model::Pair> {
    v.into_iter().map(PairFile::into_pair).collect()
}

impl RequestFile {
    /// The contract's request.
    pub fn into_request(self) -> Result<model::Request, String> {
        let method = self.method.unwrap_or_else(|| "GET".into()).to_uppercase();
        let path = self.path.unwrap_or_else(|| "/_ping".into());
        let m = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let route = crate::route::classify(&m, &path).ok();
        let auth = match self
            .caller
            .auth
            .to_ascii_lowercase()
            .replace('-', "")
            .as_str()
        {
            "none" => model::AuthMethod::None,
            "peercredentials" => model::AuthMethod::PeerCredentials,
            "mutualtls" => model::AuthMethod::MutualTls,
            "token" => model::AuthMethod::Token,
            other => return Err(format!("caller.auth: unknown method {other:?}")),
        };
        Ok(model::Request {
            id: self.id,
            method,
            path: route.as_ref().map_or(path.clone(), |r| r.path.clone()),
            api_version: self.api_version.or_else(|| {
                route
                    .as_ref()
                    .and_then(|r| r.version)
                    .map(|(a, b)| format!("{a}.{b}"))
            }),
            endpoint: self
                .endpoint
                .or_else(|| route.as_ref().map(|r| r.endpoint.name.to_owned()))
                .ok_or_else(|| {
                    format!("endpoint: not set, and {path:?} is not a known endpoint")
                })?,
            object_id: self.object_id.or_else(|| route.and_then(|r| r.object_id)),
            query: pairs(self.query),
            headers: pairs(self.headers),
            body: self.body.map(body_text),
            caller: model::Caller {
                user: self.caller.user,
                groups: self.caller.groups,
                auth,
                peer: self.caller.peer,
            },
            target: self.target.map(TargetFile::into_target),
            related: self
                .related
                .into_iter()
                .map(|r| model::Reference {
                    field: r.field,
                    kind: r.kind,
                    name: r.name,
                    object: r.object.map(TargetFile::into_target),
                })
                .collect(),
        })
    }
}

impl ResponseFile {
    /// The contract's response.
    pub fn into_response(self) -> model::Response {
        model::Response {
            status: self.status,
            headers: pairs(self.headers),
            body: self.body.map(body_text),
        }
    }
}

/// A verdict as JSON: `{"verdict": "allow"}`, `{"verdict": "deny", "status": 403,
/// "message": ...}` or `{"verdict": "patch", "body": [...], "headers": [...], "query": [...]}`.
pub fn verdict_json(v: &model::Verdict) -> Value {
    let edits = |edits: &[model::Edit]| -> Vec<Value> {
        edits
            .iter()
            .map(|e| match e {
                model::Edit::Set(p) => json!({"set": [p.name, p.value]}),
                model::Edit::Remove(n) => json!({"remove": n}),
            })
            .collect()
    };
    match v {
        model::Verdict::Allow => json!({"verdict": "allow"}),
        model::Verdict::Deny(d) => {
            json!({"verdict": "deny", "status": d.status, "message": d.message})
        }
        model::Verdict::Patch(p) => json!({
            "verdict": "patch",
            "body": p.body.as_deref().map(|b| serde_json::from_str::<Value>(b).unwrap_or(Value::String(b.to_owned()))),
            "headers": edits(&p.headers),
            "query": edits(&p.query),
        }),
    }
}

/// Loads one component (or Rego policy, or OPA wasm policy) for offline use, with `config` as its `init` configuration (checked
/// when `check_config`), reusing instances as `reuse` says.
pub async fn load_one(
    path: &Path,
    config: Value,
    check_config: bool,
    reuse: Option<crate::config::Reuse>,
) -> Result<Plugin, LoadError> {
    let table: toml::Table = serde_json::from_value(config).map_err(|e| LoadError::Config {
        name: path.display().to_string(),
        reason: format!("config must be a JSON object: {e}"),
    })?;
    let cfg: PluginConfig = PluginConfig {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into()),
        path: path.to_owned(),
        config: table,
        reuse,
        ..serde_json::from_value(json!({"name": "", "path": ""}))
            .map_err(|e| LoadError::Engine(e.to_string()))?
    };
    let runtime = Arc::new(Runtime::new(
        &RuntimeConfig::default(),
        cfg.memory_limit.as_u64(),
    )?);
    // A `.rego` file (or a directory of them) is a Rego policy, so that `plugin run` and
    // `plugin bench` work for policies too.
    let rego = path.is_dir() || path.extension().is_some_and(|e| e == "rego");
    let plugin = if rego {
        runtime.load_rego(&cfg, path)?
    } else if is_opa_policy(path) {
        // A core module, not a component (the `policy.wasm` of an `opa build -t wasm`
        // bundle), or the gzipped bundle itself.
        runtime.load_opa(&cfg, path).await?
    } else {
        runtime.load(&cfg, path).await?
    };
    if check_config {
        plugin.check_config().await?;
    }
    Ok(plugin)
}

/// Whether `path` starts like a core WebAssembly module (magic, then version 1; a component
/// has another version and layer in those bytes) or a gzip file (an OPA bundle).
fn is_opa_policy(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"\0asm\x01\0\0\0" || head.starts_with(&[0x1f, 0x8b]))
}

/// Runs the request hook, or the response hook when a response is given.
pub async fn run(
    plugin: &Plugin,
    request: &model::Request,
    response: Option<&model::Response>,
) -> Result<model::Verdict, PluginFailure> {
    match response {
        Some(resp) => {
            plugin
                .invoke(request.id, Hook::Response(request, resp))
                .await
        }
        None => plugin.invoke(request.id, Hook::Request(request)).await,
    }
}

/// The description `plugin inspect` prints.
pub fn describe(plugin: &Plugin) -> Value {
    let info = plugin.info();
    let mut hooks = Vec::new();
    for (flag, name) in [
        (model::Hooks::REQUEST, "request"),
        (model::Hooks::RESPONSE, "response"),
        (model::Hooks::AUDIT, "audit"),
    ] {
        if info.hooks.contains(flag) {
            hooks.push(name);
        }
    }
    json!({
        "name": info.name,
        "version": info.version,
        "contract": format!("portcullis:plugin@{}", super::CONTRACT_VERSION),
        "hooks": hooks,
    })
}

/// Latency figures of `plugin bench`, in microseconds.
pub fn percentiles(mut samples: Vec<std::time::Duration>) -> Value {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    json!({"n": samples.len(), "p50_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0)})
}

/// Measures instantiation alone (and, for components, the teardown that returns the pool
/// slot, apart) and a whole call (instantiate, `init`, hook; or only the hook when the
/// plugin reuses instances), `n` times each after a warm-up, sequentially, back to back.
/// For a component with fresh instances, also what a request waits for after the
/// thread was idle (as at a low request rate), with and without `runtime.prepared_instances`:
/// `call_after_pause` instantiates on the call's path, `prepared_call` takes an instance the
/// preparing thread made, runs the hook and hands it back for teardown.
pub async fn bench(
    plugin: &std::sync::Arc<Plugin>,
    request: &model::Request,
    n: usize,
) -> Result<Value, PluginFailure> {
    for _ in 0..n.min(100) {
        plugin.invoke(request.id, Hook::Request(request)).await?;
    }
    let (mut inst, mut teardown) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (made, gone) = plugin.instantiate_only().await?;
        inst.push(made);
        teardown.push(gone);
    }
    let call = timed_calls(plugin, request, n, None, false).await?;
    let mut figures = json!({"instantiate": percentiles(inst), "call": percentiles(call)});
    if !plugin.is_component() {
        return Ok(figures);
    }
    figures["teardown"] = percentiles(teardown);
    if !plugin.prepares() {
        return Ok(figures);
    }
    let pause = Some(std::time::Duration::from_micros(50));
    let paused = timed_calls(plugin, request, n, pause, false).await?;
    figures["call_after_pause"] = percentiles(paused);
    plugin.prepare(1);
    if plugin.prepared_ready().is_some() {
        let prepared = timed_calls(plugin, request, n, pause, true).await?;
        figures["prepared_call"] = percentiles(prepared);
    }
    Ok(figures)
}

/// `n` request-hook calls, each timed: back to back, or each after the thread idled for
/// `pause` and (with `prepared`) until a prepared instance is ready.
async fn timed_calls(
    plugin: &Plugin,
    request: &model::Request,
    n: usize,
    pause: Option<std::time::Duration>,
    prepared: bool,
) -> Result<Vec<std::time::Duration>, PluginFailure> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
            // Bounded: a plugin whose preparation fails is measured on fresh instances.
            for _ in 0..10_000 {
                if !prepared || plugin.prepared_ready() != Some(false) {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
        }
        let t = std::time::Instant::now();
        plugin.invoke(request.id, Hook::Request(request)).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}
