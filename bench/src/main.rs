//! # portcullis-bench
//!
//! Measures what portcullis costs in front of a real Docker engine, against the engine itself
//! and against the proxies people use today (socat, HAProxy as docker-socket-proxy configures
//! it), all started by this program on unix sockets in front of the same engine.
//!
//! The machine is small and shared, so every configuration is measured in the same run,
//! interleaved point by point and round by round, and reported as a ratio to `direct` from
//! the same round; figures are medians over rounds. BENCHMARKS.md explains how to read them.
//!
//! # Layout
//!
//! - [`client`]: hyper HTTP/1 over unix sockets, and the streamed tar body for `docker cp`.
//! - [`load`]: the closed-loop load generator and its HDR histograms.
//! - [`transfer`]: `docker cp` in and out and `docker logs`, timed.
//! - [`events`]: many `GET /events` streams held open at once.
//! - [`plot`]: the PNG of p50 latency per scenario and configuration.
//! - [`targets`]: starting and stopping the configurations; their memory.
//! - [`engine`]: fixtures on the engine (containers to list, a container to copy into).
//! - [`report`]: medians, ratios, the issues' targets, markdown, JSON, comparison.

mod client;
mod engine;
mod events;
mod load;
mod plot;
mod report;
mod targets;
mod transfer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use crate::engine::Engine;
use crate::load::Op;
use crate::report::{
    EventsResult, LatencyResult, LatencyRound, MemoryResult, Meta, Results, Skipped,
    ThroughputResult, LOGS,
};
use crate::targets::Target;

/// Benchmarks portcullis against the engine, socat and HAProxy (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "portcullis-bench")]
struct Args {
    /// A fast smoke run: 1 s per point, 1 round, 256 MiB `docker cp`; BENCHMARKS.md is left alone.
    #[arg(long)]
    quick: bool,
    /// Where the JSON results go (`latest.json`).
    #[arg(long, default_value_os_t = workspace().join("bench/results"))]
    out: PathBuf,
    /// An earlier results file: print every change beyond 10% (p50, rps, MB/s).
    #[arg(long, value_name = "OLD.json")]
    compare: Option<PathBuf>,
    /// Rounds per point (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds measured per point (default 3; 1 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Size of the `docker cp` file in MiB (default 1024; 256 with --quick).
    #[arg(long)]
    cp_mib: Option<u64>,
    /// Size of the log `docker logs` reads, in MB (default 100; 25 with --quick).
    #[arg(long)]
    log_mb: Option<u64>,
    /// Length of each log line in bytes, newline included (default 1000; at most 16384, the
    /// engine's json-file log splits longer lines).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..=16384))]
    log_line_bytes: u64,
    /// `GET /events` streams held open at once (default 500).
    #[arg(long, default_value_t = 500)]
    streams: usize,
    /// Configurations to run, comma-separated (`direct` always runs: it is the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = targets::ALL.map(String::from))]
    configs: Vec<String>,
    /// Scenarios to run, comma-separated: ping, list, create, denied, logs, cp, events.
    #[arg(long, value_delimiter = ',', default_values_t = SCENARIOS.map(String::from))]
    scenarios: Vec<String>,
    /// The engine's socket (default: PORTCULLIS_TEST_ENGINE, else the dev engine).
    #[arg(long)]
    engine: Option<String>,
    /// The portcullis binary (default: next to this one).
    #[arg(long)]
    portcullis: Option<PathBuf>,
    /// The testkit plugin component (default: the wasm32-wasip2 release build).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// The owner policy built in every language (default: `just plugin-examples`'s output).
    #[arg(long)]
    plugin_examples: Option<PathBuf>,
    /// Do not write BENCHMARKS.md (it is written only by full runs of every configuration and scenario).
    #[arg(long)]
    no_markdown: bool,
    /// The audit trail's durability in portcullis-audit and portcullis-default.
    #[arg(long, default_value = "batch", value_parser = ["sync", "batch", "async"])]
    durability: String,
}

const SCENARIOS: [&str; 7] = ["ping", "list", "create", "denied", "logs", "cp", "events"];
/// Containers present for the list scenario.
const LISTED: usize = 50;
const DEV_ENGINE: &str = "unix:///var/tmp/portcullis-engine/docker.sock";

