//! The tools people run, through the shipped `policies/portcullis.toml`, as plain unix users
//! (created for the test, identified by their peer uids): docker-compose (Debian's 1.29,
//! which speaks the API through docker-py) and `docker stack` / `docker service` on a
//! single-node swarm. Each flow is judged by the engine's state afterwards, asked directly,
//! and a second user running the same project is kept away from the first one's objects.
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
        cmd.args(["--ansi", "never", "-p", &self.name])
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    /// The same under a pseudo-terminal (`script`), for commands that need one (`exec`
    /// without `-T` runs `docker exec -it`).
    fn compose_tty(&self, gw: &Gateway, user: &str, args: &str) -> Command {
        let line = format!(
            "runuser -u {user} -- env DOCKER_HOST={} DOCKER_CONFIG=/nonexistent docker-compose --ansi never -p {} {args}",
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
/// on the engine), stopped and wiped on drop.
struct Swarm {
    env: [(&'static str, &'static str); 3],
}

impl Swarm {
    fn start() -> Self {
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
            pass(swarm.docker().args([
                "swarm",
                "init",
                "--advertise-addr",
                "127.0.0.1",
                "--default-addr-pool",
                "10.216.0.0/16",
            ]));
        }
        swarm
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

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = run(self.script().arg("stop"));
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
    // The swarm is a dockerd of its own whatever the engine under test, so the dockerd
    // pass has run this already; Podman has no swarm mode to run it on.
    if skip_on_podman("stacks and services need swarm mode, which Podman does not have") {
        return;
    }
    let (alice, bob) = ("pc-tools-sam", "pc-tools-eve");
    let _users = Users::create(&[alice, bob]);
    let swarm = Swarm::start();
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
