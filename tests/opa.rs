//! OPA policies compiled to wasm (`kind = "opa-wasm"`) in the live gateway, with the real
//! docker CLI and engine.
//!
//! The policy is not the output of `opa build -t wasm`: the OPA compiler cannot be installed
//! where these tests run, so `tests/fixtures/opa/authz.wat` is a module written by hand that
//! implements the part of OPA's documented wasm ABI the `opa-wasm` crate calls, and decides
//! from the input document the gateway writes into it (it denies when the input contains
//! `"Privileged":true`). What these tests show is the gateway's side: the module is loaded
//! through opa-wasm, given the canonical request as input, and its decision enforced; they
//! cannot show that a real compiled policy evaluates Rego correctly (that is OPA's part).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::Config;
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// The hand-written policy, compiled from WAT to a `policy.wasm` in `dir`.
fn policy_wasm(dir: &Path) -> PathBuf {
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/opa/authz.wat");
    let path = dir.join("policy.wasm");
    std::fs::write(&path, wat::parse_file(&wat).expect("the fixture is valid WAT")).unwrap();
    path
}

#[test]
fn a_compiled_policy_decides_on_the_canonical_request() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[plugins]]\nname = \"authz\"\nkind = \"opa-wasm\"\npath = \"{}\"\n",
        policy_wasm(dir.path()).display()
    );
    let gw = Gateway::start_with(Config::parse(&text, Path::new("opa.toml")).expect("config"));
    let mut clean = Cleanup::new();

    // Denied in the engine's error format, with the policy's message; nothing was created.
    let name = clean.container(&unique("opa-priv"));
    let out = run_timeout(
        gw.docker().args(["create", "--privileged", "--name", &name, "--label", TEST_LABEL, IMAGE, "true"]),
        None,
        T,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error response from daemon: authz: privileged containers are not allowed"),
        "{err}"
    );
    assert!(!exists(&name));

    // Spelled the way Go also accepts (lowercase keys): the policy sees the canonical body.
    let name = clean.container(&unique("opa-case"));
    let body = format!(r#"{{"Image":"{IMAGE}","hostconfig":{{"privileged":true}}}}"#);
    let r = http(&gw.socket, &request("POST", &format!("/v1.41/containers/create?name={name}"), Some(&body)), T);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().unwrap_or("").contains("privileged"), "{:?}", r.json());
    assert!(!exists(&name));

    // A plain container passes, and exists.
    let name = clean.container(&unique("opa-ok"));
    let out = run_timeout(gw.docker().args(["create", "--name", &name, "--label", TEST_LABEL, IMAGE, "true"]), None, T);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(exists(&name));
}

#[test]
fn a_module_that_is_no_opa_policy_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-opa.wasm");
    std::fs::write(&path, wat::parse_str("(module (func (export \"run\")))").unwrap()).unwrap();
    let text = format!("[[plugins]]\nname = \"authz\"\nkind = \"opa-wasm\"\npath = \"{}\"\n", path.display());
    let config = Config::parse(&text, Path::new("opa.toml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(portcullis::load_chain(&config)).err().expect("a module without OPA's ABI loaded");
    let err = err.to_string();
    assert!(err.contains("authz") && err.contains("not-opa.wasm"), "{err}");
}
