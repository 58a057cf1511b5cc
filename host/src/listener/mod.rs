//! The client side: binds unix, TCP and TLS listeners, accepts connections up to
//! `limits.max_connections`, and serves HTTP/1 on each with a bounded request head and a
//! header-read deadline (slowloris defence). Each connection's transport proof (peer
//! credentials, client certificate) and each request's bearer token go through
//! [`identity`](crate::identity) first: a request without a caller is refused here. Each
//! request then goes to the [`Gateway`]; upgraded connections (attach, exec) are handed over
//! by hyper once the engine agreed.

mod conn_io;
pub mod tls;

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::{Address, Config, Limits};
use crate::identity::{Peer, Proof, Resolver};
use crate::metrics::Open;
use crate::net::Stream;
use crate::pipeline::tunnel::{self, Handover};
use crate::pipeline::Gateway;
use conn_io::ConnIo;
use tls::{TlsError, TlsSetup};

/// A bound listening socket.
pub enum Listener {
    /// A unix socket; the path is removed again on shutdown.
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp { listener: TcpListener },
    /// A TCP socket whose connections start with a TLS handshake.
    Tls {
        listener: TcpListener,
        tls: Arc<TlsSetup>,
    },
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: Address, source: io::Error },
    #[error("cannot listen on {address}: another process is serving on that socket")]
    InUse { address: Address },
    #[error(
        "cannot listen on {address}: a tls:// address needs [server.tls] (--tls-cert, --tls-key)"
    )]
    NoTls { address: Address },
    #[error("cannot listen on {address}: {source}")]
    Tls { address: Address, source: TlsError },
    #[error("refusing plain TCP on {address}, which is not a loopback address: anyone on the network could use the engine. Use tls:// (with client certificates), or allow it explicitly with --insecure-tcp / server.insecure_tcp")]
    InsecureTcp { address: Address },
    #[error("cannot set the owner of {address}: {source}")]
    Owner { address: Address, source: io::Error },
}

impl Listener {
    /// Binds `address` as `[server]` says: unix sockets get `socket_mode`, `socket_owner`
    /// and `socket_group`; `tls://` uses `[server.tls]`; plain TCP must be on loopback unless
    /// `insecure_tcp` (then a warning is logged).
    pub async fn bind_config(address: &Address, config: &Config) -> Result<Self, ListenError> {
        let server = &config.server;
        match address {
            Address::Tls(hp) => {
                let tls_config = server.tls.as_ref().ok_or_else(|| ListenError::NoTls {
                    address: address.clone(),
                })?;
                let tls = TlsSetup::from_config(config, tls_config).map_err(|source| {
                    ListenError::Tls {
                        address: address.clone(),
                        source,
                    }
                })?;
                let listener =
                    TcpListener::bind(hp.as_str())
                        .await
                        .map_err(|source| ListenError::Bind {
                            address: address.clone(),
                            source,
                        })?;
                Ok(Listener::Tls {
                    listener,
                    tls: Arc::new(tls),
                })
            }
            Address::Tcp(_) => {
                let l = Self::bind(address, 0).await?;
                let loopback = l.local_ip().is_some_and(|ip| ip.is_loopback());
                if !loopback {
                    if !server.insecure_tcp {
                        return Err(ListenError::InsecureTcp {
                            address: address.clone(),
                        });
                    }
                    warn!(%address, "plain TCP on a non-loopback address (insecure_tcp): connections are neither encrypted nor authenticated");
                }
                Ok(l)
            }
            Address::Unix(path) => {
                let mode = config.socket_mode().unwrap_or(0o660);
                let l = Self::bind(address, mode).await?;
                let uid = server
                    .socket_owner
                    .as_deref()
                    .and_then(crate::config::uid_of);
                let gid = server
                    .socket_group
                    .as_deref()
                    .and_then(crate::config::gid_of);
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::chown(path, uid, gid).map_err(|source| {
                        ListenError::Owner {
                            address: address.clone(),
                            source,
                        }
                    })?;
                }
                Ok(l)
            }
        }
    }

    fn local_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Listener::Tcp { listener } | Listener::Tls { listener, .. } => {
                listener.local_addr().ok().map(|a| a.ip())
            }
            Listener::Unix { .. } => None,
        }
    }

    /// Binds `address`. For a unix socket, creates the parent directory, replaces a stale
    /// socket file left by a dead process (but never one that still answers), and applies
    /// `socket_mode`. `tls://` needs the TLS settings: use [`Listener::bind_config`].
    pub async fn bind(address: &Address, socket_mode: u32) -> Result<Self, ListenError> {
        let bind_err = |source| ListenError::Bind {
            address: address.clone(),
            source,
        };
        match address {
            Address::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(bind_err)?;
                }
                if path.exists() {
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(ListenError::InUse {
                            address: address.clone(),
                        });
                    }
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))
                    .map_err(bind_err)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Address::Tcp(hp) => {
                let listener = TcpListener::bind(hp.as_str()).await.map_err(bind_err)?;
                Ok(Listener::Tcp { listener })
            }
            Address::Tls(_) => Err(ListenError::NoTls {
                address: address.clone(),
            }),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_address(&self) -> Option<Address> {
        match self {
            Listener::Unix { path, .. } => Some(Address::Unix(path.clone())),
            Listener::Tcp { listener } => listener
                .local_addr()
                .ok()
                .map(|a| Address::Tcp(a.to_string())),
            Listener::Tls { listener, .. } => listener
                .local_addr()
                .ok()
                .map(|a| Address::Tls(a.to_string())),
        }
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                let cred = s.peer_cred().ok();
                let peer = Peer::Unix {
                    uid: cred.map(|c| c.uid()),
                    gid: cred.map(|c| c.gid()),
                    pid: cred.and_then(|c| c.pid()),
                };
                let proof = cred.map_or(Proof::Nothing, |c| Proof::Uid(c.uid()));
                Ok(Accepted::Ready(Stream::Unix { s }, peer, proof))
            }
            Listener::Tcp { listener } => {
                let (s, addr) = listener.accept().await?;
                s.set_nodelay(true)?;
                Ok(Accepted::Ready(
                    Stream::Tcp { s },
                    Peer::Tcp { addr },
                    Proof::Nothing,
                ))
            }
            Listener::Tls { listener, tls } => {
                let (s, addr) = listener.accept().await?;
                s.set_nodelay(true)?;
                Ok(Accepted::Tls(s, addr, tls.clone()))
            }
        }
    }

    fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp { .. } | Listener::Tls { .. } => None,
        }
    }
}

