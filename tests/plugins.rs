//! The plugin pipeline against the real engine (issue #3): plugins that allow, deny, patch a
//! create body, filter a list response, crash, spin and hog memory — judged by the engine's
//! state afterwards, with the gateway serving other requests correctly all along.
//!
//! Every plugin here is the test kit component (`tests/plugins/testkit`, built by
//! `just plugins`), its behaviour chosen by its `config` table.

use std::time::Duration;

use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

fn create(gw: &Gateway, name: &str, labels: &[&str]) -> std::process::Output {
    let mut cmd = gw.docker();
    cmd.args(["create", "--name", name, "--label", TEST_LABEL]);
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd.args([IMAGE, "true"]);
    run_timeout(&mut cmd, None, T)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn allowed_requests_reach_the_engine() {
    let gw = gateway(&[entry("allow", "", "action = \"allow\"")]);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("allow"));
    let out = create(&gw, &name, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exists(&name));
}

#[test]
fn denial_reaches_the_cli_and_nothing_is_created() {
    let gw = gateway(&[entry(
        "no-create",
        "endpoints = [\"container.create\"]",
        "action = \"deny\"\nmessage = \"creating containers is switched off\"",
    )]);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("deny"));
    let out = create(&gw, &name, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Error response from daemon: no-create: creating containers is switched off"),
        "{err}"
    );
    assert!(!exists(&name), "a denied create reached the engine");
    // Endpoints the plugin is not configured for pass.
    ok(gw.docker().args(["ps", "-a"]));
}

#[test]
fn mutating_plugin_patches_the_body_the_engine_acts_on() {
    let gw = gateway(&[entry(
        "stamp",
        "phase = \"mutate\"\nendpoints = [\"container.create\"]",
        "action = \"patch-label\"\nkey = \"com.example.stamped\"\nvalue = \"yes\"",
    )]);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("patch"));
    let out = create(&gw, &name, &["com.example.stamped=client-value"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let label = ok(docker_direct().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.example.stamped\"}}",
        &name,
    ]));
    assert_eq!(
        label.trim(),
        "yes",
        "the engine did not get the patched body"
    );
}

#[test]
fn response_plugin_filters_the_container_list() {
    let gw = gateway(&[entry(
        "hide",
        "endpoints = [\"container.list\"]",
        "action = \"filter-list\"\nname_prefix = \"pc-hidden\"",
    )]);
    let mut clean = Cleanup::new();
    let hidden = clean.container(&format!("pc-hidden-{}", unique("x")));
    let shown = clean.container(&unique("shown"));
    for n in [&hidden, &shown] {
        ok(docker_direct().args(["create", "--name", n, "--label", TEST_LABEL, IMAGE, "true"]));
    }
    let names = |cmd: &mut std::process::Command| {
        ok(cmd.args([
            "ps",
            "-a",
            "--filter",
            &format!("label={TEST_LABEL}"),
            "--format",
            "{{.Names}}",
        ]))
    };
    let via_gateway = names(&mut gw.docker());
    let direct = names(&mut docker_direct());
    assert!(direct.contains(&hidden) && direct.contains(&shown));
    assert!(via_gateway.contains(&shown), "{via_gateway}");
    assert!(
        !via_gateway.contains(&hidden),
        "filtered entry still listed: {via_gateway}"
    );
}

/// `response_endpoints` narrows where a response hook runs: a response hook that denies
/// refuses the container list it is configured for, and every other endpoint's response
/// passes without reaching it, while its request hook still runs everywhere.
#[test]
fn response_endpoints_narrow_the_response_hook() {
    let gw = gateway(&[entry(
        "resp-deny",
        "response_endpoints = [\"container.list\"]",
        "action = \"deny\"\nhook = \"response\"\nmessage = \"no lists\"",
    )]);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("resp-narrow"));
    let out = run(gw.docker().args(["ps", "-a"]));
    assert!(!out.status.success(), "the list passed its response hook");
    assert!(
        stderr(&out).contains("resp-deny: no lists"),
        "{}",
        stderr(&out)
    );
    // A create's response (JSON, from another endpoint) is not handed to the hook.
    let out = create(&gw, &name, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exists(&name));
    let images = run(gw.docker().args(["images"]));
    assert!(images.status.success(), "{}", stderr(&images));
}

