//! The `portcullis` command line: `check` refuses bad configurations and bad plugins with a
//! message naming the file and the problem; `plugin test` and `plugin inspect` run a real
//! component offline.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::portcullis;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The test kit component, when built (`just plugins`).
fn testkit() -> PathBuf {
    common::built(
        "wasm32-wasip2/release/portcullis_testkit_plugin.wasm",
        "just plugins",
    )
}

fn config_with_plugin(dir: &Path, plugin: &Path, config: &str) -> PathBuf {
    let cfg = dir.join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            "[runtime]\ncache_dir = \"{}\"\n[[plugins]]\nname = \"p\"\npath = \"{}\"\n[plugins.config]\n{config}\n",
            dir.join("cache").display(),
            plugin.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn check_names_the_file_and_key_of_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[limits]\nmax_connection = 1\n").unwrap();
    let out = portcullis(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("bad.toml") && t.contains("max_connection"),
        "{t}"
    );
}

#[test]
fn check_refuses_files_that_are_not_compatible_components() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "core-module.wasm",
            b"\0asm\x01\0\0\0",
            "is not a WebAssembly component",
        ),
        ("garbage.wasm", b"hello", "is not a WebAssembly component"),
        (
            "no-export.wasm",
            b"(component)",
            "does not export portcullis:plugin/policy@0.2.0",
        ),
        (
            "future.wasm",
            b"(component (instance $i) (export \"portcullis:plugin/policy@0.3.0\" (instance $i)))",
            "implements contract 0.3.0, this gateway supports 0.2.0",
        ),
    ];
    for (file, bytes, expect) in cases {
        let plugin = dir.path().join(file);
        std::fs::write(&plugin, bytes).unwrap();
        let cfg = config_with_plugin(dir.path(), &plugin, "");
        let out = portcullis(&["check", "--config", cfg.to_str().unwrap()]);
        assert!(!out.status.success(), "{file} passed check");
        let t = text(&out);
        assert!(t.contains(file) && t.contains(expect), "{file}: {t}");
    }
    let cfg = config_with_plugin(dir.path(), &dir.path().join("missing.wasm"), "");
    let t = text(&portcullis(&["check", "--config", cfg.to_str().unwrap()]));
    assert!(
        t.contains("missing.wasm") && t.contains("cannot read"),
        "{t}"
    );
}

#[test]
fn check_runs_init_so_a_bad_plugin_config_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_plugin(dir.path(), &testkit(), "action = \"no-such-action\"");
    let out = portcullis(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("plugin p: rejected its configuration") && t.contains("no-such-action"),
        "{t}"
    );
    let good = config_with_plugin(dir.path(), &testkit(), "action = \"allow\"");
    let out = portcullis(&["check", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // The compiled component was cached for the next start.
    let cached = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    assert_eq!(cached, 1);
}

/// `kind = "opa-wasm"`: a module that does not implement OPA's wasm ABI is refused by `check`
/// with the file named; the policy module is written by hand in WAT
/// (`tests/fixtures/opa/authz.wat`) because `opa build` cannot be installed here.
#[test]
fn check_refuses_a_module_that_is_no_opa_policy() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/opa/authz.wat");
    let policy = dir.path().join("policy.wasm");
    std::fs::write(&policy, wat::parse_file(&fixture).unwrap()).unwrap();
    let not_opa = dir.path().join("not-opa.wasm");
    std::fs::write(
        &not_opa,
        wat::parse_str("(module (memory (export \"memory\") 1))").unwrap(),
    )
    .unwrap();
    let config = |plugin: &Path| {
        let cfg = dir.path().join("opa.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[plugins]]\nname = \"authz\"\nkind = \"opa-wasm\"\npath = \"{}\"\n",
                plugin.display()
            ),
        )
        .unwrap();
        cfg
    };
    let out = portcullis(&["check", "--config", config(&not_opa).to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a module without OPA's ABI passed check"
    );
    let t = text(&out);
    assert!(
        t.contains("plugin authz: ") && t.contains("not-opa.wasm is not a usable OPA wasm policy"),
        "{t}"
    );
    let out = portcullis(&["check", "--config", config(&policy).to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // `plugin test` recognises the core module as an OPA policy.
    let req = dir.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"method": "POST", "path": "/v1.41/containers/create", "body": {"Image": "x", "HostConfig": {"Privileged": true}}}"#,
    )
    .unwrap();
    let out = portcullis(&[
        "plugin",
        "test",
        policy.to_str().unwrap(),
        "--request",
        req.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "deny", "{v}");
}

/// `plugin bench` measures what it says, `n` times each: instantiation, a fresh call (back to
/// back and after a pause) and a call on a prepared instance; a plugin that denies fails the bench with its message
/// instead of being timed.
#[test]
fn plugin_bench_reports_every_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"method": "GET", "path": "/v1.41/containers/json"}"#,
    )
    .unwrap();
    let allow = dir.path().join("allow.json");
    std::fs::write(&allow, r#"{"action": "allow"}"#).unwrap();
    let bench = |config: &Path| {
        portcullis(&[
            "plugin",
            "bench",
            testkit().to_str().unwrap(),
            "--request",
            req.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--iterations",
            "25",
        ])
    };
    let out = bench(&allow);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["instantiate", "call", "call_after_pause", "prepared_call"] {
        assert_eq!(v[key]["n"], 25, "{key}: {v}");
        assert!(
            v[key]["p50_us"].as_f64().is_some_and(|p| p > 0.0),
            "{key}: {v}"
        );
    }
    let trap = dir.path().join("trap.json");
    std::fs::write(&trap, r#"{"action": "trap"}"#).unwrap();
    let out = bench(&trap);
    assert!(
        !out.status.success(),
        "a trapping plugin was benchmarked: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("testkit: trap requested"),
        "{}",
        text(&out)
    );
}

#[test]
fn plugin_test_prints_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"method": "POST", "path": "/v1.41/containers/create", "body": {"Image": "x", "Labels": {"k": "v"}}}"#,
    )
    .unwrap();
    let deny = dir.path().join("deny.json");
    std::fs::write(&deny, r#"{"action": "deny-if-label", "key": "k"}"#).unwrap();
    let out = portcullis(&[
        "plugin",
        "test",
        testkit().to_str().unwrap(),
        "--request",
        req.to_str().unwrap(),
        "--config",
        deny.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "deny", "{v}");

    let patch = dir.path().join("patch.json");
    std::fs::write(
        &patch,
        r#"{"action": "patch-label", "key": "team", "value": "a"}"#,
    )
    .unwrap();
    let out = portcullis(&[
        "plugin",
        "test",
        testkit().to_str().unwrap(),
        "--request",
        req.to_str().unwrap(),
        "--config",
        patch.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "patch", "{v}");
    assert!(v["body"].to_string().contains("/Labels/team"), "{v}");

    let out = portcullis(&["plugin", "inspect", testkit().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contract"], "portcullis:plugin@0.2.0", "{v}");
    assert!(
        v["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "request"),
        "{v}"
    );
}

#[test]
fn policy_test_runs_rego_unit_tests_and_fails_on_a_failing_one() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego");
    let out = portcullis(&["policy", "test", examples.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("PASS docker.authz.test_privileged_denied"),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package t\nimport rego.v1\ntest_true if true\ntest_false if false\n",
    )
    .unwrap();
    let out = portcullis(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL t.test_false"), "{}", text(&out));
    assert!(text(&out).contains("1/2 passed"), "{}", text(&out));
}
