//! The plugin runtime: WebAssembly components in a wasmtime sandbox.
//!
//! One [`wasmtime::Engine`] for the process; each component is compiled once (and cached on
//! disk), linked once into an `InstancePre`, and instantiated fresh from the pooling
//! allocator for every call, so no state leaks from one caller to the next. Every call has
//! an epoch deadline and a memory cap; a plugin that traps, runs out of time or memory, or
//! answers nonsense produces a [`PluginFailure`], never a crash of the gateway.
//!
//! Instantiating, running `init` and tearing an instance down cost several times what a
//! policy's hook does, so a serving gateway makes a few fresh instances of each plugin ahead
//! of its calls and tears used ones down afterwards, on a task per plugin
//! ([`Plugin::prepare`]): a call takes a ready instance, uses it once, and hands it back to
//! be dropped. When none is ready (a burst), the call instantiates on its own path.

mod bindings;
mod cache;
pub mod offline;
mod opa;
pub mod rego;
mod sandbox;
pub mod scaffold;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, PoolingAllocationConfig, Store};

use crate::config::{Config, Mode, Phase, PluginConfig, RuntimeConfig};
use crate::model;
use bindings::latest::{self as contract, PluginPre};
pub use bindings::CONTRACT_VERSION;
use sandbox::{DeadlineExceeded, State, TICK};

/// Why a plugin could not be loaded. Start-up and `portcullis check` stop on these.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("plugin {name}: {path} is not a WebAssembly component: {reason}")]
    NotComponent {
        name: String,
        path: String,
        reason: String,
    },
    #[error("plugin {name}: {path} implements contract {found}, this gateway supports {supported}; rebuild it against sdk/wit {supported}")]
    Incompatible {
        name: String,
        path: String,
        found: String,
        supported: &'static str,
    },
    #[error("plugin {name}: {path} does not export {interface}@{supported} (exports: {exports})")]
    MissingExport {
        name: String,
        path: String,
        interface: &'static str,
        supported: &'static str,
        exports: String,
    },
    #[error("plugin {name}: {path} cannot be linked: {reason}")]
    Link {
        name: String,
        path: String,
        reason: String,
    },
    #[error("plugin {name}: {path} is not a usable OPA wasm policy: {reason}")]
    NotOpaPolicy {
        name: String,
        path: String,
        reason: String,
    },
    #[error("plugin {name}: rejected its configuration: {reason}")]
    Config { name: String, reason: String },
    #[error("plugin {name}: {failure}")]
    Probe {
        name: String,
        failure: PluginFailure,
    },
    #[error("plugin runtime: {0}")]
    Engine(String),
}

/// Why a plugin call produced no usable verdict.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginFailure {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0}")]
    Memory(bytesize::ByteSize),
    #[error("crashed: {0}")]
    Trap(String),
    #[error("rejected its configuration: {0}")]
    Init(String),
    #[error("returned a malformed verdict: {0}")]
    Malformed(String),
}

/// Process-wide plugin machinery.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<std::path::PathBuf>,
    instances: Arc<Semaphore>,
    /// Instances kept from a request hook for the same request's response hook (a quarter
    /// of `instances`), so that requests the engine is slow to answer cannot hold the pool.
    kept: Arc<Semaphore>,
    ticker: EpochTicker,
    /// Where instances are prepared ahead of calls, started by the first [`Plugin::prepare`].
    preparer: std::sync::OnceLock<Preparer>,
}

/// A thread of its own for preparing instances (instantiate and `init` the next one, tear
/// down the used one: about 100 µs of CPU per call). On the request threads that work ran
/// between a request being handed to the engine's connection and that connection being
/// polled, and delayed the request (`/_ping` answered about 90 µs later by the engine with
/// the default chain). Here the OS runs it beside the request threads instead.
struct Preparer {
    handle: tokio::runtime::Handle,
    /// Dropped with the runtime: the thread ends, and its tasks with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Preparer {
    fn start() -> Option<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("portcullis-prepare".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .ok()?;
        Some(Self {
            handle,
            _stop: stop,
        })
    }
}

/// Initialized memory up to this extent is always laid out as one copy-on-write image (the
/// image is as large as the initialized extent, never this limit). Not part of wasmtime's
/// compatibility hash, so the cache key includes it ([`cache`]).
pub(crate) const DENSE_IMAGE_LIMIT: u64 = 256 << 20;

/// Bytes at the start of each pooled linear memory that stay mapped between calls. With
/// PAGEMAP_SCAN a reset rewrites only the pages the last call dirtied within this window, so
/// the next call writes to private pages instead of taking a copy-on-write fault for each
/// page it touches. 1 → 32 MiB measured (BENCHMARKS.md): Rust call p50 42 → 21 µs, C 28 → 17,
/// JavaScript 1.2 → 0.75 ms. Pages never touched stay unbacked, so the window costs resident
/// memory only for pages calls actually use.
const KEEP_RESIDENT: usize = 32 << 20;

/// Unused pool slots kept warm (with their resident window) for the next instantiation.
const WARM_SLOTS: u32 = 16;