/// A crash, a spin, a memory hog and nonsense each deny with a message naming the plugin and
/// the failure, and the gateway keeps serving.
#[test]
fn failing_plugins_fail_closed_and_the_gateway_keeps_serving() {
    let cases = [
        ("crash", "", "action = \"trap\"", "crashed"),
        (
            "spin",
            "timeout = \"50ms\"",
            "action = \"spin\"",
            "timed out after 50ms",
        ),
        (
            "hog",
            "memory_limit = \"16MiB\"",
            "action = \"hog\"\nmb = 64",
            "exceeded its memory limit of 16.0 MiB",
        ),
        (
            "nonsense",
            "phase = \"mutate\"",
            "action = \"bad-verdict\"",
            "malformed verdict",
        ),
        // A reused instance that crashed is dropped, not handed to the next call.
        (
            "crash-reused",
            "reuse = { instances = 1 }",
            "action = \"trap\"",
            "crashed",
        ),
    ];
    for (name, extra, config, expect) in cases {
        let extra = format!("{extra}\nendpoints = [\"container.create\"]");
        let gw = gateway(&[entry(name, &extra, config)]);
        let mut clean = Cleanup::new();
        let c = clean.container(&unique(name));
        let out = create(&gw, &c, &[]);
        assert!(
            !out.status.success(),
            "{name}: request passed a failing plugin"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{name}: plugin")) && err.contains(expect),
            "{name}: {err}"
        );
        assert!(!exists(&c), "{name}: created despite the failure");
        still_serves(&gw.socket);
        ok(gw.docker().args(["ps"]));
        // The same plugin fails the same way on the next call: no state leaked.
        let again = create(&gw, &c, &[]);
        assert!(
            stderr(&again).contains(expect),
            "{name} second call: {}",
            stderr(&again)
        );
    }
}

#[test]
fn a_spinning_plugin_does_not_block_other_requests() {
    let gw = gateway(&[entry(
        "spin",
        "timeout = \"3s\"\nendpoints = [\"container.create\"]",
        "action = \"spin\"",
    )]);
    let name = unique("spin");
    let sock = gw.socket.clone();
    let body = format!("{{\"Image\":\"{IMAGE}\"}}");
    let req = format!(
        "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let slow = std::thread::spawn(move || raw_http(&sock, req.as_bytes(), Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(300));
    // While the plugin spins, pings still complete: the spinning call yields to the
    // gateway's other tasks at every epoch tick.
    for _ in 0..20 {
        still_serves(&gw.socket);
    }
    assert!(!slow.is_finished(), "the spinning plugin returned early");
    let resp = String::from_utf8_lossy(&slow.join().expect("thread")).into_owned();
    assert!(resp.contains("timed out after 3s"), "{resp}");
    assert!(!exists(&name));
}

#[test]
fn fail_open_and_audit_mode_let_requests_through() {
    let gw = gateway(&[
        entry("crash-open", "fail_open = true", "action = \"trap\""),
        entry(
            "would-deny",
            "mode = \"audit\"",
            "action = \"deny\"\nmessage = \"no\"",
        ),
    ]);
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("open"));
    let out = create(&gw, &name, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exists(&name));
}

/// 200 creates in parallel through mutate → validate → validate; half carry a label the
/// second plugin forbids. Every verdict must be right, judged by the engine's state.
#[test]
fn two_hundred_parallel_requests_through_a_three_plugin_chain() {
    let gw = gateway(&[
        entry(
            "stamp",
            "phase = \"mutate\"\nendpoints = [\"container.create\"]",
            "action = \"patch-label\"\nkey = \"com.example.chain\"\nvalue = \"stamped\"",
        ),
        entry(
            "forbid",
            "endpoints = [\"container.create\"]",
            "action = \"deny-if-label\"\nkey = \"com.example.forbidden\"",
        ),
        entry("allow", "", "action = \"allow\""),
    ]);
    let mut clean = Cleanup::new();
    let prefix = unique("chain");
    let names: Vec<String> = (0..200)
        .map(|i| clean.container(&format!("{prefix}-{i}")))
        .collect();
    let threads: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let sock = gw.socket.clone();
            let forbidden = i % 2 == 1;
            let labels = if forbidden {
                format!(r#"{{"{}":"1","com.example.forbidden":"x"}}"#, "portcullis-test")
            } else {
                r#"{"portcullis-test":"1"}"#.to_string()
            };
            let body = format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"Labels":{labels}}}"#);
            let req = format!(
                "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            std::thread::spawn(move || (forbidden, raw_http(&sock, req.as_bytes(), Duration::from_secs(120))))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (forbidden, resp) = t.join().expect("thread");
        let text = String::from_utf8_lossy(&resp);
        if forbidden {
            assert!(text.starts_with("HTTP/1.1 403"), "request {i}: {text}");
            assert!(text.contains("forbid:"), "request {i}: {text}");
        } else {
            assert!(text.starts_with("HTTP/1.1 201"), "request {i}: {text}");
        }
    }
    let listed = ok(docker_direct().args([
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}-"),
        "--format",
        "{{.Names}} {{.Label \"com.example.chain\"}}",
    ]));
    let mut created: Vec<&str> = listed.lines().collect();
    created.sort();
    assert_eq!(created.len(), 100, "{listed}");
    for line in created {
        let (n, label) = line.split_once(' ').unwrap_or((line, ""));
        let idx: usize = n
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("index");
        assert_eq!(idx % 2, 0, "forbidden container {n} exists");
        assert_eq!(label, "stamped", "{n} was not patched");
    }
}

