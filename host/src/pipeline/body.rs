//! The one body type the gateway sends in both directions: either a stream passed through
//! frame by frame (never buffered whole), or bytes the gateway holds (a canonical JSON body,
//! an error). An enum rather than a boxed trait object: no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    /// A request or response body.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed through as it arrives.
        Stream { #[pin] inner: Incoming },
        /// Held in memory; sent with an exact Content-Length.
        Full { data: Option<Bytes> },
    }
}

impl Body {
    /// A body of exactly these bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Body::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Body::Full { data: None }
    }

    /// A body streamed from the other side.
    pub fn stream(inner: Incoming) -> Self {
        Body::Stream { inner }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            BodyProj::Stream { inner } => inner.poll_frame(cx),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream { inner } => inner.is_end_stream(),
            Body::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream { inner } => inner.size_hint(),
            Body::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
