//! `portcullis serve`: the configuration file with the flags laid over it, checked as a
//! whole, then the gateway ([`crate::run_with`]) on the listeners it names until SIGINT or
//! SIGTERM; SIGHUP reloads the policy ([`crate::reload`]).

use std::future::Future;
use std::path::PathBuf;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::CliError;
use crate::config::{Address, ConfigError, TlsConfig};
use crate::{Config, Listener};

/// `portcullis serve` flags.
#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// Configuration file (TOML); flags override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, repeatable: unix:///path or tcp://host:port.
    #[arg(long = "listen", short = 'l')]
    listen: Vec<Address>,
    /// Docker engine address (default: the config's, else DOCKER_HOST, else
    /// unix:///var/run/docker.sock).
    #[arg(long)]
    engine: Option<Address>,
    /// Server certificate (PEM) for tls:// listeners (server.tls.cert).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for tls:// listeners (server.tls.key).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must chain to: turns on mutual TLS (server.tls.client_ca).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Allow plain tcp:// listeners on non-loopback addresses (server.insecure_tcp).
    #[arg(long)]
    insecure_tcp: bool,
}

impl ServeArgs {
    /// The configuration file named, if any.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

/// Serves until a shutdown signal, then drains and returns. SIGHUP reloads the policy from
/// the same file, with the same flags over it.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    // Flag paths are relative to the working directory, not to the config file.
    let cwd = std::env::current_dir().map_err(|e| CliError::context("current directory", e))?;
    let config = config_of(&args, &cwd)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(config.server.request_threads());
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| CliError::context("starting the async runtime", e))?;
    runtime.block_on(async move {
        // Before binding: a signal while starting stops the gateway cleanly too.
        let shutdown = shutdown_signal();
        let source: Option<crate::reload::Source> = args
            .config
            .is_some()
            .then(|| Box::new(move || config_of(&args, &cwd)) as crate::reload::Source);
        let reloads = crate::Reloads {
            source,
            signals: hangups(),
        };
        let mut listeners = Vec::new();
        for address in &config.server.listen {
            listeners.push(Listener::bind_config(address, &config).await?);
        }
        // The target the line has always had, for log filters.
        tracing::info!(target: "portcullis", engine = %config.engine.url, "portcullis starting");
        crate::run_with(listeners, config, reloads, shutdown).await?;
        Ok::<(), CliError>(())
    })
}

/// The configuration `serve` runs with: the file's (or the defaults), the flags over it.
fn config_of(args: &ServeArgs, cwd: &std::path::Path) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    if let Some(engine) = &args.engine {
        config.engine.url = engine.clone();
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_client_ca.is_some() {
        let tls = config.server.tls.get_or_insert_with(|| TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: None,
            user_from: Default::default(),
        });
        if let Some(p) = &args.tls_cert {
            tls.cert = cwd.join(p);
        }
        if let Some(p) = &args.tls_key {
            tls.key = cwd.join(p);
        }
        if let Some(p) = &args.tls_client_ca {
            tls.client_ca = Some(cwd.join(p));
        }
    }
    config.server.insecure_tcp |= args.insecure_tcp;
    if config.server.listen.is_empty() {
        config.server.listen = vec![Address::Unix("/var/run/portcullis.sock".into())];
    }
    // Flags may have changed what the file said: check the result as a whole.
    let source = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("command line"));
    config.validate(&source)?;
    Ok(config)
}

/// A message per SIGHUP (reload), none when it cannot be registered (logged).
fn hangups() -> Option<tokio::sync::mpsc::Receiver<()>> {
    let mut hangup = register(SignalKind::hangup(), "SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // A reload already asked for covers this one too.
            let _ = tx.try_send(());
        }
    });
    Some(rx)
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. Both are registered when this is
/// called, each on its own: one that cannot be registered is logged and the other still
/// stops the gateway. Must be called within the runtime.
fn shutdown_signal() -> impl Future<Output = ()> {
    let interrupt = register(SignalKind::interrupt(), "SIGINT (Ctrl-C)");
    let terminate = register(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = received(interrupt) => {}
            () = received(terminate) => {}
        }
    }
}

fn register(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot handle {name}");
            None
        }
    }
}

/// The next delivery of `signal`; never, when it could not be registered.
async fn received(signal: Option<Signal>) {
    match signal {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
