//! One gRPC call's trip through a mediated tunnel: find its method, read and decode the
//! request message, check the session and the build it names, run the plugin chain on its
//! JSON form, claim the tags it makes, forward the message re-encoded from what was judged,
//! and leave one audit record, whatever happened (a client that resets the stream
//! included).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use serde_json::{json, Value};

use super::methods::{self, Judged, Method, RefCall, Rule};
use super::proto::{self, FrameError};
use super::{grpc_message, solve, BuildkitError};
use crate::audit::{Decision, Record, Stage};
use crate::body::BodyError;
use crate::model;
use crate::pipeline::canonical::Canonical;
use crate::pipeline::tunnel::Mediation;
use crate::pipeline::{Gateway, Held, Patchable, Trace};
use crate::route::{BodyKind, Endpoint, Route};

/// A body sent either way through the relay.
pub type OutBody = BoxBody<Bytes, BodyError>;

/// How long a Solve waits for the session it names to be opened, and a status request for
/// the Solve of its ref: clients send them concurrently.
const WAIT: Duration = Duration::from_secs(10);
/// One mediated tunnel: who opened it, by which policy, and the connection onwards.
pub struct Tunnel {
    pub gateway: Arc<Gateway>,
    pub mediation: Arc<Mediation>,
    pub onward: hyper::client::conn::http2::SendRequest<OutBody>,
}

/// What a call leaves for its record, filled in as it travels.
struct Call {
    id: u64,
    started: Instant,
    endpoint: &'static str,
    path: String,
    object: Option<String>,
    details: Option<Value>,
    view: Option<model::Request>,
    trace: Trace,
    engine: Option<Duration>,
    bytes_in: Option<u64>,
    /// Set once the record is written; a call dropped before (a reset stream) records
    /// itself as failed.
    done: bool,
    /// The call's decision record, committed before it was forwarded: its sequence, and
    /// how many plugin answers it holds.
    decided: Option<(u64, usize)>,
    tunnel: Arc<Tunnel>,
}

impl Tunnel {
    /// Serves one call; never fails: a refusal or failure is a gRPC status.
    pub async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<OutBody> {
        let path = req.uri().path().to_owned();
        let method = match self.mediation.endpoint {
            "grpc" => methods::control(&path),
            _ => methods::session(&path),
        };
        let recording = self.gateway.audit().is_some();
        let mut call = Call {
            id: self.gateway.next_id(),
            started: Instant::now(),
            endpoint: method.map_or("build.unknown", |m| m.endpoint),
            path,
            object: None,
            details: None,
            view: None,
            trace: if recording {
                Trace::enabled()
            } else {
                Trace::default()
            },
            engine: None,
            bytes_in: None,
            done: !recording || method.is_some_and(|m| m.rule == Rule::Health),
            decided: None,
            tunnel: self.clone(),
        };
        match self.trip(req, method, &mut call).await {
            Ok(resp) => {
                call.finish(None, resp.status().as_u16()).await;
                resp
            }
            Err(e) => {
                let (code, message) = e.status();
                if e.denied() {
                    tracing::info!(id = call.id, endpoint = call.endpoint, user = %self.mediation.caller.user, error = %message, "build call refused");
                } else {
                    tracing::warn!(id = call.id, endpoint = call.endpoint, user = %self.mediation.caller.user, error = %message, "build call failed");
                }
                call.finish(Some(&e), e.http_status()).await;
                status(code, &message)
            }
        }
    }

