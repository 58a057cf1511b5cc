//! The client side: binds unix and TCP listeners, accepts connections up to
//! `limits.max_connections`, and serves HTTP/1 on each with a bounded request head and a
//! header-read deadline (slowloris defence). Each request goes to the [`Gateway`]; upgraded
//! connections (attach, exec) are handed over by hyper once the engine agreed.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::{Address, Limits};
use crate::identity::{Caller, Peer};
use crate::net::Stream;
use crate::pipeline::Gateway;

/// A bound listening socket.
pub enum Listener {
    /// A unix socket; the path is removed again on shutdown.
    Unix { listener: UnixListener, path: PathBuf },
    /// A TCP socket.
    Tcp { listener: TcpListener },
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: Address, source: io::Error },
    #[error("cannot listen on {address}: another process is serving on that socket")]
    InUse { address: Address },
}

impl Listener {
    /// Binds `address`. For a unix socket, creates the parent directory, replaces a stale
    /// socket file left by a dead process (but never one that still answers), and applies
    /// `socket_mode`.
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
        }
    }

    async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                let cred = s.peer_cred().ok();
                let peer = Peer::Unix {
                    uid: cred.map(|c| c.uid()),
                    gid: cred.map(|c| c.gid()),
                    pid: cred.and_then(|c| c.pid()),
                };
                Ok((Stream::Unix { s }, peer))
            }
            Listener::Tcp { listener } => {
                let (s, addr) = listener.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp { s }, Peer::Tcp { addr }))
            }
        }
    }

    fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp { .. } => None,
        }
    }
}

/// Serves every listener until `shutdown` resolves, then drains connections for at most
/// `limits.shutdown_grace`.
pub async fn serve(
    listeners: Vec<Listener>,
    gateway: Arc<Gateway>,
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

    let listeners: Vec<Arc<Listener>> = listeners.into_iter().map(Arc::new).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for listener in &listeners {
        if let Some(addr) = listener.local_address() {
            info!(%addr, "listening");
        }
        tasks.spawn(accept_loop(
            listener.clone(),
            gateway.clone(),
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

async fn accept_loop(
    listener: Arc<Listener>,
    gateway: Arc<Gateway>,
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
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let caller = Arc::new(Caller::from_peer(peer));
        let gateway = gateway.clone();
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            let caller = caller.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, caller).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut drain = drain.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { drain.wait_for(|d| *d).await.map(|_| ()) } => {
                    // Finish the request in flight, then close instead of keeping alive.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
}
