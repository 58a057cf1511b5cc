//! One request's trip through the gateway: classify the endpoint, bound and read the body,
//! forward exactly what was read to the engine, and stream the answer back. Attach and exec
//! connections become a raw tunnel only after the engine itself answered `101`.

mod binds;
mod body;
pub(crate) mod canonical;
mod chain;
mod events;
pub(crate) mod gojson;
mod guard;
mod headers;
mod slots;
mod spool;
mod tags;
mod target;
pub mod tunnel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::audit::{AuditError, AuditLog, Draft};
use crate::config::Config;
use crate::error::{DockerError, IntoDockerError};
use crate::identity::Caller;
use crate::model;
use crate::owners::Owners;
use crate::route::{self, BodyKind, Route, RouteError};
use crate::upstream::{Upstream, UpstreamError};
use canonical::Canonical;
use chain::Patchable;

pub use body::Body;
pub use canonical::{apply_json_patch, CREDENTIAL_HEADERS};
pub use chain::{Chain, ChainError, Held, Note, Trace};
pub use spool::SpoolError;
pub use tags::{ImageRef, TagError};
pub use target::TargetError;

/// Why a request was not forwarded, or failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("request head larger than the {limit}-byte limit")]
    HeadTooLarge { limit: usize },
    #[error("request body larger than the {limit}-byte limit for {endpoint}")]
    BodyTooLarge {
        endpoint: &'static str,
        limit: usize,
    },
    #[error("error reading the request body: {0}")]
    BodyRead(String),
    #[error("{endpoint} takes no request body")]
    UnexpectedBody { endpoint: &'static str },
    #[error("invalid JSON body for {endpoint}: {reason}")]
    BadJson {
        endpoint: &'static str,
        reason: String,
    },
    #[error("client version {version} is too old. Minimum supported API version is {min}, please upgrade your client to a newer version")]
    VersionTooOld {
        version: crate::config::ApiVersion,
        min: crate::config::ApiVersion,
    },
    #[error("client version {version} is too new. Maximum supported API version is {max}")]
    VersionTooNew {
        version: crate::config::ApiVersion,
        max: crate::config::ApiVersion,
    },
    #[error("{endpoint}: BuildKit session tunnels are disabled (their streams cannot be inspected); build with DOCKER_BUILDKIT=0 or set [api] allow_buildkit = true")]
    BuildkitDisabled { endpoint: &'static str },
    #[error("form-encoded request bodies are not accepted (the engine would read their fields ahead of the query string)")]
    FormBody,
    #[error("request framing is ambiguous (Content-Length with Transfer-Encoding, or a transfer coding other than chunked)")]
    AmbiguousFraming,
    #[error(transparent)]
    Bind(#[from] binds::BindError),
    #[error("{endpoint} cannot be upgraded to another protocol")]
    UpgradeRefused { endpoint: &'static str },
    #[error("the client is not reading its earlier responses; cannot start the attached stream")]
    ClientNotReading,
    #[error("{user} has {limit} requests in flight already (limits.max_requests_per_caller); try again when one has finished")]
    TooManyRequests { user: String, limit: usize },
    #[error("too many attached sessions (limit {limit}); try again later")]
    TooManyTunnels { limit: usize },
    #[error("the engine's response to {endpoint} is too large or unreadable for response plugins: {reason}")]
    ResponseUnreadable {
        endpoint: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Tags(#[from] TagError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl IntoDockerError for PipelineError {
    fn to_docker_error(&self) -> DockerError {
        let status = match self {
            PipelineError::Route(RouteError::UnknownEndpoint { .. }) => StatusCode::FORBIDDEN,
            PipelineError::Route(_) => StatusCode::BAD_REQUEST,
            PipelineError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PipelineError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            PipelineError::BuildkitDisabled { .. } => StatusCode::FORBIDDEN,
            PipelineError::VersionTooOld { .. }
            | PipelineError::VersionTooNew { .. }
            | PipelineError::FormBody
            | PipelineError::AmbiguousFraming
            | PipelineError::Bind(_)
            | PipelineError::BodyRead(_)
            | PipelineError::UnexpectedBody { .. }
            | PipelineError::BadJson { .. }
            | PipelineError::UpgradeRefused { .. } => StatusCode::BAD_REQUEST,
            PipelineError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            PipelineError::TooManyTunnels { .. } | PipelineError::ClientNotReading => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PipelineError::ResponseUnreadable { .. } => StatusCode::BAD_GATEWAY,
            PipelineError::Spool(SpoolError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            PipelineError::Spool(SpoolError::Disk(_)) => StatusCode::INSUFFICIENT_STORAGE,
            PipelineError::Spool(_) => StatusCode::BAD_REQUEST,
            // Plugin messages go to the client as they are: the CLI shows
            // "Error response from daemon: <plugin>: <message>".
            PipelineError::Chain(e) => return e.to_docker_error(),
            PipelineError::Upstream(e) => return e.to_docker_error(),
            PipelineError::Target(e) => return e.to_docker_error(),
            PipelineError::Tags(e) => return e.to_docker_error(),
            PipelineError::Audit(e) => return e.to_docker_error(),
        };
        DockerError::new(status, format!("portcullis: {self}"))
    }
}

/// The shared state of the request pipeline.
pub struct Gateway {
    config: Arc<Config>,
    upstream: Upstream,
    chain: Arc<Chain>,
    tunnels: Arc<Semaphore>,
    slots: Arc<slots::CallerSlots>,
    next_id: AtomicU64,
    audit: Option<Arc<AuditLog>>,
    /// Objects looked up lately, for judging the events of destroyed ones.
    seen: Arc<target::Seen>,
    /// Who owns each image repository; without it plugins get no `tag` references.
    owners: Option<Arc<Owners>>,
}

impl Gateway {
    /// A gateway forwarding to `upstream` through `chain`.
    pub fn new(config: Arc<Config>, upstream: Upstream, chain: Chain) -> Self {
        let tunnels = Arc::new(Semaphore::new(config.limits.max_connections));
        let slots = slots::CallerSlots::new(config.limits.max_requests_per_caller);
        Self {
            config,
            upstream,
            chain: Arc::new(chain),
            tunnels,
            slots,
            next_id: AtomicU64::new(1),
            audit: None,
            seen: Arc::new(target::Seen::default()),
            owners: None,
        }
    }

    /// Keeps the owners of image repositories in `owners`, and hands plugins the tags each
    /// request names.
    pub fn with_owners(mut self, owners: Arc<Owners>) -> Self {
        self.owners = Some(owners);
        self
    }

    /// Records every request in `audit` (none: no audit trail).
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// Handles one request; never fails: every error becomes a Docker-style response.
    pub async fn handle(&self, req: Request<Incoming>, caller: Arc<Caller>) -> Response<Body> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let method = req.method().clone();
        let mut draft = Draft::start(self.audit.is_some(), id, &req, &caller, started);
        let refused = self.audit.as_ref().and_then(|a| a.refusal());
        // Taken before any work is done for the request, held until its answer (or
        // tunnel) is finished.
        let mut slot = self.slots.take(&caller.user);
        // A streamed upload the pipeline has not sent on yet, kept here so that a refusal
        // can read the rest of it first (see `drain`).
        let mut unread = None;
        let result = match (refused, &slot) {
            (Some(e), _) => Err(PipelineError::Audit(e)),
            (None, None) => Err(PipelineError::TooManyRequests {
                user: caller.user.clone(),
                limit: self.slots.limit(),
            }),
            (None, Some(_)) => {
                self.forward(id, req, &caller, &mut slot, &mut draft, &mut unread)
                    .await
            }
        };
        let resp = match result {
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
                draft.failed(&e, &err);
                if let Some(body) = unread.take() {
                    self.drain(body).await;
                }
                err.into_response()
            }
        };
        // With `sync` durability this returns only once the record is on disk; otherwise
        // audit plugins shape it after the response is released.
        if let Some(audit) = &self.audit {
            audit.finish(&self.chain, draft, &resp).await;
        }
        resp.map(|body| body.holding(slot))
    }

    /// Answers a request the identity layer refused (no caller: 401) and leaves its audit
    /// record, so that failed attempts are in the trail as well.
    pub async fn unidentified(
        &self,
        req: &Request<Incoming>,
        peer: &crate::identity::Peer,
        why: &crate::identity::IdentityError,
    ) -> Response<Body> {
        let sent = why.to_docker_error();
        let resp = sent.clone().into_response();
        if let Some(audit) = &self.audit {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let draft = Draft::unidentified(id, req, peer, why, &sent, Instant::now());
            audit.finish(&self.chain, draft, &resp).await;
        }
        resp
    }

    async fn forward(
        &self,
        id: u64,
        mut req: Request<Incoming>,
        caller: &Caller,
        slot: &mut Option<slots::CallerSlot>,
        draft: &mut Draft,
        stream: &mut Option<Incoming>,
    ) -> Result<(&'static str, Response<Body>), PipelineError> {
        // hyper's read buffer bound is soft (a head that arrives in one large read can pass
        // it), so the configured bound is enforced exactly here, before anything is forwarded.
        let limit = self.config.limits.max_header_bytes;
        if head_size(&req) > limit {
            return Err(PipelineError::HeadTooLarge { limit });
        }
        let mut route = if self.config.api.pass_unknown_endpoints {
            route::classify_or_unknown(req.method(), req.uri().path())?
        } else {
            route::classify(req.method(), req.uri().path())?
        };
        let endpoint = route.endpoint;
        draft.routed(&route);
        guard::check(&self.config.api, &route, req.headers())?;

        let wants_upgrade = headers::wants_upgrade(req.headers());
        if wants_upgrade && !endpoint.hijack {
            return Err(PipelineError::UpgradeRefused {
                endpoint: endpoint.name,
            });
        }
        // dockerd also hijacks attach and exec start sent without `Upgrade` (the legacy
        // hijack); the gateway asks the engine to upgrade either way (see `tunnel`).
        let legacy_hijack = !wants_upgrade && tunnel::legacy_hijackable(endpoint.name);
        let handover = req.extensions_mut().remove::<Arc<tunnel::Handover>>();
        let upgrade_protocol = req.headers().get(header::UPGRADE).cloned();
        let (parts, incoming) = req.into_parts();

        // Read what may be read: streamed uploads stay streams, everything else is read
        // whole within the bound, so plugins and the engine get the same bytes.
        let mut buffered = match endpoint.body {
            BodyKind::Stream => {
                *stream = Some(incoming);
                None
            }
            BodyKind::Json | BodyKind::None => {
                let bytes = self.read_body(incoming, &route).await?;
                if bytes.is_empty() {
                    None
                } else if endpoint.body == BodyKind::None {
                    return Err(PipelineError::UnexpectedBody {
                        endpoint: endpoint.name,
                    });
                } else {
                    Some(bytes)
                }
            }
        };
        let query = canonical::parse_query(parts.uri.query());
        draft.request(&query, buffered.as_ref());

        let wants_response = self.chain.wants_response(endpoint.name);
        let mut held = if wants_response && !endpoint.streaming {
            Held::keeping()
        } else {
            Held::default()
        };
        let mut canonical = None;
        let mut archive = None;
        let wants_audit = draft.is_on() && self.chain.wants_audit(endpoint.name);
        let (query, mut headers) = if self.chain.wants_request(endpoint.name)
            || wants_response
            || wants_audit
        {
            let json = match &buffered {
                Some(bytes) => Some(self.decode_json(endpoint.name, bytes)?),
                None => None,
            };
            // Request plugins judge an existing object, and the objects the body refers to,
            // by what the engine says they are now.
            let wants_request = self.chain.wants_request(endpoint.name);
            let target = if wants_request {
                target::resolve(&self.upstream, &self.seen, &route, &query).await?
            } else {
                None
            };
            let mut c = Canonical::new(
                id,
                &parts.method,
                &route,
                query,
                parts.headers,
                json,
                caller,
            );
            c.set_target(target);
            let mut tags = Vec::new();
            let query_judged = c.query();
            if wants_request && endpoint.name == "image.load" {
                if let Some(s) = stream.take() {
                    let l = &self.config.limits;
                    archive = Some(spool::spool(s, &l.spool_dir, l.max_load_bytes).await?);
                }
            }
            let archive_tags = archive.as_ref().map_or(&[][..], |a| a.tags.as_slice());
            let source = c.view().target.as_ref().map(|t| t.id.clone());
            let source = source.as_deref();
            if wants_request {
                tags = self
                    .tags(&route, &query_judged, archive_tags, source)
                    .await?;
                let mut related =
                    target::resolve_related(&self.upstream, &route, c.body(), &[]).await?;
                related.extend(tags.iter().cloned());
                c.set_related(related);
            }
            if wants_audit {
                // Audit hooks shape the records of refused requests too (redaction).
                draft.keep_view(c.view());
            }
            self.chain
                .mutate(id, &mut c, draft.trace(), &mut held)
                .await?;
            if wants_request {
                // Validating plugins judge the body and query mutating plugins left,
                // references included.
                let mut related =
                    target::resolve_related(&self.upstream, &route, c.body(), &c.view().related)
                        .await?;
                let query = c.query();
                if query != query_judged {
                    tags = self.tags(&route, &query, archive_tags, source).await?;
                }
                related.extend(tags);
                c.set_related(related);
            }
            self.chain
                .validate(id, &c, draft.trace(), &mut held)
                .await?;
            if let Some(owners) = &self.owners {
                // New repositories become the caller's before the request that makes them
                // is forwarded.
                tags::claim(owners, endpoint.name, &c.view().related, &caller.user).await?;
            }
            buffered = c.body_bytes();
            if wants_audit {
                draft.keep_view(c.view());
            }
            // The engine acts on the object the plugins judged, by its id.
            if let Some(path) = c
                .view()
                .target
                .as_ref()
                .and_then(|t| target::pinned_path(&route, t))
            {
                route.path = path;
            }
            let forwarded = (c.query(), headers::forwardable(&c.headers));
            canonical = Some(c);
            forwarded
        } else {
            (query, headers::forwardable(&parts.headers))
        };

        draft.request(&query, buffered.as_ref());
        let body = match (archive, stream.take(), buffered) {
            // The archive the plugins judged, from the gateway's file.
            (Some(a), _, _) => a.into_body(),
            (None, Some(s), _) => {
                Body::stream(s).idle_limit(self.config.limits.stream_idle_timeout)
            }
            (None, None, Some(b)) => Body::full(b),
            (None, None, None) => Body::empty(),
        };
        if wants_upgrade {
            // Forward the protocol the client asked for (`tcp` for attach/exec, `h2c` for
            // BuildKit's session), on a connection upgraded only if the engine agrees.
            if let Some(proto) = upgrade_protocol {
                headers.insert(header::UPGRADE, proto);
            }
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        } else if legacy_hijack {
            headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            // The engine-style answer replaces hyper's head on the client connection: wait
            // until nothing of an earlier response is still on its way out.
            if let Some(h) = &handover {
                h.settle(self.config.limits.header_read_timeout)
                    .await
                    .map_err(|_| PipelineError::ClientNotReading)?;
            }
        }
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = upstream_uri(&route, canonical::encode_query(&query).as_deref())?;
        *upstream_req.headers_mut() = headers;

        let sent = Instant::now();
        let mut resp = self.upstream.send(upstream_req).await?;
        draft.engine_answered(sent.elapsed());

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(handover), true) = (handover, wants_upgrade || legacy_hijack) else {
                // The engine switched protocols on a request that never asked to (or on a
                // connection that cannot be handed over): nothing sane can be relayed.
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
            let (parts, _) = resp.into_parts();
            if legacy_hijack {
                let head = tunnel::legacy_head(&parts.headers);
                handover.put(
                    engine_upgrade,
                    permit,
                    slot.take(),
                    Some(head),
                    self.config.limits.stream_idle_timeout,
                );
                // hyper writes (and the connection swallows) this; the client gets `head`.
                let mut resp = Response::new(Body::empty());
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Ok((endpoint.name, resp));
            }
            handover.put(
                engine_upgrade,
                permit,
                slot.take(),
                None,
                self.config.limits.stream_idle_timeout,
            );
            return Ok((endpoint.name, Response::from_parts(parts, Body::empty())));
        }

        let (mut parts, incoming) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let (Some(c), true) = (
            &canonical,
            wants_response && !endpoint.streaming && is_json(&parts.headers),
        ) {
            let resp = Response::from_parts(parts, incoming);
            let resp = self
                .filter_response(id, c.view(), resp, endpoint.name, draft.trace(), held)
                .await?;
            return Ok((endpoint.name, resp));
        }
        let body = Body::stream(incoming).idle_limit(self.config.limits.stream_idle_timeout);
        if let (Some(c), true) = (
            canonical,
            endpoint.name == "system.events" && wants_response && parts.status.is_success(),
        ) {
            // Judged event by event: the head goes now, each event when it is judged.
            parts.headers.remove(header::CONTENT_LENGTH);
            let judge = events::EventJudge {
                chain: self.chain.clone(),
                upstream: self.upstream.clone(),
                seen: self.seen.clone(),
                headers: canonical::visible_headers(&parts.headers),
                route,
                id,
                request: c.into_view(),
            };
            return Ok((
                endpoint.name,
                Response::from_parts(parts, judge.start(body)),
            ));
        }
        Ok((endpoint.name, Response::from_parts(parts, body)))
    }

    /// Reads a JSON response whole (within the body bound) and runs the response plugins.
    /// The engine's bytes are handed on as they came unless a plugin patches the body: only
    /// then is it parsed into a tree and re-serialized, so a list that every plugin lets
    /// through costs one validation pass, not a parse and a print.
    async fn filter_response(
        &self,
        id: u64,
        req: &model::Request,
        resp: Response<Incoming>,
        endpoint: &'static str,
        trace: &mut Trace,
        mut held: Held,
    ) -> Result<Response<Body>, PipelineError> {
        let (mut parts, incoming) = resp.into_parts();
        let unreadable = |reason: String| PipelineError::ResponseUnreadable { endpoint, reason };
        let limit = self.config.limits.max_body_bytes;
        let bytes = Limited::new(incoming, limit)
            .collect()
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .to_bytes();
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| unreadable(e.to_string()))?;
        let mut resp = model::Response {
            status: parts.status.as_u16(),
            headers: canonical::visible_headers(&parts.headers),
            body: Some(text),
        };
        let mut patched = false;
        let mut headers = parts.headers.clone();
        self.chain
            .on_response(id, req, &mut resp, trace, &mut held, |resp, patch| {
                if let Some(ops) = &patch.body {
                    let current = resp.body.as_deref().unwrap_or("null");
                    let mut json: serde_json::Value =
                        serde_json::from_str(current).map_err(|e| e.to_string())?;
                    canonical::apply_json_patch(&mut json, ops)?;
                    resp.body = Some(json.to_string());
                    patched = true;
                }
                for edit in &patch.headers {
                    canonical::edit_headers(&mut headers, edit)?;
                }
                resp.headers = canonical::visible_headers(&headers);
                Ok(())
            })
            .await?;
        let body = if patched {
            Bytes::from(resp.body.unwrap_or_default())
        } else {
            bytes
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        parts.headers = headers;
        Ok(Response::from_parts(parts, Body::full(body)))
    }

    /// The tags a request creates, moves, pushes or removes, with their repositories' owners.
    async fn tags(
        &self,
        route: &Route,
        query: &[(String, String)],
        archive: &[spool::LoadedTag],
        source: Option<&str>,
    ) -> Result<Vec<model::Reference>, PipelineError> {
        match &self.owners {
            Some(owners) => {
                let found = tags::resolve(&self.upstream, owners, route, query, archive, source);
                Ok(found.await?)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Decodes a JSON body as dockerd will (Go's field matching, no repeated keys) and
    /// resolves bind sources, so plugins judge what the engine acts on.
    fn decode_json(
        &self,
        endpoint: &'static str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, PipelineError> {
        let mut json = gojson::decode(endpoint, bytes).map_err(|e| PipelineError::BadJson {
            endpoint,
            reason: e.to_string(),
        })?;
        if self.config.api.resolve_bind_sources {
            binds::resolve(endpoint, &mut json)?;
        }
        Ok(json)
    }

    /// Reads and drops what is left of a refused upload (a build context, a load archive),
    /// within `limits.max_body_bytes` and `limits.header_read_timeout`. Closing the
    /// connection with the client's bytes still unread makes the kernel reset it, and the
    /// client then sees a broken pipe instead of the refusal.
    async fn drain(&self, mut body: Incoming) {
        let limit = self.config.limits.max_body_bytes;
        let read = async {
            let mut n = 0;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len());
                if n > limit {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.config.limits.header_read_timeout, read).await;
    }

    /// Reads a non-streaming body whole, within the configured bound.
    async fn read_body(&self, incoming: Incoming, route: &Route) -> Result<Bytes, PipelineError> {
        use http_body::Body as _;
        if incoming.is_end_stream() {
            return Ok(Bytes::new());
        }
        let limit = self.config.limits.max_body_bytes;
        match Limited::new(incoming, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
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

/// The size of a request head as sent: request line and `name: value\r\n` lines.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// The engine-side URI: the canonical path and the re-encoded query.
fn upstream_uri(route: &Route, query: Option<&str>) -> Result<http::Uri, PipelineError> {
    let mut pq = route.upstream_path();
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    pq.parse()
        .map_err(|_| PipelineError::Route(RouteError::BadPath("cannot re-encode path".into())))
}
