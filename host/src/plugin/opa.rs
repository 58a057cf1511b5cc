//! OPA policies compiled to WebAssembly (`kind = "opa-wasm"`), run through the `opa-wasm`
//! crate in the plugin sandbox.
//!
//! The file is the bundle `opa build -t wasm -e docker/authz/allow` writes (`bundle.tar.gz`:
//! its `/policy.wasm` and `/data.json` are used), or the `policy.wasm` core module alone. The
//! module is compiled once by the
//! gateway's wasmtime engine and instantiated fresh for every call in a store with the
//! plugin's deadline and memory cap, like a component: nothing one caller's evaluation leaves
//! in the policy's heap is seen by the next. The input document and the reading of the
//! decision are Rego's ([`super::rego::input`], [`super::rego::verdict`]), so a policy
//! decides the same whether it is evaluated by `regorus` or compiled by `opa build`; the
//! plugin's `config` table is `data.config`.
//!
//! What the policy can reach is what OPA's wasm ABI gives it: its own memory and the host
//! builtins `opa-wasm` implements. Those compiled in here are listed in the README ("OPA
//! policies compiled to wasm"); a policy that needs another one is refused at load. They
//! include no clock, randomness, network or environment (a policy calling `opa.runtime` is
//! refused: [`Policy::check_builtins`]).

use std::path::Path;

use serde_json::{json, Value as Json};
use wasmtime::{Engine, ExternType, Linker, Memory, Module, Store};

use super::rego;
use super::sandbox::{DeadlineExceeded, State};
use crate::config::PluginConfig;
use crate::model;

/// The entrypoint opa-docker-authz policies are built with.
const DEFAULT_ENTRYPOINT: &str = "docker/authz/allow";

/// Host builtins opa-wasm 0.3 resolves but answers "not implemented" when called, so a policy
/// calling one would load and then fail closed on every request that reaches the call: it
/// is refused at load instead. (Feature-gated builtins left out of Cargo.toml are refused by
/// opa-wasm itself, as unknown.)
const NOT_IMPLEMENTED: &[&str] = &[
    "crypto.x509.parse_and_verify_certificates",
    "crypto.x509.parse_certificate_request",
    "crypto.x509.parse_certificates",
    "crypto.x509.parse_rsa_private_key",
    "glob.quote_meta",
    "graph.reachable_paths",
    "graphql.is_valid",
    "graphql.parse",
    "graphql.parse_and_verify",
    "graphql.parse_query",
    "graphql.parse_schema",
    "http.send",
    "indexof_n",
    "io.jwt.decode",
    "io.jwt.decode_verify",
    "io.jwt.encode_sign",
    "io.jwt.encode_sign_raw",
    "io.jwt.verify_es256",
    "io.jwt.verify_es384",
    "io.jwt.verify_es512",
    "io.jwt.verify_hs256",
    "io.jwt.verify_hs384",
    "io.jwt.verify_hs512",
    "io.jwt.verify_ps256",
    "io.jwt.verify_ps384",
    "io.jwt.verify_ps512",
    "io.jwt.verify_rs256",
    "io.jwt.verify_rs384",
    "io.jwt.verify_rs512",
    "net.cidr_contains_matches",
    "net.cidr_expand",
    "net.cidr_merge",
    "net.lookup_ip_addr",
    "object.union_n",
    "regex.find_n",
    "regex.globs_match",
    "regex.split",
    "regex.template_match",
    "rego.parse_module",
    "trace",
    "uuid.rfc4122",
];

/// Bytes read at most from one file of a bundle: start-up reads a bounded amount.
const MAX_BUNDLE_FILE: u64 = 256 << 20;

/// Why a policy module could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a WebAssembly module implementing OPA's wasm ABI.
    #[error("{0}")]
    NotOpa(String),
    /// The module was built without the configured entrypoint.
    #[error("the policy has no entrypoint {wanted:?} (it has: {found}); build it with `opa build -t wasm -e {wanted}` or name one of these in `query`")]
    NoEntrypoint { wanted: String, found: String },
    /// The evaluation stopped: a trap, the deadline or the memory cap (the store says which).
    #[error("{0:#}")]
    Eval(anyhow::Error),
}

/// A compiled policy, instantiated per call.
pub struct Policy {
    module: Module,
    entrypoint: String,
    /// `{"config": <the plugin's config table>}`, loaded as the policy's `data`.
    data: Json,
    /// The host builtins the module calls, once [`Policy::check_builtins`] listed them.
    builtins: std::sync::OnceLock<Vec<String>>,
}

