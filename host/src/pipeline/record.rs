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
use crate::audit::{record, Decision, Record, Shaper};
use crate::body::Body;
use crate::model;

/// The record of the trip in `ctx`, answered with `resp`, and the plugins' view of the
/// request (for the audit hooks). Nothing without an audit trail.
pub(super) fn build(
    ctx: Context,
    resp: &Response<Body>,
) -> Option<(Record, Option<model::Request>)> {
    use http_body::Body as _;
    let arrival = ctx.arrival?;
    let mut caller = serde_json::to_value(&*ctx.caller).unwrap_or(Value::Null);
    if let (Some(why), Some(c)) = (arrival.unidentified, caller.as_object_mut()) {
        c.insert("refused".into(), Value::String(why));
    }
    let route = ctx.route.as_ref();
    let endpoint = route.map_or("unknown", |r| r.endpoint.name);
    let object = route.and_then(|r| r.object_id.clone()).or_else(|| {
        ctx.query
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone())
    });
    let details = ctx.body.as_ref().and_then(|b| record::details(endpoint, b));
    let (decision, error) = match ctx.failure {
        None => (Decision::Allow, None),
        Some(f) if f.denied => (Decision::Deny, Some(f.message)),
        Some(f) => (Decision::Error, Some(f.message)),
    };
    let record = Record {
        seq: 0,
        time: String::new(),
        request_id: ctx.id,
        caller,
        method: arrival.method,
        path: route.map_or(arrival.path, |r| r.path.clone()),
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
        plugins: ctx.trace.notes,
        error,
        status: resp.status().as_u16(),
        duration_us: micros(ctx.started.elapsed()),
        engine_us: ctx.engine_time.map(micros),
        bytes_in: ctx
            .body
            .as_ref()
            .map(|b| b.len() as u64)
            .or(arrival.announced),
        bytes_out: resp.body().size_hint().exact().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        }),
        details,
    };
    Some((record, ctx.view))
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