/// The message of a denied `GET /_ping`.
fn ping_denial(gw: &Gateway) -> String {
    let out = raw_http(
        &gw.socket,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 403"), "not denied: {text}");
    let body = &text[text.find("\r\n\r\n").map_or(0, |i| i + 4)..];
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["message"].as_str().unwrap_or_default().to_owned()
}

/// By default every call gets a fresh instance: what one call leaves in the plugin's memory is
/// gone for the next, whether the instance was prepared ahead of the call
/// (`runtime.prepared_instances`, default 2, refilled as calls use them) or made on the call's
/// own path (0). With `[plugins.reuse]` one initialized instance serves the calls in turn and
/// is replaced after `calls` of them.
#[test]
fn instances_are_fresh_per_call_unless_reuse_is_configured() {
    for runtime in [
        "",
        "[runtime]\nprepared_instances = 0\n",
        "[runtime]\nprepared_instances = 1\n",
    ] {
        let fresh = gateway(&[
            runtime.to_owned(),
            entry(
                "count",
                "endpoints = [\"system.ping\"]",
                "action = \"count\"",
            ),
        ]);
        let seen: Vec<String> = (0..6).map(|_| ping_denial(&fresh)).collect();
        assert_eq!(
            seen, ["count: call 1"; 6],
            "state survived a call on a fresh instance ({runtime:?})"
        );
    }

    let reused = gateway(&[entry(
        "count",
        "endpoints = [\"system.ping\"]\nreuse = { instances = 1, calls = 3 }",
        "action = \"count\"",
    )]);
    let seen: Vec<String> = (0..6).map(|_| ping_denial(&reused)).collect();
    let want: Vec<String> = [1, 2, 3, 1, 2, 3]
        .iter()
        .map(|n| format!("count: call {n}"))
        .collect();
    assert_eq!(
        seen, want,
        "one instance should serve three calls, then be replaced"
    );
}

/// The `x-testkit-calls` header of a `GET /containers/json` answer: how many hook calls the
/// instance that answered the response hook had run.
fn list_tally(gw: &Gateway) -> String {
    let out = raw_http(
        &gw.socket,
        b"GET /containers/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "list failed: {text}");
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-testkit-calls:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no x-testkit-calls header: {head}"))
}

/// A request's response hook runs in the instance its request hook ran in (one instance per
/// request for a plugin with both hooks), and the next request still gets a fresh one: the
/// count is 2 every time, never more. With no room to keep instances (a quarter of a pool of
/// 3 is none) the response hook gets a fresh instance of its own.
#[test]
fn a_request_and_its_response_share_one_fresh_instance() {
    let tally = entry(
        "tally",
        "endpoints = [\"container.list\"]",
        "action = \"tally\"",
    );
    for runtime in ["", "[runtime]\nprepared_instances = 0\n"] {
        let gw = gateway(&[runtime.to_owned(), tally.clone()]);
        let seen: Vec<String> = (0..5).map(|_| list_tally(&gw)).collect();
        assert_eq!(
            seen, ["2"; 5],
            "request and response hooks should share one instance per request ({runtime:?})"
        );
    }
    let gw = gateway(&[
        "[runtime]\nmax_instances = 3\nprepared_instances = 0\n".to_owned(),
        tally,
    ]);
    let seen: Vec<String> = (0..3).map(|_| list_tally(&gw)).collect();
    assert_eq!(
        seen, ["1"; 3],
        "without room to keep it, the response hook needs a fresh instance"
    );
}

/// `!` globs take endpoints out of a plugin's `endpoints`: here every endpoint is denied but
/// `/_ping`.
#[test]
fn endpoint_globs_can_exclude_endpoints() {
    let gw = gateway(&[entry(
        "all-but-ping",
        "endpoints = [\"*\", \"!system.ping\"]",
        "action = \"deny\"\nmessage = \"no\"",
    )]);
    let ping = raw_http(
        &gw.socket,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
        T,
    );
    let ping = String::from_utf8_lossy(&ping);
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    let out = run_timeout(
        gw.docker()
            .args(["version", "--format", "{{.Server.Version}}"]),
        None,
        T,
    );
    assert!(!out.status.success(), "docker version passed the plugin");
    assert!(
        stderr(&out).contains("all-but-ping: no"),
        "{}",
        stderr(&out)
    );
}

/// `portcullis plugin bench` on a component reports every figure it documents, each from the
/// number of samples asked for, with instantiation and the teardown that returns the pool
/// slot timed apart.
#[test]
fn plugin_bench_times_instantiation_and_teardown_apart() {
    use portcullis::plugin::offline;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let figures = rt.block_on(async {
        let plugin = offline::load_one(
            &testkit(),
            serde_json::json!({"action": "allow", "hook": "request"}),
            true,
            None,
        )
        .await
        .expect("the testkit loads");
        let req: offline::RequestFile = serde_json::from_value(serde_json::json!({
            "method": "GET", "path": "/v1.41/_ping",
        }))
        .unwrap();
        offline::bench(
            &std::sync::Arc::new(plugin),
            &req.into_request().unwrap(),
            20,
        )
        .await
        .expect("the bench runs")
    });
    for key in [
        "instantiate",
        "teardown",
        "call",
        "call_after_pause",
        "prepared_call",
    ] {
        let f = &figures[key];
        assert_eq!(f["n"], 20, "{key}: {figures}");
        let (p50, max) = (f["p50_us"].as_f64().unwrap(), f["max_us"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= max, "{key}: {figures}");
    }
}
