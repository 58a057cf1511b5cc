//! The last phase, `log`: the request's audit record, built once from its context when the
//! response head is ready, whatever the trip came to. And the chain's audit hooks, which
//! shape a record before the trail writes it.
//!
//! What never enters a record: request and response headers (so `Authorization`,
//! `X-Registry-Auth` and `X-Registry-Config` cannot), bodies other than the
//! security-relevant fields of container, exec and service creation, and the values of
//! credential headers a plugin sets.

use http::{header, Response};
use serde_json::Value;

use super::canonical::{self, PatchError};
use super::chain::{Chain, Trace};
use super::context::Context;
use crate::audit::{record, Decision, Note, Record, Shaper, Stage};
use crate::body::Body;
use crate::identity::Caller;
use crate::model;

/// The decision record of a request about to be forwarded: what the policy decided and
/// what the engine will be sent, before the engine answers. `None` without an audit trail.
pub(super) fn decision(ctx: &Context) -> Option<Record> {
    let mut record = fields(ctx, ctx.trace.notes.clone())?;
    record.stage = Some(Stage::Decision);
    Some(record)
}

/// The record of the trip in `ctx`, answered with `resp`, and the plugins' view of the
/// request (for the audit hooks). When a decision record was written before the request
/// was forwarded, this is its outcome record: what followed, naming the decision record.
/// Nothing without an audit trail.
pub(super) fn build(
    mut ctx: Context,
    resp: &Response<Body>,
) -> Option<(Record, Option<model::Request>)> {
    use http_body::Body as _;
    let mut notes = std::mem::take(&mut ctx.trace.notes);
    if let Some((_, n)) = ctx.decided {
        notes.drain(..n.min(notes.len()));
    }
    let mut record = fields(&ctx, notes)?;
    record.status = resp.status().as_u16();
    record.bytes_out = resp.body().size_hint().exact().or_else(|| {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    if let Some((seq, _)) = ctx.decided {
        // The decision record holds the target and details; the outcome only what followed.
        record.stage = Some(Stage::Outcome);
        record.decided = Some(seq);
        record.target = None;
        record.details = None;
    }
    Some((record, ctx.view))
}

/// The record of a request the listener refused before it could be parsed: no method, no
/// path, endpoint `unknown`.
pub(super) fn malformed(id: u64, caller: &Caller, status: u16, message: String) -> Record {
    Record {
        seq: 0,
        time: String::new(),
        request_id: id,
        caller: serde_json::to_value(caller).unwrap_or(Value::Null),
        method: String::new(),
        path: String::new(),
        api_version: None,
        endpoint: "unknown".into(),
        object: None,
        target: None,
        decision: Decision::Error,
        plugins: Vec::new(),
        error: Some(message),
        status,
        duration_us: 0,
        engine_us: None,
        bytes_in: None,
        bytes_out: None,
        details: None,
        stage: None,
        decided: None,
    }
}

/// What a record says of the trip so far, with `plugins` as its plugin answers.
fn fields(ctx: &Context, plugins: Vec<Note>) -> Option<Record> {
    let arrival = ctx.arrival.as_ref()?;
    let mut caller = serde_json::to_value(&*ctx.caller).unwrap_or(Value::Null);
    if let (Some(why), Some(c)) = (&arrival.unidentified, caller.as_object_mut()) {
        c.insert("refused".into(), Value::String(why.clone()));
    }
    let route = ctx.route.as_ref();
    let endpoint = route.map_or("unknown", |r| r.endpoint.name);
    let object = route.and_then(|r| r.object_id.clone()).or_else(|| {
        ctx.query
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone())
            .or_else(|| arrival.name.clone())
    });
    let details = ctx.body.as_ref().and_then(|b| record::details(endpoint, b));
    let (decision, error) = match &ctx.failure {
        None => (Decision::Allow, None),
        Some(f) if f.denied => (Decision::Deny, Some(f.message.clone())),
        Some(f) => (Decision::Error, Some(f.message.clone())),
    };
    Some(Record {
        seq: 0,
        time: String::new(),
        request_id: ctx.id,
        caller,
        method: arrival.method.clone(),
        path: route.map_or_else(|| arrival.path.clone(), |r| r.path.clone()),
        api_version: route
            .and_then(|r| r.version)
            .map(|(a, b)| format!("{a}.{b}")),
        endpoint: endpoint.to_owned(),
        object,
        target: ctx
            .view
            .as_ref()
            .and_then(|v| v.target.as_ref())
            .map(record::target_json),
        decision,
        plugins,
        error,
        status: 0,
        duration_us: micros(ctx.started.elapsed()),
        engine_us: ctx.engine_time.map(micros),
        bytes_in: ctx
            .body
            .as_ref()
            .map(|b| b.len() as u64)
            .or(arrival.announced),
        bytes_out: None,
        details,
        stage: None,
        decided: None,
    })
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Shaper for Chain {
    fn wants(&self, endpoint: &str) -> bool {
        self.wants_audit(endpoint)
    }

    /// Runs the audit hooks on the record's JSON; a patched record that is no longer a valid
    /// record is refused and the original kept.
    async fn shape(&self, view: &model::Request, record: &mut Record) {
        let Ok(mut text) = serde_json::to_string(&*record) else {
            return;
        };
        let mut trace = Trace::enabled();
        self.on_audit(view.id, view, &mut text, &mut trace, |text, patch| {
            let Some(ops) = &patch.body else {
                return Ok(());
            };
            let patched = canonical::patch_text(Some(text), ops)?;
            serde_json::from_str::<Record>(&patched).map_err(PatchError::NotARecord)?;
            *text = patched;
            Ok(())
        })
        .await;
        if let Ok(shaped) = serde_json::from_str::<Record>(&text) {
            *record = shaped;
        }
        record.plugins.extend(trace.notes);
    }
}
