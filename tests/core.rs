//! Issue #2: the gateway core is transparent. The real docker CLI (28.x, negotiating API 1.41
//! with the 20.10 engine) and raw HTTP go through an in-process gateway to the real engine;
//! each test compares with the same command run directly where that means something, and
//! checks the engine's state afterwards, not just exit codes.
//!
//! Every test is independent (own gateway, `unique()` names, its own run label) and cleans up
//! through a [`Cleanup`] guard that force-removes by name directly on the engine.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis::config::Address;
use portcullis::Config;
use portcullis_tests::*;

/// Time limit for one docker command; generous because two cores run the suite in parallel.
const T: Duration = Duration::from_secs(60);
/// Time limit for something that should happen promptly (a line to arrive, a state change).
const SOON: Duration = Duration::from_secs(20);

/// `--label` arguments for an object a test creates: the common test label and the run's own.
fn labels(run: &str) -> Vec<String> {
    vec![
        "--label".into(),
        TEST_LABEL.into(),
        "--label".into(),
        format!("portcullis-test-run={run}"),
    ]
}

/// The event action of a container's removal: dockerd's `destroy`, Podman's `remove`.
fn removal_action() -> &'static str {
    if engine_is_podman() {
        "remove"
    } else {
        "destroy"
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A detached `sleep` container started through the gateway.
fn start_sleeper(gw: &Gateway, c: &mut Cleanup, prefix: &str) -> String {
    let name = c.container(&unique(prefix));
    ok_timeout(
        gw.docker()
            .args(["run", "-d", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "sleep", "600"]),
        T,
    );
    name
}

/// `docker inspect --format` directly on the engine.
fn inspect_direct(what: &str, format: &str) -> String {
    ok_timeout(
        docker_direct().args(["inspect", "--format", format, what]),
        T,
    )
    .trim_end()
    .to_owned()
}

// ---------------------------------------------------------------------------------------
// version and ping

#[test]
fn version_negotiates_the_same_api_version_as_direct() {
    let gw = Gateway::start();
    let fmt = "{{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.Version}}";
    let via = ok_timeout(gw.docker().args(["version", "--format", fmt]), T);
    let direct = ok_timeout(docker_direct().args(["version", "--format", fmt]), T);
    assert_eq!(via, direct, "docker version differs through the gateway");
    let f: Vec<&str> = via.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{via:?}");
    // The 28.x client speaks 1.50; it must have negotiated down to what the engine offers.
    assert_eq!(
        f[0], f[1],
        "client did not negotiate the server's API version: {via:?}"
    );
}

#[test]
fn ping_head_and_get_versioned_and_unversioned() {
    let gw = Gateway::start();
    for method in ["GET", "HEAD"] {
        for path in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
            let req = request(method, path, None);
            let via = http(&gw.socket, &req, SOON);
            let direct = http(&engine_socket(), &req, SOON);
            assert_eq!(via.status, 200, "{method} {path}: {via:?}");
            assert_eq!(via.status, direct.status, "{method} {path}");
            let api = via
                .header("Api-Version")
                .unwrap_or_else(|| panic!("{method} {path}: no Api-Version header: {via:?}"));
            assert_eq!(Some(api), direct.header("Api-Version"), "{method} {path}");
            assert_eq!(
                via.header("Ostype"),
                direct.header("Ostype"),
                "{method} {path}"
            );
            if method == "GET" {
                assert_eq!(text(&via.body), "OK", "{method} {path}");
            } else {
                assert!(via.body.is_empty(), "HEAD with a body: {via:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// run

#[test]
fn run_prints_output_and_propagates_the_exit_code() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("run"));
    let script = "echo to-stdout; echo to-stderr >&2; exit 3";
    let out = run_timeout(
        gw.docker()
            .args(["run", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "sh", "-c", script]),
        None,
        T,
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );
    // What the engine recorded.
    assert_eq!(
        inspect_direct(&name, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 3"
    );

    // The same command directly behaves the same.
    let name2 = c.container(&unique("run-direct"));
    let direct = run_timeout(
        docker_direct()
            .args(["run", "--name", &name2])
            .args(labels(&name2))
            .args([IMAGE, "sh", "-c", script]),
        None,
        T,
    );
    assert_eq!(direct.status.code(), out.status.code());
    assert_eq!(direct.stdout, out.stdout);

    // Exit code 0 and a non-trivial one on --rm containers too.
    if skip_on_podman(
        "--rm exit codes: Podman 4.3 answers the CLI's wait for a removed container with \
         exit code 0, also without the gateway",
    ) {
        return;
    }
    for code in [0, 42] {
        let n = c.container(&unique("run-rm"));
        let o = run_timeout(
            gw.docker()
                .args(["run", "--rm", "--name", &n])
                .args(labels(&n))
                .args([IMAGE, "sh", "-c", &format!("exit {code}")]),
            None,
            T,
        );
        assert_eq!(o.status.code(), Some(code), "stderr: {}", text(&o.stderr));
    }
}

#[test]
fn run_interactive_pipes_stdin_and_removes_the_container() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("run-i"));
    let out = run_timeout(
        gw.docker()
            .args(["run", "-i", "--rm", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "cat"]),
        Some(b"hello\n"),
        T,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");

    // A larger binary payload goes through byte for byte (stdin tunnel, then half-close).
    let mut payload = vec![0u8; 1 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut payload,
    )
    .expect("random bytes");
    let name2 = c.container(&unique("run-i-big"));
    let out = run_timeout(
        gw.docker()
            .args(["run", "-i", "--rm", "--name", &name2])
            .args(labels(&name2))
            .args([IMAGE, "cat"]),
        Some(&payload),
        T,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), payload.len(), "echoed length");
    assert!(out.stdout == payload, "echoed bytes differ");

    // --rm: the engine removed both containers.
    for n in [&name, &name2] {
        wait_for(&format!("{n} to be removed"), SOON, || {
            let o = run(docker_direct().args(["inspect", n]));
            (!o.status.success()).then_some(())
        });
    }
}

// ---------------------------------------------------------------------------------------
// exec

#[test]
fn exec_interactive_stdin_half_close() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = start_sleeper(&gw, &mut c, "exec-i");
    // cat only exits when stdin's EOF travels client → gateway → engine; a lost half-close
    // hangs here, and the time limit turns the hang into a failure.
    let out = run_timeout(
        gw.docker().args(["exec", "-i", &name, "cat"]),
        Some(b"hi\n"),
        SOON,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    // No cat left behind in the container.
    let ps = ok_timeout(docker_direct().args(["exec", &name, "ps", "-o", "args"]), T);
    assert!(
        !ps.lines().any(|l| l.trim() == "cat"),
        "cat still running: {ps}"
    );
}

#[test]
fn exec_tty_and_exit_code() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = start_sleeper(&gw, &mut c, "exec-t");
    let out = ok_timeout(gw.docker().args(["exec", "-t", &name, "echo", "tty"]), SOON);
    assert_eq!(out, "tty\r\n", "a tty turns \\n into \\r\\n");
    let direct = ok_timeout(
        docker_direct().args(["exec", "-t", &name, "echo", "tty"]),
        SOON,
    );
    assert_eq!(out, direct);

    for code in [0, 7] {
        let cmd = format!("echo out; exit {code}");
        let via = run_timeout(
            gw.docker().args(["exec", &name, "sh", "-c", &cmd]),
            None,
            SOON,
        );
        let direct = run_timeout(
            docker_direct().args(["exec", &name, "sh", "-c", &cmd]),
            None,
            SOON,
        );
        assert_eq!(
            via.status.code(),
            Some(code),
            "stderr: {}",
            text(&via.stderr)
        );
        assert_eq!(via.status.code(), direct.status.code());
        assert_eq!(text(&via.stdout), "out\n");
    }
    // Exit code of a command that does not exist: the engine's error, through the gateway.
    let via = run_timeout(gw.docker().args(["exec", &name, "no-such-cmd"]), None, SOON);
    let direct = run_timeout(
        docker_direct().args(["exec", &name, "no-such-cmd"]),
        None,
        SOON,
    );
    assert_ne!(via.status.code(), Some(0));
    assert_eq!(via.status.code(), direct.status.code());
}

// ---------------------------------------------------------------------------------------
// logs, attach

/// A container printing `line N` every 100 ms.
fn start_ticker(gw: &Gateway, c: &mut Cleanup) -> String {
    let name = c.container(&unique("ticker"));
    ok_timeout(
        gw.docker()
            .args(["run", "-d", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "sh", "-c", TICKER]),
        T,
    );
    name
}

#[test]
fn logs_follow_streams_and_a_killed_client_leaves_the_gateway_serving() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = start_ticker(&gw, &mut c);

    let mut logs = Streaming::spawn(gw.docker().args(["logs", "-f", &name]));
    let first = logs.expect_line(SOON, |l| l.starts_with("line "));
    let n0: u64 = first[5..].parse().expect("line number");
    // Lines keep coming, in order: the stream is live, not a snapshot.
    for k in 1..=5 {
        let l = logs.expect_line(SOON, |l| l.starts_with("line "));
        assert_eq!(l, format!("line {}", n0 + k));
    }
    logs.kill();

    // The gateway still serves, and the container was not disturbed.
    let ps = ok_timeout(
        gw.docker()
            .args(["ps", "--filter", &name_filter(&name)])
            .args(["--format", "{{.Names}}"]),
        T,
    );
    assert_eq!(ps.trim(), name);
    assert_eq!(inspect_direct(&name, "{{.State.Running}}"), "true");

    // A second follower through the same gateway works and sees newer lines.
    let mut again = Streaming::spawn(gw.docker().args(["logs", "-f", "--tail", "1", &name]));
    let l = again.expect_line(SOON, |l| l.starts_with("line "));
    let n: u64 = l[5..].parse().expect("line number");
    assert!(n > n0, "tail shows an old line: {l}");
    again.kill();

    // Non-follow logs equal the engine's (up to a fixed line, since the ticker runs on).
    let via = ok_timeout(gw.docker().args(["logs", "-n", "all", &name]), T);
    let direct = ok_timeout(docker_direct().args(["logs", "-n", "all", &name]), T);
    let shared = via.lines().count().min(direct.lines().count());
    assert!(shared > 5, "too few lines: {via}");
    assert_eq!(
        via.lines().take(shared).collect::<Vec<_>>(),
        direct.lines().take(shared).collect::<Vec<_>>()
    );
}

