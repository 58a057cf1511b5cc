//! Who is calling (issue #5), with the real docker CLI and engine: mutual TLS with
//! certificates from `certs init` (two users, two callers), handshake refusals (wrong CA,
//! expired certificate, no certificate), a `docker context`, certificate reload, unix peer
//! credentials of two real local users, bearer tokens sent by the CLI from its config.json
//! `HttpHeaders`, and refusal of callers with no identity.
//!
//! What plugins see is made visible in the engine's state: the test kit's `label-caller`
//! action writes the caller it was handed into a label of the container being created, and
//! the label is read back from the engine directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use portcullis::config::Address;
use portcullis::identity::devca;
use portcullis::{Config, Listener};
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);
/// The label the test kit's `label-caller` action writes.
const WHO: &str = "portcullis-test-who";

/// A gateway on the listeners `config.server.listen` names (port 0 allowed), in front of
/// the test engine, with the `label-caller` plugin; stopped on drop.
struct Served {
    addresses: Vec<Address>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    fn start(server_toml: &str, base: &Path) -> Self {
        Self::start_in_front_of(server_toml, base, engine_address())
    }

    /// Like [`Served::start`], forwarding to `engine` (with the `[engine]` keys of
    /// `server_toml`).
    fn start_in_front_of(server_toml: &str, base: &Path, engine: Address) -> Self {
        let text = format!(
            "{server_toml}\n[[plugins]]\nname = \"who\"\npath = \"{}\"\nphase = \"mutate\"\nendpoints = [\"container.create\"]\n\
             [plugins.config]\naction = \"label-caller\"\nkey = \"{WHO}\"\n",
            testkit().display()
        );
        let mut config = Config::parse(&text, &base.join("portcullis.toml")).expect("test config");
        config.engine.url = engine;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut listeners = Vec::new();
                for a in &config.server.listen {
                    match Listener::bind_config(a, &config).await {
                        Ok(l) => listeners.push(l),
                        Err(e) => {
                            ready_tx.send(Err(e.to_string())).expect("ready");
                            return;
                        }
                    }
                }
                let bound = listeners
                    .iter()
                    .filter_map(Listener::local_address)
                    .collect();
                ready_tx.send(Ok(bound)).expect("ready");
                portcullis::run(listeners, config, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("gateway run");
            });
        });
        let addresses = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway did not start")
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        Served {
            addresses,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `tcp://host:port` of the first TCP or TLS listener, as the docker CLI writes it.
    fn tcp_host(&self) -> String {
        self.addresses
            .iter()
            .find_map(|a| match a {
                Address::Tcp(hp) | Address::Tls(hp) => Some(format!("tcp://{hp}")),
                Address::Unix(_) => None,
            })
            .expect("a TCP listener")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `[server]` for one mutual-TLS listener with the certificates of `certs init DIR`.
fn mtls_server(dir: &Path) -> String {
    format!(
        "[server]\nlisten = [\"tls://127.0.0.1:0\"]\n[server.tls]\ncert = \"{0}/server/cert.pem\"\n\
         key = \"{0}/server/key.pem\"\nclient_ca = \"{0}/ca.pem\"\n",
        dir.display()
    )
}

fn certs_init(dir: &Path, users: &[(&str, &[&str])]) {
    let users: Vec<(String, Vec<String>)> = users
        .iter()
        .map(|(u, g)| (u.to_string(), g.iter().map(|s| s.to_string()).collect()))
        .collect();
    devca::init(dir, &users).expect("certs init");
}

/// The docker CLI with explicit TLS flags and the certificates in `certs`.
fn docker_tls(host: &str, certs: &Path) -> Command {
    let mut cmd = docker_at(host);
    cmd.env("DOCKER_CONFIG", certs.join(".docker-config"));
    cmd.arg("--tlsverify")
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("cert.pem"))
        .arg("--tlskey")
        .arg(certs.join("key.pem"));
    cmd
}

/// `docker create` of a labelled test container through `cmd`.
fn create(mut cmd: Command, name: &str) -> Output {
    cmd.args([
        "create", "--name", name, "--label", TEST_LABEL, IMAGE, "true",
    ]);
    run_timeout(&mut cmd, None, T)
}

/// The caller label the plugin put on a container, read from the engine directly.
fn who(name: &str) -> String {
    ok(docker_direct().args([
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{WHO}\"}}}}"),
        name,
    ]))
    .trim()
    .to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_created(o: &Output) {
    assert!(o.status.success(), "create failed: {}", stderr(o));
}

#[test]
fn two_client_certificates_are_two_callers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs_init(d, &[("alice", &["team-a", "devs"]), ("bob", &[])]);
    let gw = Served::start(&mtls_server(d), d);
    let host = gw.tcp_host();
    let mut clean = Cleanup::new();

    // The stock CLI with explicit flags.
    ok(docker_tls(&host, &d.join("alice")).arg("ps"));
    let a = clean.container(&unique("id-alice"));
    assert_created(&create(docker_tls(&host, &d.join("alice")), &a));
    assert_eq!(who(&a), "user=alice groups=team-a,devs auth=mutual-tls");

    // The same CLI with the DOCKER_CERT_PATH / DOCKER_TLS_VERIFY conventions.
    let b = clean.container(&unique("id-bob"));
    let mut cmd = docker_at(&host);
    cmd.env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", d.join("bob"))
        .env("DOCKER_CONFIG", d.join(".docker-config"));
    assert_created(&create(cmd, &b));
    assert_eq!(who(&b), "user=bob groups= auth=mutual-tls");
}