    async fn trip(
        &self,
        req: Request<Incoming>,
        method: Option<Method>,
        call: &mut Call,
    ) -> Result<Response<OutBody>, BuildkitError> {
        let Some(method) = method else {
            if self.mediation.policy.api.pass_unknown_endpoints {
                let (parts, body) = req.into_parts();
                return self.forward(parts, stream(body), call, false).await;
            }
            return Err(BuildkitError::UnknownMethod {
                method: call.path.clone(),
            });
        };
        let (parts, body) = req.into_parts();
        let rule = method.rule;
        let message = match rule {
            Rule::Refused(why) => {
                return Err(BuildkitError::Refused {
                    method: call.path.clone(),
                    why,
                })
            }
            // The engine reading the caller's own session: passed on as it streams.
            Rule::Health | Rule::SessionService => {
                return self.forward(parts, stream(body), call, false).await
            }
            Rule::Solve => self.solve(body, call).await?,
            Rule::FrontendSolve => {
                self.own_build(&parts.headers, call).await?;
                self.frontend_solve(body, call).await?
            }
            Rule::Bridge => {
                self.own_build(&parts.headers, call).await?;
                return self.forward(parts, stream(body), call, false).await;
            }
            Rule::OwnRef(kind) => self.own_ref(kind, body, call).await?,
            Rule::History => self.history(body, call).await?,
            Rule::Judged(kind) => self.judged(kind, body, call).await?,
        };
        if rule.acts() {
            self.commit(call).await?;
        }
        let body = Full::new(message).map_err(|e| match e {}).boxed();
        self.forward(parts, body, call, rule == Rule::History).await
    }

    /// A call the engine acts on (a build, a prune, a history edit) is on the record before
    /// the engine sees it: its decision record is committed, or the call is refused.
    async fn commit(&self, call: &mut Call) -> Result<(), BuildkitError> {
        let Some(audit) = self.gateway.audit() else {
            return Ok(());
        };
        let record = call.record_so_far(Decision::Allow, None, 0);
        let seq = audit
            .decide(
                self.mediation.policy.chain.as_ref(),
                record,
                call.view.as_ref(),
            )
            .await
            .map_err(|e| BuildkitError::Audit(format!("portcullis: {e}")))?;
        call.decided = seq.map(|seq| (seq, call.trace.notes.len()));
        Ok(())
    }

