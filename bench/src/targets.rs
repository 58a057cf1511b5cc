//! The configurations under test, each a unix socket in front of the same engine, started
//! (and stopped) by the harness itself: the engine directly, socat, HAProxy configured like
//! docker-socket-proxy, and portcullis without plugins, with a chain of 3 testkit plugins, and
//! with the default policy chain of `policies/portcullis.toml` plus a Rego policy, and with
//! the audit trail alone (no plugins), and with one plugin written in Python or JavaScript.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;

use crate::client;

/// Every configuration, in report order. `direct` is the baseline every ratio refers to.
pub const ALL: [&str; 9] = [
    "direct",
    "socat",
    "haproxy",
    "portcullis",
    "portcullis-3",
    "portcullis-default",
    "portcullis-audit",
    "portcullis-python",
    "portcullis-js",
];

/// The configurations whose policy refuses [`crate::engine::denied_create_body`]: the denied
/// create is measured on these only (the others would forward it to the engine).
pub const DENYING: [&str; 3] = ["portcullis-default", "portcullis-python", "portcullis-js"];

/// What the targets need from the outside.
pub struct Setup {
    /// The engine's socket.
    pub engine: PathBuf,
    /// A private directory for sockets, configs and logs.
    pub dir: PathBuf,
    /// The release `portcullis` binary.
    pub portcullis: PathBuf,
    /// The testkit plugin component.
    pub plugin: PathBuf,
    /// The workspace root (for `policies/`).
    pub workspace: PathBuf,
    /// Where `just plugin-examples` puts the owner policy in every language
    /// (`owner-python.wasm`, `owner-js.wasm`).
    pub plugin_examples: PathBuf,
    /// The audit trail's durability in the configurations that keep one.
    pub durability: String,
}

/// One running configuration.
pub struct Target {
    pub name: &'static str,
    /// Where clients connect.
    pub socket: PathBuf,
    /// The proxy process (none for `direct`); its whole process group is stopped on drop.
    process: Option<Child>,
    /// The proxy's memory, for proxies that are a single process.
    pub rss: Option<RssProbe>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.process {
            stop(child);
        }
    }
}

