//! `portcullis audit …`: finds the store (`--store`, or the `[audit]` path of `--config`),
//! opens it, and prints a listing, a record, the chain check, an export or statistics.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::{runtime, CliError};
use crate::audit::{cli, Decision, Query};
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
        (None, Some(config)) => cli::store_path(config)?,
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
    out.flush()?;
    Ok(())
}
