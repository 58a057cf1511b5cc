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
    let addr: Address = url
        .parse()
        .expect("PORTCULLIS_TEST_ENGINE is not a valid address");
    if let Address::Unix(p) = &addr {
        assert!(
            std::os::unix::net::UnixStream::connect(p).is_ok(),
            "no Docker engine answers at {url}: run `scripts/dev-engine start` (or `just test`)"
        );
    }
    addr
}

/// A container command that prints `line N` every 100 ms forever (`sh -c TICKER`), for
/// streaming tests.
pub const TICKER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";

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
    /// Directories the gateway's configuration points into (its audit store, ...).
    _state: Option<tempfile::TempDir>,
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
            _state: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Starts a gateway with the shipped `policies/portcullis.toml` (the default chain, built
    /// by `just plugins`) in front of `engine` (default: the test engine), its audit store and
    /// its record of repository owners in a temporary directory, open to every local user.
    pub fn start_shipped(engine: Option<Address>) -> Self {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/portcullis.toml");
        let mut config = Config::load(&file).expect("policies/portcullis.toml");
        let state = tempfile::tempdir().expect("tempdir");
        if let Some(audit) = &mut config.audit {
            audit.path = state.path().join("audit");
        }
        if let Some(owners) = &mut config.owners {
            owners.path = state.path().join("owners");
        }
        if let Some(admin) = &mut config.admin {
            admin.listen = Address::Unix(state.path().join("admin.sock"));
        }
        config.engine.url = engine.unwrap_or_else(engine_address);
        let mut gw = Self::start_raw(config);
        gw._state = Some(state);
        gw.open_to_everyone();
        gw
    }

    /// The admin listener's socket of a gateway started with [`Gateway::start_shipped`].
    pub fn admin_socket(&self) -> Option<PathBuf> {
        self._state.as_ref().map(|s| s.path().join("admin.sock"))
    }

    /// `DOCKER_HOST` for this gateway.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command pointed at this gateway.
    pub fn docker(&self) -> Command {
        docker_at(&self.docker_host())
    }

    /// Lets every local user connect (the socket 0666 in a 0711 directory), so tests can
    /// call as several real users, each identified by its peer uid.
    pub fn open_to_everyone(&self) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.socket.parent().expect("socket dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod dir");
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod socket");
    }
}

/// How long a CLI command of a test may take (a build, a compose project's step).
const CLI_LIMIT: Duration = Duration::from_secs(240);

/// Runs `cmd`, which must succeed; its output.
pub fn pass(cmd: &mut Command) -> String {
    let out = run_timeout(cmd, None, CLI_LIMIT);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    text(&out)
}

/// Runs `cmd`, which must fail with every one of `expect` in its output.
pub fn refused(cmd: &mut Command, expect: &[&str]) -> String {
    let out = run_timeout(cmd, None, CLI_LIMIT);
    let all = text(&out);
    assert!(!out.status.success(), "{cmd:?} passed: {all}");
    for e in expect {
        assert!(all.contains(e), "{cmd:?}: {e:?} not in {all}");
    }
    all
}

/// The id of the image `reference` names on the engine, asked directly; none when the
/// engine answers that it has no such image (dockerd: "No such image", Podman: "image not
/// known"). Any other failure fails the test: an engine error is not an absent image.
pub fn image_id(reference: &str) -> Option<String> {
    let out = run(docker_direct().args(["image", "inspect", "--format", "{{.Id}}", reference]));
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let err = text(&out);
    assert!(
        err.contains("No such image") || err.contains("image not known"),
        "inspect {reference}: {err}"
    );
    None
}

/// Local users created for a test (system users without a home) and removed on drop.
pub struct Users(Vec<String>);

impl Users {
    pub fn create(names: &[&str]) -> Self {
        for n in names {
            let _ = Command::new("userdel").arg(n).output();
            let out = run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                n,
            ]));
            assert!(
                out.status.success(),
                "useradd {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Users(names.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("userdel").arg(n).output();
        }
    }
}

