//! The raw tunnel behind a hijacked attach or exec: bytes are copied both ways, and a
//! half-close is passed on (the client's EOF on stdin becomes a write shutdown towards the
//! engine), which is what makes `echo hi | docker exec -i c cat` print `hi` and exit.
//!
//! The client connection is taken back from hyper by the listener once hyper has written the
//! last response on it ([`Handover`]), not through hyper's own upgrade API: hyper hands a
//! connection over only after a `101`, while dockerd also hijacks attach and exec requests
//! sent without `Upgrade` (the legacy hijack), answering `200 OK` with a raw stream that no
//! HTTP framing describes. In both cases the engine is always asked to upgrade
//! (`Upgrade: tcp`), so the gateway splices only once the engine itself answered `101`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tracing::debug;

/// Buffer per direction; attach traffic is interactive, larger buffers only add memory.
const BUF: usize = 16 * 1024;

/// A tunnel waiting for its client connection: the engine side and what to send the client
/// first.
pub struct Pending {
    /// Set for BuildKit's tunnels under `[api] buildkit = "mediate"`: the listener hands
    /// such a tunnel to `buildkit`, which judges every gRPC call in it, instead of copying
    /// bytes.
    pub mediation: Option<Mediation>,
    engine: OnUpgrade,
    permit: OwnedSemaphorePermit,
    /// The caller's in-flight slot: an open tunnel counts as a request until it closes.
    caller: Option<super::slots::CallerSlot>,
    /// The engine-style `200 OK` head of a legacy hijack, written to the client by the
    /// tunnel itself (hyper's own head for that response is discarded, see [`Handover`]).
    head: Option<Bytes>,
    idle: Option<Duration>,
}

/// Per client connection: where the pipeline leaves a tunnel for the listener to open once
/// hyper is done with the connection, and the state the connection's IO reports so that a
/// legacy hijack can replace hyper's response head with the engine's.
///
/// hyper always frames a `200` (it adds `content-length: 0`), and dockerd's legacy answer
/// has no framing at all (the raw stream follows the head). hyper offers no way to write
/// such a head, so once a legacy hijack is armed the connection's IO swallows whatever hyper
/// writes from then on (one empty `Connection: close` response), and the tunnel writes the
/// engine-style head itself. Arming waits until everything hyper wrote before has been
/// flushed, so no byte of an earlier (pipelined) response can be swallowed.
#[derive(Default)]
pub struct Handover {
    pending: Mutex<Option<Pending>>,
    discard: AtomicBool,
    dirty: AtomicBool,
    flushed: Notify,
}

/// Why a legacy hijack could not be armed.
#[derive(Debug)]
pub struct NotFlushed;

impl Handover {
    /// The IO is about to write (called before the write is attempted).
    pub fn on_write(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The IO flushed everything written so far.
    pub fn on_flush(&self) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.flushed.notify_waiters();
        }
    }

    /// Whether writes are to be swallowed (a legacy hijack is armed).
    pub fn discarding(&self) -> bool {
        self.discard.load(Ordering::Acquire)
    }

    /// Waits (at most `limit`) until every byte written to the client so far has been
    /// flushed: after that, the next bytes hyper writes belong to the current response.
    pub async fn settle(&self, limit: Duration) -> Result<(), NotFlushed> {
        let wait = async {
            loop {
                let notified = self.flushed.notified();
                if !self.dirty.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| NotFlushed)
    }

    /// Leaves a tunnel for the listener. `legacy_head`: the head to write to the client
    /// instead of hyper's (a legacy hijack); from now on hyper's writes are swallowed.
    pub fn put(
        &self,
        engine: OnUpgrade,
        permit: OwnedSemaphorePermit,
        caller: Option<super::slots::CallerSlot>,
        legacy_head: Option<Bytes>,
        idle: Option<Duration>,
        mediation: Option<Mediation>,
    ) {
        if legacy_head.is_some() {
            self.discard.store(true, Ordering::Release);
        }
        let pending = Pending {
            mediation,
            engine,
            permit,
            caller,
            head: legacy_head,
            idle,
        };
        if let Ok(mut slot) = self.pending.lock() {
            *slot = Some(pending);
        }
    }

    /// The tunnel left by the pipeline, if any.
    pub fn take(&self) -> Option<Pending> {
        self.pending.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// What a mediated BuildKit tunnel is judged by: who opened it and the policy in force when
/// it was opened (kept for the tunnel's life, as a request keeps it).
pub struct Mediation {
    /// `grpc` (the client calls the engine's BuildKit) or `session` (the engine calls the
    /// client's session services).
    pub endpoint: &'static str,
    /// The id of the `/session` or `/grpc` request that opened the tunnel.
    pub id: u64,
    pub caller: Arc<crate::identity::Caller>,
    pub policy: Arc<super::Policy>,
    /// The API version the tunnel's path named.
    pub version: Option<(u16, u16)>,
    /// The session a `/session` tunnel holds for its caller until it closes.
    pub session: Option<crate::owners::SessionClaim>,
}

/// An engine connection the engine agreed to switch, and the bounds the tunnel counts
/// against until it is dropped.
pub struct Opened {
    pub engine: TokioIo<hyper::upgrade::Upgraded>,
    _permit: OwnedSemaphorePermit,
    _caller: Option<super::slots::CallerSlot>,
}

impl Pending {
    /// Waits for the engine's side of the switched connection.
    pub async fn open(self) -> Result<Opened, hyper::Error> {
        let engine = self.engine.await?;
        Ok(Opened {
            engine: TokioIo::new(engine),
            _permit: self.permit,
            _caller: self.caller,
        })
    }
}

/// Runs the tunnel between `client` (whose already-read bytes are `read_ahead`) and the
/// engine; returns when both directions have finished.
pub async fn run<C>(mut client: C, read_ahead: Bytes, pending: Pending)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Pending {
        mediation: _,
        engine,
        permit: _permit,
        caller: _caller,
        head,
        idle,
    } = pending;
    let engine = match engine.await {
        Ok(e) => e,
        Err(e) => {
            debug!(error = %e, "engine upgrade did not complete");
            return;
        }
    };
    let mut engine = TokioIo::new(engine);
    if let Some(head) = head {
        if let Err(e) = client.write_all(&head).await {
            debug!(error = %e, "client went away before the hijacked head");
            return;
        }
    }
    // Bytes the client sent right after its request (stdin, before the answer) belong to
    // the stream.
    if !read_ahead.is_empty() {
        if let Err(e) = engine.write_all(&read_ahead).await {
            debug!(error = %e, "engine went away before the stream started");
            return;
        }
    }
    let moved = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        inner: client,
        moved: moved.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut engine, BUF, BUF);
    tokio::select! {
        r = copy => match r {
            Ok((up, down)) => debug!(up, down, "tunnel closed"),
            Err(e) => debug!(error = %e, "tunnel closed with an error"),
        },
        _ = quiet_for(idle, &moved) => debug!(?idle, "tunnel closed: idle"),
    }
}

