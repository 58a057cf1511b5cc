//! BuildKit builds through the shipped `policies/portcullis.toml`, as plain unix users with
//! the docker CLI's buildx and compose v2, and with a client that speaks BuildKit's gRPC API
//! directly (`grpc-probe`) for what those clients never send. A build is judged as a classic
//! build is: its tags by their repositories' owners, its labels by the labels plugin, its
//! entitlements by baseline; a Solve may use only its caller's own session, a build's status
//! is its starter's. Each refusal is judged by the engine's state afterwards, asked directly,
//! and each call leaves an audit record.

use std::process::Command;
use std::time::Duration;

use portcullis::audit::Record;
use portcullis_tests::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(240);

/// The gRPC status the gateway refuses with.
const PERMISSION_DENIED: u64 = 7;

/// A user of the tests with a client configuration directory of its own (buildx keeps its
/// state there), as a user's `~/.docker` is.
struct Client {
    user: String,
    config: tempfile::TempDir,
}

impl Client {
    fn new(user: &str) -> Self {
        let config = tempfile::tempdir().expect("tempdir");
        pass(Command::new("chown").args([user, config.path().to_str().expect("utf-8")]));
        Client {
            user: user.to_owned(),
            config,
        }
    }

    /// `program` as this user against `host`, building with BuildKit.
    fn cmd(&self, host: &str, program: &str) -> Command {
        let dir = self.config.path().display().to_string();
        let mut cmd = Command::new("runuser");
        cmd.args([
            "-u",
            &self.user,
            "--",
            "env",
            &format!("DOCKER_HOST={host}"),
            &format!("DOCKER_CONFIG={dir}"),
            &format!("HOME={dir}"),
            "DOCKER_BUILDKIT=1",
            // Provenance attestations need a registry-capable exporter; the engine's image
            // store here is the classic one.
            "BUILDX_NO_DEFAULT_ATTESTATIONS=1",
            program,
        ])
        .stdin(std::process::Stdio::null());
        cmd
    }

    fn probe(&self, gw: &Gateway, args: &[&str]) -> Value {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.user, "--", env!("CARGO_BIN_EXE_grpc-probe")])
            .arg(&gw.socket)
            .args(args);
        let out = run_timeout(&mut cmd, None, T);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("probe {args:?}: {e}: {}", text(&out)))
    }
}

/// A probe's answer that came from the engine: a gRPC status, and not the gateway's.
fn past_the_gateway(r: &Value) {
    assert!(r["status"].is_u64(), "no gRPC answer: {r}");
    assert!(
        !r["message"].as_str().unwrap_or("").contains("portcullis"),
        "{r}"
    );
}

/// A build context directory with `dockerfile`, readable by every test user.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    dir
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 path")
}

