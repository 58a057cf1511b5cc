//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, seeds plus anything `just fuzz` found
//! worth keeping) through the fuzz targets' checks on stable Rust, so every run of the test
//! suite re-checks the inputs fuzzing has explored.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} check",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn json_body_corpus() {
    replay("json_body", portcullis::fuzz::json_body);
}

#[test]
fn path_corpus() {
    replay("path", portcullis::fuzz::path);
}

#[test]
fn query_corpus() {
    replay("query", portcullis::fuzz::query);
}
