//! Hardening (issue #8): what the engine acts on is what the policy saw. Each attempt is
//! judged by the engine's state afterwards — did the container come to exist, with which
//! settings — not only by the status code the gateway returned.

use std::time::Duration;

use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// A gateway whose only policy denies privileged containers by reading the canonical field
/// `HostConfig.Privileged`, as a real policy does.
fn no_privileged() -> Gateway {
    gateway(&[entry(
        "no-privileged",
        "endpoints = [\"container.create\"]",
        "action = \"deny-if\"\npointer = \"/HostConfig/Privileged\"\nequals = true",
    )])
}

fn create_raw(gw: &Gateway, name: &str, body: &str) -> HttpResponse {
    http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/containers/create?name={name}"),
            Some(body),
        ),
        T,
    )
}

fn inspect(name: &str, format: &str) -> String {
    ok(docker_direct().args(["inspect", "--format", format, name]))
        .trim()
        .to_owned()
}

#[test]
fn field_name_spellings_go_accepts_are_judged_as_the_engine_reads_them() {
    let gw = no_privileged();
    let mut clean = Cleanup::new();
    let image = IMAGE;
    let attempts = [
        format!(r#"{{"Image":"{image}","hostconfig":{{"privileged":true}}}}"#),
        format!(r#"{{"Image":"{image}","HOSTCONFIG":{{"PRIVILEGED":true}}}}"#),
        format!(r#"{{"image":"{image}","HostConfig":{{"Privileged":true}}}}"#),
        format!(r#"{{"Image":"{image}","\u0048ostConfig":{{"Pri\u0076ileged":true}}}}"#),
        format!(r#"{{"Image":"{image}","hostConfig":{{"privIleged":true,"Memory":0}}}}"#),
    ];
    for body in &attempts {
        let name = clean.container(&unique("case"));
        let r = create_raw(&gw, &name, body);
        assert_eq!(
            r.status,
            403,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("no-privileged"),
            "{body}: {:?}",
            r.json()
        );
        assert!(!exists(&name), "{body} created a container");
    }
    // The legitimate spelling passes, and the engine has exactly what the policy saw.
    let name = clean.container(&unique("case-ok"));
    let r = create_raw(
        &gw,
        &name,
        &format!(
            r#"{{"image":"{image}","hostconfig":{{"privileged":false,"memory":33554432}},"labels":{{"{}":"1"}}}}"#,
            TEST_LABEL.split('=').next().unwrap()
        ),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        inspect(&name, "{{.HostConfig.Privileged}} {{.HostConfig.Memory}}"),
        "false 33554432"
    );
}

#[test]
fn repeated_keys_that_go_would_merge_are_refused() {
    let gw = no_privileged();
    let mut clean = Cleanup::new();
    let image = IMAGE;
    // Go decodes the second HostConfig into the struct the first one filled: a parser that
    // keeps the last key would show the policy `{}` while the engine applies Privileged.
    let attempts = [
        format!(r#"{{"Image":"{image}","HostConfig":{{"Privileged":true}},"HostConfig":{{}}}}"#),
        format!(r#"{{"Image":"{image}","HostConfig":{{"Privileged":true}},"hostconfig":{{}}}}"#),
        format!(r#"{{"Image":"{image}","HostConfig":{{"Privileged":true,"privileged":false}}}}"#),
    ];
    for body in &attempts {
        let name = clean.container(&unique("dup"));
        let r = create_raw(&gw, &name, body);
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = r.json()["message"].as_str().unwrap_or("").to_owned();
        assert!(msg.contains("twice"), "{body}: {msg}");
        assert!(!exists(&name), "{body} created a container");
    }
}

#[test]
fn symlinked_bind_sources_reach_the_engine_resolved() {
    let gw = no_privileged();
    let mut clean = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let name = clean.container(&unique("bind"));
    let out = run_timeout(
        gw.docker().args([
            "create",
            "--name",
            &name,
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{}:/mnt:ro", link.display()),
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
    // The engine binds the directory the policy was shown, not the link.
    assert_eq!(
        inspect(&name, "{{index .HostConfig.Binds 0}}"),
        "/etc:/mnt:ro"
    );
}

#[test]
fn api_versions_outside_the_range_are_refused() {
    let gw = Gateway::start();
    let old = http(&gw.socket, &request("GET", "/v1.23/version", None), T);
    assert_eq!(old.status, 400);
    let msg = old.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(msg.contains("1.23") && msg.contains("1.24"), "{msg}");
    let fine = http(&gw.socket, &request("GET", "/v1.41/version", None), T);
    assert_eq!(fine.status, 200);
    assert_eq!(fine.json()["ApiVersion"], "1.41");
    // The CLI's negotiation still works.
    let out = ok(gw
        .docker()
        .args(["version", "--format", "{{.Server.APIVersion}}"]));
    assert_eq!(out.trim(), "1.41");
}

#[test]
fn buildkit_tunnels_and_form_bodies_are_refused() {
    let gw = Gateway::start();
    // BuildKit is mediated by default: a session must say which one it is, so that the
    // gateway can record whose it is before the engine opens it (`[api] buildkit = "deny"`
    // refuses the tunnels outright: tests/buildkit.rs).
    let r = http(&gw.socket, &request("POST", "/session", None), T);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("BuildKit session needs its X-Docker-Expose-Session-Uuid"));

    // A form body on build: Go's ParseForm would let `networkmode=host` in the body win
    // over the query the policy saw.
    let tag = unique("form").to_lowercase();
    let body = "networkmode=host&remote=";
    let req = format!(
        "POST /v1.41/build?t={tag} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = http(&gw.socket, req.as_bytes(), T);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("form-encoded"));
    let images = ok(docker_direct().args(["images", "-q", &tag]));
    assert!(images.trim().is_empty(), "an image was built");
}

#[test]
fn content_length_with_chunked_is_judged_on_the_body_that_is_forwarded() {
    // hyper resolves this RFC 9112 §6.3 conflict itself before the gateway sees the headers
    // (it drops Content-Length, reads the chunked body and closes the connection after the
    // answer), so it cannot be refused with 400. What matters holds: the body the policy
    // judged is the one forwarded, re-framed, and nothing is left on the connection.
    let gw = no_privileged();
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("frame"));
    let body = format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"Privileged":true}}}}"#);
    let req = format!(
        "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        body.len()
    );
    let raw = raw_http(&gw.socket, req.as_bytes(), Duration::from_secs(3));
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "the connection was reused: {text}"
    );
    assert!(!exists(&name), "a container was created");
}

#[test]
fn transfer_codings_other_than_chunked_and_broken_chunks_are_refused() {
    let gw = no_privileged();
    let mut clean = Cleanup::new();
    for (te, chunk) in [("gzip, chunked", "2"), ("chunked", "zz")] {
        let name = clean.container(&unique("frame"));
        let req = format!(
            "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: {te}\r\n\r\n{chunk}\r\n{{}}\r\n0\r\n\r\n"
        );
        let raw = raw_http(&gw.socket, req.as_bytes(), Duration::from_secs(3));
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 400"), "{te}/{chunk}: {text}");
        assert!(!exists(&name), "a container was created");
    }
}
