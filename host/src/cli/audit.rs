//! `portcullis audit …`: finds the store (`--store`, or the `[audit]` path of `--config`),
//! opens it, and prints a listing, a record, the chain check, an export or statistics.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{runtime, CliError};
use crate::audit::{report, AuditError, Decision, Query, Store};
use crate::config::Address;
use crate::Config;

/// `portcullis audit` and its store options.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// The gateway's configuration file: the store is its [audit] path.
    #[arg(long, short, global = true, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store directory itself.
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

/// `portcullis audit …`
#[derive(Subcommand)]
pub enum AuditCommand {
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
        decision: Option<Decision>,
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

/// `audit export --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// Runs an `audit` command.
pub fn run(args: AuditArgs) -> Result<(), CliError> {
    let config = args.config.as_ref().map(|f| Config::load(f)).transpose()?;
    let path = match (&args.store, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => store_path(config)?,
        (None, None) => {
            return Err(CliError::Message(
                "name the store with --config FILE or --store DIR".into(),
            ))
        }
    };
    // The benchmark creates its own store; every other command opens an existing one.
    let store = match args.command {
        AuditCommand::Bench { records } => {
            let figures = runtime()?.block_on(crate::audit::bench::run(&path, records))?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
            return Ok(());
        }
        _ => open_for_command(&path, config.as_ref())?,
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
                s.map(|s| report::parse_time(&s))
                    .transpose()
                    .map_err(CliError::Message)
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
            report::list(&store, &query, json, &mut out)?;
        }
        AuditCommand::Show { seq } => report::show(&store, seq, &mut out)?,
        AuditCommand::Verify => {
            report::verify(&store, &mut out)?;
        }
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
        } => {
            report::export(&store, &mut out)?;
        }
        AuditCommand::Stats { json } => report::stats(&store, json, &mut out)?,
        AuditCommand::Bench { .. } => {}
    }
    out.flush()?;
    Ok(())
}

/// The store directory a gateway configuration uses.
fn store_path(config: &Config) -> Result<PathBuf, CliError> {
    config
        .audit
        .as_ref()
        .map(|a| a.store_path(&config.base_dir))
        .ok_or_else(|| {
            CliError::Message("the configuration has no [audit] table (or pass --store DIR)".into())
        })
}

/// Opens the store for an `audit` command. sled lets one process open a store, so a store
/// held by a running gateway is an error that says where the same queries are served: the
/// admin listener of `config`, or how to configure one.
fn open_for_command(path: &Path, config: Option<&Config>) -> Result<Store, CliError> {
    match report::open(path) {
        Err(AuditError::Locked { path }) => {
            let hint = match config.and_then(|c| c.admin.as_ref()) {
                Some(a) => format!(
                    "query the running gateway through its admin listener at {}: GET /audit?user=U&limit=100, /audit/SEQ, /audit/verify, /audit/stats{}",
                    a.listen,
                    match &a.listen {
                        Address::Unix(p) => format!(
                            " (e.g. curl --unix-socket {} 'http://admin/audit?limit=10')",
                            p.display()
                        ),
                        _ => String::new(),
                    }
                ),
                None => "stop the gateway, or configure an [admin] listener to query it while it runs (GET /audit, /audit/verify, /audit/stats)".into(),
            };
            Err(CliError::Message(format!(
                "audit store {} is in use by a running gateway (a store is opened by one process at a time); {hint}",
                path.display()
            )))
        }
        other => Ok(other?),
    }
}
