//! The client side: a pooled HTTP/1 client to the real Docker engine over a unix socket or
//! TCP (with TLS and a client certificate when `engine.cert_path` is set). Keep-alive connections are reused across requests; a connection whose response was
//! dropped half-way (a client that went away during `logs -f`) is closed, not reused, so the
//! engine sees the cancellation.

mod connector;
mod tls;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::{Address, EngineConfig};
use crate::error::{DockerError, IntoDockerError};

pub use connector::Connector;
pub use tls::{EngineTls, EngineTlsError};

/// Failures talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The engine could not be reached or the connection broke before an answer.
    #[error("cannot reach the Docker engine at {address}: {reason}")]
    Unreachable { address: Address, reason: String },
    /// The engine's TLS settings (`engine.cert_path`) cannot be used.
    #[error(transparent)]
    Tls(#[from] EngineTlsError),
}

impl IntoDockerError for UpstreamError {
    fn to_docker_error(&self) -> DockerError {
        // The engine address is operator configuration, not a secret; saying where the
        // gateway looked is what makes a dead engine quick to diagnose.
        DockerError::new(StatusCode::BAD_GATEWAY, format!("portcullis: {self}"))
    }
}

/// The engine client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Body>,
    address: Address,
}

impl Upstream {
    /// A client for the configured engine. Connects lazily: an engine that is down at
    /// start-up is not an error, requests get a 502 until it is back.
    pub fn new(config: &EngineConfig) -> Result<Self, UpstreamError> {
        let mut connector = Connector::new(config.url.clone(), config.connect_timeout);
        if let (Address::Tcp(hp), Some(dir)) = (&config.url, &config.cert_path) {
            connector = connector.with_tls(EngineTls::load(dir, hp)?);
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_idle_connections)
            // Docker clients send their own Host header; the engine ignores it.
            .set_host(false)
            .build(connector);
        Ok(Self {
            client,
            address: config.url.clone(),
        })
    }

    /// Where the engine is.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the engine answers `GET /_ping` with a success.
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = http::Uri::from_static("/_ping");
        // dockerd (Go's HTTP server) refuses HTTP/1.1 requests without a Host.
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("docker"));
        let resp = self.send(req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Unreachable {
                address: self.address.clone(),
                reason: format!("/_ping answered {}", resp.status()),
            })
        }
    }

    /// Sends a request whose URI is origin-form (`/v1.41/containers/json?all=1`).
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        // The pooled client wants an absolute URI; the authority is a fixed placeholder
        // because the connector always dials the configured engine.
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let uri = http::Uri::builder()
            .scheme("http")
            .authority("docker.engine")
            .path_and_query(pq)
            .build()
            .map_err(|e| self.unreachable(e.to_string()))?;
        *req.uri_mut() = uri;
        self.client
            .request(req)
            .await
            .map_err(|e| self.unreachable(describe(&e)))
    }

    fn unreachable(&self, reason: String) -> UpstreamError {
        UpstreamError::Unreachable {
            address: self.address.clone(),
            reason,
        }
    }
}

/// The innermost cause is the useful part ("Connection refused (os error 111)").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