impl Runtime {
    /// Creates the engine (pooling allocator sized from `config`) and the linker with the
    /// deny-by-default WASI and the `host` interface.
    pub fn new(config: &RuntimeConfig, max_memory: u64) -> Result<Self, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances;
        // A component instance holds several core instances (the guest plus WASI adapter
        // shims), each with a memory and a table or two. A componentize-py component links
        // 14 core modules (libc, libpython, the runtime, adapters), so one call may take 14
        // core instance slots: 16 per component keeps `max_instances` Python calls possible.
        pool.total_component_instances(n)
            .total_core_instances(n * 16)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
            // Idle slots keep up to KEEP_RESIDENT of dirtied memory each: bound how many
            // stay warm, so a burst of interpreter calls (a Python call dirties ~15 MiB)
            // does not leave the gateway holding a gigabyte afterwards. 16 is several times
            // the calls two cores run at once; colder slots are unmapped.
            .max_unused_warm_slots(n.min(WARM_SLOTS))
            // Reset a slot by rewriting only the pages the last call dirtied (PAGEMAP_SCAN,
            // Linux 6.7+) and keep a small resident window, instead of unmapping and
            // faulting the guest's memory back in on every call.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
        let mut wc = wasmtime::Config::new();
        wc.epoch_interruption(true)
            .allocation_strategy(pool)
            .memory_init_cow(true)
            // Linear memories are reserved up to the cap only; larger guests (interpreters)
            // raise the cap through their plugin's memory_limit.
            .memory_reservation(max_memory.max(1 << 20))
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0)
            // Interpreters (Python, JavaScript) arrive with a pre-initialized heap snapshot
            // that may be sparse; past wasmtime's default 16 MiB such a memory would be copied
            // in on every instantiation instead of being mapped copy-on-write. (The owner
            // examples start at 13 MiB (Python) and 9 MiB (JS); a bigger program crosses it.)
            .memory_guaranteed_dense_image_size(DENSE_IMAGE_LIMIT);
        let engine = Engine::new(&wc).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        contract::add_to_linker(&mut linker).map_err(engine_err)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            cache_dir: config.cache_dir.clone(),
            instances: Arc::new(Semaphore::new(n as usize)),
            kept: Arc::new(Semaphore::new(n as usize / 4)),
            ticker,
            preparer: std::sync::OnceLock::new(),
        })
    }

    /// A runtime sized for every plugin in `config`.
    pub fn for_config(config: &Config) -> Result<Self, LoadError> {
        let max_memory = config
            .plugins
            .iter()
            .map(|p| p.memory_limit.as_u64())
            .max()
            .unwrap_or(64 << 20);
        Self::new(&config.runtime, max_memory)
    }

    /// Loads every configured plugin, in order; the first failure stops it all.
    pub async fn load_all(
        self: &Arc<Self>,
        config: &Config,
    ) -> Result<Vec<Arc<Plugin>>, LoadError> {
        let mut out = Vec::with_capacity(config.plugins.len());
        for p in &config.plugins {
            let plugin = match p.kind {
                crate::config::Kind::Wasm => self.load(p, &config.plugin_path(p)).await?,
                crate::config::Kind::Rego => self.load_rego(p, &config.plugin_path(p))?,
                crate::config::Kind::OpaWasm => self.load_opa(p, &config.plugin_path(p)).await?,
            };
            plugin.check_config().await?;
            out.push(Arc::new(plugin));
        }
        Ok(out)
    }

    /// Compiles (or loads from cache), checks the contract version, links, and asks the
    /// plugin to `describe` itself. See [`Plugin::check_config`] for its configuration.
    pub async fn load(
        self: &Arc<Self>,
        cfg: &PluginConfig,
        path: &Path,
    ) -> Result<Plugin, LoadError> {
        let name = cfg.name.clone();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.clone(),
            path: shown.clone(),
            source,
        })?;
        let component = {
            let engine = self.engine.clone();
            let dir = self.cache_dir.clone();
            // Compilation is CPU-bound and can take seconds for interpreters.
            tokio::task::spawn_blocking(move || cache::load(&engine, dir.as_deref(), &bytes))
                .await
                .map_err(|e| LoadError::Engine(e.to_string()))?
                .map_err(|e| LoadError::NotComponent {
                    name: name.clone(),
                    path: shown.clone(),
                    reason: format!("{e:#}"),
                })?
        };
        check_contract(&self.engine, &component, &name, &shown)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| LoadError::Link {
                name: name.clone(),
                path: shown.clone(),
                reason: format!("{e:#}"),
            })?;
        let config_json = serde_json::to_string(&cfg.config).map_err(|e| LoadError::Config {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let mut plugin = Plugin {
            cfg: cfg.clone(),
            info: model::Info {
                name: String::new(),
                version: String::new(),
                hooks: model::Hooks::empty(),
            },
            config_json,
            endpoints: glob_set(&cfg.endpoints, &name, "endpoints")?,
            response_endpoints: response_globs(cfg)?,
            backend: Backend::Wasm(pre),
            runtime: self.clone(),
            warm: cfg.reuse.as_ref().map(WarmPool::new),
            spares: std::sync::OnceLock::new(),
        };
        plugin.info = plugin.probe().await.map_err(|failure| LoadError::Probe {
            name: name.clone(),
            failure,
        })?;
        Ok(plugin)
    }
}

impl Runtime {
    /// Loads a Rego policy (`kind = "rego"`) as a validating request plugin.
    pub fn load_rego(
        self: &Arc<Self>,
        cfg: &PluginConfig,
        path: &Path,
    ) -> Result<Plugin, LoadError> {
        let config_error = |reason: String| LoadError::Config {
            name: cfg.name.clone(),
            reason,
        };
        let policy = rego::load(cfg, path).map_err(config_error)?;
        self.policy_plugin(cfg, "rego", Backend::Rego(Box::new(policy)))
    }

