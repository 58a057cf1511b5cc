//! Test harness: starts a real gateway in-process on a temporary unix socket in front of the
//! real dev engine (`scripts/dev-engine start`), and drives it with the real `docker` CLI
//! and raw HTTP. Nothing here imitates the engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use portcullis::config::Address;
use portcullis::{Config, Listener};

/// The engine under test: `PORTCULLIS_TEST_ENGINE`, else the dev engine's socket.
pub fn engine_address() -> Address {
    let url = std::env::var("PORTCULLIS_TEST_ENGINE")
        .unwrap_or_else(|_| "unix:///var/tmp/portcullis-engine/docker.sock".into());
    let addr: Address = url.parse().expect("PORTCULLIS_TEST_ENGINE is not a valid address");
    if let Address::Unix(p) = &addr {
        assert!(
            std::os::unix::net::UnixStream::connect(p).is_ok(),
            "no Docker engine answers at {url}: run `scripts/dev-engine start` (or `just test`)"
        );
    }
    addr
}

/// The test image every test uses (created by `scripts/dev-engine start`).
pub const IMAGE: &str = "portcullis/busybox:latest";

/// A unique name for objects a test creates, so tests can run in parallel on one engine.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "pc-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A gateway running in-process on its own socket, stopped on drop.
pub struct Gateway {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway with the default configuration in front of the test engine.
    pub fn start() -> Self {
        Self::start_with(Config::default())
    }

    /// Starts a gateway with `config` (its listen addresses are replaced by a temp socket;
    /// its engine by the test engine unless `keep_engine`).
    pub fn start_with(config: Config) -> Self {
        let mut config = config;
        config.engine.url = engine_address();
        Self::start_raw(config)
    }

    /// Starts a gateway with `config` exactly as given, except for the listen address.
    pub fn start_raw(mut config: Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("portcullis.sock");
        config.server.listen = vec![Address::Unix(socket.clone())];
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sock = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = Listener::bind(&Address::Unix(sock), 0o600)
                    .await
                    .expect("bind test socket");
                ready_tx.send(()).expect("ready");
                portcullis::run(vec![listener], config, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("gateway run");
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("gateway did not start");
        Gateway {
            socket,
            _dir: dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `DOCKER_HOST` for this gateway.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command pointed at this gateway.
    pub fn docker(&self) -> Command {
        docker_at(&self.docker_host())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `docker` command pointed at `host`, with a private client config directory.
pub fn docker_at(host: &str) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", host)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .stdin(Stdio::null());
    cmd
}

/// A `docker` command talking to the engine directly, for comparisons and state checks.
pub fn docker_direct() -> Command {
    docker_at(&engine_address().to_string())
}

/// Runs a command, returning its output; panics with the command's stderr on spawn failure.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout as a string.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes containers (force) directly on the engine; used in test cleanup.
pub fn rm_containers(names: &[&str]) {
    let mut cmd = docker_direct();
    cmd.args(["rm", "-f", "-v"]).args(names);
    let _ = cmd.stderr(Stdio::null()).stdout(Stdio::null()).status();
}

/// Sends one raw HTTP/1.1 request over a unix socket and returns everything the peer sent
/// until it closed the connection or `read_for` elapsed.
pub fn raw_http(socket: &Path, request: &[u8], read_for: Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(read_for)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = std::time::Instant::now() + read_for;
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}
