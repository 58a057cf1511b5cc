//! The tools people run, through the shipped `policies/portcullis.toml`, as plain unix users
//! (created for the test, identified by their peer uids): docker-compose (Debian's 1.29,
//! which speaks the API through docker-py) and `docker stack` / `docker service` on a
//! single-node swarm. Each flow is judged by the engine's state afterwards, asked directly,
//! and a second user running the same project is kept away from the first one's objects.
//! On the swarm: the host-escape features refused in `docker service create/update` and
//! `docker stack deploy`, secrets, configs, tasks, logs and events kept to their owner, and
//! nodes and the swarm itself left to administrators.
//!
//! The swarm runs on an engine of its own (`scripts/dev-engine` with another state dir), so
//! the other tests keep an engine that is not a swarm manager.

use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portcullis::config::Address;
use portcullis_tests::*;

const T: Duration = Duration::from_secs(120);

/// Runs `cmd`, which must succeed; returns stdout and stderr together.
fn pass(mut cmd: impl BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run_timeout(cmd, None, T);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    text(&out)
}

/// Runs `cmd`, which must fail; returns stdout and stderr together.
fn fail(mut cmd: impl BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run_timeout(cmd, None, T);
    assert!(!out.status.success(), "{cmd:?} passed: {}", text(&out));
    text(&out)
}

/// A docker-compose project directory, readable by every test user.
struct Project {
    dir: tempfile::TempDir,
    name: String,
}