#[test]
fn a_docker_context_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs_init(d, &[("carol", &["team-c"])]);
    let gw = Served::start(&mtls_server(d), d);
    let config_dir = d.join("docker-config");
    let ctx = unique("ctx");
    let docker = || {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &config_dir)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
        cmd
    };
    let c = d.join("carol");
    let endpoint = format!(
        "host={},ca={},cert={},key={}",
        gw.tcp_host(),
        c.join("ca.pem").display(),
        c.join("cert.pem").display(),
        c.join("key.pem").display()
    );
    ok(docker().args(["context", "create", &ctx, "--docker", &endpoint]));
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("id-ctx"));
    let mut cmd = docker();
    cmd.args(["--context", &ctx]);
    assert_created(&create(cmd, &name));
    assert_eq!(who(&name), "user=carol groups=team-c auth=mutual-tls");
}

#[test]
fn bad_client_certificates_are_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs_init(d, &[("alice", &[])]);
    // Another CA, with its own alice.
    let other = d.join("other");
    certs_init(&other, &[("alice", &[])]);
    // An alice of the right CA whose certificate expired yesterday.
    let ca = devca::DevCa::load(d).unwrap();
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = ca
        .issue_client("alice", &[], now - 3 * day, now - day)
        .unwrap();
    devca::write_cert_dir(&d.join("expired"), &ca, &expired).unwrap();
    // No client certificate at all: only the CA to check the server with.
    let nocert = d.join("nocert");
    std::fs::create_dir_all(&nocert).unwrap();
    std::fs::copy(d.join("ca.pem"), nocert.join("ca.pem")).unwrap();

    let gw = Served::start(&mtls_server(d), d);
    let host = gw.tcp_host();
    let mut clean = Cleanup::new();

    // The other CA does not sign the gateway's certificate either: the client trusts the
    // right one, so the refusal is the gateway's, for the client certificate.
    let wrong_ca = {
        let mut cmd = docker_at(&host);
        cmd.env("DOCKER_CONFIG", d.join(".docker-config"))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(d.join("ca.pem"))
            .arg("--tlscert")
            .arg(other.join("alice/cert.pem"))
            .arg("--tlskey")
            .arg(other.join("alice/key.pem"));
        cmd
    };
    let nocert_cmd = {
        let mut cmd = docker_at(&host);
        cmd.env("DOCKER_CONFIG", d.join(".docker-config"))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(nocert.join("ca.pem"));
        cmd
    };
    for (cmd, expected) in [
        (wrong_ca, "unknown certificate authority"),
        (docker_tls(&host, &d.join("expired")), "expired certificate"),
        (nocert_cmd, "certificate required"),
    ] {
        let name = clean.container(&unique("id-refused"));
        let out = create(cmd, &name);
        assert!(
            !out.status.success(),
            "{expected}: the gateway accepted the client"
        );
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "expected {expected:?} from the CLI, got: {err}"
        );
        assert!(!exists(&name), "{expected}: the request reached the engine");
    }
    // The gateway keeps serving good clients.
    ok(docker_tls(&host, &d.join("alice")).arg("version"));
}

