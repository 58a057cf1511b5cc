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
use tracing::{debug, error, info, warn};

use crate::error::{DockerError, IntoDockerError};
use crate::metrics::AuditMetrics;
use crate::model;
use tracing::Instrument;

pub use crate::config::{AuditConfig, Durability, OnFullDisk};
pub use query::Query;
pub use record::{Decision, Note, Outcome, Record, Stage};
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
    #[error("the audit trail cannot record requests now ({0}); requests are refused until it can")]
    Unavailable(Unwritable),
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
/// Without `sync`, and when no request waits for a record of the group, how long the
/// writer waits for more records before committing a group.
const LINGER: Duration = Duration::from_millis(1);
/// Records shaped and appended after their responses at once (see [`AuditLog::finish`]).
const PENDING: u32 = 1024;
/// Records removed per retention step (one transaction), so appends never wait long.
const RETAIN_STEP: usize = 10_000;
/// How often retention runs.
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// How often the writer looks at the disk's free space when idle, reports losses and tries
/// a failed store again: recovery follows returning space within this.
const TICK: Duration = Duration::from_millis(250);
/// Losses are written as an `audit.dropped` record at most this often while the store
/// cannot take ordinary records.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// The longest a request waits for the writer (room in its queue, then its record
/// committed). Beyond it the store counts as stalled and requests are refused at once
/// until it commits again, so a stuck disk never holds the gateway.
const WRITER_WAIT: Duration = Duration::from_secs(3);

/// Why the store does not take records now; the text is sent to clients, so it names no
/// path and no error detail (the operator's log has those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// Free space on the store's filesystem is below `space_left`.
    LowSpace,
    /// A write failed (full disk, I/O error).
    WriteFailed,
    /// The writer did not answer within its wait.
    Stalled,
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unwritable::LowSpace => "the disk holding it is nearly full",
            Unwritable::WriteFailed => "a write to it failed",
            Unwritable::Stalled => "it does not answer",
        })
    }
}

/// Tells a request waiting for its record that it is committed (its sequence) or why not.
type Ack = oneshot::Sender<Result<u64, Unwritable>>;

enum Job {
    Append(Box<Encoded>, Option<Ack>),
    Tick,
    Retain,
    Stop,
}

struct Shared {
    /// Why records are not written now, until the store takes them again.
    unwritable: Mutex<Option<Unwritable>>,
    /// Records not written (queue full, store unwritable, refused meanwhile), not yet
    /// reported in the store by an `audit.dropped` record.
    dropped: AtomicU64,
    metrics: AuditMetrics,
}

impl Shared {
    fn set(&self, why: Option<Unwritable>) {
        if let Ok(mut u) = self.unwritable.lock() {
            *u = why;
        }
    }

    fn get(&self) -> Option<Unwritable> {
        self.unwritable.lock().ok().and_then(|u| *u)
    }

    fn lose(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.metrics.dropped.inc_by(n);
    }
}

/// The gateway's read handle on its store, for queries while it writes. Reopening the
/// store after a failed write swaps it (sled keeps the first I/O error it meets for the
/// life of an opened database, so only a fresh opening writes again).
#[derive(Clone)]
pub struct Reader(Arc<arc_swap::ArcSwapOption<Store>>);

