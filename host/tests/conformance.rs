//! One policy, four languages: the owner policy's builds in Rust, Python, JavaScript and C
//! (`sdk/examples/owner/*`, built by `just plugin-examples`) must give exactly the verdicts
//! of the shared table `tests/plugin-conformance/owner.json`, through `portcullis plugin test`
//! — the command plugin authors use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

/// Where `scripts/build-plugin-examples` puts the components.
fn component(lang: &str) -> PathBuf {
    common::built(
        &format!("plugin-examples/owner-{lang}.wasm"),
        "just plugin-examples",
    )
}

fn table() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugin-conformance/owner.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs every case of the table against `lang`'s build; panics listing every mismatch.
fn conforms(lang: &str) {
    let plugin = component(lang);
    let table = table();
    let dir = tempfile::tempdir().unwrap();
    let cases = table["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "the table lost its cases");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().expect("case name");
        let req = dir.path().join(format!("req{i}.json"));
        let cfg = dir.path().join(format!("cfg{i}.json"));
        std::fs::write(&req, case["request"].to_string()).unwrap();
        std::fs::write(
            &cfg,
            case.get("config").unwrap_or(&table["config"]).to_string(),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["plugin", "test"])
            .arg(&plugin)
            .arg("--request")
            .arg(&req)
            .arg("--config")
            .arg(&cfg)
            .env("PORTCULLIS_LOG", "error")
            .output()
            .expect("run portcullis");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(message) = case.get("expect_config_error") {
            let message = message.as_str().expect("expect_config_error is a string");
            if out.status.success()
                || !stderr.contains("rejected its configuration")
                || !stderr.contains(message)
            {
                failures.push(format!("{name}: expected the configuration to be refused with {message:?}, got {stdout}{stderr}"));
            }
            continue;
        }
        if !out.status.success() {
            failures.push(format!("{name}: plugin test failed: {stderr}"));
            continue;
        }
        match serde_json::from_str::<Value>(&stdout) {
            Ok(got) if got == case["expect"] => {}
            Ok(got) => failures.push(format!("{name}: expected {}, got {got}", case["expect"])),
            Err(e) => failures.push(format!("{name}: output is not JSON ({e}): {stdout}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{lang}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn rust_build_conforms() {
    conforms("rust");
}

#[test]
fn python_build_conforms() {
    conforms("python");
}

#[test]
fn js_build_conforms() {
    conforms("js");
}

#[test]
fn c_build_conforms() {
    conforms("c");
}