#[test]
fn attach_receives_output_and_propagates_the_exit_code() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("attach"));
    // Prints `waiting` until told to go, so the test knows when it is attached (no race
    // between attaching and the output it expects).
    ok_timeout(
        gw.docker()
            .args(["run", "-d", "--name", &name])
            .args(labels(&name))
            .args([
                IMAGE,
                "sh",
                "-c",
                "while [ ! -f /tmp/go ]; do echo waiting; sleep 0.1; done; echo done-out; exit 5",
            ]),
        T,
    );
    let mut attach = Streaming::spawn(gw.docker().args(["attach", "--sig-proxy=false", &name]));
    attach.expect_line(SOON, |l| l == "waiting");
    ok_timeout(docker_direct().args(["exec", &name, "touch", "/tmp/go"]), T);
    attach.expect_line(SOON, |l| l == "done-out");
    let (status, rest) = attach.wait(SOON);
    assert_eq!(
        status.code(),
        Some(5),
        "attach exit status; trailing output {rest:?}"
    );
    assert_eq!(
        inspect_direct(&name, "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 5"
    );
}

// ---------------------------------------------------------------------------------------
// cp

#[test]
fn cp_both_ways_with_a_large_random_file() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = start_sleeper(&gw, &mut c, "cp");
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 8 << 20;
    let src = dir.path().join("blob");
    {
        let mut data = vec![0u8; size];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("urandom"),
            &mut data,
        )
        .expect("random");
        std::fs::write(&src, &data).expect("write blob");
    }
    let hash = sha256_file(&src);

    // Up: host → container through the gateway; checked directly on the engine.
    ok_timeout(
        gw.docker()
            .args(["cp", src.to_str().unwrap(), &format!("{name}:/tmp/blob")]),
        T,
    );
    let stat = ok_timeout(
        docker_direct().args(["exec", &name, "stat", "-c", "%s", "/tmp/blob"]),
        T,
    );
    assert_eq!(stat.trim(), size.to_string());
    let inside = ok_timeout(
        docker_direct().args(["exec", &name, "sha256sum", "/tmp/blob"]),
        T,
    );
    assert_eq!(inside.split_whitespace().next(), Some(hash.as_str()));

    // Down: the same file back, byte for byte.
    let back = dir.path().join("back");
    ok_timeout(
        gw.docker()
            .args(["cp", &format!("{name}:/tmp/blob"), back.to_str().unwrap()]),
        T,
    );
    assert_eq!(
        std::fs::metadata(&back).expect("copied back").len(),
        size as u64
    );
    assert_eq!(sha256_file(&back), hash);

    // Down: a file made inside the container (not one the test wrote itself).
    let made = ok_timeout(
        docker_direct().args([
            "exec",
            &name,
            "sh",
            "-c",
            "head -c 3000000 /dev/urandom > /tmp/made && sha256sum /tmp/made",
        ]),
        T,
    );
    let made_hash = made.split_whitespace().next().expect("hash").to_owned();
    let out = dir.path().join("made");
    ok_timeout(
        gw.docker()
            .args(["cp", &format!("{name}:/tmp/made"), out.to_str().unwrap()]),
        T,
    );
    assert_eq!(std::fs::metadata(&out).expect("made").len(), 3_000_000);
    assert_eq!(sha256_file(&out), made_hash);
}