/// The audit records of `endpoint` (a pattern such as `build.*`), newest first, read through
/// the shipped gateway's admin listener.
fn records(gw: &Gateway, endpoint: &str) -> Vec<Record> {
    let admin = gw
        .admin_socket()
        .expect("the shipped gateway has an admin listener");
    let r = http(
        &admin,
        &request(
            "GET",
            &format!("/audit?endpoint={endpoint}&limit=1000"),
            None,
        ),
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("records")
}

/// Records are written within the batch window: wait until `check` finds what it needs.
fn recorded(gw: &Gateway, endpoint: &str, check: impl Fn(&Record) -> bool) -> Record {
    wait_for("the audit record", Duration::from_secs(10), || {
        records(gw, endpoint).into_iter().find(|r| check(r))
    })
}

#[test]
fn buildkit_tags_and_labels_are_judged_as_a_classic_builds_are() {
    let (alice, bob) = ("pc-bk-alice", "pc-bk-bob");
    let _users = Users::create(&[alice, bob]);
    let gw = Gateway::start_shipped(None);
    let host = gw.docker_host();
    let (a_client, b_client) = (Client::new(alice), Client::new(bob));
    let mut clean = Cleanup::new();
    let a = clean.image(&unique("bk-alice"));
    let a2 = clean.image(&unique("bk-alice2"));
    for t in ["1", "2", "3"] {
        clean.image(&format!("{a}:{t}"));
    }
    clean.image(&format!("{a2}:1"));
    let alice_ctx = context(&[(
        "Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo alice > /who\nLABEL made-by=alice\n"),
    )]);
    let bob_ctx = context(&[(
        "Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo bob > /who\nLABEL made-by=bob\n"),
    )]);

    // `docker build` (buildx) with several tags, and `buildx build --load` with more.
    pass(a_client.cmd(&host, "docker").args([
        "build",
        "--network",
        "none",
        "-t",
        &format!("{a}:1"),
        "-t",
        &format!("{a}:2"),
        path(&alice_ctx),
    ]));
    let alices = image_id(&format!("{a}:1")).expect("alice's image");
    assert_eq!(
        image_id(&format!("{a}:2")).as_deref(),
        Some(alices.as_str())
    );
    pass(a_client.cmd(&host, "docker").args([
        "buildx",
        "build",
        "--network",
        "none",
        "--load",
        "-t",
        &format!("{a}:3"),
        "-t",
        &format!("{a2}:1"),
        path(&alice_ctx),
    ]));
    assert!(image_id(&format!("{a2}:1")).is_some());

    // Bob's build over alice's tag, in both spellings of the build: refused, the tag's
    // image unchanged.
    let theirs = format!("tag \"{a}:1\" belongs to another user");
    refused(
        b_client.cmd(&host, "docker").args([
            "build",
            "--network",
            "none",
            "-t",
            &format!("{a}:1"),
            path(&bob_ctx),
        ]),
        &["[image-owner]", &theirs],
    );
    refused(
        b_client.cmd(&host, "docker").args([
            "buildx",
            "build",
            "--network",
            "none",
            "--load",
            "-t",
            &format!("{a}:1"),
            path(&bob_ctx),
        ]),
        &[&theirs],
    );
    assert_eq!(
        image_id(&format!("{a}:1")).as_deref(),
        Some(alices.as_str())
    );
    // A new repository is bob's to make.
    let b = clean.image(&unique("bk-bob"));
    pass(b_client.cmd(&host, "docker").args([
        "build",
        "--network",
        "none",
        "-t",
        &b,
        path(&bob_ctx),
    ]));
    assert!(image_id(&b).is_some());

    // Labels: the gateway-owned owner label cannot be forged through --label.
    let forged = clean.image(&unique("bk-forged"));
    refused(
        b_client.cmd(&host, "docker").args([
            "build",
            "--network",
            "none",
            "--label",
            &format!("io.portcullis.owner={alice}"),
            "-t",
            &forged,
            path(&bob_ctx),
        ]),
        &["labels:", "io.portcullis.owner"],
    );
    assert_eq!(image_id(&forged), None);

    // Every call is recorded: alice's allowed Solve with its tags, bob's refusal.
    let control = "/moby.buildkit.v1.Control/Solve";
    let allowed = recorded(&gw, "build.solve", |r| {
        r.user() == alice && r.path == control && r.decision == portcullis::audit::Decision::Allow
    });
    let tags = &allowed.details.as_ref().expect("details")["Tags"];
    assert!(tags.as_array().is_some_and(|t| !t.is_empty()), "{tags}");
    let denied = recorded(&gw, "build.solve", |r| {
        r.user() == bob && r.error.as_deref().is_some_and(|e| e.contains(&theirs))
    });
    assert_eq!(denied.decision, portcullis::audit::Decision::Deny);
    assert_eq!(denied.status, 403);
}

