//! Loading a plugin: a component compiled (or taken from the cache), its contract version
//! checked, linked and asked to `describe` itself; a Rego policy parsed; an OPA wasm policy
//! compiled and probed. Every way a configuration can be wrong stops start-up here, with the
//! plugin and the file named.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

use super::bindings::{self, latest::PluginPre, CONTRACT_VERSION};
use super::pool::Pool;
use super::sandbox::State;
use super::{cache, opa, rego, Backend, LoadError, Plugin, PluginFailure, Runtime};
use crate::config::{Config, PluginConfig};
use crate::model;

impl Runtime {
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
        let pool = Arc::new(Pool::new(self.slots.clone(), cfg.reuse.as_ref()));
        let backend = Backend::Component { pre, pool };
        let mut plugin = self.plugin(cfg, model::Info::default(), config_json, backend)?;
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
        let info = model::Info {
            name: cfg.name.clone(),
            version: version.into(),
            hooks: model::Hooks::REQUEST,
        };
        self.plugin(cfg, info, String::new(), backend)
    }

    /// A plugin of this runtime, with a new id and its endpoint globs.
    fn plugin(
        self: &Arc<Self>,
        cfg: &PluginConfig,
        info: model::Info,
        config_json: String,
        backend: Backend,
    ) -> Result<Plugin, LoadError> {
        Ok(Plugin {
            id: super::next_id(),
            cfg: cfg.clone(),
            info,
            config_json,
            endpoints: glob_set(&cfg.endpoints, &cfg.name, "endpoints")?,
            response_endpoints: response_globs(cfg)?,
            backend,
            calls: Default::default(),
            runtime: self.clone(),
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
    // An empty list selects nothing.
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
pub(super) struct EndpointSet {
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

    pub(super) fn is_match(&self, endpoint: &str) -> bool {
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
