//! Configuration: a strict TOML file (`policies/portcullis.toml` is the documented example),
//! overridden by command-line flags. Unknown keys are errors, so a typo never silently turns
//! a protection off; every error names the file and the key.

mod address;
mod admin;
mod api;
mod audit;
mod identity;
mod owners;
mod plugins;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use address::{Address, AddressError};
pub use admin::AdminConfig;
pub use api::{ApiConfig, ApiVersion, BuildkitMode};
pub use audit::{AuditConfig, Durability, OnFullDisk};
pub use identity::{gid_of, uid_of, AnonymousIdentity, TlsConfig, UserFrom};
pub(crate) use owners::default_max_repositories;
pub use owners::OwnersConfig;
pub use plugins::{Grants, Kind, Mode, Phase, PluginConfig, Reuse, RuntimeConfig};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Docker engine requests are forwarded to.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Resource bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Which parts of the Engine API are usable at all.
    #[serde(default)]
    pub api: ApiConfig,
    /// The plugin sandbox.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The plugin chain, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// The audit trail; off when absent.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// The admin listener (audit queries over HTTP); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The record of image repository owners; in memory when absent.
    #[serde(default)]
    pub owners: Option<OwnersConfig>,
    /// How the gateway's log lines look.
    #[serde(default)]
    pub log: LogConfig,
    /// Directory relative plugin paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[log]`: the gateway's own log (standard error). Levels are set with `PORTCULLIS_LOG`
/// (an `EnvFilter` directive such as `info` or `portcullis=debug`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json` (one object per line); `PORTCULLIS_LOG_FORMAT` wins.
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Text for people, one line per event.
    #[default]
    Human,
    /// One JSON object per line, with the request's span (its id) on every line of it.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: human or json")),
        }
    }
}

/// `[server]`: the client-facing listeners.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen addresses (`unix:///path`, `tcp://127.0.0.1:2375`).
    #[serde(default)]
    pub listen: Vec<Address>,
    /// Permission bits of created unix sockets, as an octal string such as `"0660"`.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Owner of created unix sockets: a user name or a numeric uid (default: the gateway's).
    #[serde(default)]
    pub socket_owner: Option<String>,
    /// Group of created unix sockets: a group name or a numeric gid (default: the gateway's).
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Certificate, key and client CA of `tls://` listeners.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Bearer tokens (`portcullis token add`): hashed tokens mapped to users and groups.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// The identity given to callers that prove none; without it they are refused.
    #[serde(default)]
    pub anonymous: Option<AnonymousIdentity>,
    /// Allow plain `tcp://` listeners on addresses other than loopback (logs a warning).
    #[serde(default)]
    pub insecure_tcp: bool,
    /// Threads serving requests (none: `TOKIO_WORKER_THREADS`, else half the cores, at least
    /// one). The engine, its containers and the clients need cores too, and every thread more
    /// means more cross-thread wake-ups per request; see docs/benchmarks.md, "Tuning".
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            socket_mode: default_socket_mode(),
            socket_owner: None,
            socket_group: None,
            tls: None,
            tokens_file: None,
            anonymous: None,
            insecure_tcp: false,
            worker_threads: None,
        }
    }
}

impl ServerConfig {
    /// Request threads: `worker_threads`; else `TOKIO_WORKER_THREADS`; else half the cores,
    /// at least one. The gateway shares its host with the engine, which does the work of
    /// every request it forwards, and usually with the clients, so fewer threads than cores
    /// serve faster (the figures: docs/benchmarks.md, "Tuning").
    pub fn request_threads(&self) -> usize {
        self.worker_threads
            .or_else(|| std::env::var("TOKIO_WORKER_THREADS").ok()?.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / 2).max(1)
            })
    }
}

fn default_socket_mode() -> String {
    "0660".into()
}

/// `[engine]`: the upstream Docker engine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Engine address; `DOCKER_HOST`, then `unix:///var/run/docker.sock` when not set.
    #[serde(default = "default_engine")]
    pub url: Address,
    /// Idle connections kept open to the engine (0: a new connection per request).
    #[serde(default = "default_pool_idle")]
    pub max_idle_connections: usize,
    /// How long to wait for a connection to the engine.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A `tcp://` engine is reached over TLS, verified with `ca.pem` of this folder and
    /// presenting its `cert.pem`/`key.pem` (the docker CLI's `DOCKER_CERT_PATH` layout).
    /// Default: when `DOCKER_TLS_VERIFY` is set, `DOCKER_CERT_PATH`, else `~/.docker`.
    #[serde(default = "default_engine_cert_path")]
    pub cert_path: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            url: default_engine(),
            max_idle_connections: default_pool_idle(),
            connect_timeout: default_connect_timeout(),
            cert_path: default_engine_cert_path(),
        }
    }
}