// ---------------------------------------------------------------------------------------
// build

#[test]
fn classic_build_with_context_creates_a_working_image() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let tag = c.image(&format!("{}:latest", unique("build")));
    let ctx = tempfile::tempdir().expect("tempdir");
    let marker = format!("copied {}", unique("content"));
    std::fs::write(ctx.path().join("hello.txt"), format!("{marker}\n")).expect("write");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\n\
             CMD [\"cat\", \"/hello.txt\"]\n"
        ),
    )
    .expect("write");
    let out = run_timeout(
        gw.docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--label", TEST_LABEL, "-t", &tag])
            .arg(ctx.path()),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "build failed\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Successfully tagged"),
        "{}",
        text(&out.stdout)
    );

    // The engine has the image, with our label, and it does what the Dockerfile says.
    assert_eq!(
        inspect_direct(&tag, "{{index .Config.Labels \"portcullis-test\"}}"),
        "1"
    );
    let ran = ok_timeout(docker_direct().args(["run", "--rm", &tag]), T);
    assert_eq!(ran, format!("{marker}\n"));
    let built = ok_timeout(
        docker_direct().args(["run", "--rm", &tag, "cat", "/built.txt"]),
        T,
    );
    assert_eq!(built, "built\n");

    // Removing it through the gateway removes it on the engine.
    ok_timeout(gw.docker().args(["rmi", &tag]), T);
    let gone = run(docker_direct().args(["image", "inspect", &tag]));
    assert!(!gone.status.success(), "image still there after rmi");
}

