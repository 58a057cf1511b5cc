//! Connection handling against the real engine: the legacy hijack (attach and exec start
//! without `Upgrade`), Docker-style answers to malformed HTTP, idle timeouts, per-caller
//! concurrency and the unknown-endpoint pass-through switch.

use std::io::Write;
use std::time::Duration;

use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(20);

/// Starts `sh -c script` with stdin open in a new container (directly on the engine) and
/// returns its id.
fn start_interactive(c: &mut Cleanup, prefix: &str, script: &str) -> String {
    let name = c.container(&unique(prefix));
    ok_timeout(
        docker_direct()
            .args(["run", "-d", "-i", "--name", &name, "--label", TEST_LABEL])
            .args([IMAGE, "sh", "-c", script]),
        T,
    );
    ok_timeout(docker_direct().args(["inspect", "-f", "{{.Id}}", &name]), T)
        .trim()
        .to_owned()
}

/// The head of a legacy hijack: `200 OK`, the raw-stream media type and no framing.
fn assert_legacy_head(head: &HttpResponse) {
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("Content-Type"),
        Some("application/vnd.docker.raw-stream"),
        "{head:?}"
    );
    assert_eq!(head.header("Content-Length"), None, "{head:?}");
    assert_eq!(head.header("Transfer-Encoding"), None, "{head:?}");
}

// ---------------------------------------------------------------------------------------
// legacy hijack

#[test]
fn legacy_exec_start_without_upgrade_streams_stdin_and_output() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let id = start_interactive(&mut c, "legacy-exec", "sleep 600");
    let created = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            Some(
                r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["sh","-c","cat; exit 7"]}"#,
            ),
        ),
        SOON,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let exec_id = created.json()["Id"].as_str().expect("exec Id").to_owned();

    let body = r#"{"Detach":false,"Tty":false}"#;
    let req = format!(
        "POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut exec = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_legacy_head(&exec.head);
    exec.stream.write_all(b"hi\n").expect("write stdin");
    assert_eq!(exec.read_frame(), (1, b"hi\n".to_vec()));
    // Half-close: cat sees EOF, the shell exits 7, the engine ends the stream.
    exec.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let rest = exec.read_to_eof();
    assert!(rest.is_empty(), "unexpected trailing bytes {rest:?}");
    let state = finished_exec(&exec_id);
    assert_eq!(state["ExitCode"], 7, "{state}");
    still_serves(&gw.socket);
}

#[test]
fn legacy_attach_without_upgrade_after_a_kept_alive_request() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let id = start_interactive(
        &mut c,
        "legacy-attach",
        "while read l; do echo got-$l; done",
    );
    // A first request on the same connection, answered and kept alive: the hijack must
    // start cleanly after it. (`/_ping` because the engine frames it with a length; an
    // inspect answer of more than 2 KiB comes chunked.)
    let req = format!(
        "GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\n\r\n\
         POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\n\r\n"
    );
    let mut attach = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(attach.head.status, 200, "{:?}", attach.head);
    let len: usize = attach
        .head
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("the ping answer has a length");
    assert_eq!(attach.read_exact(len), b"OK");
    // Now the second answer: the engine-style hijack head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(attach.read_exact(1));
    }
    let head = HttpResponse::parse(&head).expect("second head");
    assert_legacy_head(&head);
    attach.stream.write_all(b"abc\n").expect("write stdin");
    assert_eq!(attach.read_frame(), (1, b"got-abc\n".to_vec()));
    attach.stream.write_all(b"again\n").expect("write stdin");
    assert_eq!(attach.read_frame(), (1, b"got-again\n".to_vec()));
    // The container really read it: its logs say so.
    let logs = ok_timeout(docker_direct().args(["logs", &id]), T);
    assert!(logs.contains("got-again"), "{logs}");
}

