//! The one body type the gateway sends in both directions: either a stream passed through
//! frame by frame (never buffered whole), or bytes the gateway holds (a canonical JSON body,
//! an error). An enum rather than a boxed trait object: no allocation per request.
//!
//! A body may also hold a guard until it ends (the pipeline's per-caller slot, so a long
//! stream counts against its caller until it ends) and, for streams, an idle limit (`limits.stream_idle_timeout`):
//! a stream with no frame for that long fails, which closes the connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a body stopped: the other side's error, or the idle limit.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request or response body.
    pub struct Body {
        #[pin]
        kind: Content,
        idle: Option<Idle>,
        held: Option<Box<dyn std::any::Any + Send + Sync>>,
    }
}

pin_project_lite::pin_project! {
    #[project = ContentProj]
    enum Content {
        /// Streamed through as it arrives.
        Stream { #[pin] inner: Incoming },
        /// Held in memory; sent with an exact Content-Length.
        Full { data: Option<Bytes> },
        /// Produced by a task of the gateway's (an event stream judged event by event).
        Channel { rx: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>> },
    }
}

/// The idle limit of a stream: re-armed by every frame. The timer is boxed so that the body
/// stays `Unpin`, as hyper's client requires.
struct Idle {
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

/// A stream went quiet for longer than `limits.stream_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?} (limits.stream_idle_timeout); stream closed")]
pub struct IdleTimeout(Duration);

impl Body {
    fn new(kind: Content) -> Self {
        Body {
            kind,
            idle: None,
            held: None,
        }
    }

    /// A body of exactly these bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self::new(Content::Full {
            data: (!data.is_empty()).then_some(data),
        })
    }

    /// No body.
    pub fn empty() -> Self {
        Self::new(Content::Full { data: None })
    }

    /// A body streamed from the other side.
    pub fn stream(inner: Incoming) -> Self {
        Self::new(Content::Stream { inner })
    }

    /// A body whose frames a task sends through `rx`; it ends when the sender is dropped.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>) -> Self {
        Self::new(Content::Channel { rx })
    }

    /// Fails the stream when no frame arrives for `limit` (none: no idle limit). Held bodies
    /// are not affected: they are already complete.
    pub fn idle_limit(mut self, limit: Option<Duration>) -> Self {
        if let (Some(limit), Content::Stream { .. }) = (limit, &self.kind) {
            self.idle = Some(Idle {
                limit,
                timer: Box::pin(tokio::time::sleep(limit)),
            });
        }
        self
    }

    /// Keeps `guard` (a caller's slot, an open-stream gauge) until the body is dropped,
    /// together with every guard it already keeps.
    pub fn holding<G: Send + Sync + 'static>(mut self, guard: Option<G>) -> Self {
        if let Some(guard) = guard {
            self.held = Some(match self.held.take() {
                Some(before) => Box::new((before, guard)),
                None => Box::new(guard),
            });
        }
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.kind.project() {
            ContentProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ContentProj::Channel { rx } => rx.poll_recv(cx).map(|f| f.map(|f| f.map(Frame::data))),
            ContentProj::Stream { inner } => {
                let polled = inner.poll_frame(cx);
                let Some(idle) = this.idle.as_mut() else {
                    return polled.map_err(Into::into);
                };
                match polled {
                    Poll::Ready(frame) => {
                        idle.timer.as_mut().reset(Instant::now() + idle.limit);
                        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
                    }
                    Poll::Pending => match idle.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(idle.limit).into()))),
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Content::Stream { inner } => inner.is_end_stream(),
            Content::Full { data } => data.is_none(),
            Content::Channel { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Content::Stream { inner } => inner.size_hint(),
            Content::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Content::Channel { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_guard_is_held_until_the_body_is_dropped() {
        let (slot, gauge) = (Arc::new(()), Arc::new(()));
        let body = Body::empty()
            .holding(Some(slot.clone()))
            .holding(None::<()>)
            .holding(Some(gauge.clone()));
        assert_eq!(
            (Arc::strong_count(&slot), Arc::strong_count(&gauge)),
            (2, 2)
        );
        drop(body);
        assert_eq!(
            (Arc::strong_count(&slot), Arc::strong_count(&gauge)),
            (1, 1)
        );
    }
}