/// Resolves once no byte moved for `idle` (checked in quarters of it, so the tunnel closes
/// between `idle` and 1.25 × `idle` after the last byte); never when `idle` is `None`.
async fn quiet_for(idle: Option<Duration>, moved: &AtomicU64) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let tick = idle / 4;
    let mut quiet = Duration::ZERO;
    let mut seen = moved.load(Ordering::Relaxed);
    while quiet < idle {
        tokio::time::sleep(tick).await;
        let now = moved.load(Ordering::Relaxed);
        quiet = if now == seen {
            quiet + tick
        } else {
            Duration::ZERO
        };
        seen = now;
    }
}

pin_project_lite::pin_project! {
    /// The client side of a tunnel, counting the bytes that move through it (every byte of
    /// the tunnel passes the client side once).
    struct Counted<C> {
        #[pin]
        inner: C,
        moved: Arc<AtomicU64>,
    }
}

impl<C: AsyncRead> AsyncRead for Counted<C> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<C: AsyncWrite> AsyncWrite for Counted<C> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.moved.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Under `[api] buildkit = "mediate"`, claims the session a `/session` request opens for its
/// caller before the request is forwarded: a session id is one caller's while it is open.
pub(super) fn claim_session(
    api: &crate::config::ApiConfig,
    route: &crate::route::Route,
    headers: &http::HeaderMap,
    builds: &Arc<crate::owners::Builds>,
    caller: &crate::identity::Caller,
) -> Result<Option<crate::owners::SessionClaim>, super::PipelineError> {
    if route.endpoint.name != "session" || api.buildkit != crate::config::BuildkitMode::Mediate {
        return Ok(None);
    }
    let id = headers
        .get("x-docker-expose-session-uuid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(super::PipelineError::NoSessionId)?;
    Ok(Some(builds.open_session(id, &caller.user)?))
}

/// The mediation of a BuildKit tunnel the engine just switched, when the policy mediates.
pub(super) fn mediation(ctx: &mut super::context::Context) -> Option<Mediation> {
    let route = ctx.route.as_ref()?;
    let endpoint = match route.endpoint.name {
        "grpc" => "grpc",
        "session" => "session",
        _ => return None,
    };
    if ctx.policy.api.buildkit != crate::config::BuildkitMode::Mediate {
        return None;
    }
    Some(Mediation {
        endpoint,
        id: ctx.id,
        caller: ctx.caller.clone(),
        policy: ctx.policy.clone(),
        version: route.version,
        session: ctx.session.take(),
    })
}

/// Whether dockerd hijacks this endpoint even without `Upgrade` (its attach and exec start
/// handlers; the websocket attach and BuildKit's tunnels need a real upgrade).
pub fn legacy_hijackable(endpoint: &str) -> bool {
    matches!(endpoint, "container.attach" | "exec.start")
}

/// The head dockerd writes when it hijacks an attach or exec request that did not ask to
/// upgrade: `200 OK`, the raw-stream media type, the engine's other end-to-end headers, and
/// no framing (the stream runs until either side closes).
pub fn legacy_head(engine_headers: &http::HeaderMap) -> Bytes {
    use http::header;
    let mut head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n".to_vec();
    for (name, value) in engine_headers {
        let skip = [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::UPGRADE,
        ];
        if skip.contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Bytes::from(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn legacy_head_is_unframed_and_keeps_engine_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
        );
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("tcp"));
        h.insert("api-version", HeaderValue::from_static("1.41"));
        let head = legacy_head(&h);
        assert_eq!(
            &head[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\napi-version: 1.41\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn settle_waits_for_the_flush() {
        let h = std::sync::Arc::new(Handover::default());
        assert!(h.settle(Duration::from_millis(10)).await.is_ok());
        h.on_write();
        assert!(h.settle(Duration::from_millis(20)).await.is_err());
        let h2 = h.clone();
        let waiter = tokio::spawn(async move { h2.settle(Duration::from_secs(5)).await.is_ok() });
        tokio::task::yield_now().await;
        h.on_flush();
        assert!(waiter.await.unwrap());
    }
}
