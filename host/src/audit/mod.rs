//! The audit trail: a tamper-evident record of every request that reaches the pipeline,
//! allowed, denied or failed, kept in an embedded sled store.
//!
//! - [`record`]: what a record holds, and each plugin's answer in it ([`Note`]).
//! - [`store`]: the sled store: hash chain, indexes, retention, verification.
//! - [`query`]: `audit list` filters answered from the indexes.
//! - [`merge`]: the exports of several gateways checked and merged into one view.
//! - [`report`]: the trail read by people: listings, records, the chain check, export and
//!   statistics rendered as text or JSON (the `portcullis audit` commands print them).
//! - [`AuditLog`] (here): the gateway's handle, a bounded queue to one writer thread that
//!   commits records in groups with the configured durability. Records are shaped before
//!   they are written by a [`Shaper`] (the plugin chain's audit hooks, which the pipeline
//!   provides: the trail knows nothing of plugins).

pub mod bench;
pub mod merge;
pub mod query;
pub mod record;
pub mod report;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::future::Future;

use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use crate::error::{DockerError, IntoDockerError};
use crate::metrics::AuditMetrics;
use crate::model;
use tracing::Instrument;

pub use crate::config::{AuditConfig, Durability, OnFullDisk};
pub use query::Query;
pub use record::{Decision, Note, Outcome, Record};
pub use store::{Encoded, OpenOptions, Store, Verified};

/// What can go wrong with the audit store.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store {path} is in use by another process (a running gateway?); it is opened by one process at a time")]
    Locked { path: PathBuf },
    #[error("no audit store at {path}")]
    NotFound { path: PathBuf },
    #[error("{path} is not a portcullis audit store: {reason}; refusing to touch it")]
    Foreign { path: PathBuf, reason: String },
    #[error("audit store {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("audit store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit store {path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("audit chain broken at record {seq}: {what}")]
    Tampered { seq: u64, what: String },
    #[error("audit export {file}, line {line}: {what}")]
    Export {
        file: String,
        line: u64,
        what: String,
    },
    #[error("cannot encode an audit record: {0}")]
    Encode(String),
    #[error("{0}")]
    Query(String),
    #[error("the audit store cannot write ({0}); requests are refused until it can (audit.on_full_disk = \"deny\")")]
    Unavailable(String),
}

impl AuditError {
    fn from_sled(path: &Path, e: sled::Error) -> Self {
        let path = path.to_owned();
        match e {
            sled::Error::Io(source) if source.to_string().contains("could not acquire lock") => {
                AuditError::Locked { path }
            }
            sled::Error::Io(source) => AuditError::Io { path, source },
            sled::Error::Corruption { at, .. } => AuditError::Corrupt {
                path,
                reason: format!("corrupt data at {at:?}"),
            },
            other => AuditError::Store {
                path,
                message: other.to_string(),
            },
        }
    }
}

impl IntoDockerError for AuditError {
    fn to_docker_error(&self) -> DockerError {
        // Only the refusal reaches clients; its text names no path.
        DockerError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("portcullis: {self}"),
        )
    }
}

/// Most records committed in one transaction (one group: its index entries are shared,
/// so large groups under load make appends cheaper).
const MAX_GROUP: usize = 2048;
/// Without `sync`, how long the writer waits for more records before committing a group.
const LINGER: Duration = Duration::from_millis(1);
/// Records shaped and appended after their responses at once (see [`AuditLog::finish`]).
const PENDING: u32 = 1024;
/// Records removed per retention step (one transaction), so appends never wait long.
const RETAIN_STEP: usize = 10_000;
/// How often retention runs.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// Tells a `sync` request that its record is on disk (its sequence) or why not.
type Ack = oneshot::Sender<Result<u64, String>>;

enum Job {
    Append(Box<Encoded>, Option<Ack>),
    Retain,
    Stop,
}

struct Shared {
    /// Why the last write failed, until a write succeeds again.
    failing: Mutex<Option<String>>,
    /// Async records dropped because the queue was full, not yet reported in the store.
    dropped: AtomicU64,
    metrics: AuditMetrics,
}

