//! Host paths of bind mounts, resolved through symlinks before plugins see them.
//!
//! A policy that allows binds under `/srv/data` is fooled by `/srv/data/link` pointing at
//! `/`: the engine follows the link when it mounts. So the gateway resolves every host
//! path a request would bind (the way the kernel will: symlinks, then `..`) and forwards the
//! resolved path; the policy and the engine then talk about the same directory. A path
//! that does not exist yet is resolved up to its longest existing ancestor (the engine
//! creates the rest for `Binds`), and refused if the missing part contains `..`, whose
//! meaning would depend on what gets created.
//!
//! This needs the gateway to see the host's filesystem as the engine does (the same mount
//! namespace); `[api] resolve_bind_sources = false` turns it off for other set-ups. Which
//! mounts of a service are binds is spelled out first, whatever that setting
//! ([`service_mount_types`]): the engine reads a service mount's type case-insensitively.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Why a bind source could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("bind source {path}: `..` after a part of the path that does not exist")]
    DotDotInMissingPart { path: String },
    #[error("bind source {path} resolves to {resolved}, which contains `:` and cannot be written in a bind")]
    ColonInResolved { path: String, resolved: String },
    #[error("bind source {path} is not valid UTF-8 once resolved")]
    NotUtf8 { path: String },
}

/// The mount types of a service spec as the engine reads them, written out in place.
///
/// Unlike container mounts (matched exactly by dockerd), a service mount's `Type` is looked up
/// upper-cased in swarmkit's enum, whose zero value is `BIND`: `"BIND"`, `"Bind"`, `""`,
/// `null` and a missing `Type` all make a bind mount, `"VOLUME"` a volume mount. Policies
/// (and [`resolve`]) read `"bind"` and `"volume"`, so every type is written in the lowercase
/// spelling the engine shows back before anyone judges the body (one the engine does not know
/// stays unknown, and refused by it).
pub fn service_mount_types(endpoint: &str, body: &mut Value) {
    if !matches!(endpoint, "service.create" | "service.update") {
        return;
    }
    let Some(mounts) = body
        .pointer_mut("/TaskTemplate/ContainerSpec/Mounts")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for m in mounts.iter_mut().filter_map(Value::as_object_mut) {
        let kind = match m.get("Type") {
            None | Some(Value::Null) => "bind".to_owned(),
            Some(Value::String(t)) if t.is_empty() => "bind".to_owned(),
            Some(Value::String(t)) => t.to_ascii_lowercase(),
            // Not a string: the engine refuses the body.
            Some(_) => continue,
        };
        m.insert("Type".to_owned(), Value::String(kind));
    }
}

/// Resolves the host paths of binds in the (canonical) body of `endpoint`, in place.
pub fn resolve(endpoint: &str, body: &mut Value) -> Result<(), BindError> {
    match endpoint {
        "container.create" => {
            // `get_mut`, not indexing: indexing would add a missing key (or panic on a
            // body that is not an object) and change what is forwarded.
            let Some(host_config) = body.get_mut("HostConfig") else {
                return Ok(());
            };
            if let Some(binds) = host_config.get_mut("Binds").and_then(Value::as_array_mut) {
                for bind in binds {
                    resolve_bind_string(bind)?;
                }
            }
            resolve_mounts(host_config.get_mut("Mounts"))
        }
        "service.create" | "service.update" => {
            let spec = body
                .get_mut("TaskTemplate")
                .and_then(|t| t.get_mut("ContainerSpec"));
            resolve_mounts(spec.and_then(|s| s.get_mut("Mounts")))
        }
        // The `local` driver mounts `device` with `type`/`o`; with `o=bind` it is a bind of
        // a host path, otherwise a device node, which is a host path too.
        "volume.create" => match body.get_mut("DriverOpts").and_then(|o| o.get_mut("device")) {
            Some(device) => resolve_value(device),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `"/src:/dst:ro"`: only an absolute source is a host path (else it names a volume).
fn resolve_bind_string(bind: &mut Value) -> Result<(), BindError> {
    let Some(s) = bind.as_str() else {
        return Ok(());
    };
    let (src, rest) = match s.split_once(':') {
        Some((src, rest)) => (src, Some(rest)),
        None => (s, None),
    };
    if !src.starts_with('/') {
        return Ok(());
    }
    let resolved = resolve_path(src)?;
    if resolved.contains(':') {
        return Err(BindError::ColonInResolved {
            path: src.to_owned(),
            resolved,
        });
    }
    *bind = Value::String(match rest {
        Some(rest) => format!("{resolved}:{rest}"),
        None => resolved,
    });
    Ok(())
}

fn resolve_mounts(mounts: Option<&mut Value>) -> Result<(), BindError> {
    let Some(mounts) = mounts.and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for m in mounts {
        if m.get("Type").and_then(Value::as_str) == Some("bind") {
            if let Some(source) = m.get_mut("Source") {
                resolve_value(source)?;
            }
        }
    }
    Ok(())
}

fn resolve_value(v: &mut Value) -> Result<(), BindError> {
    if let Some(s) = v.as_str().filter(|s| s.starts_with('/')) {
        *v = Value::String(resolve_path(s)?);
    }
    Ok(())
}

/// The path the kernel would reach: the longest existing ancestor canonicalized (symlinks
/// and `..` resolved), plus the part that does not exist yet.
pub fn resolve_path(path: &str) -> Result<String, BindError> {
    let p = Path::new(path);
    for ancestor in p.ancestors() {
        // A quick syscall per component; bind sources are few and short.
        let Ok(real) = std::fs::canonicalize(ancestor) else {
            continue;
        };
        let missing = p.strip_prefix(ancestor).unwrap_or(Path::new(""));
        let mut out = real;
        for c in missing.components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(BindError::DotDotInMissingPart {
                        path: path.to_owned(),
                    })
                }
            }
        }
        return path_string(out, path);
    }
    // Not even `/` exists: nothing to resolve against.
    Ok(path.to_owned())
}

