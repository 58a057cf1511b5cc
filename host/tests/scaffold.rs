//! `portcullis plugin new`: a plugin scaffolded in each language builds with its own
//! `build.sh` and passes its own `test.sh` (which runs `portcullis plugin test` on the sample
//! request and compares the verdict). The toolchains are the ones `just plugin-examples`
//! installs (scripts/install-plugin-toolchains).

use std::path::Path;
use std::process::Command;

fn run(dir: &Path, script: &str) {
    let out = Command::new(dir.join(script))
        .env("PORTCULLIS", env!("CARGO_BIN_EXE_portcullis"))
        .env("PORTCULLIS_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{} {script} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scaffold_builds_and_passes_its_test(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}-plugin");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["plugin", "new", "--lang", lang, "--dir"])
        .arg(tmp.path())
        .arg(&name)
        .output()
        .expect("run portcullis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join(&name);
    run(&dir, "build.sh");
    assert!(dir.join(format!("{name}.wasm")).is_file());
    run(&dir, "test.sh");
    // The test really compares: a wrong expectation fails it.
    std::fs::write(
        dir.join("tests/expected.json"),
        "{\"verdict\": \"allow\"}\n",
    )
    .unwrap();
    let out = Command::new(dir.join("test.sh"))
        .env("PORTCULLIS", env!("CARGO_BIN_EXE_portcullis"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "test.sh passed with a wrong expectation"
    );
}

#[test]
fn new_rust_plugin_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("rust");
}

#[test]
fn new_python_plugin_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("python");
}

#[test]
fn new_js_plugin_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("js");
}

#[test]
fn new_c_plugin_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("c");
}

#[test]
fn new_refuses_bad_names_and_languages() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        ["--lang", "rust", "Bad_Name"],
        ["--lang", "cobol", "ok-name"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["plugin", "new", "--dir"])
            .arg(tmp.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "a refused scaffold left files"
    );
}
