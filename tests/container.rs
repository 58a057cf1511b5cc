//! The container image (`just image`, `scripts/build-image`) run by `deploy/compose.yaml`
//! against the dev engine, whose socket is mounted where the host's `/var/run/docker.sock`
//! would be, the gateway's sockets published in a temporary directory. A plain unix user
//! drives the docker CLI through the published socket: the baseline policy refuses a
//! privileged container, an ordinary one runs and is owned by that user on the engine, and
//! the admin socket serves both requests' records with the user's name — which the gateway,
//! running as a uid of its own, learns from the host's user database mounted into it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::audit::{Decision, Record};
use portcullis_tests::{
    as_user, docker_direct, engine_address, engine_socket, exists, http, ok, ok_timeout,
    portcullis_bin, request, run_timeout, text, unique, workspace, Cleanup, Users, IMAGE,
};

/// The uid and gid the image runs as (scripts/build-image).
const UID: u32 = 10001;
const T: Duration = Duration::from_secs(30);

/// `docker-compose -f deploy/compose.yaml` for one project, with the variables the file
/// reads; `down -v` (containers and volumes) when dropped.
struct Compose {
    project: String,
    env: Vec<(&'static str, String)>,
}

impl Compose {
    fn command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(workspace().join("deploy/compose.yaml"))
            .env("DOCKER_HOST", engine_address().to_string())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn logs(&self) -> String {
        text(&run_timeout(self.command().arg("logs"), None, T))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = run_timeout(
            self.command().args(["down", "--volumes", "--timeout", "5"]),
            None,
            Duration::from_secs(60),
        );
    }
}

#[test]
fn the_image_serves_the_default_policy_in_front_of_the_engine() {
    let mut cleanup = Cleanup::new();

    // Build the image from the binary the tests use.
    let tag = cleanup.image(&format!("{}:test", unique("image")));
    let started = Instant::now();
    let built = ok_timeout(
        Command::new(workspace().join("scripts/build-image"))
            .arg("--bin")
            .arg(portcullis_bin())
            .arg("--tag")
            .arg(&tag)
            .env("DOCKER_HOST", engine_address().to_string())
            .stdin(Stdio::null()),
        Duration::from_secs(300),
    );
    assert_eq!(built.trim(), tag);
    let inspect = |format: &str| {
        ok(docker_direct().args(["image", "inspect", "--format", format, &tag]))
            .trim()
            .to_owned()
    };
    assert_eq!(inspect("{{.Config.User}}"), format!("{UID}:{UID}"));
    eprintln!(
        "image {tag}: {} MiB, built in {:.1?}",
        inspect("{{.Size}}").parse::<u64>().unwrap() >> 20,
        started.elapsed()
    );

    // The published socket directory, writable by the image's user only; 0755 so that every
    // local user reaches the sockets in it (docs/operating.md, "Container image").
    let published = tempfile::tempdir().unwrap();
    let dir = published.path();
    std::os::unix::fs::chown(dir, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let engine = engine_socket();
    let compose = Compose {
        project: unique("compose").replace('-', ""),
        env: vec![
            ("PORTCULLIS_IMAGE", tag.clone()),
            ("DOCKER_SOCKET", engine.display().to_string()),
            ("PORTCULLIS_SOCKET_DIR", dir.display().to_string()),
            (
                "DOCKER_GID",
                std::fs::metadata(&engine).unwrap().gid().to_string(),
            ),
        ],
    };
    ok_timeout(
        compose.command().args(["up", "--detach"]),
        Duration::from_secs(120),
    );

    let socket = dir.join("portcullis.sock");
    let admin = dir.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(answers(&socket) && admin.exists()) {
        assert!(
            Instant::now() < deadline,
            "the gateway did not answer on {} within 60 s:\n{}",
            socket.display(),
            compose.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let host = format!("unix://{}", socket.display());
    let user = "pc-container-user";
    let _users = Users::create(&[user]);

    // A denial: nothing reaches the engine.
    let refused = cleanup.container(&unique("privileged"));
    let out = run_timeout(
        as_user(user, &host, "docker").args([
            "run",
            "--rm",
            "--privileged",
            "--name",
            &refused,
            IMAGE,
            "true",
        ]),
        None,
        T,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "Error response from daemon: baseline: [privileged] HostConfig.Privileged is true"
        ),
        "{}",
        text(&out)
    );
    assert!(!exists(&refused));

    // An allowed run, owned on the engine by the user who asked.
    let allowed = cleanup.container(&unique("allowed"));
    let out = ok_timeout(
        as_user(user, &host, "docker").args(["run", "--name", &allowed, IMAGE, "echo", "hi"]),
        T,
    );
    assert_eq!(out, "hi\n");
    let state = ok(docker_direct().args([
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{index .Config.Labels \"io.portcullis.owner\"}}",
        &allowed,
    ]));
    assert_eq!(state.trim(), format!("exited 0 {user}"));
    ok_timeout(as_user(user, &host, "docker").args(["rm", &allowed]), T);
    assert!(!exists(&allowed));

    // The audit trail, through the admin socket: both requests, with the user's name.
    let records = portcullis_tests::wait_for("the two records", T, || {
        let r = http(&admin, &request("GET", "/audit?limit=1000", None), T);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let records: Vec<Record> = serde_json::from_slice(&r.body).expect("records");
        let create = |name: &str, decision: Decision| {
            records
                .iter()
                .find(|r| {
                    r.endpoint == "container.create"
                        && r.object.as_deref() == Some(name)
                        && r.decision == decision
                })
                .cloned()
        };
        Some((
            create(&refused, Decision::Deny)?,
            create(&allowed, Decision::Allow)?,
        ))
    });
    let uid = ok(Command::new("id").args(["-u", user])).trim().to_owned();
    for r in [&records.0, &records.1] {
        assert_eq!(r.user(), user, "{r:?}");
        // Named from the uid the kernel reported for the connection.
        assert_eq!(r.caller["peer"]["kind"], "unix", "{r:?}");
        assert_eq!(r.caller["peer"]["uid"].to_string(), uid, "{r:?}");
    }
    assert_eq!(records.0.status, 403);
    assert_eq!(records.1.status, 201);
}

/// Whether the gateway answers `/_ping` on `socket`.
fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
        && http(socket, &request("GET", "/_ping", None), T).status == 200
}