/// Reads and compiles the module at `path`. Whether it implements OPA's ABI is only known
/// once it is instantiated ([`Policy::run`] with no request), which loading does next.
pub async fn compile(engine: &Engine, cfg: &PluginConfig, path: &Path) -> Result<Policy, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::NotOpa(format!("cannot read it: {e}")))?;
    let (bytes, bundle_data) = unpack(bytes)?;
    let data = match bundle_data {
        None => json!({ "config": cfg.config }),
        Some(Json::Object(mut data)) => {
            // `data.config` is the plugin's configuration, as for Rego; a bundle cannot
            // silently lose its own `config` to it.
            if data.contains_key("config") {
                return Err(Error::NotOpa(
                    "the bundle's data.json has a top-level `config`, which the gateway sets from the plugin's config table"
                        .into(),
                ));
            }
            data.insert(
                "config".into(),
                serde_json::to_value(&cfg.config).map_err(|e| Error::NotOpa(e.to_string()))?,
            );
            Json::Object(data)
        }
        Some(_) => {
            return Err(Error::NotOpa(
                "the bundle's data.json is not a JSON object".into(),
            ))
        }
    };
    let binary = bytes.starts_with(b"\0asm");
    let engine = engine.clone();
    // Compilation is CPU-bound: keep it off the async workers, as for components.
    let module = tokio::task::spawn_blocking(move || Module::new(&engine, bytes))
        .await
        .map_err(|e| Error::NotOpa(e.to_string()))?
        .map_err(|e| {
            // Not binary, wasmtime read it as WAT text: its parse error would only confuse.
            Error::NotOpa(if binary {
                format!("not a valid WebAssembly module: {e:#}")
            } else {
                "not a WebAssembly module (no \\0asm header)".into()
            })
        })?;
    Ok(Policy {
        module,
        entrypoint: entrypoint(cfg.query.as_deref()),
        data,
        builtins: std::sync::OnceLock::new(),
    })
}

