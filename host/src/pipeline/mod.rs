//! One request's trip through the gateway, as phases over one request context
//! ([`Gateway::handle`]): **admit** (the endpoint, the bounds of the head), **read** (the body
//! within its bound), **enrich** (the objects the request acts on, as the engine knows them),
//! **decide** (the plugin chain), **send** (exactly what was judged, to the engine),
//! **respond** (stream, filter, or tunnel) and **log** (the audit record, built from the
//! context whatever happened). Attach and exec connections become a raw tunnel only after the
//! engine itself answered `101`. docs/architecture.md draws the journey.

mod binds;
pub(crate) mod canonical;
mod chain;
mod context;
mod events;
pub(crate) mod gojson;
mod guard;
mod headers;
mod record;
mod slots;
mod spool;
mod tags;
mod target;
pub mod tunnel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::audit::{AuditError, AuditLog};
use crate::config::Config;
use crate::error::{DockerError, IntoDockerError};
use crate::identity::Caller;
use crate::metrics::{KindLabels, Metrics, Open};
use crate::model;
use crate::owners::Owners;
use crate::route::{self, BodyKind, Route, RouteError};
use crate::upstream::{Upstream, UpstreamError};
use canonical::Canonical;
use context::{Context, Failure, Judged, Upgrade};

pub use crate::body::Body;
pub use canonical::{apply_json_patch, CREDENTIAL_HEADERS};
pub use chain::{Chain, ChainError, Held, Patchable, Trace};
pub use spool::SpoolError;
pub use tags::{claim as claim_tags, resolve as resolve_tags, ImageRef, TagError};
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
    #[error("{endpoint}: BuildKit is turned off on this gateway ([api] buildkit = \"deny\"); build with DOCKER_BUILDKIT=0")]
    BuildkitDisabled { endpoint: &'static str },
    #[error("form-encoded request bodies are not accepted (the engine would read their fields ahead of the query string)")]
    FormBody,
    #[error("request framing is ambiguous (Content-Length with Transfer-Encoding, or a transfer coding other than chunked)")]
    AmbiguousFraming,
    #[error(transparent)]
    Bind(#[from] binds::BindError),
    #[error(transparent)]
    Builds(#[from] crate::owners::BuildsError),
    #[error("a BuildKit session needs its X-Docker-Expose-Session-Uuid header")]
    NoSessionId,
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
            PipelineError::Route(RouteError::UnknownEndpoint { .. } | RouteError::Libpod(_)) => {
                StatusCode::FORBIDDEN
            }
            PipelineError::Route(_) => StatusCode::BAD_REQUEST,
            PipelineError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PipelineError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            PipelineError::BuildkitDisabled { .. } => StatusCode::FORBIDDEN,
            PipelineError::Builds(crate::owners::BuildsError::TooManySessions { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PipelineError::Builds(_) => StatusCode::FORBIDDEN,
            PipelineError::NoSessionId => StatusCode::BAD_REQUEST,
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

/// What a reload replaces as a whole: the plugin chain and the `[api]` settings. A request
/// takes the policy in force when it arrives and keeps it to its end (streams and tunnels
/// included), so a reload never changes the rules in the middle of a request.
pub struct Policy {
    pub chain: Arc<Chain>,
    pub api: crate::config::ApiConfig,
    /// 1 at start, one more per successful reload.
    pub generation: u64,
}

/// The shared state of the request pipeline.
pub struct Gateway {
    config: Arc<Config>,
    upstream: Upstream,
    policy: ArcSwap<Policy>,
    metrics: Arc<Metrics>,
    tunnels: Arc<Semaphore>,
    slots: Arc<slots::CallerSlots>,
    next_id: AtomicU64,
    audit: Option<Arc<AuditLog>>,
    /// Objects looked up lately, for judging the events of destroyed ones.
    seen: Arc<target::Seen>,
    /// Who owns each image repository; without it plugins get no `tag` references.
    owners: Option<Arc<Owners>>,
    /// Who opened each BuildKit session and started each build.
    builds: Arc<crate::owners::Builds>,
}

impl Gateway {
    /// A gateway forwarding to `upstream` through `chain` (policy generation 1).
    pub fn new(config: Arc<Config>, upstream: Upstream, chain: Chain) -> Self {
        let tunnels = Arc::new(Semaphore::new(config.limits.max_connections));
        let slots = slots::CallerSlots::new(config.limits.max_requests_per_caller);
        let policy = Policy {
            chain: Arc::new(chain),
            api: config.api.clone(),
            generation: 1,
        };
        Self {
            config,
            upstream,
            policy: ArcSwap::from_pointee(policy),
            metrics: Arc::new(Metrics::new()),
            tunnels,
            slots,
            next_id: AtomicU64::new(1),
            audit: None,
            seen: Arc::new(target::Seen::default()),
            owners: None,
            builds: Arc::default(),
        }
    }

    /// Keeps the owners of image repositories in `owners`, and hands plugins the tags each
    /// request names.
    pub fn with_owners(mut self, owners: Arc<Owners>) -> Self {
        self.owners = Some(owners);
        self
    }

    /// Records requests, latencies, streams and tunnels in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics it records in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The policy new requests are judged by.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Makes `policy` the one new requests are judged by; requests already on their way
    /// finish with the one they started with.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// The engine this gateway forwards to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The configuration it serves with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The record of image repositories' owners, when there is one.
    pub fn owners(&self) -> Option<&Arc<Owners>> {
        self.owners.as_ref()
    }

    /// The record of BuildKit sessions and builds.
    pub fn builds(&self) -> &Arc<crate::owners::Builds> {
        &self.builds
    }

    /// A new request id (for calls inside a mediated tunnel, each its own record).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The audit trail, when there is one.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Sets the gauges that are read off the gateway's own bounds rather than counted.
    pub fn refresh_gauges(&self) {
        let open = self.config.limits.max_connections - self.tunnels.available_permits();
        self.metrics.request.tunnels.set(open as i64);
        if let Some(audit) = &self.audit {
            audit.queued();
        }
    }

    /// Records every request in `audit` (none: no audit trail).
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// Handles one request; never fails: every error becomes a Docker-style response.
    ///
    /// The trip is a list of phases over one [`Context`]: **admit** (the caller's slot, the
    /// head's bound, the route, the API guard), **read** (the body, within its bound),
    /// **enrich** (the objects the request acts on, as the engine knows them), **decide**
    /// (mutating, then validating plugins), **send** (exactly what was judged, to the
    /// engine), **respond** (stream, filter, or hand the connection over) and, whatever
    /// happened, **log** (the audit record, built from the context).
    pub async fn handle(&self, req: Request<Incoming>, caller: Arc<Caller>) -> Response<Body> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("request", id);
        self.handle_as(id, req, caller).instrument(span).await
    }

    /// [`Gateway::handle`] inside the request's log span.
    async fn handle_as(
        &self,
        id: u64,
        req: Request<Incoming>,
        caller: Arc<Caller>,
    ) -> Response<Body> {
        let recording = self.audit.is_some();
        let policy = self.policy.load_full();
        let mut ctx = Context::new(id, &req, caller, policy, recording, Instant::now());
        // Taken before any work is done for the request, held until its answer (or
        // tunnel) is finished.
        let mut slot = self.slots.take(&ctx.caller.user);
        let method = req.method().clone();
        let resp = match self.trip(req, &mut ctx, &mut slot).await {
            Ok(resp) => {
                debug!(%method, endpoint = ctx.endpoint(), user = %ctx.caller.user,
                       status = resp.status().as_u16(),
                       micros = ctx.started.elapsed().as_micros() as u64, "forwarded");
                resp
            }
            Err(e) => self.refuse(e, &method, &mut ctx).await,
        };
        self.measure(&ctx, &resp);
        let streaming =
            ctx.route.as_ref().is_some_and(|r| r.endpoint.streaming) && resp.status().is_success();
        self.log(ctx, &resp).await;
        let open = streaming.then(|| Open::new(&self.metrics.request.streams));
        resp.map(|body| body.holding(slot).holding(open))
    }

    /// The request's counts and latencies.
    fn measure(&self, ctx: &Context, resp: &Response<Body>) {
        let decision = match &ctx.failure {
            None => "allow",
            Some(f) if f.denied => "deny",
            Some(_) => "error",
        };
        self.metrics.request.record(
            ctx.endpoint(),
            decision,
            resp.status().as_u16(),
            ctx.started.elapsed(),
            ctx.engine_time,
        );
    }

    /// The phases up to the answer, in order; the first failure ends the trip.
    async fn trip(
        &self,
        req: Request<Incoming>,
        ctx: &mut Context,
        slot: &mut Option<slots::CallerSlot>,
    ) -> Result<Response<Body>, PipelineError> {
        self.admit(req, ctx, slot.is_some())?;
        self.read(ctx).await?;
        self.enrich(ctx).await?;
        self.decide(ctx).await?;
        self.commit(ctx).await?;
        let resp = self.send(ctx).await?;
        self.respond(resp, ctx, slot).await
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
        if self.audit.is_some() {
            let nobody = Caller {
                user: crate::audit::record::UNIDENTIFIED.into(),
                groups: Vec::new(),
                auth: crate::identity::AuthMethod::None,
                peer: peer.clone(),
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let policy = self.policy.load_full();
            let mut ctx = Context::new(id, req, Arc::new(nobody), policy, true, Instant::now());
            if let Some(a) = &mut ctx.arrival {
                a.unidentified = Some(why.to_string());
            }
            ctx.route = route::classify(req.method(), req.uri().path()).ok();
            ctx.failure = Some(Failure {
                denied: true,
                message: sent.message,
            });
            self.log(ctx, &resp).await;
        }
        resp
    }

    /// Records a request the listener refused before it was one (malformed HTTP, a head
    /// too large), answered with `status` and `message`; `caller` as the connection names
    /// it (none: an unidentified peer).
    pub async fn malformed(
        &self,
        caller: Option<Arc<Caller>>,
        peer: &crate::identity::Peer,
        status: http::StatusCode,
        message: String,
    ) {
        let Some(audit) = &self.audit else { return };
        let caller = caller.unwrap_or_else(|| {
            Arc::new(Caller {
                user: crate::audit::record::UNIDENTIFIED.into(),
                groups: Vec::new(),
                auth: crate::identity::AuthMethod::None,
                peer: peer.clone(),
            })
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let record = record::malformed(id, &caller, status.as_u16(), message);
        audit.append(record).await;
    }

    /// **admit**: whether this request may be worked on at all, and what it is.
    fn admit(
        &self,
        req: Request<Incoming>,
        ctx: &mut Context,
        has_slot: bool,
    ) -> Result<(), PipelineError> {
        self.admit_head(&req, ctx, has_slot)?;
        let (mut head, incoming) = req.into_parts();
        ctx.handover = head.extensions.remove::<Arc<tunnel::Handover>>();
        ctx.head = Some(head);
        ctx.incoming = Some(incoming);
        Ok(())
    }

    /// What `admit` decides from the request's head alone.
    fn admit_head<B>(
        &self,
        req: &Request<B>,
        ctx: &mut Context,
        has_slot: bool,
    ) -> Result<(), PipelineError> {
        if let Some(e) = self.audit.as_ref().and_then(|a| a.refusal()) {
            return Err(PipelineError::Audit(e));
        }
        if !has_slot {
            return Err(PipelineError::TooManyRequests {
                user: ctx.caller.user.clone(),
                limit: self.slots.limit(),
            });
        }
        // hyper's read buffer bound is soft (a head that arrives in one large read can pass
        // it), so the configured bound is enforced exactly here, before anything is forwarded.
        let limit = self.config.limits.max_header_bytes;
        if head_size(req) > limit {
            return Err(PipelineError::HeadTooLarge { limit });
        }
        let policy = ctx.policy.clone();
        let api = &policy.api;
        let route = if api.pass_unknown_endpoints {
            route::classify_or_unknown(req.method(), req.uri().path())?
        } else {
            route::classify(req.method(), req.uri().path())?
        };
        let endpoint = route.endpoint;
        // Classified before it is checked: a refusal is recorded under its endpoint.
        let checked = guard::check(api, &route, req.headers());
        ctx.route = Some(route);
        checked?;
        ctx.session =
            tunnel::claim_session(api, ctx.route(), req.headers(), &self.builds, &ctx.caller)?;

        let wants_upgrade = headers::wants_upgrade(req.headers());
        if wants_upgrade && !endpoint.hijack {
            return Err(PipelineError::UpgradeRefused {
                endpoint: endpoint.name,
            });
        }
        ctx.upgrade = if wants_upgrade {
            Upgrade::Asked(req.headers().get(header::UPGRADE).cloned())
        } else if tunnel::legacy_hijackable(endpoint.name) {
            Upgrade::Legacy
        } else {
            Upgrade::No
        };
        Ok(())
    }

    /// **read**: streamed uploads stay streams, everything else is read whole within the
    /// bound, so plugins and the engine get the same bytes.
    async fn read(&self, ctx: &mut Context) -> Result<(), PipelineError> {
        let endpoint = ctx.route().endpoint;
        let Some(incoming) = ctx.incoming.take() else {
            return Ok(());
        };
        match endpoint.body {
            BodyKind::Stream => ctx.stream = Some(incoming),
            BodyKind::Json | BodyKind::None => {
                let bytes = self.read_body(incoming, endpoint.name).await?;
                if bytes.is_empty() {
                } else if endpoint.body == BodyKind::None {
                    return Err(PipelineError::UnexpectedBody {
                        endpoint: endpoint.name,
                    });
                } else {
                    ctx.body = Some(bytes);
                }
            }
        }
        ctx.query = canonical::parse_query(ctx.head.as_ref().and_then(|h| h.uri.query()));
        Ok(())
    }

    /// **enrich**: when any plugin looks at this endpoint, the request as plugins see it:
    /// the body decoded as dockerd decodes it, the object it acts on and the objects it
    /// refers to (images, tags, their owners) as the engine and the gateway know them now.
    async fn enrich(&self, ctx: &mut Context) -> Result<(), PipelineError> {
        let endpoint = ctx.route().endpoint;
        let chain = &ctx.policy.chain;
        let request_hooks = chain.wants_request(endpoint.name);
        let response_hooks = chain.wants_response(endpoint.name);
        let record_hooks = ctx.recording() && chain.wants_audit(endpoint.name);
        if !(request_hooks || response_hooks || record_hooks) {
            return Ok(());
        }
        if response_hooks && !endpoint.streaming {
            ctx.held = Held::keeping();
        }
        let json = match &ctx.body {
            Some(bytes) => Some(decode_json(&ctx.policy.api, endpoint.name, bytes)?),
            None => None,
        };
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        let target = if request_hooks {
            target::resolve(&self.upstream, &self.seen, route, &ctx.query).await?
        } else {
            None
        };
        let Some(head) = ctx.head.as_mut() else {
            return Ok(());
        };
        let headers = std::mem::take(&mut head.headers);
        let mut c = Canonical::new(
            ctx.id,
            &head.method,
            route,
            ctx.query.clone(),
            headers,
            json,
            &ctx.caller,
        );
        c.set_target(target);
        let tags_query = c.query();
        if request_hooks && endpoint.name == "image.load" {
            if let Some(s) = ctx.stream.take() {
                let l = &self.config.limits;
                ctx.archive = Some(spool::spool(s, &l.spool_dir, l.max_load_bytes).await?);
            }
        }
        let source = c.view().target.as_ref().map(|t| t.id.clone());
        let mut tags = Vec::new();
        if request_hooks {
            let archive = ctx.archive.as_ref().map_or(&[][..], |a| a.tags.as_slice());
            tags = self
                .tags(route, &tags_query, archive, source.as_deref())
                .await?;
            let mut related = target::resolve_related(&self.upstream, route, c.body(), &[]).await?;
            related.extend(tags.iter().cloned());
            c.set_related(related);
        }
        if record_hooks {
            // Audit hooks shape the records of refused requests too (redaction).
            ctx.view = Some(c.view().clone());
        }
        ctx.judged = Some(Judged {
            canonical: c,
            request_hooks,
            record_hooks,
            tags_query,
            tags,
            source,
        });
        Ok(())
    }

    /// **decide**: mutating plugins in order, then every validating plugin on what they
    /// left; new repositories become the caller's; the engine will act on the judged object.
    async fn decide(&self, ctx: &mut Context) -> Result<(), PipelineError> {
        let Some(mut j) = ctx.judged.take() else {
            return Ok(());
        };
        let Some(route) = ctx.route.as_mut() else {
            return Ok(());
        };
        let (id, trace, held) = (ctx.id, &mut ctx.trace, &mut ctx.held);
        let chain = &ctx.policy.chain;
        chain.mutate(id, &mut j.canonical, trace, held).await?;
        let c = &mut j.canonical;
        if j.request_hooks {
            // Validating plugins judge the body and query mutating plugins left,
            // references included.
            let mut related =
                target::resolve_related(&self.upstream, route, c.body(), &c.view().related).await?;
            let query = c.query();
            if query != j.tags_query {
                let archive = ctx.archive.as_ref().map_or(&[][..], |a| a.tags.as_slice());
                j.tags = self
                    .tags(route, &query, archive, j.source.as_deref())
                    .await?;
            }
            related.append(&mut j.tags);
            c.set_related(related);
        }
        chain.validate(id, &*c, trace, held).await?;
        if let Some(owners) = &self.owners {
            // New repositories become the caller's before the request that makes them
            // is forwarded.
            let endpoint = route.endpoint.name;
            tags::claim(owners, endpoint, &c.view().related, &ctx.caller.user).await?;
        }
        ctx.body = c.body_bytes();
        ctx.query = c.query();
        if j.record_hooks {
            ctx.view = Some(c.view().clone());
        }
        // The engine acts on the object the plugins judged, by its id.
        if let Some(path) = c
            .view()
            .target
            .as_ref()
            .and_then(|t| target::pinned_path(route, t))
        {
            route.path = path;
        }
        ctx.judged = Some(j);
        Ok(())
    }

    /// **commit**: a request the engine may act on is on the record before the engine sees
    /// it: its decision record is committed (with `sync`, on disk) or the request is refused
    /// with 503 and never forwarded. Reads keep the one record written at their answer.
    async fn commit(&self, ctx: &mut Context) -> Result<(), PipelineError> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        if !ctx.acts() {
            return Ok(());
        }
        let Some(record) = record::decision(ctx) else {
            return Ok(());
        };
        let seq = audit
            .decide(ctx.policy.chain.as_ref(), record, ctx.view.as_ref())
            .await?;
        ctx.decided = seq.map(|seq| (seq, ctx.trace.notes.len()));
        Ok(())
    }

    /// **send**: exactly what was judged (the canonical body, the re-encoded query, the
    /// judged archive) goes to the engine, upgraded only if the client asked.
    async fn send(&self, ctx: &mut Context) -> Result<Response<Incoming>, PipelineError> {
        let Some(head) = ctx.head.as_ref() else {
            return Err(PipelineError::BodyRead("request head missing".into()));
        };
        let mut headers = match &ctx.judged {
            Some(j) => headers::forwardable(&j.canonical.headers),
            None => headers::forwardable(&head.headers),
        };
        let body = match (ctx.archive.take(), ctx.stream.take(), &ctx.body) {
            // The archive the plugins judged, from the gateway's file.
            (Some(a), _, _) => a.into_body(),
            (None, Some(s), _) => {
                Body::stream(s).idle_limit(self.config.limits.stream_idle_timeout)
            }
            (None, None, Some(b)) => Body::full(b.clone()),
            (None, None, None) => Body::empty(),
        };
        match &ctx.upgrade {
            // Forward the protocol the client asked for (`tcp` for attach/exec, `h2c` for
            // BuildKit's session), on a connection upgraded only if the engine agrees.
            Upgrade::Asked(proto) => {
                if let Some(proto) = proto {
                    headers.insert(header::UPGRADE, proto.clone());
                }
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
            Upgrade::Legacy => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                // The engine-style answer replaces hyper's head on the client connection:
                // wait until nothing of an earlier response is still on its way out.
                if let Some(h) = &ctx.handover {
                    h.settle(self.config.limits.header_read_timeout)
                        .await
                        .map_err(|_| PipelineError::ClientNotReading)?;
                }
            }
            Upgrade::No => {}
        }
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = head.method.clone();
        *upstream_req.uri_mut() =
            upstream_uri(ctx.route(), canonical::encode_query(&ctx.query).as_deref())?;
        *upstream_req.headers_mut() = headers;

        let sent = Instant::now();
        let resp = self.upstream.send(upstream_req).await?;
        ctx.engine_time = Some(sent.elapsed());
        Ok(resp)
    }

    /// **respond**: a switched protocol becomes a tunnel, a JSON answer that response
    /// plugins read is filtered, events are judged one by one, the rest streams through.
    async fn respond(
        &self,
        mut resp: Response<Incoming>,
        ctx: &mut Context,
        slot: &mut Option<slots::CallerSlot>,
    ) -> Result<Response<Body>, PipelineError> {
        let endpoint = ctx.route().endpoint;
        let idle = self.config.limits.stream_idle_timeout;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(handover), false) = (ctx.handover.take(), matches!(ctx.upgrade, Upgrade::No))
            else {
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
            if matches!(ctx.upgrade, Upgrade::Legacy) {
                let head = tunnel::legacy_head(&parts.headers);
                handover.put(engine_upgrade, permit, slot.take(), Some(head), idle, None);
                // hyper writes (and the connection swallows) this; the client gets `head`.
                let mut resp = Response::new(Body::empty());
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Ok(resp);
            }
            let mediation = tunnel::mediation(ctx);
            handover.put(engine_upgrade, permit, slot.take(), None, idle, mediation);
            return Ok(Response::from_parts(parts, Body::empty()));
        }

        let (mut parts, incoming) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let response_hooks = ctx.judged.is_some() && ctx.policy.chain.wants_response(endpoint.name);
        if response_hooks && !endpoint.streaming && is_json(&parts.headers) {
            let resp = Response::from_parts(parts, incoming);
            return self.filter_response(resp, ctx).await;
        }
        let body = Body::stream(incoming).idle_limit(idle);
        if response_hooks && endpoint.name == "system.events" && parts.status.is_success() {
            if let Some(j) = ctx.judged.take() {
                // Judged event by event: the head goes now, each event when it is judged.
                parts.headers.remove(header::CONTENT_LENGTH);
                let judge = events::EventJudge {
                    chain: ctx.policy.chain.clone(),
                    upstream: self.upstream.clone(),
                    seen: self.seen.clone(),
                    headers: canonical::visible_headers(&parts.headers),
                    route: ctx.route().clone(),
                    id: ctx.id,
                    request: j.canonical.into_view(),
                };
                return Ok(Response::from_parts(parts, judge.start(body)));
            }
        }
        Ok(Response::from_parts(parts, body))
    }

    /// A refused or failed trip's answer: logged, kept for the record, and sent once what is
    /// left of a streamed upload has been read.
    async fn refuse(
        &self,
        e: PipelineError,
        method: &http::Method,
        ctx: &mut Context,
    ) -> Response<Body> {
        let err = e.to_docker_error();
        let user = &ctx.caller.user;
        if err.status.is_server_error() {
            warn!(%method, %user, error = %e, "request failed");
        } else {
            info!(%method, %user, error = %e, "request refused");
        }
        let engine_error = match &e {
            PipelineError::Upstream(UpstreamError::Unreachable { .. }) => Some("unreachable"),
            PipelineError::Upstream(UpstreamError::Tls(_)) => Some("tls"),
            PipelineError::ResponseUnreadable { .. } => Some("unreadable"),
            _ => None,
        };
        if let Some(kind) = engine_error {
            let errors = &self.metrics.request.engine_errors;
            errors.get_or_create(&KindLabels { kind }).inc();
        }
        ctx.failure = Some(Failure {
            denied: matches!(
                e,
                PipelineError::Chain(ChainError::Denied { .. })
                    | PipelineError::BuildkitDisabled { .. }
                    | PipelineError::Builds(crate::owners::BuildsError::SessionTaken { .. })
                    | PipelineError::Route(
                        RouteError::UnknownEndpoint { .. } | RouteError::Libpod(_)
                    )
            ),
            message: err.message.clone(),
        });
        if let Some(body) = ctx.stream.take() {
            self.drain(body).await;
        }
        // A body left unread (refused before it was read, or cut short on its way to the
        // engine) ends the connection: the client is told, so that it does not send its next
        // request on a connection about to close.
        let unread = ctx
            .incoming
            .as_ref()
            .is_some_and(|b| !http_body::Body::is_end_stream(b))
            || matches!(
                e,
                PipelineError::BodyTooLarge { .. } | PipelineError::BodyRead(_)
            )
            || (matches!(e, PipelineError::Upstream(_))
                && ctx
                    .route
                    .as_ref()
                    .is_some_and(|r| r.endpoint.body == BodyKind::Stream));
        let mut resp = err.into_response();
        if unread {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// **log**: the request's record, built from its context, shaped by the audit hooks and
    /// written. With `sync` durability this returns only once the record is on disk;
    /// otherwise audit plugins shape it after the response is released.
    async fn log(&self, ctx: Context, resp: &Response<Body>) {
        let Some(audit) = &self.audit else { return };
        let chain = ctx.policy.chain.clone();
        if let Some((record, view)) = record::build(ctx, resp) {
            audit.finish(&chain, record, view).await;
        }
    }

    /// Reads a JSON response whole (within the body bound) and runs the response plugins.
    /// The engine's bytes are handed on as they came unless a plugin patches the body: only
    /// then is it parsed into a tree and re-serialized, so a list that every plugin lets
    /// through costs one validation pass, not a parse and a print.
    async fn filter_response(
        &self,
        resp: Response<Incoming>,
        ctx: &mut Context,
    ) -> Result<Response<Body>, PipelineError> {
        let endpoint = ctx.route().endpoint.name;
        let Some(j) = &ctx.judged else {
            return Err(PipelineError::ResponseUnreadable {
                endpoint,
                reason: "the request was not judged".into(),
            });
        };
        let req = j.canonical.view();
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
        let (trace, held) = (&mut ctx.trace, &mut ctx.held);
        ctx.policy
            .chain
            .on_response(ctx.id, req, &mut resp, trace, held, |resp, patch| {
                if let Some(ops) = &patch.body {
                    resp.body = Some(canonical::patch_text(resp.body.as_deref(), ops)?);
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
    async fn read_body(
        &self,
        incoming: Incoming,
        endpoint: &'static str,
    ) -> Result<Bytes, PipelineError> {
        use http_body::Body as _;
        if incoming.is_end_stream() {
            return Ok(Bytes::new());
        }
        let limit = self.config.limits.max_body_bytes;
        match Limited::new(incoming, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(PipelineError::BodyTooLarge { endpoint, limit })
            }
            Err(e) => Err(PipelineError::BodyRead(e.to_string())),
        }
    }
}

/// Decodes a JSON body as dockerd will (Go's field matching, no repeated keys, service mount
/// types) and resolves bind sources, so plugins judge what the engine acts on.
fn decode_json(
    api: &crate::config::ApiConfig,
    endpoint: &'static str,
    bytes: &[u8],
) -> Result<serde_json::Value, PipelineError> {
    let mut json = gojson::decode(endpoint, bytes).map_err(|e| PipelineError::BadJson {
        endpoint,
        reason: e.to_string(),
    })?;
    binds::service_mount_types(endpoint, &mut json);
    if api.resolve_bind_sources {
        binds::resolve(endpoint, &mut json)?;
    }
    Ok(json)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;
    use crate::identity::{AuthMethod, Peer};

    fn gateway(toml: &str) -> Gateway {
        let config = Config::parse(toml, std::path::Path::new("/tmp/portcullis.toml")).unwrap();
        // Nothing here is sent: the engine is never dialled.
        let upstream = Upstream::new(&config.engine).unwrap();
        Gateway::new(Arc::new(config), upstream, Chain::default())
    }

    fn context<B>(req: &Request<B>, recording: bool) -> Context {
        let caller = Caller {
            user: "alice".into(),
            groups: vec!["dev".into()],
            auth: AuthMethod::PeerCredentials,
            peer: Peer::Tcp {
                addr: "127.0.0.1:5555".parse().unwrap(),
            },
        };
        let policy = gateway("").policy();
        Context::new(7, req, Arc::new(caller), policy, recording, Instant::now())
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn admit_classifies_and_reads_the_upgrade_asked_for() {
        let g = gateway("");
        let req = request(
            "POST",
            "/v1.41/containers/abc/attach?stream=1",
            &[("upgrade", "tcp"), ("connection", "Upgrade")],
        );
        let mut ctx = context(&req, false);
        g.admit_head(&req, &mut ctx, true).unwrap();
        assert_eq!(ctx.endpoint(), "container.attach");
        assert!(matches!(&ctx.upgrade, Upgrade::Asked(Some(p)) if p == "tcp"));

        // dockerd hijacks attach without `Upgrade` too.
        let req = request("POST", "/v1.41/containers/abc/attach", &[]);
        let mut ctx = context(&req, false);
        g.admit_head(&req, &mut ctx, true).unwrap();
        assert!(matches!(ctx.upgrade, Upgrade::Legacy));

        let req = request(
            "GET",
            "/containers/json",
            &[("upgrade", "tcp"), ("connection", "Upgrade")],
        );
        let mut ctx = context(&req, false);
        let e = g.admit_head(&req, &mut ctx, true).unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::UpgradeRefused {
                    endpoint: "container.list"
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn admit_refuses_before_any_work_is_done() {
        let g = gateway("[limits]\nmax_header_bytes = 8192\n");
        let req = request("GET", "/containers/json", &[]);
        let mut ctx = context(&req, false);
        let e = g.admit_head(&req, &mut ctx, false).unwrap_err();
        assert!(matches!(e, PipelineError::TooManyRequests { .. }), "{e}");
        assert!(ctx.route.is_none());

        let long = "x".repeat(9000);
        let req = request("GET", "/containers/json", &[("x-long", &long)]);
        let e = g
            .admit_head(&req, &mut context(&req, false), true)
            .unwrap_err();
        assert!(
            matches!(e, PipelineError::HeadTooLarge { limit: 8192 }),
            "{e}"
        );

        let req = request("POST", "/v1.41/no/such/thing", &[]);
        let mut ctx = context(&req, false);
        let e = g.admit_head(&req, &mut ctx, true).unwrap_err();
        assert_eq!(e.to_docker_error().status, StatusCode::FORBIDDEN, "{e}");
        assert_eq!(ctx.endpoint(), "unknown");
    }

    #[tokio::test]
    async fn the_record_is_built_from_the_context() {
        let g = gateway("");
        let req = request(
            "POST",
            "/v1.41/containers/create?name=web",
            &[("content-length", "99")],
        );
        let mut ctx = context(&req, true);
        g.admit_head(&req, &mut ctx, true).unwrap();
        ctx.query = canonical::parse_query(req.uri().query());
        let body = br#"{"image":"busybox","HostConfig":{"Privileged":true,"Memory":5}}"#;
        ctx.body = Some(Bytes::from_static(body));
        ctx.failure = Some(Failure {
            denied: true,
            message: "baseline: privileged".into(),
        });
        let sent = DockerError::new(StatusCode::FORBIDDEN, "baseline: privileged");
        let (r, view) = record::build(ctx, &sent.into_response()).unwrap();
        assert!(view.is_none());
        assert_eq!(r.request_id, 7);
        assert_eq!(r.user(), "alice");
        assert_eq!(r.endpoint, "container.create");
        assert_eq!(r.path, "/containers/create");
        assert_eq!(r.api_version.as_deref(), Some("1.41"));
        assert_eq!(r.object.as_deref(), Some("web"));
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.error.as_deref(), Some("baseline: privileged"));
        assert_eq!(r.status, 403);
        // The body read, not the announced length.
        assert_eq!(r.bytes_in, Some(body.len() as u64));
        let details = r.details.unwrap();
        assert_eq!(details["Image"], "busybox");
        assert_eq!(details["HostConfig"]["Privileged"], true);
        assert!(details["HostConfig"].get("Memory").is_none());
    }

    #[tokio::test]
    async fn an_unclassified_request_keeps_its_raw_path_cut() {
        let path = format!("/v1.41/{}", "é".repeat(700));
        let req = request("GET", &path, &[("content-length", "12")]);
        let mut ctx = context(&req, true);
        ctx.failure = Some(Failure {
            denied: false,
            message: "bad".into(),
        });
        let resp = Response::new(Body::empty());
        let (r, _) = record::build(ctx, &resp).unwrap();
        assert_eq!(r.endpoint, "unknown");
        assert!(
            r.path.len() <= 1024 && r.path.starts_with("/v1.41/é"),
            "{}",
            r.path.len()
        );
        assert_eq!(r.decision, Decision::Error);
        assert_eq!(r.bytes_in, Some(12));

        let req = request("GET", "/_ping", &[]);
        assert!(record::build(context(&req, false), &resp).is_none());
    }
}