    /// A plugin around a policy in OPA's language (Rego, or compiled to wasm): it judges
    /// requests only and has no configuration hook of its own.
    fn policy_plugin(
        self: &Arc<Self>,
        cfg: &PluginConfig,
        version: &str,
        backend: Backend,
    ) -> Result<Plugin, LoadError> {
        Ok(Plugin {
            cfg: cfg.clone(),
            info: model::Info {
                name: cfg.name.clone(),
                version: version.into(),
                hooks: model::Hooks::REQUEST,
            },
            config_json: String::new(),
            endpoints: glob_set(&cfg.endpoints, &cfg.name, "endpoints")?,
            response_endpoints: response_globs(cfg)?,
            backend,
            runtime: self.clone(),
            warm: None,
            spares: std::sync::OnceLock::new(),
        })
    }
}

impl Runtime {
    /// Loads an OPA policy compiled to wasm (`kind = "opa-wasm"`) as a validating request
    /// plugin, and instantiates it once in the sandbox, so that a file that is no OPA policy,
    /// lacks the entrypoint or calls a builtin the gateway refuses stops start-up (and
    /// `portcullis check`) with the file named.
    pub async fn load_opa(
        self: &Arc<Self>,
        cfg: &PluginConfig,
        path: &Path,
    ) -> Result<Plugin, LoadError> {
        let shown = path.display().to_string();
        let plugin_error = |e: opa::Error| match e {
            opa::Error::NotOpa(reason) => LoadError::NotOpaPolicy {
                name: cfg.name.clone(),
                path: shown.clone(),
                reason,
            },
            opa::Error::NoEntrypoint { .. } => LoadError::Config {
                name: cfg.name.clone(),
                reason: format!("{shown}: {e}"),
            },
            opa::Error::Eval(e) => LoadError::NotOpaPolicy {
                name: cfg.name.clone(),
                path: shown.clone(),
                reason: format!("{e:#}"),
            },
        };
        let policy = opa::compile(&self.engine, cfg, path)
            .await
            .map_err(plugin_error)?;
        let plugin = self.policy_plugin(cfg, "opa-wasm", Backend::Opa(Box::new(policy)))?;
        if let Backend::Opa(policy) = &plugin.backend {
            let _ticking = self.ticker.ticking();
            let probe = |store: &Store<State>, e: opa::Error| match e {
                opa::Error::Eval(e) => match plugin.opa_failure(store, &e) {
                    PluginFailure::Trap(reason) => plugin_error(opa::Error::NotOpa(reason)),
                    failure => LoadError::Probe {
                        name: cfg.name.clone(),
                        failure,
                    },
                },
                e => plugin_error(e),
            };
            let mut store = plugin.new_store(0);
            if let Err(e) = policy.check_builtins(&mut store).await {
                return Err(probe(&store, e));
            }
            let mut store = plugin.new_store(0);
            if let Err(e) = policy.run(&mut store, None).await {
                return Err(probe(&store, e));
            }
        }
        Ok(plugin)
    }
}

/// The endpoint-name globs of a plugin's `key` (`endpoints`, `response_endpoints`). A
/// pattern starting with `!` takes the endpoints it matches out of those the others select;
/// only `!` patterns select every endpoint but theirs.
fn glob_set(patterns: &[String], plugin: &str, key: &str) -> Result<EndpointSet, LoadError> {
    let config_error = |e: globset::Error| LoadError::Config {
        name: plugin.to_owned(),
        reason: format!("{key}: {e}"),
    };
    let mut include = GlobSetBuilder::new();
    let mut exclude = GlobSetBuilder::new();
    for g in patterns {
        match g.strip_prefix('!') {
            Some(g) => exclude.add(Glob::new(g).map_err(config_error)?),
            None => include.add(Glob::new(g).map_err(config_error)?),
        };
    }
    // An empty list selects nothing, as before `!` existed.
    if !patterns.is_empty() && patterns.iter().all(|g| g.starts_with('!')) {
        include.add(Glob::new("*").map_err(config_error)?);
    }
    Ok(EndpointSet::new(
        include.build().map_err(config_error)?,
        exclude.build().map_err(config_error)?,
    ))
}

/// Endpoint globs, matched once at load against every endpoint name the classifier knows:
/// a request asks whether each plugin applies several times (request, response, audit
/// hooks), and a glob set match builds a candidate path each time.
struct EndpointSet {
    include: GlobSet,
    exclude: GlobSet,
    known: HashMap<&'static str, bool>,
}

impl EndpointSet {
    fn new(include: GlobSet, exclude: GlobSet) -> Self {
        let mut set = Self {
            include,
            exclude,
            known: HashMap::new(),
        };
        set.known = crate::route::endpoints()
            .map(|e| e.name)
            .chain([crate::route::UNKNOWN.name])
            .map(|name| (name, set.matches(name)))
            .collect();
        set
    }

    fn matches(&self, endpoint: &str) -> bool {
        self.include.is_match(endpoint) && !self.exclude.is_match(endpoint)
    }

    fn is_match(&self, endpoint: &str) -> bool {
        match self.known.get(endpoint) {
            Some(matched) => *matched,
            None => self.matches(endpoint),
        }
    }
}

/// `response_endpoints`, when configured.
fn response_globs(cfg: &PluginConfig) -> Result<Option<EndpointSet>, LoadError> {
    cfg.response_endpoints
        .as_deref()
        .map(|p| glob_set(p, &cfg.name, "response_endpoints"))
        .transpose()
}

/// Finds the policy export and compares its version with ours, so an old or new plugin is
/// refused with both versions named rather than with a linker error.
fn check_contract(
    engine: &Engine,
    component: &Component,
    name: &str,
    path: &str,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let prefix = format!("{}@", bindings::POLICY_INTERFACE);
    match exports.iter().find(|e| e.starts_with(&prefix)) {
        Some(e) if e.as_str() == format!("{prefix}{CONTRACT_VERSION}") => Ok(()),
        Some(e) => Err(LoadError::Incompatible {
            name: name.into(),
            path: path.into(),
            found: e[prefix.len()..].to_string(),
            supported: CONTRACT_VERSION,
        }),
        None => Err(LoadError::MissingExport {
            name: name.into(),
            path: path.into(),
            interface: bindings::POLICY_INTERFACE,
            supported: CONTRACT_VERSION,
            exports: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        }),
    }
}

