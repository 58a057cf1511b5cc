//! Changing a running gateway's policy: the configuration loaded again (SIGHUP, or `POST
//! /reload` on the admin listener, which `portcullis reload` sends), every plugin and Rego
//! policy compiled and initialized with its configuration, and the whole chain swapped at
//! once. Anything that fails leaves the running chain in place and says why (to the caller,
//! the log and the `config_reloads` metric).
//!
//! What can change live is what a request takes when it arrives ([`Policy`]): the plugins,
//! the `[api]` settings and the plugin `[runtime]`. Requests on their way, streams (`logs
//! -f`, `events`) and tunnels (attach, exec) finish with the policy they started with. The
//! rest (listeners, engine, limits, audit, owners, admin, log) is bound at start: a reload
//! that changes it is refused, naming the settings.
//!
//! Also the admin listener's view of the gateway ([`crate::admin::Control`]): readiness and
//! the metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tracing::{info, warn};

use crate::admin::{Check, Control, Readiness};
use crate::config::{Config, ConfigError};
use crate::metrics::{KindLabels, Metrics};
use crate::pipeline::{Gateway, Policy};
use crate::plugin::LoadError;

/// Where a configuration is loaded from again: the file the gateway started with, with the
/// command line's flags laid over it as at start.
pub type Source = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// How long `/readyz` waits for the engine's `/_ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this gateway was started without a configuration file: there is nothing to reload")]
    NoSource,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{} cannot change while the gateway runs (restart it for that); nothing was reloaded", .0.join(", "))]
    Fixed(Vec<&'static str>),
    #[error("{0}; the running chain stays in place")]
    Plugin(#[from] LoadError),
}

/// What a successful reload put in force.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    pub generation: u64,
    pub plugins: usize,
}

/// Reloads one gateway's policy; one reload at a time.
pub struct Reloader {
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    source: Option<Source>,
    /// The configuration in force (its fixed settings are what a reload must keep).
    running: tokio::sync::Mutex<Arc<Config>>,
}

impl Reloader {
    /// A reloader for `gateway`, started with `config`, loading again from `source`.
    pub fn new(
        gateway: Arc<Gateway>,
        metrics: Arc<Metrics>,
        config: Arc<Config>,
        source: Option<Source>,
    ) -> Self {
        let reload = &metrics.reload;
        reload.generation.set(1);
        reload.last_ok.set(1);
        reload.last_time.set(unix_now());
        Self {
            gateway,
            metrics,
            source,
            running: tokio::sync::Mutex::new(config),
        }
    }

    /// Loads the configuration again and, when it loads whole, swaps the chain; logs and
    /// counts the result either way.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut running = self.running.lock().await;
        let result = self.load(&running).await;
        let m = &self.metrics.reload;
        match result {
            Ok((config, policy)) => {
                let reloaded = Reloaded {
                    generation: policy.generation,
                    plugins: policy.chain.len(),
                };
                self.gateway.replace_policy(policy);
                *running = Arc::new(config);
                m.generation.set(reloaded.generation as i64);
                m.last_ok.set(1);
                m.last_time.set(unix_now());
                m.reloads.get_or_create(&KindLabels { kind: "ok" }).inc();
                info!(
                    generation = reloaded.generation,
                    plugins = reloaded.plugins,
                    "configuration reloaded"
                );
                Ok(reloaded)
            }
            Err(e) => {
                m.last_ok.set(0);
                m.reloads
                    .get_or_create(&KindLabels { kind: "failed" })
                    .inc();
                warn!(error = %e, "reload refused; the running configuration stays in force");
                Err(e)
            }
        }
    }

    async fn load(&self, running: &Config) -> Result<(Config, Policy), ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let config = source()?;
        let fixed = fixed_changes(running, &config);
        if !fixed.is_empty() {
            return Err(ReloadError::Fixed(fixed));
        }
        let chain = load_chain(&config, &self.metrics).await?;
        chain.prepare(&config.runtime);
        let generation = self.gateway.policy().generation + 1;
        let policy = Policy {
            chain: Arc::new(chain),
            api: config.api.clone(),
            generation,
        };
        Ok((config, policy))
    }

    /// The readiness checks: the engine answers `/_ping`, the audit store writes, the chain
    /// is loaded.
    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::new();
        let ping = tokio::time::timeout(PING_TIMEOUT, self.gateway.upstream().ping()).await;
        checks.push(match ping {
            Ok(Ok(())) => check("engine", true, "answers /_ping".into()),
            Ok(Err(e)) => check("engine", false, e.to_string()),
            Err(_) => check(
                "engine",
                false,
                format!("no answer to /_ping within {PING_TIMEOUT:?}"),
            ),
        });
        checks.push(match self.gateway.audit() {
            None => check("audit", true, "no audit trail configured".into()),
            Some(log) => match log.unwritable() {
                None => check("audit", true, format!("writing ({} queued)", log.queued())),
                Some(why) => check("audit", false, format!("records are not written: {why}")),
            },
        });
        let policy = self.gateway.policy();
        let last_ok = self.metrics.reload.last_ok.get() == 1;
        checks.push(check(
            "chain",
            true,
            format!(
                "generation {}, {} plugins{}",
                policy.generation,
                policy.chain.len(),
                if last_ok {
                    ""
                } else {
                    "; the last reload failed (see the log)"
                }
            ),
        ));
        Readiness::of(checks)
    }
}