/// `program` (`docker`, `docker-compose`, ...) run as the local user `user`, talking to
/// `docker_host`, with no client configuration of its own.
pub fn as_user(user: &str, docker_host: &str, program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args([
        "-u",
        user,
        "--",
        "env",
        &format!("DOCKER_HOST={docker_host}"),
        "DOCKER_CONFIG=/nonexistent",
        program,
    ])
    .stdin(Stdio::null());
    cmd
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

/// The repository's root (the workspace `tests/` sits in).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A command's stdout and stderr together, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command, returning its output; panics with the command's stderr on spawn failure.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout as a string.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    stdout_of_success(cmd, out)
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
    // A peer may answer and close before reading everything (an oversized head gets its
    // 431 early): a failed write is not the test's verdict, what the peer sent back is.
    let _ = s.write_all(request);
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

/// The label every object a test creates carries, so leftovers are easy to find and remove
/// (`docker ps -a --filter label=portcullis-test`).
pub const TEST_LABEL: &str = "portcullis-test=1";

/// Force-removes, directly on the engine, everything a test registered, when dropped (also
/// when the test panics). Register an object before creating it, so a half-done creation is
/// cleaned up too.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers a container name and returns it.
    pub fn container(&mut self, name: &str) -> String {
        self.containers.push(name.to_owned());
        name.to_owned()
    }
    /// Registers an image reference (or id) and returns it.
    pub fn image(&mut self, name: &str) -> String {
        self.images.push(name.to_owned());
        name.to_owned()
    }
    /// Registers a volume name and returns it.
    pub fn volume(&mut self, name: &str) -> String {
        self.volumes.push(name.to_owned());
        name.to_owned()
    }
    /// Registers a network name and returns it.
    pub fn network(&mut self, name: &str) -> String {
        self.networks.push(name.to_owned());
        name.to_owned()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str], names: &[String]| {
            if names.is_empty() {
                return;
            }
            let _ = docker_direct()
                .args(args)
                .args(names)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        // Containers first: they hold images, volumes and networks.
        quiet(&["rm", "-f", "-v"], &self.containers);
        quiet(&["network", "rm"], &self.networks);
        quiet(&["volume", "rm", "-f"], &self.volumes);
        quiet(&["rmi", "-f"], &self.images);
    }
}

/// Runs `cmd` with `stdin` fed to it (then closed), killing it and panicking if it has not
/// finished within `limit`: a hang fails the test instead of hanging CI.
pub fn run_timeout(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    use std::io::{Read, Write};
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
                // Dropping the pipe closes it: the child sees EOF on stdin.
            }))
        }
        _ => None,
    };
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Like [`ok`], with a time limit.
pub fn ok_timeout(cmd: &mut Command, limit: Duration) -> String {
    let out = run_timeout(cmd, None, limit);
    stdout_of_success(cmd, out)
}