/// A loaded plugin, ready to be instantiated per call.
pub struct Plugin {
    cfg: PluginConfig,
    info: model::Info,
    config_json: String,
    endpoints: EndpointSet,
    /// `response_endpoints`, when configured.
    response_endpoints: Option<EndpointSet>,
    backend: Backend,
    runtime: Arc<Runtime>,
    /// Initialized instances kept between calls, when the configuration opts in.
    warm: Option<WarmPool>,
    /// Fresh instances prepared ahead of calls (`runtime.prepared_instances`), once started
    /// by [`Plugin::prepare`].
    spares: std::sync::OnceLock<Arc<Spares>>,
}

/// How a plugin runs.
enum Backend {
    /// A component, instantiated fresh per call.
    Wasm(PluginPre<State>),
    /// A Rego policy, evaluated in-process.
    Rego(Box<rego::Policy>),
    /// An OPA policy compiled to wasm, instantiated fresh per call.
    Opa(Box<opa::Policy>),
}

/// Which hook to call.
pub enum Hook<'a> {
    /// Judge a request.
    Request(&'a model::Request),
    /// Judge or rewrite a response.
    Response(&'a model::Request, &'a model::Response),
    /// Shape an audit record (JSON text).
    Audit(&'a model::Request, &'a str),
}

impl Plugin {
    /// The configured name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    /// What the plugin says about itself.
    pub fn info(&self) -> &model::Info {
        &self.info
    }
    /// Its configuration entry.
    pub fn config(&self) -> &PluginConfig {
        &self.cfg
    }
    /// Mutate or validate.
    pub fn phase(&self) -> Phase {
        self.cfg.phase
    }
    /// Enforce or audit.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }
    /// Whether the plugin is configured for this endpoint.
    pub fn applies_to(&self, endpoint: &str) -> bool {
        self.endpoints.is_match(endpoint)
    }
    /// Whether it implements `hook`.
    pub fn has(&self, hook: model::Hooks) -> bool {
        self.info.hooks.contains(hook)
    }
    /// Whether `hook` is to be called for `endpoint`: implemented, configured for the
    /// endpoint, and for responses within `response_endpoints`.
    pub fn hooks(&self, hook: model::Hooks, endpoint: &str) -> bool {
        self.has(hook)
            && self.applies_to(endpoint)
            && (hook != model::Hooks::RESPONSE
                || self
                    .response_endpoints
                    .as_ref()
                    .is_none_or(|g| g.is_match(endpoint)))
    }

    async fn probe(&self) -> Result<model::Info, PluginFailure> {
        match self.call(0, Call::Describe).await? {
            Output::Info(info) => Ok(info),
            _ => Err(PluginFailure::Malformed(
                "describe returned no description".into(),
            )),
        }
    }

    /// Runs `init` with the configured `config` table once, so that a configuration the
    /// plugin rejects stops start-up (and `portcullis check`) instead of every request.
    pub async fn check_config(&self) -> Result<(), LoadError> {
        self.call(0, Call::Init)
            .await
            .map(|_| ())
            .map_err(|failure| match failure {
                PluginFailure::Init(reason) => LoadError::Config {
                    name: self.cfg.name.clone(),
                    reason,
                },
                failure => LoadError::Probe {
                    name: self.cfg.name.clone(),
                    failure,
                },
            })
    }

    /// Instantiates the plugin from the pool, calls nothing, and tears the instance down:
    /// what the per-call sandbox costs (`portcullis plugin bench`). Returns the time to a
    /// ready instance (a new store and the instantiation; what a call without a prepared
    /// instance waits for) and the teardown (resetting the pool slot's memory and tables),
    /// which with prepared instances runs on the preparing thread, off the request's path.
    pub async fn instantiate_only(&self) -> Result<(Duration, Duration), PluginFailure> {
        let start = std::time::Instant::now();
        let Backend::Wasm(pre) = &self.backend else {
            self.call(0, Call::Instantiate).await?;
            return Ok((start.elapsed(), Duration::ZERO));
        };
        let (permit, ticking, mut store) = self.fresh_store(0).await?;
        let made = pre.instantiate_async(&mut store).await;
        let instantiated = start.elapsed();
        if let Err(e) = made {
            return Err(self.failure(&store, &e));
        }
        let start = std::time::Instant::now();
        drop(store);
        drop((ticking, permit));
        Ok((instantiated, start.elapsed()))
    }

    /// Calls `hook` on a fresh instance (after `init` with the plugin's configuration).
    pub async fn invoke(
        &self,
        request_id: u64,
        hook: Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        match self.call(request_id, Call::Hook(hook)).await? {
            Output::Verdict(v) => Ok(v),
            _ => Err(PluginFailure::Malformed("hook returned no verdict".into())),
        }
    }