/// The workspace root (this crate's parent directory).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_path_buf()
}

/// One latency point: a scenario at one concurrency.
struct Point {
    scenario: &'static str,
    concurrency: usize,
    op: Op,
    /// Measured only on the configurations whose policy refuses the request
    /// ([`targets::DENYING`]); the others would forward it.
    denying_only: bool,
}

/// Everything decided before the run starts.
struct Plan {
    configs: Vec<&'static str>,
    points: Vec<Point>,
    cp: bool,
    logs: bool,
    log_bytes: u64,
    log_line_bytes: u64,
    events: bool,
    streams: usize,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    cp_bytes: u64,
    engine: PathBuf,
    portcullis: PathBuf,
    plugin: PathBuf,
    plugin_examples: PathBuf,
    durability: String,
    write_markdown: bool,
}

impl Plan {
    fn new(args: &Args) -> Result<Self> {
        for s in &args.scenarios {
            if !SCENARIOS.contains(&s.as_str()) {
                bail!("unknown scenario {s:?} (known: {})", SCENARIOS.join(", "));
            }
        }
        for c in &args.configs {
            if !targets::ALL.contains(&c.as_str()) {
                bail!(
                    "unknown configuration {c:?} (known: {})",
                    targets::ALL.join(", ")
                );
            }
        }
        let configs: Vec<&'static str> = targets::ALL
            .into_iter()
            .filter(|c| *c == "direct" || args.configs.iter().any(|x| x == c))
            .collect();
        let has = |s: &str| args.scenarios.iter().any(|x| x == s);
        let mut points = Vec::new();
        if has("ping") {
            for c in [1, 10, 50, 100] {
                points.push(Point {
                    scenario: "GET /_ping",
                    concurrency: c,
                    op: Op::Get("/_ping".into()),
                    denying_only: false,
                });
            }
        }
        if has("list") {
            for c in [1, 10] {
                points.push(Point {
                    scenario: "GET /containers/json?all=1",
                    concurrency: c,
                    op: Op::Get("/containers/json?all=1".into()),
                    denying_only: false,
                });
            }
        }
        if has("create") {
            points.push(Point {
                scenario: "create + remove",
                concurrency: 1,
                op: Op::CreateRemove {
                    body: engine::create_body(),
                },
                denying_only: false,
            });
        }
        if has("denied") {
            points.push(Point {
                scenario: "denied create",
                concurrency: 1,
                op: Op::DeniedCreate {
                    body: engine::denied_create_body(),
                },
                denying_only: true,
            });
        }
        let engine_url = args
            .engine
            .clone()
            .or_else(|| std::env::var("PORTCULLIS_TEST_ENGINE").ok())
            .unwrap_or_else(|| DEV_ENGINE.into());
        let engine =
            PathBuf::from(engine_url.strip_prefix("unix://").ok_or_else(|| {
                anyhow!("the engine must be a unix:// address, not {engine_url}")
            })?);
        let exe_dir = std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let full =
            args.configs.len() == targets::ALL.len() && args.scenarios.len() == SCENARIOS.len();
        Ok(Self {
            configs,
            points,
            cp: has("cp"),
            logs: has("logs"),
            log_bytes: args.log_mb.unwrap_or(if args.quick { 25 } else { 100 }) * 1_000_000,
            log_line_bytes: args.log_line_bytes,
            events: has("events"),
            streams: args.streams.max(1),
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
            duration: Duration::from_secs_f64(args.duration.unwrap_or(if args.quick {
                1.0
            } else {
                3.0
            })),
            warmup: Duration::from_millis(if args.quick { 200 } else { 500 }),
            cp_bytes: args.cp_mib.unwrap_or(if args.quick { 256 } else { 1024 }) << 20,
            engine,
            portcullis: args
                .portcullis
                .clone()
                .unwrap_or_else(|| exe_dir.join("portcullis")),
            plugin: args.plugin.clone().unwrap_or_else(|| {
                exe_dir.join("../wasm32-wasip2/release/portcullis_testkit_plugin.wasm")
            }),
            plugin_examples: args
                .plugin_examples
                .clone()
                .unwrap_or_else(|| exe_dir.join("../plugin-examples")),
            durability: args.durability.clone(),
            // Figures with another durability are not the documented configuration's.
            write_markdown: full && !args.quick && !args.no_markdown && args.durability == "batch",
        })
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args)?;
    // Read before the run: the old file may be the one this run overwrites.
    let baseline = match &args.compare {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let old: Results = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            Some((path.clone(), old))
        }
        None => None,
    };
    // One thread for the client: it competes with the proxy and the engine for the same two
    // cores, and a single-threaded client takes at most one of them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        let outcome = tokio::select! {
            r = run(&plan) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        // Whatever happened, leave the engine as it was.
        match Engine::connect(&plan.engine).await {
            Ok(mut e) => match e.remove_labelled().await {
                Ok(n) => eprintln!("bench: removed {n} benchmark containers"),
                Err(err) => eprintln!("bench: cleanup failed: {err:#}"),
            },
            Err(err) => eprintln!("bench: cleanup failed: {err:#}"),
        }
        outcome
    })?;

    let mut results = results;
    results.meta.command = std::env::var("PORTCULLIS_BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!(
            "cargo run --release -p portcullis-bench -- {}",
            args.join(" ")
        )
        .trim_end()
        .to_owned()
    });
    let generated = report::markdown(&results);
    println!("{generated}");

    std::fs::create_dir_all(&args.out)?;
    let json_path = args.out.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("bench: results written to {}", json_path.display());

    let png = args.out.join("latency.png");
    let plotted = match plot::latency(&results, &png) {
        Ok(()) => {
            eprintln!("bench: latency plot written to {}", png.display());
            true
        }
        Err(e) => {
            eprintln!("bench: no latency plot: {e:#}");
            false
        }
    };

    if plan.write_markdown {
        // The committed copy BENCHMARKS.md and docs/benchmarks.md show.
        if plotted {
            std::fs::copy(&png, workspace().join("bench/latency.png"))?;
        }
        let path = workspace().join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let updated = report::splice(&doc, &generated).unwrap_or_else(|| {
            format!(
                "{doc}\n<!-- bench:start -->\n{}\n<!-- bench:end -->\n",
                generated.trim_end()
            )
        });
        std::fs::write(&path, updated)?;
        eprintln!("bench: {} updated", path.display());
    } else {
        eprintln!("bench: BENCHMARKS.md left alone (quick, partial or --no-markdown run)");
    }

    if let Some((path, old)) = &baseline {
        let (lines, regressions) = report::compare(old, &results, 0.10);
        println!("Compared with {} ({}):", path.display(), old.meta.date);
        if lines.is_empty() {
            println!("  no change beyond 10%");
        }
        for l in &lines {
            println!("  {l}");
        }
        println!(
            "  {regressions} regression(s) beyond 10% (proxies: ratio to direct; direct: absolute)"
        );
    }
    Ok(())
}