/// The module and the data in `bytes`: a gzipped bundle gives its `/policy.wasm` and its
/// `/data.json` (where `opa build` puts the data of all its inputs); anything else is taken
/// to be the module itself.
fn unpack(bytes: Vec<u8>) -> Result<(Vec<u8>, Option<Json>), Error> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok((bytes, None));
    }
    let bad = |e: std::io::Error| Error::NotOpa(format!("cannot read the bundle: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let (mut module, mut data) = (None, None);
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let name = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        let slot = match name.as_str() {
            "policy.wasm" => &mut module,
            "data.json" => &mut data,
            // Data files elsewhere would be data under their directory's path: not read,
            // so refused rather than silently missing.
            n if n.ends_with("/data.json")
                || n.ends_with("data.yaml")
                || n.ends_with("data.yml") =>
            {
                return Err(Error::NotOpa(format!(
                    "the bundle has {n}; only /policy.wasm and a root /data.json are read (as `opa build` writes them)"
                )));
            }
            _ => continue,
        };
        let mut buf = Vec::new();
        entry
            .take(MAX_BUNDLE_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(bad)?;
        if buf.len() as u64 > MAX_BUNDLE_FILE {
            return Err(Error::NotOpa(format!(
                "the bundle's {name} is larger than {MAX_BUNDLE_FILE} bytes"
            )));
        }
        *slot = Some(buf);
    }
    let module = module.ok_or_else(|| {
        Error::NotOpa("the bundle has no /policy.wasm: build it with `opa build -t wasm`".into())
    })?;
    let data = data
        .map(|d| serde_json::from_slice(&d))
        .transpose()
        .map_err(|e| Error::NotOpa(format!("the bundle's data.json: {e}")))?;
    Ok((module, data))
}

/// The entrypoint for `query`: `opa build -e` names them with slashes (`docker/authz/allow`);
/// the Rego spelling `data.docker.authz.allow` is accepted too, so one `query` means the same
/// rule for both kinds.
fn entrypoint(query: Option<&str>) -> String {
    let query = query.unwrap_or(DEFAULT_ENTRYPOINT);
    match query.strip_prefix("data.") {
        Some(rule) => rule.replace('.', "/"),
        None => query.to_owned(),
    }
}

impl Policy {
    /// Instantiates the module in `store`, loads `data`, and judges `req` if there is one
    /// (without one, only checks that the module is a usable policy).
    pub(super) async fn run(
        &self,
        store: &mut Store<State>,
        req: Option<&model::Request>,
    ) -> Result<Option<model::Verdict>, Error> {
        let runtime = opa_wasm::Runtime::new(&mut *store, &self.module)
            .await
            .map_err(|e| self.instantiation_error(store, e))?;
        if !runtime.entrypoints().contains(self.entrypoint.as_str()) {
            let mut found: Vec<&str> = runtime.entrypoints().into_iter().collect();
            found.sort_unstable();
            return Err(Error::NoEntrypoint {
                wanted: self.entrypoint.clone(),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    found.join(", ")
                },
            });
        }
        let policy = runtime
            .with_data(&mut *store, &self.data)
            .await
            .map_err(Error::Eval)?;
        let Some(req) = req else { return Ok(None) };
        let result: Json = policy
            .evaluate(&mut *store, &self.entrypoint, &rego::input::<Json>(req))
            .await
            .map_err(Error::Eval)?;
        Ok(Some(verdict(&result)))
    }

    /// Checks, before the policy is used, the host builtins it calls: `opa.runtime` would hand
    /// it the gateway's environment, which no plugin gets unasked, and those opa-wasm does not
    /// implement would fail every call. opa-wasm resolves the builtins without saying which
    /// ones a policy calls, so this asks the module itself, in an instance whose imports all
    /// trap: listing builtins needs none of them.
    pub(super) async fn check_builtins(&self, store: &mut Store<State>) -> Result<(), Error> {
        let mut names = self
            .builtins(store)
            .await
            .map_err(|e| self.instantiation_error(store, e))?;
        names.sort_unstable();
        let _ = self.builtins.set(names.clone());
        if names.iter().any(|n| n == "opa.runtime") {
            return Err(Error::NotOpa(
                "the policy calls opa.runtime(), which would expose the gateway's environment variables; \
                 pass what it needs through the plugin's `config` (data.config) instead"
                    .into(),
            ));
        }
        let missing: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| NOT_IMPLEMENTED.contains(n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::NotOpa(format!(
                "the policy calls builtins the gateway does not implement: {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }

    /// The names of the host builtins the module calls (its `builtins()` export, as JSON).
    async fn builtins(&self, store: &mut Store<State>) -> anyhow::Result<Vec<String>> {
        let memory_type = self
            .module
            .imports()
            .find(|i| i.module() == "env" && i.name() == "memory")
            .and_then(|i| i.ty().memory().cloned())
            .ok_or_else(|| anyhow::anyhow!("missing or invalid 'env.memory' import"))?;
        let memory = Memory::new_async(&mut *store, memory_type).await?;
        let mut linker = Linker::new(store.engine());
        linker.define(&*store, "env", "memory", memory)?;
        for import in self.module.imports() {
            if let ExternType::Func(ty) = import.ty() {
                linker.func_new(import.module(), import.name(), ty, |_, _, _| {
                    Err(wasmtime::Error::msg(
                        "host functions are not available while listing builtins",
                    ))
                })?;
            }
        }
        let instance = linker.instantiate_async(&mut *store, &self.module).await?;
        let list = instance
            .get_typed_func::<(), i32>(&mut *store, "builtins")?
            .call_async(&mut *store, ())
            .await?;
        let text = instance
            .get_typed_func::<i32, i32>(&mut *store, "opa_json_dump")?
            .call_async(&mut *store, list)
            .await?;
        let bytes = usize::try_from(text)
            .ok()
            .and_then(|at| memory.data(&*store).get(at..))
            .and_then(|tail| tail.split(|b| *b == 0).next())
            .ok_or_else(|| anyhow::anyhow!("builtins(): no string at {text}"))?;
        let map: serde_json::Map<String, Json> = serde_json::from_slice(bytes)?;
        Ok(map.into_iter().map(|(name, _id)| name).collect())
    }

    /// Tells a module that is no OPA policy (a missing export or import, an ABI version or a
    /// builtin opa-wasm does not know) from one stopped by the sandbox while starting.
    fn instantiation_error(&self, store: &Store<State>, e: anyhow::Error) -> Error {
        if stopped_by_deadline(&e) || store.data().memory_exceeded() {
            return Error::Eval(e);
        }
        let reason = format!("{e:#}");
        if reason.contains("unknown builtin") {
            // opa-wasm does not name the builtin it could not resolve: name them all.
            let calls = self
                .builtins
                .get()
                .map(|b| b.join(", "))
                .unwrap_or_default();
            return Error::NotOpa(format!(
                "the policy calls a builtin the gateway does not provide (it calls: {calls}; the README lists those provided)"
            ));
        }
        Error::NotOpa(format!("it does not implement OPA's wasm ABI: {reason}"))
    }
}

/// Whether the plugin deadline stopped the call (the epoch callback's error, carried through
/// opa-wasm's `anyhow` errors).
pub(super) fn stopped_by_deadline(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<DeadlineExceeded>())
}

/// Reads an evaluation's result set: `[{"result": <decision>}]`, or `[]` when the decision
/// is undefined, which denies like `false`.
fn verdict(result: &Json) -> model::Verdict {
    let decision = result
        .get(0)
        .and_then(|r| r.get("result"))
        .and_then(|d| serde_json::from_value::<regorus::Value>(d.clone()).ok())
        .unwrap_or(regorus::Value::Undefined);
    rego::verdict(&decision)
}

#[cfg(test)]
mod tests {
    //! The policy module here is written by hand in WAT (`tests/fixtures/opa/authz.wat`,
    //! which says what it implements), because `opa build` cannot be installed where these
    //! tests run: they check the gateway's side of OPA's wasm ABI through opa-wasm, not
    //! OPA's compiler.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::RuntimeConfig;
    use crate::plugin::{Hook, LoadError, Plugin, PluginFailure, Runtime};

    const POLICY: &str = include_str!("../../../tests/fixtures/opa/authz.wat");

    async fn load(query: Option<&str>, module: &[u8]) -> Result<Plugin, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.wasm");
        std::fs::write(&path, module).unwrap();
        let mut cfg: PluginConfig =
            toml::from_str("name = \"opa\"\nkind = \"opa-wasm\"\npath = \"x\"").unwrap();
        cfg.query = query.map(str::to_owned);
        cfg.timeout = Duration::from_millis(200);
        let runtime = RuntimeConfig {
            cache_dir: None,
            ..RuntimeConfig::default()
        };
        let runtime = Arc::new(Runtime::new(&runtime, cfg.memory_limit.as_u64()).unwrap());
        runtime.load_opa(&cfg, &path).await
    }

    async fn policy(query: Option<&str>) -> Plugin {
        load(query, &wat::parse_str(POLICY).unwrap()).await.unwrap()
    }

    fn create(privileged: bool) -> model::Request {
        let mut req = crate::plugin::test_request("POST", "/containers/create", "container.create");
        req.body =
            Some(json!({"Image": "x", "HostConfig": {"Privileged": privileged}}).to_string());
        req
    }

    #[tokio::test]
    async fn the_policy_decides_on_the_rego_input_document() {
        let p = policy(None).await;
        assert!(matches!(
            p.invoke(1, Hook::Request(&create(false))).await,
            Ok(model::Verdict::Allow)
        ));
        match p.invoke(2, Hook::Request(&create(true))).await {
            Ok(model::Verdict::Deny(d)) => {
                assert_eq!(d.status, 403);
                assert!(
                    d.message.contains("privileged containers are not allowed"),
                    "{}",
                    d.message
                );
            }
            other => panic!("privileged create: {other:?}"),
        }
        // The Rego spelling of the rule names the same entrypoint.
        let p = policy(Some("data.docker.authz.allow")).await;
        assert!(matches!(
            p.invoke(3, Hook::Request(&create(true))).await,
            Ok(model::Verdict::Deny(_))
        ));
    }

    #[tokio::test]
    async fn an_undefined_decision_denies() {
        let p = policy(Some("test/undefined")).await;
        let verdict = p.invoke(1, Hook::Request(&create(false))).await;
        assert!(
            matches!(&verdict, Ok(model::Verdict::Deny(d)) if d.message == "request rejected by administrative policy"),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn the_sandbox_stops_a_runaway_policy() {
        let p = policy(Some("test/spin")).await;
        let failure = p.invoke(1, Hook::Request(&create(false))).await;
        assert!(
            matches!(&failure, Err(PluginFailure::Timeout(t)) if *t == Duration::from_millis(200)),
            "{failure:?}"
        );
        let p = policy(Some("test/hog")).await;
        let failure = p.invoke(1, Hook::Request(&create(false))).await;
        assert!(
            matches!(failure, Err(PluginFailure::Memory(_))),
            "{failure:?}"
        );
    }

    #[tokio::test]
    async fn modules_that_are_no_opa_policy_are_refused_at_load() {
        let err = |r: Result<Plugin, LoadError>| r.err().expect("loaded").to_string();
        let component_like = wat::parse_str("(module (func (export \"run\")))").unwrap();
        let e = err(load(None, &component_like).await);
        assert!(
            e.contains("policy.wasm is not a usable OPA wasm policy"),
            "{e}"
        );
        assert!(
            e.contains("does not implement OPA's wasm ABI") && e.contains("env.memory"),
            "{e}"
        );
        let e = err(load(None, b"not wasm at all").await);
        assert!(
            e.contains("policy.wasm is not a usable OPA wasm policy: not a WebAssembly module"),
            "{e}"
        );
        let e = err(load(Some("docker/authz/deny"), &wat::parse_str(POLICY).unwrap()).await);
        assert!(e.contains("no entrypoint \"docker/authz/deny\""), "{e}");
        assert!(e.contains("docker/authz/allow, test/data, test/hog"), "{e}");
        // Policies calling host builtins: the gateway's environment, one opa-wasm leaves
        // unimplemented, one not compiled in. `builtins()` answers this JSON object.
        let calling = |builtins: &str| {
            let text = POLICY.replace(
                "(data (i32.const 16) \"{}\\00\")",
                &format!("(data (i32.const 16) \"{builtins}\\00\")"),
            );
            assert_ne!(text, POLICY);
            wat::parse_str(&text).unwrap()
        };
        let e = err(load(None, &calling("{\\22opa.runtime\\22:0}")).await);
        assert!(
            e.contains("opa.runtime(), which would expose the gateway's environment"),
            "{e}"
        );
        let e = err(load(None, &calling("{\\22sprintf\\22:0,\\22trace\\22:1}")).await);
        assert!(e.contains("does not implement: trace"), "{e}");
        let e = err(load(None, &calling("{\\22time.now_ns\\22:0}")).await);
        assert!(
            e.contains("does not provide (it calls: time.now_ns;"),
            "{e}"
        );
        // sprintf is provided.
        assert!(load(None, &calling("{\\22sprintf\\22:0}")).await.is_ok());
    }

    /// A gzipped tar like `opa build` writes, with absolute member names (`/policy.wasm`).
    fn bundle(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            // `set_path` refuses absolute names; OPA's bundles have them.
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append(&header, *bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[tokio::test]
    async fn a_bundle_gives_its_module_and_its_data() {
        let module = wat::parse_str(POLICY).unwrap();
        let data = br#"{"allow": false, "message": "data.json reached the policy"}"#;
        let both = bundle(&[
            ("/.manifest", b"{}"),
            ("/data.json", data),
            ("/policy.wasm", &module),
        ]);
        // `test/data` decides with the whole data document: data.json plus data.config.
        let p = load(Some("test/data"), &both).await.unwrap();
        let verdict = p.invoke(1, Hook::Request(&create(false))).await;
        assert!(
            matches!(&verdict, Ok(model::Verdict::Deny(d)) if d.message == "data.json reached the policy"),
            "{verdict:?}"
        );
        let p = load(None, &bundle(&[("/policy.wasm", &module)]))
            .await
            .unwrap();
        assert!(matches!(
            p.invoke(1, Hook::Request(&create(true))).await,
            Ok(model::Verdict::Deny(_))
        ));
        assert!(matches!(
            p.invoke(2, Hook::Request(&create(false))).await,
            Ok(model::Verdict::Allow)
        ));

        let err = |r: Result<Plugin, LoadError>| r.err().expect("loaded").to_string();
        let e = err(load(None, &bundle(&[("/data.json", data)])).await);
        assert!(e.contains("the bundle has no /policy.wasm"), "{e}");
        let e = err(load(
            None,
            &bundle(&[
                ("/data.json", br#"{"config": 1}"#),
                ("/policy.wasm", &module),
            ]),
        )
        .await);
        assert!(e.contains("top-level `config`"), "{e}");
        let e = err(load(
            None,
            &bundle(&[("/roles/data.json", b"{}"), ("/policy.wasm", &module)]),
        )
        .await);
        assert!(e.contains("roles/data.json"), "{e}");
    }

    #[test]
    fn the_rego_spelling_of_a_rule_names_the_same_entrypoint() {
        assert_eq!(entrypoint(None), "docker/authz/allow");
        assert_eq!(
            entrypoint(Some("data.docker.authz.allow")),
            "docker/authz/allow"
        );
        assert_eq!(entrypoint(Some("pc/decision")), "pc/decision");
    }

    #[test]
    fn result_sets_read_like_rego_decisions() {
        let allow = |v: Json| matches!(verdict(&v), model::Verdict::Allow);
        let message = |v: Json| match verdict(&v) {
            model::Verdict::Deny(d) => d.message,
            _ => "not denied".into(),
        };
        assert!(allow(json!([{"result": true}])));
        assert!(allow(json!([{"result": {"allow": true}}])));
        assert_eq!(
            message(json!([{"result": false}])),
            "request rejected by administrative policy"
        );
        assert_eq!(
            message(json!([])),
            "request rejected by administrative policy"
        );
        assert_eq!(
            message(json!([{"result": {"allow": false, "message": "no"}}])),
            "no"
        );
    }
}