    /// A Solve: judged as `build.solve`, its tags claimed and its ref recorded before it is
    /// forwarded, re-encoded from what was judged.
    async fn solve(&self, body: Incoming, call: &mut Call) -> Result<Bytes, BuildkitError> {
        let bytes = self.read(body, call).await?;
        let mut req: proto::SolveRequest =
            self.decode(&bytes, "SolveRequest", proto::SOLVE_FIELDS, call)?;
        call.object = Some(req.r#ref.clone());
        // The record of a refusal shows what was asked.
        call.details = Some(solve::recorded(&solve::view(&req)));
        for session in [&req.session, &req.source_policy_session] {
            self.check_session(session).await?;
        }
        let related = self.judge_solve(&mut req, call).await?;
        let user = &self.mediation.caller.user;
        if let Some(owners) = self.gateway.owners() {
            crate::pipeline::claim_tags(owners, "build.solve", &related, user).await?;
        }
        self.gateway.builds().start_build(&req.r#ref, user)?;
        Ok(proto::frame(&req))
    }

    /// The frontend request of a client-driven build: judged as `build.solve`, with the
    /// build's options as the client gives them to the frontend here.
    async fn frontend_solve(
        &self,
        body: Incoming,
        call: &mut Call,
    ) -> Result<Bytes, BuildkitError> {
        let bytes = self.read(body, call).await?;
        let mut req: proto::GatewaySolveRequest = self.decode(
            &bytes,
            "LLBBridge.SolveRequest",
            proto::GATEWAY_SOLVE_FIELDS,
            call,
        )?;
        // Judged in the shape of a Solve: the options are its frontend attributes; exports,
        // entitlements and the session were judged with the build's own Solve.
        let mut as_solve = proto::SolveRequest {
            r#ref: call.object.clone().unwrap_or_default(),
            definition: req.definition.clone(),
            frontend: req.frontend.clone(),
            frontend_attrs: std::mem::take(&mut req.frontend_opt),
            frontend_inputs: std::mem::take(&mut req.frontend_inputs),
            ..Default::default()
        };
        self.judge_solve(&mut as_solve, call).await?;
        req.frontend_opt = as_solve.frontend_attrs;
        req.frontend_inputs = as_solve.frontend_inputs;
        Ok(proto::frame(&req))
    }

    /// Runs the plugin chain on a Solve's JSON form (the sessions its named contexts read
    /// checked first), takes back what mutating plugins changed, and judges the result;
    /// the tag references validating plugins saw.
    async fn judge_solve(
        &self,
        req: &mut proto::SolveRequest,
        call: &mut Call,
    ) -> Result<Vec<model::Reference>, BuildkitError> {
        let view = solve::view(req);
        call.details = Some(solve::recorded(&view));
        for session in self.input_sessions(req.frontend_inputs.values(), call)? {
            self.check_session(&session).await?;
        }
        let tags = self.tags(&view).await?;
        let mut c = self.canonical(call, Some(view), tags);
        let chain = &self.mediation.policy.chain;
        let mut held = Held::default();
        chain
            .mutate(call.id, &mut c, &mut call.trace, &mut held)
            .await?;
        if let Some(patched) = c.body() {
            solve::apply(req, patched)?;
        }
        let view = solve::view(req);
        let related = if Some(&view["Tags"]) == c.body().map(|b| &b["Tags"]) {
            c.view().related.clone()
        } else {
            self.tags(&view).await?
        };
        let c = self.canonical(call, Some(view.clone()), related);
        chain
            .validate(call.id, &c, &mut call.trace, &mut held)
            .await?;
        call.details = Some(solve::recorded(&view));
        let related = c.view().related.clone();
        call.view = Some(c.into_view());
        Ok(related)
    }

    /// The sessions named inside LLB given as named contexts (`--build-context`): each
    /// must be the caller's, as the Solve's own.
    fn input_sessions<'a>(
        &self,
        inputs: impl Iterator<Item = &'a Vec<u8>>,
        call: &Call,
    ) -> Result<Vec<String>, BuildkitError> {
        let mut out = Vec::new();
        for definition in inputs {
            let found = proto::llb_sessions(definition).map_err(|source| BuildkitError::Frame {
                method: call.path.clone(),
                source,
            })?;
            out.extend(found);
        }
        Ok(out)
    }

    /// A bridge call names its build in its metadata (BuildKit's
    /// `buildkit-controlapi-buildid`): it must be the caller's.
    async fn own_build(
        &self,
        headers: &http::HeaderMap,
        call: &mut Call,
    ) -> Result<(), BuildkitError> {
        let id = headers
            .get("buildkit-controlapi-buildid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        call.object = Some(id.clone());
        if id.is_empty() {
            return Err(BuildkitError::NotYours {
                reference: id,
                why: "is not named (the call has no buildkit-controlapi-buildid)",
            });
        }
        self.check_ref(&id).await
    }

    /// A build's status or a change to its history entry: only its starter's.
    async fn own_ref(
        &self,
        kind: RefCall,
        body: Incoming,
        call: &mut Call,
    ) -> Result<Bytes, BuildkitError> {
        let bytes = self.read(body, call).await?;
        let (reference, message, view) = match kind {
            RefCall::Status => {
                let m: proto::StatusRequest = self.decode(&bytes, "StatusRequest", &[1], call)?;
                (m.r#ref.clone(), proto::frame(&m), json!({"Ref": m.r#ref}))
            }
            RefCall::UpdateHistory => {
                let m: proto::UpdateBuildHistoryRequest =
                    self.decode(&bytes, "UpdateBuildHistoryRequest", &[1, 2, 3, 4], call)?;
                let view = json!({"Ref": m.r#ref, "Pinned": m.pinned, "Delete": m.delete, "Finalize": m.finalize});
                (m.r#ref.clone(), proto::frame(&m), view)
            }
        };
        call.object = Some(reference.clone());
        self.check_ref(&reference).await?;
        self.judge(call, Some(view)).await?;
        Ok(message)
    }

    /// The build history stream: one build's (the caller's), or all of them, filtered to
    /// the caller's own as they stream (see [`own_history`]).
    async fn history(&self, body: Incoming, call: &mut Call) -> Result<Bytes, BuildkitError> {
        let bytes = self.read(body, call).await?;
        let m: proto::BuildHistoryRequest =
            self.decode(&bytes, "BuildHistoryRequest", &[1, 2, 3, 4, 5], call)?;
        if !m.r#ref.is_empty() {
            call.object = Some(m.r#ref.clone());
            self.check_ref(&m.r#ref).await?;
        }
        let view = json!({"Ref": m.r#ref, "ActiveOnly": m.active_only, "EarlyExit": m.early_exit, "Filter": m.filter, "Limit": m.limit});
        self.judge(call, Some(view)).await?;
        Ok(proto::frame(&m))
    }

    /// Calls that plugins judge by their request alone.
    async fn judged(
        &self,
        kind: Judged,
        body: Incoming,
        call: &mut Call,
    ) -> Result<Bytes, BuildkitError> {
        let bytes = self.read(body, call).await?;
        let (message, view) = match kind {
            Judged::Prune => {
                let m: proto::PruneRequest =
                    self.decode(&bytes, "PruneRequest", &[1, 2, 3, 4, 5, 6], call)?;
                let view = json!({"Filter": m.filter, "All": m.all, "KeepDuration": m.keep_duration,
                    "ReservedSpace": m.reserved_space, "MaxUsedSpace": m.max_used_space, "MinFreeSpace": m.min_free_space});
                (proto::frame(&m), Some(view))
            }
            Judged::DiskUsage => {
                let m: proto::DiskUsageRequest =
                    self.decode(&bytes, "DiskUsageRequest", &[1, 2], call)?;
                let view = json!({"Filter": m.filter, "AgeLimit": m.age_limit});
                (proto::frame(&m), Some(view))
            }
            Judged::ListWorkers => {
                let m: proto::ListWorkersRequest =
                    self.decode(&bytes, "ListWorkersRequest", &[1], call)?;
                let view = json!({"Filter": m.filter});
                (proto::frame(&m), Some(view))
            }
            Judged::Info => {
                let m: proto::InfoRequest = self.decode(&bytes, "InfoRequest", &[], call)?;
                (proto::frame(&m), None)
            }
        };
        self.judge(call, view).await?;
        Ok(message)
    }

    /// Runs mutating plugins (which may not change these requests) and validating ones.
    async fn judge(&self, call: &mut Call, view: Option<Value>) -> Result<(), BuildkitError> {
        call.details = view.clone();
        let c = self.canonical(call, view, Vec::new());
        let chain = &self.mediation.policy.chain;
        let mut held = Held::default();
        let mut mutated = self.canonical(call, c.body().cloned(), Vec::new());
        chain
            .mutate(call.id, &mut mutated, &mut call.trace, &mut held)
            .await?;
        if mutated.view().body != c.view().body {
            return Err(solve::Unusable(format!(
                "{} requests cannot be changed by plugins",
                call.endpoint
            ))
            .into());
        }
        chain
            .validate(call.id, &c, &mut call.trace, &mut held)
            .await?;
        call.view = Some(c.into_view());
        Ok(())
    }

    /// The request as plugins see it: a POST of `call.path` to `call.endpoint`.
    fn canonical(
        &self,
        call: &Call,
        body: Option<Value>,
        related: Vec<model::Reference>,
    ) -> Canonical {
        let route = Route {
            endpoint: Endpoint {
                name: call.endpoint,
                body: BodyKind::Json,
                hijack: false,
                streaming: false,
            },
            version: self.mediation.version,
            path: call.path.clone(),
            object_id: call.object.clone(),
            params: Vec::new(),
        };
        let mut c = Canonical::new(
            call.id,
            &http::Method::POST,
            &route,
            Vec::new(),
            http::HeaderMap::new(),
            body,
            &self.mediation.caller,
        );
        c.set_related(related);
        c
    }

    /// The tags a build exports, each with its repository's owner, as a classic build's
    /// `t` parameters are.
    async fn tags(&self, view: &Value) -> Result<Vec<model::Reference>, BuildkitError> {
        let Some(owners) = self.gateway.owners() else {
            return Ok(Vec::new());
        };
        let query: Vec<(String, String)> = view["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| ("t".to_owned(), t.to_owned()))
            .collect();
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = match self.mediation.version {
            Some((a, b)) => format!("/v{a}.{b}/build"),
            None => "/build".to_owned(),
        };
        let route = crate::route::classify(&http::Method::POST, &prefix)
            .map_err(|e| BuildkitError::Engine(e.to_string()))?;
        let upstream = self.gateway.upstream();
        Ok(crate::pipeline::resolve_tags(upstream, owners, &route, &query, &[], None).await?)
    }

    /// A Solve may name only a session its caller opened through this gateway.
    async fn check_session(&self, session: &str) -> Result<(), BuildkitError> {
        if session.is_empty() {
            return Ok(());
        }
        let builds = self.gateway.builds();
        let owner = builds.wait_for(WAIT, |b| b.session_owner(session)).await;
        let why = match owner {
            Some(u) if u == self.mediation.caller.user => return Ok(()),
            Some(_) => "belongs to another user: a build may read only its own caller's files, secrets and SSH agent".to_owned(),
            None => "was not opened by this caller through the gateway (POST /session)".to_owned(),
        };
        Err(BuildkitError::Session {
            session: session.to_owned(),
            why,
        })
    }

    /// A build's ref must be one the caller started through this gateway.
    async fn check_ref(&self, reference: &str) -> Result<(), BuildkitError> {
        let builds = self.gateway.builds();
        let owner = builds.wait_for(WAIT, |b| b.build_owner(reference)).await;
        match owner {
            Some(u) if u == self.mediation.caller.user => Ok(()),
            Some(_) => Err(BuildkitError::NotYours {
                reference: reference.to_owned(),
                why: "was started by another user",
            }),
            None => Err(BuildkitError::NotYours {
                reference: reference.to_owned(),
                why: "was not started by this caller through the gateway",
            }),
        }
    }

    /// Reads a unary call's request within `limits.max_body_bytes`.
    async fn read(&self, body: Incoming, call: &mut Call) -> Result<Bytes, BuildkitError> {
        let limit = self.gateway.config().limits.max_body_bytes;
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BuildkitError::TooLarge {
                    method: call.path.clone(),
                    limit,
                })
            }
            Err(e) => {
                return Err(BuildkitError::Read {
                    method: call.path.clone(),
                    reason: e.to_string(),
                })
            }
        };
        call.bytes_in = Some(bytes.len() as u64);
        Ok(bytes)
    }

    fn decode<M: Message + Default>(
        &self,
        bytes: &[u8],
        name: &'static str,
        known: &[u32],
        call: &Call,
    ) -> Result<M, BuildkitError> {
        let frame_error = |source: FrameError| BuildkitError::Frame {
            method: call.path.clone(),
            source,
        };
        let message = proto::single_message(bytes).map_err(frame_error)?;
        proto::decode(message, name, known).map_err(frame_error)
    }

    /// Sends the call on and hands back the answer as it streams (a history stream
    /// filtered to the caller's builds).
    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: OutBody,
        call: &mut Call,
        own_history: bool,
    ) -> Result<Response<OutBody>, BuildkitError> {
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let req = Request::from_parts(parts, body);
        let mut onward = self.onward.clone();
        let sent = Instant::now();
        onward
            .ready()
            .await
            .map_err(|e| BuildkitError::Engine(e.to_string()))?;
        let resp = onward
            .send_request(req)
            .await
            .map_err(|e| BuildkitError::Engine(e.to_string()))?;
        call.engine = Some(sent.elapsed());
        let (parts, body) = resp.into_parts();
        let body = if own_history {
            own_history_body(
                body,
                self.gateway.builds().clone(),
                self.mediation.caller.user.clone(),
            )
        } else {
            stream(body)
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// A body passed on frame by frame, trailers (the call's `grpc-status`) included.
pub fn stream(body: Incoming) -> OutBody {
    body.map_err(|e| Box::new(e) as BodyError).boxed()
}

/// A trailers-only gRPC answer: the call failed with `code`.
pub fn status(code: u16, message: &str) -> Response<OutBody> {
    let mut resp = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from(code));
    if let Ok(v) = http::HeaderValue::from_str(&grpc_message(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// The history stream with other callers' builds left out: each event's record names its
/// build's ref, and only refs the caller started pass.
fn own_history(builds: &crate::owners::Builds, user: &str, message: &[u8]) -> bool {
    match proto::BuildHistoryEventHead::decode(message) {
        Ok(event) => event
            .record
            .is_some_and(|r| builds.build_owner(&r.r#ref).as_deref() == Some(user)),
        Err(_) => false,
    }
}

fn own_history_body(
    mut body: Incoming,
    builds: Arc<crate::owners::Builds>,
    user: String,
) -> OutBody {
    use http_body::Frame;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(8);
    tokio::spawn(async move {
        let mut pending = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    pending.extend_from_slice(&data);
                    let mut out = bytes::BytesMut::new();
                    let mut messages = proto::Messages::new(&pending);
                    for m in messages.by_ref() {
                        match m {
                            Ok(m) if own_history(&builds, &user, m) => {
                                out.extend_from_slice(&proto::frame_bytes(m));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let _ = tx.send(Err(Box::new(e))).await;
                                return;
                            }
                        }
                    }
                    let rest = messages.rest().len();
                    let keep = pending.split_off(pending.len() - rest);
                    pending = keep;
                    if out.is_empty() {
                        continue;
                    }
                    Frame::data(out.freeze())
                }
                Err(other) => other,
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream_body(rx);
    BodyExt::boxed(stream)
}

fn tokio_stream_body(
    rx: tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, BodyError>>,
) -> http_body_util::StreamBody<ReceiverStream> {
    http_body_util::StreamBody::new(ReceiverStream(rx))
}

/// An mpsc receiver as a stream of frames.
pub struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, BodyError>>);

impl futures_util::Stream for ReceiverStream {
    type Item = Result<http_body::Frame<Bytes>, BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl Call {
    /// Writes the call's record (once).
    async fn finish(&mut self, error: Option<&BuildkitError>, status: u16) {
        if self.done {
            return;
        }
        self.done = true;
        let (decision, label) = match error {
            None => (Decision::Allow, "allow"),
            Some(e) if e.denied() => (Decision::Deny, "deny"),
            Some(_) => (Decision::Error, "error"),
        };
        let t = self.tunnel.clone();
        t.gateway.metrics().request.record(
            self.endpoint,
            label,
            status,
            self.started.elapsed(),
            self.engine,
        );
        let Some(audit) = t.gateway.audit() else {
            return;
        };
        let record = self.record(decision, error.map(|e| e.status().1), status);
        audit
            .finish(&t.mediation.policy.chain, record, self.view.take())
            .await;
    }

    /// The call's record: its only one, or the outcome of its decision record.
    fn record(&mut self, decision: Decision, error: Option<String>, status: u16) -> Record {
        let mut notes = std::mem::take(&mut self.trace.notes);
        let mut record = match self.decided {
            Some((seq, n)) => {
                notes.drain(..n.min(notes.len()));
                let mut r = self.record_so_far(decision, error, status);
                r.stage = Some(Stage::Outcome);
                r.decided = Some(seq);
                r.details = None;
                r
            }
            None => {
                let mut r = self.record_so_far(decision, error, status);
                r.details = self.details.take().map(|mut d| {
                    if let Some(o) = d.as_object_mut() {
                        // Which tunnel the call came through.
                        o.insert("Tunnel".into(), Value::from(self.tunnel.mediation.id));
                    }
                    d
                });
                r
            }
        };
        record.plugins = notes;
        record
    }

    /// What the call's record says so far (its decision record, before it is forwarded).
    fn record_so_far(&self, decision: Decision, error: Option<String>, status: u16) -> Record {
        let m = &self.tunnel.mediation;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut details = self.details.clone();
        if let Some(d) = details.as_mut().and_then(Value::as_object_mut) {
            // Which tunnel the call came through.
            d.insert("Tunnel".into(), Value::from(m.id));
        }
        Record {
            seq: 0,
            time: String::new(),
            request_id: self.id,
            caller: serde_json::to_value(&*m.caller).unwrap_or(Value::Null),
            method: "POST".into(),
            path: self.path.clone(),
            api_version: m.version.map(|(a, b)| format!("{a}.{b}")),
            endpoint: self.endpoint.to_owned(),
            object: self.object.clone(),
            target: None,
            decision,
            plugins: self.trace.notes.clone(),
            error,
            status,
            duration_us: micros(self.started.elapsed()),
            engine_us: self.engine.map(micros),
            bytes_in: self.bytes_in,
            bytes_out: None,
            details,
            stage: None,
            decided: None,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The client reset the stream (or went away) before the call was answered.
        self.done = true;
        let Some(audit) = self.tunnel.gateway.audit().cloned() else {
            return;
        };
        let record = self.record(
            Decision::Error,
            Some("portcullis: the client cancelled the call before it was answered".into()),
            499,
        );
        let chain = self.tunnel.mediation.policy.chain.clone();
        let view = self.view.take();
        tokio::spawn(async move { audit.finish(&chain, record, view).await });
    }
}