impl Reader {
    /// The store, unless it is being reopened this moment.
    pub fn store(&self) -> Result<Arc<Store>, AuditError> {
        self.0
            .load_full()
            .ok_or(AuditError::Unavailable(Unwritable::WriteFailed))
    }
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
    reader: Reader,
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
        let opts = OpenOptions {
            create: true,
            cache_bytes: config.cache.as_u64(),
            flush_every,
        };
        let store = Store::open(&path, &opts)?;
        let (tail, last_ms) = store.tail()?;
        let (tx, rx) = mpsc::channel(config.queue);
        let shared = Arc::new(Shared {
            unwritable: Mutex::new(None),
            dropped: AtomicU64::new(0),
            metrics,
        });
        let reader = Reader(Arc::new(arc_swap::ArcSwapOption::from_pointee(
            store.clone(),
        )));
        let writer = Writer {
            store: Some(store),
            path: path.clone(),
            opts,
            reader: reader.clone(),
            rx,
            tail,
            last_ms,
            sync: config.durability == Durability::Sync,
            max_age: config.max_age,
            max_size: config.max_size.map(|s| s.as_u64()),
            space_left: config.space_left.as_u64(),
            last_report: std::time::Instant::now(),
            lost_reason: None,
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || writer.run())
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        let retains = config.max_age.is_some() || config.max_size.is_some();
        let ticker = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(TICK);
                let mut last_retain = tokio::time::Instant::now();
                loop {
                    every.tick().await;
                    // A busy writer looks at the disk before each group anyway.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Job::Tick) {
                        return;
                    }
                    if retains && last_retain.elapsed() >= RETAIN_EVERY {
                        last_retain = tokio::time::Instant::now();
                        if tx.send(Job::Retain).await.is_err() {
                            return;
                        }
                    }
                }
            })
        };
        Ok(Arc::new(Self {
            tx,
            pending: Arc::new(tokio::sync::Semaphore::new(PENDING as usize)),
            durability: config.durability,
            on_full_disk: config.on_full_disk,
            shared,
            reader,
            writer: Mutex::new(Some(handle)),
            ticker: Mutex::new(Some(ticker)),
        }))
    }

    /// The read handle on the store (queries while the gateway writes; sled allows one
    /// opening process, so this is the only way to read a live store).
    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    /// Why new requests must be refused now (the store does not take records and the
    /// configuration says deny), if they must. A refused request's record is counted into
    /// the next `audit.dropped` record instead of being written.
    pub fn refusal(&self) -> Option<AuditError> {
        if self.on_full_disk == OnFullDisk::Allow {
            return None;
        }
        Some(AuditError::Unavailable(self.unwritable()?))
    }

    /// Why the store does not take records now, until it does again.
    pub fn unwritable(&self) -> Option<Unwritable> {
        self.shared.get()
    }

    /// Records waiting for the writer now (also set as the queue-depth metric).
    pub fn queued(&self) -> usize {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.shared.metrics.queue.set(queued as i64);
        queued
    }

    /// Writes the decision record of a request the engine may act on, before it is
    /// forwarded, and waits until it is committed (with `sync`: on disk; otherwise in the
    /// store, flushed within its window). Audit hooks shape it first. `Err`: the request
    /// must not be forwarded. With `on_full_disk = "allow"` a record that cannot be written
    /// is counted as lost and the request goes on (`Ok(None)`).
    pub async fn decide<S: Shaper>(
        &self,
        shaper: &S,
        mut record: Record,
        view: Option<&model::Request>,
    ) -> Result<Option<u64>, AuditError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        if let Some(view) = view.filter(|v| shaper.wants(&v.endpoint)) {
            shaper.shape(view, &mut record).await;
        }
        let record = Encoded::new(&record)?;
        match self.commit(record).await {
            Ok(seq) => Ok(Some(seq)),
            Err(why) if self.on_full_disk == OnFullDisk::Allow => {
                debug!(%why, "decision record not written; forwarded (on_full_disk = allow)");
                Ok(None)
            }
            Err(why) => Err(AuditError::Unavailable(why)),
        }
    }

    /// Hands `record` to the writer and waits, within [`WRITER_WAIT`], until it is
    /// committed. The writer counts what it could not write; a wait that runs out marks the
    /// store stalled (and counts the record, which may still land later).
    async fn commit(&self, record: Encoded) -> Result<u64, Unwritable> {
        let (done, wait) = oneshot::channel();
        let job = Job::Append(Box::new(record), Some(done));
        let answer = tokio::time::timeout(WRITER_WAIT, async {
            self.tx.send(job).await.map_err(|_| Unwritable::Stalled)?;
            wait.await.unwrap_or(Err(Unwritable::Stalled))
        })
        .await;
        match answer {
            Ok(answer) => answer,
            Err(_) => {
                warn!("audit writer did not commit within {WRITER_WAIT:?}; requests are refused until it does");
                self.shared.set(Some(Unwritable::Stalled));
                self.shared.lose(1);
                Err(Unwritable::Stalled)
            }
        }
    }

    /// Hands a record to the writer with the configured durability: `sync` waits until it
    /// is on disk, `batch` waits only for room in the queue, `async` never waits (a full
    /// queue drops the record and counts it). No wait outlasts [`WRITER_WAIT`]. While the
    /// store does not take records, the record is only counted, into the `audit.dropped`
    /// record written once it does: nothing waits on a writer that cannot write.
    pub async fn append(&self, record: Record) {
        if self.unwritable().is_some() {
            self.shared.lose(1);
            return;
        }
        // Encoding happens here, on the request's task: the single writer only hashes.
        let record = match Encoded::new(&record) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "audit record not written");
                self.shared.lose(1);
                return;
            }
        };
        match self.durability {
            Durability::Sync => {
                if let Err(why) = self.commit(record).await {
                    debug!(%why, "audit record not written");
                }
            }
            Durability::Batch => {
                let job = Job::Append(Box::new(record), None);
                match tokio::time::timeout(WRITER_WAIT, self.tx.send(job)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => debug!("audit writer stopped; record not written"),
                    Err(_) => {
                        warn!("audit queue full for {WRITER_WAIT:?}: record dropped");
                        self.shared.set(Some(Unwritable::Stalled));
                        self.shared.lose(1);
                    }
                }
            }
            Durability::Async => match self.tx.try_send(Job::Append(Box::new(record), None)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = self.shared.dropped.load(Ordering::Relaxed);
                    self.shared.lose(1);
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
    /// up tasks. An outcome record (its decision record was shaped) is not shaped again.
    pub async fn finish<S: Shaper>(
        self: &Arc<Self>,
        shaper: &Arc<S>,
        record: Record,
        view: Option<model::Request>,
    ) {
        if self.unwritable().is_some() {
            // Not shaped for nothing: `append` only counts it.
            return self.append(record).await;
        }
        let view = view.filter(|_| record.stage != Some(record::Stage::Outcome));
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
    /// writer; gives up after `grace` (a writer stuck on a dead disk must not keep the
    /// process from exiting; what it held is lost, as with kill -9).
    pub async fn shutdown(&self, grace: Duration) {
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
        let stopped = async {
            let _all_recorded = self.pending.acquire_many(PENDING).await;
            let _ = self.tx.send(Job::Stop).await;
            let handle = self.writer.lock().ok().and_then(|mut w| w.take());
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        };
        if tokio::time::timeout(grace, stopped).await.is_err() {
            error!("audit writer did not stop within {grace:?}; exiting without it");
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

/// The free bytes an unprivileged writer may use on the filesystem holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The writer thread: the only code that appends to the store.
struct Writer {
    /// None only while it is being reopened.
    store: Option<Store>,
    path: PathBuf,
    opts: OpenOptions,
    reader: Reader,
    rx: mpsc::Receiver<Job>,
    tail: store::Link,
    last_ms: u64,
    sync: bool,
    max_age: Option<Duration>,
    max_size: Option<u64>,
    space_left: u64,
    /// When losses were last written as an `audit.dropped` record.
    last_report: std::time::Instant,
    /// Why records were last lost, for the next `audit.dropped` record.
    lost_reason: Option<Unwritable>,
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
            let (mut stop, mut tick) = (false, false);
            let mut next = Some(first);
            // Group commit: take whatever queued up while the last group was written.
            let mut lingered = self.sync;
            while let Some(job) = next.take() {
                match job {
                    Job::Append(r, done) => {
                        // A request waits for this one: no lingering for company.
                        lingered |= done.is_some();
                        group.push((r, done));
                    }
                    Job::Tick => tick = true,
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
            if tick || !group.is_empty() {
                self.look_at_space();
            }
            if !group.is_empty() {
                self.commit(group);
            }
            if tick || stop {
                self.recover();
            }
            if retain_pending && self.shared.get().is_none() {
                retain_pending = self.retain_step();
            }
            if stop {
                break;
            }
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.flush() {
                error!(error = %e, "audit store: final flush failed");
            }
        }
    }

    /// Whether the store's filesystem is below `space_left`; marks the store unwritable
    /// while it is, and writable again when it is not (unless a write failed).
    fn look_at_space(&mut self) {
        let low = match free_bytes(&self.path) {
            Ok(free) => free < self.space_left,
            Err(e) => {
                debug!(error = %e, "audit store: free space unknown");
                false
            }
        };
        match (low, self.shared.get()) {
            (true, None | Some(Unwritable::Stalled)) => {
                error!(path = %self.path.display(), space_left = self.space_left,
                       "audit store: free space below audit.space_left; records are not written until it is back");
                self.shared.set(Some(Unwritable::LowSpace));
            }
            (false, Some(Unwritable::LowSpace)) => {
                warn!(path = %self.path.display(), "audit store: free space is back above audit.space_left");
                self.shared.set(None);
            }
            _ => {}
        }
    }

    fn commit(&mut self, group: Vec<(Box<Encoded>, Option<Ack>)>) {
        if let Some(why @ (Unwritable::LowSpace | Unwritable::WriteFailed)) = self.shared.get() {
            // Nothing is written meanwhile: the margin is kept for the report of losses.
            self.lost(group.len() as u64, why);
            for (_, done) in group {
                if let Some(done) = done {
                    let _ = done.send(Err(why));
                }
            }
            return;
        }
        let mut records = Vec::with_capacity(group.len() + 1);
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            if let Ok(marker) = Encoded::new(&dropped_marker(dropped, self.lost_reason)) {
                records.push(marker);
            }
        }
        let mut acks = Vec::with_capacity(group.len());
        for (r, done) in group {
            records.push(*r);
            acks.push(done);
        }
        match self.write(&records) {
            Ok(()) => {
                self.shared.metrics.appends.inc_by(records.len() as u64);
                self.shared.set(None);
                if dropped > 0 {
                    self.last_report = std::time::Instant::now();
                }
                // The group's records took the sequences after the old tail, in order.
                let first = self.tail.seq + 1 - acks.len() as u64;
                for (i, done) in acks.into_iter().enumerate() {
                    if let Some(done) = done {
                        let _ = done.send(Ok(first + i as u64));
                    }
                }
            }
            Err(e) => {
                // The transaction wrote nothing: no partial records. The tail is unchanged.
                error!(error = %e, records = records.len(), "audit store: write failed; records lost");
                self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
                self.lost(acks.len() as u64, Unwritable::WriteFailed);
                self.shared.set(Some(Unwritable::WriteFailed));
                for done in acks.into_iter().flatten() {
                    let _ = done.send(Err(Unwritable::WriteFailed));
                }
            }
        }
    }

    /// Appends `records` as one group (flushed with `sync`), moving the tail on.
    fn write(&mut self, records: &[Encoded]) -> Result<(), AuditError> {
        let Some(store) = &self.store else {
            return Err(AuditError::Unavailable(Unwritable::WriteFailed));
        };
        let started = std::time::Instant::now();
        let (tail, ms) = store.append(self.tail, self.last_ms, records, SystemTime::now())?;
        if self.sync {
            store.flush()?;
        }
        self.shared
            .metrics
            .write
            .observe(started.elapsed().as_secs_f64());
        self.tail = tail;
        self.last_ms = ms;
        Ok(())
    }

    fn lost(&mut self, n: u64, why: Unwritable) {
        self.shared.lose(n);
        self.lost_reason = Some(why);
    }

    /// On each tick: writes what was lost as an `audit.dropped` record (at most once per
    /// [`REPORT_EVERY`] while the store does not take ordinary records, so a crash loses
    /// at most that much of the count), and after a failed write tries the store again,
    /// reopening it when it keeps failing.
    fn recover(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let why = self.shared.get();
        if dropped == 0 && why != Some(Unwritable::WriteFailed) {
            return;
        }
        if why == Some(Unwritable::LowSpace) && self.last_report.elapsed() < REPORT_EVERY {
            return;
        }
        if why == Some(Unwritable::LowSpace) {
            // Below space_left the report still fits; a disk that is really full is left
            // alone until space comes back.
            if free_bytes(&self.path).is_ok_and(|f| f < self.space_left / 2) {
                return;
            }
        }
        self.last_report = std::time::Instant::now();
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        let marker = Encoded::new(&dropped_marker(dropped, self.lost_reason));
        let written = marker.and_then(|m| self.write(&[m]));
        match written {
            Ok(()) => {
                if why.is_some_and(|w| w != Unwritable::LowSpace) {
                    warn!(path = %self.path.display(), "audit store writes again");
                    self.shared.set(None);
                }
            }
            Err(e) => {
                self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
                debug!(error = %e, "audit store still does not write");
                if why != Some(Unwritable::LowSpace) {
                    self.shared.set(Some(Unwritable::WriteFailed));
                    self.reopen();
                }
            }
        }
    }

    /// Closes and opens the store again: sled keeps the first I/O error it meets for the
    /// life of an opened database. The reader is taken away meanwhile (the store is locked
    /// by its opening; queries answer 503 for that moment). Records committed but not yet
    /// flushed when the write failed are gone with the old opening; they are counted.
    fn reopen(&mut self) {
        self.reader.0.store(None);
        self.store = None;
        match Store::open(&self.path, &self.opts) {
            Ok(store) => match store.tail() {
                Ok((tail, last_ms)) => {
                    if tail.seq < self.tail.seq {
                        let gone = self.tail.seq - tail.seq;
                        error!(gone, from = tail.seq + 1, "audit store reopened: records committed but not flushed before the failure are lost");
                        self.lost(gone, Unwritable::WriteFailed);
                    }
                    self.tail = tail;
                    self.last_ms = self.last_ms.max(last_ms);
                    self.reader.0.store(Some(Arc::new(store.clone())));
                    self.store = Some(store);
                    info!(path = %self.path.display(), "audit store reopened");
                }
                Err(e) => error!(error = %e, "audit store reopened but unreadable"),
            },
            // Still locked by a query in flight, or still failing: the next tick tries again.
            Err(e) => debug!(error = %e, "audit store: reopening failed"),
        }
    }

    /// One bounded retention step; returns whether more may be due.
    fn retain_step(&mut self) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        match store.retain(self.max_age, self.max_size, SystemTime::now(), RETAIN_STEP) {
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

/// A record that says records were lost (queue full, the store short of space or failing,
/// requests refused meanwhile), so that the gap is in the trail itself.
fn dropped_marker(n: u64, why: Option<Unwritable>) -> Record {
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
        error: Some(match why {
            Some(why) => format!("{n} audit records were not written: {why}"),
            None => format!("{n} audit records were not written (queue full)"),
        }),
        status: 0,
        duration_us: 0,
        engine_us: None,
        bytes_in: None,
        bytes_out: None,
        details: Some(serde_json::json!({ "lost": n })),
        stage: None,
        decided: None,
    }
}