impl Project {
    fn new(compose_file: &str, files: &[(&str, &str)]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("docker-compose.yml"), compose_file).expect("write");
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        for entry in walk(dir.path()) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        // Compose names its objects after the project: lowercase letters and digits.
        let name = unique("proj").replace('-', "");
        Project { dir, name }
    }

    /// `docker-compose -p NAME ARGS` in the project directory as `user`, through `gw`.
    fn compose(&self, gw: &Gateway, user: &str, args: &[&str]) -> Command {
        let mut cmd = as_user(user, &gw.docker_host(), "docker-compose");
        // docker-compose 1.29 builds with `docker build`, which builds with BuildKit once
        // the buildx CLI plugin is installed: this is the classic builder's path.
        cmd.env("DOCKER_BUILDKIT", "0")
            .args(["--ansi", "never", "-p", &self.name])
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    /// The same under a pseudo-terminal (`script`), for commands that need one (`exec`
    /// without `-T` runs `docker exec -it`).
    fn compose_tty(&self, gw: &Gateway, user: &str, args: &str) -> Command {
        let line = format!(
            "runuser -u {user} -- env DOCKER_HOST={} DOCKER_CONFIG=/nonexistent DOCKER_BUILDKIT=0 docker-compose --ansi never -p {} {args}",
            gw.docker_host(),
            self.name
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// The engine's objects of this project, asked directly: (containers, networks,
    /// volumes, images), by name.
    fn on_engine(&self) -> [Vec<String>; 4] {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let lines = |args: &[&str]| -> Vec<String> {
            ok(docker_direct().args(args))
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let image_ref = format!("reference={}_*", self.name);
        [
            lines(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]),
            lines(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]),
            lines(&["volume", "ls", "--filter", &label, "--format", "{{.Name}}"]),
            lines(&[
                "images",
                "--filter",
                &image_ref,
                "--format",
                "{{.Repository}}",
            ]),
        ]
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The engine's inspect field `format` of `object`, asked directly.
fn inspect(object: &str, format: &str) -> String {
    inspect_with(docker_direct(), object, format)
}

/// The same with `docker`, a command talking to some engine directly.
fn inspect_with(mut docker: Command, object: &str, format: &str) -> String {
    ok(docker.args(["inspect", "-f", format, object]))
        .trim()
        .to_owned()
}

const OWNER: &str = "{{index .Config.Labels \"io.portcullis.owner\"}}";

/// Two services (one built from a Dockerfile), a named volume, a user-defined network,
/// `depends_on` and labels of the project's own.
const APP: &str = r#"
version: "3.7"
services:
  db:
    image: portcullis/busybox:latest
    command: ["sh", "-c", "echo db ready; while true; do echo db tick; sleep 1; done"]
    volumes: ["data:/data"]
    networks: ["back"]
    labels:
      com.example.role: database
  web:
    build:
      context: ./web
      labels:
        com.example.built-by: compose
    depends_on: ["db"]
    volumes: ["data:/data"]
    networks: ["back"]
    labels:
      com.example.role: frontend
volumes:
  data:
    labels:
      com.example.keep: "yes"
networks:
  back:
    labels:
      com.example.tier: back
"#;

const WEB_DOCKERFILE: &str = "FROM portcullis/busybox:latest\n\
RUN echo built by compose > /hello\n\
CMD [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n";

#[test]
fn compose_project_lifecycle_as_two_users() {
    let (alice, bob) = ("pc-tools-alice", "pc-tools-bob");
    let _users = Users::create(&[alice, bob]);
    let gw = Gateway::start_shipped(None);
    let p = Project::new(APP, &[("web/Dockerfile", WEB_DOCKERFILE)]);
    let n = p.name.clone();
    let (db1, web1) = (format!("{n}_db_1"), format!("{n}_web_1"));
    let guard = Teardown(&p);

    pass(p.compose(&gw, alice, &["up", "-d", "--build"]));
    let [containers, networks, volumes, images] = p.on_engine();
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(networks, [format!("{n}_back")]);
    assert_eq!(volumes, [format!("{n}_data")]);
    assert_eq!(images, [format!("{n}_web")]);
    for c in [&db1, &web1] {
        assert_eq!(inspect(c, "{{.State.Running}}"), "true", "{c}");
        assert_eq!(inspect(c, OWNER), alice, "{c}");
    }
    assert_eq!(
        inspect(
            &format!("{n}_back"),
            "{{index .Labels \"io.portcullis.owner\"}}"
        ),
        alice
    );
    // The build cached as it would without the gateway: no label step of the gateway's own.
    let built = inspect(&format!("{n}_web"), "{{json .Config.Labels}}");
    assert!(
        built.contains("com.example.built-by") && !built.contains("io.portcullis"),
        "{built}"
    );

    // What alice reads back carries her labels, not the gateway's.
    let seen = pass(as_user(alice, &gw.docker_host(), "docker").args([
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &db1,
    ]));
    assert!(
        seen.contains("com.example.role") && !seen.contains("io.portcullis"),
        "{seen}"
    );

    // Volume create answers with the whole volume: without the gateway's label too.
    let vol = unique("tools-vol");
    let created = pass(as_user(alice, &gw.docker_host(), "curl").args([
        "-sf",
        "--unix-socket",
        gw.socket.to_str().expect("socket path"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!(r#"{{"Name":"{vol}","Labels":{{"com.example.a":"b"}}}}"#),
        "http://gateway/v1.41/volumes/create",
    ]));
    let _ = run(docker_direct().args(["volume", "rm", &vol]));
    assert!(
        created.contains("com.example.a") && !created.contains("io.portcullis"),
        "{created}"
    );

    let ps = pass(p.compose(&gw, alice, &["ps"]));
    assert!(ps.contains(&db1) && ps.contains(&web1), "{ps}");
    let logs = pass(p.compose(&gw, alice, &["logs", "db"]));
    assert!(logs.contains("db ready"), "{logs}");
    let mut follow = Streaming::spawn(&mut p.compose(&gw, alice, &["logs", "-f", "db"]));
    follow.expect_line(T, |l| l.contains("db tick"));
    follow.kill();

    let exec = pass(p.compose(&gw, alice, &["exec", "-T", "web", "cat", "/hello"]));
    assert!(exec.contains("built by compose"), "{exec}");
    let tty = pass(p.compose_tty(&gw, alice, "exec web sh -c 'tty; cat /hello'"));
    assert!(
        tty.contains("/dev/pts/") && tty.contains("built by compose"),
        "{tty}"
    );
    // compose 1.29 links a one-off container to the project's services.
    if !skip_on_podman(
        "compose run: Podman 4.3 refuses container links (\"link is not supported\")",
    ) {
        let once = pass(p.compose(&gw, alice, &["run", "--rm", "db", "echo", "one-off"]));
        assert!(once.contains("one-off"), "{once}");
        let [containers, ..] = p.on_engine();
        assert_eq!(containers.len(), 2, "run --rm left {containers:?}");
    }

    let started = |c: &str| inspect(c, "{{.State.StartedAt}}");
    let before = started(&db1);
    pass(p.compose(&gw, alice, &["restart", "db"]));
    assert_ne!(started(&db1), before, "db was not restarted");
    pass(p.compose(&gw, alice, &["stop"]));
    for c in [&db1, &web1] {
        assert_eq!(inspect(c, "{{.State.Running}}"), "false", "{c}");
    }
    pass(p.compose(&gw, alice, &["start"]));
    for c in [&db1, &web1] {
        assert_eq!(inspect(c, "{{.State.Running}}"), "true", "{c}");
    }
    pass(p.compose(&gw, alice, &["up", "-d", "--scale", "web=2"]));
    let web2 = format!("{n}_web_2");
    assert_eq!(inspect(&web2, "{{.State.Running}}"), "true");
    assert_eq!(inspect(&web2, OWNER), alice);

    // Bob runs a project of the same name: he sees none of alice's, and cannot adopt,
    // stop or remove any of it.
    let ids = |cs: &[&String]| cs.iter().map(|c| inspect(c, "{{.Id}}")).collect::<Vec<_>>();
    let alices = ids(&[&db1, &web1, &web2]);
    // Compose checks the project's network first: bob's `ps` shows nothing of alice's,
    // or fails on her network, naming the conflict.
    let bob_ps = run_timeout(&mut p.compose(&gw, bob, &["ps"]), None, T);
    let bob_ps = text(&bob_ps);
    assert!(
        !bob_ps.contains(&db1) && !bob_ps.contains(&web1),
        "bob sees alice's project: {bob_ps}"
    );
    let up = fail(p.compose(&gw, bob, &["up", "-d"]));
    assert!(
        up.contains("belongs to another user") || up.contains("already"),
        "bob's up does not name the conflict: {up}"
    );
    // Nor build over the project's image: its repository is alice's. (`docker-compose
    // build` stops at alice's network already.)
    let web_image = inspect(&format!("{n}_web"), "{{.Id}}");
    let mut bob_build = as_user(bob, &gw.docker_host(), "docker");
    bob_build
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &format!("{n}_web"), "web"])
        .current_dir(p.dir.path());
    let build = fail(bob_build);
    assert!(
        build.contains(&format!(
            "[image-owner] t[0]: tag \"{n}_web:latest\" belongs to another user"
        )),
        "bob's build does not name the owner: {build}"
    );
    assert_eq!(
        inspect(&format!("{n}_web"), "{{.Id}}"),
        web_image,
        "bob moved alice's tag"
    );
    let _ = run_timeout(&mut p.compose(&gw, bob, &["stop"]), None, T);
    let _ = run_timeout(&mut p.compose(&gw, bob, &["down", "-v"]), None, T);
    assert_eq!(
        ids(&[&db1, &web1, &web2]),
        alices,
        "alice's containers changed"
    );
    for c in [&db1, &web1, &web2] {
        assert_eq!(inspect(c, "{{.State.Running}}"), "true", "bob stopped {c}");
    }
    let [_, networks, volumes, _] = p.on_engine();
    assert_eq!(
        networks,
        [format!("{n}_back")],
        "bob removed alice's network"
    );
    assert_eq!(volumes, [format!("{n}_data")], "bob removed alice's volume");

    pass(p.compose(&gw, alice, &["down", "-v", "--rmi", "local"]));
    let left = p.on_engine();
    assert!(
        left.iter().all(Vec::is_empty),
        "left on the engine: {left:?}"
    );
    drop(guard);
}

/// A service the default policy refuses fails `up` with the rule's message, and what was
/// made before it is the caller's to remove through the gateway.
#[test]
fn compose_refused_service_leaves_nothing_behind() {
    let user = "pc-tools-carol";
    let _users = Users::create(&[user]);
    let gw = Gateway::start_shipped(None);
    let p = Project::new(
        r#"
version: "3.7"
services:
  ok:
    image: portcullis/busybox:latest
    command: ["sleep", "300"]
    volumes: ["data:/data"]
  root:
    image: portcullis/busybox:latest
    privileged: true
    command: ["sleep", "300"]
    volumes: ["/:/host"]
volumes:
  data: {}
"#,
        &[],
    );
    let guard = Teardown(&p);
    let up = fail(p.compose(&gw, user, &["up", "-d"]));
    assert!(
        up.contains("baseline: [privileged]") && up.contains("[bind-mounts]"),
        "{up}"
    );
    pass(p.compose(&gw, user, &["down", "-v"]));
    let left = p.on_engine();
    assert!(
        left.iter().all(Vec::is_empty),
        "left on the engine: {left:?}"
    );
    drop(guard);
}

/// Removes what a failed compose test left, directly on the engine.
struct Teardown<'a>(&'a Project);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let [containers, networks, volumes, images] = self.0.on_engine();
        let rm = |args: &[&str], names: Vec<String>| {
            if !names.is_empty() {
                let _ = run(docker_direct().args(args).args(names));
            }
        };
        rm(&["rm", "-f", "-v"], containers);
        rm(&["network", "rm"], networks);
        rm(&["volume", "rm", "-f"], volumes);
        rm(&["rmi", "-f"], images);
    }
}