    /// Calls the request hook on a fresh instance and, when `keep` asks for it and the call
    /// succeeded, keeps that instance for the same request's response hook
    /// ([`Plugin::invoke_kept`]). Nothing leaks between callers: the instance serves one
    /// request of one caller, as the contract documents, and a plugin with both hooks
    /// costs one instance per request instead of two. A kept instance holds its pool slot
    /// while the engine answers, so at most a quarter of the pool is kept at once (beyond
    /// that the response hook gets a fresh instance, as before); only components without
    /// `[plugins.reuse]` are kept.
    pub async fn invoke_request(
        &self,
        request_id: u64,
        req: &model::Request,
        keep: bool,
    ) -> (Result<model::Verdict, PluginFailure>, Option<Kept>) {
        let (Backend::Wasm(pre), None, true) = (&self.backend, &self.warm, keep) else {
            return (self.invoke(request_id, Hook::Request(req)).await, None);
        };
        let Ok(held) = self.runtime.kept.clone().try_acquire_owned() else {
            return (self.invoke(request_id, Hook::Request(req)).await, None);
        };
        let spares = self.spares.get();
        let _ticking = self.runtime.ticker.ticking();
        let mut instance = match spares.and_then(|s| s.take()) {
            Some(mut instance) => {
                instance
                    .store
                    .data_mut()
                    .start_call(request_id, self.cfg.timeout);
                instance
            }
            None => {
                let permit = match self.runtime.instances.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => {
                        return (
                            Err(PluginFailure::Trap("plugin runtime closed".into())),
                            None,
                        )
                    }
                };
                match self.initialized(pre, permit, request_id).await {
                    Ok(instance) => instance,
                    Err(failure) => return (Err(failure), None),
                }
            }
        };
        match contract::call_hook(&instance.bindings, &mut instance.store, &Hook::Request(req))
            .await
        {
            Ok(verdict) => {
                let kept = Kept {
                    plugin: self as *const Plugin as usize,
                    instance: Some(instance),
                    spares: spares.cloned(),
                    _held: held,
                };
                (Ok(verdict), Some(kept))
            }
            Err(e) => {
                let failure = self.failure(&instance.store, &e);
                if let Some(spares) = spares {
                    spares.retire(instance);
                }
                (Err(failure), None)
            }
        }
    }

    /// Calls `hook` on `kept`, the instance this request's request hook ran in
    /// ([`Plugin::invoke_request`]), which is then torn down; without one (or with another
    /// plugin's), on a fresh instance like [`Plugin::invoke`].
    pub async fn invoke_kept(
        &self,
        kept: Option<Kept>,
        request_id: u64,
        hook: Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        let mut kept = kept.filter(|k| k.belongs_to(self));
        let Some(instance) = kept.as_mut().and_then(|k| k.instance.as_mut()) else {
            return self.invoke(request_id, hook).await;
        };
        let _ticking = self.runtime.ticker.ticking();
        instance
            .store
            .data_mut()
            .start_call(request_id, self.cfg.timeout);
        let result = contract::call_hook(&instance.bindings, &mut instance.store, &hook).await;
        result.map_err(|e| self.failure(&instance.store, &e))
    }

    /// Instantiates and makes `what` call(s), under the deadline and the memory cap.
    async fn call(&self, request_id: u64, what: Call<'_>) -> Result<Output, PluginFailure> {
        let pre = match &self.backend {
            Backend::Wasm(pre) => pre,
            Backend::Rego(policy) => return rego_call(&self.info, policy, what),
            Backend::Opa(policy) => return self.opa_call(policy, request_id, what).await,
        };
        if let (Some(warm), Call::Hook(hook)) = (&self.warm, &what) {
            return self
                .call_reused(pre, warm, request_id, hook)
                .await
                .map(Output::Verdict);
        }
        if let (Some(spares), Call::Hook(hook)) = (self.spares.get(), &what) {
            if let Some(instance) = spares.take() {
                return self
                    .call_spare(spares, instance, request_id, hook)
                    .await
                    .map(Output::Verdict);
            }
        }
        let (_permit, _ticking, mut store) = self.fresh_store(request_id).await?;
        let result: wasmtime::Result<Result<Output, PluginFailure>> = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let hook = match what {
                Call::Instantiate => return Ok(Ok(Output::Initialized)),
                Call::Describe => {
                    return Ok(Ok(Output::Info(
                        contract::describe(&instance, &mut store).await?,
                    )))
                }
                Call::Init => None,
                Call::Hook(hook) => Some(hook),
            };
            if let Err(reason) = contract::init(&instance, &mut store, &self.config_json).await? {
                return Ok(Err(PluginFailure::Init(reason)));
            }
            Ok(Ok(match hook {
                None => Output::Initialized,
                Some(hook) => {
                    Output::Verdict(contract::call_hook(&instance, &mut store, &hook).await?)
                }
            }))
        }
        .await;
        result.unwrap_or_else(|e| Err(self.failure(&store, &e)))
    }

    /// A hook call on an initialized instance kept from an earlier call (`[plugins.reuse]`),
    /// or on a new one that is kept afterwards. An instance that failed in any way, wrote to
    /// stderr, or served its `calls` is dropped instead of kept.
    async fn call_reused(
        &self,
        pre: &PluginPre<State>,
        warm: &WarmPool,
        request_id: u64,
        hook: &Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        let _ticking = self.runtime.ticker.ticking();
        let idle = warm.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut instance = match idle {
            Some(mut w) => {
                w.store.data_mut().start_call(request_id, self.cfg.timeout);
                w
            }
            None => {
                let permit = self
                    .runtime
                    .instances
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PluginFailure::Trap("plugin runtime closed".into()))?;
                self.initialized(pre, permit, request_id).await?
            }
        };
        let result = contract::call_hook(&instance.bindings, &mut instance.store, hook).await;
        instance.calls += 1;
        match result {
            Ok(verdict) => {
                let spent = instance.calls >= warm.calls || instance.store.data().wrote_stderr();
                if !spent {
                    if let Ok(mut idle) = warm.idle.lock() {
                        if idle.len() < warm.keep {
                            idle.push(instance);
                        }
                    }
                }
                Ok(verdict)
            }
            Err(e) => Err(self.failure(&instance.store, &e)),
        }
    }

    /// A fresh instance, after `init` with the plugin's configuration, in the pool slot of
    /// `permit`.
    async fn initialized(
        &self,
        pre: &PluginPre<State>,
        permit: tokio::sync::OwnedSemaphorePermit,
        request_id: u64,
    ) -> Result<Warm, PluginFailure> {
        let mut store = self.new_store(request_id);
        let made: wasmtime::Result<Result<contract::Plugin, String>> = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let init = contract::init(&instance, &mut store, &self.config_json).await?;
            Ok(init.map(|()| instance))
        }
        .await;
        match made {
            Ok(Ok(bindings)) => Ok(Warm {
                store,
                bindings,
                calls: 0,
                _permit: permit,
            }),
            Ok(Err(reason)) => Err(PluginFailure::Init(reason)),
            Err(e) => Err(self.failure(&store, &e)),
        }
    }

    /// A hook call on a prepared instance: it serves this one call, then goes back to the
    /// preparing task to be torn down there, off the request's path.
    async fn call_spare(
        &self,
        spares: &Spares,
        mut instance: Warm,
        request_id: u64,
        hook: &Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        let _ticking = self.runtime.ticker.ticking();
        instance
            .store
            .data_mut()
            .start_call(request_id, self.cfg.timeout);
        let result = contract::call_hook(&instance.bindings, &mut instance.store, hook).await;
        let result = result.map_err(|e| self.failure(&instance.store, &e));
        spares.retire(instance);
        result
    }

    /// Starts preparing `count` fresh, initialized instances ahead of this plugin's calls, on
    /// a task of its own (on the `portcullis-prepare` thread) that also tears used ones down.
    /// Still a fresh instance per call: each prepared instance serves exactly one call, and
    /// nothing runs in it before that but instantiation and `init` with the plugin's own
    /// configuration, which every call runs anyway; only the time they take leaves the
    /// request's path. For components without
    /// `[plugins.reuse]`; a no-op otherwise or when `count` is 0.
    pub fn prepare(self: &Arc<Self>, count: usize) {
        if count == 0 || self.warm.is_some() || !matches!(self.backend, Backend::Wasm(_)) {
            return;
        }
        let spares = Arc::new(Spares {
            ready: std::sync::Mutex::new(Vec::with_capacity(count)),
            spent: std::sync::Mutex::new(Vec::new()),
            want: count,
            wake: tokio::sync::Notify::new(),
        });
        if self.spares.set(spares.clone()).is_err() {
            return;
        }
        let plugin = Arc::downgrade(self);
        let preparer = self.runtime.preparer.get_or_init(|| {
            Preparer::start().unwrap_or_else(|| {
                // No thread to be had: prepare on the caller's runtime, as a task among the rest.
                Preparer {
                    handle: tokio::runtime::Handle::current(),
                    _stop: tokio::sync::oneshot::channel().0,
                }
            })
        });
        preparer.handle.spawn(async move {
            loop {
                // Tear down what was used (this is where a store's memory is reset).
                let spent = spares
                    .spent
                    .lock()
                    .map(|mut v| std::mem::take(&mut *v))
                    .unwrap_or_default();
                drop(spent);
                let Some(p) = plugin.upgrade() else {
                    return;
                };
                let Backend::Wasm(pre) = &p.backend else {
                    return;
                };
                while spares.len() < spares.want {
                    // Never wait for a pool slot: a call that needs one goes first.
                    let Ok(permit) = p.runtime.instances.clone().try_acquire_owned() else {
                        break;
                    };
                    let _ticking = p.runtime.ticker.ticking();
                    match p.initialized(pre, permit, 0).await {
                        Ok(instance) => {
                            if let Ok(mut ready) = spares.ready.lock() {
                                ready.push(instance);
                            }
                        }
                        // A call then makes its own instance and reports the failure.
                        Err(_) => break,
                    }
                }
                drop(p);
                spares.wake.notified().await;
            }
        });
    }

    /// What a call on a fresh instance holds while it runs: a slot of the instance pool
    /// (bounded like every resource: calls beyond the pool wait for one), the epoch ticker
    /// kept going, and a new store.
    async fn fresh_store(
        &self,
        request_id: u64,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, Ticking, Store<State>), PluginFailure> {
        let permit = self
            .runtime
            .instances
            .acquire()
            .await
            .map_err(|_| PluginFailure::Trap("plugin runtime closed".into()))?;
        let ticking = self.runtime.ticker.ticking();
        Ok((permit, ticking, self.new_store(request_id)))
    }

    /// A store for one instance: the memory cap, the granted capabilities, the deadline.
    fn new_store(&self, request_id: u64) -> Store<State> {
        let limit = self.cfg.memory_limit.as_u64() as usize;
        let state = State::new(
            &self.cfg.name,
            request_id,
            limit,
            &self.cfg.grants,
            self.cfg.timeout,
        );
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| ctx.data_mut().tick());
        store
    }

    /// Names what stopped a call: its deadline, its memory cap, or a trap (with the panic
    /// message the guest wrote to stderr).
    fn failure(&self, store: &Store<State>, e: &wasmtime::Error) -> PluginFailure {
        let state = store.data();
        if e.root_cause().is::<DeadlineExceeded>() {
            PluginFailure::Timeout(self.cfg.timeout)
        } else if state.memory_exceeded() {
            PluginFailure::Memory(self.cfg.memory_limit)
        } else {
            let stderr = state.stderr();
            let root = e.root_cause().to_string();
            PluginFailure::Trap(if stderr.is_empty() {
                root
            } else {
                format!("{root}: {stderr}")
            })
        }
    }
}

