//! The `portcullis` command: parses the command line, loads the config, sets up logging and
//! hands over to the library. No gateway logic lives here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis::config::Address;
use portcullis::{Config, Listener};
use tracing_subscriber::EnvFilter;

/// A secure front door for shared Docker hosts.
#[derive(Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Docker Engine API, forwarding to the engine through the policy pipeline.
    Serve(ServeArgs),
    /// Validate a configuration file and exit (0 when valid).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen;
    }
    if let Some(engine) = args.engine {
        config.engine.url = engine;
    }
    if config.server.listen.is_empty() {
        config.server.listen = vec![Address::Unix("/var/run/portcullis.sock".into())];
    }
    let mode = config.socket_mode().context("server.socket_mode")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for address in &config.server.listen {
            listeners.push(Listener::bind(address, mode).await?);
        }
        tracing::info!(engine = %config.engine.url, "portcullis starting");
        portcullis::run(listeners, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
