//! Policies in OPA's language in the live gateway, with the real docker CLI and engine:
//! Rego evaluated natively (`kind = "rego"`: the example opa-docker-authz style policy in
//! `policies/rego/`) and compiled to wasm (`kind = "opa-wasm"`); the engine's state shows what
//! each let through.
//!
//! The wasm policy is not the output of `opa build -t wasm`: the OPA compiler cannot be
//! installed where these tests run, so `tests/fixtures/opa/authz.wat` is a module written by
//! hand that implements the part of OPA's documented wasm ABI the `opa-wasm` crate calls, and
//! decides from the input document the gateway writes into it (it denies when the input
//! contains `"Privileged":true`). What its test shows is the gateway's side: the module is
//! loaded through opa-wasm, given the canonical request as input, and its decision enforced;
//! it cannot show that a real compiled policy evaluates Rego correctly (that is OPA's part).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::Config;
use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

fn rego_gateway(extra: &str) -> Gateway {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego");
    let text = format!(
        "[[plugins]]\nname = \"authz\"\nkind = \"rego\"\npath = \"{}\"\n{extra}\n",
        dir.display()
    );
    Gateway::start_with(Config::parse(&text, Path::new("rego.toml")).expect("config"))
}

/// A privileged create is refused with `message` in the engine's error format, also when
/// spelled the way Go also accepts (lowercase keys: the policy sees the canonical body), and
/// nothing is created.
fn privileged_creates_are_refused(gw: &Gateway, clean: &mut Cleanup, message: &str) {
    let name = clean.container(&unique("authz-priv"));
    let out = run_timeout(
        gw.docker().args([
            "create",
            "--privileged",
            "--name",
            &name,
            "--label",
            TEST_LABEL,
            IMAGE,
            "true",
        ]),
        None,
        T,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Error response from daemon: authz: {message}")),
        "{err}"
    );
    assert!(!exists(&name));

    let name = clean.container(&unique("authz-case"));
    let body = format!(r#"{{"Image":"{IMAGE}","hostconfig":{{"privileged":true}}}}"#);
    let r = http(
        &gw.socket,
        &request(
            "POST",
            &format!("/v1.41/containers/create?name={name}"),
            Some(&body),
        ),
        T,
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains(message),
        "{:?}",
        r.json()
    );
    assert!(!exists(&name));
}

/// A plain create passes, and the container exists.
fn plain_creates_pass(gw: &Gateway, clean: &mut Cleanup) {
    let name = clean.container(&unique("authz-ok"));
    let out = run_timeout(
        gw.docker().args([
            "create", "--name", &name, "--label", TEST_LABEL, IMAGE, "true",
        ]),
        None,
        T,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exists(&name));
}

#[test]
fn an_opa_docker_authz_policy_decides_on_the_canonical_request() {
    let gw = rego_gateway("");
    let mut clean = Cleanup::new();
    privileged_creates_are_refused(&gw, &mut clean, "request rejected by administrative policy");

    // Binding the engine's socket is refused, even through a symlink: `innocent` links to
    // /run, so `innocent/docker.sock` resolves to /run/docker.sock before the policy runs.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink("/run", &link).unwrap();
    let name = clean.container(&unique("rego-sock"));
    let out = run_timeout(
        gw.docker().args([
            "create",
            "--name",
            &name,
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{}/docker.sock:/s", link.display()),
            IMAGE,
            "true",
        ]),
        None,
        T,
    );
    assert!(
        !out.status.success(),
        "a bind of the docker socket was allowed"
    );
    assert!(!exists(&name));

    plain_creates_pass(&gw, &mut clean);
}

/// The hand-written OPA wasm policy (see the module docs), compiled from WAT to a
/// `policy.wasm` in `dir`.
fn opa_policy_wasm(dir: &Path) -> PathBuf {
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/opa/authz.wat");
    let path = dir.join("policy.wasm");
    std::fs::write(
        &path,
        wat::parse_file(&wat).expect("the fixture is valid WAT"),
    )
    .unwrap();
    path
}

#[test]
fn a_compiled_opa_policy_decides_on_the_canonical_request() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[plugins]]\nname = \"authz\"\nkind = \"opa-wasm\"\npath = \"{}\"\n",
        opa_policy_wasm(dir.path()).display()
    );
    let gw = Gateway::start_with(Config::parse(&text, Path::new("opa.toml")).expect("config"));
    let mut clean = Cleanup::new();
    privileged_creates_are_refused(&gw, &mut clean, "privileged containers are not allowed");
    plain_creates_pass(&gw, &mut clean);
}

#[test]
fn config_reaches_the_policy_as_data() {
    let gw = rego_gateway("[plugins.config]\nread_only_users = [\"root\"]");
    let out = run_timeout(gw.docker().args(["ps", "-q"]), None, T);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut clean = Cleanup::new();
    let name = clean.container(&unique("rego-ro"));
    let out = run_timeout(
        gw.docker().args([
            "create", "--name", &name, "--label", TEST_LABEL, IMAGE, "true",
        ]),
        None,
        T,
    );
    assert!(
        !out.status.success(),
        "a read-only user created a container"
    );
    assert!(!exists(&name));
}

#[test]
fn a_broken_policy_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rego"),
        "package docker.authz\nallow if {",
    )
    .unwrap();
    let text = format!(
        "[[plugins]]\nname = \"authz\"\nkind = \"rego\"\npath = \"{}\"\n",
        dir.path().display()
    );
    let config = Config::parse(&text, Path::new("rego.toml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(portcullis::load_chain(&config))
        .err()
        .expect("a broken policy loaded");
    assert!(err.to_string().contains("authz"), "{err}");
}

/// `portcullis plugin test` and `plugin bench` load a `.rego` file (or a directory of them)
/// as a policy, so a policy can be tried offline like a component.
#[test]
fn a_rego_policy_runs_offline_like_a_component() {
    use portcullis::model::Verdict;
    use portcullis::plugin::offline;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego/authz.rego");
    let judge = |body: serde_json::Value| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let plugin = offline::load_one(&file, serde_json::json!({}), true, None)
                .await
                .expect("a .rego file loads as a policy");
            let req: offline::RequestFile = serde_json::from_value(serde_json::json!({
                "method": "POST", "path": "/v1.41/containers/create", "body": body,
            }))
            .unwrap();
            offline::run(&plugin, &req.into_request().unwrap(), None)
                .await
                .unwrap()
        })
    };
    assert!(matches!(
        judge(serde_json::json!({"Image": IMAGE})),
        Verdict::Allow
    ));
    let privileged = judge(serde_json::json!({"Image": IMAGE, "HostConfig": {"Privileged": true}}));
    assert!(matches!(privileged, Verdict::Deny(_)), "{privileged:?}");
}
