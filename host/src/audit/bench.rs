//! `portcullis audit bench`: what the audit store costs on this machine. Appends records
//! through the real writer in `batch` mode, then times `list --user U --limit 100` on the
//! result, and reports the bytes a record takes. Figures go to BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::record::{Decision, Record};
use super::{AuditConfig, AuditError, AuditLog, Durability, Query, Store};

/// The figures.
#[derive(Debug, Serialize)]
pub struct Figures {
    /// Records appended.
    pub records: u64,
    /// Appended per second in batch mode, from the first append to the final flush.
    pub append_per_sec: f64,
    /// `list --user U --limit 100` over the whole store: median and worst of the runs, ms.
    pub list_user_100_ms_p50: f64,
    /// Worst run.
    pub list_user_100_ms_max: f64,
    /// Stored bytes of one record (JSON plus chain header).
    pub record_bytes_each: f64,
    /// The store's size on disk (indexes and sled's overhead included) per record.
    pub disk_bytes_each: f64,
}

/// A typical record: a `docker ps` by one of 100 users, allowed by one plugin.
fn typical(i: u64) -> Record {
    serde_json::from_value(serde_json::json!({
        "request_id": i,
        "caller": {"user": format!("user{:03}", i % 100), "groups": ["developers"], "auth": "peer-credentials",
                   "peer": {"kind": "unix", "uid": 1000 + i % 100, "gid": 1000, "pid": 4242}},
        "method": "GET", "path": "/containers/json", "api_version": "1.41",
        "endpoint": "container.list", "decision": "allow",
        "plugins": [{"plugin": "tenancy", "hook": "request", "verdict": "allow"}],
        "status": 200, "duration_us": 850, "bytes_out": 1432
    }))
    .expect("a valid record")
}

/// Tasks appending at once, as concurrent requests do (each encodes its own records).
const PRODUCERS: u64 = 4;

/// Runs the benchmark on a new store in `dir` (which must not hold one).
pub async fn run(dir: &Path, records: u64) -> Result<Figures, AuditError> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(AuditError::Query(format!(
            "{} exists and is not empty; give a new directory",
            dir.display()
        )));
    }
    let mut config = AuditConfig::at(dir);
    config.durability = Durability::Batch;
    let log = AuditLog::start(&config, Path::new("."), Default::default())?;
    // One record per user made up front; each append clones one (the request's own
    // work of building a record is not the store's cost). Encoding is timed: the request
    // tasks do it.
    let templates: Arc<Vec<Record>> = Arc::new((0..100).map(typical).collect());
    let started = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = log.clone();
            let templates = templates.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < records {
                    let mut r = templates[(i % 100) as usize].clone();
                    r.request_id = i;
                    if i % 50 == 0 {
                        r.decision = Decision::Deny;
                    }
                    log.append(r).await;
                    i += PRODUCERS;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    log.shutdown(Duration::from_secs(60)).await;
    let append = started.elapsed();
    drop(log);

    let store = Store::open(dir, &super::OpenOptions::default())?;
    let mut runs = Vec::new();
    for u in 0..21u64 {
        let query = Query {
            user: Some(format!("user{:03}", (u * 37) % 100)),
            limit: Some(100),
            ..Query::default()
        };
        let t = Instant::now();
        let n = query.run(&store)?.filter(Result::is_ok).count();
        runs.push(t.elapsed());
        if records >= 10_000 && n != 100 {
            return Err(AuditError::Query(format!(
                "expected 100 records of one user, got {n}"
            )));
        }
    }
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let stats = store.stats()?;
    Ok(Figures {
        records,
        append_per_sec: records as f64 / append.as_secs_f64(),
        list_user_100_ms_p50: ms(runs[runs.len() / 2]),
        list_user_100_ms_max: ms(runs[runs.len() - 1]),
        record_bytes_each: stats.record_bytes as f64 / records.max(1) as f64,
        disk_bytes_each: stats.disk_bytes as f64 / records.max(1) as f64,
    })
}
