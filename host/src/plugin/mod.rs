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
mod load;
pub mod offline;
mod opa;
mod pool;
pub mod rego;
mod sandbox;
pub mod scaffold;
mod ticker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Engine, PoolingAllocationConfig, Store};

use prometheus_client::metrics::histogram::Histogram;

use crate::config::{Config, Mode, Phase, PluginConfig, RuntimeConfig};
use crate::metrics::{FailureLabels, Metrics, PluginLabels, PluginMetrics};
use crate::model;
use bindings::latest::{self as contract, PluginPre};
pub use bindings::CONTRACT_VERSION;
use load::EndpointSet;
use pool::{Budget, Pool, Pooled, Preparer, Slots};
use sandbox::{DeadlineExceeded, State};
use ticker::EpochTicker;

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
    /// The instance slots all plugins share ([`pool`]).
    slots: Arc<Slots>,
    ticker: EpochTicker,
    /// Where instances are prepared ahead of calls, started by the first [`Plugin::prepare`].
    preparer: OnceLock<Preparer>,
    /// Call latencies and failures, by plugin.
    metrics: PluginMetrics,
}

/// Initialized memory up to this extent is always laid out as one copy-on-write image (the
/// image is as large as the initialized extent, never this limit). Not part of wasmtime's
/// compatibility hash, so the cache key includes it ([`cache`]).
pub(crate) const DENSE_IMAGE_LIMIT: u64 = 256 << 20;

/// Bytes at the start of each pooled linear memory that stay mapped between calls. With
/// PAGEMAP_SCAN a reset rewrites only the pages the last call dirtied within this window, so
/// the next call writes to private pages instead of taking a copy-on-write fault for each
/// page it touches; the window is sized for what an interpreter's call dirties (BENCHMARKS.md
/// has the figures). Pages never touched stay unbacked, so the window costs resident memory
/// only for pages calls actually use.
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
            // stay warm, so a burst of interpreter calls (which dirty megabytes each)
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
            // in on every instantiation instead of being mapped copy-on-write, and an
            // interpreter's snapshot is close to that size already.
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
            slots: Slots::new(Budget { max_instances: n }),
            ticker,
            preparer: OnceLock::new(),
            metrics: Metrics::new().plugin,
        })
    }

    /// Records call latencies and failures in `metrics` (by default in metrics of its own
    /// that nobody reads).
    pub fn with_metrics(mut self, metrics: PluginMetrics) -> Self {
        self.metrics = metrics;
        self
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
}

/// A loaded plugin, ready to be instantiated per call.
pub struct Plugin {
    /// Unique in the process: what a [`Kept`] instance names its plugin by.
    id: usize,
    cfg: PluginConfig,
    info: model::Info,
    config_json: String,
    endpoints: EndpointSet,
    /// `response_endpoints`, when configured.
    response_endpoints: Option<EndpointSet>,
    backend: Backend,
    /// Its call latencies by hook ([`HOOK_NAMES`]), looked up at the first call of each.
    calls: [OnceLock<Histogram>; 4],
    runtime: Arc<Runtime>,
}

