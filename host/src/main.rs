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
    /// Validate a configuration file and every plugin it names, then exit (0 when valid).
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with plugins offline.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Query and check the audit trail (the store is opened by one process at a time).
    Audit(AuditArgs),
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The gateway's configuration file: the store is its [audit] path.
    #[arg(long, short, global = true, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store directory itself.
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List records, newest first (a table; JSON lines with --json).
    List {
        /// Written at or after: a duration ago (1h, 30m, 2d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Written at or before: a duration ago or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only this decision: allow, deny or error.
        #[arg(long)]
        decision: Option<portcullis::audit::Decision>,
        /// Only endpoints matching this glob, e.g. 'container.*'.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this object id or name (as the client named it).
        #[arg(long)]
        object: Option<String>,
        /// At most this many records (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one record as JSON.
    Show {
        /// The record's sequence number.
        seq: u64,
    },
    /// Check the hash chain; exits non-zero naming the first bad record.
    Verify,
    /// Write every record, oldest first, with its chain hashes (streamed).
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Counts by user, decision and endpoint.
    Stats {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure the store on a new directory (--store): batch appends/s, `list --user U
    /// --limit 100` latency, bytes per record.
    Bench {
        /// Records to append.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run one plugin on a request (and optionally a response) and print its verdict as JSON.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// The request, as JSON (see the README for the format).
        #[arg(long)]
        request: PathBuf,
        /// A response, as JSON: runs the response hook instead of the request hook.
        #[arg(long)]
        response: Option<PathBuf>,
        /// The plugin's configuration, as a JSON object.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure a plugin: instantiation alone and a whole request-hook call, p50/p99 in µs.
    Bench {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// The request, as JSON.
        #[arg(long)]
        request: PathBuf,
        /// The plugin's configuration, as a JSON object.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Iterations of each measurement.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
    /// Show a plugin's name, version, contract version and hooks.
    Inspect {
        /// The plugin component (.wasm).
        plugin: PathBuf,
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

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("portcullis: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check { config: path } => {
            let config = Config::load(&path)?;
            let chain = runtime()?.block_on(portcullis::load_chain(&config))?;
            println!("{}: ok ({} plugins)", path.display(), chain.len());
            Ok(())
        }
        Command::Plugin(cmd) => runtime()?.block_on(plugin_command(cmd)),
        Command::Audit(args) => audit_command(args),
    }
}

fn audit_command(args: AuditArgs) -> Result<()> {
    use portcullis::audit::{cli, Query};
    let path = match (&args.store, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(file)) => cli::store_path(&Config::load(file)?)?,
        (None, None) => anyhow::bail!("name the store with --config FILE or --store DIR"),
    };
    // The benchmark creates its own store; every other command opens an existing one.
    let store = match args.command {
        AuditCommand::Bench { records } => {
            let figures = runtime()?.block_on(portcullis::audit::bench::run(&path, records))?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
            return Ok(());
        }
        _ => cli::open(&path)?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.command {
        AuditCommand::List { since, until, user, decision, endpoint, object, limit, json } => {
            let time = |s: Option<String>| s.map(|s| cli::parse_time(&s)).transpose().map_err(anyhow::Error::msg);
            let query = Query {
                since: time(since)?,
                until: time(until)?,
                user,
                decision,
                endpoint,
                object,
                limit: (limit > 0).then_some(limit),
            };
            cli::list(&store, &query, json, &mut out)?;
        }
        AuditCommand::Show { seq } => cli::show(&store, seq, &mut out)?,
        AuditCommand::Verify => {
            cli::verify(&store, &mut out)?;
        }
        AuditCommand::Export { format: ExportFormat::Jsonl } => {
            cli::export(&store, &mut out)?;
        }
        AuditCommand::Stats { json } => cli::stats(&store, json, &mut out)?,
        AuditCommand::Bench { .. } => {}
    }
    use std::io::Write;
    out.flush()?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Loads a plugin with its configuration (checked) and a request file, for `plugin test`
/// and `plugin bench`.
async fn load_for_test(
    plugin: &std::path::Path,
    request: &std::path::Path,
    config: Option<&std::path::Path>,
) -> Result<(portcullis::plugin::Plugin, portcullis::plugin::types::Request)> {
    use portcullis::plugin::offline;
    let config = match config {
        Some(p) => read_json(p)?,
        None => serde_json::json!({}),
    };
    let loaded = offline::load_one(plugin, config, true).await?;
    let request = read_json::<offline::RequestFile>(request)?
        .into_request()
        .map_err(|e| anyhow::anyhow!("{}: {e}", request.display()))?;
    Ok((loaded, request))
}

async fn plugin_command(cmd: PluginCommand) -> Result<()> {
    use portcullis::plugin::offline;
    match cmd {
        PluginCommand::Test { plugin, request, response, config } => {
            let (loaded, request) = load_for_test(&plugin, &request, config.as_deref()).await?;
            let response = match response {
                Some(p) => Some(read_json::<offline::ResponseFile>(&p)?.into_response()),
                None => None,
            };
            let verdict = offline::run(&loaded, &request, response.as_ref())
                .await
                .map_err(|f| anyhow::anyhow!("plugin {f}"))?;
            println!("{}", serde_json::to_string_pretty(&offline::verdict_json(&verdict))?);
            Ok(())
        }
        PluginCommand::Bench { plugin, request, config, iterations } => {
            let (loaded, request) = load_for_test(&plugin, &request, config.as_deref()).await?;
            let figures = offline::bench(&loaded, &request, iterations)
                .await
                .map_err(|f| anyhow::anyhow!("plugin {f}"))?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
            Ok(())
        }
        PluginCommand::Inspect { plugin } => {
            let loaded = offline::load_one(&plugin, serde_json::json!({}), false).await?;
            println!("{}", serde_json::to_string_pretty(&offline::describe(&loaded))?);
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
    runtime()?.block_on(async move {
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
