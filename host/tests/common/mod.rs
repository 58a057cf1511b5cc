//! Helpers shared by the command-line tests in `host/tests/` (each test file is its own
//! crate, so each uses only part of this).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the built `portcullis` binary with `args`, logging only errors.
pub fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("PORTCULLIS_LOG", "error")
        .output()
        .expect("run portcullis")
}

/// A component in the target directory, `rel` below it; `recipe` builds it.
pub fn built(rel: &str, recipe: &str) -> PathBuf {
    let dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "/var/cache/portcullis/target".into());
    let p = PathBuf::from(dir).join(rel);
    assert!(p.exists(), "{} is missing: run `{recipe}`", p.display());
    p
}
