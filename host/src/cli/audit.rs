//! `portcullis audit …`: finds the store (`--store`, or the `[audit]` path of `--config`),
//! opens it, and prints a listing, a record, the chain check, an export or statistics.
//! While a gateway runs it holds the store (sled lets one process open it): then the same
//! queries go to the gateway's admin listener named in `--config`, with the same output.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use http::Method;
use http_body_util::BodyExt;

use super::admin::{self, AdminClient};
use super::{runtime, CliError};
use crate::admin::MAX_LIMIT;
use crate::audit::store::Stats;
use crate::audit::{merge, report, AuditError, Decision, Query, Record, Verified};
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
    /// Merge the exports of several gateways into one trail ordered by time, checking each
    /// gateway's chain (no store needed; exits non-zero naming the first bad line).
    Merge {
        /// Exports (`audit export --format jsonl`), each `FILE` or `NAME=FILE`: NAME (default
        /// the file's stem) is the gateway its records are tagged with. A merged trail is an
        /// input too: its lines keep their gateway.
        #[arg(required = true, value_name = "[NAME=]FILE")]
        exports: Vec<String>,
        /// Write the merged trail here instead of standard output (`/dev/null`: only check).
        #[arg(long, short)]
        out: Option<PathBuf>,
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
    if let AuditCommand::Merge { exports, out } = &args.command {
        return merge(exports, out.as_deref());
    }
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
        _ => match report::open(&path) {
            Err(AuditError::Locked { .. }) => {
                if let Some(admin) = config.as_ref().and_then(|c| c.admin.as_ref()) {
                    return runtime()?.block_on(remote(args.command, &admin.listen));
                }
                return Err(locked(&path, config.as_ref()));
            }
            other => other?,
        },
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
        AuditCommand::Bench { .. } | AuditCommand::Merge { .. } => {}
    }
    out.flush()?;
    Ok(())
}

/// `audit merge`: opens each export, merges them to `out` (or stdout) and says on stderr
/// what each chain held.
fn merge(exports: &[String], out: Option<&Path>) -> Result<(), CliError> {
    let mut inputs = Vec::new();
    for arg in exports {
        let (name, file) = match arg.split_once('=') {
            Some((name, file)) if !name.is_empty() && !name.contains('/') => {
                (name.to_owned(), PathBuf::from(file))
            }
            _ => {
                let file = PathBuf::from(arg);
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
                (stem.unwrap_or_else(|| arg.clone()), file)
            }
        };
        let f = std::fs::File::open(&file)
            .map_err(|e| CliError::context(format!("opening the export {}", file.display()), e))?;
        inputs.push(merge::Input {
            name,
            file: file.display().to_string(),
            lines: Box::new(std::io::BufReader::new(f)),
        });
    }
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::context(format!("creating {}", path.display()), e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let chains = merge::merge(inputs, &mut sink)?;
    let total: u64 = chains.iter().map(|c| c.records).sum();
    for c in &chains {
        let from = if c.from_start {
            String::new()
        } else {
            format!(" from the retention anchor {}", c.first - 1)
        };
        eprintln!(
            "ok: gateway {}: {} records ({}..{}) chained{from}; head hash {}",
            c.gateway, c.records, c.first, c.last, c.head_hash
        );
    }
    eprintln!("ok: merged {total} records of {} gateways", chains.len());
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

/// Why a store held by a running gateway cannot be read: the gateway has no admin listener.
fn locked(path: &Path, config: Option<&Config>) -> CliError {
    let hint = match config {
        Some(_) => "add an [admin] table to its configuration (and restart it) to query it while it runs",
        None => "pass the gateway's --config FILE instead of --store to query it through its admin listener",
    };
    CliError::Message(format!(
        "audit store {} is in use by a running gateway (a store is opened by one process at a time); {hint}",
        path.display()
    ))
}

/// Runs `command` against the running gateway's admin listener at `admin`, printing what
/// the same command prints on a stopped store.
async fn remote(command: AuditCommand, admin: &Address) -> Result<(), CliError> {
    let client = AdminClient::new(admin)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
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
            let mut q = form_urlencoded::Serializer::new(String::new());
            let pairs = [
                ("since", since),
                ("until", until),
                ("user", user),
                ("decision", decision.map(|d| d.as_str().to_owned())),
                ("endpoint", endpoint),
                ("object", object),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    q.append_pair(k, &v);
                }
            }
            // The admin API bounds one answer; "all" is as many as it gives.
            let wanted = if limit == 0 {
                MAX_LIMIT
            } else {
                limit.min(MAX_LIMIT)
            };
            q.append_pair("limit", &wanted.to_string());
            let body = client
                .call(Method::GET, &format!("/audit?{}", q.finish()))
                .await?;
            let records: Vec<Record> = serde_json::from_slice(&body)?;
            let n = records.len();
            report::list_records(records.into_iter().map(Ok), json, &mut out)?;
            if limit == 0 && n == MAX_LIMIT {
                eprintln!("portcullis: a running gateway answers at most {MAX_LIMIT} records; narrow the listing (--since, --until, --user, ...) or stop the gateway for all of them");
            }
        }
        AuditCommand::Show { seq } => {
            let body = client.call(Method::GET, &format!("/audit/{seq}")).await?;
            let record: Record = serde_json::from_slice(&body)?;
            report::show_record(&record, &mut out)?;
        }
        AuditCommand::Verify => {
            let answer = client.send(Method::GET, "/audit/verify").await?;
            let status = answer.status;
            let body = answer.read().await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if !status.is_success() {
                let why = admin::message_of(&body)
                    .unwrap_or_else(|| format!("the gateway answered {status}"));
                return Err(CliError::Message(why));
            }
            let verified: Verified = serde_json::from_value(v["verified"].clone())?;
            report::verified(&verified, &mut out)?;
        }
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
        } => {
            let answer = client.send(Method::GET, "/audit/export").await?;
            if !answer.status.is_success() {
                let status = answer.status;
                let body = answer.read().await?;
                return Err(CliError::Message(admin::message_of(&body).unwrap_or_else(
                    || format!("the gateway answered {status} to the export"),
                )));
            }
            let mut body = answer.body;
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| CliError::context("reading the export from the gateway", e))?;
                if let Some(data) = frame.data_ref() {
                    out.write_all(data)?;
                }
            }
        }
        AuditCommand::Stats { json } => {
            let body = client.call(Method::GET, "/audit/stats").await?;
            let stats: Stats = serde_json::from_slice(&body)?;
            report::stats_of(&stats, json, &mut out)?;
        }
        AuditCommand::Bench { .. } | AuditCommand::Merge { .. } => {}
    }
    out.flush()?;
    Ok(())
}