/// Removes the run's private directory (sockets, configs, logs) at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Per-configuration memory, gathered while the run goes.
#[derive(Default, Clone, Copy)]
struct Memory {
    idle: Option<u64>,
    peak_requests: Option<u64>,
    peak_c100: Option<u64>,
    before_cp: Option<u64>,
    peak_cp: Option<u64>,
    peak_logs: Option<u64>,
    peak_events: Option<u64>,
    after: Option<u64>,
}

/// Records one round of a transfer (MB/s, or why it failed) and the proxy's peak memory
/// during it, and prints the line that shows the run's progress.
fn record_transfer(
    r: &mut ThroughputResult,
    round: usize,
    rounds: usize,
    mb_s: Result<f64>,
    peak: Option<u64>,
) {
    r.rss_peak_kib = max_opt(r.rss_peak_kib, peak);
    let at = format!("[{}/{rounds}] {} {}", round + 1, r.direction, r.config);
    match mb_s {
        Ok(mb_s) => {
            let rss = peak.map_or(String::new(), |p| {
                format!("  peak RSS {:.1} MiB", p as f64 / 1024.0)
            });
            eprintln!("{at:<50} {mb_s:>7.0} MB/s{rss}");
            r.rounds[round] = Some(mb_s);
        }
        Err(e) => {
            eprintln!("{at}: failed: {e:#}");
            r.errors += 1;
            r.first_error.get_or_insert(format!("{e:#}"));
        }
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Rotates the order configurations run in, so none always runs first or last.
fn order(n: usize, shift: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + shift) % n)
}

