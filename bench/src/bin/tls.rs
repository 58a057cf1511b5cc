//! `portcullis-bench-tls`: what mutual TLS costs on the client side of the gateway.
//!
//! Makes development certificates (`portcullis certs init`), serves one gateway on a unix
//! socket and a `tls://` listener with client certificates in front of the engine, then
//! measures, in turns so both see the same machine load:
//!
//! - `handshake+ping`: a new TCP connection, a TLS 1.3 handshake with a client certificate
//!   and `GET /_ping` (what a docker CLI command pays per connection);
//! - `tls keep-alive ping` and `unix keep-alive ping`: `GET /_ping` on an established
//!   connection, over TLS and over the unix socket; their difference is what TLS adds per
//!   request.
//!
//! ```text
//! cargo run --release -p portcullis-bench --bin portcullis-bench-tls -- \
//!     --portcullis target/release/portcullis --engine unix:///var/tmp/portcullis-engine/docker.sock
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

#[derive(Parser)]
struct Args {
    /// The gateway binary.
    #[arg(long)]
    portcullis: PathBuf,
    /// The engine.
    #[arg(long, default_value = "unix:///var/tmp/portcullis-engine/docker.sock")]
    engine: String,
    /// Handshakes measured.
    #[arg(long, default_value_t = 1000)]
    handshakes: u64,
    /// Requests measured on each established connection.
    #[arg(long, default_value_t = 5000)]
    requests: u64,
}

const PING: &[u8] = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";

/// Reads one response to `GET /_ping` (head, then a `Content-Length` body).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed after {:?}", String::from_utf8_lossy(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("unexpected answer: {head}");
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<()> {
    s.write_all(PING).await?;
    read_response(s, buf).await
}

fn client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
        roots.add(c?)?;
    }
    let chain =
        CertificateDer::pem_file_iter(dir.join("cert.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<22} p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs   (n={})",
        micros(h, 0.5),
        micros(h, 0.9),
        micros(h, 0.99),
        h.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("portcullis-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new(&args.portcullis)
        .args(["certs", "init"])
        .arg(&dir)
        .args(["--user", "bench"])
        .stdout(Stdio::null())
        .status()
        .context("running portcullis certs init")?;
    if !ok.success() {
        bail!("portcullis certs init failed");
    }
    // A free port: bind, note it, release it for the gateway.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let socket = dir.join("portcullis.sock");
    let _gw = Gateway(
        Command::new(&args.portcullis)
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--listen")
            .arg(format!("tls://127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(dir.join("server/cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("server/key.pem"))
            .arg("--tls-client-ca")
            .arg(dir.join("ca.pem"))
            .args(["--engine", &args.engine])
            .env("PORTCULLIS_LOG", "warn")
            .spawn()
            .context("starting portcullis serve")?,
    );
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).await.is_err() || UnixStream::connect(&socket).await.is_err() {
        if Instant::now() > deadline {
            bail!("the gateway did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connector = tokio_rustls::TlsConnector::from(client_config(&dir.join("bench"))?);
    let name = ServerName::try_from("localhost")?;
    let mut buf = Vec::with_capacity(4096);

    let mut handshake = Histogram::<u64>::new(3)?;
    let mut tls_ka = Histogram::<u64>::new(3)?;
    let mut unix_ka = Histogram::<u64>::new(3)?;
    let mut tls = connector
        .connect(name.clone(), TcpStream::connect(&addr).await?)
        .await?;
    tls.get_ref().0.set_nodelay(true)?;
    let mut unix = UnixStream::connect(&socket).await?;
    // Warm-up: connection pool to the engine, caches.
    for _ in 0..200 {
        ping(&mut tls, &mut buf).await?;
        ping(&mut unix, &mut buf).await?;
    }
    let rounds = args.handshakes.max(1);
    let per_round = (args.requests / rounds).max(1);
    for _ in 0..rounds {
        let t = Instant::now();
        let tcp = TcpStream::connect(&addr).await?;
        tcp.set_nodelay(true)?;
        let mut s = connector.connect(name.clone(), tcp).await?;
        ping(&mut s, &mut buf).await?;
        handshake.record(t.elapsed().as_nanos() as u64)?;
        drop(s);
        for _ in 0..per_round {
            let t = Instant::now();
            ping(&mut tls, &mut buf).await?;
            tls_ka.record(t.elapsed().as_nanos() as u64)?;
            let t = Instant::now();
            ping(&mut unix, &mut buf).await?;
            unix_ka.record(t.elapsed().as_nanos() as u64)?;
        }
    }
    report("handshake+ping (mTLS)", &handshake);
    report("tls keep-alive ping", &tls_ka);
    report("unix keep-alive ping", &unix_ka);
    println!(
        "TLS adds {:.1} µs p50 per request on an established connection",
        micros(&tls_ka, 0.5) - micros(&unix_ka, 0.5)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