/// A single-node swarm on an engine of its own, initialised by the administrator (directly
/// on the engine). It is left running: the swarm tests share it, also when the test runner
/// runs them at once in separate processes, so none may stop it under another; `.ci/run`
/// stops it at the end. Tests name their objects with [`unique`] and remove only those.
struct Swarm {
    env: [(&'static str, &'static str); 3],
}

impl Swarm {
    /// The swarm, started when needed; `None` in the Podman pass: the swarm is a dockerd of
    /// its own whatever the engine under test, so the dockerd pass has run the test already,
    /// and Podman has no swarm mode to run it on.
    fn start() -> Option<Self> {
        if skip_on_podman("stacks and services need swarm mode, which Podman does not have") {
            return None;
        }
        let swarm = Swarm {
            env: [
                ("PORTCULLIS_ENGINE_DIR", "/var/tmp/portcullis-swarm"),
                ("PORTCULLIS_ENGINE_BRIDGE", "pcl1"),
                ("PORTCULLIS_ENGINE_BRIDGE_CIDR", "10.214.0.1/24"),
            ],
        };
        pass(swarm.script().arg("start"));
        let state = ok(swarm
            .docker()
            .args(["info", "-f", "{{.Swarm.LocalNodeState}}"]));
        if state.trim() != "active" {
            let init = run_timeout(
                swarm.docker().args([
                    "swarm",
                    "init",
                    "--advertise-addr",
                    "127.0.0.1",
                    "--default-addr-pool",
                    "10.216.0.0/16",
                ]),
                None,
                T,
            );
            // Another test process may have initialised it in the meantime.
            let state = ok(swarm
                .docker()
                .args(["info", "-f", "{{.Swarm.LocalNodeState}}"]));
            assert_eq!(state.trim(), "active", "swarm init: {}", text(&init));
        }
        Some(swarm)
    }