/// The engine address used when neither the config nor a flag names one: `DOCKER_HOST` when
/// set (as every Docker client does), else the standard socket.
pub fn default_engine() -> Address {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Address::Unix(PathBuf::from("/var/run/docker.sock")))
}
fn default_pool_idle() -> usize {
    64
}
/// The docker CLI's convention: TLS to a TCP engine when `DOCKER_TLS_VERIFY` is non-empty,
/// with the certificates in `DOCKER_CERT_PATH` (default `~/.docker`).
pub fn default_engine_cert_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_TLS_VERIFY").filter(|v| !v.is_empty())?;
    std::env::var_os("DOCKER_CERT_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[limits]`: every resource the gateway holds has a bound. Keys left out keep their
/// defaults, so a table may name only the limits it changes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Client connections served at once; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
    /// Largest number of request headers.
    pub max_headers: usize,
    /// Largest buffered (JSON or small) request body in bytes; streamed uploads (build
    /// contexts, image load, archives) are not buffered and not bounded by this.
    pub max_body_bytes: usize,
    /// Time allowed for a client to send a complete request head (slowloris defence).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// An attach or exec tunnel with no bytes in either direction for this long is closed
    /// (none: never). Tunnels have no total-time limit; a quiet `docker attach` is normal,
    /// so this is off unless set.
    #[serde(default, with = "humantime_serde")]
    pub stream_idle_timeout: Option<Duration>,
    /// Requests one caller (by user name) may have in flight at once, streams and tunnels
    /// included; more are answered 429 at once. Keeps one user or runaway CI job from
    /// taking every connection and plugin instance of a shared gateway.
    pub max_requests_per_caller: usize,
    /// Largest `docker load` archive. When a plugin judges `image.load`, the archive is kept
    /// in `spool_dir` until the tags inside have been read and judged, then sent to the
    /// engine from there (a larger one is refused with 413).
    pub max_load_bytes: bytesize::ByteSize,
    /// Where `docker load` archives are kept while they are judged; each is deleted when its
    /// request ends. A disk, not a memory file system: archives are as large as images.
    pub spool_dir: PathBuf,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            stream_idle_timeout: None,
            max_requests_per_caller: 256,
            max_load_bytes: bytesize::ByteSize::gib(8),
            spool_dir: PathBuf::from("/var/tmp"),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // toml's error already names the key and shows the offending line.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut config = config;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Some(dir) = &mut config.engine.cert_path {
            *dir = config.base_dir.join(&*dir);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the values that types alone cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if self.socket_mode().is_none() {
            return Err(invalid(
                "server.socket_mode",
                "must be an octal permission such as \"0660\"",
            ));
        }
        identity::validate(self).map_err(|(key, message)| invalid(key, &message))?;
        let l = &self.limits;
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if l.max_load_bytes.as_u64() == 0 {
            return Err(invalid("limits.max_load_bytes", "must be more than zero"));
        }
        if l.max_header_bytes < 8192 {
            return Err(invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        if l.stream_idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "limits.stream_idle_timeout",
                "must be more than zero (leave it out for none)",
            ));
        }
        if self.server.worker_threads == Some(0) {
            return Err(invalid(
                "server.worker_threads",
                "must be at least 1 (leave it out for one per core)",
            ));
        }
        if l.max_requests_per_caller == 0 {
            return Err(invalid(
                "limits.max_requests_per_caller",
                "must be at least 1",
            ));
        }
        if l.max_headers == 0 {
            return Err(invalid("limits.max_headers", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(invalid(
                    "plugins.name",
                    &format!("plugin names must be non-empty and unique ({:?})", p.name),
                ));
            }
            for glob in &p.endpoints {
                if globset::Glob::new(glob).is_err() {
                    return Err(invalid(
                        "plugins.endpoints",
                        &format!("plugin {}: bad endpoint glob {glob:?}", p.name),
                    ));
                }
            }
            if p.query.is_some() && p.kind == Kind::Wasm {
                return Err(invalid(
                    "plugins.query",
                    &format!(
                        "plugin {}: `query` is only for kind = \"rego\" or \"opa-wasm\"",
                        p.name
                    ),
                ));
            }
            if p.timeout.is_zero() {
                return Err(invalid("plugins.timeout", "must be more than zero"));
            }
        }
        if let Some(max) = self.api.max_version {
            if max < self.api.min_version {
                return Err(invalid(
                    "api.max_version",
                    "must not be older than api.min_version",
                ));
            }
        }
        if self.runtime.max_instances == 0 {
            return Err(invalid("runtime.max_instances", "must be at least 1"));
        }
        let mut kept = 0u64;
        for p in &self.plugins {
            let Some(reuse) = p.reuse else { continue };
            if p.kind != Kind::Wasm {
                return Err(invalid(
                    "plugins.reuse",
                    &format!(
                        "plugin {}: instance reuse is for kind = \"wasm\" only",
                        p.name
                    ),
                ));
            }
            if reuse.instances == 0 || reuse.calls == 0 {
                return Err(invalid(
                    "plugins.reuse",
                    &format!(
                        "plugin {}: `instances` and `calls` must be at least 1",
                        p.name
                    ),
                ));
            }
            kept += u64::from(reuse.instances);
        }
        // Idle reused instances hold pool slots; fresh calls must still find some.
        if kept >= u64::from(self.runtime.max_instances) {
            return Err(invalid(
                "plugins.reuse",
                &format!(
                    "{kept} reused instances would take all of runtime.max_instances ({}); raise it or keep fewer",
                    self.runtime.max_instances
                ),
            ));
        }
        if let Some(Err((key, why))) = self.audit.as_ref().map(AuditConfig::validate) {
            return Err(invalid(key, &why));
        }
        if let Some(Err((key, why))) = self.owners.as_ref().map(OwnersConfig::validate) {
            return Err(invalid(key, &why));
        }
        if let Some(admin) = &self.admin {
            // Without [audit] it still serves metrics, health and reload.
            if let Err((key, why)) = admin.validate() {
                return Err(invalid(key, &why));
            }
        }
        Ok(())
    }

    /// A plugin's component path, resolved against the config file's directory.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.base_dir.join(&plugin.path)
    }

    /// The unix socket permission bits, parsed from `server.socket_mode`.
    pub fn socket_mode(&self) -> Option<u32> {
        u32::from_str_radix(self.server.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/portcullis.toml"
        ));
        let c = Config::load(path).unwrap();
        assert_eq!(c.server.listen.len(), 1);
        assert_eq!(c.socket_mode(), Some(0o660));
        let audit = c.audit.expect("the example documents [audit]");
        assert_eq!(audit.durability, Durability::Batch);
    }

    #[test]
    fn audit_values_name_the_key() {
        let err = Config::parse(
            "[audit]\npath = \"a\"\ndurability = \"fast\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("durability"), "{err}");
        let err = Config::parse("[audit]\npath = \"a\"\nqueue = 0\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.queue"), "{err}");
    }

    #[test]
    fn the_dry_run_mode_keeps_its_first_spelling() {
        let mode = |m: &str| {
            let text = format!("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\nmode = \"{m}\"\n");
            Config::parse(&text, Path::new("c.toml")).map(|c| c.plugins[0].mode)
        };
        assert_eq!(mode("dry-run").unwrap(), Mode::DryRun);
        assert_eq!(mode("audit").unwrap(), Mode::DryRun);
        assert_eq!(mode("enforce").unwrap(), Mode::Enforce);
        assert!(mode("dryrun").is_err());
    }

    #[test]
    fn instance_reuse_is_validated() {
        let entry = |extra: &str| {
            format!("[runtime]\nmax_instances = 4\n[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\n{extra}\n")
        };
        let c = Config::parse(&entry("reuse = { instances = 3 }"), Path::new("c.toml")).unwrap();
        assert_eq!(
            c.plugins[0].reuse,
            Some(Reuse {
                instances: 3,
                calls: 1000
            })
        );
        for (extra, why) in [
            ("reuse = { instances = 4 }", "max_instances"),
            ("reuse = { instances = 0 }", "at least 1"),
            ("reuse = { calls = 0 }", "at least 1"),
            ("reuse = { instance = 1 }", "instance"),
            ("kind = \"rego\"\nreuse = {}", "wasm"),
        ] {
            let err = Config::parse(&entry(extra), Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{extra}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[limits]\nmax_conections = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn worker_threads_is_optional_and_at_least_one() {
        assert_eq!(
            Config::parse("", Path::new("x.toml"))
                .unwrap()
                .server
                .worker_threads,
            None
        );
        let c = Config::parse("[server]\nworker_threads = 1\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.server.worker_threads, Some(1));
        let err = Config::parse("[server]\nworker_threads = 0\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("server.worker_threads"), "{err}");
    }

    #[test]
    fn a_limits_table_may_name_only_what_it_changes() {
        let c = Config::parse("[limits]\nmax_connections = 5\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.limits.max_headers, Limits::default().max_headers);
        assert_eq!(c.limits.max_requests_per_caller, 256);
    }

    #[test]
    fn addresses_and_durations_parse() {
        let c = Config::parse(
            "[server]\nlisten = [\"unix:///tmp/p.sock\", \"tcp://127.0.0.1:2375\"]\n\
             [engine]\nurl = \"tcp://127.0.0.1:2376\"\n\
             [limits]\nmax_connections = 5\nmax_header_bytes = 9000\nmax_headers = 50\n\
             max_body_bytes = 10\nheader_read_timeout = \"3s\"\nshutdown_grace = \"1m\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.engine.url, Address::Tcp("127.0.0.1:2376".into()));
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::parse("[server]\nsocket_mode = \"999\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.socket_mode"), "{err}");
        let err = Config::parse("[engine]\nurl = \"http://x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported scheme"), "{err}");
    }
}
