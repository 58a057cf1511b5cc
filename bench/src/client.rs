//! The client side: HTTP/1 over unix sockets with hyper, the way a Docker client talks to its
//! socket (keep-alive, one connection per concurrent caller), plus the streamed tar body that
//! stands in for `docker cp`.

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Opens one keep-alive HTTP/1 connection on a unix socket; its driver runs as its own task
/// and ends when the returned sender is dropped.
pub async fn connect<B>(socket: &Path) -> Result<SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_socket(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Connects, retrying while the listener's accept backlog is full: a unix socket connect then
/// fails at once with EAGAIN instead of waiting (socat listens with a backlog of 5, and a
/// point opens up to 100 connections at once).
async fn connect_socket(socket: &Path) -> std::io::Result<UnixStream> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            other => return other,
        }
    }
}

/// A request with the headers a Docker client sends. The Host header is required: Go's HTTP
/// server (dockerd) answers 400 without one.
pub fn request(method: Method, path: &str, json: Option<Bytes>) -> Request<Full<Bytes>> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "docker")
        .header(http::header::USER_AGENT, "portcullis-bench");
    match json {
        Some(body) => builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body)),
        None => builder.body(Full::new(Bytes::new())),
    }
    .expect("a request built from valid parts")
}

/// Sends `req` and reads the whole response body (so the connection can be reused).
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await.context("connection closed")?;
    let response = sender
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok((status, body))
}

/// Like [`send`], but fails unless the status is `expected`, quoting the engine's message.
pub async fn expect(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    expected: StatusCode,
) -> Result<Bytes> {
    let what = format!("{} {}", req.method(), req.uri());
    let (status, body) = send(sender, req).await?;
    if status != expected {
        bail!(
            "{what}: {status} (expected {expected}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
        );
    }
    Ok(body)
}

/// A tar archive holding one regular file of `size` pseudo-random bytes, produced on the fly
/// from one shared 1 MiB block: the archive is never in memory. Its length is not announced,
/// so hyper sends it chunked, as the `docker` CLI does for `docker cp`.
pub struct TarStream {
    header: Option<Bytes>,
    remaining: u64,
    block: Bytes,
    trailer: Option<Bytes>,
}

impl TarStream {
    /// The file's name inside the archive.
    pub const FILE_NAME: &'static str = "portcullis-bench.bin";

    pub fn new(size: u64) -> Self {
        let mut header = tar::Header::new_gnu();
        header
            .set_path(Self::FILE_NAME)
            .expect("a short relative path fits a tar header");
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        // The file's data is padded to a 512-byte block; two zero blocks end the archive.
        let padding = (512 - size % 512) % 512;
        Self {
            header: Some(Bytes::copy_from_slice(header.as_bytes())),
            remaining: size,
            block: random_block(1 << 20),
            trailer: Some(Bytes::from(vec![0u8; padding as usize + 1024])),
        }
    }
}

/// Incompressible filler (xorshift), so nothing on the path can take a shortcut on zeros.
fn random_block(len: usize) -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    Bytes::from(data)
}

impl Body for TarStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(header) = this.header.take() {
            return Poll::Ready(Some(Ok(Frame::data(header))));
        }
        if this.remaining > 0 {
            let n = this.remaining.min(this.block.len() as u64);
            this.remaining -= n;
            return Poll::Ready(Some(Ok(Frame::data(this.block.slice(..n as usize)))));
        }
        Poll::Ready(this.trailer.take().map(|t| Ok(Frame::data(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.header.is_none() && self.remaining == 0 && self.trailer.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tar_stream_is_a_valid_archive() {
        let size = 3 * 1024 * 1024 + 100;
        let bytes = TarStream::new(size).collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len() as u64, 512 + size + (512 - size % 512) + 1024);
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().into_owned(), e.size())
            })
            .collect();
        assert_eq!(entries, vec![(TarStream::FILE_NAME.into(), size)]);
    }
}