/// When one configuration ran one latency point in one round (warm-up included).
struct Window {
    /// The latency result it belongs to, by its scenario, concurrency and configuration
    /// (not by index: results are removed after the runs, see `denied create`).
    scenario: &'static str,
    concurrency: usize,
    config: &'static str,
    round: usize,
    from: std::time::SystemTime,
    to: std::time::SystemTime,
}

/// Every forwarded request's record time and the gateway's own time in microseconds
/// (`duration_us` − `engine_us`), read with `portcullis audit list --json`.
fn own_times(portcullis: &Path, store: &Path) -> Result<Vec<(std::time::SystemTime, u64)>> {
    let out = Command::new(portcullis)
        .args(["audit", "list", "--json", "--limit", "100000000", "--store"])
        .arg(store)
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut records = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line)?;
        let (Some(time), Some(total), Some(engine)) = (
            r["time"].as_str().and_then(parse_rfc3339_ms),
            r["duration_us"].as_u64(),
            r["engine_us"].as_u64(),
        ) else {
            continue;
        };
        records.push((time, total.saturating_sub(engine)));
    }
    Ok(records)
}

/// `2026-11-25T16:56:05.113Z` (the audit record's form: UTC, milliseconds).
fn parse_rfc3339_ms(s: &str) -> Option<std::time::SystemTime> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms_total = ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms;
    Some(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms_total).ok()?))
}

