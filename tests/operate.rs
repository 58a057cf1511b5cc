//! Operating a running gateway (issue #24), through the real binary and the real engine:
//! metrics and health on the admin listener, reload (SIGHUP and `portcullis reload`) with
//! the chain swapped whole and streams kept, `portcullis audit` against the running
//! gateway, and JSON logs that name each request.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// The value of the sample `name` (with its labels, as printed) in a scrape, if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(gw: &Served) -> String {
    let r = gw.admin_get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    String::from_utf8(r.body).unwrap()
}

/// The shipped configuration in `dir`, with the baseline plugin's bind-mount allowance set
/// to `allowed` (the knob the reload tests turn).
fn shipped_with_binds(dir: &std::path::Path, allowed: &[&std::path::Path]) -> String {
    let list: Vec<String> = allowed
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let text = shipped_config_text(dir);
    let knob = "allowed_bind_paths = []";
    assert!(text.contains(knob), "the shipped config names {knob}");
    text.replace(knob, &format!("allowed_bind_paths = [{}]", list.join(", ")))
}

fn reload(gw: &Served) -> std::process::Output {
    run(&mut gw.portcullis(&["reload"]))
}

#[test]
fn metrics_count_requests_plugins_audit_and_streams() {
    let users = Users::create(&["pcop-ann"]);
    let gw = Served::start(shipped_config_text, &[]);
    let host = gw.docker_host();
    let mut cleanup = Cleanup::new();
    let name = cleanup.container(&unique("metrics"));
    let denied = run(as_user("pcop-ann", &host, "docker").args([
        "run",
        "--rm",
        "--privileged",
        IMAGE,
        "true",
    ]));
    assert!(!denied.status.success());
    assert!(text(&denied).contains("baseline"), "{}", text(&denied));
    let hi = ok(as_user("pcop-ann", &host, "docker").args(["run", "--rm", IMAGE, "echo", "hi"]));
    assert_eq!(hi.trim(), "hi");
    // The stream is root's own (killing `runuser` would leave its docker client running).
    ok(gw.docker().args([
        "run", "-d", "--name", &name, "--label", TEST_LABEL, IMAGE, "sh", "-c", TICKER,
    ]));
    let mut logs = Streaming::spawn(gw.docker().args(["logs", "-f", &name]));
    logs.expect_line(T, |l| l.starts_with("line "));

    let m = scrape(&gw);
    let count = |s: &str| sample(&m, s).unwrap_or_else(|| panic!("no {s} in:\n{m}"));
    assert_eq!(
        count(
            r#"portcullis_requests_total{endpoint="container.create",decision="deny",status="403"}"#
        ),
        1.0
    );
    assert_eq!(
        count(
            r#"portcullis_requests_total{endpoint="container.create",decision="allow",status="201"}"#
        ),
        2.0
    );
    assert!(
        count(r#"portcullis_plugin_call_duration_seconds_count{plugin="baseline",hook="request"}"#)
            >= 2.0
    );
    assert!(
        count(r#"portcullis_request_duration_seconds_count{endpoint="container.create"}"#) >= 2.0
    );
    assert!(count("portcullis_upstream_duration_seconds_count") >= 1.0);
    assert!(count("portcullis_audit_appends_total") >= 1.0);
    assert_eq!(count("portcullis_streams_open"), 1.0, "logs -f is open");
    assert!(count("portcullis_connections_open") >= 1.0);
    assert_eq!(count("portcullis_config_generation"), 1.0);
    assert_eq!(count("portcullis_audit_dropped_total"), 0.0);
    // Bounded labels: endpoint names, never callers, ids or paths.
    assert!(!m.contains("pcop-ann"), "a caller's name in the metrics");
    assert!(!m.contains(&name), "a container name in the metrics");

    logs.kill();
    wait_for("the stream to close", T, || {
        (sample(&scrape(&gw), "portcullis_streams_open") == Some(0.0)).then_some(())
    });
    drop(users);
}

#[test]
fn health_and_readiness_say_what_is_wrong() {
    let gw = Served::start(shipped_config_text, &[]);
    let r = gw.admin_get("/healthz");
    assert_eq!(r.status, 200);
    let r = gw.admin_get("/readyz");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let checks = r.json()["checks"].clone();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["engine", "audit", "chain"]);
    assert!(checks[2]["detail"].as_str().unwrap().contains("4 plugins"));

    // A gateway whose engine is gone serves (healthz) but is not ready, and says why.
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let mut config = Config::default();
    config.engine.url = format!("unix://{}/no-engine.sock", state.display())
        .parse()
        .unwrap();
    config.admin = Some(portcullis::config::AdminConfig {
        listen: format!("unix://{}/admin.sock", state.display())
            .parse()
            .unwrap(),
    });
    let _dead = Gateway::start_raw(config);
    let admin = state.join("admin.sock");
    wait_for("the admin socket", T, || admin.exists().then_some(()));
    let get = |p: &str| http(&admin, &request("GET", p, None), T);
    assert_eq!(get("/healthz").status, 200);
    let r = get("/readyz");
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"][0]["ok"], false);
    assert!(
        v["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no-engine.sock"),
        "{v}"
    );
    // No audit trail here: its queries say so.
    let r = get("/audit?limit=1");
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("[audit]"));
}

