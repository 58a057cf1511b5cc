//! The audit trail against the real engine (issue #4): every request that reaches the
//! gateway — allowed, denied by a plugin, refused early, failed — leaves a record in the
//! store, with what the engine was asked to do; credentials never do; and the store is
//! opened by one gateway at a time.

use std::time::Duration;

use portcullis::audit::{Decision, Record};
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

fn one<'a>(records: &'a [Record], what: &str, pred: impl Fn(&Record) -> bool) -> &'a Record {
    let found: Vec<&Record> = records.iter().filter(|r| pred(r)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one record of {what}, found {found:#?}"
    );
    found[0]
}

#[test]
fn allowed_denied_and_failed_requests_are_all_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = audit_config(
        dir.path(),
        &entry(
            "labels",
            "endpoints = [\"container.create\"]",
            "action = \"deny-if-label\"\nkey = \"forbidden\"",
        ),
    );
    cfg.limits.max_body_bytes = 4096;
    let gw = Gateway::start_with(cfg);
    let mut c = Cleanup::new();
    let allowed = c.container(&unique("audit-allowed"));
    let denied = c.container(&unique("audit-denied"));

    // Allowed, through the docker CLI.
    ok_timeout(
        gw.docker()
            .args([
                "create",
                "--name",
                &allowed,
                "--label",
                TEST_LABEL,
                "--privileged",
                "-v",
                "/tmp:/host",
            ])
            .args(["-e", "PLAIN=1", IMAGE, "sleep", "5"]),
        T,
    );
    assert!(exists(&allowed));
    // Denied by the plugin: nothing is created.
    let out = run_timeout(
        gw.docker().args([
            "create",
            "--name",
            &denied,
            "--label",
            TEST_LABEL,
            "--label",
            "forbidden=1",
            IMAGE,
            "true",
        ]),
        None,
        T,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the label forbidden is not allowed"));
    assert!(!exists(&denied));
    // Refused early: an unknown endpoint, and a body over the limit.
    let r = http(&gw.socket, &request("GET", "/v1.41/nothing/here", None), T);
    assert_eq!(r.status, 403);
    let big = format!(
        "{{\"Image\": \"{IMAGE}\", \"Labels\": {{\"pad\": \"{}\"}}}}",
        "x".repeat(8000)
    );
    let r = http(
        &gw.socket,
        &request(
            "POST",
            "/v1.41/containers/create?name=pc-audit-big",
            Some(&big),
        ),
        T,
    );
    assert_eq!(r.status, 413);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the unread body ends the connection, and the client is told: {r:?}"
    );
    // The engine's own error is an allowed request with the engine's status.
    let r = http(
        &gw.socket,
        &request("GET", &format!("/v1.41/containers/{denied}/json"), None),
        T,
    );
    assert_eq!(r.status, 404);
    drop(gw);

    let records = audit_requests(dir.path());
    let create = one(&records, "the allowed create", |r| {
        r.object.as_deref() == Some(allowed.as_str()) && r.endpoint == "container.create"
    });
    assert_eq!(create.decision, Decision::Allow);
    assert_eq!(create.status, 201);
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/containers/create");
    // The caller as the user database names this process's uid.
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    assert_eq!(
        create.user(),
        String::from_utf8_lossy(&me.stdout).trim(),
        "{create:?}"
    );
    assert_eq!(create.caller["auth"], "peer-credentials");
    assert!(
        create.bytes_in.unwrap_or(0) > 0 && create.bytes_out.unwrap_or(0) > 0,
        "{create:?}"
    );
    // The engine's share of the time is known for what was forwarded, and part of the whole.
    let engine = create
        .engine_us
        .expect("engine time of a forwarded request");
    assert!(engine > 0 && engine <= create.duration_us, "{create:?}");
    let d = create.details.as_ref().expect("create details");
    assert_eq!(d["Image"], IMAGE);
    assert_eq!(d["Cmd"], serde_json::json!(["sleep", "5"]));
    assert_eq!(d["HostConfig"]["Privileged"], true);
    assert_eq!(d["HostConfig"]["Binds"], serde_json::json!(["/tmp:/host"]));
    assert_eq!(d["Labels"]["portcullis-test"], "1");
    assert_eq!(create.plugins[0].plugin, "labels");
    assert_eq!(create.plugins[0].verdict, "allow");

    let deny = one(&records, "the denied create", |r| {
        r.object.as_deref() == Some(denied.as_str()) && r.endpoint == "container.create"
    });
    assert_eq!(deny.decision, Decision::Deny);
    assert_eq!(deny.status, 403);
    assert_eq!(deny.plugins[0].verdict, "deny");
    assert_eq!(
        deny.plugins[0].message.as_deref(),
        Some("the label forbidden is not allowed")
    );
    assert!(deny
        .error
        .as_deref()
        .unwrap_or("")
        .contains("labels: the label forbidden is not allowed"));
    assert_eq!(deny.details.as_ref().unwrap()["Labels"]["forbidden"], "1");
    assert_eq!(
        deny.engine_us, None,
        "a denied request never reaches the engine"
    );

    let unknown = one(&records, "the unknown endpoint", |r| {
        r.path == "/v1.41/nothing/here"
    });
    assert_eq!(
        (unknown.decision, unknown.status, unknown.endpoint.as_str()),
        (Decision::Deny, 403, "unknown")
    );
    let big = one(&records, "the oversized body", |r| r.status == 413);
    assert_eq!(
        (big.decision, big.endpoint.as_str(), big.object.as_deref()),
        (Decision::Error, "container.create", Some("pc-audit-big"))
    );
    let inspect = one(&records, "the inspect", |r| {
        r.endpoint == "container.inspect"
    });
    assert_eq!((inspect.decision, inspect.status), (Decision::Allow, 404));
    // Sequences and times follow each other along the chain (a request the engine acts
    // on has two records there).
    let chain = audit_chain(dir.path());
    assert!(
        chain.len() > records.len(),
        "the allowed create has a decision record too"
    );
    for w in chain.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert!(w[1].time >= w[0].time);
    }
}