// ---------------------------------------------------------------------------------------
// events

#[test]
fn events_since_until_replays_create_and_destroy() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("events"));
    let t0 = now_secs() - 1;
    ok_timeout(
        gw.docker()
            .args(["create", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "true"]),
        T,
    );
    ok_timeout(gw.docker().args(["rm", &name]), T);
    let t1 = now_secs() + replay_margin();
    let args = |cmd: &mut Command| {
        cmd.args([
            "events",
            "--since",
            &t0.to_string(),
            "--until",
            &t1.to_string(),
        ])
        .args(["--filter", &format!("container={name}")])
        .args(["--format", "{{.Action}}"]);
    };
    let mut via = gw.docker();
    args(&mut via);
    let mut direct = docker_direct();
    args(&mut direct);
    // Both replays start before `until`: Podman 4.3 replays nothing once it has passed.
    let (via, direct) = std::thread::scope(|s| {
        let via = s.spawn(|| ok_timeout(&mut via, T));
        let direct = ok_timeout(&mut direct, T);
        (via.join().expect("replay through the gateway"), direct)
    });
    let actions: Vec<&str> = via.lines().collect();
    assert!(actions.contains(&"create"), "{actions:?}");
    assert!(actions.contains(&removal_action()), "{actions:?}");
    assert_eq!(via, direct, "events differ through the gateway");
}

#[test]
fn events_stream_delivers_live_events() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("events-live"));
    // --since before the create: no race between the stream starting and the first event.
    let t0 = now_secs() - 1;
    let mut events = Streaming::spawn(
        gw.docker()
            .args(["events", "--since", &t0.to_string()])
            .args(["--filter", &format!("container={name}")])
            .args(["--format", "{{.Action}} {{.Actor.Attributes.name}}"]),
    );
    ok_timeout(
        gw.docker()
            .args(["create", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "true"]),
        T,
    );
    events.expect_line(SOON, |l| l == format!("create {name}"));
    // This one happens after the stream delivered `create`: it can only arrive live.
    ok_timeout(docker_direct().args(["rm", &name]), T);
    events.expect_line(SOON, |l| l == format!("{} {name}", removal_action()));
    assert!(events.is_running(), "events exited on its own");
    events.kill();
    ok_timeout(
        gw.docker()
            .args(["ps", "-q", "--filter", "label=nothing-has-this"]),
        T,
    );
}

