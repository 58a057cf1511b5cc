//! The audit trail read by people: a store opened to read, the times `--since` and
//! `since=` accept, and the listing, one record, the chain check, the export and the
//! statistics rendered into any `Write`. The `portcullis audit` commands print these; the
//! admin API reads times the same way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::record::{Record, Stage};
use super::store::{OpenOptions, Stats, Store, Verified};
use super::{AuditError, Query};

fn io_err(e: std::io::Error) -> AuditError {
    AuditError::Io {
        path: PathBuf::from("<output>"),
        source: e,
    }
}

/// Opens an existing store to read (never creates one).
pub fn open(path: &Path) -> Result<Store, AuditError> {
    Store::open(path, &OpenOptions::default())
}

/// Parses a time bound (`--since`, `--until`; `since=`, `until=` of the admin API): a duration ago (`90s`, `1h`, `2d`) or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} is too far back"));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?} is neither a duration (1h, 30m) nor a time (2026-01-31T12:00:00Z)")
    })
}

/// `audit list`: a table, or JSON lines with `json`. Returns the number of records.
pub fn list(
    store: &Store,
    query: &Query,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize, AuditError> {
    list_records(query.run(store)?, json, out)
}

/// [`list`] of records from anywhere (a store, or a running gateway's admin listener).
pub fn list_records(
    records: impl Iterator<Item = Result<Record, AuditError>>,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize, AuditError> {
    let mut n = 0;
    if !json {
        writeln!(
            out,
            "{:>8}  {:<24}  {:<12}  {:<8}  {:>6}  {:<7}  {:<22}  {:<20}  DETAIL",
            "SEQ", "TIME", "USER", "DECISION", "STATUS", "METHOD", "ENDPOINT", "OBJECT"
        )
        .map_err(io_err)?;
    }
    for r in records {
        let r = r?;
        if json {
            serde_json::to_writer(&mut *out, &r).map_err(|e| AuditError::Encode(e.to_string()))?;
            writeln!(out).map_err(io_err)?;
        } else {
            writeln!(
                out,
                "{:>8}  {:<24}  {:<12}  {:<8}  {:>6}  {:<7}  {:<22}  {:<20}  {}",
                r.seq,
                r.time,
                cut(r.user(), 12),
                r.decision.as_str(),
                status(&r),
                cut(&r.method, 7),
                cut(&r.endpoint, 22),
                cut(r.object.as_deref().unwrap_or("-"), 20),
                cut(&detail(&r), 80),
            )
            .map_err(io_err)?;
        }
        n += 1;
    }
    Ok(n)
}

/// The status sent, or `-` for a request forwarded whose outcome is not recorded.
fn status(r: &Record) -> String {
    if r.stage == Some(Stage::Decision) {
        "-".into()
    } else {
        r.status.to_string()
    }
}

/// The last column of the table: why it was refused, or which plugins changed it.
fn detail(r: &Record) -> String {
    if r.stage == Some(Stage::Decision) {
        return "forwarded; no outcome recorded (in flight, or the gateway stopped)".into();
    }
    if let Some(e) = &r.error {
        return e.clone();
    }
    r.plugins
        .iter()
        .filter(|n| n.verdict != "allow")
        .map(|n| format!("{}: {}", n.plugin, n.verdict))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `audit show SEQ`: one record as pretty JSON.
pub fn show(store: &Store, seq: u64, out: &mut dyn Write) -> Result<(), AuditError> {
    let r = super::query::request(store, seq)?.ok_or_else(|| {
        AuditError::Query(format!("no record {seq} in {}", store.path().display()))
    })?;
    show_record(&r, out)
}

/// [`show`] of a record from anywhere.
pub fn show_record(r: &Record, out: &mut dyn Write) -> Result<(), AuditError> {
    serde_json::to_writer_pretty(&mut *out, r).map_err(|e| AuditError::Encode(e.to_string()))?;
    writeln!(out).map_err(io_err)
}

/// `audit verify`: checks the chain; prints a summary when intact.
pub fn verify(store: &Store, out: &mut dyn Write) -> Result<Verified, AuditError> {
    let v = store.verify()?;
    verified(&v, out)?;
    Ok(v)
}

/// The summary [`verify`] prints of an intact chain.
pub fn verified(v: &Verified, out: &mut dyn Write) -> Result<(), AuditError> {
    match (v.first, v.last) {
        (Some(f), Some(l)) => writeln!(
            out,
            "ok: {} records ({f}..{l}) chained{}; head hash {}",
            v.records,
            if v.anchor > 0 {
                format!(" from the retention anchor {}", v.anchor)
            } else {
                String::new()
            },
            v.head_hash
        ),
        _ => writeln!(out, "ok: no records"),
    }
    .map_err(io_err)?;
    if v.lost > 0 {
        writeln!(
            out,
            "lost: {} records were not written, as its audit.dropped records say",
            v.lost
        )
        .map_err(io_err)?;
    }
    if v.unfinished > 0 {
        writeln!(out, "unfinished: {} requests were forwarded but their outcome is not recorded (in flight, or the gateway stopped)", v.unfinished).map_err(io_err)?;
    }
    Ok(())
}

/// `audit export --format jsonl`: every record oldest first, one JSON object per line with
/// its chain hashes (`prev`, `hash`), streamed in constant memory.
pub fn export(store: &Store, out: &mut dyn Write) -> Result<u64, AuditError> {
    let mut n = 0;
    for item in store.iter_chain() {
        let (r, prev, hash) = item?;
        let mut v = serde_json::to_value(&r).map_err(|e| AuditError::Encode(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("prev".into(), prev.into());
            o.insert("hash".into(), hash.into());
        }
        serde_json::to_writer(&mut *out, &v).map_err(|e| AuditError::Encode(e.to_string()))?;
        writeln!(out).map_err(io_err)?;
        n += 1;
    }
    out.flush().map_err(io_err)?;
    Ok(n)
}

/// `audit stats`: counts by user, decision and endpoint (JSON with `json`).
pub fn stats(store: &Store, json: bool, out: &mut dyn Write) -> Result<(), AuditError> {
    stats_of(&store.stats()?, json, out)
}

/// [`stats`] of counts from anywhere.
pub fn stats_of(s: &Stats, json: bool, out: &mut dyn Write) -> Result<(), AuditError> {
    if json {
        serde_json::to_writer_pretty(&mut *out, &s)
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        return writeln!(out).map_err(io_err);
    }
    let w = &mut *out;
    let mut put = |line: String| writeln!(w, "{line}").map_err(io_err);
    put(format!(
        "records: {} (seq {}..{}), {} to {}",
        s.records,
        s.first.map_or("-".into(), |v| v.to_string()),
        s.last.map_or("-".into(), |v| v.to_string()),
        s.oldest.as_deref().unwrap_or("-"),
        s.newest.as_deref().unwrap_or("-"),
    ))?;
    put(format!(
        "record bytes: {}, on disk: {}",
        s.record_bytes, s.disk_bytes
    ))?;
    for (title, map) in [
        ("decision", &s.by_decision),
        ("user", &s.by_user),
        ("endpoint", &s.by_endpoint),
    ] {
        put(format!("by {title}:"))?;
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, v) in rows {
            put(format!("  {v:>10}  {k}"))?;
        }
    }
    Ok(())
}