#[test]
fn requests_refused_by_the_listener_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(audit_config(dir.path(), ""));
    let garbage = raw_http(&gw.socket, b"GARBAGE\r\n\r\n", T);
    assert!(
        garbage.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&garbage)
    );
    let huge = format!(
        "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(256 << 10)
    );
    let huge = raw_http(&gw.socket, huge.as_bytes(), T);
    assert!(
        huge.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&huge)
    );
    // Refused before its body was read: the client is told the connection ends.
    let r = http(
        &gw.socket,
        &request("POST", "/v1.41/nothing/here", Some("{\"a\": 1}")),
        T,
    );
    assert_eq!((r.status, r.header("connection")), (403, Some("close")));
    drop(gw);

    let records = audit_requests(dir.path());
    let bad = one(&records, "the malformed request", |r| r.status == 400);
    assert_eq!(
        (bad.decision, bad.endpoint.as_str()),
        (Decision::Error, "unknown")
    );
    assert!(
        bad.error
            .as_deref()
            .unwrap_or("")
            .contains("malformed HTTP request"),
        "{bad:?}"
    );
    let me = ok(std::process::Command::new("id").arg("-un"));
    assert_eq!(
        bad.user(),
        me.trim(),
        "the connection's peer names the caller"
    );
    let big = one(&records, "the head too large", |r| r.status == 431);
    assert!(
        big.error.as_deref().unwrap_or("").contains("too large"),
        "{big:?}"
    );
}

#[test]
fn credentials_never_reach_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(audit_config(
        dir.path(),
        // A plugin that sees (and could echo) every request, in audit mode.
        &entry(
            "watch",
            "mode = \"audit\"",
            "action = \"deny\"\nmessage = \"would refuse\"",
        ),
    ));
    let secret = format!("pc-secret-{}", std::process::id());
    for path in ["/v1.41/containers/json", "/v1.41/images/json"] {
        let req = format!(
            // (No `Authorization`: the identity layer takes it as a bearer token and refuses
            // an unknown one with 401 before the pipeline; see tests/identity.rs.)
            "GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\
             X-Registry-Auth: {secret}-b\r\nX-Registry-Config: {secret}-c\r\nProxy-Authorization: {secret}-d\r\n\r\n"
        );
        assert_eq!(http(&gw.socket, req.as_bytes(), T).status, 200);
    }
    drop(gw);
    let records = audit_requests(dir.path());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].plugins[0].verdict, "would-deny");
    let store = portcullis::audit::report::open(&dir.path().join("store")).unwrap();
    let mut all = Vec::new();
    portcullis::audit::report::export(&store, &mut all).unwrap();
    let all = String::from_utf8(all).unwrap();
    assert!(
        all.contains("containers.list") || all.contains("container.list"),
        "{all}"
    );
    assert!(
        !all.contains(&secret),
        "a credential reached the audit trail: {all}"
    );
}

