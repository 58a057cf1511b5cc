//! The adversarial suite (issue #8): attempts to get a privileged container, a host bind
//! mount, a host namespace, an unconfined profile or a privileged exec past the `baseline`
//! policy, in every spelling and framing the engine accepts. Each attempt is judged by the
//! engine's state afterwards — did the forbidden thing come to exist? — not by the status
//! code the gateway answered.

use std::path::Path;
use std::time::Duration;

use portcullis::Config;
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// A gateway with `baseline`, host binds allowed only under `allowed`.
fn guarded(allowed: &Path) -> Gateway {
    let text = format!(
        "[[plugins]]\nname = \"baseline\"\npath = \"{}\"\n[plugins.config]\nallowed_bind_paths = [\"{}\"]\n",
        plugin_component("baseline").display(),
        allowed.display()
    );
    Gateway::start_with(Config::parse(&text, Path::new("adversarial.toml")).expect("config"))
}

/// What the engine says about a container, if it exists: the forbidden settings it has.
fn forbidden_settings(name: &str, allowed: &Path) -> Vec<String> {
    let out = run(docker_direct().args(["container", "inspect", name]));
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    let h = &v[0]["HostConfig"];
    let mut bad = Vec::new();
    if h["Privileged"] == true {
        bad.push("Privileged".to_owned());
    }
    // (Not CgroupnsMode: `host` is this engine's own default, whatever the client asks.)
    for mode in ["PidMode", "IpcMode", "UTSMode", "UsernsMode"] {
        if h[mode] == "host" {
            bad.push(format!("{mode}=host"));
        }
    }
    if h["NetworkMode"] == "host" {
        bad.push("NetworkMode=host".to_owned());
    }
    for cap in h["CapAdd"].as_array().into_iter().flatten() {
        let cap = cap.as_str().unwrap_or("").to_uppercase();
        if cap.contains("SYS_ADMIN") || cap == "ALL" {
            bad.push(format!("CapAdd {cap}"));
        }
    }
    for opt in h["SecurityOpt"].as_array().into_iter().flatten() {
        if opt.as_str().unwrap_or("").contains("unconfined") {
            bad.push(format!("SecurityOpt {opt}"));
        }
    }
    if h["Devices"].as_array().is_some_and(|d| !d.is_empty()) {
        bad.push("Devices".to_owned());
    }
    // Every host path the engine will bind, as the engine reports it.
    for m in v[0]["Mounts"].as_array().into_iter().flatten() {
        if m["Type"] == "bind" {
            let src = m["Source"].as_str().unwrap_or("");
            if !Path::new(src).starts_with(allowed) {
                bad.push(format!("bind of {src}"));
            }
        }
    }
    bad
}

fn raw_create(
    gw: &Gateway,
    version: &str,
    name: &str,
    content_type: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {version}/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_http(&gw.socket, req.as_bytes(), Duration::from_secs(5))
}