#[test]
fn legacy_exec_start_detached_is_a_plain_answer() {
    let gw = Gateway::start();
    let mut c = Cleanup::new();
    let id = start_interactive(&mut c, "legacy-detach", "sleep 600");
    let created = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            Some(r#"{"Cmd":["touch","/detached-ran"]}"#),
        ),
        SOON,
    );
    let exec_id = created.json()["Id"].as_str().expect("exec Id").to_owned();
    let r = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/exec/{exec_id}/start"),
            Some(r#"{"Detach":true}"#),
        ),
        SOON,
    );
    assert_eq!(r.status, 200, "{r:?}");
    wait_for("the detached exec to run", SOON, || {
        run(docker_direct().args(["exec", &id, "test", "-e", "/detached-ran"]))
            .status
            .success()
            .then_some(())
    });
    still_serves(&gw.socket);
}

// ---------------------------------------------------------------------------------------
// bad input: Docker-style answers from the gateway itself

fn message_of(r: &HttpResponse) -> String {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{r:?}");
    r.json()["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {r:?}"))
        .to_owned()
}

#[test]
fn malformed_http_gets_400_with_a_docker_message() {
    let gw = Gateway::start();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nBad Header Name: x\r\n\r\n",
        b"GET /_ping HTTP/9.9\r\nHost: docker\r\n\r\n",
    ] {
        let r = http(&gw.socket, raw, SOON);
        assert_eq!(r.status, 400, "{:?}: {r:?}", String::from_utf8_lossy(raw));
        let msg = message_of(&r);
        assert!(msg.contains("malformed HTTP request"), "{msg}");
        still_serves(&gw.socket);
    }
}