#[test]
fn the_store_is_opened_by_one_gateway_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(audit_config(dir.path(), ""));
    assert_eq!(
        http(&gw.socket, &request("GET", "/_ping", None), T).status,
        200
    );

    // The CLI, and a second gateway, are refused with a clear message.
    let err = portcullis::audit::report::open(&dir.path().join("store"))
        .err()
        .expect("locked");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    let second = audit_config(dir.path(), "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(portcullis::run(Vec::new(), second, async {}))
        .expect_err("a second gateway on the same store must not start");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );

    // The first gateway still serves and records.
    assert_eq!(
        http(&gw.socket, &request("GET", "/_ping", None), T).status,
        200
    );
    drop(gw);
    assert_eq!(audit_requests(dir.path()).len(), 2);
}

#[test]
fn patches_are_recorded_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(audit_config(
        dir.path(),
        &entry(
            "team",
            "phase = \"mutate\"\nendpoints = [\"container.create\"]",
            "action = \"patch-label\"\nkey = \"team\"\nvalue = \"blue\"",
        ),
    ));
    let mut c = Cleanup::new();
    let name = c.container(&unique("audit-patch"));
    ok_timeout(
        gw.docker().args([
            "create", "--name", &name, "--label", TEST_LABEL, IMAGE, "true",
        ]),
        T,
    );
    let labels =
        ok(docker_direct().args(["inspect", "-f", "{{index .Config.Labels \"team\"}}", &name]));
    assert_eq!(labels.trim(), "blue");
    drop(gw);
    let records = audit_requests(dir.path());
    let create = one(&records, "the create", |r| r.endpoint == "container.create");
    assert_eq!(create.plugins[0].verdict, "patch");
    let patch = create.plugins[0].patch.as_ref().expect("the patch");
    assert!(patch.to_string().contains("blue"), "{patch}");
    // The details are what the engine acted on: after the patch.
    assert_eq!(create.details.as_ref().unwrap()["Labels"]["team"], "blue");
}

#[test]
fn the_redact_plugin_keeps_secrets_out_of_the_record_but_not_from_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = format!(
        "[[plugins]]\nname = \"redact\"\npath = \"{}\"\nendpoints = [\"container.create\", \"container.exec\"]\n{}",
        plugin_component("redact").display(),
        entry("labels", "endpoints = [\"container.create\"]", "action = \"deny-if-label\"\nkey = \"forbidden\"")
    );
    let gw = Gateway::start_with(audit_config(dir.path(), &plugin));
    let mut c = Cleanup::new();
    let name = c.container(&unique("audit-redact"));
    let secret = format!("hunter{}", std::process::id());
    ok_timeout(
        gw.docker()
            .args(["create", "--name", &name, "--label", TEST_LABEL])
            .args([
                "-e",
                &format!("DB_PASSWORD={secret}"),
                "-e",
                "PLAIN=visible",
                IMAGE,
                "true",
            ]),
        T,
    );
    // A refused request's record is redacted too.
    let refused = c.container(&unique("audit-redact-denied"));
    let out = run_timeout(
        gw.docker()
            .args(["create", "--name", &refused, "--label", "forbidden=1"])
            .args(["-e", &format!("API_TOKEN={secret}"), IMAGE, "true"]),
        None,
        T,
    );
    assert!(!out.status.success());
    // The engine got the real value: redaction shapes the record, never the request.
    let env = ok(docker_direct().args(["inspect", "-f", "{{json .Config.Env}}", &name]));
    assert!(env.contains(&format!("DB_PASSWORD={secret}")), "{env}");
    drop(gw);

    let records = audit_requests(dir.path());
    let create = one(&records, "the create", |r| {
        r.endpoint == "container.create" && r.decision == Decision::Allow
    });
    let denied = one(&records, "the refused create", |r| {
        r.object.as_deref() == Some(refused.as_str())
    });
    assert_eq!(
        denied.details.as_ref().unwrap()["Env"][0],
        "API_TOKEN=<redacted>"
    );
    let mut env: Vec<&str> = create.details.as_ref().unwrap()["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    env.sort();
    assert_eq!(env, ["DB_PASSWORD=<redacted>", "PLAIN=visible"]);
    let note = create
        .plugins
        .iter()
        .find(|n| n.hook == "audit")
        .expect("the audit hook ran");
    assert_eq!(
        (note.plugin.as_str(), note.verdict.as_str()),
        ("redact", "patch")
    );
    let store = portcullis::audit::report::open(&dir.path().join("store")).unwrap();
    let mut all = Vec::new();
    portcullis::audit::report::export(&store, &mut all).unwrap();
    assert!(
        !String::from_utf8_lossy(&all).contains(&secret),
        "the secret reached the audit trail"
    );
}