/// The stdout of a command that must have succeeded; otherwise panics with its output.
fn stdout_of_success(cmd: &Command, out: Output) -> String {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `limit`.
/// Waiting is never the verdict: the condition is.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A long-running command (`logs -f`, `events`, `attach`) whose stdout lines arrive on a
/// channel; killed when dropped.
pub struct Streaming {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Streaming {
    /// Spawns `cmd` with stdout piped (stderr inherited, so it shows in the test log).
    pub fn spawn(cmd: &mut Command) -> Self {
        use std::io::BufRead;
        cmd.stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Streaming {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `pred`, panicking with everything seen after `limit`.
    pub fn expect_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "no matching line within {limit:?} ({e}); lines seen: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the process to exit by itself within `limit`; returns its status and the
    /// stdout lines not consumed yet.
    pub fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let status = wait_for("the streaming command to exit", limit, || {
            self.child.try_wait().expect("wait")
        });
        let mut rest = Vec::new();
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        (status, rest)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id (to look at it, never to signal anything else).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A parsed HTTP/1.1 response (body de-chunked when chunked).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses a complete response as read from the wire; `None` if there is no status line.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let end = find(raw, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = raw[end + 4..].to_vec();
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if chunked {
            body = dechunk(&body);
        }
        Some(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_str, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// Asserts that the gateway at `socket` still answers `GET /_ping` with 200: after a test
/// made it refuse, cut or fail something, it must go on serving.
pub fn still_serves(socket: &Path) {
    let r = http(
        socket,
        &request("GET", "/_ping", None),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 200, "gateway stopped serving: {r:?}");
}

/// Sends one request on a new connection and parses the first response, reading until it
/// is complete (by `Content-Length`, chunked framing, or the peer closing), so a kept-alive
/// connection does not cost `read_for`. Panics if no complete response came back in time.
pub fn http(socket: &Path, request: &[u8], read_for: Duration) -> HttpResponse {
    use std::io::{Read, Write};
    let head_only = request.starts_with(b"HEAD ");
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(read_for)).expect("timeout");
    // As in raw_http: the peer may answer early and stop reading.
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = std::time::Instant::now() + read_for;
    let fail = |raw: &[u8], why: &str| -> ! {
        panic!(
            "no complete HTTP response to {:?} ({why}): got {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)]),
            String::from_utf8_lossy(raw)
        )
    };
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            if let Some(r) = HttpResponse::parse(&raw[..end + 4]) {
                let body = &raw[end + 4..];
                let no_body = head_only || r.status == 204 || r.status == 304 || r.status < 200;
                let len = r
                    .header("Content-Length")
                    .and_then(|v| v.parse::<usize>().ok());
                let chunked = r
                    .header("Transfer-Encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                let complete = no_body
                    || len.is_some_and(|n| body.len() >= n)
                    || (chunked
                        && (body.starts_with(b"0\r\n") || find(body, b"\r\n0\r\n").is_some())
                        && body.ends_with(b"\r\n\r\n"));
                if complete {
                    let mut r = HttpResponse::parse(&raw).expect("parsed once");
                    if let Some(n) = len {
                        r.body.truncate(n);
                    }
                    if no_body {
                        r.body.clear();
                    }
                    return r;
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            fail(&raw, "timed out");
        }
        match s.read(&mut buf) {
            Ok(0) => {
                // Closed: whatever arrived is the whole response (body delimited by close).
                return HttpResponse::parse(&raw).unwrap_or_else(|| fail(&raw, "closed"));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                fail(&raw, "timed out")
            }
            Err(e) => {
                // A reset after the answer (an oversized request the peer stopped reading)
                // still leaves the answer.
                return HttpResponse::parse(&raw).unwrap_or_else(|| fail(&raw, &e.to_string()));
            }
        }
    }
}

/// A simple `METHOD path` request with `Connection: close` and an optional JSON body.
pub fn request(method: &str, path: &str, json: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    if let Some(body) = json {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// A raw connection on which a request was sent and the response head read: what an
/// upgraded (hijacked) attach or exec leaves for the test to drive by hand.
pub struct Upgraded {
    pub head: HttpResponse,
    pub stream: std::os::unix::net::UnixStream,
    /// Bytes received after the head, not yet consumed.
    pub pending: Vec<u8>,
}

impl Upgraded {
    /// Sends `request` on a new connection to `socket` and reads up to the end of the
    /// response head.
    pub fn open(socket: &Path, request: &[u8], limit: Duration) -> Self {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(limit)).expect("timeout");
        stream.write_all(request).expect("write request");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut buf) {
                Ok(0) => panic!(
                    "connection closed before the response head: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "no response head within {limit:?} ({e}): {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            }
        };
        let pending = raw[end + 4..].to_vec();
        let head = HttpResponse::parse(&raw[..end + 4]).expect("response head");
        Upgraded {
            head,
            stream,
            pending,
        }
    }

    /// Reads exactly `n` bytes (pending ones first); panics on EOF or timeout.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while self.pending.len() < n {
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&self.pending)),
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) => panic!(
                    "read failed ({e}) after {:?}",
                    String::from_utf8_lossy(&self.pending)
                ),
            }
        }
        self.pending.drain(..n).collect()
    }

    /// Reads one frame of Docker's multiplexed stream format: an 8-byte header (stream
    /// type, 3 zero bytes, big-endian payload length) then the payload.
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let h = self.read_exact(8);
        assert_eq!(&h[1..4], &[0, 0, 0], "bad multiplexed frame header {h:?}");
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        (h[0], self.read_exact(len))
    }

    /// Reads until EOF (the peer closed); panics on timeout.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return std::mem::take(&mut self.pending),
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) => panic!(
                    "no EOF ({e}) after {:?}",
                    String::from_utf8_lossy(&self.pending)
                ),
            }
        }
    }
}

