//! Rego policies (`kind = "rego"`), evaluated natively with `regorus`.
//!
//! The input document is the one opa-docker-authz builds (`Method`, `Path`, `PathPlain`,
//! `PathArr`, `Query`, `Headers`, `Body`, `User`, `AuthMethod`, `BindMounts`), so its users'
//! policies run unchanged, plus portcullis's richer fields (`Endpoint`, `ObjectId`,
//! `ApiVersion`, `Caller`, `Target`, `Related`). The values are the canonical request — the path as
//! dockerd's router reads it, the body with Go's field names — so a policy cannot be fooled
//! by spelling. The decision is the configured query (default `data.docker.authz.allow`):
//! `true` allows; `false` or undefined denies; an object `{"allow": bool, "message": str}`
//! lets the policy say why. Policies compiled by `opa build -t wasm` ([`super::opa`]) get the
//! same input and are read the same way.
//!
//! Unlike wasm plugins, Rego runs in the gateway's process: it has no memory cap, only the
//! plugin's timeout (regorus's execution timer). The language itself has no I/O except
//! `http.send`, which is not compiled in.
//!
//! A policy is compiled to regorus's bytecode VM (RVM) when it can be: on the gateway's
//! path that is several times faster than the tree-walking interpreter (BENCHMARKS.md). The few constructs the VM does not compile (`with`,
//! some partial object rules) keep the policy in the interpreter, with the same input,
//! decision and deadline; start-up logs which one runs.
//! The VM is checked against the interpreter on the OPA conformance suite upstream, and here
//! by `the_bytecode_vm_decides_like_the_interpreter` on the shipped policies.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde_json::{json, Map, Value as Json};
use tracing::info;

use crate::config::PluginConfig;
use crate::model;

/// The message opa-docker-authz gives when a policy says no without saying why.
const DEFAULT_MESSAGE: &str = "request rejected by administrative policy";

/// Steps (VM instructions, interpreter statements) between two looks at the clock. Every
/// step was a tenth of the VM's time in `clock_gettime`; a few dozen steps overshoot the
/// deadline by microseconds.
const CLOCK_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::new(32).unwrap();

/// A loaded policy: its modules parsed and its data added. Every evaluation starts from it
/// afresh (a reset VM, or a clone of the engine), so that nothing from one request's
/// evaluation is seen by the next.
pub struct Policy {
    engine: Engine,
    query: String,
    /// The policy compiled for the bytecode VM; `None`: it runs in the interpreter.
    program: Option<Arc<Program>>,
    /// `data` for the VM (the interpreter's engine holds its own copy).
    data: Value,
    timer: ExecutionTimerConfig,
    /// VMs loaded with `program`, kept between calls: making one costs as much as running
    /// the shipped policy. Each run starts by resetting the VM's state (registers, rule
    /// caches, timer) and sets its own input, so no decision sees another request's data;
    /// an idle VM keeps only its last result and whatever its registers still hold until
    /// its next run. A VM whose run failed is dropped.
    idle: std::sync::Mutex<Vec<RegoVM>>,
}

/// Idle VMs kept per policy (one per request thread covers the usual case).
const IDLE_VMS: usize = 4;

