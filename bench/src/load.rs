//! The load generator: N workers, each on its own keep-alive connection, send one operation
//! after another for a fixed time (closed loop); every latency goes into an HDR histogram.
//! Connections are opened before the clock starts, and a warm-up period is run but not
//! recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use crate::client;

/// What one worker does once per iteration.
#[derive(Debug, Clone)]
pub enum Op {
    /// `GET path`, expecting 200.
    Get(String),
    /// `POST /containers/create` with `body` (201), then `DELETE /containers/{id}?force=1`
    /// (204): one latency for the pair, as `docker create` + `docker rm` would see it.
    CreateRemove { body: Bytes },
    /// `POST /containers/create` with `body`, which the configuration's policy refuses:
    /// expects 403, so the request never reaches the engine.
    DeniedCreate { body: Bytes },
}

impl Op {
    async fn run(&self, sender: &mut SendRequest<Full<Bytes>>) -> Result<()> {
        match self {
            Op::Get(path) => {
                client::expect(
                    sender,
                    client::request(Method::GET, path, None),
                    StatusCode::OK,
                )
                .await?;
            }
            Op::CreateRemove { body } => {
                let created = client::expect(
                    sender,
                    client::request(Method::POST, "/containers/create", Some(body.clone())),
                    StatusCode::CREATED,
                )
                .await?;
                let id = serde_json::from_slice::<serde_json::Value>(&created)
                    .ok()
                    .and_then(|v| v.get("Id")?.as_str().map(str::to_owned))
                    .context("container create answered without an Id")?;
                client::expect(
                    sender,
                    client::request(Method::DELETE, &format!("/containers/{id}?force=1"), None),
                    StatusCode::NO_CONTENT,
                )
                .await?;
            }
            Op::DeniedCreate { body } => {
                client::expect(
                    sender,
                    client::request(Method::POST, "/containers/create", Some(body.clone())),
                    StatusCode::FORBIDDEN,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The outcome of one measured point.
pub struct Measurement {
    /// Latencies of the operations that started inside the measured window, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Failed operations (connection errors, unexpected status) inside the window.
    pub errors: u64,
    /// The first failure seen, for the report.
    pub first_error: Option<String>,
    /// From the end of the warm-up to the completion of the last recorded operation.
    pub elapsed: Duration,
}

impl Measurement {
    pub fn requests(&self) -> u64 {
        self.histogram.len()
    }
    pub fn rps(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn percentile_us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 h at 3 significant digits: 0.1% relative error.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op` from `concurrency` workers against `socket` for `warmup` + `duration`.
pub async fn run(
    socket: &Path,
    op: &Op,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        senders.push(client::connect::<Full<Bytes>>(socket).await?);
    }
    let start = Instant::now();
    let window = (start + warmup, start + warmup + duration);
    let op = Arc::new(op.clone());
    let socket = Arc::new(socket.to_path_buf());
    let workers: Vec<_> = senders
        .into_iter()
        .map(|sender| tokio::spawn(worker(socket.clone(), op.clone(), sender, window)))
        .collect();

    let mut histogram = new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut last = window.1;
    for worker in workers {
        let w = worker.await.context("a load worker panicked")?;
        histogram
            .add(&w.histogram)
            .expect("histograms with the same bounds");
        errors += w.errors;
        first_error = first_error.or(w.first_error);
        last = last.max(w.last_completion);
    }
    if histogram.is_empty() && errors == 0 {
        bail!("no operation completed in {duration:?}");
    }
    Ok(Measurement {
        histogram,
        errors,
        first_error,
        elapsed: last - window.0,
    })
}

struct WorkerResult {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    last_completion: Instant,
}

async fn worker(
    socket: Arc<PathBuf>,
    op: Arc<Op>,
    mut sender: SendRequest<Full<Bytes>>,
    (measure_from, end): (Instant, Instant),
) -> WorkerResult {
    let mut out = WorkerResult {
        histogram: new_histogram(),
        errors: 0,
        first_error: None,
        last_completion: measure_from,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let result = op.run(&mut sender).await;
        let t1 = Instant::now();
        let recorded = t0 >= measure_from;
        match result {
            Ok(()) if recorded => {
                out.histogram
                    .saturating_record((t1 - t0).as_nanos().min(u64::MAX as u128) as u64);
                out.last_completion = t1;
            }
            Ok(()) => {}
            Err(e) => {
                if recorded {
                    out.errors += 1;
                }
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                if sender.is_closed() {
                    match client::connect(&socket).await {
                        Ok(s) => sender = s,
                        // Do not spin on a target that is gone; the window still ends.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }
    }
    out
}