/// The hex SHA-256 of a file (`sha256sum`, so no hashing crate is needed).
pub fn sha256_file(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

/// Unix sockets of this process connected to the engine's socket (the gateway's upstream
/// connections, since the gateway runs in-process). Found by matching the peer inode of
/// every engine-side socket (`ss -x`) against this process's socket fds.
pub fn engine_connections_of_this_process() -> usize {
    let Address::Unix(engine) = engine_address() else {
        panic!("engine_connections_of_this_process needs a unix engine address");
    };
    let engine = engine.to_string_lossy().into_owned();
    let ss = ok(Command::new("ss").args(["-x", "-a", "-n"]));
    let peers: std::collections::HashSet<String> = ss
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Netid State Recv-Q Send-Q Local Port Peer Port
            (f.len() >= 8 && f[4] == engine).then(|| f[7].to_owned())
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .filter(|inode| peers.contains(inode))
        .count()
}

// --- Plugin chains built from the test kit component (`tests/plugins/testkit`). ---

/// A component in the target directory, `rel` below it; `recipe` builds it.
fn built(rel: &str, recipe: &str) -> std::path::PathBuf {
    let dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "/var/cache/portcullis/target".into());
    let p = std::path::PathBuf::from(dir).join(rel);
    assert!(p.exists(), "{} is missing: run `{recipe}`", p.display());
    p
}

/// A plugin crate's component (`tests/plugins/<name>` or `plugins/<name>`), as `just plugins`
/// builds it: `portcullis_<name>_plugin.wasm`.
pub fn plugin_component(name: &str) -> std::path::PathBuf {
    built(
        &format!("wasm32-wasip2/release/portcullis_{name}_plugin.wasm"),
        "just plugins",
    )
}

/// The owner policy example built in `lang` (`rust`, `python`, `js`, `c`) by
/// `just plugin-examples`.
pub fn owner_example(lang: &str) -> std::path::PathBuf {
    built(
        &format!("plugin-examples/owner-{lang}.wasm"),
        "just plugin-examples",
    )
}

/// The compiled test kit.
pub fn testkit() -> std::path::PathBuf {
    plugin_component("testkit")
}

/// One `[[plugins]]` entry for `component`. `extra` holds more keys of the entry
/// (`phase = "mutate"`, `timeout = "50ms"`, ...), `config` the TOML body of its config table.
pub fn plugin_entry(name: &str, component: &Path, extra: &str, config: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n[plugins.config]\n{config}\n",
        component.display()
    )
}

/// One `[[plugins]]` entry for the test kit (see [`plugin_entry`]).
pub fn entry(name: &str, extra: &str, config: &str) -> String {
    plugin_entry(name, &testkit(), extra, config)
}

/// A gateway in front of the test engine whose plugin chain is `entries`.
pub fn gateway(entries: &[String]) -> Gateway {
    let text = entries.concat();
    let config = Config::parse(&text, Path::new("test.toml")).expect("test config");
    Gateway::start_with(config)
}

/// Whether a container of that name exists on the engine (asked directly).
pub fn exists(name: &str) -> bool {
    let out = run(docker_direct().args(["ps", "-a", "-q", "--filter", &name_filter(name)]));
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// The `--filter` of `docker ps` for exactly the container `name`. dockerd matches the
/// regular expression against `/name`, Podman against `name`: the optional slash fits both.
pub fn name_filter(name: &str) -> String {
    format!("name=^/?{name}$")
}

/// Whether the engine under test is Podman (its `/version` lists a "Podman Engine"
/// component), for the few places where it answers differently from dockerd
/// (`docs/engines.md` lists them). Asked once per test binary.
pub fn engine_is_podman() -> bool {
    static PODMAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PODMAN.get_or_init(|| {
        let r = http(
            &engine_socket(),
            &request("GET", "/version", None),
            Duration::from_secs(30),
        );
        r.json()["Components"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["Name"] == "Podman Engine"))
    })
}

