//! Test support: where the Engine API specs are and how their operation ids name endpoints.
//! Shared by the route table's tests and the JSON field-schema generator.

use std::path::PathBuf;

/// The spec files, oldest first: the engine here serves v1.41, the CLI speaks v1.50.
pub(crate) const SPECS: [&str; 3] = ["v1.41.yaml", "v1.50.yaml", "latest.yaml"];

/// Parses one spec file.
pub(crate) fn load(file: &str) -> serde_yaml::Value {
    let path = spec_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The Engine API specs are vendored in `vendor/docker-engine-api/`, so a clone tests
/// against them alone. `PORTCULLIS_API_SPECS` overrides; a `shared/docker-engine-api` in an
/// ancestor of the crate is tried after the vendored copy (a scratch crate with `shared`
/// linked in).
pub(crate) fn spec_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PORTCULLIS_API_SPECS") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vendored = manifest.join("../vendor/docker-engine-api");
    let candidates: Vec<PathBuf> = std::iter::once(vendored)
        .chain(
            manifest
                .ancestors()
                .map(|dir| dir.join("shared/docker-engine-api")),
        )
        .collect();
    candidates
        .iter()
        .find(|dir| dir.join(SPECS[0]).is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "Engine API specs not found; set PORTCULLIS_API_SPECS or put them in one of: {}",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// `SystemDataUsage` → `system.data.usage`, with the table's documented exceptions.
pub(crate) fn expected_name(operation_id: &str) -> String {
    match operation_id {
        "SystemPingHead" => return "system.ping".into(),
        "ContainerArchive" => return "container.archive.get".into(),
        "ContainerArchiveInfo" => return "container.archive.head".into(),
        "PutContainerArchive" => return "container.archive.put".into(),
        "GetPluginPrivileges" => return "plugin.privileges".into(),
        _ => {}
    }
    let mut out = String::new();
    for (i, c) in operation_id.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('.');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