    fn script(&self) -> Command {
        let mut cmd =
            Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-engine"));
        // A dockerd, even when the engine under test is Podman.
        cmd.env("PORTCULLIS_ENGINE", "docker")
            .envs(self.env)
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn address(&self) -> Address {
        format!("unix://{}/docker.sock", self.env[0].1)
            .parse()
            .expect("address")
    }

    /// `docker` directly on the swarm's engine, as the administrator.
    fn docker(&self) -> Command {
        docker_at(&self.address().to_string())
    }
}

const STACK: &str = r#"
version: "3.7"
services:
  web:
    image: portcullis/busybox:latest
    command: ["sh", "-c", "echo web ready; while true; do echo web tick; sleep 1; done"]
    networks: ["back"]
    secrets: ["token"]
    configs: ["settings"]
    labels:
      com.example.role: frontend
    deploy:
      replicas: 1
      labels:
        com.example.tier: front
networks:
  back:
    driver: overlay
secrets:
  token:
    file: ./token.txt
configs:
  settings:
    file: ./settings.txt
"#;

#[test]
fn stack_and_services_as_two_users() {
    let Some(swarm) = Swarm::start() else { return };
    let (alice, bob) = ("pc-tools-sam", "pc-tools-eve");
    let _users = Users::create(&[alice, bob]);
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let p = Project::new(
        STACK,
        &[("token.txt", "s3cret\n"), ("settings.txt", "mode=test\n")],
    );
    let stack = p.name.clone();
    let dock = |user: &str| {
        let mut cmd = as_user(user, &gw.docker_host(), "docker");
        cmd.current_dir(p.dir.path());
        cmd
    };
    let on_swarm = |args: &[&str]| ok(swarm.docker().args(args));
    let deploy = || {
        pass(dock(alice).args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            "docker-compose.yml",
            &stack,
        ]))
    };

    deploy();
    let web = format!("{stack}_web");
    let owner = "{{index .Spec.Labels \"io.portcullis.owner\"}}";
    assert_eq!(
        on_swarm(&["service", "inspect", "-f", owner, &web]).trim(),
        alice
    );
    let services = pass(dock(alice).args(["stack", "services", &stack]));
    assert!(services.contains(&web), "{services}");
    let running = || {
        let ps = ok(dock(alice).args([
            "stack",
            "ps",
            &stack,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.CurrentState}}",
        ]));
        ps.contains("Running").then_some(ps)
    };
    let ps = wait_for("alice's stack to run", T, running);
    assert!(ps.contains(&format!("{web}.1")), "{ps}");
    // The task's container is the service owner's too.
    let task_container = on_swarm(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={web}"),
    ]);
    let task_container = task_container.lines().next().expect("a task container");
    assert_eq!(inspect_with(swarm.docker(), task_container, OWNER), alice);

    let logs = wait_for("the service's logs", T, || {
        let out = run_timeout(dock(alice).args(["service", "logs", &web]), None, T);
        let t = text(&out);
        (out.status.success() && t.contains("web ready")).then_some(t)
    });
    assert!(logs.contains(&format!("{web}.1")), "{logs}");
    let seen = pass(dock(alice).args(["service", "inspect", "-f", "{{json .Spec.Labels}}", &web]));
    assert!(
        seen.contains("com.docker.stack.namespace") && !seen.contains("io.portcullis"),
        "{seen}"
    );
    // A second deploy of the same stack updates its services.
    let redeploy = deploy();
    assert!(
        redeploy.contains(&format!("Updating service {web}")),
        "{redeploy}"
    );
    pass(dock(alice).args(["service", "update", "--label-add", "com.example.v=2", &web]));
    let labels = on_swarm(&["service", "inspect", "-f", "{{json .Spec.Labels}}", &web]);
    assert!(
        labels.contains("com.example.v")
            && labels.contains(&format!("\"io.portcullis.owner\":\"{alice}\"")),
        "{labels}"
    );
    pass(dock(alice).args(["service", "scale", &format!("{web}=2")]));
    let replicas = on_swarm(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.Mode.Replicated.Replicas}}",
        &web,
    ]);
    assert_eq!(replicas.trim(), "2");

    let solo = format!("{stack}-solo");
    pass(dock(alice).args([
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        &solo,
        IMAGE,
        "sleep",
        "300",
    ]));
    let ls = pass(dock(alice).args(["service", "ls", "--format", "{{.Name}}"]));
    assert!(ls.contains(&solo) && ls.contains(&web), "{ls}");
    let sps = pass(dock(alice).args(["service", "ps", &solo]));
    assert!(sps.contains(&format!("{solo}.1")), "{sps}");

    // Bob sees none of it and can touch none of it.
    let bls = pass(dock(bob).args(["service", "ls", "--format", "{{.Name}}"]));
    assert!(!bls.contains(&stack), "bob sees {bls}");
    let bstack = pass(dock(bob).args(["stack", "ls"]));
    assert!(!bstack.contains(&stack), "bob sees {bstack}");
    let bps = run_timeout(dock(bob).args(["stack", "ps", &stack]), None, T);
    assert!(!text(&bps).contains(&web), "bob sees {}", text(&bps));
    let task_id = on_swarm(&["service", "ps", "-q", &web]);
    let task_id = task_id.lines().next().expect("a task");
    for args in [
        vec!["service", "inspect", web.as_str()],
        vec!["service", "logs", web.as_str()],
        vec!["service", "ps", web.as_str()],
        vec!["service", "scale", "--detach", &format!("{web}=0")],
        vec![
            "service",
            "update",
            "--detach",
            "--label-add",
            "x=1",
            web.as_str(),
        ],
        vec!["service", "rm", solo.as_str()],
        vec!["inspect", "--type", "task", task_id],
        vec!["exec", task_container, "true"],
    ] {
        let out = fail(dock(bob).args(&args));
        assert!(
            out.contains("belongs to another user") || out.contains("no such"),
            "{args:?}: {out}"
        );
    }
    let brm = run_timeout(dock(bob).args(["stack", "rm", &stack]), None, T);
    assert!(
        on_swarm(&["service", "ls", "--format", "{{.Name}}"]).contains(&web),
        "bob removed alice's stack: {}",
        text(&brm)
    );
    let replicas = on_swarm(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.Mode.Replicated.Replicas}}",
        &web,
    ]);
    assert_eq!(replicas.trim(), "2", "bob scaled alice's service");

    pass(dock(alice).args(["service", "rm", &solo]));
    pass(dock(alice).args(["stack", "rm", &stack]));
    let left = wait_for("the stack to be gone", T, || {
        let names = on_swarm(&["service", "ls", "--format", "{{.Name}}"])
            + &on_swarm(&["secret", "ls", "--format", "{{.Name}}"])
            + &on_swarm(&["config", "ls", "--format", "{{.Name}}"])
            + &on_swarm(&["network", "ls", "--format", "{{.Name}}"]);
        (!names.contains(&stack)).then_some(names)
    });
    assert!(!left.contains(&stack), "{left}");
}

/// `docker` as `user` through `gw`.
fn docker_as(gw: &Gateway, user: &str) -> Command {
    as_user(user, &gw.docker_host(), "docker")
}

/// A raw API request as `user` through `gw` (curl on the gateway's socket): the status and
/// the body. For what the docker CLI never sends but the engine accepts.
fn api_as(gw: &Gateway, user: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut curl = as_user(user, &gw.docker_host(), "curl");
    curl.args([
        "-s",
        "-X",
        method,
        "--unix-socket",
        gw.socket.to_str().expect("socket path"),
        "-H",
        "Content-Type: application/json",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(body) = body {
        curl.args(["-d", body]);
    }
    let out = pass(curl.arg(format!("http://gateway/v1.41{path}")));
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// The `message` of an engine-style error body.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

/// Removes from the swarm's engine, directly, the services, secrets, configs, networks and
/// volumes whose names start with the prefix: what a failed test left.
struct SwarmLeftovers<'a>(&'a Swarm, String);

impl Drop for SwarmLeftovers<'_> {
    fn drop(&mut self) {
        let filter = format!("name={}", self.1);
        for kind in ["service", "secret", "config", "network", "volume"] {
            let out = run(self
                .0
                .docker()
                .args([kind, "ls", "-q", "--filter", &filter]));
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = run(self.0.docker().args([kind, "rm"]).args(&ids));
            }
        }
    }
}

/// The spec and version of `service` on the engine, asked directly.
fn service_state(swarm: &Swarm, service: &str) -> String {
    ok(swarm.docker().args([
        "service",
        "inspect",
        "-f",
        "{{.Version.Index}} {{json .Spec}}",
        service,
    ]))
}

fn service_exists(swarm: &Swarm, service: &str) -> bool {
    run(swarm.docker().args(["service", "inspect", service]))
        .status
        .success()
}