// ---------------------------------------------------------------------------------------
// stats, inspect, ps, rm

#[test]
fn stats_no_stream_reports_a_running_container() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = start_sleeper(&gw, &mut c, "stats");
    let id = inspect_direct(&name, "{{.Id}}");
    let out = ok_timeout(
        gw.docker().args([
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.ID}} {{.PIDs}}",
            &name,
        ]),
        T,
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{out:?}");
    // The CLI drops the first character of the name, dockerd's leading `/`, which Podman's
    // stats do not have: the same happens without the gateway.
    let shown = if engine_is_podman() {
        &name[1..]
    } else {
        &name[..]
    };
    assert_eq!(f[0], shown);
    assert!(id.starts_with(f[1]), "{out:?} vs {id}");
    assert_eq!(f[2], "1", "one process (sleep) expected: {out:?}");
}

#[test]
fn inspect_ps_and_rm_match_the_engine() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let run_id = unique("ps");
    let running = c.container(&format!("{run_id}-running"));
    let exited = c.container(&format!("{run_id}-exited"));
    ok_timeout(
        gw.docker()
            .args(["run", "-d", "--name", &running])
            .args(labels(&run_id))
            .args([IMAGE, "sleep", "600"]),
        T,
    );
    ok_timeout(
        gw.docker()
            .args(["run", "--name", &exited])
            .args(labels(&run_id))
            .args([IMAGE, "true"]),
        T,
    );

    for n in [&running, &exited] {
        let via = ok_timeout(gw.docker().args(["inspect", n]), T);
        let direct = ok_timeout(docker_direct().args(["inspect", n]), T);
        let via: serde_json::Value = serde_json::from_str(&via).expect("inspect JSON");
        let direct: serde_json::Value = serde_json::from_str(&direct).expect("inspect JSON");
        assert_eq!(via, direct, "inspect {n} differs through the gateway");
        assert_eq!(via[0]["Name"], format!("/{n}"));
    }

    let ps = |cmd: &mut Command| {
        ok_timeout(
            cmd.args(["ps", "-a", "--no-trunc"])
                .args(["--filter", &format!("label=portcullis-test-run={run_id}")])
                .args([
                    "--format",
                    "{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.State}} \
                     {{.Label \"portcullis-test-run\"}}",
                ]),
            T,
        )
    };
    let via = ps(&mut gw.docker());
    let direct = ps(&mut docker_direct());
    assert_eq!(via, direct, "ps -a differs through the gateway");
    assert_eq!(via.lines().count(), 2, "{via}");
    assert!(
        via.contains(&format!(" {running} ")) && via.contains(" running "),
        "{via}"
    );
    assert!(
        via.contains(&format!(" {exited} ")) && via.contains(" exited "),
        "{via}"
    );

    ok_timeout(gw.docker().args(["rm", "-f", &running, &exited]), T);
    assert_eq!(ps(&mut docker_direct()), "", "containers left after rm");
}

// ---------------------------------------------------------------------------------------
// volumes and networks

#[test]
fn volume_create_use_ls_rm() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let vol = c.volume(&unique("vol"));
    let out = ok_timeout(
        gw.docker()
            .args(["volume", "create"])
            .args(labels(&vol))
            .arg(&vol),
        T,
    );
    assert_eq!(out.trim(), vol);
    assert_eq!(
        ok_timeout(
            docker_direct().args([
                "volume",
                "inspect",
                "--format",
                "{{.Name}} {{index .Labels \"portcullis-test\"}}",
                &vol
            ]),
            T
        )
        .trim(),
        format!("{vol} 1")
    );
    let ls = |cmd: &mut Command| {
        ok_timeout(
            cmd.args(["volume", "ls", "--filter", &format!("name={vol}")])
                .args(["--format", "{{.Name}} {{.Driver}}"]),
            T,
        )
    };
    let via = ls(&mut gw.docker());
    assert_eq!(via, ls(&mut docker_direct()));
    assert_eq!(via.trim(), format!("{vol} local"));

    // Data written through the gateway is on the engine's volume.
    let writer = c.container(&unique("vol-writer"));
    ok_timeout(
        gw.docker()
            .args([
                "run",
                "--rm",
                "--name",
                &writer,
                "-v",
                &format!("{vol}:/data"),
            ])
            .args(labels(&writer))
            .args([IMAGE, "sh", "-c", "echo persisted > /data/f"]),
        T,
    );
    let read = ok_timeout(
        docker_direct()
            .args(["run", "--rm", "-v", &format!("{vol}:/data")])
            .args([IMAGE, "cat", "/data/f"]),
        T,
    );
    assert_eq!(read, "persisted\n");

    wait_for("the writer to be removed", SOON, || {
        (!run(docker_direct().args(["inspect", &writer]))
            .status
            .success())
        .then_some(())
    });
    ok_timeout(gw.docker().args(["volume", "rm", &vol]), T);
    let gone = run(docker_direct().args(["volume", "inspect", &vol]));
    assert!(!gone.status.success(), "volume still on the engine");
}

