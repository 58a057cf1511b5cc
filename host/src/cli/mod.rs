//! The `portcullis` command line, the top layer: the arguments of every command and the
//! dispatch to one file per command group. `main.rs` parses the arguments, sets up logging,
//! calls [`run`] and turns a [`CliError`] into a message and an exit status; nothing below it
//! prints errors or exits the process.
//!
//! - [`serve`]: `portcullis serve`, the gateway itself (flags over the config, signals).
//! - [`check`]: `portcullis check`, a configuration and its plugins validated.
//! - [`plugin`]: `portcullis plugin test|bench|new|inspect`, for plugin authors, offline.
//! - [`policy`]: `portcullis policy test`, Rego unit tests.
//! - [`certs`]: `portcullis certs init`, development certificates for mutual TLS.
//! - [`token`]: `portcullis token add`, bearer tokens.
//! - [`audit`]: `portcullis audit …`, the audit trail read from its store, or from a running
//!   gateway's admin listener.
//! - [`admin`]: the admin listener's client (`audit …` while serving, and `reload`).

pub mod admin;
pub mod audit;
pub mod certs;
pub mod check;
pub mod plugin;
pub mod policy;
pub mod serve;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// A secure front door for shared Docker hosts.
#[derive(Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve the Docker Engine API, forwarding to the engine through the policy pipeline.
    Serve(serve::ServeArgs),
    /// Validate a configuration file and every plugin it names, then exit (0 when valid).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with plugins offline.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Work with Rego policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Development certificates for mutual TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Bearer tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Query and check the audit trail: the store itself, or a running gateway's through
    /// its admin listener.
    Audit(audit::AuditArgs),
    /// Reload a running gateway's policy (plugins, [api], [runtime]) from its configuration
    /// file, through its admin listener; the running chain stays when anything fails.
    Reload {
        /// The gateway's configuration file: its [admin] listener is asked to reload.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Why a command failed. `main` prints it, with its chain of causes, and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command has already said why on its standard output (a failing `policy test`):
    /// only the exit status is left to set.
    #[error("the command failed")]
    Reported,
    /// A message that is the whole story (a bad argument, a refused request).
    #[error("{0}")]
    Message(String),
    /// What was being done, and the error that stopped it.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::listener::tls::TlsError),
    #[error(transparent)]
    Listen(#[from] crate::listener::ListenError),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::LoadError),
    #[error(transparent)]
    Scaffold(#[from] crate::plugin::scaffold::ScaffoldError),
    #[error(transparent)]
    Run(#[from] crate::RunError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    DevCa(#[from] crate::identity::devca::DevCaError),
    #[error(transparent)]
    Tokens(#[from] crate::identity::tokens::TokensError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// `source`, introduced by what was being done.
    fn context(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CliError::Context {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

impl Cli {
    /// How the log lines look: `PORTCULLIS_LOG_FORMAT` (`human` or `json`) when set, else
    /// the `[log]` format of the configuration `serve` is given (a configuration that does
    /// not load is reported by `serve` itself, once logging is up).
    pub fn log_format(&self) -> Result<LogFormat, CliError> {
        if let Ok(value) = std::env::var("PORTCULLIS_LOG_FORMAT") {
            return value
                .parse()
                .map_err(|e| CliError::Message(format!("PORTCULLIS_LOG_FORMAT: {e}")));
        }
        Ok(match &self.command {
            Command::Serve(args) => args
                .config_file()
                .and_then(|f| crate::Config::load(f).ok())
                .map(|c| c.log.format)
                .unwrap_or_default(),
            _ => LogFormat::Human,
        })
    }
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check { config } => check::run(&config),
        Command::Plugin(cmd) => runtime()?.block_on(plugin::run(cmd)),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Reload { config } => runtime()?.block_on(reload(&config)),
    }
}

/// `portcullis reload`: asks the gateway that `config` describes to load it again.
async fn reload(config: &std::path::Path) -> Result<(), CliError> {
    let loaded = crate::Config::load(config)?;
    let Some(admin) = &loaded.admin else {
        return Err(CliError::Message(format!(
            "{} has no [admin] table: reload the gateway with SIGHUP instead (kill -HUP PID)",
            config.display()
        )));
    };
    let client = admin::AdminClient::new(&admin.listen)?;
    let body = client.call(http::Method::POST, "/reload").await?;
    let report: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "reloaded: generation {}, {} plugins",
        report["generation"], report["plugins"]
    );
    Ok(())
}

/// A runtime for the commands that need one (`serve` sizes its own).
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new().map_err(|e| CliError::context("starting the async runtime", e))
}