/// Loads every `.rego` file at `path` (a file, or a directory searched recursively), with
/// the plugin's `config` table as `data.config`.
pub fn load(cfg: &PluginConfig, path: &Path) -> Result<Policy, String> {
    let files = rego_files(path)?;
    if files.is_empty() {
        return Err(format!("no .rego files in {}", path.display()));
    }
    let timer = ExecutionTimerConfig {
        limit: cfg.timeout,
        check_interval: CLOCK_CHECK_INTERVAL,
    };
    let mut engine = Engine::new();
    engine.set_execution_timer_config(timer);
    for file in files.iter().filter(|f| !is_test_file(f)) {
        add_file(&mut engine, file)?;
    }
    let config =
        serde_json::to_string(&json!({ "config": cfg.config })).map_err(|e| e.to_string())?;
    engine
        .add_data_json(&config)
        .map_err(|e| format!("config: {e}"))?;
    let data = Value::from_json_str(&config).map_err(|e| format!("config: {e}"))?;
    let query = cfg
        .query
        .clone()
        .unwrap_or_else(|| "data.docker.authz.allow".to_owned());
    // Evaluate once on an empty input, so a query naming no rule or a policy that fails to
    // compile stops start-up instead of denying every request. This also prepares the
    // engine (analysis, scheduling, loop hoisting): clones of a prepared engine share that
    // work, where clones of an unprepared one would each redo it on every request.
    engine
        .eval_rule(query.clone())
        .map_err(|e| format!("{query}: {e}"))?;
    let program = match compile(&engine, &query) {
        Ok(program) => {
            info!(plugin = %cfg.name, "Rego policy compiled for the bytecode VM");
            Some(program)
        }
        Err(reason) => {
            info!(plugin = %cfg.name, %reason, "Rego policy runs in the interpreter (the bytecode VM cannot compile it)");
            None
        }
    };
    Ok(Policy {
        engine,
        query,
        program,
        data,
        timer,
        idle: Default::default(),
    })
}

/// Compiles the policy's decision rule to RVM bytecode.
fn compile(engine: &Engine, query: &str) -> Result<Arc<Program>, String> {
    let mut engine = engine.clone();
    let policy = engine
        .compile_with_entrypoint(&query.into())
        .map_err(|e| e.to_string())?;
    Compiler::compile_from_policy(&policy, &[query]).map_err(|e| e.to_string())
}

/// Adds one module, in Rego v1 syntax or, failing that, v0 (the syntax of most existing
/// opa-docker-authz policies: rules without `if`).
fn add_file(engine: &mut Engine, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file.display().to_string();
    let mut v1 = engine.clone();
    match v1.add_policy(name.clone(), text.clone()) {
        Ok(_) => {
            *engine = v1;
            Ok(())
        }
        Err(v1_error) => {
            engine.set_rego_v0(true);
            let result = engine.add_policy(name, text);
            engine.set_rego_v0(false);
            result.map(|_| ()).map_err(|_| format!("{v1_error}"))
        }
    }
}

fn rego_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let p = entry.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rego") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `opa test` convention: tests live in `*_test.rego` files.
fn is_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_test.rego"))
}

impl Policy {
    /// Judges a request.
    pub fn evaluate(&self, req: &model::Request) -> Result<model::Verdict, String> {
        let input = input::<Value>(req);
        let decision = match &self.program {
            Some(program) => self.run_vm(program, input)?,
            None => self.interpret(input)?,
        };
        Ok(verdict(&decision))
    }

    fn run_vm(&self, program: &Arc<Program>, input: Value) -> Result<Value, String> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut vm = match idle {
            Some(vm) => vm,
            None => {
                let mut vm = RegoVM::new();
                vm.load_program(program.clone());
                // The VM's default instruction budget (25,000) would deny a legitimate
                // policy that loops over a large input; the plugin's timeout bounds it
                // instead, as it bounds the interpreter.
                vm.set_max_instructions(usize::MAX);
                vm.set_execution_timer_config(Some(self.timer));
                vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
                vm
            }
        };
        vm.set_input(input);
        // A VM whose run failed (time limit, builtin error) is dropped, not reused.
        let decision = vm.execute().map_err(|e| e.to_string())?;
        vm.set_input(Value::Null);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_VMS {
                idle.push(vm);
            }
        }
        Ok(decision)
    }

    fn interpret(&self, input: Value) -> Result<Value, String> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine
            .eval_rule(self.query.clone())
            .map_err(|e| e.to_string())
    }
}

/// The verdict a decision means: `true` allows; `false` or undefined denies; an object
/// `{"allow": bool, "message": str}` says why. OPA wasm policies ([`super::opa`]) are read
/// the same way.
pub(super) fn verdict(decision: &Value) -> model::Verdict {
    let deny = |message: String| {
        model::Verdict::Deny(model::Denial {
            status: 403,
            message,
        })
    };
    if *decision == Value::from(true) {
        return model::Verdict::Allow;
    }
    if let Ok(fields) = decision.as_object() {
        let allow = fields.get(&Value::from("allow")) == Some(&Value::from(true));
        if allow {
            return model::Verdict::Allow;
        }
        let message = fields
            .get(&Value::from("message"))
            .and_then(|m| m.as_string().ok().map(|s| s.to_string()))
            .unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
        return deny(message);
    }
    deny(DEFAULT_MESSAGE.to_owned())
}

