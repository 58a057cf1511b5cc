//! A Solve as plugins judge it: the [`SolveRequest`] read into the JSON body of a
//! `build.solve` request, with the fields a classic build's query carries (tags, labels,
//! network mode) read out the way BuildKit's Dockerfile frontend and exporters read them,
//! and the request rebuilt from what mutating plugins left.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::proto::{Exporter, SolveRequest};

/// Exporters that name images: `moby` (the engine's image store: `--load`, `docker
/// build`), `image` (the image store, or a registry with `push=true`), and the tarballs a
/// client receives (`docker`, `oci`), whose names a later `docker load` creates.
const IMAGE_EXPORTERS: [&str; 4] = ["moby", "image", "docker", "oci"];

/// The value a record shows instead of a build argument's.
pub const REDACTED: &str = "<redacted>";

/// The exporters the engine will run: BuildKit appends the deprecated single exporter
/// when `Exporters` is empty.
pub fn exporters(req: &SolveRequest) -> Vec<Exporter> {
    if req.exporters.is_empty() && !req.exporter_deprecated.is_empty() {
        return vec![Exporter {
            r#type: req.exporter_deprecated.clone(),
            attrs: req.exporter_attrs_deprecated.clone(),
        }];
    }
    req.exporters.clone()
}

/// The image names a build exports, in order (`name` attributes, comma-separated), and
/// whether any exporter pushes.
pub fn image_names(exporters: &[Exporter]) -> (Vec<String>, bool) {
    let mut names = Vec::new();
    let mut push = false;
    for e in exporters
        .iter()
        .filter(|e| IMAGE_EXPORTERS.contains(&e.r#type.as_str()))
    {
        for name in e.attrs.get("name").into_iter().flat_map(|n| n.split(',')) {
            let name = name.trim();
            if !name.is_empty() {
                names.push(name.to_owned());
            }
        }
        push |= e.attrs.get("push").is_some_and(|p| is_true(p));
    }
    (names, push)
}

/// Go's `strconv.ParseBool` truths, which BuildKit's exporters use.
fn is_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// The attributes under `prefix` (`label:`, `build-arg:`), without it.
fn prefixed(attrs: &BTreeMap<String, String>, prefix: &str) -> Map<String, Value> {
    attrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), Value::from(v.as_str()))))
        .collect()
}

