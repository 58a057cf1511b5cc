//! The admin listener, for the operators of a running gateway: metrics, health, reload,
//! and the audit trail's queries over HTTP (JSON). sled lets one process open the store, so
//! while the gateway runs this is how the store is read (`portcullis audit` goes through
//! it). It listens on a unix socket (mode 0600) or a loopback TCP port only, because it has
//! no authentication of its own and the trail is sensitive.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 when the engine answers, the audit store writes and the chain is
//!   loaded; 503 with the failing checks otherwise.
//! - `POST /reload`: the configuration loaded again and the chain swapped whole (200 with the
//!   new generation), or left as it was (409 and why).
//! - `GET /audit?since=&until=&user=&decision=&endpoint=&object=&limit=`: records, newest
//!   first (the same [`Query`] as `portcullis audit list`; `limit` defaults to 100, at most
//!   10,000).
//! - `GET /audit/{seq}`: one record.
//! - `GET /audit/verify`: the chain check (409 and the first bad sequence when broken).
//! - `GET /audit/stats`: counts by user, decision and endpoint.
//! - `GET /audit/export`: every record, oldest first, with its chain hashes (JSON lines).
//!
//! The audit routes answer 404 when the gateway keeps no audit trail.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tracing::{info, warn};

use crate::audit::{report, AuditError, Decision, Query, Reader};
use crate::config::{Address, AdminConfig};

/// Records one `GET /audit` returns at most.
pub const MAX_LIMIT: usize = 10_000;
/// Records `GET /audit` returns without `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin listener {address}: {source}")]
    Bind {
        address: Address,
        source: std::io::Error,
    },
    #[error("admin listener {address}: a running process already listens there")]
    InUse { address: Address },
}

/// What the admin listener asks of the running gateway (implemented by [`crate::run`]'s
/// layer, which owns the gateway and its configuration).
pub trait Control: Send + Sync + 'static {
    /// Loads the configuration again and swaps the chain: what is in force now, or why
    /// nothing changed.
    fn reload(&self) -> BoxFuture<'_, Result<serde_json::Value, String>>;
    /// Every readiness check.
    fn ready(&self) -> BoxFuture<'_, Readiness>;
    /// The metrics, in the text exposition format.
    fn metrics(&self) -> String;
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// One readiness check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found (why it failed, when it did).
    pub detail: String,
}

impl Readiness {
    /// Ready when every check is.
    pub fn of(checks: Vec<Check>) -> Self {
        Self {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// A bound admin listener.
pub enum AdminListener {
    /// On a unix socket (removed when served to the end).
    Unix(tokio::net::UnixListener, PathBuf),
    /// On loopback TCP.
    Tcp(tokio::net::TcpListener),
}

/// Binds the configured address (a stale unix socket file is replaced).
pub async fn bind(config: &AdminConfig) -> Result<AdminListener, AdminError> {
    let address = config.listen.clone();
    let err = |source| AdminError::Bind {
        address: address.clone(),
        source,
    };
    match &config.listen {
        Address::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            if path.exists() {
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(AdminError::InUse { address });
                }
                std::fs::remove_file(path).map_err(err)?;
            }
            let l = tokio::net::UnixListener::bind(path).map_err(err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            Ok(AdminListener::Unix(l, path.clone()))
        }
        Address::Tcp(hp) | Address::Tls(hp) => {
            let l = tokio::net::TcpListener::bind(hp).await.map_err(err)?;
            Ok(AdminListener::Tcp(l))
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: AdminListener,
    store: Option<Reader>,
    control: Arc<dyn Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(store, control);
    let result = match listener {
        AdminListener::Unix(l, path) => {
            info!(addr = %format!("unix://{}", path.display()), "admin listening");
            let r = axum::serve(l, app).with_graceful_shutdown(shutdown).await;
            let _ = std::fs::remove_file(&path);
            r
        }
        AdminListener::Tcp(l) => {
            if let Ok(a) = l.local_addr() {
                info!(addr = %format!("tcp://{a}"), "admin listening");
            }
            axum::serve(l, app).with_graceful_shutdown(shutdown).await
        }
    };
    if let Err(e) = result {
        warn!(error = %e, "admin listener failed");
    }
}

/// The admin API: the gateway's `control`, and the audit queries over `store` (the
/// gateway's own handle: sled is shared within a process). Exposed so that it can be tested
/// without a socket.
pub fn router(store: Option<Reader>, control: Arc<dyn Control>) -> Router {
    let operations = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .with_state(control);
    let audit = match store {
        Some(store) => Router::new()
            .route("/audit", get(list))
            .route("/audit/verify", get(verify))
            .route("/audit/stats", get(stats))
            .route("/audit/export", get(export))
            .route("/audit/{seq}", get(show))
            .with_state(store),
        None => Router::new()
            .route("/audit", get(no_audit))
            .route("/audit/{*rest}", get(no_audit)),
    };
    operations.merge(audit)
}

async fn metrics(State(control): State<Arc<dyn Control>>) -> Response {
    let text = control.metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(control): State<Arc<dyn Control>>) -> Response {
    let readiness = control.ready().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

async fn reload(State(control): State<Arc<dyn Control>>) -> Response {
    match control.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(why) => ApiError(StatusCode::CONFLICT, why).into_response(),
    }
}

async fn no_audit() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "this gateway keeps no audit trail (its configuration has no [audit] table)".into(),
    )
}

/// An error as JSON `{"message": ...}` (the Docker error shape, as elsewhere).
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"message": self.1}))).into_response()
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        let status = match e {
            AuditError::Query(_) => StatusCode::BAD_REQUEST,
            AuditError::Tampered { .. } => StatusCode::CONFLICT,
            AuditError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Runs store work off the async threads: sled reads block.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn bad(msg: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg)
}