#[test]
fn no_create_attempt_brings_a_forbidden_container_into_being() {
    let allowed_dir = tempfile::tempdir().unwrap();
    let allowed = allowed_dir.path().canonicalize().unwrap();
    std::fs::create_dir(allowed.join("data")).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("innocent")).unwrap();
    std::os::unix::fs::symlink("/", allowed.join("root")).unwrap();
    let gw = guarded(&allowed);
    let mut clean = Cleanup::new();
    let a = allowed.display();
    let img = IMAGE;

    // (what, JSON body) sent as a plain create; spelled every way Go's decoder accepts.
    let bodies: Vec<(&str, String)> = vec![
        ("canonical", format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":true}}}}"#)),
        ("lowercase", format!(r#"{{"image":"{img}","hostconfig":{{"privileged":true}}}}"#)),
        ("uppercase", format!(r#"{{"IMAGE":"{img}","HOSTCONFIG":{{"PRIVILEGED":true}}}}"#)),
        ("mixed case", format!(r#"{{"Image":"{img}","hostConfig":{{"pRiViLeGeD":true}}}}"#)),
        ("escaped key", format!(r#"{{"Image":"{img}","\u0048ostConfig":{{"\u0050rivileged":true}}}}"#)),
        ("merged objects", format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":true}},"HostConfig":{{"Memory":0}}}}"#)),
        ("merged across case", format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":true}},"hostconfig":{{}}}}"#)),
        ("later false", format!(r#"{{"Image":"{img}","HostConfig":{{"privileged":true,"Privileged":false}}}}"#)),
        ("exact duplicate", format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":true,"Privileged":false}}}}"#)),
        ("big body", format!(r#"{{"Image":"{img}","Env":["PAD={}"],"HostConfig":{{"Privileged":true}}}}"#, "x".repeat(1_200_000))),
        ("host pid", format!(r#"{{"Image":"{img}","hostconfig":{{"pidmode":"host"}}}}"#)),
        ("host network", format!(r#"{{"Image":"{img}","HostConfig":{{"NETWORKMODE":"host"}}}}"#)),
        ("host ipc", format!(r#"{{"Image":"{img}","HostConfig":{{"IpcMode":"host"}}}}"#)),
        ("host userns", format!(r#"{{"Image":"{img}","HostConfig":{{"UsernsMode":"host"}}}}"#)),
        ("cap all", format!(r#"{{"Image":"{img}","HostConfig":{{"capadd":["ALL"]}}}}"#)),
        ("cap sys_admin", format!(r#"{{"Image":"{img}","HostConfig":{{"CapAdd":["CAP_SYS_ADMIN"]}}}}"#)),
        ("seccomp long s", format!("{{\"Image\":\"{img}\",\"HostConfig\":{{\"\u{17F}ecurityOpt\":[\"seccomp=unconfined\"]}}}}")),
        ("apparmor", format!(r#"{{"Image":"{img}","HostConfig":{{"SecurityOpt":["apparmor:unconfined"]}}}}"#)),
        ("device", format!(r#"{{"Image":"{img}","HostConfig":{{"Devices":[{{"PathOnHost":"/dev/null","PathInContainer":"/dev/x","CgroupPermissions":"rwm"}}]}}}}"#)),
        ("bind root", format!(r#"{{"Image":"{img}","HostConfig":{{"Binds":["/:/host"]}}}}"#)),
        ("bind etc lowercase", format!(r#"{{"Image":"{img}","hostconfig":{{"binds":["/etc:/x:ro"]}}}}"#)),
        ("bind via dotdot", format!(r#"{{"Image":"{img}","HostConfig":{{"Binds":["{a}/data/../../../etc:/x"]}}}}"#)),
        ("bind via symlink", format!(r#"{{"Image":"{img}","HostConfig":{{"Binds":["{a}/innocent:/x"]}}}}"#)),
        ("bind via symlink tail", format!(r#"{{"Image":"{img}","HostConfig":{{"Binds":["{a}/root/etc:/x"]}}}}"#)),
        ("bind double slash", format!(r#"{{"Image":"{img}","HostConfig":{{"Binds":["//etc//:/x"]}}}}"#)),
        ("mount bind", format!(r#"{{"Image":"{img}","HostConfig":{{"Mounts":[{{"Type":"bind","Source":"/etc","Target":"/x"}}]}}}}"#)),
        ("mount bind lowercase", format!(r#"{{"Image":"{img}","HostConfig":{{"mounts":[{{"type":"bind","source":"/etc","target":"/x"}}]}}}}"#)),
        ("mount bind via symlink", format!(r#"{{"Image":"{img}","HostConfig":{{"Mounts":[{{"Type":"bind","Source":"{a}/innocent","Target":"/x"}}]}}}}"#)),
    ];
    let mut attempts = 0;
    for (what, body) in &bodies {
        for (version, ct) in [
            ("/v1.41", Some("application/json")),
            ("", None),
            ("/v1.41", Some("application/json; charset=utf-8")),
        ] {
            let name = clean.container(&unique("adv"));
            let _ = raw_create(&gw, version, &name, ct, body);
            attempts += 1;
            let bad = forbidden_settings(&name, &allowed);
            assert!(
                bad.is_empty(),
                "{what} ({version:?}, {ct:?}) created {name} with {bad:?}"
            );
        }
    }

    // Path spellings of the same endpoint.
    let body = &bodies[0].1;
    for path in [
        "/v1.41//containers/create",
        "/v1.41/containers/./create",
        "/v1.41/containers/create/",
        "/v1.41/containers/%63reate",
        "/v1.41/x/../containers/create",
    ] {
        let name = clean.container(&unique("adv-path"));
        let req = format!(
            "POST {path}?name={name} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = raw_http(&gw.socket, req.as_bytes(), Duration::from_secs(5));
        attempts += 1;
        let bad = forbidden_settings(&name, &allowed);
        assert!(bad.is_empty(), "{path} created {name} with {bad:?}");
    }

    // Framings: chunked, chunked with a Content-Length, a form body.
    let name = clean.container(&unique("adv-chunked"));
    let req = format!(
        "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let _ = raw_http(&gw.socket, req.as_bytes(), Duration::from_secs(5));
    let name2 = clean.container(&unique("adv-clte"));
    let req2 = format!(
        "POST /v1.41/containers/create?name={name2} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let _ = raw_http(&gw.socket, req2.as_bytes(), Duration::from_secs(5));
    attempts += 2;
    for n in [&name, &name2] {
        let bad = forbidden_settings(n, &allowed);
        assert!(bad.is_empty(), "chunked framing created {n} with {bad:?}");
    }

    // The docker CLI's own forms.
    for args in [
        vec!["--privileged"],
        vec!["--pid", "host"],
        vec!["--network", "host"],
        vec!["--cap-add", "SYS_ADMIN"],
        vec!["--security-opt", "seccomp=unconfined"],
        vec!["--device", "/dev/null:/dev/x"],
        vec!["-v", "/:/host"],
        vec!["--mount", "type=bind,source=/etc,target=/x"],
    ] {
        let name = clean.container(&unique("adv-cli"));
        let out = run_timeout(
            gw.docker()
                .args(["create", "--name", &name, "--label", TEST_LABEL])
                .args(&args)
                .args([IMAGE, "true"]),
            None,
            T,
        );
        attempts += 1;
        assert!(!out.status.success(), "{args:?} passed the gateway");
        let bad = forbidden_settings(&name, &allowed);
        assert!(bad.is_empty(), "{args:?} created {name} with {bad:?}");
    }

    // The legitimate forms pass: the suite is not just a gateway that refuses everything.
    let name = clean.container(&unique("adv-ok"));
    let out = run_timeout(
        gw.docker().args([
            "create",
            "--name",
            &name,
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{a}/data:/data"),
            IMAGE,
            "true",
        ]),
        None,
        T,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = forbidden_settings(&name, &allowed);
    assert!(bad.is_empty(), "the legitimate container has {bad:?}");
    assert!(attempts >= 90, "only {attempts} attempts");
}

#[test]
fn host_paths_cannot_arrive_through_volumes_or_legacy_start() {
    let allowed_dir = tempfile::tempdir().unwrap();
    let allowed = allowed_dir.path().canonicalize().unwrap();
    let gw = guarded(&allowed);
    let mut clean = Cleanup::new();

    // A local volume bound to /etc, to be mounted later by name.
    let vol = clean.volume(&unique("adv-vol"));
    let out = run_timeout(
        gw.docker().args([
            "volume",
            "create",
            "--driver",
            "local",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            "device=/etc",
            &vol,
        ]),
        None,
        T,
    );
    assert!(!out.status.success(), "a bind volume of /etc was created");
    let exists = run(docker_direct().args(["volume", "inspect", &vol]))
        .status
        .success();
    assert!(!exists, "the volume exists on the engine");

    // API < 1.24 let `start` carry a HostConfig: refused by version, so the container
    // created plainly stays unprivileged.
    let name = clean.container(&unique("adv-start"));
    let out = run_timeout(
        gw.docker().args([
            "create", "--name", &name, "--label", TEST_LABEL, IMAGE, "sleep", "30",
        ]),
        None,
        T,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.23/containers/{name}/start"),
            Some(r#"{"Privileged":true,"Binds":["/:/host"]}"#),
        ),
        T,
    );
    assert_eq!(r.status, 400);
    let bad = forbidden_settings(&name, &allowed);
    assert!(bad.is_empty(), "{name} has {bad:?}");
}

#[test]
fn privileged_exec_is_refused_in_every_spelling() {
    let allowed_dir = tempfile::tempdir().unwrap();
    let allowed = allowed_dir.path().canonicalize().unwrap();
    let gw = guarded(&allowed);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("adv-exec"));
    ok(gw.docker().args([
        "run", "-d", "--name", &name, "--label", TEST_LABEL, IMAGE, "sleep", "60",
    ]));

    let out = run_timeout(
        gw.docker().args(["exec", "--privileged", &name, "true"]),
        None,
        T,
    );
    assert!(!out.status.success(), "docker exec --privileged passed");
    for body in [
        r#"{"Cmd":["true"],"Privileged":true}"#,
        r#"{"cmd":["true"],"privileged":true}"#,
        r#"{"Cmd":["true"],"PRIVILEGED":true}"#,
        r#"{"Cmd":["true"],"Privileged":true,"Privileged":false}"#,
        r#"{"Cmd":["true"],"privileged":true,"Privileged":false}"#,
    ] {
        let _ = http(
            &gw.socket,
            &request(
                "POST",
                &format!("/v1.41/containers/{name}/exec"),
                Some(body),
            ),
            T,
        );
    }
    // No exec instance came to exist on the container.
    let ids = ok(docker_direct().args(["inspect", "--format", "{{json .ExecIDs}}", &name]));
    // dockerd says `null` for none, Podman `[]`.
    assert!(
        ids.trim() == "null" || ids.trim() == "[]",
        "exec instances were created: {ids}"
    );
    // An ordinary exec works.
    let out = ok(gw.docker().args(["exec", &name, "echo", "hi"]));
    assert_eq!(out.trim(), "hi");
}