#[test]
fn host_network_and_insecure_builds_are_for_administrators() {
    let (alice, admin) = ("pc-bk-ent-alice", "pc-bk-ent-admin");
    let _users = Users::create(&[alice, admin]);
    let _ = run(Command::new("groupadd").args(["-f", "docker-admin"]));
    pass(Command::new("usermod").args(["-aG", "docker-admin", admin]));
    let gw = Gateway::start_shipped(None);
    let host = gw.docker_host();
    let (user, root) = (Client::new(alice), Client::new(admin));
    let mut clean = Cleanup::new();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {IMAGE}\nRUN echo built > /built\n"),
    )]);

    let host_net = clean.image(&unique("bk-hostnet"));
    refused(
        user.cmd(&host, "docker").args([
            "buildx",
            "build",
            "--load",
            "--network",
            "host",
            "-t",
            &host_net,
            path(&ctx),
        ]),
        &["baseline: [build-entitlements]", "--network host"],
    );
    assert_eq!(image_id(&host_net), None);
    pass(root.cmd(&host, "docker").args([
        "buildx",
        "build",
        "--load",
        "--network",
        "host",
        "-t",
        &host_net,
        path(&ctx),
    ]));
    assert!(image_id(&host_net).is_some());

    let insecure = clean.image(&unique("bk-insecure"));
    refused(
        user.cmd(&host, "docker").args([
            "buildx",
            "build",
            "--load",
            "--network",
            "none",
            "--allow",
            "security.insecure",
            "-t",
            &insecure,
            path(&ctx),
        ]),
        &["baseline: [build-entitlements] --allow security.insecure"],
    );
    assert_eq!(image_id(&insecure), None);
    // The administrator gets past the gateway: whatever the engine answers is its own.
    let out = run_timeout(
        root.cmd(&host, "docker").args([
            "buildx",
            "build",
            "--load",
            "--network",
            "none",
            "--allow",
            "security.insecure",
            "-t",
            &insecure,
            path(&ctx),
        ]),
        None,
        T,
    );
    assert!(!text(&out).contains("baseline:"), "{}", text(&out));
}

#[test]
fn team_namespaces_hold_for_buildkit_labels() {
    let alice = "pc-bk-ns-alice";
    let _users = Users::create(&[alice]);
    let gw = gateway(&[plugin_entry(
        "labels",
        &plugin_component("labels"),
        "phase = \"mutate\"\nendpoints = [\"build.solve\", \"image.build\"]",
        "namespace_template = \"com.acme.{group}.\"",
    )]);
    gw.open_to_everyone();
    let host = gw.docker_host();
    let client = Client::new(alice);
    let mut clean = Cleanup::new();
    let ctx = context(&[("Dockerfile", &format!("FROM {IMAGE}\n"))]);
    let theirs = clean.image(&unique("bk-ns-theirs"));
    refused(
        client.cmd(&host, "docker").args([
            "buildx",
            "build",
            "--load",
            "--label",
            "com.acme.other-team.route=x",
            "-t",
            &theirs,
            path(&ctx),
        ]),
        &["labels:", "com.acme.other-team.route"],
    );
    assert_eq!(image_id(&theirs), None);
    let own = clean.image(&unique("bk-ns-own"));
    pass(client.cmd(&host, "docker").args([
        "buildx",
        "build",
        "--load",
        "--label",
        &format!("com.acme.{alice}.route=x"),
        "-t",
        &own,
        path(&ctx),
    ]));
    let labels = ok(docker_direct().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &own,
    ]));
    assert!(
        labels.contains(&format!("com.acme.{alice}.route")),
        "{labels}"
    );
}

#[test]
fn a_compose_v2_project_with_a_build_through_its_life() {
    let alice = "pc-bk-compose";
    let _users = Users::create(&[alice]);
    let gw = Gateway::start_shipped(None);
    let host = gw.docker_host();
    let client = Client::new(alice);
    let project = unique("bkc").replace('-', "");
    let image = format!("{project}-web:1");
    let mut clean = Cleanup::new();
    clean.image(&image);
    let ctx = context(&[
        ("Dockerfile", &format!("FROM {IMAGE}\nRUN echo compose-built > /built\nCMD [\"sh\", \"-c\", \"echo started; exec sleep 300\"]\n")),
        (
            "compose.yaml",
            &format!("services:\n  web:\n    build:\n      context: .\n      network: none\n    image: {image}\n    network_mode: none\n"),
        ),
    ]);
    let compose = |args: &[&str]| {
        let mut cmd = client.cmd(&host, "docker");
        cmd.args(["compose", "--project-directory", path(&ctx), "-p", &project])
            .args(args);
        cmd
    };
    let containers = || {
        let out = ok(docker_direct().args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Names}} {{.State}}",
        ]));
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    pass(&mut compose(&["build"]));
    assert!(image_id(&image).is_some(), "compose build made no image");
    pass(&mut compose(&["up", "-d"]));
    assert_eq!(containers().len(), 1, "{:?}", containers());
    assert!(pass(&mut compose(&["ps"])).contains("web"));
    wait_for("the service's first line", Duration::from_secs(30), || {
        pass(&mut compose(&["logs", "web"]))
            .contains("started")
            .then_some(())
    });
    assert!(pass(&mut compose(&["exec", "-T", "web", "cat", "/built"])).contains("compose-built"));
    assert!(
        pass(&mut compose(&["run", "--rm", "-T", "web", "cat", "/built"]))
            .contains("compose-built")
    );
    pass(&mut compose(&["restart"]));
    pass(&mut compose(&["up", "-d", "--scale", "web=2"]));
    let running = containers();
    assert_eq!(
        running.iter().filter(|c| c.ends_with("running")).count(),
        2,
        "{running:?}"
    );
    // A rebuild after a change, then down.
    std::fs::write(ctx.path().join("extra"), "x").expect("write");
    pass(&mut compose(&["build"]));
    pass(&mut compose(&["down"]));
    assert!(containers().is_empty(), "{:?}", containers());
}