use portcullis::Config;

#[test]
fn reload_swaps_the_chain_and_streams_survive() {
    let users = Users::create(&["pcop-bea"]);
    let shared = tempfile::tempdir().unwrap();
    let gw = Served::start(|dir| shipped_with_binds(dir, &[]), &[]);
    let host = gw.docker_host();
    let mut cleanup = Cleanup::new();
    let ticker = cleanup.container(&unique("reload-ticker"));
    ok(as_user("pcop-bea", &host, "docker").args([
        "run", "-d", "--name", &ticker, "--label", TEST_LABEL, IMAGE, "sh", "-c", TICKER,
    ]));
    let mut logs =
        Streaming::spawn(as_user("pcop-bea", &host, "docker").args(["logs", "-f", &ticker]));
    logs.expect_line(T, |l| l.starts_with("line "));
    let mut events = Streaming::spawn(as_user("pcop-bea", &host, "docker").args([
        "events",
        "--filter",
        "type=container",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]));
    // Attached with a terminal-less stdin: a tunnel that must survive too.
    let mut attached = Streaming::spawn(as_user("pcop-bea", &host, "docker").args([
        "attach",
        "--no-stdin",
        &ticker,
    ]));
    attached.expect_line(T, |l| l.starts_with("line "));

    let bind = format!("{}:/shared", shared.path().display());
    let mounted = cleanup.container(&unique("reload-bind"));
    let run_bound = |name: &str| {
        run(as_user("pcop-bea", &host, "docker").args([
            "run", "--name", name, "--label", TEST_LABEL, "-v", &bind, IMAGE, "true",
        ]))
    };
    let refused = run_bound(&mounted);
    assert!(text(&refused).contains("bind"), "{}", text(&refused));

    // The operator allows the directory and reloads.
    std::fs::write(
        &gw.config,
        shipped_with_binds(gw.dir.path(), &[shared.path()]),
    )
    .unwrap();
    let out = reload(&gw);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("generation 2"), "{}", text(&out));
    let allowed = run_bound(&mounted);
    assert!(allowed.status.success(), "{}", text(&allowed));
    // The engine ran it with the mount the new policy allowed.
    let source = ok(docker_direct().args([
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Source}}{{end}}",
        &mounted,
    ]));
    assert_eq!(source.trim(), shared.path().display().to_string());

    // The streams opened under generation 1 still flow, and judge new events.
    let before = logs.expect_line(T, |l| l.starts_with("line "));
    logs.expect_line(T, |l| l.starts_with("line ") && *l != before);
    attached.expect_line(T, |l| l.starts_with("line "));
    events.expect_line(T, |l| l.ends_with(&mounted));
    assert!(logs.is_running() && events.is_running() && attached.is_running());
    let m = scrape(&gw);
    assert_eq!(sample(&m, "portcullis_config_generation"), Some(2.0));
    assert_eq!(
        sample(&m, r#"portcullis_config_reloads_total{kind="ok"}"#),
        Some(1.0)
    );
    assert!(gw.log().contains("configuration reloaded"), "{}", gw.log());
    drop(users);
}

