//! The audit trail's remaining reach (issue #4), through a real gateway: requests the
//! identity layer refuses (401) leave a record too, and the admin listener serves the
//! trail's queries over HTTP while the gateway holds the store.

use std::path::Path;
use std::time::Duration;

use portcullis::audit::{AuditError, Decision, Record};
use portcullis::Config;
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// A request with extra header lines.
fn with_headers(method: &str, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[test]
fn requests_refused_by_identity_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(audit_config(dir.path(), ""));
    // No tokens file: a bearer token cannot name anyone.
    let r = http(
        &gw.socket,
        &with_headers(
            "GET",
            "/v1.41/containers/json",
            &["Authorization: Bearer pc-secret-token-1"],
        ),
        T,
    );
    assert_eq!(r.status, 401);
    // Two Authorization headers: ambiguous, refused.
    let r = http(
        &gw.socket,
        &with_headers(
            "POST",
            "/v1.41/containers/pc-audit-x/start",
            &[
                "Authorization: Bearer pc-secret-token-2",
                "Authorization: Bearer pc-secret-token-3",
            ],
        ),
        T,
    );
    assert_eq!(r.status, 401);
    // And an identified request, for contrast.
    assert_eq!(
        http(&gw.socket, &request("GET", "/_ping", None), T).status,
        200
    );
    drop(gw);

    let all = audit_requests(dir.path());
    assert_eq!(all.len(), 3, "{all:#?}");
    let refused: Vec<&Record> = all.iter().filter(|r| r.status == 401).collect();
    assert_eq!(refused.len(), 2);
    for r in &refused {
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.user(), "unknown");
        assert_eq!(r.caller["auth"], "none");
        assert_eq!(r.caller["peer"]["kind"], "unix");
        assert!(r.error.as_deref().unwrap_or("").contains("portcullis:"));
    }
    assert_eq!(refused[0].endpoint, "container.list");
    assert!(
        refused[0].caller["refused"]
            .as_str()
            .unwrap()
            .contains("bearer tokens are not accepted"),
        "{:?}",
        refused[0].caller
    );
    assert_eq!(refused[1].endpoint, "container.start");
    assert_eq!(refused[1].object.as_deref(), Some("pc-audit-x"));
    assert_eq!(refused[1].caller["refused"], "invalid bearer token");
    // The credential itself is in no record.
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("pc-secret-token"), "{text}");
    // The identified request is someone else.
    let ping = all.iter().find(|r| r.status == 200).unwrap();
    assert_ne!(ping.user(), "unknown");
}

#[test]
fn the_admin_listener_serves_the_trail_while_the_gateway_runs() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.sock");
    let gw = Gateway::start_with(audit_config(
        dir.path(),
        &format!("[admin]\nlisten = \"unix://{}\"\n", admin.display()),
    ));
    for _ in 0..3 {
        assert_eq!(
            http(
                &gw.socket,
                &request("GET", "/v1.41/containers/json", None),
                T
            )
            .status,
            200
        );
    }
    assert_eq!(
        http(&gw.socket, &request("GET", "/v1.41/nothing/here", None), T).status,
        403
    );
    let get = |path: &str| http(&admin, &request("GET", path, None), T);

    // While the gateway runs, the store is locked to everyone else.
    assert!(matches!(
        portcullis::audit::report::open(&dir.path().join("store")),
        Err(AuditError::Locked { .. })
    ));

    let r = get("/audit?endpoint=container.*&limit=2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let list: Vec<Record> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|r| r.endpoint == "container.list"));
    assert!(list[0].seq > list[1].seq, "newest first");
    let user = list[0].user().to_owned();

    let r = get("/audit?decision=deny");
    let denied: Vec<Record> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].status, 403);
    let r = get(&format!("/audit?user={user}&decision=allow"));
    assert_eq!(
        serde_json::from_slice::<Vec<Record>>(&r.body)
            .unwrap()
            .len(),
        3
    );
    let r = get("/audit?user=nobody-here");
    assert_eq!(
        serde_json::from_slice::<Vec<Record>>(&r.body)
            .unwrap()
            .len(),
        0
    );

    let r = get(&format!("/audit/{}", denied[0].seq));
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<Record>(&r.body).unwrap(),
        denied[0]
    );
    assert_eq!(get("/audit/999999").status, 404);

    let r = get("/audit/verify");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
    assert_eq!(r.json()["verified"]["records"], 4);

    let r = get("/audit/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["by_decision"]["allow"], 3);
    assert_eq!(r.json()["by_endpoint"]["container.list"], 3);

    // Bad queries are refused, saying why.
    let r = get("/audit?decision=maybe");
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("unknown decision"));
    let r = get("/audit?usr=alice");
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("unknown parameter"));
    assert_eq!(get("/audit?limit=0").status, 400);

    // The admin socket is private and goes away with the gateway.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(gw);
    assert!(!admin.exists());
    assert_eq!(audit_requests(dir.path()).len(), 4);
}

#[test]
fn admin_needs_a_private_address() {
    // Without [audit] it serves metrics, health and reload (tests/operate.rs).
    Config::parse(
        "[admin]\nlisten = \"unix:///tmp/pc-admin.sock\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    let err = Config::parse(
        "[audit]\npath = \"a\"\n[admin]\nlisten = \"tcp://0.0.0.0:9999\"\n",
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("admin.listen") && err.contains("loopback"),
        "{err}"
    );
    let err = Config::parse(
        "[audit]\npath = \"a\"\n[admin]\nlisten = \"unix:///x\"\nport = 1\n",
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("port"), "{err}");
}