async fn run(plan: &Plan) -> Result<Results> {
    let loadavg_start = read_trimmed("/proc/loadavg", 3);
    let mut engine = Engine::connect(&plan.engine).await?;
    let version = engine.version().await?;
    engine.require_image().await?;
    let leftovers = engine.remove_labelled().await?;
    if leftovers > 0 {
        eprintln!("bench: removed {leftovers} containers left by an earlier run");
    }

    let dir =
        TempDir(std::env::temp_dir().join(format!("portcullis-bench.{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let setup = targets::Setup {
        engine: plan.engine.clone(),
        dir: dir.0.clone(),
        portcullis: plan.portcullis.clone(),
        plugin: plan.plugin.clone(),
        workspace: workspace(),
        plugin_examples: plan.plugin_examples.clone(),
        durability: plan.durability.clone(),
    };
    let mut running: Vec<Target> = Vec::new();
    let mut skipped = Vec::new();
    for name in &plan.configs {
        match targets::start(name, &setup).await {
            Ok(t) => running.push(t),
            Err(e) if *name == "direct" => return Err(e),
            Err(e) => {
                eprintln!("bench: skipping {name}: {e:#}");
                skipped.push(Skipped {
                    config: name.to_string(),
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut memory = vec![Memory::default(); running.len()];
    for (t, m) in running.iter().zip(&mut memory) {
        m.idle = t.rss.as_ref().and_then(|p| p.now_kib());
    }

    let needs_containers = plan
        .points
        .iter()
        .any(|p| p.scenario.starts_with("GET /containers"));
    if needs_containers {
        eprintln!(
            "bench: creating {LISTED} stopped containers labelled {}={}",
            engine::LABEL,
            engine::run_id()
        );
        for _ in 0..LISTED {
            engine.create().await?;
        }
    }
    let cp_container = if plan.cp {
        Some(engine.create().await?)
    } else {
        None
    };
    let log_container = if plan.logs {
        eprintln!(
            "bench: writing a {} MB container log",
            plan.log_bytes / 1_000_000
        );
        Some(
            engine
                .create_logger(plan.log_bytes, plan.log_line_bytes)
                .await?,
        )
    } else {
        None
    };
    let containers_listed = Some(engine.count_containers().await?);

    // Request scenarios: rounds outermost, so each round sees every configuration at every
    // point within seconds of each other.
    let mut latency: Vec<LatencyResult> = Vec::new();
    for p in &plan.points {
        for t in &running {
            latency.push(LatencyResult::new(
                p.scenario,
                p.concurrency,
                t.name,
                plan.rounds,
            ));
        }
    }
    let mut windows: Vec<Window> = Vec::new();
    for round in 0..plan.rounds {
        for (pi, p) in plan.points.iter().enumerate() {
            for ti in order(running.len(), round + pi) {
                let t = &running[ti];
                if p.denying_only && !targets::DENYING.contains(&t.name) {
                    continue;
                }
                if let Some(probe) = &t.rss {
                    probe.start_window();
                }
                let started = std::time::SystemTime::now();
                let outcome =
                    load::run(&t.socket, &p.op, p.concurrency, plan.warmup, plan.duration).await;
                windows.push(Window {
                    scenario: p.scenario,
                    concurrency: p.concurrency,
                    config: t.name,
                    round,
                    from: started,
                    to: std::time::SystemTime::now(),
                });
                let peak = t.rss.as_ref().map(|probe| probe.window_peak_kib());
                let r = &mut latency[pi * running.len() + ti];
                r.rss_peak_kib = max_opt(r.rss_peak_kib, peak);
                memory[ti].peak_requests = max_opt(memory[ti].peak_requests, peak);
                if p.concurrency == 100 {
                    memory[ti].peak_c100 = max_opt(memory[ti].peak_c100, peak);
                }
                match outcome {
                    Ok(m) => {
                        let round_result = LatencyRound {
                            rps: m.rps(),
                            p50_us: m.percentile_us(0.50),
                            p99_us: m.percentile_us(0.99),
                            requests: m.requests(),
                            errors: m.errors,
                            own_p50_us: None,
                        };
                        eprintln!(
                            "[{}/{}] {:<30} c={:<3} {:<13} {:>8.0} rps  p50 {:>8.1} µs  p99 {:>9.1} µs{}",
                            round + 1,
                            plan.rounds,
                            p.scenario,
                            p.concurrency,
                            t.name,
                            round_result.rps,
                            round_result.p50_us,
                            round_result.p99_us,
                            if m.errors > 0 { format!("  {} errors", m.errors) } else { String::new() }
                        );
                        r.errors += m.errors;
                        if m.requests() > 0 {
                            r.rounds[round] = Some(round_result);
                        }
                        if r.first_error.is_none() {
                            r.first_error = m.first_error;
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "[{}/{}] {} c={} {}: failed: {e:#}",
                            round + 1,
                            plan.rounds,
                            p.scenario,
                            p.concurrency,
                            t.name
                        );
                        r.errors += 1;
                        r.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
        }
    }

    // A denied create is not measured on configurations that let it through.
    latency
        .retain(|r| r.scenario != "denied create" || targets::DENYING.contains(&r.config.as_str()));

    // docker logs: the whole log, on a fresh connection per configuration per round.
    let mut throughput: Vec<ThroughputResult> = Vec::new();
    if let Some(id) = &log_container {
        let first = throughput.len();
        for t in &running {
            throughput.push(ThroughputResult::new(LOGS, t.name, plan.rounds));
        }
        for round in 0..plan.rounds {
            for ti in order(running.len(), round) {
                let t = &running[ti];
                if let Some(probe) = &t.rss {
                    probe.start_window();
                }
                let outcome = transfer::logs(&t.socket, id, plan.log_bytes).await;
                let peak = t.rss.as_ref().map(|probe| probe.window_peak_kib());
                memory[ti].peak_logs = max_opt(memory[ti].peak_logs, peak);
                let mb_s =
                    outcome.map(|(elapsed, bytes)| bytes as f64 / 1e6 / elapsed.as_secs_f64());
                record_transfer(&mut throughput[first + ti], round, plan.rounds, mb_s, peak);
            }
        }
    }

    // docker cp: a fresh upload and download per configuration per round.
    if let Some(id) = &cp_container {
        let first = throughput.len();
        for direction in ["in (PUT archive)", "out (GET archive)"] {
            for t in &running {
                throughput.push(ThroughputResult::new(direction, t.name, plan.rounds));
            }
        }
        for (t, m) in running.iter().zip(&mut memory) {
            m.before_cp = t.rss.as_ref().and_then(|p| p.now_kib());
        }
        let n = running.len();
        for round in 0..plan.rounds {
            for ti in order(n, round) {
                let t = &running[ti];
                if let Some(probe) = &t.rss {
                    probe.start_window();
                }
                let put = transfer::put(&t.socket, id, plan.cp_bytes).await;
                let get = match &put {
                    Ok(_) => transfer::get(&t.socket, id, plan.cp_bytes).await,
                    Err(_) => Err(anyhow!("skipped: the upload failed")),
                };
                let peak = t.rss.as_ref().map(|probe| probe.window_peak_kib());
                memory[ti].peak_cp = max_opt(memory[ti].peak_cp, peak);
                for (k, outcome) in [(0, put), (1, get)] {
                    let mb_s =
                        outcome.map(|elapsed| plan.cp_bytes as f64 / 1e6 / elapsed.as_secs_f64());
                    record_transfer(
                        &mut throughput[first + k * n + ti],
                        round,
                        plan.rounds,
                        mb_s,
                        peak,
                    );
                }
            }
        }
    }

    // Event streams: every configuration in turn holds `streams` of them open for the
    // measured duration, and an event emitted meanwhile must reach each one.
    let mut events: Vec<EventsResult> = Vec::new();
    if plan.events {
        for t in &running {
            events.push(EventsResult {
                config: t.name.into(),
                streams: plan.streams,
                established: Vec::new(),
                saw_event: Vec::new(),
                establish_s: Vec::new(),
                deliver_s: Vec::new(),
                rss_before_kib: None,
                rss_peak_kib: None,
                first_error: None,
            });
        }
        for round in 0..plan.rounds {
            for ti in order(running.len(), round) {
                let t = &running[ti];
                let e = &mut events[ti];
                if let Some(probe) = &t.rss {
                    if e.rss_before_kib.is_none() {
                        e.rss_before_kib = probe.now_kib();
                    }
                    probe.start_window();
                }
                let streams = events::Streams::open(&t.socket, plan.streams).await;
                let delivered = streams.deliver(&mut engine).await;
                // Hold them open for the rest of the measured time.
                tokio::time::sleep(
                    plan.duration
                        .saturating_sub(streams.establish_time.min(plan.duration)),
                )
                .await;
                let peak = t.rss.as_ref().map(|probe| probe.window_peak_kib());
                memory[ti].peak_events = max_opt(memory[ti].peak_events, peak);
                e.rss_peak_kib = max_opt(e.rss_peak_kib, peak);
                e.established.push(streams.established());
                e.saw_event.push(streams.saw_event());
                e.establish_s.push(streams.establish_time.as_secs_f64());
                let error = match &delivered {
                    Ok(d) => {
                        e.deliver_s.push(d.as_secs_f64());
                        streams.first_error()
                    }
                    Err(err) => Some(format!("emitting the event: {err:#}")),
                };
                if e.first_error.is_none() {
                    e.first_error = error;
                }
                eprintln!(
                    "[{}/{}] {} event streams {:<18} {} established in {:.2} s, {} saw the event{}{}",
                    round + 1,
                    plan.rounds,
                    plan.streams,
                    t.name,
                    streams.established(),
                    streams.establish_time.as_secs_f64(),
                    streams.saw_event(),
                    delivered.as_ref().map_or(String::new(), |d| format!(" after {:.2} s", d.as_secs_f64())),
                    peak.map_or(String::new(), |p| format!("  peak RSS {:.1} MiB", p as f64 / 1024.0))
                );
                streams.close().await;
                // Let the proxy and the engine close their side before the next one.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    for (t, m) in running.iter().zip(&mut memory) {
        m.after = t.rss.as_ref().and_then(|p| p.now_kib());
    }
    let memory = running
        .iter()
        .zip(&memory)
        .filter(|(t, _)| t.rss.is_some() && t.name != "direct")
        .map(|(t, m)| MemoryResult {
            config: t.name.into(),
            idle_kib: m.idle,
            peak_requests_kib: m.peak_requests,
            peak_c100_kib: m.peak_c100,
            before_cp_kib: m.before_cp,
            peak_cp_kib: m.peak_cp,
            after_kib: m.after,
            peak_logs_kib: m.peak_logs,
            peak_events_kib: m.peak_events,
        })
        .collect();

    // The audit stores can be read once their gateways are stopped.
    let configs: Vec<String> = running.iter().map(|t| t.name.to_string()).collect();
    let audited: Vec<(&'static str, PathBuf)> = running
        .iter()
        .filter_map(|t| Some((t.name, targets::audit_store(t.name, &setup.dir)?)))
        .collect();
    drop(running);
    for (config, store) in audited {
        match own_times(&plan.portcullis, &store) {
            Ok(records) => {
                for w in windows.iter().filter(|w| w.config == config) {
                    let Some(result) = latency.iter_mut().find(|r| {
                        r.scenario == w.scenario
                            && r.concurrency == w.concurrency
                            && r.config == w.config
                    }) else {
                        continue;
                    };
                    let mut own: Vec<u64> = records
                        .iter()
                        .filter(|(t, _)| *t >= w.from && *t <= w.to)
                        .map(|(_, own)| *own)
                        .collect();
                    own.sort_unstable();
                    if let (Some(mid), Some(Some(round))) =
                        (own.get(own.len() / 2), result.rounds.get_mut(w.round))
                    {
                        round.own_p50_us = Some(*mid as f64);
                    }
                }
            }
            Err(e) => eprintln!(
                "bench: the audit store {} could not be read: {e:#}",
                store.display()
            ),
        }
    }

    report::summarize(&mut latency, &mut throughput);
    let meta = Meta {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        command: String::new(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")?
                        .split_once(':')
                        .map(|(_, v)| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "?".into()),
        memory: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kib: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.0} GiB", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "?".into()),
        kernel: read_trimmed("/proc/sys/kernel/osrelease", 1),
        loadavg_start,
        loadavg_end: read_trimmed("/proc/loadavg", 3),
        versions: versions(plan, &version),
        duration_s: plan.duration.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        rounds: plan.rounds,
        archive_bytes: if plan.cp { plan.cp_bytes } else { 0 },
        log_bytes: if plan.logs { plan.log_bytes } else { 0 },
        log_line_bytes: plan.log_line_bytes,
        event_streams: if plan.events { plan.streams } else { 0 },
        containers_listed,
        configs,
    };
    Ok(Results {
        meta,
        skipped,
        latency,
        throughput,
        memory,
        events,
    })
}

/// The first `words` whitespace-separated words of a small file.
fn read_trimmed(path: &str, words: usize) -> String {
    std::fs::read_to_string(path)
        .map(|s| {
            s.split_whitespace()
                .take(words)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(text.trim().to_owned())
}

fn versions(plan: &Plan, engine_version: &serde_json::Value) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let word = |text: Option<String>, line_has: &str, n: usize| {
        text.and_then(|t| {
            t.lines()
                .find(|l| l.contains(line_has))
                .and_then(|l| l.split_whitespace().nth(n).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
    };
    v.insert(
        "rustc".into(),
        command_output("rustc", &["-V"]).unwrap_or_else(|| "?".into()),
    );
    v.insert(
        "dockerd".into(),
        format!(
            "{} (API {})",
            engine_version["Version"].as_str().unwrap_or("?"),
            engine_version["ApiVersion"].as_str().unwrap_or("?")
        ),
    );
    v.insert(
        "haproxy".into(),
        word(command_output("haproxy", &["-v"]), "HAProxy version", 2),
    );
    v.insert(
        "socat".into(),
        word(command_output("socat", &["-V"]), "socat version", 2),
    );
    v.insert(
        "portcullis".into(),
        word(
            command_output(&plan.portcullis.to_string_lossy(), &["--version"]),
            "portcullis",
            1,
        ),
    );
    let root = workspace();
    let root = root.to_string_lossy();
    let rev = command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "?".into());
    let dirty = command_output(
        "git",
        &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|s| !s.is_empty());
    v.insert(
        "git".into(),
        if dirty {
            format!("{rev}, with uncommitted changes")
        } else {
            rev
        },
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_record_times_parse() {
        let ms = |s| {
            parse_rfc3339_ms(s)
                .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        };
        assert_eq!(ms("2026-11-25T16:56:05.113Z"), Some(1_795_625_765_113));
        assert_eq!(ms("2000-02-29T00:00:00.001Z"), Some(951_782_400_001));
        assert_eq!(ms("2026-11-25T16:56:05Z"), None);
        assert_eq!(ms("2026-11-25T16:56:05.113+01:00"), None);
    }
}