/// The input document: opa-docker-authz's fields, then ours. OPA wasm policies
/// ([`super::opa`]) get the same document as JSON; the native evaluator gets it built as
/// regorus's own [`Value`] ([`InputDoc`]), without a conversion pass.
pub fn input<D: InputDoc>(req: &model::Request) -> D {
    let prefix = req
        .api_version
        .as_ref()
        .map(|v| format!("/v{v}"))
        .unwrap_or_default();
    let path_plain = format!("{prefix}{}", req.path);
    let path = if req.query.is_empty() {
        path_plain.clone()
    } else {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for p in &req.query {
            q.append_pair(&p.name, &p.value);
        }
        format!("{path_plain}?{}", q.finish())
    };
    let mut query: BTreeMap<&str, Vec<D>> = BTreeMap::new();
    for p in &req.query {
        query.entry(&p.name).or_default().push(D::str(&p.value));
    }
    let headers: Vec<(String, D)> = req
        .headers
        .iter()
        .map(|h| (go_header_name(&h.name), D::str(&h.value)))
        .collect();
    let body = req.body.as_deref().map_or_else(D::null, D::parse);
    let auth = match req.caller.auth {
        model::AuthMethod::None => "none",
        model::AuthMethod::PeerCredentials => "peer-credentials",
        model::AuthMethod::MutualTls => "mutual-tls",
        model::AuthMethod::Token => "token",
    };
    let opt = |s: &Option<String>| s.as_deref().map_or_else(D::null, D::str);
    let object = |t: &model::Target| {
        D::object(vec![
            ("Kind".into(), D::str(&t.kind)),
            ("Id".into(), D::str(&t.id)),
            ("Name".into(), opt(&t.name)),
            (
                "Labels".into(),
                D::object(
                    t.labels
                        .iter()
                        .map(|l| (l.name.clone(), D::str(&l.value)))
                        .collect(),
                ),
            ),
            ("Owner".into(), opt(&t.owner)),
        ])
    };
    let related = req
        .related
        .iter()
        .map(|r| {
            D::object(vec![
                ("Field".into(), D::str(&r.field)),
                ("Kind".into(), D::str(&r.kind)),
                ("Name".into(), D::str(&r.name)),
                (
                    "Object".into(),
                    r.object.as_ref().map_or_else(D::null, object),
                ),
            ])
        })
        .collect();
    let bind_mounts = bind_mounts(&req.endpoint, req.body.as_deref())
        .into_iter()
        .map(|(source, read_only)| {
            D::object(vec![
                ("Source".into(), D::str(&source)),
                ("Resolved".into(), D::str(&source)),
                ("ReadOnly".into(), D::bool(read_only)),
            ])
        })
        .collect();
    let groups = req.caller.groups.iter().map(|g| D::str(g)).collect();
    D::object(vec![
        ("Method".into(), D::str(&req.method)),
        ("Path".into(), D::str(&path)),
        (
            "PathArr".into(),
            D::list(path_plain.split('/').map(D::str).collect()),
        ),
        ("PathPlain".into(), D::str(&path_plain)),
        (
            "Query".into(),
            D::object(
                query
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), D::list(v)))
                    .collect(),
            ),
        ),
        ("Headers".into(), D::object(headers)),
        ("User".into(), D::str(&req.caller.user)),
        ("AuthMethod".into(), D::str(auth)),
        ("BindMounts".into(), D::list(bind_mounts)),
        ("Endpoint".into(), D::str(&req.endpoint)),
        ("ObjectId".into(), opt(&req.object_id)),
        ("ApiVersion".into(), opt(&req.api_version)),
        (
            "Caller".into(),
            D::object(vec![
                ("User".into(), D::str(&req.caller.user)),
                ("Groups".into(), D::list(groups)),
                ("Auth".into(), D::str(auth)),
                ("Peer".into(), D::str(&req.caller.peer)),
            ]),
        ),
        (
            "Target".into(),
            req.target.as_ref().map_or_else(D::null, object),
        ),
        ("Related".into(), D::list(related)),
        ("Body".into(), body),
    ])
}