/// The `build.solve` body plugins judge (docs/builds.md describes each field).
pub fn view(req: &SolveRequest) -> Value {
    let exporters = exporters(req);
    let (tags, push) = image_names(&exporters);
    let attrs = &req.frontend_attrs;
    let network = attrs.get("force-network-mode").cloned().unwrap_or_default();
    json!({
        "Ref": req.r#ref,
        "Session": req.session,
        "Frontend": req.frontend,
        "FrontendAttrs": attrs,
        "Exporters": exporters
            .iter()
            .map(|e| json!({"Type": e.r#type, "Attrs": e.attrs}))
            .collect::<Vec<_>>(),
        "Entitlements": req.entitlements,
        "RawLLB": req.frontend.is_empty() && req.definition.is_some(),
        "FrontendInputs": req.frontend_inputs.keys().collect::<Vec<_>>(),
        "SourcePolicySession": req.source_policy_session,
        "Tags": tags,
        "Push": push,
        "Labels": prefixed(attrs, "label:"),
        "BuildArgs": prefixed(attrs, "build-arg:"),
        "NetworkMode": network,
        "AddHosts": attrs.get("add-hosts").cloned().unwrap_or_default(),
    })
}

/// Why a mutating plugin's changes cannot make a Solve.
#[derive(Debug, thiserror::Error)]
#[error("a plugin left the build.solve body unusable: {0}")]
pub struct Unusable(pub String);

/// Takes what mutating plugins may change (`FrontendAttrs`, `Exporters`, `Entitlements`)
/// back into the request; derived fields (`Tags`, `Labels`, ...) are read again from them.
pub fn apply(req: &mut SolveRequest, body: &Value) -> Result<(), Unusable> {
    let strings = |v: Option<&Value>, what: &str| -> Result<BTreeMap<String, String>, Unusable> {
        serde_json::from_value(v.cloned().unwrap_or(Value::Null))
            .map_err(|e| Unusable(format!("{what}: {e}")))
    };
    req.frontend_attrs = strings(body.get("FrontendAttrs"), "FrontendAttrs")?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Exp {
        r#type: String,
        #[serde(default)]
        attrs: BTreeMap<String, String>,
    }
    let exporters: Vec<Exp> =
        serde_json::from_value(body.get("Exporters").cloned().unwrap_or(Value::Null))
            .map_err(|e| Unusable(format!("Exporters: {e}")))?;
    let mut exporters: Vec<Exporter> = exporters
        .into_iter()
        .map(|e| Exporter {
            r#type: e.r#type,
            attrs: e.attrs,
        })
        .collect();
    // An engine older than BuildKit 0.13 (dockerd 20.10) reads only the deprecated single
    // exporter, a newer one the list (clients send both, the first of the list again as the
    // pair): the judged exporters go back in the forms the client used, the pair always one
    // of the judged list, so no engine can act on an exporter that was not judged.
    let had_pair = !req.exporter_deprecated.is_empty();
    if req.exporters.is_empty() && had_pair {
        if exporters.len() > 1 {
            return Err(Unusable(
                "Exporters: this request names a single exporter (ExporterDeprecated)".into(),
            ));
        }
        let e = exporters.pop().unwrap_or_else(|| Exporter {
            r#type: String::new(),
            attrs: BTreeMap::new(),
        });
        req.exporter_deprecated = e.r#type;
        req.exporter_attrs_deprecated = e.attrs;
    } else {
        req.exporters = exporters;
        match req.exporters.first().filter(|_| had_pair) {
            Some(first) => {
                req.exporter_deprecated = first.r#type.clone();
                req.exporter_attrs_deprecated = first.attrs.clone();
            }
            None => {
                req.exporter_deprecated.clear();
                req.exporter_attrs_deprecated.clear();
            }
        }
    }
    req.entitlements =
        serde_json::from_value(body.get("Entitlements").cloned().unwrap_or(Value::Null))
            .map_err(|e| Unusable(format!("Entitlements: {e}")))?;
    Ok(())
}

/// The judged body as the audit record keeps it: build argument values removed (they are
/// how secrets reach builds that do not use `--secret`).
pub fn recorded(view: &Value) -> Value {
    let mut v = view.clone();
    if let Some(args) = v.get_mut("BuildArgs").and_then(Value::as_object_mut) {
        for value in args.values_mut() {
            *value = Value::from(REDACTED);
        }
    }
    if let Some(attrs) = v.get_mut("FrontendAttrs").and_then(Value::as_object_mut) {
        for (k, value) in attrs.iter_mut() {
            if k.starts_with("build-arg:") {
                *value = Value::from(REDACTED);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SolveRequest {
        SolveRequest {
            r#ref: "r".into(),
            session: "s".into(),
            frontend: "dockerfile.v0".into(),
            frontend_attrs: [
                ("label:team", "a"),
                ("build-arg:TOKEN", "hunter2"),
                ("force-network-mode", "host"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            exporters: vec![Exporter {
                r#type: "moby".into(),
                attrs: [
                    ("name".into(), "app:1, app:2".into()),
                    ("push".into(), "true".into()),
                ]
                .into(),
            }],
            entitlements: vec!["network.host".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_view_reads_what_the_engine_will_do() {
        let v = view(&request());
        assert_eq!(v["Tags"], json!(["app:1", "app:2"]));
        assert_eq!(v["Push"], true);
        assert_eq!(v["Labels"], json!({"team": "a"}));
        assert_eq!(v["BuildArgs"], json!({"TOKEN": "hunter2"}));
        assert_eq!(v["NetworkMode"], "host");
        assert_eq!(v["RawLLB"], false);
        assert_eq!(v["Entitlements"], json!(["network.host"]));
    }

    #[test]
    fn the_deprecated_exporter_counts_when_alone() {
        let req = SolveRequest {
            exporter_deprecated: "image".into(),
            exporter_attrs_deprecated: [("name".into(), "x:1".into())].into(),
            definition: Some(bytes::Bytes::from_static(b"\x0a\x00")),
            ..Default::default()
        };
        let v = view(&req);
        assert_eq!(v["Tags"], json!(["x:1"]));
        assert_eq!(v["RawLLB"], true);
        // A local or tar export names no image.
        let (names, _) = image_names(&[Exporter {
            r#type: "local".into(),
            attrs: [("name".into(), "x:1".into())].into(),
        }]);
        assert!(names.is_empty());
    }

    #[test]
    fn a_patched_body_becomes_the_request() {
        let mut req = request();
        let mut v = view(&req);
        v["FrontendAttrs"]["label:io.portcullis.owner"] = json!("alice");
        v["Exporters"][0]["Attrs"]["name"] = json!("other:1");
        apply(&mut req, &v).unwrap();
        assert_eq!(req.frontend_attrs["label:io.portcullis.owner"], "alice");
        assert_eq!(view(&req)["Tags"], json!(["other:1"]));
        v["Exporters"] = json!("nope");
        assert!(apply(&mut req, &v).is_err());
    }

    #[test]
    fn the_exporter_goes_back_in_the_form_the_engine_reads() {
        // Only the deprecated pair (an engine before BuildKit 0.13 reads nothing else).
        let mut old = SolveRequest {
            exporter_deprecated: "moby".into(),
            exporter_attrs_deprecated: [("name".into(), "a:1".into())].into(),
            ..Default::default()
        };
        let v = view(&old);
        apply(&mut old, &v).unwrap();
        assert!(old.exporters.is_empty());
        assert_eq!(old.exporter_attrs_deprecated["name"], "a:1");
        // Both: the list is what was judged, and the pair becomes its first entry, whatever
        // the client put there.
        let mut both = request();
        both.exporter_deprecated = "image".into();
        both.exporter_attrs_deprecated = [("name".into(), "unjudged:1".into())].into();
        let v = view(&both);
        apply(&mut both, &v).unwrap();
        assert_eq!(both.exporters.len(), 1);
        assert_eq!(both.exporter_deprecated, "moby");
        assert_eq!(both.exporter_attrs_deprecated, both.exporters[0].attrs);
        // The list alone stays alone.
        let mut list = request();
        let v = view(&list);
        apply(&mut list, &v).unwrap();
        assert!(list.exporter_deprecated.is_empty());
    }

    #[test]
    fn build_arguments_stay_out_of_the_record() {
        let r = recorded(&view(&request()));
        assert_eq!(r["BuildArgs"]["TOKEN"], REDACTED);
        assert_eq!(r["FrontendAttrs"]["build-arg:TOKEN"], REDACTED);
        assert!(!r.to_string().contains("hunter2"));
    }
}