/// Stops a child we started and everything it forked (socat forks per connection): the child
/// leads its own process group, so the group id is its pid.
fn stop(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-TERM", "--", &group])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// The audit store of configuration `name`, for those that keep one.
pub fn audit_store(name: &str, dir: &Path) -> Option<PathBuf> {
    match name {
        "portcullis-audit" => Some(dir.join("audit-only")),
        "portcullis-default" => Some(dir.join("audit-default")),
        _ => None,
    }
}

/// Starts configuration `name`, or says why it cannot run here.
pub async fn start(name: &'static str, setup: &Setup) -> Result<Target> {
    let socket = setup.dir.join(format!("{name}.sock"));
    let log = setup.dir.join(format!("{name}.log"));
    let mut command = match name {
        "direct" => {
            return Ok(Target {
                name,
                socket: setup.engine.clone(),
                process: None,
                rss: None,
            })
        }
        "socat" => {
            let mut c = Command::new(which("socat")?);
            c.arg(format!("UNIX-LISTEN:{},fork", socket.display()))
                .arg(format!("UNIX-CONNECT:{}", setup.engine.display()));
            c
        }
        "haproxy" => {
            let config = setup.dir.join("haproxy.cfg");
            fs::write(&config, haproxy_config(&socket, &setup.engine))?;
            let mut c = Command::new(which("haproxy")?);
            c.arg("-f").arg(&config).arg("-db");
            // The switches docker-socket-proxy reads from its environment: everything the
            // scenarios use is allowed, the rest stays denied.
            for (var, on) in HAPROXY_SECTIONS {
                c.env(var, if *on { "1" } else { "0" });
            }
            c.env("POST", "1");
            c
        }
        "portcullis" | "portcullis-3" | "portcullis-default" | "portcullis-audit"
        | "portcullis-python" | "portcullis-js" => {
            if !setup.portcullis.is_file() {
                bail!(
                    "{} is missing (cargo build --release -p portcullis)",
                    setup.portcullis.display()
                );
            }
            let mut c = Command::new(&setup.portcullis);
            c.arg("serve")
                .arg("--listen")
                .arg(format!("unix://{}", socket.display()))
                .arg("--engine")
                .arg(format!("unix://{}", setup.engine.display()))
                .env("PORTCULLIS_LOG", "warn");
            // One user (the harness) holds 500 event streams: lift the per-caller bound.
            let mut text = format!("[limits]\nmax_requests_per_caller = {PER_CALLER}\n");
            if name == "portcullis-3" {
                if !setup.plugin.is_file() {
                    bail!(
                        "the testkit plugin {} is missing (just plugins)",
                        setup.plugin.display()
                    );
                }
                text.push_str(&plugin_chain_config(&setup.plugin));
            }
            if name == "portcullis-audit" {
                // No plugins, every request recorded (batch durability, the default).
                let store = audit_store(name, &setup.dir).unwrap_or_default();
                let _ = fs::remove_dir_all(&store);
                text.push_str(&format!(
                    "[audit]\npath = {:?}\ndurability = {:?}\n",
                    store.display().to_string(),
                    setup.durability
                ));
            }
            if let Some(lang) = name
                .strip_prefix("portcullis-")
                .filter(|l| ["python", "js"].contains(l))
            {
                let wasm = setup.plugin_examples.join(format!("owner-{lang}.wasm"));
                if !wasm.is_file() {
                    bail!(
                        "{} is missing (just plugin-examples {lang}; it needs the {} toolchain, scripts/install-plugin-toolchains {lang})",
                        wasm.display(),
                        if lang == "js" { "componentize-js" } else { "componentize-py" }
                    );
                }
                text.push_str(&language_plugin_config(lang, &wasm));
            }
            if name == "portcullis-default" {
                // The shipped file has its own [limits] table.
                text = default_chain_config(&setup.workspace, &setup.dir, &setup.durability)?;
            }
            let config = setup.dir.join(format!("{name}.toml"));
            fs::write(&config, text)?;
            c.arg("--config").arg(config);
            c
        }
        other => bail!("unknown configuration {other:?}"),
    };
    let _ = fs::remove_file(&socket);
    let log_file = fs::File::create(&log)?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    if let Err(e) = wait_ready(&mut child, &socket).await {
        stop(&mut child);
        let tail = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<_> = tail.lines().rev().take(5).collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        bail!(
            "{name} did not come up: {e:#}; its log ends: {}",
            tail.join(" | ")
        );
    }
    let rss = match name {
        // socat forks a process per connection: no single process to watch.
        "socat" => None,
        _ => Some(RssProbe::start(child.id())),
    };
    Ok(Target {
        name,
        socket,
        process: Some(child),
        rss,
    })
}

/// Waits until the socket answers `GET /_ping` with 200 (plugins compile at start-up).
async fn wait_ready(child: &mut Child, socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_error = anyhow!("no socket yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status}");
        }
        if socket.exists() {
            match ping(socket).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last_error.context("not ready after 120 s"))
}

async fn ping(socket: &Path) -> Result<()> {
    let mut sender = client::connect::<Full<Bytes>>(socket).await?;
    client::expect(
        &mut sender,
        client::request(Method::GET, "/_ping", None),
        StatusCode::OK,
    )
    .await?;
    Ok(())
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{program} is not installed (apt-get install {program})"))
}

/// docker-socket-proxy's sections: (environment switch, enabled here). Its frontend checks
/// one regular expression per section, in this order, for every request.
const HAPROXY_SECTIONS: &[(&str, bool)] = &[
    ("AUTH", false),
    ("BUILD", false),
    ("COMMIT", false),
    ("CONFIGS", false),
    ("CONTAINERS", true),
    ("DISTRIBUTION", false),
    ("EVENTS", true),
    ("EXEC", false),
    ("GRPC", false),
    ("IMAGES", true),
    ("INFO", true),
    ("NETWORKS", false),
    ("NODES", false),
    ("PING", true),
    ("PLUGINS", false),
    ("SECRETS", false),
    ("SERVICES", false),
    ("SESSION", false),
    ("SWARM", false),
    ("SYSTEM", false),
    ("TASKS", false),
    ("VERSION", true),
    ("VOLUMES", false),
];

