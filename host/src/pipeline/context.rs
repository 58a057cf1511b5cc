//! The one context of a request's trip: what the phases learn about the request as it
//! travels (its route, body, the judged view, the engine's answer time, the plugins'
//! answers), handed from phase to phase, and what its audit record is built from at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use hyper::body::Incoming;

use super::canonical::Canonical;
use super::chain::{Held, Trace};
use super::spool::Archive;
use super::tunnel::Handover;
use super::Policy;
use crate::identity::Caller;
use crate::model;
use crate::route::Route;

/// Longest raw path a record keeps of a request that could not be classified.
const MAX_RAW_PATH: usize = 1024;

/// How the client asked to switch protocols (attach, exec, BuildKit's session).
#[derive(Debug, Default)]
pub(super) enum Upgrade {
    /// It did not.
    #[default]
    No,
    /// With `Upgrade:` (the protocol it named, forwarded as asked).
    Asked(Option<HeaderValue>),
    /// dockerd also hijacks attach and exec start sent without `Upgrade` (the legacy hijack);
    /// the gateway asks the engine to upgrade either way (see `tunnel`).
    Legacy,
}

/// What the trip knows about one request.
pub(super) struct Context {
    /// The gateway's id for the request (in its logs, its record, the plugins' view).
    pub id: u64,
    pub started: Instant,
    /// The chain and settings this request is judged by from start to end, even when the
    /// configuration is reloaded meanwhile.
    pub policy: Arc<Policy>,
    pub caller: Arc<Caller>,
    /// Set by `admit`.
    pub route: Option<Route>,
    pub upgrade: Upgrade,
    /// The connection's handle for a hijacked stream, taken from the request.
    pub handover: Option<Arc<Handover>>,
    /// The request's head, and its body until `read` takes it.
    pub head: Option<http::request::Parts>,
    pub incoming: Option<Incoming>,
    /// The query as read, then as forwarded.
    pub query: Vec<(String, String)>,
    /// A read body as read, then as forwarded (streamed uploads are not read).
    pub body: Option<Bytes>,
    /// A streamed upload not yet sent on: a refusal reads the rest of it first.
    pub stream: Option<Incoming>,
    /// A `docker load` archive, spooled to judge its tags.
    pub archive: Option<Archive>,
    /// The request as plugins judge it, when any plugin looks at this endpoint.
    pub judged: Option<Judged>,
    /// Instances kept from request hooks for the response hooks.
    pub held: Held,
    /// How long the engine took to answer the forwarded request's head.
    pub engine_time: Option<Duration>,
    /// Every plugin answer, collected only when there is an audit trail.
    pub trace: Trace,
    /// The plugins' view of the request, kept for the hooks that shape its record.
    pub view: Option<model::Request>,
    /// What only the record needs; `None` without an audit trail.
    pub arrival: Option<Box<Arrival>>,
    /// Why the request was refused or failed, as sent: for the record.
    pub failure: Option<Failure>,
    /// The BuildKit session a mediated `/session` request opens for its caller.
    pub session: Option<crate::owners::SessionClaim>,
    /// The request's decision record, committed before it was forwarded: its sequence, and
    /// how many plugin answers it holds (the outcome record holds those that follow).
    pub decided: Option<(u64, usize)>,
}

/// The request as it arrived, for its record.
pub(super) struct Arrival {
    pub method: String,
    /// The raw path, cut to [`MAX_RAW_PATH`]: shown when the request cannot be classified.
    pub path: String,
    /// The announced body size (Content-Length), for streamed uploads.
    pub announced: Option<u64>,
    /// Why the identity layer refused the caller, when it did.
    pub unidentified: Option<String>,
    /// The `name` the query gives (a creation's), kept even when the request is refused
    /// before its query is read.
    pub name: Option<String>,
}

/// A refused or failed request's outcome.
pub(super) struct Failure {
    /// Refused by policy (a plugin denied, the endpoint is unknown), not an error.
    pub denied: bool,
    pub message: String,
}

/// The judged request and what judging it needs across `enrich` and `decide`.
pub(super) struct Judged {
    pub canonical: Canonical,
    /// Whether request hooks look at this endpoint (responses or records may be all).
    pub request_hooks: bool,
    /// Whether audit hooks shape this endpoint's records.
    pub record_hooks: bool,
    /// The query the tags were resolved for.
    pub tags_query: Vec<(String, String)>,
    /// The tags the request names, with their owners.
    pub tags: Vec<model::Reference>,
    /// The id of the image a tag request's source names.
    pub source: Option<String>,
}

impl Context {
    /// The context of a request that just arrived; `recording` when there is an audit trail.
    pub fn new<B>(
        id: u64,
        req: &Request<B>,
        caller: Arc<Caller>,
        policy: Arc<Policy>,
        recording: bool,
        started: Instant,
    ) -> Self {
        let arrival = recording.then(|| {
            let mut path = req.uri().path().to_owned();
            if path.len() > MAX_RAW_PATH {
                let mut cut = MAX_RAW_PATH;
                while !path.is_char_boundary(cut) {
                    cut -= 1;
                }
                path.truncate(cut);
            }
            let announced = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let name = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v.into_owned())
            });
            Box::new(Arrival {
                method: req.method().as_str().to_owned(),
                path,
                announced,
                unidentified: None,
                name,
            })
        });
        Self {
            id,
            started,
            policy,
            caller,
            route: None,
            upgrade: Upgrade::No,
            handover: None,
            head: None,
            incoming: None,
            query: Vec::new(),
            body: None,
            stream: None,
            archive: None,
            judged: None,
            held: Held::default(),
            engine_time: None,
            trace: if recording {
                Trace::enabled()
            } else {
                Trace::default()
            },
            view: None,
            arrival,
            failure: None,
            session: None,
            decided: None,
        }
    }

    /// Whether the request leaves a record.
    pub fn recording(&self) -> bool {
        self.arrival.is_some()
    }

    /// The classified route; `admit` sets it before any later phase runs.
    pub fn route(&self) -> &Route {
        self.route.as_ref().expect("admitted")
    }

    /// Whether the engine may act on the request: anything but a read (an upgraded
    /// connection carries what the client sends next, so it acts).
    pub fn acts(&self) -> bool {
        let read = self
            .head
            .as_ref()
            .is_some_and(|h| matches!(h.method, http::Method::GET | http::Method::HEAD));
        !read || !matches!(self.upgrade, Upgrade::No)
    }

    /// The endpoint's name, or `unknown` before the request was classified.
    pub fn endpoint(&self) -> &'static str {
        self.route.as_ref().map_or("unknown", |r| r.endpoint.name)
    }
}