/// The gateway's handle on the audit store.
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    /// Records being shaped and appended after their responses were released (not with
    /// `sync`); shutdown waits for all of them.
    pending: Arc<tokio::sync::Semaphore>,
    durability: Durability,
    on_full_disk: OnFullDisk,
    shared: Arc<Shared>,
    reader: Store,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (or creates) the store and starts its writer, which records what it does in
    /// `metrics`. Must run inside a tokio runtime.
    pub fn start(
        config: &AuditConfig,
        base_dir: &Path,
        metrics: AuditMetrics,
    ) -> Result<Arc<Self>, AuditError> {
        let path = config.store_path(base_dir);
        let flush_every = match config.durability {
            Durability::Sync => None,
            Durability::Batch => Some(config.batch_window),
            Durability::Async => Some(Duration::from_secs(1)),
        };
        let store = Store::open(
            &path,
            &OpenOptions {
                create: true,
                cache_bytes: config.cache.as_u64(),
                flush_every,
            },
        )?;
        let (tail, last_ms) = store.tail()?;
        let (tx, rx) = mpsc::channel(config.queue);
        let shared = Arc::new(Shared {
            failing: Mutex::new(None),
            dropped: AtomicU64::new(0),
            metrics,
        });
        let reader = store.clone();
        let writer = Writer {
            store,
            rx,
            tail,
            last_ms,
            sync: config.durability == Durability::Sync,
            max_age: config.max_age,
            max_size: config.max_size.map(|s| s.as_u64()),
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || writer.run())
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        let ticker = (config.max_age.is_some() || config.max_size.is_some()).then(|| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RETAIN_EVERY);
                loop {
                    every.tick().await;
                    if tx.send(Job::Retain).await.is_err() {
                        return;
                    }
                }
            })
        });
        Ok(Arc::new(Self {
            tx,
            pending: Arc::new(tokio::sync::Semaphore::new(PENDING as usize)),
            durability: config.durability,
            on_full_disk: config.on_full_disk,
            shared,
            reader,
            writer: Mutex::new(Some(handle)),
            ticker: Mutex::new(ticker),
        }))
    }

    /// A read handle on the store (queries while the gateway writes; sled allows one
    /// opening process, so this is the only way to read a live store).
    pub fn reader(&self) -> Store {
        self.reader.clone()
    }

    /// Why new requests must be refused now (the store cannot write and the configuration
    /// says deny), if they must.
    pub fn refusal(&self) -> Option<AuditError> {
        if self.on_full_disk == OnFullDisk::Allow {
            return None;
        }
        Some(AuditError::Unavailable(self.failing()?))
    }

    /// Why the last write failed, until a write succeeds again.
    pub fn failing(&self) -> Option<String> {
        self.shared.failing.lock().ok()?.clone()
    }

    /// Records waiting for the writer now (also set as the queue-depth metric).
    pub fn queued(&self) -> usize {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.shared.metrics.queue.set(queued as i64);
        queued
    }

    /// Hands a record to the writer with the configured durability: `sync` waits until it
    /// is on disk, `batch` waits only for room in the queue, `async` never waits (a full
    /// queue drops the record and counts it).
    pub async fn append(&self, record: Record) {
        // Encoding happens here, on the request's task: the single writer only hashes.
        let record = match Encoded::new(&record) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "audit record not written");
                return;
            }
        };
        match self.durability {
            Durability::Sync => {
                let (done, wait) = oneshot::channel();
                if self
                    .tx
                    .send(Job::Append(Box::new(record), Some(done)))
                    .await
                    .is_err()
                {
                    debug!("audit writer stopped; record not written");
                    return;
                }
                match wait.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => error!(error = %e, "audit record not written"),
                    Err(_) => error!("audit writer stopped before writing a record"),
                }
            }
            Durability::Batch => {
                if self
                    .tx
                    .send(Job::Append(Box::new(record), None))
                    .await
                    .is_err()
                {
                    debug!("audit writer stopped; record not written");
                }
            }
            Durability::Async => match self.tx.try_send(Job::Append(Box::new(record), None)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.shared.metrics.dropped.inc();
                    let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() || n == 0 {
                        warn!(dropped = n + 1, "audit queue full: async records dropped");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => debug!("audit writer stopped"),
            },
        }
    }

    /// Lets `shaper` shape `record` (for the request `view`), and appends it. Called by the
    /// pipeline before the response is released. With `sync` durability all of it happens
    /// before; otherwise shaping (the audit hooks, `redact` in the default chain: a plugin
    /// call on every create) and encoding run on a task of their own, at most [`PENDING`]
    /// at once. Beyond that the caller does it, so a burst slows requests instead of piling
    /// up tasks.
    pub async fn finish<S: Shaper>(
        self: &Arc<Self>,
        shaper: &Arc<S>,
        record: Record,
        view: Option<model::Request>,
    ) {
        if self.durability != Durability::Sync {
            if let Ok(permit) = self.pending.clone().try_acquire_owned() {
                let (log, shaper) = (self.clone(), shaper.clone());
                // In the request's span: what the audit hooks log names the request.
                let shaping = async move {
                    log.record(&*shaper, record, view).await;
                    drop(permit);
                };
                tokio::spawn(shaping.in_current_span());
                return;
            }
        }
        self.record(&**shaper, record, view).await;
    }

    async fn record<S: Shaper>(
        &self,
        shaper: &S,
        mut record: Record,
        view: Option<model::Request>,
    ) {
        if let Some(view) = view.filter(|v| shaper.wants(&v.endpoint)) {
            shaper.shape(&view, &mut record).await;
        }
        self.append(record).await;
    }

    /// Waits for records still being shaped, writes what is queued, flushes, and stops the
    /// writer.
    pub async fn shutdown(&self) {
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
        let _all_recorded = self.pending.acquire_many(PENDING).await;
        let _ = self.tx.send(Job::Stop).await;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Shapes records before they are written: adds fields, redacts. A record is always written,
/// shaped or not.
pub trait Shaper: Send + Sync + 'static {
    /// Whether records of `endpoint` are shaped at all.
    fn wants(&self, endpoint: &str) -> bool;
    /// Shapes `record`, the record of `view`, in place.
    fn shape(&self, view: &model::Request, record: &mut Record) -> impl Future<Output = ()> + Send;
}