#[test]
fn a_reload_that_fails_leaves_the_running_chain_in_place() {
    let gw = Served::start(shipped_config_text, &[]);
    let good = std::fs::read_to_string(&gw.config).unwrap();
    let privileged = || {
        run(gw
            .docker()
            .args(["run", "--rm", "--privileged", IMAGE, "true"]))
    };
    assert!(text(&privileged()).contains("baseline"));

    // A plugin that is not a component: the whole reload is refused.
    let junk = gw.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let labels = good
        .lines()
        .find(|l| l.starts_with("path = ") && l.ends_with("/labels.wasm\""))
        .expect("the labels plugin's path");
    let broken = good.replace(labels, &format!("path = \"{}\"", junk.display()));
    std::fs::write(&gw.config, &broken).unwrap();
    let out = reload(&gw);
    assert!(!out.status.success());
    assert!(text(&out).contains("junk.wasm"), "{}", text(&out));
    assert!(text(&out).contains("stays in place"), "{}", text(&out));
    assert!(
        text(&privileged()).contains("baseline"),
        "the old chain still judges"
    );

    // Settings bound at start are named, and nothing changes.
    let moved = good.replace(
        &format!("unix://{}/portcullis.sock", gw.dir.path().display()),
        "unix:///var/tmp/pc-elsewhere.sock",
    );
    std::fs::write(&gw.config, &moved).unwrap();
    let out = reload(&gw);
    assert!(!out.status.success());
    assert!(text(&out).contains("server.listen"), "{}", text(&out));

    // A file that does not parse names its key: `portcullis reload` reads the file too (for
    // the admin address) and says so itself; on SIGHUP the gateway refuses it.
    std::fs::write(
        &gw.config,
        format!("{good}\n[api]\nmax_verison = \"1.41\"\n"),
    )
    .unwrap();
    let out = reload(&gw);
    assert!(!out.status.success());
    assert!(text(&out).contains("api"), "{}", text(&out));
    ok(Command::new("kill").args(["-HUP", &gw.pid().to_string()]));
    wait_for("the refused SIGHUP reload", T, || {
        let m = scrape(&gw);
        (sample(&m, r#"portcullis_config_reloads_total{kind="failed"}"#) == Some(3.0)).then_some(())
    });

    let m = scrape(&gw);
    assert_eq!(
        sample(&m, "portcullis_config_last_reload_success"),
        Some(0.0)
    );
    assert_eq!(sample(&m, "portcullis_config_generation"), Some(1.0));
    assert!(gw.log().contains("reload refused"), "{}", gw.log());

    // SIGHUP with a good file again: generation 2.
    std::fs::write(&gw.config, &good).unwrap();
    ok(Command::new("kill").args(["-HUP", &gw.pid().to_string()]));
    wait_for("the SIGHUP reload", T, || {
        (sample(&scrape(&gw), "portcullis_config_generation") == Some(2.0)).then_some(())
    });
    assert_eq!(
        sample(&scrape(&gw), "portcullis_config_last_reload_success"),
        Some(1.0)
    );
    assert!(text(&privileged()).contains("baseline"));
}

#[test]
fn reloads_under_load_fail_no_request() {
    let gw = Served::start(shipped_config_text, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let socket = gw.socket.clone();
    let mut clients = Vec::new();
    for i in 0..3 {
        let (stop, done, socket) = (stop.clone(), done.clone(), socket.clone());
        clients.push(std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A list (judged by tenancy, filtered) and a denied create, alternately.
                let (req, want) = if i % 2 == 0 {
                    (request("GET", "/v1.41/containers/json", None), 200)
                } else {
                    let body =
                        format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"Privileged":true}}}}"#);
                    (
                        request("POST", "/v1.41/containers/create", Some(&body)),
                        403,
                    )
                };
                let r = http(&socket, &req, T);
                if r.status != want {
                    bad.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            bad
        }));
    }
    for n in 2..=6 {
        let out = reload(&gw);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("generation {n}")),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let bad: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        done.load(Ordering::Relaxed) > 20,
        "the clients kept sending"
    );
    assert!(bad.is_empty(), "requests failed during reloads: {bad:?}");
}