/// How a plugin runs. One enum, dispatched in one place ([`Plugin::call`]): the backends
/// share the call's bookkeeping but not its shape (a Rego policy runs in-process with no
/// sandbox, an OPA module in a fresh store, a component in an instance from its pool), and
/// only components keep instances between hooks.
enum Backend {
    /// A component, its instances from its [`Pool`].
    Component {
        pre: PluginPre<State>,
        pool: Arc<Pool<Instance>>,
    },
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

/// The `hook` label of a plugin's call metrics, by index: `init` covers loading, checking
/// the configuration and preparing instances.
const HOOK_NAMES: [&str; 4] = ["request", "response", "audit", "init"];

/// The next plugin id.
fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
        match self.call(0, Call::Describe, None, false).await.0? {
            Output::Info(info) => Ok(info),
            _ => Err(PluginFailure::Malformed(
                "describe returned no description".into(),
            )),
        }
    }

    /// Runs `init` with the configured `config` table once, so that a configuration the
    /// plugin rejects stops start-up (and `portcullis check`) instead of every request.
    pub async fn check_config(&self) -> Result<(), LoadError> {
        self.call(0, Call::Init, None, false)
            .await
            .0
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
        let Backend::Component { pre, .. } = &self.backend else {
            self.call(0, Call::Instantiate, None, false).await.0?;
            return Ok((start.elapsed(), Duration::ZERO));
        };
        let slot = self.runtime.slots.slot().await?;
        let _ticking = self.runtime.ticker.ticking();
        let mut store = self.new_store(0);
        let made = pre.instantiate_async(&mut store).await;
        let instantiated = start.elapsed();
        if let Err(e) = made {
            return Err(self.failure(&store, &e));
        }
        let start = std::time::Instant::now();
        drop(store);
        drop(slot);
        Ok((instantiated, start.elapsed()))
    }

    /// Calls `hook` (after `init` with the plugin's configuration, on an instance that
    /// serves this request only, or a reused one with `[plugins.reuse]`).
    pub async fn invoke(
        &self,
        request_id: u64,
        hook: Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        verdict(self.call(request_id, Call::Hook(hook), None, false).await.0)
    }

    /// Calls the request hook and, when `keep` asks for it and the call succeeded, keeps
    /// that instance for the same request's response hook ([`Plugin::invoke_kept`]).
    /// Nothing leaks between callers: the instance serves one request of one caller, as the
    /// contract documents, and a plugin with both hooks costs one instance per request
    /// instead of two. A kept instance holds its pool slot while the engine answers, so only
    /// a share of the pool is kept at once (beyond it the response hook gets a fresh
    /// instance); only components without `[plugins.reuse]` are kept.
    pub async fn invoke_request(
        &self,
        request_id: u64,
        req: &model::Request,
        keep: bool,
    ) -> (Result<model::Verdict, PluginFailure>, Option<Kept>) {
        let (output, kept) = self
            .call(request_id, Call::Hook(Hook::Request(req)), None, keep)
            .await;
        (verdict(output), kept)
    }

    /// Calls `hook` on `kept`, the instance this request's request hook ran in
    /// ([`Plugin::invoke_request`]), which is then torn down; without one (or with another
    /// plugin's), like [`Plugin::invoke`].
    pub async fn invoke_kept(
        &self,
        kept: Option<Kept>,
        request_id: u64,
        hook: Hook<'_>,
    ) -> Result<model::Verdict, PluginFailure> {
        verdict(self.call(request_id, Call::Hook(hook), kept, false).await.0)
    }

    /// The one way a plugin is called: the backend chosen, the epoch ticker kept going, an
    /// instance taken (`kept` when it is this plugin's, else from the pool or made anew),
    /// `what` run under the deadline and the memory cap, a failure named, and the instance
    /// handed back to the pool, or returned as [`Kept`] when `keep` asks for it and there is
    /// room.
    async fn call(
        &self,
        request_id: u64,
        what: Call<'_>,
        kept: Option<Kept>,
        keep: bool,
    ) -> (Result<Output, PluginFailure>, Option<Kept>) {
        let hook = match &what {
            Call::Hook(Hook::Request(_)) => 0,
            Call::Hook(Hook::Response(..)) => 1,
            Call::Hook(Hook::Audit(..)) => 2,
            Call::Instantiate | Call::Describe | Call::Init => 3,
        };
        let started = std::time::Instant::now();
        let (result, kept) = self.run_call(request_id, what, kept, keep).await;
        let calls = self.calls[hook].get_or_init(|| {
            let labels = PluginLabels {
                plugin: self.cfg.name.clone(),
                hook: HOOK_NAMES[hook],
            };
            self.runtime.metrics.calls.get_or_create(&labels).clone()
        });
        calls.observe(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            self.count_failure(failure);
        }
        (result, kept)
    }

    /// Counts a failure of this plugin in the metrics: those of its calls are counted when
    /// they happen; the chain counts the patches it finds malformed.
    pub fn count_failure(&self, failure: &PluginFailure) {
        let kind = match failure {
            PluginFailure::Timeout(_) => "timeout",
            PluginFailure::Memory(_) => "memory",
            PluginFailure::Trap(_) => "trap",
            PluginFailure::Init(_) => "init",
            PluginFailure::Malformed(_) => "malformed",
        };
        let labels = FailureLabels {
            plugin: self.cfg.name.clone(),
            kind,
        };
        self.runtime.metrics.failures.get_or_create(&labels).inc();
    }

    /// [`Plugin::call`] without the bookkeeping of metrics.
    async fn run_call(
        &self,
        request_id: u64,
        what: Call<'_>,
        kept: Option<Kept>,
        keep: bool,
    ) -> (Result<Output, PluginFailure>, Option<Kept>) {
        let (pre, pool) = match &self.backend {
            Backend::Component { pre, pool } => (pre, pool),
            Backend::Rego(policy) => return (rego_call(&self.info, policy, what), None),
            Backend::Opa(policy) => return (self.opa_call(policy, request_id, what).await, None),
        };
        let _ticking = self.runtime.ticker.ticking();
        // The kept instance's place is given up only after the call, as the instance's.
        let mut kept = kept.filter(|k| k.plugin == self.id);
        let hook = match &what {
            Call::Hook(hook) => Some(hook),
            _ => None,
        };
        let ready = match hook {
            Some(_) => kept
                .as_mut()
                .and_then(|k| k.instance.take())
                .or_else(|| pool.ready()),
            // Describing and checking the configuration take an instance of their own.
            None => None,
        };
        let held = match hook {
            Some(_) if keep => pool.try_keep(),
            _ => None,
        };
        let mut instance = match ready {
            Some(mut instance) => {
                instance
                    .store
                    .data_mut()
                    .start_call(request_id, self.cfg.timeout);
                instance
            }
            None => {
                let init = !matches!(what, Call::Instantiate | Call::Describe);
                let made = match pool.slot().await {
                    Ok(slot) => self.instantiate(pre, slot, request_id, init).await,
                    Err(failure) => Err(failure),
                };
                match made {
                    Ok(instance) => instance,
                    Err(failure) => return (Err(failure), None),
                }
            }
        };
        let Instance { store, bindings } = &mut *instance;
        let ran = match &what {
            Call::Hook(hook) => contract::call_hook(bindings, store, hook)
                .await
                .map(Output::Verdict),
            Call::Describe => contract::describe(bindings, store).await.map(Output::Info),
            Call::Instantiate | Call::Init => Ok(Output::Initialized),
        };
        let result = ran.map_err(|e| self.failure(&instance.store, &e));
        drop(kept);
        match (result, held) {
            (Ok(output), Some(held)) => {
                let kept = Kept {
                    plugin: self.id,
                    instance: Some(instance),
                    pool: pool.clone(),
                    _held: held,
                };
                (Ok(output), Some(kept))
            }
            (result, _) => {
                let reusable =
                    hook.is_some() && result.is_ok() && !instance.store.data().wrote_stderr();
                pool.release(instance, reusable);
                (result, None)
            }
        }
    }

    /// A new instance in `slot`, after `init` with the plugin's configuration when `init`
    /// is set.
    async fn instantiate(
        &self,
        pre: &PluginPre<State>,
        slot: tokio::sync::OwnedSemaphorePermit,
        request_id: u64,
        init: bool,
    ) -> Result<Pooled<Instance>, PluginFailure> {
        let mut store = self.new_store(request_id);
        let made: wasmtime::Result<Result<contract::Plugin, String>> = async {
            let bindings = pre.instantiate_async(&mut store).await?;
            if init {
                if let Err(reason) =
                    contract::init(&bindings, &mut store, &self.config_json).await?
                {
                    return Ok(Err(reason));
                }
            }
            Ok(Ok(bindings))
        }
        .await;
        match made {
            Ok(Ok(bindings)) => Ok(Pooled::new(Instance { store, bindings }, slot)),
            Ok(Err(reason)) => Err(PluginFailure::Init(reason)),
            Err(e) => Err(self.failure(&store, &e)),
        }
    }

    /// Whether the plugin runs as a component (not a Rego or OPA policy).
    pub(super) fn is_component(&self) -> bool {
        matches!(self.backend, Backend::Component { .. })
    }

    /// Whether the plugin prepares instances ahead of calls when asked to
    /// ([`Plugin::prepare`]): components without `[plugins.reuse]`.
    pub(super) fn prepares(&self) -> bool {
        matches!(&self.backend, Backend::Component { pool, .. } if !pool.reuses())
    }

    /// Whether a prepared instance is ready now; None unless [`Plugin::prepare`] started.
    pub(super) fn prepared_ready(&self) -> Option<bool> {
        match &self.backend {
            Backend::Component { pool, .. } => pool.has_ready(),
            _ => None,
        }
    }

    /// Starts preparing `count` fresh, initialized instances ahead of this plugin's calls, on
    /// a task of its own (on the `portcullis-prepare` thread) that also tears used ones down.
    /// Still a fresh instance per call: each prepared instance serves exactly one call, and
    /// nothing runs in it before that but instantiation and `init` with the plugin's own
    /// configuration, which every call runs anyway; only the time they take leaves the
    /// request's path. For components without `[plugins.reuse]`; a no-op otherwise or when
    /// `count` is 0. [`prepare`] sizes `count` for a whole chain.
    pub fn prepare(self: &Arc<Self>, count: usize) {
        let Backend::Component { pool, .. } = &self.backend else {
            return;
        };
        let Some(spares) = pool.prepare(count) else {
            return;
        };
        let plugin = Arc::downgrade(self);
        let preparer = self.runtime.preparer.get_or_init(Preparer::start);
        preparer.handle.spawn(async move {
            loop {
                drop(spares.take_spent());
                let Some(p) = plugin.upgrade() else {
                    return;
                };
                let Backend::Component { pre, .. } = &p.backend else {
                    return;
                };
                while spares.wants_more() {
                    // Never wait for a pool slot: a call that needs one goes first.
                    let Some(slot) = p.runtime.slots.try_slot() else {
                        break;
                    };
                    let _ticking = p.runtime.ticker.ticking();
                    match p.instantiate(pre, slot, 0, true).await {
                        Ok(instance) => spares.add(instance),
                        // A call then makes its own instance and reports the failure.
                        Err(_) => break,
                    }
                }
                drop(p);
                spares.woken().await;
            }
        });
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

/// Starts preparing instances ahead of calls for every plugin of a chain that prepares
/// (components without `[plugins.reuse]`), `wanted` each (`runtime.prepared_instances`)
/// within the runtime's budget for them ([`pool::Budget::prepared_each`]). Needs a tokio
/// runtime.
pub fn prepare(plugins: &[Arc<Plugin>], wanted: u32) {
    let preparing = plugins.iter().filter(|p| p.prepares()).count();
    for p in plugins.iter().filter(|p| p.prepares()) {
        let each = p.runtime.slots.budget().prepared_each(wanted, preparing);
        p.prepare(each);
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
        let _slot = self.runtime.slots.slot().await?;
        let _ticking = self.runtime.ticker.ticking();
        let mut store = self.new_store(request_id);
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

impl Drop for Plugin {
    fn drop(&mut self) {
        // Lets the preparing task see that the plugin is gone and end.
        if let Backend::Component { pool, .. } = &self.backend {
            pool.wake_preparer();
        }
    }
}

/// An instance kept from a request's request hook for its response hook
/// ([`Plugin::invoke_request`]). Dropped, it goes back to its plugin's pool (to the preparing
/// task for teardown, or torn down where it is dropped when the plugin prepares nothing).
pub struct Kept {
    /// The id of the plugin it belongs to, checked before the response hook runs in it.
    plugin: usize,
    instance: Option<Pooled<Instance>>,
    pool: Arc<Pool<Instance>>,
    /// Its place among the instances kept at once ([`pool::Budget::kept`]).
    _held: tokio::sync::OwnedSemaphorePermit,
}

impl Kept {
    /// Whether it was kept by `plugin`.
    pub fn belongs_to(&self, plugin: &Plugin) -> bool {
        self.plugin == plugin.id
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.release(instance, false);
        }
    }
}

/// One component instance with its store.
struct Instance {
    store: Store<State>,
    bindings: contract::Plugin,
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

/// The verdict of a hook call.
fn verdict(output: Result<Output, PluginFailure>) -> Result<model::Verdict, PluginFailure> {
    match output? {
        Output::Verdict(v) => Ok(v),
        _ => Err(PluginFailure::Malformed("hook returned no verdict".into())),
    }
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