#[test]
fn network_create_ls_rm() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let net = c.network(&unique("net"));
    let id = ok_timeout(
        gw.docker()
            .args(["network", "create", "--driver", "bridge"])
            .args(labels(&net))
            .arg(&net),
        T,
    );
    let id = id.trim();
    assert_eq!(
        ok_timeout(
            docker_direct().args([
                "network",
                "inspect",
                "--format",
                "{{.Id}} {{.Driver}} {{index .Labels \"portcullis-test\"}}",
                &net
            ]),
            T
        )
        .trim(),
        format!("{id} bridge 1")
    );
    let ls = |cmd: &mut Command| {
        ok_timeout(
            cmd.args([
                "network",
                "ls",
                "--no-trunc",
                "--filter",
                &format!("name={net}"),
            ])
            .args(["--format", "{{.ID}} {{.Name}} {{.Driver}}"]),
            T,
        )
    };
    let via = ls(&mut gw.docker());
    assert_eq!(via, ls(&mut docker_direct()));
    assert_eq!(via.trim(), format!("{id} {net} bridge"));

    ok_timeout(gw.docker().args(["network", "rm", &net]), T);
    let gone = run(docker_direct().args(["network", "inspect", &net]));
    assert!(!gone.status.success(), "network still on the engine");
}

// ---------------------------------------------------------------------------------------
// save / load

#[test]
fn image_save_and_load_round_trip() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    // An image of our own, so removing it really removes its layer and `load` must bring
    // it back. Built, not committed: Podman 4.3 refuses the CLI's commit without a body.
    let marker = unique("marker");
    let tag = c.image(&format!("{}:v1", unique("saved")));
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo {marker} > /marker\n"),
    )
    .expect("write");
    ok_timeout(
        docker_direct()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "--label", TEST_LABEL, "-t", &tag])
            .arg(ctx.path()),
        Duration::from_secs(180),
    );
    let id = inspect_direct(&tag, "{{.Id}}");
    assert!(id.starts_with("sha256:"), "{id}");

    let dir = tempfile::tempdir().expect("tempdir");
    let tar = dir.path().join("image.tar");
    ok_timeout(
        gw.docker()
            .args(["save", &tag, "-o", tar.to_str().unwrap()]),
        T,
    );
    let listing = ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");

    ok_timeout(docker_direct().args(["rmi", &tag]), T);
    assert!(
        !run(docker_direct().args(["image", "inspect", &id]))
            .status
            .success(),
        "image still on the engine after rmi"
    );

    let out = ok_timeout(gw.docker().args(["load", "-i", tar.to_str().unwrap()]), T);
    assert!(
        out.contains(&format!("Loaded image: {}", loaded_name(&tag))),
        "{out}"
    );
    assert_eq!(inspect_direct(&tag, "{{.Id}}"), id);
    let ran = ok_timeout(
        docker_direct().args(["run", "--rm", &tag, "cat", "/marker"]),
        T,
    );
    assert_eq!(ran.trim(), marker);
}

// ---------------------------------------------------------------------------------------
// raw HTTP upgrade (hijack)