/// An HAProxy configuration shaped like docker-socket-proxy's (Tecnativa): HTTP mode, the
/// same options and timeouts (including `http-server-close`: a new engine connection per
/// request), the same per-section path checks, listening on a unix socket. Logging is at
/// `warning`, as portcullis runs at `warn`, so neither pays for per-request log lines.
fn haproxy_config(listen: &Path, engine: &Path) -> String {
    let prefix = r"^(/v[\d\.]+)?(/\w+)?";
    let mut rules = String::new();
    rules.push_str("    http-request deny unless METH_GET || { env(POST) -m bool }\n");
    for (var, _) in HAPROXY_SECTIONS {
        let section = var.to_lowercase();
        let section = if section == "ping" {
            "_ping".into()
        } else {
            section
        };
        rules.push_str(&format!(
            "    http-request allow if {{ path,url_dec -m reg -i {prefix}/{section} }} {{ env({var}) -m bool }}\n"
        ));
    }
    rules.push_str("    http-request deny\n");
    format!(
        "global
    log stdout format raw daemon warning
    maxconn 4000

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-server-close
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000

backend dockerbackend
    server dockersocket {engine}

backend docker-events
    server dockersocket {engine}
    timeout server 0

frontend dockerfrontend
    bind {listen} mode 660
{rules}    default_backend dockerbackend
    use_backend docker-events if {{ path,url_dec -m reg -i {prefix}/events }}
",
        engine = engine.display(),
        listen = listen.display(),
    )
}

/// Three testkit plugins that allow everything, on every endpoint: one mutating, two
/// validating, so a request crosses both phases of the chain.
fn plugin_chain_config(plugin: &Path) -> String {
    let mut config = String::new();
    for (i, phase) in ["mutate", "validate", "validate"].iter().enumerate() {
        config.push_str(&format!(
            "[[plugins]]\nname = \"allow-{n}\"\npath = {path:?}\nphase = \"{phase}\"\nendpoints = [\"*\"]\n[plugins.config]\naction = \"allow\"\n\n",
            n = i + 1,
            path = plugin.display().to_string(),
        ));
    }
    config
}

/// One plugin written in `lang` (Python or JavaScript): the owner policy of
/// `sdk/examples/owner/`, on every endpoint (it allows everything but `container.create`,
/// where it wants an image from `portcullis/busybox` and the bench's label), with instance
/// reuse on, as docs/plugins.md, "Cost per language", recommends for interpreters.
fn language_plugin_config(lang: &str, wasm: &Path) -> String {
    format!(
        "[[plugins]]\nname = \"owner-{lang}\"\npath = {path:?}\nendpoints = [\"*\"]\n\
         reuse = {{ instances = 2, calls = 1000 }}\n\
         [plugins.config]\nrepositories = [\"portcullis/busybox\"]\nowner_label = {label:?}\n",
        path = wasm.display().to_string(),
        label = crate::engine::LABEL,
    )
}

/// `limits.max_requests_per_caller` of every portcullis configuration: above the 500 event
/// streams the harness (one user) holds at once.
const PER_CALLER: usize = 1024;