impl Plugin {
    /// A call on an OPA wasm policy: like a component's, a fresh instance in a store with the
    /// deadline and the memory cap, taking a slot of the instance pool. Only requests are
    /// judged.
    async fn opa_call(
        &self,
        policy: &opa::Policy,
        request_id: u64,
        what: Call<'_>,
    ) -> Result<Output, PluginFailure> {
        let req = match what {
            Call::Describe => return Ok(Output::Info(self.info.clone())),
            Call::Hook(Hook::Request(req)) => Some(req),
            Call::Hook(_) => return Ok(Output::Verdict(model::Verdict::Allow)),
            Call::Instantiate | Call::Init => None,
        };
        let (_permit, _ticking, mut store) = self.fresh_store(request_id).await?;
        match policy.run(&mut store, req).await {
            Ok(Some(verdict)) => Ok(Output::Verdict(verdict)),
            Ok(None) => Ok(Output::Initialized),
            Err(opa::Error::Eval(e)) => Err(self.opa_failure(&store, &e)),
            // Checked at load; a module that changed its mind is a failure like a trap.
            Err(e) => Err(PluginFailure::Trap(e.to_string())),
        }
    }

    /// [`Plugin::failure`] for opa-wasm's errors, which carry wasmtime's as `anyhow` errors.
    fn opa_failure(&self, store: &Store<State>, e: &anyhow::Error) -> PluginFailure {
        if opa::stopped_by_deadline(e) {
            PluginFailure::Timeout(self.cfg.timeout)
        } else if store.data().memory_exceeded() {
            PluginFailure::Memory(self.cfg.memory_limit)
        } else {
            PluginFailure::Trap(format!("{e:#}"))
        }
    }
}