#[test]
fn raw_attach_and_exec_upgrade_handshake_and_multiplexed_stream() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("hijack"));
    ok_timeout(
        docker_direct()
            .args(["run", "-d", "-i", "--name", &name])
            .args(labels(&name))
            .args([IMAGE, "sh", "-c", "while read l; do echo got-$l; done"]),
        T,
    );
    let id = inspect_direct(&name, "{{.Id}}");

    // attach: 101 from the engine, relayed with its Upgrade header; then a live tunnel.
    let req = format!(
        "POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    );
    let mut attach = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(attach.head.status, 101, "{:?}", attach.head);
    assert_eq!(
        attach.head.header("Upgrade"),
        Some("tcp"),
        "{:?}",
        attach.head
    );
    attach.stream.write_all(b"abc\n").expect("write stdin");
    assert_eq!(attach.read_frame(), (1, b"got-abc\n".to_vec()));

    // exec: create (plain JSON), then start with an upgrade.
    let created = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            Some(r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["cat"]}"#),
        ),
        SOON,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let exec_id = created.json()["Id"].as_str().expect("exec Id").to_owned();
    let body = r#"{"Detach":false,"Tty":false}"#;
    let req = format!(
        "POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n{body}",
        body.len()
    );
    let mut exec = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(exec.head.status, 101, "{:?}", exec.head);
    assert_eq!(exec.head.header("Upgrade"), Some("tcp"), "{:?}", exec.head);
    exec.stream.write_all(b"ping\n").expect("write stdin");
    assert_eq!(exec.read_frame(), (1, b"ping\n".to_vec()));
    // Half-close: cat sees EOF, exits, and the engine ends the stream.
    exec.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let rest = exec.read_to_eof();
    assert!(rest.is_empty(), "unexpected trailing bytes {rest:?}");
    // The engine agrees the exec finished cleanly.
    let state = finished_exec(&exec_id);
    assert_eq!(state["ExitCode"], 0, "{state}");

    // The attach tunnel is still alive after all that.
    attach.stream.write_all(b"again\n").expect("write stdin");
    assert_eq!(attach.read_frame(), (1, b"got-again\n".to_vec()));
}

// ---------------------------------------------------------------------------------------
// engine down, then back

