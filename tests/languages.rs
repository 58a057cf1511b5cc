//! The owner policy built in Rust, Python, JavaScript and C (`sdk/examples/owner/*`, built by
//! `just plugin-examples`), each in front of the real engine: the docker CLI's `create` is
//! allowed or denied as `tests/plugin-conformance/owner.json` says, and the engine's state
//! shows it (a denied container does not exist, an allowed one carries its owner label).

use std::time::Duration;

use portcullis_tests::*;

const T: Duration = Duration::from_secs(60);

/// The entry's extra keys for a fresh instance per call.
const FRESH: &str = "";
/// One instance kept and reused for every call (`[plugins.reuse]`): the verdicts must not
/// change when an interpreter answers several requests in turn.
const REUSED: &str = "reuse = { instances = 1 }";

fn gateway(lang: &str, extra: &str) -> Gateway {
    // A generous timeout: this test is about verdicts, not speed (`just bench` measures it).
    portcullis_tests::gateway(&[plugin_entry(
        &format!("owner-{lang}"),
        &owner_example(lang),
        &format!("endpoints = [\"container.create\"]\ntimeout = \"2s\"\n{extra}"),
        "repositories = [\"portcullis/busybox\"]",
    )])
}

fn create(gw: &Gateway, name: &str, image: &str, labels: &[&str]) -> std::process::Output {
    let mut cmd = gw.docker();
    cmd.args([
        "create", "--pull", "never", "--name", name, "--label", TEST_LABEL,
    ]);
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd.args([image, "true"]);
    run_timeout(&mut cmd, None, T)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn owner_policy_through_the_gateway(lang: &str, extra: &str) {
    let gw = gateway(lang, extra);
    let mut clean = Cleanup::new();

    // Allowed: the right repository and an owner. The engine has it, with the label.
    let ok_name = clean.container(&unique(&format!("langs-{lang}-ok")));
    let out = create(&gw, &ok_name, IMAGE, &["com.example.owner=alice"]);
    assert!(
        out.status.success(),
        "{lang}: allowed create failed: {}",
        stderr(&out)
    );
    let owner = ok(docker_direct().args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.example.owner\"}}",
        &ok_name,
    ]));
    assert_eq!(owner.trim(), "alice");

    // No owner label: denied with the plugin's message, nothing created.
    let unlabelled = clean.container(&unique(&format!("langs-{lang}-nolabel")));
    let out = create(&gw, &unlabelled, IMAGE, &[]);
    assert!(
        !out.status.success(),
        "{lang}: a create without owner passed"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "Error response from daemon: owner-{lang}: containers must carry the label com.example.owner"
        )),
        "{lang}: {err}"
    );
    assert!(
        !exists(&unlabelled),
        "{lang}: a denied create reached the engine"
    );

    // Another repository: denied before the engine is asked for the image.
    let other = clean.container(&unique(&format!("langs-{lang}-repo")));
    let out = create(&gw, &other, "alpine:3.20", &["com.example.owner=alice"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "owner-{lang}: image alpine:3.20 is not from an allowed repository (allowed: portcullis/busybox)"
        )),
        "{lang}: {err}"
    );
    assert!(
        !exists(&other),
        "{lang}: a denied create reached the engine"
    );

    // Other endpoints are not the plugin's business.
    ok(gw
        .docker()
        .args(["ps", "-a", "--filter", &format!("name={ok_name}")]));
}

#[test]
fn rust_owner_policy_against_the_engine() {
    owner_policy_through_the_gateway("rust", FRESH);
}

#[test]
fn python_owner_policy_against_the_engine() {
    owner_policy_through_the_gateway("python", FRESH);
}

#[test]
fn js_owner_policy_against_the_engine() {
    owner_policy_through_the_gateway("js", FRESH);
}

#[test]
fn c_owner_policy_against_the_engine() {
    owner_policy_through_the_gateway("c", FRESH);
}

#[test]
fn python_owner_policy_with_instance_reuse() {
    owner_policy_through_the_gateway("python", REUSED);
}

#[test]
fn js_owner_policy_with_instance_reuse() {
    owner_policy_through_the_gateway("js", REUSED);
}