/// A document type the input is built as: JSON for OPA wasm policies, regorus's [`Value`]
/// for the native evaluator, built directly: a conversion from JSON costs as much again as
/// building the document.
pub trait InputDoc: Sized {
    fn null() -> Self;
    fn bool(b: bool) -> Self;
    fn str(s: &str) -> Self;
    fn list(items: Vec<Self>) -> Self;
    /// An object; a repeated key keeps its last value.
    fn object(fields: Vec<(String, Self)>) -> Self;
    /// A JSON text (the canonical body); null if it is not JSON.
    fn parse(text: &str) -> Self;
}

impl InputDoc for Json {
    fn null() -> Self {
        Json::Null
    }
    fn bool(b: bool) -> Self {
        Json::Bool(b)
    }
    fn str(s: &str) -> Self {
        Json::String(s.to_owned())
    }
    fn list(items: Vec<Self>) -> Self {
        Json::Array(items)
    }
    fn object(fields: Vec<(String, Self)>) -> Self {
        Json::Object(fields.into_iter().collect::<Map<_, _>>())
    }
    fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or(Json::Null)
    }
}

impl InputDoc for Value {
    fn null() -> Self {
        Value::Null
    }
    fn bool(b: bool) -> Self {
        Value::from(b)
    }
    fn str(s: &str) -> Self {
        Value::from(s)
    }
    fn list(items: Vec<Self>) -> Self {
        Value::from(items)
    }
    fn object(fields: Vec<(String, Self)>) -> Self {
        Value::from(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect::<BTreeMap<_, _>>(),
        )
    }
    fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }
}

/// `content-type` → `Content-Type`, as Go's `http.Header` spells names.
fn go_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// The host paths a container create binds (`Binds`, `Mounts` of type bind), as
/// opa-docker-authz lists them: `(source, read-only)`. The gateway has already resolved
/// symlinks in them, so `Source` and `Resolved` are the same path.
fn bind_mounts(endpoint: &str, body: Option<&str>) -> Vec<(String, bool)> {
    /// Only the two fields read here are built; the rest of the body is skipped (it was
    /// parsed once already, into `Body`).
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct Create {
        host_config: Option<HostBinds>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct HostBinds {
        binds: Json,
        mounts: Json,
    }
    let create: Create = match (endpoint, body) {
        // A derived view refuses a duplicated field, which the canonical body never has;
        // through `Value` the last duplicate wins, as in Go.
        ("container.create", Some(text)) => serde_json::from_str(text)
            .or_else(|_| serde_json::from_str::<Json>(text).and_then(serde_json::from_value))
            .unwrap_or_default(),
        _ => return Vec::new(),
    };
    let host = create.host_config.unwrap_or_default();
    let mut out = Vec::new();
    for bind in host
        .binds
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
    {
        let mut parts = bind.split(':');
        let source = parts.next().unwrap_or("");
        if !source.starts_with('/') {
            continue;
        }
        let _target = parts.next();
        let read_only = parts
            .next()
            .is_some_and(|o| o.split(',').any(|x| x == "ro"));
        out.push((source.to_owned(), read_only));
    }
    for m in host.mounts.as_array().into_iter().flatten() {
        if m["Type"] == "bind" {
            let source = m["Source"].as_str().unwrap_or("");
            out.push((source.to_owned(), m["ReadOnly"] == true));
        }
    }
    out
}

/// The outcome of `portcullis policy test`.
#[derive(Debug, Default)]
pub struct TestReport {
    /// `(package.rule, passed, error)` per test.
    pub results: Vec<(String, bool, Option<String>)>,
}

impl TestReport {
    /// Whether every test passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|(_, ok, _)| *ok)
    }
}