#[test]
fn grpc_calls_with_other_users_sessions_and_builds_are_refused() {
    let (alice, bob, admin) = ("pc-bk-grpc-alice", "pc-bk-grpc-bob", "pc-bk-grpc-admin");
    let _users = Users::create(&[alice, bob, admin]);
    let _ = run(Command::new("groupadd").args(["-f", "docker-admin"]));
    pass(Command::new("usermod").args(["-aG", "docker-admin", admin]));
    let gw = Gateway::start_shipped(None);
    let (a, b, root) = (Client::new(alice), Client::new(bob), Client::new(admin));
    let mut clean = Cleanup::new();
    let stolen = clean.image(&unique("bk-stolen"));

    // Alice's session, held open by a probe of hers.
    let session = unique("session");
    let mut holder = Command::new("runuser");
    holder
        .args(["-u", alice, "--", env!("CARGO_BIN_EXE_grpc-probe")])
        .arg(&gw.socket)
        .args(["session", &session, "60"]);
    let mut held = Streaming::spawn(&mut holder);
    held.expect_line(Duration::from_secs(30), |l| l.contains("\"open\":true"));

    // Bob names it in a Solve: his build would read alice's files, secrets and SSH agent.
    let spec = json!({"ref": unique("ref"), "session": session, "frontend": "dockerfile.v0", "names": [stolen]});
    let r = b.probe(&gw, &["solve", &spec.to_string()]);
    assert_eq!(r["status"], PERMISSION_DENIED, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("belongs to another user"),
        "{r}"
    );
    // A session nobody opened through the gateway.
    let spec =
        json!({"ref": unique("ref"), "session": unique("nobodys"), "frontend": "dockerfile.v0"});
    let r = b.probe(&gw, &["solve", &spec.to_string()]);
    assert_eq!(r["status"], PERMISSION_DENIED, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("was not opened by this caller"),
        "{r}"
    );
    assert_eq!(image_id(&stolen), None);

    // Alice's own build (no session: the engine fails it itself) is hers: bob may not read
    // its status, she may.
    let alices_ref = unique("alices-ref");
    let spec = json!({"ref": alices_ref, "frontend": "dockerfile.v0"});
    let r = a.probe(&gw, &["solve", &spec.to_string()]);
    past_the_gateway(&r);
    let r = b.probe(&gw, &["status", &alices_ref]);
    assert_eq!(r["status"], PERMISSION_DENIED, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("was started by another user"),
        "{r}"
    );
    let r = a.probe(&gw, &["status", &alices_ref]);
    past_the_gateway(&r);

    // Raw LLB: refused for plain users, the administrator's passes the gateway.
    let spec = json!({"ref": unique("ref"), "raw_llb": true});
    let r = b.probe(&gw, &["solve", &spec.to_string()]);
    assert_eq!(r["status"], PERMISSION_DENIED, "{r}");
    assert!(
        r["message"].as_str().unwrap_or("").contains("[raw-llb]"),
        "{r}"
    );
    let r = root.probe(&gw, &["solve", &spec.to_string()]);
    past_the_gateway(&r);

    // Methods outside the table, and a session tunnelled inside /grpc.
    let r = b.probe(&gw, &["call", "/moby.buildkit.v1.Control/Frobnicate", ""]);
    assert_eq!(r["status"], 12, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("/moby.buildkit.v1.Control/Frobnicate"),
        "{r}"
    );
    let r = b.probe(&gw, &["call", "/moby.buildkit.v1.Control/Session", ""]);
    assert_eq!(r["status"], PERMISSION_DENIED, "{r}");

    // Each call is in the trail, under its own endpoint.
    let denied = recorded(&gw, "build.solve", |r| {
        r.user() == bob
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("belongs to another user"))
    });
    assert_eq!(
        denied.details.as_ref().expect("details")["Session"],
        session
    );
    recorded(&gw, "build.status", |r| {
        r.user() == bob && r.decision == portcullis::audit::Decision::Deny
    });
    recorded(&gw, "build.unknown", |r| {
        r.path == "/moby.buildkit.v1.Control/Frobnicate"
    });
    held.kill();
}