/// Sends the Docker-style answer in place of hyper's empty one to a request it could not
/// parse (see `conn_io`), then closes.
/// The status and message a request hyper could not parse is answered with.
fn parse_error_message(
    status: u16,
    e: &hyper::Error,
    limits: &Limits,
) -> (http::StatusCode, String) {
    let message = match status {
        431 => format!(
            "request headers too large (limit {} bytes, {} headers)",
            limits.max_header_bytes, limits.max_headers
        ),
        414 => "request URI too long".to_owned(),
        _ => format!("malformed HTTP request: {e}"),
    };
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    (status, format!("portcullis: {message}"))
}

async fn answer_parse_error(client: &mut Stream, status: http::StatusCode, message: &str) {
    use tokio::io::AsyncWriteExt;
    let body = crate::error::DockerError::new(status, message.to_owned()).body();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(&body).await;
    let _ = client.shutdown().await;
}

/// An accepted connection: ready to serve, or still to go through a TLS handshake (done in
/// the connection's own task, so a slow handshake never holds up the accept loop).
enum Accepted {
    Ready(Stream, Peer, Proof),
    Tls(TcpStream, std::net::SocketAddr, Arc<TlsSetup>),
}

impl Accepted {
    /// The stream to serve HTTP on, who is at the other end and what that proves; `None`
    /// when the TLS handshake failed or took longer than `deadline`.
    async fn establish(self, deadline: std::time::Duration) -> Option<(Stream, Peer, Proof)> {
        match self {
            Accepted::Ready(s, peer, proof) => Some((s, peer, proof)),
            Accepted::Tls(s, addr, tls) => {
                let acceptor = tls.acceptor();
                match tokio::time::timeout(deadline, acceptor.accept(s)).await {
                    Ok(Ok(s)) => {
                        let proof = tls.proof(s.get_ref().1);
                        Some((Stream::Tls { s: Box::new(s) }, Peer::Tls { addr }, proof))
                    }
                    Ok(Err(e)) => {
                        // The client got the TLS alert; this is the operator's side of it.
                        info!(peer = %addr, error = %e, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        info!(peer = %addr, "TLS handshake timed out");
                        None
                    }
                }
            }
        }
    }
}

/// Serves every listener until `shutdown` resolves, then drains connections for at most
/// `limits.shutdown_grace`.
pub async fn serve(
    listeners: Vec<Listener>,
    gateway: Arc<Gateway>,
    resolver: Arc<Resolver>,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let builder = Arc::new(builder);

    let shared_limits = Arc::new(limits.clone());
    let listeners: Vec<Arc<Listener>> = listeners.into_iter().map(Arc::new).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for listener in &listeners {
        if let Some(addr) = listener.local_address() {
            info!(%addr, "listening");
        }
        tasks.spawn(accept_loop(
            listener.clone(),
            gateway.clone(),
            resolver.clone(),
            shared_limits.clone(),
            builder.clone(),
            slots.clone(),
            drain_rx.clone(),
        ));
    }

    shutdown.await;
    info!("shutting down: no new connections, draining in-flight requests");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    for l in &listeners {
        if let Some(path) = l.unix_path() {
            let _ = std::fs::remove_file(path);
        }
    }
    let _ = drain_tx.send(true);
    // Every connection holds a slot until it ends: all slots free means all drained.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("shutdown grace period over; closing remaining connections");
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: Arc<Listener>,
    gateway: Arc<Gateway>,
    resolver: Arc<Resolver>,
    limits: Arc<Limits>,
    builder: Arc<http1::Builder>,
    slots: Arc<Semaphore>,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // Wait for a free slot before accepting: excess clients queue in the kernel backlog
        // instead of costing the gateway memory.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gateway = gateway.clone();
        let resolver = resolver.clone();
        let builder = builder.clone();
        let limits = limits.clone();
        let handshake_deadline = limits.header_read_timeout;
        let mut drain = drain.clone();
        tokio::spawn(async move {
            let _open = Open::new(&gateway.metrics().request.connections);
            let Some((stream, peer, proof)) = accepted.establish(handshake_deadline).await else {
                drop(permit);
                return;
            };
            let identity = Arc::new(resolver.connection(peer, proof));
            let handover = Arc::new(Handover::default());
            let tunnel_gateway = gateway.clone();
            let conn_identity = identity.clone();
            let conn_handover = handover.clone();
            let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                let identity = identity.clone();
                // The pipeline leaves attach/exec tunnels here for this task to open.
                req.extensions_mut().insert(conn_handover.clone());
                // Boxed: taking the connection back from hyper (`poll_without_shutdown`)
                // needs an `Unpin` service future.
                Box::pin(async move {
                    let resp = match identity.caller(req.headers_mut()) {
                        Ok(caller) => gateway.handle(req, caller).await,
                        Err(e) => {
                            info!(peer = %identity.peer(), error = %e, "request refused: no caller");
                            gateway.unidentified(&req, identity.peer(), &e).await
                        }
                    };
                    Ok::<_, Infallible>(resp)
                })
            });
            let io = TokioIo::new(ConnIo::new(stream, handover.clone()));
            // Not `with_upgrades()`: hyper hands a connection over only after a 101, and
            // the legacy hijack answers 200. The connection is taken back by hand in both
            // cases once hyper is done with it (see `pipeline::tunnel`).
            let mut conn = builder.serve_connection(io, service);
            let mut draining = false;
            let mut drained = Box::pin(async move {
                let _ = drain.wait_for(|d| *d).await;
            });
            let result = std::future::poll_fn(|cx| {
                if !draining && drained.as_mut().poll(cx).is_ready() {
                    // Finish the request in flight, then close instead of keeping alive.
                    draining = true;
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                }
                conn.poll_without_shutdown(cx)
            })
            .await;
            let parts = conn.into_parts();
            let io = parts.io.into_inner();
            if let Err(e) = result {
                debug!(error = %e, "client connection ended with an error");
                if let Some(status) = io.parse_error() {
                    let (status, message) = parse_error_message(status, &e, &limits);
                    answer_parse_error(&mut io.into_inner(), status, &message).await;
                    // Refused before it was a request: still on the record.
                    tunnel_gateway
                        .malformed(
                            conn_identity.connection_caller(),
                            conn_identity.peer(),
                            status,
                            message,
                        )
                        .await;
                }
                drop(permit);
                return;
            }
            let mut client = io.into_inner();
            match handover.take() {
                Some(pending) => {
                    // A tunnel counts against the tunnel limit, not the connection limit.
                    drop(permit);
                    if pending.mediation.is_some() {
                        crate::buildkit::serve(client, parts.read_buf, pending, tunnel_gateway)
                            .await;
                    } else {
                        tunnel::run(client, parts.read_buf, pending).await;
                    }
                    return;
                }
                None => {
                    use tokio::io::AsyncWriteExt;
                    let _ = client.shutdown().await;
                }
            }
            drop(permit);
        });
    }
}
