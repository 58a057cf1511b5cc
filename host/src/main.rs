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
    /// Work with Rego policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Development certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Query and check the audit trail (the store is opened by one process at a time).
    Audit(AuditArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a development CA (DIR/ca.pem, DIR/ca-key.pem; reused if present), a server
    /// certificate for localhost and 127.0.0.1 (DIR/server/) and, per user, a folder for the
    /// docker CLI's DOCKER_CERT_PATH (DIR/USER/ca.pem, cert.pem, key.pem).
    Init {
        /// The directory to write to.
        dir: PathBuf,
        /// A user to make a client certificate for (CN=USER); repeatable.
        #[arg(long = "user")]
        users: Vec<String>,
        /// USER=GROUP: put GROUP in USER's certificate (O=GROUP); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a random token for USER, append its SHA-256 to the tokens file (created with
    /// mode 0600) and print the token, once: it is stored nowhere else.
    Add {
        /// The tokens file (`server.tokens_file`).
        #[arg(long)]
        file: PathBuf,
        /// The user the token stands for.
        #[arg(long)]
        user: String,
        /// A group of the user; repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the Rego unit tests under DIR as `opa test` does: every rule named `test_*` must
    /// be true. Exits 1 when one fails.
    Test {
        /// A directory of .rego files (policies and their `*_test.rego` files), or one file.
        dir: PathBuf,
    },
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
        /// The plugin component (.wasm), a Rego policy (.rego file or directory), or an OPA
        /// policy compiled to wasm (an `opa build -t wasm` bundle.tar.gz, or its policy.wasm).
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
        /// The plugin component (.wasm), a Rego policy (.rego file or directory), or an OPA
        /// policy compiled to wasm (an `opa build -t wasm` bundle.tar.gz, or its policy.wasm).
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
        /// Measure calls on a reused, initialized instance (`[plugins.reuse]`) instead of a
        /// fresh instance per call.
        #[arg(long)]
        reuse: bool,
    },
    /// Create a plugin from the template of a language; it builds with `./build.sh` and
    /// passes its own test with `./test.sh`.
    New {
        /// The plugin's name (lowercase letters, digits, '-'); also its directory's.
        name: String,
        /// The language: rust, python, js or c.
        #[arg(long, value_parser = ["rust", "python", "js", "c"])]
        lang: String,
        /// The directory to create the plugin in (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Rust SDK crate a Rust plugin depends on (default: this source tree's sdk/rust).
        #[arg(long)]
        sdk: Option<PathBuf>,
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
            if let Some(tls) = &config.server.tls {
                // Loads certificate, key and client CA as serving would (a key that does not
                // fit the certificate is only seen here).
                portcullis::listener::tls::TlsSetup::from_config(&config, tls)?;
            }
            let chain = runtime()?.block_on(portcullis::load_chain(&config))?;
            println!("{}: ok ({} plugins)", path.display(), chain.len());
            Ok(())
        }
        Command::Plugin(cmd) => runtime()?.block_on(plugin_command(cmd)),
        Command::Policy(PolicyCommand::Test { dir }) => policy_test(&dir),
        Command::Certs(CertsCommand::Init { dir, users, groups }) => certs_init(dir, users, groups),
        Command::Token(TokenCommand::Add { file, user, groups }) => {
            let token = portcullis::identity::tokens::add(&file, &user, &groups)?;
            eprintln!(
                "added a token for {user} to {}; it is shown only now:",
                file.display()
            );
            println!("{token}");
            Ok(())
        }
        Command::Audit(args) => audit_command(args),
    }
}

fn policy_test(dir: &std::path::Path) -> Result<()> {
    let timeout = std::time::Duration::from_secs(5);
    let report = portcullis::plugin::rego::run_tests(dir, timeout)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for (name, ok, error) in &report.results {
        match error {
            Some(e) => println!("FAIL {name}: {e}"),
            None => println!("{} {name}", if *ok { "PASS" } else { "FAIL" }),
        }
    }
    let passed = report.results.iter().filter(|(_, ok, _)| *ok).count();
    println!("{passed}/{} passed", report.results.len());
    if report.passed() {
        Ok(())
    } else if report.results.is_empty() {
        anyhow::bail!("no test_* rules found under {}", dir.display())
    } else {
        std::process::exit(1)
    }
}

fn certs_init(dir: PathBuf, users: Vec<String>, groups: Vec<String>) -> Result<()> {
    let mut with_groups: Vec<(String, Vec<String>)> =
        users.into_iter().map(|u| (u, Vec::new())).collect();
    for g in groups {
        let (user, group) = g
            .split_once('=')
            .with_context(|| format!("--group {g:?}: expected USER=GROUP"))?;
        let entry = with_groups
            .iter_mut()
            .find(|(u, _)| u == user)
            .with_context(|| format!("--group {g:?}: {user} is not one of the --user names"))?;
        entry.1.push(group.to_owned());
    }
    let report = portcullis::identity::devca::init(&dir, &with_groups)?;
    // Absolute paths in the hints: DOCKER_CERT_PATH is read from wherever docker runs.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let d = dir.display();
    println!(
        "{} CA: {d}/ca.pem",
        if report.reused_ca { "reused" } else { "new" }
    );
    for f in &report.folders {
        println!("wrote {}", f.display());
    }
    println!(
        "\nserve:  portcullis serve --listen tls://127.0.0.1:2376 --tls-cert {d}/server/cert.pem \\\n          --tls-key {d}/server/key.pem --tls-client-ca {d}/ca.pem"
    );
    if let Some((user, _)) = with_groups.first() {
        println!(
            "client: DOCKER_HOST=tcp://127.0.0.1:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={d}/{user} docker ps"
        );
    }
    Ok(())
}

