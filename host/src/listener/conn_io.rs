//! The client connection as hyper sees it: the socket, reporting writes and flushes to the
//! connection's [`Handover`], and swallowing hyper's writes once a legacy hijack is armed
//! (the tunnel then writes the engine-style head itself; `Handover` says why).
//!
//! It also holds back hyper's automatic answer to a request it cannot parse. hyper 1 writes
//! that answer itself (`400`, `414` or `431` with an empty body) and offers no hook to give
//! it a body, while Docker clients expect `{"message": ...}`. The answer is recognised by
//! its exact shape (status line, `content-length: 0`, `date`, maybe `connection: close`, at
//! the end of a write), swallowed, and the listener sends the Docker-style error in its
//! place once hyper reports the parse error.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pipeline::tunnel::Handover;

pin_project_lite::pin_project! {
    /// A client stream watched for the connection's handover.
    pub struct ConnIo<S> {
        #[pin]
        inner: S,
        handover: Arc<Handover>,
        parse_error: Option<u16>,
    }
}

impl<S> ConnIo<S> {
    /// Wraps `inner`, reporting to `handover`.
    pub fn new(inner: S, handover: Arc<Handover>) -> Self {
        Self {
            inner,
            handover,
            parse_error: None,
        }
    }

    /// The status of hyper's automatic parse-error answer, if one was swallowed.
    pub fn parse_error(&self) -> Option<u16> {
        self.parse_error
    }

    /// The socket, for the tunnel.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if this.handover.discarding() {
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some((start, status)) = automatic_error(buf) {
            if start == 0 {
                *this.parse_error = Some(status);
                return Poll::Ready(Ok(buf.len()));
            }
            this.handover.on_write();
            return this.inner.poll_write(cx, &buf[..start]);
        }
        this.handover.on_write();
        this.inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if this.handover.discarding() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        if let Some(last) = bufs.iter().rposition(|b| !b.is_empty()) {
            if let Some((start, status)) = automatic_error(&bufs[last]) {
                let before: usize = bufs[..last].iter().map(|b| b.len()).sum::<usize>() + start;
                if before == 0 {
                    *this.parse_error = Some(status);
                    return Poll::Ready(Ok(bufs[last].len()));
                }
                // Rare (an error right behind a pipelined answer): write what comes before.
                let mut head: Vec<io::IoSlice<'_>> = bufs[..last].to_vec();
                head.push(io::IoSlice::new(&bufs[last][..start]));
                this.handover.on_write();
                return this.inner.poll_write_vectored(cx, &head);
            }
        }
        this.handover.on_write();
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.handover.discarding() {
            return Poll::Ready(Ok(()));
        }
        let r = this.inner.poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            this.handover.on_flush();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// hyper's automatic answer to an unparseable request, if `buf` ends with one: where it
/// starts and its status. Only the last bytes are looked at (the answer is short), so the
/// check costs nothing on large writes.
fn automatic_error(buf: &[u8]) -> Option<(usize, u16)> {
    const LONGEST: usize = 160;
    let from = buf.len().saturating_sub(LONGEST);
    let start = from + find_last(&buf[from..], b"HTTP/1.1 4")?;
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() - start => {}
        _ => return None,
    }
    let status = resp.code?;
    let only_framing = resp.headers.iter().all(|h| match h.name {
        "content-length" => h.value == &b"0"[..],
        "connection" => h.value == &b"close"[..],
        "date" => true,
        _ => false,
    });
    (matches!(status, 400 | 414 | 431) && only_framing).then_some((start, status))
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn recognises_only_hyper_automatic_error_answers() {
        let auto = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 17:00:00 GMT\r\n\r\n";
        assert_eq!(automatic_error(auto), Some((0, 431)));
        let mut behind = b"0\r\n\r\n".to_vec();
        behind.extend_from_slice(
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(automatic_error(&behind), Some((5, 400)));
        // Answers from the engine or the pipeline carry other headers or a body.
        let engine = b"HTTP/1.1 400 Bad Request\r\napi-version: 1.41\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error(engine), None);
        let json = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(automatic_error(json), None);
        assert_eq!(
            automatic_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(automatic_error(&[b'x'; 100_000]), None);
    }

    #[tokio::test]
    async fn writes_pass_until_a_legacy_hijack_is_armed_then_are_swallowed() {
        let (a, mut b) = tokio::io::duplex(1024);
        let handover = Arc::new(Handover::default());
        let mut io = ConnIo::new(a, handover.clone());
        io.write_all(b"before").await.unwrap();
        io.flush().await.unwrap();
        assert!(handover
            .settle(std::time::Duration::from_millis(10))
            .await
            .is_ok());

        let (_tx, engine) = {
            // An engine side that never completes: only the discard switch matters here.
            let req = http::Request::new(());
            let mut req = req;
            ((), hyper::upgrade::on(&mut req))
        };
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        handover.put(
            engine,
            permit,
            None,
            Some(bytes::Bytes::from_static(b"HEAD")),
            None,
            None,
        );
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.flush().await.unwrap();
        let mut inner = io.into_inner();
        inner.write_all(b"after").await.unwrap();
        drop(inner);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"beforeafter");
        assert!(handover.take().is_some());
    }
}