/// Initialized instances of one plugin, kept for reuse (`[plugins.reuse]`).
struct WarmPool {
    idle: std::sync::Mutex<Vec<Warm>>,
    /// Idle instances kept at most.
    keep: usize,
    /// Calls after which an instance is dropped.
    calls: u32,
}

impl WarmPool {
    fn new(reuse: &crate::config::Reuse) -> Self {
        Self {
            idle: std::sync::Mutex::new(Vec::new()),
            keep: reuse.instances as usize,
            calls: reuse.calls,
        }
    }
}

/// Fresh initialized instances waiting for the one call each will serve, and used ones
/// waiting to be torn down, both handled by the plugin's preparing task ([`Plugin::prepare`]).
struct Spares {
    ready: std::sync::Mutex<Vec<Warm>>,
    spent: std::sync::Mutex<Vec<Warm>>,
    want: usize,
    wake: tokio::sync::Notify,
}

impl Spares {
    fn len(&self) -> usize {
        self.ready.lock().map(|v| v.len()).unwrap_or(usize::MAX)
    }

    /// A ready instance. The preparing task is woken when the last one is taken, not for
    /// each: it runs on a thread of its own, and waking a parked thread costs the request
    /// about 18 µs on a small VM (a futex and an inter-processor interrupt). A call that
    /// finds none ready instantiates on its own path, as without preparing.
    fn take(&self) -> Option<Warm> {
        let mut ready = self.ready.lock().ok()?;
        let instance = ready.pop()?;
        let empty = ready.is_empty();
        drop(ready);
        if empty {
            self.wake.notify_one();
        }
        Some(instance)
    }