/// The name `docker load` prints for the image `tag` loaded: dockerd's short form as given,
/// Podman's in full (`docker.io/library/app:1`).
pub fn loaded_name(tag: &str) -> String {
    match (engine_is_podman(), tag.contains('/')) {
        (false, _) => tag.to_owned(),
        (true, false) => format!("docker.io/library/{tag}"),
        (true, true) => format!("docker.io/{tag}"),
    }
}

/// Seconds from now to put the `until` of an events replay (`docker events --since S
/// --until U`) that must start before `until` has passed: Podman 4.3 replays nothing once
/// it has, so every request of the replay needs that much time to arrive.
pub fn replay_margin() -> u64 {
    if engine_is_podman() {
        5
    } else {
        1
    }
}

/// For a test that cannot run on Podman: `true`, after saying why on stderr, when the
/// engine under test is Podman, so that the test returns early (`if skip_on_podman(..)
/// { return; }`). It never hides a difference the gateway must handle: only what the
/// engine itself does not do.
pub fn skip_on_podman(reason: &str) -> bool {
    let skip = engine_is_podman();
    if skip {
        eprintln!("skipped on Podman: {reason}");
    }
    skip
}

/// A config with a `sync` audit store in `dir/store`, plus `rest` (limits, plugins, ...).
pub fn audit_config(dir: &Path, rest: &str) -> Config {
    let text = format!(
        "[audit]\npath = \"{}\"\ndurability = \"sync\"\n{rest}",
        dir.join("store").display()
    );
    Config::parse(&text, Path::new("test.toml")).expect("test config")
}

/// Every record of the store in `dir/store`, oldest first, once the gateway has let go of it;
/// the chain must verify.
pub fn audit_chain(dir: &Path) -> Vec<portcullis::audit::Record> {
    audit_store_chain(&dir.join("store")).0
}

/// Every record of the store at `path`, oldest first, once the gateway has let go of it, and
/// what `verify` found (the chain must verify).
pub fn audit_store_chain(
    path: &Path,
) -> (Vec<portcullis::audit::Record>, portcullis::audit::Verified) {
    use portcullis::audit::AuditError;
    let store = wait_for(
        "the gateway to release the audit store",
        Duration::from_secs(60),
        || match portcullis::audit::report::open(path) {
            Ok(s) => Some(s),
            Err(AuditError::Locked { .. }) => None,
            Err(e) => panic!("cannot open the store: {e}"),
        },
    );
    let verified = store.verify().expect("an intact chain");
    let records = store.iter_chain().map(|r| r.expect("record").0).collect();
    (records, verified)
}

/// The trail of the stopped gateway whose config is in `dir` as `audit list` shows it: one
/// record per request, a request recorded in two (decision, then outcome) joined into its
/// outcome, oldest first. Decisions without an outcome stay as they are.
pub fn audit_requests(dir: &Path) -> Vec<portcullis::audit::Record> {
    use portcullis::audit::Stage;
    let raw = audit_chain(dir);
    let answered: std::collections::HashSet<u64> = raw.iter().filter_map(|r| r.decided).collect();
    let by_seq: std::collections::HashMap<u64, &portcullis::audit::Record> =
        raw.iter().map(|r| (r.seq, r)).collect();
    raw.iter()
        .filter(|r| !(r.stage == Some(Stage::Decision) && answered.contains(&r.seq)))
        .map(|r| match r.decided.and_then(|d| by_seq.get(&d)) {
            Some(decision) => r.clone().joined((*decision).clone()),
            None => r.clone(),
        })
        .collect()
}

/// The engine's inspect of exec `exec_id` once it has stopped running (asked directly).
pub fn finished_exec(exec_id: &str) -> serde_json::Value {
    wait_for(
        "the exec to finish on the engine",
        Duration::from_secs(30),
        || {
            let r = http(
                &engine_socket(),
                &request("GET", &format!("/v1.41/exec/{exec_id}/json"), None),
                Duration::from_secs(30),
            );
            let v = r.json();
            (v["Running"] == false).then_some(v)
        },
    )
}

