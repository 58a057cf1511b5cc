//! Many `GET /events` streams held open at once: how many a configuration establishes, whether
//! an event emitted while they are open reaches every one of them, and (in the caller) what
//! the proxy's memory is meanwhile.
//!
//! Each stream is its own connection (as each `docker events` or monitoring agent has), asking
//! only for this run's containers (`filters={"label":["portcullis-bench=<pid>"]}`), so other
//! users' activity on the engine does not count as a delivered event.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;

use crate::client;
use crate::engine::{self, Engine};

/// How long a stream may take to be established, and an event to arrive.
const WAIT: Duration = Duration::from_secs(20);

/// The open streams of one configuration; dropping this closes them all.
pub struct Streams {
    tasks: JoinSet<()>,
    established: Arc<AtomicUsize>,
    saw_event: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
    /// From the first connect to the last stream established (or the wait's end).
    pub establish_time: Duration,
}

impl Streams {
    /// Opens `n` event streams on `socket` and waits until every one has its response head
    /// (or failed, or [`WAIT`] passed).
    pub async fn open(socket: &Path, n: usize) -> Self {
        let filter = format!(r#"{{"label":["{}={}"]}}"#, engine::LABEL, engine::run_id());
        let path = format!("/events?filters={}", engine::form_encode(&filter));
        let mut streams = Self {
            tasks: JoinSet::new(),
            established: Arc::default(),
            saw_event: Arc::default(),
            failed: Arc::default(),
            first_error: Arc::default(),
            establish_time: Duration::ZERO,
        };
        let start = Instant::now();
        for _ in 0..n {
            let socket: PathBuf = socket.to_owned();
            let path = path.clone();
            let established = streams.established.clone();
            let saw_event = streams.saw_event.clone();
            let failed = streams.failed.clone();
            let first_error = streams.first_error.clone();
            streams.tasks.spawn(async move {
                if let Err(e) = stream(&socket, &path, &established, &saw_event).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(format!("{e:#}"));
                    }
                }
            });
        }
        let deadline = start + WAIT;
        while streams.established() + streams.failed() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        streams.establish_time = start.elapsed();
        streams
    }

    /// Streams whose response head (200) arrived.
    pub fn established(&self) -> usize {
        self.established.load(Ordering::Relaxed)
    }

    /// Streams that saw at least one event.
    pub fn saw_event(&self) -> usize {
        self.saw_event.load(Ordering::Relaxed)
    }

    /// Streams that failed (refused, closed, a status other than 200).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    /// Emits events (a container created and removed, directly on the engine) and waits until
    /// every established stream saw one, or [`WAIT`] passed; returns the time that took.
    pub async fn deliver(&self, engine: &mut Engine) -> Result<Duration> {
        let start = Instant::now();
        engine.emit_events().await?;
        let target = self.established();
        while self.saw_event() < target && start.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(start.elapsed())
    }

    /// Closes every stream.
    pub async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One stream: connect, ask, count the head, count the first event, then keep reading until
/// aborted (the stream stays open as a `docker events` would keep it).
async fn stream(
    socket: &Path,
    path: &str,
    established: &AtomicUsize,
    saw_event: &AtomicUsize,
) -> Result<()> {
    let mut sender = client::connect::<Full<Bytes>>(socket).await?;
    sender.ready().await.context("connection closed")?;
    let response = tokio::time::timeout(
        WAIT,
        sender.send_request(client::request(Method::GET, path, None)),
    )
    .await
    .context("no response head")?
    .context("sending the request")?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        bail!(
            "GET /events: {status}: {}",
            body.map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default()
        );
    }
    established.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut seen = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading events")?;
        if frame.data_ref().is_some_and(|d| !d.is_empty()) && !seen {
            seen = true;
            saw_event.fetch_add(1, Ordering::Relaxed);
        }
    }
    bail!("the event stream ended")
}