fn audit_command(args: AuditArgs) -> Result<()> {
    use portcullis::audit::{cli, Query};
    let config = args.config.as_ref().map(|f| Config::load(f)).transpose()?;
    let path = match (&args.store, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => cli::store_path(config)?,
        (None, None) => anyhow::bail!("name the store with --config FILE or --store DIR"),
    };
    // The benchmark creates its own store; every other command opens an existing one.
    let store = match args.command {
        AuditCommand::Bench { records } => {
            let figures = runtime()?.block_on(portcullis::audit::bench::run(&path, records))?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
            return Ok(());
        }
        _ => cli::open_for_command(&path, config.as_ref())?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.command {
        AuditCommand::List {
            since,
            until,
            user,
            decision,
            endpoint,
            object,
            limit,
            json,
        } => {
            let time = |s: Option<String>| {
                s.map(|s| cli::parse_time(&s))
                    .transpose()
                    .map_err(anyhow::Error::msg)
            };
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
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
        } => {
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
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Loads a plugin with its configuration (checked) and a request file, for `plugin test`
/// and `plugin bench`.
async fn load_for_test(
    plugin: &std::path::Path,
    request: &std::path::Path,
    config: Option<&std::path::Path>,
    reuse: Option<portcullis::config::Reuse>,
) -> Result<(portcullis::plugin::Plugin, portcullis::model::Request)> {
    use portcullis::plugin::offline;
    let config = match config {
        Some(p) => read_json(p)?,
        None => serde_json::json!({}),
    };
    let loaded = offline::load_one(plugin, config, true, reuse).await?;
    let request = read_json::<offline::RequestFile>(request)?
        .into_request()
        .map_err(|e| anyhow::anyhow!("{}: {e}", request.display()))?;
    Ok((loaded, request))
}

async fn plugin_command(cmd: PluginCommand) -> Result<()> {
    use portcullis::plugin::offline;
    match cmd {
        PluginCommand::Test {
            plugin,
            request,
            response,
            config,
        } => {
            let (loaded, request) =
                load_for_test(&plugin, &request, config.as_deref(), None).await?;
            let response = match response {
                Some(p) => Some(read_json::<offline::ResponseFile>(&p)?.into_response()),
                None => None,
            };
            let verdict = offline::run(&loaded, &request, response.as_ref())
                .await
                .map_err(|f| anyhow::anyhow!("plugin {f}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&offline::verdict_json(&verdict))?
            );
            Ok(())
        }
        PluginCommand::Bench {
            plugin,
            request,
            config,
            iterations,
            reuse,
        } => {
            // One instance, never retired: the figure is the hook call alone.
            let reuse = reuse.then_some(portcullis::config::Reuse {
                instances: 1,
                calls: u32::MAX,
            });
            let (loaded, request) =
                load_for_test(&plugin, &request, config.as_deref(), reuse).await?;
            let figures = offline::bench(&std::sync::Arc::new(loaded), &request, iterations)
                .await
                .map_err(|f| anyhow::anyhow!("plugin {f}"))?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
            Ok(())
        }
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            use portcullis::plugin::scaffold;
            let lang: scaffold::Lang = lang.parse()?;
            let sdk = sdk.unwrap_or_else(scaffold::default_rust_sdk);
            let created = scaffold::create(lang, &name, &dir, &sdk)?;
            println!("created {}", created.display());
            println!(
                "build: {}/build.sh   test: {}/test.sh",
                created.display(),
                created.display()
            );
            Ok(())
        }
        PluginCommand::Inspect { plugin } => {
            let loaded = offline::load_one(&plugin, serde_json::json!({}), false, None).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&offline::describe(&loaded))?
            );
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
    if args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_client_ca.is_some() {
        let tls = config
            .server
            .tls
            .get_or_insert_with(|| portcullis::config::TlsConfig {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                client_ca: None,
                user_from: Default::default(),
            });
        // Flag paths are relative to the working directory, not to the config file.
        let cwd = std::env::current_dir().context("current directory")?;
        if let Some(p) = args.tls_cert {
            tls.cert = cwd.join(p);
        }
        if let Some(p) = args.tls_key {
            tls.key = cwd.join(p);
        }
        if let Some(p) = args.tls_client_ca {
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(config.server.request_threads());
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for address in &config.server.listen {
            listeners.push(Listener::bind_config(address, &config).await?);
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