/// Parses the query string into a [`Query`]; unknown parameters are refused, as in the
/// configuration, so a typo never silently widens a listing.
fn query_of(params: &HashMap<String, String>) -> Result<Query, ApiError> {
    let mut q = Query {
        limit: Some(DEFAULT_LIMIT),
        ..Query::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "since" => q.since = Some(report::parse_time(v).map_err(bad)?),
            "until" => q.until = Some(report::parse_time(v).map_err(bad)?),
            "user" => q.user = Some(v.clone()),
            "decision" => q.decision = Some(v.parse::<Decision>().map_err(bad)?),
            "endpoint" => q.endpoint = Some(v.clone()),
            "object" => q.object = Some(v.clone()),
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(format!("limit {v:?} is not a number")))?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(bad(format!("limit must be 1 to {MAX_LIMIT}")));
                }
                q.limit = Some(n);
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (since, until, user, decision, endpoint, object, limit)"
                )))
            }
        }
    }
    Ok(q)
}

async fn list(
    State(reader): State<Reader>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = query_of(&params)?;
    let store = reader.store()?;
    blocking(move || {
        let records = q.run(&store)?.collect::<Result<Vec<_>, _>>()?;
        Ok(Json(records).into_response())
    })
    .await
}

async fn show(State(reader): State<Reader>, Path(seq): Path<String>) -> Result<Response, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no record {seq:?}")))?;
    let store = reader.store()?;
    blocking(move || match crate::audit::query::request(&store, seq)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no record {seq}"))),
    })
    .await
}

async fn verify(State(reader): State<Reader>) -> Result<Response, ApiError> {
    let store = reader.store()?;
    blocking(move || match store.verify() {
        Ok(v) => Ok(Json(serde_json::json!({"ok": true, "verified": v})).into_response()),
        Err(AuditError::Tampered { seq, what }) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "ok": false, "broken_at": seq,
                "message": format!("audit chain broken at record {seq}: {what}")
            })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    })
    .await
}

async fn stats(State(reader): State<Reader>) -> Result<Response, ApiError> {
    let store = reader.store()?;
    blocking(move || Ok(Json(store.stats()?).into_response())).await
}

/// The export streamed as it is written: a blocking task writes JSON lines into a bounded
/// channel, and the response body reads from it, so a large trail is never held whole.
async fn export(State(reader): State<Reader>) -> Response {
    let store = match reader.store() {
        Ok(store) => store,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let done = report::export(&store, &mut out).map_err(std::io::Error::other);
        let done = done.and_then(|_| std::io::Write::flush(&mut out));
        if let Err(e) = done {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Bytes written on a blocking thread, sent in chunks to an async response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 << 10;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unix_and_loopback_addresses_are_accepted() {
        let ok = |s: &str| {
            AdminConfig {
                listen: s.parse().unwrap(),
            }
            .validate()
        };
        assert!(ok("unix:///run/portcullis-admin.sock").is_ok());
        assert!(ok("tcp://127.0.0.1:9000").is_ok());
        assert!(ok("tcp://[::1]:9000").is_ok());
        assert!(ok("tcp://localhost:9000").is_ok());
        let (key, why) = ok("tcp://0.0.0.0:9000").unwrap_err();
        assert_eq!(key, "admin.listen");
        assert!(why.contains("loopback"), "{why}");
        assert!(ok("tls://127.0.0.1:9000").is_err());
    }
}