/// `policies/portcullis.toml` as shipped (labels, tenancy, baseline, redact, the audit store in
/// `batch` mode) with its plugin paths made absolute and the store in `dir`, plus the example
/// Rego policy `policies/rego/authz.rego`: the default chain issue #6 measures.
fn default_chain_config(workspace: &Path, dir: &Path, durability: &str) -> Result<String> {
    let policies = workspace.join("policies");
    for p in ["labels", "tenancy", "baseline", "redact"] {
        let wasm = policies.join("plugins").join(format!("{p}.wasm"));
        if !wasm.is_file() {
            bail!("{} is missing (just plugins)", wasm.display());
        }
    }
    let shipped = fs::read_to_string(policies.join("portcullis.toml"))?;
    let store = audit_store("portcullis-default", dir).unwrap_or_default();
    let _ = fs::remove_dir_all(&store);
    let mut config = String::new();
    for line in shipped.lines() {
        let line = if line.starts_with("max_requests_per_caller") {
            format!("max_requests_per_caller = {PER_CALLER}")
        } else if let Some(rest) = line.strip_prefix("path = \"plugins/") {
            format!(
                "path = {:?}",
                format!(
                    "{}/plugins/{}",
                    policies.display(),
                    rest.trim_end_matches('"')
                )
            )
        } else if line.starts_with("path = \"/var/tmp/portcullis/audit\"") {
            format!("path = {:?}", store.display().to_string())
        } else if line.starts_with("durability = ") {
            format!("durability = {durability:?}")
        } else {
            line.to_owned()
        };
        config.push_str(&line);
        config.push('\n');
    }
    config.push_str(&format!(
        "\n[[plugins]]\nname = \"authz\"\nkind = \"rego\"\npath = {:?}\n",
        policies.join("rego/authz.rego").display().to_string()
    ));
    Ok(config)
}

/// Samples a process's resident memory (`VmRSS`) every 10 ms on its own thread, keeping the
/// peak of the current window.
pub struct RssProbe {
    shared: Arc<RssShared>,
    thread: Option<JoinHandle<()>>,
}

struct RssShared {
    pid: u32,
    stop: AtomicBool,
    window_peak: AtomicU64,
}

impl RssProbe {
    fn start(pid: u32) -> Self {
        let shared = Arc::new(RssShared {
            pid,
            stop: AtomicBool::new(false),
            window_peak: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(s.pid) {
                    s.window_peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Resident memory now, in KiB.
    pub fn now_kib(&self) -> Option<u64> {
        rss_kib(self.shared.pid)
    }

    /// Starts a new window (its peak starts from the current value).
    pub fn start_window(&self) {
        let now = self.now_kib().unwrap_or(0);
        self.shared.window_peak.store(now, Ordering::Relaxed);
    }

    /// The highest value seen since [`Self::start_window`].
    pub fn window_peak_kib(&self) -> u64 {
        let now = self.now_kib().unwrap_or(0);
        self.shared
            .window_peak
            .fetch_max(now, Ordering::Relaxed)
            .max(now)
    }
}

impl Drop for RssProbe {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `VmRSS` of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_config_allows_the_scenarios_paths() {
        let cfg = haproxy_config(Path::new("/tmp/h.sock"), Path::new("/e/docker.sock"));
        assert!(cfg.contains("bind /tmp/h.sock mode 660"));
        assert!(cfg.contains("server dockersocket /e/docker.sock"));
        assert!(cfg.contains(r"-m reg -i ^(/v[\d\.]+)?(/\w+)?/_ping } { env(PING) -m bool }"));
        assert!(cfg.contains("option http-server-close"));
    }

    #[test]
    fn chain_config_has_one_mutating_and_two_validating_plugins() {
        let cfg = plugin_chain_config(Path::new("/p/x.wasm"));
        assert_eq!(cfg.matches("phase = \"mutate\"").count(), 1);
        assert_eq!(cfg.matches("phase = \"validate\"").count(), 2);
        assert!(cfg.contains("path = \"/p/x.wasm\""));
    }

    #[test]
    fn language_config_names_the_component_and_the_bench_label() {
        let cfg = language_plugin_config("python", Path::new("/p/owner-python.wasm"));
        assert!(cfg.contains("path = \"/p/owner-python.wasm\""));
        assert!(cfg.contains("owner_label = \"portcullis-bench\""));
        assert!(cfg.contains("reuse = { instances = 2, calls = 1000 }"));
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