/// `docker service create` and `docker service update` as a plain user: every host-escape
/// feature is refused with its rule, and the engine has no such service, or the service's
/// spec as it was. The CLI names networks by id (`--network host` is the swarm's `host`
/// network's id), and the API takes mount types in any case or none (a bind): neither gets
/// a host path or the host's network past the policy.
#[test]
fn service_host_escapes_are_refused() {
    let user = "pc-tools-sol";
    let _users = Users::create(&[user]);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let prefix = unique("svc");
    let _left = SwarmLeftovers(&swarm, prefix.clone());
    let create = |name: &str, flags: &[&str]| {
        let mut cmd = docker_as(&gw, user);
        cmd.args(["service", "create", "--detach", "--no-resolve-image"])
            .args(["--name", name])
            .args(flags)
            .args([IMAGE, "sleep", "300"]);
        cmd
    };

    let refused: [(&[&str], &str); 6] = [
        (
            &["--mount", "type=bind,src=/,dst=/h"],
            r#"baseline: [bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source: host path "/" is outside the allowed paths"#,
        ),
        (
            &[
                "--mount",
                "type=volume,dst=/d,volume-driver=local,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/",
            ],
            r#"[volume-options] TaskTemplate.ContainerSpec.Mounts[0].VolumeOptions.DriverConfig.Options.device is "/""#,
        ),
        (
            &["--cap-add", "SYS_ADMIN"],
            "[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0] adds",
        ),
        (
            &["--cap-add", "ALL"],
            r#"[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0] adds "ALL""#,
        ),
        (
            &["--network", "host"],
            "[host-namespaces] TaskTemplate.Networks[0].Target is",
        ),
        (
            &["--sysctl", "kernel.shm_rmid_forced=1"],
            r#"[sysctls] TaskTemplate.ContainerSpec.Sysctls["kernel.shm_rmid_forced"]"#,
        ),
    ];
    for (i, (flags, rule)) in refused.iter().enumerate() {
        let name = format!("{prefix}-bad{i}");
        let out = fail(create(&name, flags));
        assert!(out.contains(rule), "{flags:?}: {rule} not in {out}");
        assert!(!service_exists(&swarm, &name), "{flags:?} made {name}");
    }

    // What the CLI never sends but the engine reads as a bind mount of `/`.
    for mount in [
        r#"{"Type":"BIND","Source":"/","Target":"/h"}"#,
        r#"{"Source":"/","Target":"/h"}"#,
        r#"{"Type":null,"Source":"/","Target":"/h"}"#,
    ] {
        let name = format!("{prefix}-raw");
        let (status, body) = api_as(
            &gw,
            user,
            "POST",
            "/services/create",
            Some(&format!(
                r#"{{"Name":"{name}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Args":["sleep","300"],"Mounts":[{mount}]}}}}}}"#
            )),
        );
        assert_eq!(status, 403, "{mount}: {body}");
        assert!(
            body.contains("[bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source"),
            "{mount}: {body}"
        );
        assert!(!service_exists(&swarm, &name), "{mount} made {name}");
    }

    // A clean service on a network of the user's, then updates that would add what a create
    // may not have.
    let net = format!("{prefix}-net");
    pass(docker_as(&gw, user).args(["network", "create", "--driver", "overlay", &net]));
    let svc = format!("{prefix}-ok");
    pass(create(&svc, &["--network", &net]));
    let before = service_state(&swarm, &svc);
    let updates: [(&[&str], &str); 4] = [
        (
            &["--mount-add", "type=bind,src=/etc,dst=/e"],
            r#"[bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source: host path "/etc""#,
        ),
        (
            &["--cap-add", "NET_ADMIN"],
            "[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0] adds",
        ),
        (
            &["--sysctl-add", "net.ipv4.ip_forward=1"],
            r#"[sysctls] TaskTemplate.ContainerSpec.Sysctls["net.ipv4.ip_forward"]"#,
        ),
        (
            &["--network-add", "host"],
            // The CLI sorts a service's networks by id.
            "the host's network",
        ),
    ];
    for (flags, rule) in updates {
        let out = fail(
            docker_as(&gw, user)
                .args(["service", "update", "--detach"])
                .args(flags)
                .arg(&svc),
        );
        assert!(out.contains(rule), "{flags:?}: {rule} not in {out}");
        assert_eq!(
            service_state(&swarm, &svc),
            before,
            "{flags:?} changed {svc}"
        );
    }
    let id = ok(swarm
        .docker()
        .args(["service", "inspect", "-f", "{{.ID}}", &svc]));
    let version = before.split_whitespace().next().expect("version");
    let (status, body) = api_as(
        &gw,
        user,
        "POST",
        &format!("/services/{}/update?version={version}", id.trim()),
        Some(&format!(
            r#"{{"Name":"{svc}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Args":["sleep","300"],"Mounts":[{{"Source":"/","Target":"/h"}}]}}}}}}"#
        )),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("[bind-mounts]"), "{body}");
    assert_eq!(
        service_state(&swarm, &svc),
        before,
        "the raw update went through"
    );

    // An update the policy has nothing against goes through.
    pass(docker_as(&gw, user).args(["service", "update", "--detach", "--env-add", "PC=1", &svc]));
    let env = ok(swarm.docker().args([
        "service",
        "inspect",
        "-f",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        &svc,
    ]));
    assert!(env.contains("PC=1"), "{env}");
    pass(docker_as(&gw, user).args(["service", "rm", &svc]));
    assert!(!service_exists(&swarm, &svc));
    // The network is free once the service's task has left it.
    wait_for("the network to be removed", T, || {
        run_timeout(docker_as(&gw, user).args(["network", "rm", &net]), None, T)
            .status
            .success()
            .then_some(())
    });
}

