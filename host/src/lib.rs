//! # portcullis
//!
//! A secure front door for shared Docker hosts: Docker clients talk to portcullis exactly as
//! they talk to the engine; portcullis forwards the Docker Engine API to the real engine and
//! runs every request through its policy pipeline on the way.
//!
//! # Layout
//!
//! The modules follow a request's journey, in order:
//!
//! - [`listener`]: accepts client connections (unix socket, TCP, TLS), serves HTTP/1 on them with
//!   bounded resources, and hands each request to the pipeline.
//! - [`identity`]: who is calling (unix peer credentials and the user database, client
//!   certificates, bearer tokens, or a configured anonymous identity), attached to every
//!   request; requests with no caller are refused.
//! - [`route`]: the endpoint classifier: method + path → canonical path, API version,
//!   endpoint name (`container.create`, ...) and object id, the way dockerd's router reads it.
//! - [`pipeline`]: one request's trip, as phases over one request context: admit, read,
//!   enrich, decide, send, respond, and log (the audit record, built once at the end).
//! - [`plugin`]: the WebAssembly plugin runtime (wasmtime): compile and cache components,
//!   a fresh sandboxed instance per call, deadlines and memory caps.
//! - [`upstream`]: the pooled client to the real engine (`unix://`, `tcp://`).
//! - [`buildkit`]: BuildKit's `/grpc` and `/session` tunnels once the engine switched them
//!   to HTTP/2: every gRPC call judged (a Solve as `build.solve`) and recorded.
//! - [`owners`]: the gateway's own record of who owns each image repository (a name no label
//!   can protect), written before the request that creates a tag is forwarded.
//! - [`audit`]: the tamper-evident audit trail (sled store, hash chain, indexes) that every
//!   request leaves, and its reports (listings, chain check, export, statistics).
//! - [`admin`]: the admin listener (off unless configured): metrics, health, reload and the
//!   audit queries over HTTP.
//! - [`reload`]: a running gateway's policy loaded again and swapped whole (SIGHUP, `POST
//!   /reload`), and its readiness.
//! - [`metrics`]: the Prometheus metrics every layer records in.
//! - [`body`]: the one HTTP body type sent both ways (a stream passed through, or bytes held).
//! - [`error`]: the single conversion of any failure to Docker's `{"message": ...}` format.
//! - [`config`]: the strict TOML configuration and listen/engine addresses.
//! - [`model`]: the host's request, response and verdict types, mirroring the plugin contract.
//!
//! On top of them all, [`cli`]: the `portcullis` commands (`serve`, `check`, `audit`, …),
//! which `main.rs` only parses and dispatches to.
//!
//! The modules are layers that import downwards only: leaves (`model`, `body`, `net`,
//! `route`, `error`, `config`) → subsystems (`identity`, `upstream`, `plugin`, `owners`, then
//! `audit`) → `pipeline` → `buildkit` → `listener` and `admin` → `reload` → [`run`] → `cli`. `host/tests/layers.rs`
//! fails on an edge that points up; docs/architecture.md draws the layers and the journey.

pub mod admin;
pub mod audit;
pub mod body;
pub mod buildkit;
pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod net;
pub mod owners;
pub mod pipeline;
pub mod plugin;
pub mod reload;
pub mod route;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
pub use listener::Listener;

/// Errors that stop the gateway as a whole (never a single request).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error(transparent)]
    Plugin(#[from] plugin::LoadError),
    #[error(transparent)]
    Identity(#[from] identity::SetupError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Owners(#[from] owners::OwnersError),
}

/// Serves the gateway on already-bound `listeners` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (bounded by `config.limits.shutdown_grace`) and
/// returns. Tests call this in-process on temporary sockets. It cannot reload: see
/// [`run_with`].
pub async fn run(
    listeners: Vec<Listener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(listeners, config, Reloads::default(), shutdown).await
}

/// Where a running gateway's configuration comes from again, and when it is asked to.
#[derive(Default)]
pub struct Reloads {
    /// Loads the configuration anew ([`reload::Source`]); without it a reload is refused.
    pub source: Option<reload::Source>,
    /// Each message asks for a reload (`serve` sends one per SIGHUP).
    pub signals: Option<tokio::sync::mpsc::Receiver<()>>,
}

/// [`run`], reloading the policy from `reloads.source` on each of `reloads.signals` and on
/// the admin listener's `POST /reload`.
pub async fn run_with(
    listeners: Vec<Listener>,
    config: Config,
    reloads: Reloads,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::new());
    let upstream = upstream::Upstream::new(&config.engine)?;
    let chain = reload::load_chain(&config, &metrics).await?;
    chain.prepare(&config.runtime);
    let audit = match &config.audit {
        Some(a) => Some(audit::AuditLog::start(
            a,
            &config.base_dir,
            metrics.audit.clone(),
        )?),
        None => None,
    };
    let owners = owners::Owners::open(config.owners.as_ref(), &config.base_dir)?;
    if owners.path().is_none() {
        tracing::warn!("no [owners] table: who owns each image repository is kept in memory and forgotten on restart");
    }
    let gateway = pipeline::Gateway::new(config.clone(), upstream, chain)
        .with_audit(audit.clone())
        .with_owners(Arc::new(owners))
        .with_metrics(metrics.clone());
    let gateway = Arc::new(gateway);
    let resolver = Arc::new(identity::Resolver::from_config(&config)?);
    let reloader = Arc::new(reload::Reloader::new(
        gateway.clone(),
        metrics,
        config.clone(),
        reloads.source,
    ));
    let signalled = reloads.signals.map(|mut signals| {
        let reloader = reloader.clone();
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                // The reloader logs and counts the outcome.
                let _ = reloader.reload().await;
            }
        })
    });
    // The admin listener stops with the gateway's listeners.
    let (admin_stop, admin_task) = match &config.admin {
        Some(a) => {
            let l = admin::bind(a).await?;
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let store = audit.as_ref().map(|log| log.reader());
            let control: Arc<dyn admin::Control> = reloader.clone();
            (
                Some(tx),
                Some(tokio::spawn(admin::serve(l, store, control, stopped))),
            )
        }
        None => (None, None),
    };
    listener::serve(listeners, gateway, resolver, &config.limits, shutdown).await;
    if let Some(task) = signalled {
        task.abort();
    }
    if let (Some(stop), Some(task)) = (admin_stop, admin_task) {
        let _ = stop.send(true);
        let _ = task.await;
    }
    if let Some(audit) = audit {
        audit.shutdown(config.limits.shutdown_grace).await;
    }
    Ok(())
}

/// Loads every configured plugin; a plugin that fails to load stops the start-up, so the
/// gateway never serves with half its policy.
pub async fn load_chain(config: &Config) -> Result<pipeline::Chain, plugin::LoadError> {
    reload::load_chain(config, &metrics::Metrics::new()).await
}