#[test]
fn certificates_are_reloaded_when_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (first, second) = (d.join("first"), d.join("second"));
    certs_init(&first, &[("alice", &[])]);
    certs_init(&second, &[("alice", &[])]);
    let live = d.join("live");
    let install = |from: &Path| {
        std::fs::create_dir_all(live.join("server")).unwrap();
        for f in ["ca.pem", "server/cert.pem", "server/key.pem"] {
            // Write to a temp file and rename, as certificate renewal tools do.
            let tmp = live.join(format!("{f}.new"));
            std::fs::copy(from.join(f), &tmp).unwrap();
            std::fs::rename(&tmp, live.join(f)).unwrap();
        }
    };
    install(&first);
    let gw = Served::start(&mtls_server(&live), d);
    let host = gw.tcp_host();
    ok(docker_tls(&host, &first.join("alice")).arg("version"));

    install(&second);
    // Bump the modification times in case the copies landed within the same tick.
    let later = SystemTime::now() + Duration::from_secs(2);
    for f in ["ca.pem", "server/cert.pem", "server/key.pem"] {
        std::fs::File::options()
            .write(true)
            .open(live.join(f))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    wait_for(
        "the gateway to serve the renewed certificates",
        Duration::from_secs(20),
        || {
            run(docker_tls(&host, &second.join("alice")).arg("version"))
                .status
                .success()
                .then_some(())
        },
    );
    let out = run(docker_tls(&host, &first.join("alice")).arg("version"));
    assert!(
        !out.status.success(),
        "the old CA is still trusted after the reload"
    );
}

/// Local users and a group created for a test, removed on drop.
struct LocalUsers {
    users: Vec<String>,
    groups: Vec<String>,
}

impl LocalUsers {
    fn sh(args: &[&str]) {
        ok(Command::new(args[0]).args(&args[1..]));
    }
}

impl Drop for LocalUsers {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

#[test]
fn unix_peer_credentials_of_two_local_users() {
    let pid = std::process::id();
    let (a, b, outsider, group, extra) = (
        format!("pcid-a-{pid}"),
        format!("pcid-b-{pid}"),
        format!("pcid-x-{pid}"),
        format!("pcid-dock-{pid}"),
        format!("pcid-team-{pid}"),
    );
    let _guard = LocalUsers {
        users: vec![a.clone(), b.clone(), outsider.clone()],
        groups: vec![group.clone(), extra.clone()],
    };
    LocalUsers::sh(&["groupadd", &group]);
    LocalUsers::sh(&["groupadd", &extra]);
    LocalUsers::sh(&[
        "useradd",
        "--no-create-home",
        "--user-group",
        "-G",
        &group,
        &a,
    ]);
    LocalUsers::sh(&[
        "useradd",
        "--no-create-home",
        "--user-group",
        "-G",
        &format!("{group},{extra}"),
        &b,
    ]);
    LocalUsers::sh(&["useradd", "--no-create-home", "--user-group", &outsider]);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = d.join("portcullis.sock");
    // The socket is the access control: rw for its group only.
    let gw = Served::start(
        &format!(
            "[server]\nlisten = [\"unix://{}\"]\nsocket_mode = \"0660\"\nsocket_group = \"{group}\"\n",
            socket.display()
        ),
        d,
    );
    let meta = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(Some(meta.gid()), gid_of(&group));

    let config_dir = d.join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let as_user = |user: &str| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "docker"])
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env("DOCKER_CONFIG", &config_dir)
            .env_remove("DOCKER_CONTEXT");
        cmd
    };
    let mut clean = Cleanup::new();
    let ca = clean.container(&unique("id-unix-a"));
    assert_created(&create(as_user(&a), &ca));
    assert_eq!(
        who(&ca),
        format!("user={a} groups={a},{group} auth=peer-credentials")
    );
    let cb = clean.container(&unique("id-unix-b"));
    assert_created(&create(as_user(&b), &cb));
    assert_eq!(
        who(&cb),
        format!("user={b} groups={b},{group},{extra} auth=peer-credentials")
    );

    // Not in the socket's group: the kernel refuses the connection.
    let cx = clean.container(&unique("id-unix-x"));
    let out = create(as_user(&outsider), &cx);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!exists(&cx));
    drop(gw);
}