/// The writer thread: the only code that appends to the store.
struct Writer {
    store: Store,
    rx: mpsc::Receiver<Job>,
    tail: store::Link,
    last_ms: u64,
    sync: bool,
    max_age: Option<Duration>,
    max_size: Option<u64>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        let mut retain_pending = self.max_age.is_some() || self.max_size.is_some();
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            let mut stop = false;
            let mut next = Some(first);
            // Group commit: take whatever queued up while the last group was written.
            let mut lingered = self.sync;
            while let Some(job) = next.take() {
                match job {
                    Job::Append(r, done) => group.push((r, done)),
                    Job::Retain => retain_pending = true,
                    Job::Stop => stop = true,
                }
                if group.len() < MAX_GROUP && !stop {
                    next = self.rx.try_recv().ok();
                    // Without `sync` no response waits for its record, so wait a moment for
                    // more: each group is one transaction, whose fixed cost (locks, log
                    // reservations, the IO threads sled wakes) dominates small groups.
                    if next.is_none() && !lingered {
                        lingered = true;
                        std::thread::sleep(LINGER);
                        next = self.rx.try_recv().ok();
                    }
                }
            }
            if !group.is_empty() {
                self.commit(group);
            }
            if retain_pending {
                retain_pending = self.retain_step();
            }
            if stop {
                break;
            }
        }
        if let Err(e) = self.store.flush() {
            error!(error = %e, "audit store: final flush failed");
        }
    }

    fn commit(&mut self, group: Vec<(Box<Encoded>, Option<Ack>)>) {
        let mut records = Vec::with_capacity(group.len() + 1);
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            if let Ok(marker) = Encoded::new(&dropped_marker(dropped)) {
                records.push(marker);
            }
        }
        let mut acks = Vec::with_capacity(group.len());
        for (r, done) in group {
            records.push(*r);
            acks.push(done);
        }
        let started = std::time::Instant::now();
        let result = self
            .store
            .append(self.tail, self.last_ms, &records, SystemTime::now())
            .and_then(|tail| {
                if self.sync {
                    self.store.flush()?;
                }
                Ok(tail)
            });
        match result {
            Ok((tail, ms)) => {
                let metrics = &self.shared.metrics;
                metrics.write.observe(started.elapsed().as_secs_f64());
                metrics.appends.inc_by(records.len() as u64);
                self.tail = tail;
                self.last_ms = ms;
                if let Ok(mut f) = self.shared.failing.lock() {
                    *f = None;
                }
                // The group's records took the sequences after the old tail, in order.
                let first = tail.seq + 1 - acks.len() as u64;
                for (i, done) in acks.into_iter().enumerate() {
                    if let Some(done) = done {
                        let _ = done.send(Ok(first + i as u64));
                    }
                }
            }
            Err(e) => {
                // The transaction wrote nothing: no partial records. The tail is unchanged.
                error!(error = %e, records = records.len(), "audit store: write failed; records lost");
                if let Ok(mut f) = self.shared.failing.lock() {
                    *f = Some(e.to_string());
                }
                self.shared
                    .dropped
                    .fetch_add(acks.len() as u64, Ordering::Relaxed);
                self.shared.metrics.dropped.inc_by(acks.len() as u64);
                for done in acks.into_iter().flatten() {
                    let _ = done.send(Err(e.to_string()));
                }
            }
        }
    }

    /// One bounded retention step; returns whether more may be due.
    fn retain_step(&mut self) -> bool {
        match self
            .store
            .retain(self.max_age, self.max_size, SystemTime::now(), RETAIN_STEP)
        {
            Ok(n) => {
                if n > 0 {
                    debug!(removed = n, "audit retention");
                }
                n == RETAIN_STEP
            }
            Err(e) => {
                error!(error = %e, "audit retention failed");
                false
            }
        }
    }
}

/// A record that says records were lost (async queue full, or failed writes), so that the
/// gap is in the trail itself.
fn dropped_marker(n: u64) -> Record {
    Record {
        seq: 0,
        time: String::new(),
        request_id: 0,
        caller: serde_json::json!({"user": "portcullis"}),
        method: String::new(),
        path: String::new(),
        api_version: None,
        endpoint: "audit.dropped".into(),
        object: None,
        target: None,
        decision: Decision::Error,
        plugins: Vec::new(),
        error: Some(format!(
            "{n} audit records were lost (queue full or store unable to write)"
        )),
        status: 0,
        duration_us: 0,
        engine_us: None,
        bytes_in: None,
        bytes_out: None,
        details: None,
    }
}