/// `docker stack deploy` as a plain user: a compose file with a bind mount of `/`,
/// `cap_add`, `sysctls` and the host network is refused with every rule named, one whose
/// volume's `driver_opts` bind `/` too; the options `docker stack deploy` ignores
/// (`privileged`, `network_mode`, `pid`, `ipc`, `security_opt`, `devices`) leave the task's
/// container without them.
#[test]
fn stack_host_escapes_are_refused() {
    let user = "pc-tools-ray";
    let _users = Users::create(&[user]);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let deploy = |p: &Project| {
        let mut cmd = docker_as(&gw, user);
        cmd.args(["stack", "deploy", "--resolve-image", "never"])
            .args(["-c", "docker-compose.yml", &p.name])
            .current_dir(p.dir.path());
        cmd
    };
    let services_of = |stack: &str| {
        ok(swarm.docker().args([
            "service",
            "ls",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
            "--format",
            "{{.Name}}",
        ]))
    };

    let escapes = Project::new(
        r#"
version: "3.7"
services:
  root:
    image: portcullis/busybox:latest
    command: ["sleep", "300"]
    volumes: ["/:/host"]
    cap_add: ["SYS_ADMIN"]
    sysctls:
      kernel.shm_rmid_forced: 1
    networks: ["hostnet"]
networks:
  hostnet:
    external: true
    name: host
"#,
        &[],
    );
    let _left = SwarmLeftovers(&swarm, escapes.name.clone());
    let out = fail(deploy(&escapes));
    for rule in [
        r#"[bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source: host path "/""#,
        "[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0]",
        r#"[sysctls] TaskTemplate.ContainerSpec.Sysctls["kernel.shm_rmid_forced"]"#,
        r#"[host-namespaces] TaskTemplate.Networks[0].Target is "host""#,
    ] {
        assert!(out.contains(rule), "{rule} not in {out}");
    }
    assert_eq!(services_of(&escapes.name).trim(), "", "a service was made");
    // What the deploy made before the refused service (nothing here) is the caller's.
    let _ = run_timeout(
        docker_as(&gw, user).args(["stack", "rm", &escapes.name]),
        None,
        T,
    );

    // A named volume of the local driver binding `/`. (The caller makes the volume first, as
    // for containers: one the engine made would have no owner.)
    let disguised = Project::new(
        r#"
version: "3.7"
services:
  app:
    image: portcullis/busybox:latest
    command: ["sleep", "300"]
    volumes: ["data:/data"]
volumes:
  data:
    driver_opts:
      type: none
      o: bind
      device: /
"#,
        &[],
    );
    let _left_too = SwarmLeftovers(&swarm, disguised.name.clone());
    let volume = format!("{}_data", disguised.name);
    pass(docker_as(&gw, user).args(["volume", "create", &volume]));
    let out = fail(deploy(&disguised));
    for rule in [
        "[volume-options] TaskTemplate.ContainerSpec.Mounts[0].VolumeOptions.DriverConfig.Options.o is \"bind\"",
        "[volume-options] TaskTemplate.ContainerSpec.Mounts[0].VolumeOptions.DriverConfig.Options.device is \"/\"",
    ] {
        assert!(out.contains(rule), "{rule} not in {out}");
    }
    assert_eq!(
        services_of(&disguised.name).trim(),
        "",
        "a service was made"
    );
    let opts = ok(swarm
        .docker()
        .args(["volume", "inspect", "-f", "{{json .Options}}", &volume]));
    assert!(!opts.contains("bind"), "{opts}");
    // The stack's network, made before the refused service, is the caller's to remove.
    pass(docker_as(&gw, user).args(["stack", "rm", &disguised.name]));
    let networks = ok(swarm.docker().args([
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={}", disguised.name),
    ]));
    assert_eq!(networks.trim(), "", "the stack's network is left");
    pass(docker_as(&gw, user).args(["volume", "rm", &volume]));

    // What swarm services cannot have: the CLI drops it and says so.
    let ignored = Project::new(
        r#"
version: "3.7"
services:
  app:
    image: portcullis/busybox:latest
    command: ["sleep", "300"]
    privileged: true
    network_mode: host
    pid: host
    ipc: host
    security_opt: ["seccomp=unconfined"]
    devices: ["/dev/mem:/dev/mem"]
"#,
        &[],
    );
    let _left_ignored = SwarmLeftovers(&swarm, ignored.name.clone());
    let out = pass(deploy(&ignored));
    assert!(out.contains("Ignoring unsupported options"), "{out}");
    let service = format!("{}_app", ignored.name);
    let container = wait_for("the stack's task to run", T, || {
        let id = ok(swarm.docker().args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]));
        id.lines().next().map(str::to_owned)
    });
    let host = inspect_with(
        swarm.docker(),
        &container,
        "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}} {{.HostConfig.IpcMode}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.Devices}}",
    );
    let fields: Vec<&str> = host.split(' ').collect();
    assert_eq!(fields[0], "false", "privileged: {host}");
    assert!(
        fields[1..4].iter().all(|mode| *mode != "host"),
        "a host namespace: {host}"
    );
    assert!(!fields[4].contains("unconfined"), "{host}");
    assert!(matches!(fields[5], "null" | "[]"), "devices: {host}");
    pass(docker_as(&gw, user).args(["stack", "rm", &ignored.name]));
}

/// A file readable by every test user, for `docker secret create` and `docker config
/// create`.
fn shared_file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path.to_str().expect("path").to_owned()
}