fn gid_of(group: &str) -> Option<u32> {
    let out = run(Command::new("getent").args(["group", group]));
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// A docker CLI config directory whose config.json sends `Authorization: Bearer <token>`.
fn docker_config_with_token(dir: &Path, token: &str) -> PathBuf {
    let config_dir = dir.join(format!("docker-config-{}", &token[..token.len().min(12)]));
    std::fs::create_dir_all(&config_dir).unwrap();
    let json = serde_json::json!({ "HttpHeaders": { "Authorization": format!("Bearer {token}") } });
    std::fs::write(config_dir.join("config.json"), json.to_string()).unwrap();
    config_dir
}

#[test]
fn bearer_tokens_from_the_cli_config_http_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = d.join("tokens.toml");
    let ci = portcullis::identity::tokens::add(&tokens, "ci", &["builders".into()]).unwrap();
    let gw = Served::start(
        "[server]\nlisten = [\"tcp://127.0.0.1:0\"]\ntokens_file = \"tokens.toml\"\n",
        d,
    );
    let host = gw.tcp_host();
    let mut clean = Cleanup::new();

    let with = |config_dir: PathBuf| {
        let mut cmd = docker_at(&host);
        cmd.env("DOCKER_CONFIG", config_dir);
        cmd
    };
    let name = clean.container(&unique("id-token"));
    assert_created(&create(with(docker_config_with_token(d, &ci)), &name));
    assert_eq!(who(&name), "user=ci groups=builders auth=token");

    // A token added while the gateway runs is accepted without a restart.
    let later = portcullis::identity::tokens::add(&tokens, "late", &[]).unwrap();
    let bump = SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&tokens)
        .unwrap()
        .set_modified(bump)
        .unwrap();
    let name = clean.container(&unique("id-token-late"));
    let config_dir = docker_config_with_token(d, &later);
    wait_for(
        "the new token to be accepted",
        Duration::from_secs(20),
        || {
            run(with(config_dir.clone()).arg("version"))
                .status
                .success()
                .then_some(())
        },
    );
    assert_created(&create(with(config_dir), &name));
    assert_eq!(who(&name), "user=late groups= auth=token");

    // A wrong token and no token at all are refused, and nothing reaches the engine.
    for (config_dir, expected) in [
        (
            docker_config_with_token(d, "pcl_0000000000000000"),
            "invalid bearer token",
        ),
        (d.join("empty-docker-config"), "who is calling?"),
    ] {
        let name = clean.container(&unique("id-token-bad"));
        let out = create(with(config_dir), &name);
        assert!(!out.status.success(), "{expected}: accepted");
        let err = stderr(&out);
        assert!(
            err.contains("Error response from daemon") && err.contains(expected),
            "{err}"
        );
        assert!(!exists(&name));
    }
}

#[test]
fn plain_tcp_needs_a_configured_anonymous_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut clean = Cleanup::new();
    let gw = Served::start(
        "[server]\nlisten = [\"tcp://127.0.0.1:0\"]\nanonymous = { user = \"guest\", groups = [\"visitors\"] }\n",
        d,
    );
    let name = clean.container(&unique("id-anon"));
    let mut cmd = docker_at(&gw.tcp_host());
    cmd.env("DOCKER_CONFIG", d.join("docker-config"));
    assert_created(&create(cmd, &name));
    assert_eq!(who(&name), "user=guest groups=visitors auth=none");
}

#[test]
fn plain_tcp_off_loopback_needs_insecure_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[server]\nlisten = [\"tcp://0.0.0.0:0\"]\n";
    let config = Config::parse(text, &dir.path().join("c.toml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(Listener::bind_config(&config.server.listen[0], &config))
        .err()
        .expect("a non-loopback plain TCP listener was bound")
        .to_string();
    assert!(err.contains("insecure-tcp"), "{err}");
    let config = Config::parse(
        &format!("{text}insecure_tcp = true\n"),
        &dir.path().join("c.toml"),
    )
    .unwrap();
    rt.block_on(Listener::bind_config(&config.server.listen[0], &config))
        .expect("insecure_tcp allows it");
}

#[test]
fn a_tls_engine_with_a_client_certificate() {
    // The engine side of this gateway is another gateway, serving mutual TLS in front of the
    // real engine: what the second one's plugin labels is who the first one connected as.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs_init(d, &[("gateway-b", &["gateways"])]);
    let front = Served::start(&mtls_server(d), d);
    let Some(Address::Tls(hp)) = front.addresses.first().cloned() else {
        panic!("no TLS listener");
    };
    let socket = d.join("b.sock");
    let b = Served::start_in_front_of(
        &format!(
            "[server]\nlisten = [\"unix://{}\"]\n[engine]\ncert_path = \"{}\"\n",
            socket.display(),
            d.join("gateway-b").display()
        ),
        d,
        Address::Tcp(hp),
    );
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("id-engine-tls"));
    let mut cmd = docker_at(&format!("unix://{}", socket.display()));
    cmd.env("DOCKER_CONFIG", d.join("docker-config"));
    assert_created(&create(cmd, &name));
    assert_eq!(who(&name), "user=gateway-b groups=gateways auth=mutual-tls");
    drop(b);
}
