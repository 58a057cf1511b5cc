//! `[[plugins]]` entries and the `[runtime]` table of the plugin sandbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where a plugin runs in the pipeline (Kubernetes admission order: mutate, then validate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// May patch the request; runs first, in configuration order, each seeing the last one's
    /// result.
    Mutate,
    /// May only allow or deny; all run on the final request, any denial refuses it.
    #[default]
    Validate,
}

/// Whether a plugin's denials are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denials refuse the request.
    #[default]
    Enforce,
    /// Denials and patches are only logged and recorded: try a policy before enforcing it.
    /// Also spelled `audit`, its first name (taken apart from the audit trail and hook).
    #[serde(rename = "dry-run", alias = "audit")]
    DryRun,
}

/// What a plugin is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A WebAssembly component implementing the WIT contract.
    #[default]
    Wasm,
    /// Rego policies (a `.rego` file or a directory of them), evaluated natively.
    Rego,
    /// An OPA policy compiled to WebAssembly by `opa build -t wasm` (the `bundle.tar.gz`, or
    /// the `policy.wasm` core module from it), run in the plugin sandbox through the
    /// `opa-wasm` crate with the same input document and decision rules as `rego`.
    #[serde(rename = "opa-wasm")]
    OpaWasm,
}

/// Capabilities a plugin gets beyond the bare sandbox. Everything is off by default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Real wall and monotonic clocks (otherwise both read zero).
    #[serde(default)]
    pub clock: bool,
    /// Environment variables passed through by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Credential headers the plugin may see (`authorization`, `x-registry-auth`, ...);
    /// otherwise they are removed from its input.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, used in denial messages and logs.
    pub name: String,
    /// `wasm` (default), `rego` or `opa-wasm`.
    #[serde(default)]
    pub kind: Kind,
    /// The component file (`wasm`), a `.rego` file or directory (`rego`), or the bundle or
    /// its `policy.wasm` (`opa-wasm`); a relative path is relative to the config file's
    /// directory.
    pub path: PathBuf,
    /// `rego` and `opa-wasm` only: the rule that decides (default `data.docker.authz.allow`;
    /// for `opa-wasm` the entrypoint given to `opa build -e`, default `docker/authz/allow`,
    /// where the `data.docker.authz.allow` spelling is accepted too): `true` allows, `false`
    /// or undefined denies, `{"allow": false, "message": "..."}` says why.
    #[serde(default)]
    pub query: Option<String>,
    /// `mutate` or `validate` (default).
    #[serde(default)]
    pub phase: Phase,
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// Endpoint name globs this plugin applies to (`container.*`); default all. A glob
    /// starting with `!` removes what it matches (`["*", "!system.ping"]`); a list of only
    /// such globs starts from every endpoint.
    #[serde(default = "all_endpoints")]
    pub endpoints: Vec<String>,
    /// Endpoint name globs whose responses the response hook is called for (default: every
    /// endpoint of `endpoints`). A JSON response handed to a response hook is read whole
    /// first, so narrowing this to the endpoints a plugin rewrites lets every other response
    /// stream straight through.
    #[serde(default)]
    pub response_endpoints: Option<Vec<String>>,
    /// Time one call may take (default 100ms).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory cap, e.g. `"64MiB"` (default).
    #[serde(default = "default_memory")]
    pub memory_limit: bytesize::ByteSize,
    /// Let the request through when the plugin fails (traps, times out, exceeds memory,
    /// returns a malformed verdict). Default false: fail closed.
    #[serde(default)]
    pub fail_open: bool,
    /// Extra capabilities.
    #[serde(default)]
    pub grants: Grants,
    /// Free-form table handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Keep initialized instances and reuse them for later calls (`wasm` only; opt-in). Absent:
    /// a fresh instance per call. Faster for interpreters, at the cost of isolation between
    /// calls (docs/configuration.md, "Instance reuse").
    #[serde(default)]
    pub reuse: Option<Reuse>,
}

/// `[plugins.reuse]`: how long an initialized instance lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reuse {
    /// Initialized instances kept idle between calls (default 2). Each holds one of
    /// `runtime.max_instances` while it waits.
    #[serde(default = "default_reuse_instances")]
    pub instances: u32,
    /// Calls after which an instance is dropped and a fresh one takes its place (default
    /// 1000), which bounds what one instance can accumulate.
    #[serde(default = "default_reuse_calls")]
    pub calls: u32,
}

fn default_reuse_instances() -> u32 {
    2
}
fn default_reuse_calls() -> u32 {
    1000
}

fn all_endpoints() -> Vec<String> {
    vec!["*".into()]
}
fn default_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_memory() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}

/// `[runtime]`: the shared plugin sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; none disables the cache.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Plugin instances alive at once across all requests; further calls wait (the wait does
    /// not count against a plugin's timeout). A few times the number of cores keeps the CPUs
    /// busy; more only multiplies memory (an interpreter instance holds several MiB) and
    /// makes every running call slower. A request whose response plugins also judged the
    /// request keeps that instance while the engine answers; a quarter of this bound may be
    /// kept so (beyond it the response hook gets a fresh instance).
    #[serde(default = "default_instances")]
    pub max_instances: u32,
    /// Fresh instances each component plugin keeps instantiated and initialized ahead of its
    /// calls (default 2; 0 makes every call instantiate on its own path). Each serves one
    /// call only; preparing them, and tearing used ones down, happens on a thread of its own
    /// instead of on the request's path. All plugins together hold at most half of
    /// `max_instances` this way (ready instances and used ones awaiting teardown).
    #[serde(default = "default_prepared")]
    pub prepared_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            max_instances: default_instances(),
            prepared_instances: default_prepared(),
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    Some(PathBuf::from("/var/cache/portcullis/plugins"))
}
fn default_instances() -> u32 {
    32
}
fn default_prepared() -> u32 {
    2
}