    /// Hands a used instance back for teardown, done when the preparing task next wakes.
    /// Used instances keep their pool slots until torn down, so once `want` of them wait the
    /// task is woken for them: a plugin holds at most twice `want` slots between calls
    /// (what [`crate::pipeline::Chain::prepare`] budgets for).
    fn retire(&self, instance: Warm) {
        let waiting = match self.spent.lock() {
            Ok(mut spent) => {
                spent.push(instance);
                spent.len()
            }
            Err(_) => return,
        };
        if waiting >= self.want {
            self.wake.notify_one();
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // Lets the preparing task see that the plugin is gone and end.
        if let Some(spares) = self.spares.get() {
            spares.wake.notify_one();
        }
    }
}

/// An instance kept from a request's request hook for its response hook
/// ([`Plugin::invoke_request`]). Dropped, it goes to its plugin's preparing task for teardown
/// (or is torn down where it is dropped when the plugin prepares nothing).
pub struct Kept {
    /// The plugin it belongs to (its address), checked before the response hook runs in it.
    plugin: usize,
    instance: Option<Warm>,
    spares: Option<Arc<Spares>>,
    /// Its place among the instances kept at once (a quarter of the pool).
    _held: tokio::sync::OwnedSemaphorePermit,
}

impl Kept {
    /// Whether it was kept by `plugin`.
    pub fn belongs_to(&self, plugin: &Plugin) -> bool {
        self.plugin == plugin as *const Plugin as usize
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let (Some(instance), Some(spares)) = (self.instance.take(), &self.spares) {
            spares.retire(instance);
        }
    }
}

/// One initialized instance with its store and the pool slot it holds.
struct Warm {
    store: Store<State>,
    bindings: contract::Plugin,
    calls: u32,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A call on a Rego policy: only requests are judged; an evaluation error (a builtin
/// failing, the time limit) is a failure like a trapping plugin's.
fn rego_call(
    info: &model::Info,
    policy: &rego::Policy,
    what: Call<'_>,
) -> Result<Output, PluginFailure> {
    Ok(match what {
        Call::Instantiate | Call::Init => Output::Initialized,
        Call::Describe => Output::Info(info.clone()),
        Call::Hook(Hook::Request(req)) => {
            Output::Verdict(policy.evaluate(req).map_err(PluginFailure::Trap)?)
        }
        Call::Hook(_) => Output::Verdict(model::Verdict::Allow),
    })
}

/// What one sandboxed call does.
enum Call<'a> {
    /// Nothing beyond instantiation (to measure it).
    Instantiate,
    /// `describe` only (no configuration needed).
    Describe,
    /// `init` only.
    Init,
    /// `init`, then the hook.
    Hook(Hook<'a>),
}

enum Output {
    Info(model::Info),
    Initialized,
    Verdict(model::Verdict),
}

/// Advances the engine's epoch every [`TICK`] on a small thread while plugin calls run.
///
/// Between calls it backs off (2, 4, ... up to [`IDLE_SLEEP_MAX`] between ticks) and after
/// [`PARK_AFTER`] without a call it parks until the next call starts, so an idle gateway
/// does not wake a thousand times a second. A call that starts while the ticker backs off
/// does not wake it: on a small VM that wake-up (a futex and an inter-processor interrupt)
/// cost the request about 17 µs, where a deadline first checked up to [`IDLE_SLEEP_MAX`]
/// late costs nothing (timeouts are tens of milliseconds, and the ticker is back at
/// [`TICK`] from its next tick on). Only a parked ticker is woken by a starting call.
struct EpochTicker {
    shared: Arc<TickerShared>,
}

/// Ticks at [`TICK`] after the last call before the ticker backs off: a request's calls
/// come in a burst.
const IDLE_TICKS: u32 = 2;
/// The longest sleep between ticks while backing off.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(16);
/// Idle time after which the ticker parks.
const PARK_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct TickerShared {
    /// Calls running now.
    active: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    /// The ticker is parked or about to park: a starting call must wake it.
    parked: std::sync::atomic::AtomicBool,
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

/// Held by a running call: keeps the epoch advancing, so its deadline can fire.
struct Ticking(Arc<TickerShared>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        use std::sync::atomic::Ordering;
        let shared = Arc::new(TickerShared::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0;
                let mut idle_for = Duration::ZERO;
                let mut sleep = TICK;
                while !s.stop.load(Ordering::Acquire) {
                    std::thread::sleep(sleep);
                    engine.increment_epoch();
                    if s.active.load(Ordering::Acquire) > 0 {
                        idle_ticks = 0;
                        idle_for = Duration::ZERO;
                        sleep = TICK;
                        continue;
                    }
                    idle_ticks += 1;
                    idle_for += sleep;
                    if idle_ticks >= IDLE_TICKS {
                        sleep = (sleep * 2).min(IDLE_SLEEP_MAX);
                    }
                    if idle_for >= PARK_AFTER {
                        // `parked` is raised before `active` is checked, and a starting call
                        // raises `active` before it reads `parked` (both SeqCst): either the
                        // call sees `parked` and notifies under the lock, or this sees the
                        // call. No lost wake-up, and calls on a ticking ticker skip the lock.
                        let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                        s.parked.store(true, Ordering::SeqCst);
                        let _guard = s
                            .wake
                            .wait_while(guard, |_| {
                                s.active.load(Ordering::SeqCst) == 0
                                    && !s.stop.load(Ordering::Acquire)
                            })
                            .unwrap_or_else(|e| e.into_inner());
                        s.parked.store(false, Ordering::SeqCst);
                        idle_ticks = 0;
                        idle_for = Duration::ZERO;
                        sleep = TICK;
                    }
                }
            })
            .ok();
        Self { shared }
    }

    /// Marks a call as running until the returned guard is dropped.
    fn ticking(&self) -> Ticking {
        use std::sync::atomic::Ordering;
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst) {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_one();
        }
        Ticking(self.shared.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_one();
    }
}

/// A request as plugins see it, for unit tests: alice, over a unix socket, API 1.41, no
/// query, headers or body.
#[cfg(test)]
pub(crate) fn test_request(method: &str, path: &str, endpoint: &str) -> model::Request {
    model::Request {
        id: 1,
        method: method.into(),
        path: path.into(),
        api_version: Some("1.41".into()),
        endpoint: endpoint.into(),
        object_id: None,
        query: Vec::new(),
        headers: Vec::new(),
        body: None,
        caller: model::Caller {
            user: "alice".into(),
            groups: Vec::new(),
            auth: model::AuthMethod::PeerCredentials,
            peer: "unix(uid=1000)".into(),
        },
        target: None,
        related: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> EndpointSet {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        glob_set(&patterns, "p", "endpoints").unwrap()
    }

    #[test]
    fn endpoint_globs_can_take_endpoints_out() {
        let all_but_ping = set(&["*", "!system.ping"]);
        assert!(all_but_ping.is_match("container.list"));
        assert!(all_but_ping.is_match("system.version"));
        assert!(!all_but_ping.is_match("system.ping"));
        // Only exclusions: every endpoint but theirs.
        let no_system = set(&["!system.*"]);
        assert!(no_system.is_match("container.create"));
        assert!(!no_system.is_match("system.info"));
        // Exclusions narrow the inclusions, in any order.
        let containers = set(&["!container.list", "container.*"]);
        assert!(containers.is_match("container.create"));
        assert!(!containers.is_match("container.list"));
        assert!(!containers.is_match("volume.create"));
        // Names the classifier does not know are matched the same way.
        assert!(all_but_ping.is_match("future.endpoint"));
        assert!(!set(&["!future.*"]).is_match("future.endpoint"));
        // No pattern at all: no endpoint.
        assert!(!set(&[]).is_match("container.list"));
    }
}