fn path_string(p: PathBuf, original: &str) -> Result<String, BindError> {
    p.into_os_string()
        .into_string()
        .map_err(|_| BindError::NotUtf8 {
            path: original.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_dotdot_resolve_like_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::create_dir(d.join("real")).unwrap();
        symlink("/etc", d.join("etc-link")).unwrap();
        symlink(d.join("real"), d.join("real-link")).unwrap();
        let s = |p: PathBuf| p.to_str().unwrap().to_owned();

        assert_eq!(resolve_path(&s(d.join("etc-link"))).unwrap(), "/etc");
        // `..` after a link leaves the link's target, as the kernel does.
        assert_eq!(
            resolve_path(&s(d.join("etc-link/../root"))).unwrap(),
            "/root"
        );
        // Missing tail kept, through a link.
        assert_eq!(
            resolve_path(&s(d.join("etc-link/new/dir"))).unwrap(),
            "/etc/new/dir"
        );
        assert_eq!(
            resolve_path(&s(d.join("real-link/x"))).unwrap(),
            s(d.join("real/x"))
        );
        assert!(resolve_path(&s(d.join("missing/../../etc"))).is_err());
    }

    #[test]
    fn service_mount_types_are_spelled_as_the_engine_reads_them() {
        let mut service = json!({"TaskTemplate": {"ContainerSpec": {"Mounts": [
            {"Type": "BIND", "Source": "/"},
            {"Source": "/etc"},
            {"Type": null, "Source": "/var"},
            {"Type": "", "Source": "/srv"},
            {"Type": "Volume", "Source": "data"},
            {"Type": "tmpfs", "Target": "/t"},
            {"Type": "NonSense", "Source": "/x"},
            {"Type": 1, "Source": "/y"},
            "not a mount"
        ]}}});
        service_mount_types("service.update", &mut service);
        let types: Vec<Value> = service["TaskTemplate"]["ContainerSpec"]["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.get("Type").cloned().unwrap_or(Value::Null))
            .collect();
        assert_eq!(
            types,
            [
                json!("bind"),
                json!("bind"),
                json!("bind"),
                json!("bind"),
                json!("volume"),
                json!("tmpfs"),
                json!("nonsense"),
                json!(1),
                Value::Null
            ]
        );
        // Container mounts are matched exactly by dockerd: left as sent.
        let mut create = json!({"HostConfig": {"Mounts": [{"Type": "BIND", "Source": "/"}]}});
        let before = create.clone();
        service_mount_types("container.create", &mut create);
        assert_eq!(create, before);
        for mut other in [json!({"TaskTemplate": null}), json!([1]), json!("s")] {
            let before = other.clone();
            service_mount_types("service.create", &mut other);
            assert_eq!(other, before);
        }
    }

    #[test]
    fn every_bind_form_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("root-link");
        symlink("/", &link).unwrap();
        let l = link.to_str().unwrap();

        let mut create = json!({"HostConfig": {
            "Binds": [format!("{l}:/host:ro"), "named-volume:/data", format!("{l}/etc:/e")],
            "Mounts": [{"Type": "bind", "Source": l, "Target": "/m"},
                       {"Type": "volume", "Source": "v", "Target": "/v"}]
        }});
        resolve("container.create", &mut create).unwrap();
        assert_eq!(
            create["HostConfig"]["Binds"],
            json!(["/:/host:ro", "named-volume:/data", "/etc:/e"])
        );
        assert_eq!(create["HostConfig"]["Mounts"][0]["Source"], json!("/"));
        assert_eq!(create["HostConfig"]["Mounts"][1]["Source"], json!("v"));

        let mut service = json!({"TaskTemplate": {"ContainerSpec": {"Mounts": [
            {"Type": "bind", "Source": format!("{l}/var"), "Target": "/m"}]}}});
        resolve("service.create", &mut service).unwrap();
        assert_eq!(
            service["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"],
            json!("/var")
        );

        let mut volume =
            json!({"Driver": "local", "DriverOpts": {"type": "none", "o": "bind", "device": l}});
        resolve("volume.create", &mut volume).unwrap();
        assert_eq!(volume["DriverOpts"]["device"], json!("/"));

        // Bodies without binds, or with other types, pass untouched.
        for body in [
            json!({"HostConfig": {"Binds": null, "Mounts": "x"}}),
            json!({"Image": "x"}),
            json!([1]),
            json!("s"),
        ] {
            let mut other = body.clone();
            resolve("container.create", &mut other).unwrap();
            resolve("service.create", &mut other).unwrap();
            resolve("volume.create", &mut other).unwrap();
            assert_eq!(other, body);
        }
    }
}
