//! Dials the engine: a `tower::Service<Uri>` for hyper-util's pooled client that ignores the
//! URI and always connects to the configured unix socket or TCP address.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

use super::tls::EngineTls;
use crate::config::Address;
use crate::net::Stream;

/// Connects to the engine.
#[derive(Clone)]
pub struct Connector {
    address: Address,
    timeout: Duration,
    tls: Option<EngineTls>,
}

impl Connector {
    /// A connector for `address`, giving up after `timeout`.
    pub fn new(address: Address, timeout: Duration) -> Self {
        Self {
            address,
            timeout,
            tls: None,
        }
    }

    /// Speaks TLS over `tcp://` addresses (the handshake counts against the timeout).
    pub fn with_tls(mut self, tls: EngineTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let address = self.address.clone();
        let timeout = self.timeout;
        let tls = self.tls.clone();
        Box::pin(async move {
            let connect = async {
                Ok::<_, io::Error>(match &address {
                    Address::Unix(path) => Stream::Unix {
                        s: UnixStream::connect(path).await?,
                    },
                    Address::Tcp(hp) => {
                        let s = TcpStream::connect(hp.as_str()).await?;
                        s.set_nodelay(true)?;
                        match tls {
                            Some(tls) => Stream::TlsClient {
                                s: Box::new(tls.connector.connect(tls.name.clone(), s).await?),
                            },
                            None => Stream::Tcp { s },
                        }
                    }
                    Address::Tls(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            "tls:// is a listen address; reach a TLS engine with tcp:// and DOCKER_TLS_VERIFY",
                        ))
                    }
                })
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}
