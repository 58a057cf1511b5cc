//! The two HTTP/2 connections of a mediated tunnel. The side that calls (the client on
//! `/grpc`, the engine on `/session`) is served by the gateway as an HTTP/2 server; the
//! side that answers is reached through an HTTP/2 client connection. hyper carries each
//! call's frames with HTTP/2 flow control on both sides, so a stream is never buffered
//! beyond its window, and a stream reset on one side resets the other.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::call::{OutBody, Tunnel};
use crate::audit::{Decision, Record};
use crate::pipeline::tunnel::{Mediation, Pending};
use crate::pipeline::Gateway;

/// Calls in flight at once on one tunnel (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
const MAX_STREAMS: u32 = 256;

/// Serves a mediated BuildKit tunnel between `client` (whose already-read bytes are
/// `read_ahead`) and the engine, until either side closes it.
pub async fn serve<C>(client: C, read_ahead: Bytes, mut pending: Pending, gateway: Arc<Gateway>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mediation) = pending.mediation.take() else {
        return;
    };
    let opened = match pending.open().await {
        Ok(o) => o,
        Err(e) => {
            debug!(error = %e, "engine upgrade did not complete");
            return;
        }
    };
    let client = TokioIo::new(Prefixed {
        ahead: read_ahead,
        inner: client,
    });
    let mediation = Arc::new(mediation);
    let started = Instant::now();
    let result = match mediation.endpoint {
        "grpc" => {
            relay(
                client,
                opened.engine.into_inner(),
                mediation.clone(),
                gateway.clone(),
            )
            .await
        }
        _ => {
            relay(
                opened.engine.into_inner(),
                client,
                mediation.clone(),
                gateway.clone(),
            )
            .await
        }
    };
    if let Err(failure) = result {
        debug!(error = %failure, "BuildKit tunnel ended with an error");
        record_failure(&gateway, &mediation, &failure, started).await;
    }
}

/// What ended a tunnel badly: the HTTP/2 of one side.
#[derive(Debug, thiserror::Error)]
#[error("portcullis: the {side} did not speak HTTP/2 on the {endpoint} tunnel: {reason}")]
struct TunnelError {
    side: &'static str,
    endpoint: &'static str,
    reason: String,
}

/// Serves `calling` (an HTTP/2 server towards it) and forwards each call to `answering`
/// (an HTTP/2 client towards it).
async fn relay<S, A>(
    calling: S,
    answering: A,
    mediation: Arc<Mediation>,
    gateway: Arc<Gateway>,
) -> Result<(), TunnelError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    A: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let endpoint = mediation.endpoint;
    let (calling_side, answering_side) = match endpoint {
        "grpc" => ("client", "engine"),
        _ => ("engine", "client"),
    };
    let limit = u32::try_from(gateway.config().limits.max_header_bytes).unwrap_or(u32::MAX);
    let (onward, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(limit)
        .handshake::<_, OutBody>(answering)
        .await
        .map_err(|e| TunnelError {
            side: answering_side,
            endpoint,
            reason: e.to_string(),
        })?;
    let onward_task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "BuildKit tunnel: the answering side's connection ended");
        }
    });
    let tunnel = Arc::new(Tunnel {
        gateway,
        mediation,
        onward,
    });
    let service = service_fn(move |req| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(tunnel.call(req).await) }
    });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(limit)
        .serve_connection(calling, service)
        .await;
    onward_task.abort();
    result.map_err(|e| TunnelError {
        side: calling_side,
        endpoint,
        reason: e.to_string(),
    })
}

/// A tunnel that broke on bad input (a malformed HTTP/2 preface or frame) leaves a record
/// of its own: the calls it carried have theirs, this says why it ended.
async fn record_failure(gateway: &Gateway, m: &Mediation, failure: &TunnelError, started: Instant) {
    let Some(audit) = gateway.audit() else {
        return;
    };
    let record = Record {
        seq: 0,
        time: String::new(),
        request_id: gateway.next_id(),
        caller: serde_json::to_value(&*m.caller).unwrap_or(serde_json::Value::Null),
        method: "POST".into(),
        path: format!("/{}", m.endpoint),
        api_version: m.version.map(|(a, b)| format!("{a}.{b}")),
        endpoint: m.endpoint.to_owned(),
        object: None,
        target: None,
        decision: Decision::Error,
        plugins: Vec::new(),
        error: Some(failure.to_string()),
        status: 400,
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        engine_us: None,
        bytes_in: None,
        bytes_out: None,
        details: Some(serde_json::json!({"Tunnel": m.id})),
        stage: None,
        decided: None,
    };
    audit.append(record).await;
}

pin_project_lite::pin_project! {
    /// The client's connection with the bytes hyper read past the `101` request put back
    /// in front (the start of the HTTP/2 preface, when the client did not wait).
    struct Prefixed<C> {
        ahead: Bytes,
        #[pin]
        inner: C,
    }
}

impl<C: AsyncRead> AsyncRead for Prefixed<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.ahead.has_remaining() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<C: AsyncWrite> AsyncWrite for Prefixed<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