/// Secrets and configs belong to their creator: another user lists none of them, cannot
/// inspect or remove them, and cannot give them to a service of their own, by name through
/// the CLI or by id through the API.
#[test]
fn secrets_and_configs_as_two_users() {
    let (alice, bob) = ("pc-tools-ada", "pc-tools-bo");
    let _users = Users::create(&[alice, bob]);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let prefix = unique("sec");
    let _left = SwarmLeftovers(&swarm, prefix.clone());
    let files = tempfile::tempdir().expect("tempdir");
    let id_of = |kind: &str, name: &str| {
        ok(swarm
            .docker()
            .args([kind, "inspect", "-f", "{{.ID}}", name]))
        .trim()
        .to_owned()
    };

    for kind in ["secret", "config"] {
        let name = format!("{prefix}-{kind}");
        let file = shared_file(&files, kind, "s3cret\n");
        pass(docker_as(&gw, alice).args([kind, "create", &name, &file]));
        let owner = ok(swarm.docker().args([
            kind,
            "inspect",
            "-f",
            "{{index .Spec.Labels \"io.portcullis.owner\"}}",
            &name,
        ]));
        assert_eq!(owner.trim(), alice, "{kind}");
        let id = id_of(kind, &name);

        let ls = pass(docker_as(&gw, alice).args([kind, "ls", "--format", "{{.Name}}"]));
        assert!(ls.contains(&name), "alice's {kind} ls: {ls}");
        let seen = pass(docker_as(&gw, alice).args([kind, "inspect", &name]));
        assert!(
            seen.contains(&id) && !seen.contains("io.portcullis"),
            "{seen}"
        );

        let ls = pass(docker_as(&gw, bob).args([kind, "ls", "--format", "{{.Name}}"]));
        assert!(!ls.contains(&name), "bob lists alice's {kind}: {ls}");
        for args in [
            vec![kind, "inspect", name.as_str()],
            vec![kind, "inspect", id.as_str()],
            vec![kind, "rm", name.as_str()],
            vec![kind, "rm", id.as_str()],
        ] {
            let out = fail(docker_as(&gw, bob).args(&args));
            assert!(
                out.contains(&format!(
                    "[owner] {kind} \"{name}\" belongs to another user"
                )),
                "{args:?}: {out}"
            );
        }
        assert_eq!(id_of(kind, &name), id, "bob removed alice's {kind}");

        // Bob's service cannot have it: the CLI finds no such name among his...
        let svc = format!("{prefix}-{kind}-bob");
        let out = fail(docker_as(&gw, bob).args([
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &svc,
            &format!("--{kind}"),
            &name,
            IMAGE,
            "sleep",
            "300",
        ]));
        assert!(out.contains("not found"), "{out}");
        // ...and the API refuses it by id.
        let field = if kind == "secret" {
            "Secrets"
        } else {
            "Configs"
        };
        let id_key = if kind == "secret" {
            "SecretID"
        } else {
            "ConfigID"
        };
        let name_key = if kind == "secret" {
            "SecretName"
        } else {
            "ConfigName"
        };
        let (status, body) = api_as(
            &gw,
            bob,
            "POST",
            "/services/create",
            Some(&format!(
                r#"{{"Name":"{svc}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Args":["sleep","300"],"{field}":[{{"{id_key}":"{id}","{name_key}":"{name}","File":{{"Name":"x","UID":"0","GID":"0","Mode":292}}}}]}}}}}}"#
            )),
        );
        assert_eq!(status, 403, "{body}");
        assert!(
            message(&body).contains(&format!(
                "tenancy: [owner] {bob} may use only its own objects: TaskTemplate.ContainerSpec.{field}[0].{id_key}: {kind} \"{id}\" belongs to another user"
            )),
            "{body}"
        );
        assert!(!service_exists(&swarm, &svc), "bob's service was made");

        pass(docker_as(&gw, alice).args([kind, "rm", &name]));
        let gone = run(swarm.docker().args([kind, "inspect", &name]));
        assert!(!gone.status.success(), "alice's {kind} is still there");
    }
}