#[test]
fn malformed_buildkit_traffic_gets_clear_errors_and_the_gateway_serves_on() {
    let alice = "pc-bk-bad";
    let _users = Users::create(&[alice]);
    let gw = Gateway::start_shipped(None);
    let a = Client::new(alice);
    let solve = "/moby.buildkit.v1.Control/Solve";

    // A protobuf that does not decode (a string field cut short).
    let r = a.probe(&gw, &["call", solve, "0a05ff"]);
    assert_eq!(r["status"], 3, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not decode"),
        "{r}"
    );
    // A field the gateway does not know.
    let r = a.probe(&gw, &["call", solve, "c00201"]);
    assert_eq!(r["status"], 3, "{r}");
    assert!(
        r["message"].as_str().unwrap_or("").contains("field 40"),
        "{r}"
    );
    // A compressed message, and a frame cut short.
    let r = a.probe(&gw, &["frame", solve, "0100000000"]);
    assert_eq!(r["status"], 3, "{r}");
    let r = a.probe(&gw, &["frame", solve, "0000000009aa"]);
    assert_eq!(r["status"], 3, "{r}");
    // Larger than limits.max_body_bytes (16 MiB in the shipped configuration).
    let r = a.probe(&gw, &["big", solve, &(17 << 20).to_string()]);
    assert_eq!(r["status"], 8, "{r}");
    // Not HTTP/2 at all after the switch: the tunnel is closed, the gateway serves on.
    let r = a.probe(&gw, &["preface", &"47".repeat(64)]);
    assert_eq!(r["closed"], true, "{r}");
    // A Solve reset as soon as it is sent.
    let r = a.probe(&gw, &["reset", solve, "0a0472657365"]);
    assert_eq!(r["reset"], true, "{r}");
    still_serves(&gw.socket);

    let bad = records(&gw, "build.solve");
    assert!(
        bad.iter().any(|r| r
            .error
            .as_deref()
            .is_some_and(|e| e.contains("does not decode"))),
        "{bad:?}"
    );
    assert!(bad.iter().any(|r| r.status == 413), "{bad:?}");
    // The reset Solve: recorded as cancelled by the client.
    recorded(&gw, "build.solve", |r| r.status == 499);
    recorded(&gw, "grpc", |r| {
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("did not speak HTTP/2"))
    });
}

#[test]
fn buildkit_deny_refuses_both_tunnels_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with(audit_config(dir.path(), "[api]\nbuildkit = \"deny\"\n"));
    for path in ["/v1.41/grpc", "/session"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nX-Docker-Expose-Session-Uuid: s1\r\nContent-Length: 0\r\n\r\n"
        );
        let r = http(&gw.socket, head.as_bytes(), Duration::from_secs(10));
        assert_eq!(r.status, 403, "{path}");
        let message = r.json()["message"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("buildkit = \"deny\""), "{message}");
    }
    drop(gw);
    let records = audit_requests(dir.path());
    for endpoint in ["grpc", "session"] {
        let r = records
            .iter()
            .find(|r| r.endpoint == endpoint)
            .unwrap_or_else(|| panic!("no {endpoint} record in {records:?}"));
        assert_eq!(r.decision, portcullis::audit::Decision::Deny);
        assert_eq!(r.status, 403);
    }
}