#[test]
fn audit_commands_query_the_running_gateway_as_they_read_a_stopped_store() {
    let mut gw = Served::start(shipped_config_text, &[]);
    run(gw
        .docker()
        .args(["run", "--rm", "--privileged", IMAGE, "true"]));
    ok(gw.docker().args(["ps", "-a"]));
    let config = gw.config.clone();
    let records = || {
        ok(Command::new(portcullis_bin())
            .args(["audit", "stats", "--json", "--config"])
            .arg(&config))
    };
    // Records are written just after their responses: wait until the count settles.
    let settled = wait_for("the records to be written", T, || {
        let a = records();
        std::thread::sleep(Duration::from_millis(300));
        (a == records()).then_some(a)
    });
    let commands: [&[&str]; 5] = [
        &["audit", "list", "--limit", "0"],
        &["audit", "list", "--json", "--decision", "deny"],
        &["audit", "show", "2"],
        &["audit", "verify"],
        &["audit", "export"],
    ];
    let live: Vec<String> = commands.iter().map(|c| ok(&mut gw.portcullis(c))).collect();
    assert!(live[1].contains("baseline"), "{}", live[1]);
    assert!(live[0].lines().count() >= 4, "{}", live[0]);
    assert!(gw.stop(), "the gateway stopped cleanly");
    // The same commands on the store itself now that the gateway is gone.
    let stopped: Vec<String> = commands.iter().map(|c| ok(&mut gw.portcullis(c))).collect();
    for ((c, a), b) in commands.iter().zip(&live).zip(&stopped) {
        assert_eq!(a, b, "portcullis {} differs", c.join(" "));
    }
    // Counts are the same; only the bytes on disk may move with the final flush.
    let mut a: serde_json::Value = serde_json::from_str(&settled).unwrap();
    let mut b: serde_json::Value = serde_json::from_str(&records()).unwrap();
    a["disk_bytes"] = 0.into();
    b["disk_bytes"] = 0.into();
    assert_eq!(a, b);
}

#[test]
fn json_logs_name_each_request_and_keep_secrets_out() {
    let gw = Served::start(shipped_config_text, &[("PORTCULLIS_LOG_FORMAT", "json")]);
    let out = run(gw.docker().args([
        "run",
        "--rm",
        "--privileged",
        "-e",
        "DB_PASSWORD=pc-hunter2",
        IMAGE,
        "true",
    ]));
    assert!(text(&out).contains("baseline"));
    // A bearer token the gateway cannot place (no tokens file): refused, never logged.
    let r = http(
        &gw.socket,
        b"GET /v1.41/info HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer pc-secret-token\r\nConnection: close\r\n\r\n",
        T,
    );
    assert_eq!(r.status, 401);
    let listed = ok(&mut gw.portcullis(&[
        "audit",
        "list",
        "--json",
        "--decision",
        "deny",
        "--endpoint",
        "container.create",
    ]));
    let denied: Vec<portcullis::audit::Record> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = denied[0].request_id;
    let log = gw.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "request refused"
                && l["fields"]["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("baseline")
        })
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert_eq!(refused["span"]["name"], "request");
    assert_eq!(
        refused["span"]["id"], id,
        "the log line names the audit record's request"
    );
    assert!(!log.contains("pc-hunter2"), "a secret in the log");
    assert!(!log.contains("pc-secret-token"), "a token in the log");
}