/// A service's logs, tasks and events are its owner's: another user's `docker service
/// logs`, `docker service ps`, task inspect and task logs are refused, and `docker events
/// --filter type=service` shows each user the events of their own services only.
#[test]
fn service_tasks_logs_and_events_as_two_users() {
    let (alice, bob) = ("pc-tools-ivy", "pc-tools-max");
    let _users = Users::create(&[alice, bob]);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let prefix = unique("ev");
    let _left = SwarmLeftovers(&swarm, prefix.clone());
    // Both streams start at the same past instant, so what each is shown does not depend on
    // when it connected; the engine sends the events in the order they happened.
    let start = ok(swarm.docker().args(["info", "-f", "{{.SystemTime}}"]));
    let stream = |user: &str| {
        Streaming::spawn(docker_as(&gw, user).args([
            "events",
            "--since",
            start.trim(),
            "--filter",
            "type=service",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ]))
    };
    let (mut alices_events, mut bobs_events) = (stream(alice), stream(bob));
    // The lines of `events` up to the first one equal to `last`.
    let lines_until = |events: &mut Streaming, last: &str| {
        let mut lines = Vec::new();
        loop {
            let line = events.expect_line(T, |_| true);
            let done = line == last;
            lines.push(line);
            if done {
                return lines;
            }
        }
    };
    let create = |user: &str, name: &str| {
        pass(docker_as(&gw, user).args([
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            name,
            IMAGE,
            "sh",
            "-c",
            "echo task ready; sleep 300",
        ]))
    };

    let (hers, his) = (format!("{prefix}-alice"), format!("{prefix}-bob"));
    create(alice, &hers);
    pass(docker_as(&gw, alice).args(["service", "update", "--detach", "--env-add", "A=1", &hers]));
    create(bob, &his);
    let task = wait_for("alice's task to run", T, || {
        let ps = ok(swarm.docker().args([
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &hers,
        ]));
        ps.lines().next().map(str::to_owned)
    });

    wait_for("alice's service logs", T, || {
        let out = run_timeout(
            docker_as(&gw, alice).args(["service", "logs", &hers]),
            None,
            T,
        );
        (out.status.success() && text(&out).contains("task ready")).then_some(())
    });
    let logs = pass(docker_as(&gw, alice).args(["service", "logs", &task]));
    assert!(logs.contains("task ready"), "{logs}");
    for args in [
        vec!["service", "logs", hers.as_str()],
        vec!["service", "logs", task.as_str()],
        vec!["inspect", "--type", "task", task.as_str()],
        vec!["service", "inspect", hers.as_str()],
    ] {
        let out = fail(docker_as(&gw, bob).args(&args));
        assert!(
            out.contains(&format!(
                "[owner] service \"{hers}\" belongs to another user"
            )),
            "{args:?}: {out}"
        );
    }
    // `service ps` looks the name up in bob's service list, which does not have it.
    let out = fail(docker_as(&gw, bob).args(["service", "ps", &hers]));
    assert!(out.contains(&format!("no such service: {hers}")), "{out}");
    // Bob's task list has none of hers.
    let (status, tasks) = api_as(&gw, bob, "GET", "/tasks", None);
    assert_eq!(status, 200, "{tasks}");
    assert!(!tasks.contains(&task), "bob lists alice's task: {tasks}");

    pass(docker_as(&gw, alice).args(["service", "rm", &hers]));
    pass(docker_as(&gw, bob).args(["service", "rm", &his]));
    assert!(!service_exists(&swarm, &hers) && !service_exists(&swarm, &his));

    // Alice's stream to her last event, which came after bob's create: hers only.
    let seen = lines_until(&mut alices_events, &format!("remove {hers}"));
    for expected in [format!("create {hers}"), format!("update {hers}")] {
        assert!(
            seen.contains(&expected),
            "alice misses {expected}: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|l| !l.contains(&his)),
        "alice sees bob's: {seen:?}"
    );
    // Bob's to his last, which came after all of hers.
    let seen = lines_until(&mut bobs_events, &format!("remove {his}"));
    assert!(seen.contains(&format!("create {his}")), "{seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains(&hers)),
        "bob sees alice's: {seen:?}"
    );
}

/// A local user in the shipped policy's administrators' group (`docker-admin`), made for the
/// test; the group is made too if the host has none, and removed again then.
struct Admin {
    _user: Users,
    made_group: bool,
}

impl Admin {
    fn create(name: &str) -> Self {
        let made_group = !run(Command::new("getent").args(["group", "docker-admin"]))
            .status
            .success();
        if made_group {
            pass(Command::new("groupadd").args(["--system", "docker-admin"]));
        }
        let user = Users::create(&[name]);
        pass(Command::new("usermod").args(["-aG", "docker-admin", name]));
        Admin {
            _user: user,
            made_group,
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if self.made_group {
            let _ = run(Command::new("groupdel").arg("docker-admin"));
        }
    }
}

/// Nodes and the swarm itself are the host's administration: every user may list and
/// inspect the nodes (`docker service ps` names the node of each task), but only
/// administrators change a node or the swarm, or read the swarm's join tokens (`GET
/// /swarm`, which `docker swarm join-token` reads: a manager token adds a manager).
#[test]
fn nodes_and_swarm_are_administration() {
    let (user, admin) = ("pc-tools-kim", "pc-tools-ops");
    let _users = Users::create(&[user]);
    let _admin = Admin::create(admin);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let node = ok(swarm.docker().args(["info", "-f", "{{.Swarm.NodeID}}"]))
        .trim()
        .to_owned();
    let on_swarm = |args: &[&str]| ok(swarm.docker().args(args)).trim().to_owned();
    let swarm_state =
        || on_swarm(&["swarm", "ca"]) + &on_swarm(&["info", "-f", "{{json .Swarm.Cluster}}"]);
    let node_labels = || on_swarm(&["node", "inspect", "-f", "{{json .Spec.Labels}}", "self"]);

    let ls = pass(docker_as(&gw, user).args(["node", "ls", "--format", "{{.ID}}"]));
    assert!(ls.contains(&node), "{ls}");
    let seen = pass(docker_as(&gw, user).args(["node", "inspect", "-f", "{{.ID}}", &node]));
    assert_eq!(seen.trim(), node);

    let (labels, cluster) = (node_labels(), swarm_state());
    let label = format!("{}=1", unique("node"));
    // Only what would do no harm to the shared swarm had it passed: no `swarm leave`, no
    // `node rm`, a history limit it has already.
    let limit = on_swarm(&[
        "info",
        "-f",
        "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}",
    ]);
    for (args, rule) in [
        (
            vec![
                "node",
                "update",
                "--label-add",
                label.as_str(),
                node.as_str(),
            ],
            "[host-admin] node.update",
        ),
        (
            vec!["swarm", "join-token", "manager"],
            "[host-admin] swarm.inspect",
        ),
        (
            vec!["swarm", "join-token", "worker"],
            "[host-admin] swarm.inspect",
        ),
        (vec!["swarm", "unlock-key"], "[host-admin] swarm."),
        (
            vec!["swarm", "update", "--task-history-limit", limit.as_str()],
            "[host-admin] swarm.",
        ),
    ] {
        let out = fail(docker_as(&gw, user).args(&args));
        assert!(out.contains(rule), "{args:?}: {rule} not in {out}");
        assert!(!out.contains("SWMTKN"), "{args:?} shows a token: {out}");
    }
    let (status, body) = api_as(&gw, user, "GET", "/swarm", None);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("SWMTKN"), "{body}");
    assert_eq!(node_labels(), labels, "the user changed the node");
    assert_eq!(swarm_state(), cluster, "the user changed the swarm");
    assert_eq!(
        on_swarm(&["info", "-f", "{{.Swarm.LocalNodeState}}"]),
        "active"
    );

    // An administrator may.
    let token = pass(docker_as(&gw, admin).args(["swarm", "join-token", "-q", "worker"]));
    assert_eq!(
        token.trim(),
        on_swarm(&["swarm", "join-token", "-q", "worker"])
    );
    pass(docker_as(&gw, admin).args(["node", "update", "--label-add", &label, &node]));
    let key = label.trim_end_matches("=1");
    assert!(node_labels().contains(key), "{}", node_labels());
    pass(docker_as(&gw, admin).args(["node", "update", "--label-rm", key, &node]));
    assert_eq!(node_labels(), labels);
    // The same limit it has: the swarm's version moves, nothing else.
    let version = || on_swarm(&["info", "-f", "{{.Swarm.Cluster.Version.Index}}"]);
    let before = version();
    pass(docker_as(&gw, admin).args(["swarm", "update", "--task-history-limit", &limit]));
    assert_ne!(
        version(),
        before,
        "the administrator's swarm update did not reach the engine"
    );
}

/// A service mounts only its owner's volumes, however the mount's type is spelled: swarm
/// reads `"VOLUME"` as a volume mount too.
#[test]
fn service_volumes_as_two_users() {
    let (alice, bob) = ("pc-tools-liv", "pc-tools-ned");
    let _users = Users::create(&[alice, bob]);
    let Some(swarm) = Swarm::start() else { return };
    let gw = Gateway::start_shipped(Some(swarm.address()));
    let prefix = unique("vol");
    let _left = SwarmLeftovers(&swarm, prefix.clone());
    let volume = format!("{prefix}-data");
    pass(docker_as(&gw, alice).args(["volume", "create", &volume]));
    let svc = format!("{prefix}-bob");
    for kind in ["volume", "VOLUME", "Volume"] {
        let (status, body) = api_as(
            &gw,
            bob,
            "POST",
            "/services/create",
            Some(&format!(
                r#"{{"Name":"{svc}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Args":["sleep","300"],"Mounts":[{{"Type":"{kind}","Source":"{volume}","Target":"/v"}}]}}}}}}"#
            )),
        );
        assert_eq!(status, 403, "{kind}: {body}");
        assert!(
            message(&body).contains(&format!(
                "TaskTemplate.ContainerSpec.Mounts[0].Source: volume \"{volume}\" belongs to another user"
            )),
            "{kind}: {body}"
        );
        assert!(
            !service_exists(&swarm, &svc),
            "{kind}: bob's service was made"
        );
    }
    pass(docker_as(&gw, alice).args(["volume", "rm", &volume]));
}
