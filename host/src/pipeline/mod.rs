//! One request's trip through the gateway: classify the endpoint, bound and read the body,
//! forward exactly what was read to the engine, and stream the answer back. Attach and exec
//! connections become a raw tunnel only after the engine itself answered `101`.

mod body;
mod headers;
mod tunnel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{DockerError, IntoDockerError};
use crate::identity::Caller;
use crate::route::{self, BodyKind, Route, RouteError};
use crate::upstream::{Upstream, UpstreamError};

pub use body::Body;

/// Why a request was not forwarded, or failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("request body larger than the {limit}-byte limit for {endpoint}")]
    BodyTooLarge { endpoint: &'static str, limit: usize },
    #[error("error reading the request body: {0}")]
    BodyRead(String),
    #[error("{endpoint} cannot be upgraded to another protocol")]
    UpgradeRefused { endpoint: &'static str },
    #[error("too many attached sessions (limit {limit}); try again later")]
    TooManyTunnels { limit: usize },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl IntoDockerError for PipelineError {
    fn to_docker_error(&self) -> DockerError {
        let status = match self {
            PipelineError::Route(RouteError::UnknownEndpoint { .. }) => StatusCode::FORBIDDEN,
            PipelineError::Route(_) => StatusCode::BAD_REQUEST,
            PipelineError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PipelineError::BodyRead(_) | PipelineError::UpgradeRefused { .. } => {
                StatusCode::BAD_REQUEST
            }
            PipelineError::TooManyTunnels { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PipelineError::Upstream(e) => return e.to_docker_error(),
        };
        DockerError::new(status, format!("portcullis: {self}"))
    }
}

/// The shared state of the request pipeline.
pub struct Gateway {
    config: Arc<Config>,
    upstream: Upstream,
    tunnels: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl Gateway {
    /// A gateway forwarding to `upstream`.
    pub fn new(config: Arc<Config>, upstream: Upstream) -> Self {
        let tunnels = Arc::new(Semaphore::new(config.limits.max_connections));
        Self {
            config,
            upstream,
            tunnels,
            next_id: AtomicU64::new(1),
        }
    }

    /// Handles one request; never fails: every error becomes a Docker-style response.
    pub async fn handle(&self, req: Request<Incoming>, caller: Arc<Caller>) -> Response<Body> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let method = req.method().clone();
        match self.forward(req, &caller).await {
            Ok((endpoint, resp)) => {
                debug!(id, %method, endpoint, user = %caller.user, status = resp.status().as_u16(),
                       micros = started.elapsed().as_micros() as u64, "forwarded");
                resp
            }
            Err(e) => {
                let err = e.to_docker_error();
                if err.status.is_server_error() {
                    warn!(id, %method, user = %caller.user, error = %e, "request failed");
                } else {
                    info!(id, %method, user = %caller.user, error = %e, "request refused");
                }
                err.into_response()
            }
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        _caller: &Caller,
    ) -> Result<(&'static str, Response<Body>), PipelineError> {
        let route = route::classify(req.method(), req.uri().path())?;
        let endpoint = route.endpoint;

        let wants_upgrade = headers::wants_upgrade(req.headers());
        if wants_upgrade && !endpoint.hijack {
            return Err(PipelineError::UpgradeRefused {
                endpoint: endpoint.name,
            });
        }
        let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

        let (parts, incoming) = req.into_parts();
        let body = match endpoint.body {
            BodyKind::Stream => Body::stream(incoming),
            BodyKind::Json | BodyKind::None => self.read_body(incoming, &route).await?,
        };

        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = upstream_uri(&route, parts.uri.query())?;
        *upstream_req.headers_mut() = headers::forwardable(&parts.headers);
        if wants_upgrade {
            let h = upstream_req.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        }

        let mut resp = self.upstream.send(upstream_req).await?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                // The engine switched protocols on a request that never asked to: nothing
                // sane can be relayed.
                return Err(PipelineError::UpgradeRefused {
                    endpoint: endpoint.name,
                });
            };
            let permit = self.tunnels.clone().try_acquire_owned().map_err(|_| {
                PipelineError::TooManyTunnels {
                    limit: self.config.limits.max_connections,
                }
            })?;
            let engine_upgrade = hyper::upgrade::on(&mut resp);
            tunnel::splice(client_upgrade, engine_upgrade, permit);
            let (parts, _) = resp.into_parts();
            return Ok((endpoint.name, Response::from_parts(parts, Body::empty())));
        }

        let (mut parts, incoming) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok((endpoint.name, Response::from_parts(parts, Body::stream(incoming))))
    }

    /// Reads a non-streaming body whole, within the configured bound.
    async fn read_body(&self, incoming: Incoming, route: &Route) -> Result<Body, PipelineError> {
        use http_body::Body as _;
        if incoming.is_end_stream() {
            return Ok(Body::empty());
        }
        let limit = self.config.limits.max_body_bytes;
        match Limited::new(incoming, limit).collect().await {
            Ok(collected) => Ok(Body::full(collected.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(PipelineError::BodyTooLarge {
                    endpoint: route.endpoint.name,
                    limit,
                })
            }
            Err(e) => Err(PipelineError::BodyRead(e.to_string())),
        }
    }
}

/// The engine-side URI: the canonical path, and the query as received.
fn upstream_uri(route: &Route, query: Option<&str>) -> Result<http::Uri, PipelineError> {
    let mut pq = route.upstream_path();
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    pq.parse()
        .map_err(|_| PipelineError::Route(RouteError::BadPath("cannot re-encode path".into())))
}
