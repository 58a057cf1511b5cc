//! Byte streams shared by both sides of the gateway: a client connection and an engine
//! connection are each a unix socket, a TCP stream or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pin_project_lite::pin_project! {
    /// A connected socket.
    #[project = StreamProj]
    pub enum Stream {
        /// A unix socket.
        Unix { #[pin] s: UnixStream },
        /// A TCP stream.
        Tcp { #[pin] s: TcpStream },
        /// A TLS connection from a client (boxed: the TLS state is large, unix and TCP
        /// connections should not pay for its size).
        Tls { #[pin] s: Box<tokio_rustls::server::TlsStream<TcpStream>> },
        /// A TLS connection to the engine.
        TlsClient { #[pin] s: Box<tokio_rustls::client::TlsStream<TcpStream>> },
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Unix { s } => s.poll_read(cx, buf),
            StreamProj::Tcp { s } => s.poll_read(cx, buf),
            StreamProj::Tls { s } => s.poll_read(cx, buf),
            StreamProj::TlsClient { s } => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            StreamProj::Unix { s } => s.poll_write(cx, buf),
            StreamProj::Tcp { s } => s.poll_write(cx, buf),
            StreamProj::Tls { s } => s.poll_write(cx, buf),
            StreamProj::TlsClient { s } => s.poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.project() {
            StreamProj::Unix { s } => s.poll_write_vectored(cx, bufs),
            StreamProj::Tcp { s } => s.poll_write_vectored(cx, bufs),
            StreamProj::Tls { s } => s.poll_write_vectored(cx, bufs),
            StreamProj::TlsClient { s } => s.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Unix { s } => s.poll_flush(cx),
            StreamProj::Tcp { s } => s.poll_flush(cx),
            StreamProj::Tls { s } => s.poll_flush(cx),
            StreamProj::TlsClient { s } => s.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.project() {
            StreamProj::Unix { s } => s.poll_shutdown(cx),
            StreamProj::Tcp { s } => s.poll_shutdown(cx),
            StreamProj::Tls { s } => s.poll_shutdown(cx),
            StreamProj::TlsClient { s } => s.poll_shutdown(cx),
        }
    }
}