#[test]
fn oversized_or_too_many_headers_get_431_with_the_limit() {
    let gw = Gateway::start();
    let big = "a".repeat(200 * 1024);
    let req = format!("GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Big: {big}\r\n\r\n");
    let r = http(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(r.status, 431, "{r:?}");
    let msg = message_of(&r);
    assert!(
        msg.contains("request headers too large (limit 65536 bytes"),
        "{msg}"
    );
    still_serves(&gw.socket);

    let mut req = String::from("GET /_ping HTTP/1.1\r\nHost: docker\r\n");
    for i in 0..300 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = http(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(r.status, 431, "{r:?}");
    assert!(message_of(&r).contains("100 headers"), "{r:?}");
    still_serves(&gw.socket);
}

#[test]
fn a_good_request_then_garbage_on_one_connection_gets_both_answers() {
    let gw = Gateway::start();
    let raw = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\nGARBAGE\r\n\r\n";
    let out = raw_http(&gw.socket, raw, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let second = text
        .find("HTTP/1.1 400")
        .unwrap_or_else(|| panic!("no 400 in {text}"));
    assert!(text[second..].contains("malformed HTTP request"), "{text}");
    still_serves(&gw.socket);
}

// ---------------------------------------------------------------------------------------
// [api] pass_unknown_endpoints

#[test]
fn unknown_endpoints_are_refused_unless_passed_through() {
    let path = "/v1.41/portcullis-not-an-endpoint/x";
    let gw = Gateway::start();
    let r = http(&gw.socket, &request("GET", path, None), SOON);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(message_of(&r).contains("unknown endpoint"), "{r:?}");
    drop(gw);

    let mut config = portcullis::Config::default();
    config.api.pass_unknown_endpoints = true;
    let gw = Gateway::start_with(config);
    let r = http(&gw.socket, &request("GET", path, None), SOON);
    // The engine's own answer: it was forwarded.
    let direct = http(&engine_socket(), &request("GET", path, None), SOON);
    assert_eq!(r.status, direct.status, "{r:?} vs {direct:?}");
    assert_eq!(r.json(), direct.json());
    assert!(!message_of(&r).contains("portcullis"), "{r:?}");
    // Known endpoints are untouched by the switch.
    still_serves(&gw.socket);
}

// ---------------------------------------------------------------------------------------
// [limits] stream_idle_timeout

/// A gateway that ends streams quiet for 2 s.
fn idle_limited_gateway() -> Gateway {
    let mut config = portcullis::Config::default();
    config.limits.stream_idle_timeout = Some(Duration::from_secs(2));
    Gateway::start_with(config)
}

#[test]
fn a_quiet_tunnel_is_closed_after_the_stream_idle_timeout() {
    let gw = idle_limited_gateway();
    let mut c = Cleanup::new();
    let id = start_interactive(&mut c, "idle-tunnel", "while read l; do echo got-$l; done");
    let req = format!(
        "POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    );
    let mut attach = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(attach.head.status, 101, "{:?}", attach.head);
    // Traffic keeps it open ...
    attach.stream.write_all(b"one\n").expect("write stdin");
    assert_eq!(attach.read_frame(), (1, b"got-one\n".to_vec()));
    // ... silence closes it (read_to_eof fails the test if no EOF comes within 20 s).
    let rest = attach.read_to_eof();
    assert!(rest.is_empty(), "{rest:?}");
    // Only the tunnel went away: the container still runs.
    let state = ok_timeout(
        docker_direct().args(["inspect", "-f", "{{.State.Running}}", &id]),
        T,
    );
    assert_eq!(state.trim(), "true");
    still_serves(&gw.socket);
}

#[test]
fn a_quiet_response_stream_is_closed_after_the_stream_idle_timeout_and_a_busy_one_is_not() {
    let gw = idle_limited_gateway();
    let mut c = Cleanup::new();
    let name = c.container(&unique("idle-logs"));
    ok_timeout(
        docker_direct()
            .args(["run", "-d", "--name", &name, "--label", TEST_LABEL])
            .args([IMAGE, "sh", "-c", TICKER]),
        T,
    );
    // A container printing every 100 ms: its `logs -f` outlives the idle limit several times.
    let mut logs = Streaming::spawn(gw.docker().args(["logs", "-f", &name]));
    let mut last = String::new();
    for _ in 0..60 {
        last = logs.expect_line(SOON, |l| l.starts_with("line "));
    }
    assert!(
        logs.is_running(),
        "a busy stream was closed (last line {last:?})"
    );
    logs.kill();
    // Nothing happens on an event stream filtered to a label nobody uses: it is quiet, so
    // the gateway ends it (read_to_eof fails the test if no EOF comes within 20 s).
    // {"label":["portcullis-test-never-used=1"]}
    let filters = "%7B%22label%22%3A%5B%22portcullis-test-never-used%3D1%22%5D%7D";
    let req = format!("GET /v1.41/events?filters={filters} HTTP/1.1\r\nHost: docker\r\n\r\n");
    let mut events = Upgraded::open(&gw.socket, req.as_bytes(), SOON);
    assert_eq!(events.head.status, 200, "{:?}", events.head);
    let rest = events.read_to_eof();
    // Ended by the gateway, not finished: no terminating chunk, so the client sees an error
    // rather than a stream that seemed to end normally.
    assert!(
        !String::from_utf8_lossy(&rest).contains("0\r\n\r\n"),
        "{rest:?}"
    );
    still_serves(&gw.socket);
}

// ---------------------------------------------------------------------------------------
// [limits] max_requests_per_caller

#[test]
fn a_caller_with_too_many_requests_in_flight_gets_429_until_one_finishes() {
    let mut config = portcullis::Config::default();
    config.limits.max_requests_per_caller = 2;
    let gw = Gateway::start_with(config);
    let mut c = Cleanup::new();
    let events = || {
        let s = Upgraded::open(
            &gw.socket,
            b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n",
            SOON,
        );
        assert_eq!(s.head.status, 200, "{:?}", s.head);
        s
    };
    let first = events();
    let _second = events();
    // Both streams are in flight: a third request is refused before anything reaches the engine.
    let name = c.container(&unique("per-caller"));
    let body = format!(r#"{{"Image": "{IMAGE}", "Labels": {{"portcullis-test": "1"}}}}"#);
    let create = request(
        "POST",
        &format!("/v1.41/containers/create?name={name}"),
        Some(&body),
    );
    let r = http(&gw.socket, &create, SOON);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(message_of(&r).contains("max_requests_per_caller"), "{r:?}");
    assert!(!exists(&name), "a refused create reached the engine");
    // A finished stream gives its slot back.
    drop(first);
    wait_for("the slot of the closed stream", SOON, || {
        let r = http(&gw.socket, &create, SOON);
        (r.status == 201).then_some(())
    });
    assert!(exists(&name));
}
