//! The owner policy in Rust, one of four identical implementations (Rust, Python, JavaScript,
//! C) in `sdk/examples/owner/`, all held to the table in `tests/plugin-conformance/owner.json`.
//!
//! On `container.create` it allows only images from the configured repositories and requires
//! an owner label. Configuration:
//!
//! ```toml
//! repositories = ["portcullis/busybox"]   # required; tags and digests are ignored
//! owner_label = "com.example.owner"       # optional, this is the default
//! ```

use portcullis_plugin::prelude::*;

/// The default label every container must carry.
const DEFAULT_LABEL: &str = "com.example.owner";

struct Owner {
    /// The configured repositories, as written (for messages).
    allowed: Vec<String>,
    /// The same, normalized (for comparisons).
    normalized: Vec<String>,
    label: String,
}

impl Plugin for Owner {
    const NAME: &'static str = "owner-policy";
    const HOOKS: Hooks = Hooks::REQUEST;

    fn new(config: Value) -> Result<Self, String> {
        let empty = serde_json::Map::new();
        let config = match &config {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err("the configuration must be a table".into()),
        };
        if let Some(key) = config
            .keys()
            .find(|k| *k != "repositories" && *k != "owner_label")
        {
            return Err(format!(
                "unknown key {key} (expected repositories, owner_label)"
            ));
        }
        let bad_repos =
            || "repositories: expected a non-empty list of image repositories".to_owned();
        let allowed: Vec<String> = match config.get("repositories") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(bad_repos)?,
            _ => return Err(bad_repos()),
        };
        let label = match config.get("owner_label") {
            None => DEFAULT_LABEL.to_owned(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err("owner_label: expected a non-empty string".into()),
        };
        let normalized = allowed.iter().map(|r| repository(r)).collect();
        Ok(Owner {
            allowed,
            normalized,
            label,
        })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        if req.endpoint != "container.create" {
            return Verdict::Allow;
        }
        let Some(Value::Object(body)) = req.json_body() else {
            return Verdict::deny_with(
                400,
                "container.create: the request body is not a JSON object",
            );
        };
        let image = match body.get("Image") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Verdict::deny("containers must name an image"),
        };
        if is_image_id(image) {
            return Verdict::deny(format!(
                "image {image} must be named by repository, not by id"
            ));
        }
        if !self.normalized.contains(&repository(image)) {
            return Verdict::deny(format!(
                "image {image} is not from an allowed repository (allowed: {})",
                self.allowed.join(", ")
            ));
        }
        let owner = body
            .get("Labels")
            .and_then(|l| l.get(&self.label))
            .and_then(Value::as_str);
        if owner.is_none_or(str::is_empty) {
            log::info!(
                "{} created a container without {}",
                req.caller.user,
                self.label
            );
            return Verdict::deny(format!(
                "containers must carry the label {0} (docker create --label {0}=NAME)",
                self.label
            ));
        }
        Verdict::Allow
    }
}

export_plugin!(Owner);

/// Whether `image` names an image by id (`sha256:…` or 64 hex digits) rather than by
/// repository: an id says nothing about where the image came from.
fn is_image_id(image: &str) -> bool {
    image.starts_with("sha256:")
        || (image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The repository of an image reference, normalized as Docker does: without tag or digest,
/// with the registry (`docker.io` by default) and `library/` for official images.
/// `busybox:1.36` → `docker.io/library/busybox`; `localhost:5000/x:1` → `localhost:5000/x`.
fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if first == "docker.io" && !rest.contains('/') {
                format!("docker.io/library/{rest}")
            } else {
                name.to_owned()
            }
        }
        Some(_) => format!("docker.io/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_normalized_like_docker() {
        for (image, repo) in [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1.36", "docker.io/library/busybox"),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("portcullis/busybox:latest", "docker.io/portcullis/busybox"),
            ("localhost:5000/x:1@sha256:ab", "localhost:5000/x"),
            ("ghcr.io/a/b", "ghcr.io/a/b"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn hooks_are_declared() {
        let p = Owner::new(json!({"repositories": ["busybox"]})).unwrap();
        portcullis_plugin::testing::assert_hooks(&p);
    }
}
