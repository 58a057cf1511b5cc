//! The admin listener: the audit trail's queries over HTTP (JSON), for the operators of a
//! running gateway. sled lets one process open the store, so while the gateway runs this
//! is how the store is read. Off unless `[admin]` is configured; it listens on a unix
//! socket (mode 0600) or a loopback TCP port only, because it has no authentication of its
//! own and the trail is sensitive.
//!
//! - `GET /audit?since=&until=&user=&decision=&endpoint=&object=&limit=`: records, newest
//!   first (the same [`Query`] as `portcullis audit list`; `limit` defaults to 100, at most
//!   10,000).
//! - `GET /audit/{seq}`: one record.
//! - `GET /audit/verify`: the chain check (409 and the first bad sequence when broken).
//! - `GET /audit/stats`: counts by user, decision and endpoint.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tracing::{info, warn};

use crate::audit::{report, AuditError, Decision, Query, Store};
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
    #[error("[admin] needs an [audit] table: the admin listener serves the audit trail")]
    NoAudit,
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
    store: Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(store);
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

/// The admin API over an open store (the gateway's own handle: sled is shared within a
/// process). Exposed so that it can be tested without a socket.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify))
        .route("/audit/stats", get(stats))
        .route("/audit/{seq}", get(show))
        .with_state(Arc::new(store))
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
    State(store): State<Arc<Store>>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = query_of(&params)?;
    blocking(move || {
        let records = q.run(&store)?.collect::<Result<Vec<_>, _>>()?;
        Ok(Json(records).into_response())
    })
    .await
}

async fn show(
    State(store): State<Arc<Store>>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no record {seq:?}")))?;
    blocking(move || match store.get(seq)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no record {seq}"))),
    })
    .await
}

async fn verify(State(store): State<Arc<Store>>) -> Result<Response, ApiError> {
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

async fn stats(State(store): State<Arc<Store>>) -> Result<Response, ApiError> {
    blocking(move || Ok(Json(store.stats()?).into_response())).await
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