/// Two gateways in front of one engine, each with its own store (docs/scale.md): their
/// exports, taken while they serve, merge into one trail by one command that checks both
/// chains, and a line edited or dropped in either export is named.
#[test]
fn two_gateways_exports_merge_into_one_verified_trail() {
    let gws = [
        Served::start(shipped_config_text, &[]),
        Served::start(shipped_config_text, &[]),
    ];
    let mut c = Cleanup::new();
    for (i, gw) in gws.iter().enumerate() {
        let name = c.container(&unique(&format!("scale{i}")));
        ok_timeout(gw.docker().args(["run", "--name", &name, IMAGE, "true"]), T);
        run(gw
            .docker()
            .args(["run", "--rm", "--privileged", IMAGE, "true"]));
        ok(gw.docker().args(["rm", &name]));
    }
    let out = tempfile::tempdir().unwrap();
    let mut heads = Vec::new();
    let mut files = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let export = || ok(&mut gw.portcullis(&["audit", "export"]));
        // Records are written just after their responses: export once the trail settles.
        let text = wait_for("the records to be written", T, || {
            let a = export();
            std::thread::sleep(Duration::from_millis(300));
            (a == export()).then_some(a)
        });
        let verify = ok(&mut gw.portcullis(&["audit", "verify"]));
        let head = verify
            .split_whitespace()
            .last()
            .expect("verify prints the head hash")
            .to_owned();
        heads.push(head);
        let file = out.path().join(format!("gw{i}.jsonl"));
        std::fs::write(&file, &text).unwrap();
        files.push((file, text));
    }
    let merged = out.path().join("merged.jsonl");
    let merge = |args: &[&std::path::Path]| {
        let mut cmd = Command::new(portcullis_bin());
        cmd.args(["audit", "merge", "--out"]).arg(&merged);
        for a in args {
            cmd.arg(a);
        }
        run(&mut cmd)
    };
    let o = merge(&[&files[0].0, &files[1].0]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    for (i, head) in heads.iter().enumerate() {
        assert!(
            said.contains(&format!("gateway gw{i}:")) && said.contains(head.as_str()),
            "gw{i}'s head {head}: {said}"
        );
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&merged)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total: usize = files.iter().map(|(_, t)| t.lines().count()).sum();
    assert_eq!(lines.len(), total);
    let times: Vec<&str> = lines.iter().map(|l| l["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for (i, (_, export)) in files.iter().enumerate() {
        let of: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["gateway"] == format!("gw{i}").as_str())
            .collect();
        assert_eq!(of.len(), export.lines().count());
        assert!(of.iter().any(|l| l["decision"] == "deny"
            && l["error"].as_str().unwrap_or("").contains("[privileged]")));
    }
    // The merged trail checks again as one input.
    let again = out.path().join("again.jsonl");
    let o = run(Command::new(portcullis_bin())
        .args(["audit", "merge", "--out"])
        .arg(&again)
        .arg(&merged));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&merged).unwrap()
    );

    // A denial turned into an allowance in gw1's export, and a record dropped from gw0's.
    let (file0, text0) = &files[0];
    let (file1, text1) = &files[1];
    let forged = text1.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    assert_ne!(&forged, text1);
    std::fs::write(file1, forged).unwrap();
    let o = merge(&[file0, file1]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("content does not match its hash"),
        "{}",
        text(&o)
    );
    std::fs::write(file1, text1).unwrap();
    let mut kept: Vec<&str> = text0.lines().collect();
    kept.remove(1);
    std::fs::write(file0, kept.join("\n")).unwrap();
    let o = merge(&[file0, file1]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("gw0.jsonl, line 2") && text(&o).contains("missing"),
        "{}",
        text(&o)
    );
}