/// The engine's socket path, for raw-HTTP checks that talk to it directly.
pub fn engine_socket() -> PathBuf {
    match engine_address() {
        Address::Unix(p) => p,
        other => panic!("these tests need a unix engine socket, not {other}"),
    }
}

/// The `portcullis` binary, for tests that run it as a process (signals, `reload`, the
/// container image): `PORTCULLIS_BIN` when set, else built once by `cargo build -p
/// portcullis` in this workspace's target directory (the build a test run already did for
/// the library, plus a link).
pub fn portcullis_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PORTCULLIS_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = run(Command::new(cargo)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args([
                "build",
                "-p",
                "portcullis",
                "--bin",
                "portcullis",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit()));
        assert!(out.status.success(), "cargo build -p portcullis failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .find(|p| p.file_name().is_some_and(|n| n == "portcullis"))
            .expect("cargo build reported no portcullis executable")
    })
    .clone()
}

/// The shipped `policies/portcullis.toml` rewritten for a gateway of its own in `dir`: its
/// sockets, audit store and owners record under `dir`, plugin paths absolute (the file no
/// longer sits next to them). Everything else is the shipped text.
pub fn shipped_config_text(dir: &Path) -> String {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let policies = policies.canonicalize().expect("policies/");
    std::fs::read_to_string(policies.join("portcullis.toml"))
        .expect("policies/portcullis.toml")
        .replace("/var/tmp/portcullis/", &format!("{}/", dir.display()))
        .replace(
            "path = \"plugins/",
            &format!("path = \"{}/plugins/", policies.display()),
        )
}

/// A `portcullis serve --config FILE` process in front of the test engine (the real binary:
/// signals, `portcullis reload` and `portcullis audit` reach it as they reach an operator's),
/// its standard error in a file; stopped with SIGTERM when dropped.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub admin: PathBuf,
    child: Option<std::process::Child>,
}

impl Served {
    /// Serves the configuration `config_text` gives for a new directory of its own
    /// (written there as portcullis.toml), with `env` added, once its client and admin
    /// sockets (portcullis.sock, admin.sock in that directory) answer; the client socket
    /// opened to every local user.
    pub fn start(config_text: impl FnOnce(&Path) -> String, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, config_text(dir.path())).expect("write config");
        let socket = dir.path().join("portcullis.sock");
        let admin = dir.path().join("admin.sock");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let Address::Unix(engine) = engine_address() else {
            panic!("the test engine is a unix socket")
        };
        let mut cmd = Command::new(portcullis_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--engine")
            .arg(format!("unix://{}", engine.display()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("portcullis serve");
        let mut served = Served {
            dir,
            config,
            socket,
            admin,
            child: Some(child),
        };
        wait_for("the gateway's sockets", Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = served.child.as_mut().map(|c| c.try_wait()) {
                panic!("portcullis serve exited ({status}): {}", served.log());
            }
            let up = |p: &Path| std::os::unix::net::UnixStream::connect(p).is_ok();
            (up(&served.socket) && up(&served.admin)).then_some(())
        });
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&served.socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod socket");
        std::fs::set_permissions(served.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        served
    }

    /// `DOCKER_HOST` for this gateway.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command pointed at this gateway.
    pub fn docker(&self) -> Command {
        docker_at(&self.docker_host())
    }

    /// A `portcullis` command (the same binary) with `--config` of this gateway appended
    /// after `args`.
    pub fn portcullis(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(portcullis_bin());
        cmd.args(args).arg("--config").arg(&self.config);
        cmd
    }

    /// GET `path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        http(
            &self.admin,
            &request("GET", path, None),
            Duration::from_secs(30),
        )
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the gateway to drain and exit; returns whether it exited
    /// with success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = wait_for("the gateway to stop", Duration::from_secs(60), || {
            child.try_wait().expect("wait")
        });
        status.success()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("portcullis serve did not stop cleanly: {}", self.log());
        }
    }
}