/// Kills the socat it owns when dropped.
struct Socat(std::process::Child);
impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn engine_down_gives_502_then_the_gateway_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine_path = dir.path().join("engine.sock");
    let mut config = Config::default();
    config.engine.url = Address::Unix(engine_path.clone());
    let gw = Gateway::start_raw(config);

    let r = http(&gw.socket, &request("GET", "/_ping", None), SOON);
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let msg = r.json()["message"]
        .as_str()
        .expect("message is a string")
        .to_owned();
    assert!(msg.to_lowercase().contains("engine"), "{msg}");

    let cli = run_timeout(gw.docker().args(["ps"]), None, T);
    assert!(!cli.status.success());
    let err = text(&cli.stderr);
    assert!(err.contains("Error response from daemon"), "{err}");
    assert!(err.to_lowercase().contains("engine"), "{err}");

    // The engine comes back at that address.
    let socat = Socat(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", engine_path.display()))
            .arg(format!("UNIX-CONNECT:{}", engine_socket().display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    wait_for("socat to listen", SOON, || {
        UnixStream::connect(&engine_path).ok().map(|_| ())
    });
    let r = http(&gw.socket, &request("GET", "/_ping", None), SOON);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(text(&r.body), "OK");
    let version = ok_timeout(
        gw.docker()
            .args(["version", "--format", "{{.Server.Version}}"]),
        T,
    );
    assert_eq!(
        version,
        ok_timeout(
            docker_direct().args(["version", "--format", "{{.Server.Version}}"]),
            T
        )
    );
    drop(socat);
}

// ---------------------------------------------------------------------------------------
// bad input

#[test]
fn malformed_request_line_gets_4xx_and_the_gateway_still_serves() {
    let gw = Gateway::start();
    let r = http(&gw.socket, b"GARBAGE\r\n\r\n", SOON);
    assert!((400..500).contains(&r.status), "{r:?}");
    still_serves(&gw.socket);
}

/// Sends a request whose head is `size` bytes of one header, in one write as clients do.
fn big_head(socket: &Path, size: usize) -> HttpResponse {
    let big = "a".repeat(size);
    let req = format!("GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Big: {big}\r\n\r\n");
    http(socket, req.as_bytes(), SOON)
}

#[test]
fn headers_of_100_kb_get_431_and_the_gateway_still_serves() {
    let gw = Gateway::start();
    let r = big_head(&gw.socket, 100 * 1024);
    assert!(
        r.status == 431 || r.status == 400,
        "100 KB of headers were not refused (limit 64 KB): {r:?}"
    );
    still_serves(&gw.socket);
}

#[test]
fn huge_or_too_many_headers_get_431_and_the_gateway_still_serves() {
    let gw = Gateway::start();
    let r = big_head(&gw.socket, 1024 * 1024);
    assert!(r.status == 431 || r.status == 400, "{r:?}");
    still_serves(&gw.socket);

    // Too many headers, each small (limit: 100).
    let mut req = String::from("GET /_ping HTTP/1.1\r\nHost: docker\r\n");
    for i in 0..300 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = http(&gw.socket, req.as_bytes(), SOON);
    assert!(r.status == 431 || r.status == 400, "{r:?}");
    still_serves(&gw.socket);
}

#[test]
fn unknown_endpoint_is_denied_with_a_docker_error() {
    let gw = Gateway::start();
    for path in ["/v1.41/nope", "/nope", "/v1.41/containers/json/extra/x"] {
        let r = http(&gw.socket, &request("GET", path, None), SOON);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{path}");
        let msg = r.json()["message"].as_str().map(str::to_owned);
        assert!(matches!(&msg, Some(m) if !m.is_empty()), "{path}: {r:?}");
    }
    still_serves(&gw.socket);
}

/// Podman's own API (libpod) is refused before anything reaches the engine, whatever the
/// version prefix and even with unknown endpoints passed through, with a message that says
/// what to use instead; each refusal is in the audit trail as a denial.
#[test]
fn podman_libpod_paths_are_refused_and_never_reach_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = audit_config(dir.path(), "[api]\npass_unknown_endpoints = true\n");
    let gw = Gateway::start_with(config);
    let mut c = Cleanup::new();
    let name = c.container(&unique("libpod"));
    // A libpod container creation (Podman's SpecGenerator body).
    let body = format!(
        r#"{{"name": "{name}", "image": "{IMAGE}", "command": ["true"], "labels": {{"portcullis-test": "1"}}}}"#
    );
    let paths = [
        "/v4.3.1/libpod/containers/create",
        "/libpod/containers/create",
        "/v1.41/libpod/containers/create",
        "/v4.3.1-dev/libpod/containers/create",
    ];
    for path in paths {
        let r = http(&gw.socket, &request("POST", path, Some(&body)), SOON);
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{path}");
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        for part in [
            path,
            "Podman's own API (libpod)",
            "serves only the Docker Engine API",
            "Docker-compatible API",
            "`podman --remote`",
        ] {
            assert!(
                message.contains(part),
                "{path}: {part:?} not in {message:?}"
            );
        }
    }
    // The engine saw none of them: nothing was created.
    assert!(!exists(&name), "a libpod request reached the engine");
    still_serves(&gw.socket);
    drop(gw);

    let records = audit_requests(dir.path());
    for path in paths {
        let record = records
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no record of {path}: {records:?}"));
        assert_eq!(
            (record.decision, record.status, record.endpoint.as_str()),
            (portcullis::audit::Decision::Deny, 403, "unknown"),
            "{record:?}"
        );
        assert!(
            record
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("libpod"),
            "{record:?}"
        );
        assert_eq!(record.engine_us, None, "{record:?}");
    }

    // What the gateway kept from Podman: the same request sent to it directly creates the
    // container.
    if engine_is_podman() {
        let r = http(&engine_socket(), &request("POST", paths[0], Some(&body)), T);
        assert_eq!(r.status, 201, "{r:?}");
        assert!(exists(&name));
    }
}

#[test]
fn upgrade_on_a_non_attach_endpoint_is_refused() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let name = c.container(&unique("no-upgrade"));
    let req = format!(
        "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: docker\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    );
    let r = http(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(r.status, 400, "{r:?}");
    let msg = r.json()["message"].as_str().map(str::to_owned);
    assert!(matches!(&msg, Some(m) if !m.is_empty()), "{r:?}");
    // Refused means not forwarded: the engine never created it.
    let o = run(docker_direct().args(["inspect", &name]));
    assert!(
        !o.status.success(),
        "the refused request reached the engine"
    );

    let r = http(
        &gw.socket,
        b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n\
          Upgrade: tcp\r\n\r\n",
        SOON,
    );
    assert_eq!(r.status, 400, "{r:?}");
    still_serves(&gw.socket);
}