/// Runs Rego unit tests the way `opa test` does: every rule named `test_*` in every
/// module under `dir` (policies and `*_test.rego` files together) must evaluate to `true`.
pub fn run_tests(dir: &Path, timeout: Duration) -> Result<TestReport, String> {
    let files = rego_files(dir)?;
    let mut engine = Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: timeout,
        check_interval: CLOCK_CHECK_INTERVAL,
    });
    let mut tests = Vec::new();
    for file in &files {
        add_file(&mut engine, file)?;
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| format!("{}: no package line", file.display()))?;
        for line in text.lines() {
            // A rule head at the start of a line: `test_x if {`, `test_x {`, `test_x := ...`.
            if let Some(rest) = line.strip_prefix("test_") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let rule = format!("data.{package}.test_{name}");
                if !tests.contains(&rule) {
                    tests.push(rule);
                }
            }
        }
    }
    let mut report = TestReport::default();
    for rule in tests {
        let mut e = engine.clone();
        let (ok, err) = match e.eval_rule(rule.clone()) {
            Ok(v) => (v == Value::from(true), None),
            Err(err) => (false, Some(err.to_string())),
        };
        report
            .results
            .push((rule.trim_start_matches("data.").to_owned(), ok, err));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, endpoint: &str, body: Option<Json>) -> model::Request {
        let mut req = crate::plugin::test_request(method, path, endpoint);
        req.query = vec![model::Pair {
            name: "name".into(),
            value: "web 1".into(),
        }];
        req.headers = vec![model::Pair {
            name: "content-type".into(),
            value: "application/json".into(),
        }];
        req.body = body.map(|b| b.to_string());
        req.caller.groups = vec!["team-a".into()];
        req
    }

    #[test]
    fn the_input_has_opa_docker_authz_fields_and_ours() {
        let body = json!({"Image": "x", "HostConfig": {"Binds": ["/srv:/data:ro", "vol:/v"], "Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}});
        let i = input::<Json>(&request(
            "POST",
            "/containers/create",
            "container.create",
            Some(body),
        ));
        assert_eq!(i["Path"], "/v1.41/containers/create?name=web+1");
        assert_eq!(i["PathPlain"], "/v1.41/containers/create");
        assert_eq!(i["PathArr"], json!(["", "v1.41", "containers", "create"]));
        assert_eq!(i["Query"], json!({"name": ["web 1"]}));
        assert_eq!(i["Headers"], json!({"Content-Type": "application/json"}));
        assert_eq!(i["Body"]["Image"], "x");
        assert_eq!(i["User"], "alice");
        assert_eq!(
            i["BindMounts"],
            json!([{"Source": "/srv", "Resolved": "/srv", "ReadOnly": true},
                   {"Source": "/etc", "Resolved": "/etc", "ReadOnly": false}])
        );
        assert_eq!(i["Caller"]["Groups"], json!(["team-a"]));
        assert_eq!(i["Endpoint"], "container.create");
    }

    /// `BindMounts` reads the body as dockerd does: `null` is no configuration, and of a
    /// duplicated key the last one counts.
    #[test]
    fn bind_mounts_follow_go_decoding() {
        assert!(bind_mounts("container.create", Some(r#"{"HostConfig": null}"#)).is_empty());
        let dup = r#"{"HostConfig": {"Binds": ["/a:/a"], "Binds": ["/b:/b:ro"]}}"#;
        assert_eq!(
            bind_mounts("container.create", Some(dup)),
            vec![("/b".to_owned(), true)]
        );
        assert!(bind_mounts("container.update", Some(dup)).is_empty());
    }

    /// The input built directly as regorus values is the JSON document, value for value.
    #[test]
    fn both_input_builders_agree() {
        let body = json!({"Image": "x", "N": 1.5, "Big": 12345678901234567890u64, "L": [true, null],
                          "HostConfig": {"Binds": ["/srv:/data:ro"], "Mounts": [{"Type": "bind", "Source": "/etc"}]}});
        let mut req = request("POST", "/containers/create", "container.create", Some(body));
        req.query.push(model::Pair {
            name: "name".into(),
            value: "again".into(),
        });
        req.target = Some(model::Target {
            kind: "container".into(),
            id: "abc".into(),
            name: None,
            labels: vec![model::Pair {
                name: "a".into(),
                value: "b".into(),
            }],
            owner: None,
        });
        req.related.push(model::Reference {
            field: "HostConfig.Binds[1]".into(),
            kind: "volume".into(),
            name: "data".into(),
            object: None,
        });
        let via_json = serde_json::from_value::<Value>(input::<Json>(&req)).unwrap();
        assert_eq!(input::<Value>(&req), via_json);
        let plain = request("GET", "/_ping", "system.ping", None);
        let via_json = serde_json::from_value::<Value>(input::<Json>(&plain)).unwrap();
        assert_eq!(input::<Value>(&plain), via_json);
    }

    fn policy(text: &str, query: Option<&str>) -> Result<Policy, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.rego"), text).unwrap();
        let mut cfg: PluginConfig =
            toml::from_str("name = \"authz\"\nkind = \"rego\"\npath = \"x\"").unwrap();
        cfg.query = query.map(str::to_owned);
        load(&cfg, dir.path())
    }

    #[test]
    fn v0_and_v1_policies_decide() {
        let v0 = policy(
            "package docker.authz\ndefault allow = false\nallow { not input.Body.HostConfig.Privileged }\n",
            None,
        )
        .unwrap();
        let v1 = policy(
            "package docker.authz\nimport rego.v1\ndefault allow := false\nallow if { not input.Body.HostConfig.Privileged }\n",
            None,
        )
        .unwrap();
        for p in [&v0, &v1] {
            let ok = request(
                "POST",
                "/containers/create",
                "container.create",
                Some(json!({"HostConfig": {"Privileged": false}})),
            );
            assert!(matches!(p.evaluate(&ok).unwrap(), model::Verdict::Allow));
            let bad = request(
                "POST",
                "/containers/create",
                "container.create",
                Some(json!({"HostConfig": {"Privileged": true}})),
            );
            assert!(
                matches!(p.evaluate(&bad).unwrap(), model::Verdict::Deny(d) if d.message == DEFAULT_MESSAGE)
            );
        }
    }

    #[test]
    fn an_object_decision_carries_the_message() {
        let p = policy(
            "package pc\nimport rego.v1\ndecision := {\"allow\": false, \"message\": sprintf(\"%s may not\", [input.User])}\n",
            Some("data.pc.decision"),
        )
        .unwrap();
        let r = request("GET", "/containers/json", "container.list", None);
        assert!(
            matches!(p.evaluate(&r).unwrap(), model::Verdict::Deny(d) if d.message == "alice may not")
        );
    }

    fn decision(p: &Policy, req: &model::Request, vm: bool) -> Value {
        let input = input::<Value>(req);
        match (&p.program, vm) {
            (Some(program), true) => p.run_vm(program, input).unwrap(),
            (_, false) => p.interpret(input).unwrap(),
            (None, true) => panic!("the policy was not compiled for the VM"),
        }
    }

    #[test]
    fn the_bytecode_vm_decides_like_the_interpreter() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego");
        let mut cfg: PluginConfig =
            toml::from_str("name = \"authz\"\nkind = \"rego\"\npath = \"x\"").unwrap();
        cfg.config = toml::from_str("read_only_users = [\"viewer\"]").unwrap();
        let shipped = load(&cfg, &dir).unwrap();
        assert!(
            shipped.program.is_some(),
            "the shipped policy should run in the VM"
        );
        let create = |host: Json| {
            request(
                "POST",
                "/containers/create",
                "container.create",
                Some(json!({"Image": "x", "HostConfig": host})),
            )
        };
        let mut viewer = request(
            "POST",
            "/containers/create",
            "container.create",
            Some(json!({"Image": "x"})),
        );
        viewer.caller.user = "viewer".into();
        let mut viewer_get = request("GET", "/containers/json", "container.list", None);
        viewer_get.caller.user = "viewer".into();
        let cases = [
            (
                request("GET", "/containers/json", "container.list", None),
                true,
            ),
            (create(json!({})), true),
            (
                create(json!({"Privileged": false, "NetworkMode": "bridge"})),
                true,
            ),
            (create(json!({"Privileged": true})), false),
            (create(json!({"NetworkMode": "host"})), false),
            (create(json!({"Binds": ["/var/run/docker.sock:/s"]})), false),
            (
                create(
                    json!({"Mounts": [{"Type": "bind", "Source": "/run/docker.sock", "Target": "/s"}]}),
                ),
                false,
            ),
            (create(json!({"Binds": ["/srv:/srv"]})), true),
            (viewer, false),
            (viewer_get, true),
        ];
        for (req, allowed) in &cases {
            let vm = decision(&shipped, req, true);
            assert_eq!(
                vm,
                decision(&shipped, req, false),
                "{} {:?}",
                req.path,
                req.body
            );
            assert_eq!(
                vm == Value::from(true),
                *allowed,
                "{} {:?}",
                req.path,
                req.body
            );
        }
        // An object decision with a message, and an undefined one.
        let p = policy(
            "package pc\nimport rego.v1\ndecision := {\"allow\": false, \"message\": sprintf(\"%s may not %s\", [input.User, input.Method])} if input.Method != \"HEAD\"\n",
            Some("data.pc.decision"),
        )
        .unwrap();
        for req in [
            request("GET", "/containers/json", "container.list", None),
            request("HEAD", "/_ping", "system.ping", None),
        ] {
            assert_eq!(decision(&p, &req, true), decision(&p, &req, false));
        }
    }

    #[test]
    fn a_policy_the_vm_cannot_compile_runs_in_the_interpreter() {
        let p = policy(
            "package docker.authz\nimport rego.v1\nadmin if input.User == \"root\"\nallow if admin with input.User as \"root\"\n",
            None,
        )
        .unwrap();
        assert!(p.program.is_none());
        let r = request("GET", "/containers/json", "container.list", None);
        assert!(matches!(p.evaluate(&r).unwrap(), model::Verdict::Allow));
    }

    #[test]
    fn a_policy_that_runs_too_long_is_stopped_in_the_vm() {
        let mut cfg: PluginConfig =
            toml::from_str("name = \"authz\"\nkind = \"rego\"\npath = \"x\"\ntimeout = \"20ms\"")
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package docker.authz\nimport rego.v1\ndefault allow := false\n\
             allow if { input.Method == \"POST\"; some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i == j + 200000 }\n",
        )
        .unwrap();
        cfg.query = None;
        let p = load(&cfg, dir.path()).unwrap();
        assert!(p.program.is_some());
        let r = request(
            "POST",
            "/containers/create",
            "container.create",
            Some(json!({})),
        );
        let err = p.evaluate(&r).unwrap_err();
        assert!(err.contains("time limit"), "{err}");
    }

    #[test]
    fn broken_policies_fail_at_load() {
        assert!(policy("package x\nallow if {", None).is_err());
        assert!(policy("", None).is_err());
    }

    #[test]
    fn unit_tests_run_like_opa_test() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("authz.rego"),
            "package docker.authz\nimport rego.v1\ndefault allow := false\nallow if input.Method == \"GET\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("authz_test.rego"),
            "package docker.authz\nimport rego.v1\ntest_get_allowed if allow with input as {\"Method\": \"GET\"}\n\
             test_post_denied if not allow with input as {\"Method\": \"POST\"}\n\
             test_wrong if allow with input as {\"Method\": \"POST\"}\n",
        )
        .unwrap();
        let report = run_tests(dir.path(), Duration::from_secs(1)).unwrap();
        let outcome: Vec<(String, bool)> = report
            .results
            .iter()
            .map(|(n, ok, _)| (n.clone(), *ok))
            .collect();
        assert_eq!(
            outcome,
            vec![
                ("docker.authz.test_get_allowed".into(), true),
                ("docker.authz.test_post_denied".into(), true),
                ("docker.authz.test_wrong".into(), false),
            ]
        );
        assert!(!report.passed());
    }
}