impl Control for Reloader {
    fn reload(&self) -> BoxFuture<'_, Result<serde_json::Value, String>> {
        async move {
            match Reloader::reload(self).await {
                Ok(r) => Ok(serde_json::json!({"ok": true, "generation": r.generation, "plugins": r.plugins})),
                Err(e) => Err(e.to_string()),
            }
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Readiness> {
        self.readiness().boxed()
    }

    fn metrics(&self) -> String {
        self.gateway.refresh_gauges();
        self.metrics.encode()
    }
}

/// Loads every configured plugin, recording their calls in `metrics`; one that fails to
/// load fails it all, so a chain is never half a policy.
pub async fn load_chain(
    config: &Config,
    metrics: &Metrics,
) -> Result<crate::pipeline::Chain, LoadError> {
    if config.plugins.is_empty() {
        return Ok(crate::pipeline::Chain::default());
    }
    let runtime = crate::plugin::Runtime::for_config(config)?.with_metrics(metrics.plugin.clone());
    let plugins = Arc::new(runtime).load_all(config).await?;
    Ok(crate::pipeline::Chain::new(plugins))
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The settings bound at start that `new` changes, named as in the file.
fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    } else if old.server != new.server {
        changed.push("[server]");
    }
    if old.engine.url != new.engine.url {
        changed.push("engine.url");
    } else if old.engine != new.engine {
        changed.push("[engine]");
    }
    if old.limits != new.limits {
        changed.push("[limits]");
    }
    match (&old.audit, &new.audit) {
        (Some(a), Some(b)) if a.path != b.path => changed.push("audit.path"),
        (a, b) if a != b => changed.push("[audit]"),
        _ => {}
    }
    match (&old.admin, &new.admin) {
        (Some(a), Some(b)) if a.listen != b.listen => changed.push("admin.listen"),
        (a, b) if a != b => changed.push("[admin]"),
        _ => {}
    }
    if old.owners != new.owners {
        changed.push("[owners]");
    }
    if old.log != new.log {
        changed.push("[log]");
    }
    if old.base_dir != new.base_dir {
        changed.push("the configuration file's directory");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(
            text,
            std::path::Path::new("/etc/portcullis/portcullis.toml"),
        )
        .unwrap()
    }

    #[test]
    fn names_every_setting_that_cannot_change_live() {
        let old =
            parse("[server]\nlisten = [\"unix:///run/a.sock\"]\n[audit]\npath = \"/var/lib/a\"\n");
        let same = parse(
            "[server]\nlisten = [\"unix:///run/a.sock\"]\n[audit]\npath = \"/var/lib/a\"\n[api]\nbuildkit = \"pass\"\n",
        );
        assert!(fixed_changes(&old, &same).is_empty(), "[api] may change");
        let moved = parse(
            "[server]\nlisten = [\"unix:///run/b.sock\"]\n[audit]\npath = \"/var/lib/b\"\n[limits]\nmax_connections = 7\n",
        );
        assert_eq!(
            fixed_changes(&old, &moved),
            ["server.listen", "[limits]", "audit.path"]
        );
        let no_audit = parse("[server]\nlisten = [\"unix:///run/a.sock\"]\n");
        assert_eq!(fixed_changes(&old, &no_audit), ["[audit]"]);
    }
}
