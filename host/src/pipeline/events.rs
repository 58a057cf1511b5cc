//! `GET /events` judged one event at a time. The engine's filters cannot say "the objects
//! this caller owns" for every kind: on engine 20.10 only container and image events carry
//! labels, so an owner label filter in the query hides every volume, network and swarm event.
//! When response plugins select `system.events`, the gateway reads the stream event by event
//! (the engine writes one JSON object per line) and hands each to them as a response of its
//! own, with `request.target` set to the object the event is about (see
//! [`super::target::event_object`]). An allowed event goes on as the engine wrote it, a
//! patched one re-serialized, a denied one is left out; a failing plugin leaves the event out
//! too (fail-closed), unless its failure policy lets it through.
//!
//! Events keep their order: one stream's events are judged one after the other. A line longer
//! than [`MAX_EVENT_BYTES`] ends the stream with an error rather than being buffered without
//! bound, and the task ends as soon as the client goes away, closing the engine's stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;
use tracing::{debug, warn};

use super::canonical::{self, PatchError};
use super::chain::{Chain, Held, Trace};
use super::target::{self, Seen};
use super::Body;
use crate::body::BodyError;
use crate::model;
use crate::route::Route;
use crate::upstream::Upstream;

/// The largest single event read. dockerd's events are a few hundred bytes; a container's
/// event carries its labels, so thousands of labels still fit.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Judged events waiting for a slow client before the gateway stops reading the engine.
const QUEUED_EVENTS: usize = 16;

/// What judging an event stream needs, shared with the task that does it.
pub(super) struct EventJudge {
    pub chain: Arc<Chain>,
    pub upstream: Upstream,
    pub seen: Arc<Seen>,
    pub route: Route,
    pub id: u64,
    /// The request as plugins judged it; each event's copy gets its own `target`.
    pub request: model::Request,
    /// The engine's response headers as plugins see them.
    pub headers: Vec<model::Pair>,
}

impl EventJudge {
    /// Starts judging `events` (the engine's stream) and returns the body the client gets.
    pub fn start(self, events: Body) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_EVENTS);
        tokio::spawn(self.run(events, tx));
        Body::channel(rx)
    }

    async fn run(self, mut events: Body, tx: tokio::sync::mpsc::Sender<Result<Bytes, BodyError>>) {
        let mut pending = BytesMut::new();
        loop {
            let frame = tokio::select! {
                frame = events.frame() => frame,
                // The client went away: stop, which closes the engine's stream.
                () = tx.closed() => return,
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line = pending.split_to(end + 1).freeze();
                if let Some(out) = self.judge(line).await {
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
            if pending.len() > MAX_EVENT_BYTES {
                let e = format!("an event from the engine is larger than {MAX_EVENT_BYTES} bytes; stream closed");
                warn!(id = self.id, "{e}");
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
        // A last event without its newline.
        if !pending.is_empty() {
            if let Some(out) = self.judge(pending.freeze()).await {
                let _ = tx.send(Ok(out)).await;
            }
        }
    }

    /// The bytes to send for one line of the engine's stream, or none to leave it out.
    async fn judge(&self, line: Bytes) -> Option<Bytes> {
        let text = std::str::from_utf8(&line).ok().map(str::trim);
        let event = text.and_then(|t| serde_json::from_str::<Value>(t).ok());
        let (Some(text), Some(event)) = (text, event) else {
            if !line.iter().all(u8::is_ascii_whitespace) {
                warn!(
                    id = self.id,
                    "an event from the engine is not JSON; left out"
                );
            }
            return None;
        };
        let mut request = self.request.clone();
        request.target =
            target::event_object(&self.upstream, &self.seen, &self.route, &event).await;
        let mut resp = model::Response {
            status: 200,
            headers: self.headers.clone(),
            body: Some(text.to_owned()),
        };
        let mut patched = false;
        let judged = self
            .chain
            .on_response(
                self.id,
                &request,
                &mut resp,
                &mut Trace::default(),
                &mut Held::default(),
                |resp, patch| {
                    if !patch.headers.is_empty() || !patch.query.is_empty() {
                        return Err(PatchError::NotHere(
                            "an event can only be patched in its body",
                        ));
                    }
                    if let Some(ops) = &patch.body {
                        resp.body = Some(canonical::patch_text(resp.body.as_deref(), ops)?);
                        patched = true;
                    }
                    Ok(())
                },
            )
            .await;
        match judged {
            Ok(()) if patched => {
                let mut out = resp.body.unwrap_or_default().into_bytes();
                out.push(b'\n');
                Some(Bytes::from(out))
            }
            Ok(()) => Some(line),
            Err(e) => {
                debug!(id = self.id, reason = %e, "event left out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A judge with no plugins (every event allowed) and an engine that is never asked: no
    /// event here is of a kind that is looked up.
    fn judge() -> EventJudge {
        let engine = crate::config::EngineConfig {
            url: crate::config::Address::Unix("/nonexistent/docker.sock".into()),
            cert_path: None,
            ..Default::default()
        };
        EventJudge {
            chain: Arc::new(Chain::default()),
            upstream: Upstream::new(&engine).expect("upstream"),
            seen: Arc::new(Seen::default()),
            route: crate::route::classify(&http::Method::GET, "/events").expect("route"),
            id: 1,
            request: crate::plugin::test_request("GET", "/events", "system.events"),
            headers: Vec::new(),
        }
    }

    async fn engine_stream(chunks: Vec<Bytes>) -> Result<Bytes, BodyError> {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            tx.send(Ok(chunk)).await.expect("send");
        }
        drop(tx);
        judge()
            .start(Body::channel(rx))
            .collect()
            .await
            .map(|c| c.to_bytes())
    }

    /// Lines split across frames, several in a frame, and a last one without its newline
    /// all come out whole and in order; a line that is not JSON is left out.
    #[tokio::test]
    async fn events_are_read_line_by_line_across_frames() {
        let chunks = [
            &b"{\"Type\":\"container\",\"Action\":\"start\"}\n{\"Ty"[..],
            b"pe\":\"daemon\"}\n",
            b"not json\n",
            b"{\"Type\":\"image\"}",
        ];
        let all = engine_stream(chunks.iter().map(|c| Bytes::from_static(c)).collect())
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&all).expect("utf-8"),
            "{\"Type\":\"container\",\"Action\":\"start\"}\n{\"Type\":\"daemon\"}\n{\"Type\":\"image\"}"
        );
    }

    #[tokio::test]
    async fn an_endless_line_ends_the_stream_with_an_error() {
        let half = Bytes::from(vec![b'x'; MAX_EVENT_BYTES / 2 + 1]);
        let err = engine_stream(vec![half.clone(), half])
            .await
            .expect_err("too large");
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
