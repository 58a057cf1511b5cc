//! The layering rule of CONVENTIONS.md, enforced: a module of `host/src` may name only the
//! modules of layers below its own. Leaves (the model, the body, errors, routes, config) →
//! subsystems (identity, upstream, plugin, owners, then audit) → pipeline → listener and admin
//! → `run` (lib.rs) → the CLI. An upward or sideways `crate::` path is a design bug: it is how
//! import cycles start.
//!
//! The test reads the source, not the compiler's view, so it also sees paths written out in
//! full (`crate::config::Reuse`) and grouped imports (`use crate::{a, b}`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `host/src` and its layer; a module may use lower layers only.
/// A new module must be given a layer here.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: data and formats, no behaviour of the gateway.
    ("model", 0),
    ("body", 0),
    ("net", 0),
    ("route", 0),
    ("metrics", 0),
    ("error", 1),
    ("config", 1),
    // Subsystems, each owning one capability.
    ("identity", 2),
    ("upstream", 2),
    ("plugin", 2),
    ("owners", 2),
    // The trail is written by the pipeline and reads the caller's identity.
    ("audit", 3),
    // One request's trip.
    ("pipeline", 4),
    // BuildKit's tunnels, call by call, through the pipeline's chain.
    ("buildkit", 5),
    // Where requests come in.
    ("listener", 6),
    ("admin", 6),
    // A running gateway's policy swapped, and its state as the admin listener reports it.
    ("reload", 7),
    // `run`: wires the subsystems and serves.
    ("lib", 8),
    // The command line, and the fuzzing hooks (which reach into the pipeline's parsers).
    ("cli", 9),
    ("fuzz", 9),
    // The binary: it only dispatches to `cli`.
    ("main", 10),
];

/// The layer of the crate root's own items.
const LIB: u8 = 8;

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a source file belongs to (`pipeline/tags.rs` → `pipeline`,
/// `error.rs` → `error`).
fn owner(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    let first = first.as_os_str().to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

/// The top-level modules a line of code names through `crate::` (the binary's `main.rs`
/// names the library as `portcullis::`).
fn named(line: &str, root: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let prefix = format!("{root}::");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(&prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    out.push(name.to_owned());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every edge `file: module → named module` that breaks the rule, and every module without a
/// layer.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut bad = BTreeSet::new();
    for file in &files {
        let from = owner(src, file);
        let Some(from_layer) = layer(&from) else {
            bad.insert(format!(
                "{}: module `{from}` has no layer in LAYERS",
                file.display()
            ));
            continue;
        };
        let root = if from == "main" {
            "portcullis"
        } else {
            "crate"
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            for to in named(line, root) {
                if to == from || to == "self" {
                    continue;
                }
                // Not a module: an item of the crate root (`crate::Config`), which is lib's.
                let to_layer = layer(&to).unwrap_or(LIB);
                if to_layer >= from_layer {
                    bad.insert(format!(
                        "{}:{}: `{from}` (layer {from_layer}) uses `{to}` (layer {to_layer})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    bad.into_iter().collect()
}

#[test]
fn modules_import_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "layering broken ({} edges; CONVENTIONS.md rule 0):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_reader_sees_every_spelling_of_a_path() {
    assert_eq!(named("use crate::pipeline::Body;", "crate"), ["pipeline"]);
    assert_eq!(
        named("use crate::{audit::Record, config};", "crate"),
        ["audit", "config"]
    );
    assert_eq!(
        named(
            "let r = crate::config::Reuse::default(); // crate::audit",
            "crate"
        ),
        ["config"]
    );
    assert!(named("use portcullis_crate::x;", "crate").is_empty());
    assert_eq!(named("portcullis::cli::main()", "portcullis"), ["cli"]);
}

#[test]
fn an_upward_edge_is_caught() {
    let dir = std::env::temp_dir().join(format!("portcullis-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/mod.rs"), "use crate::pipeline::Gateway;\n").unwrap();
    std::fs::write(dir.join("pipeline.rs"), "use crate::config::Config;\n").unwrap();
    std::fs::write(dir.join("stray.rs"), "\n").unwrap();
    let bad = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("`config` (layer 1) uses `pipeline` (layer 4)"),
        "{bad:#?}"
    );
    assert!(bad[1].contains("module `stray` has no layer"), "{bad:#?}");
}
