//! Image tags a request creates, moves, pushes or removes, and who owns their repositories:
//! handed to plugins as `tag` entries of `request.related`, and claimed for the caller just
//! before the request that creates a new repository is forwarded (see [`crate::owners`]).
//!
//! # Reading a reference as dockerd does
//!
//! `docker tag x alice-app`, `docker tag x docker.io/library/alice-app:latest` and `docker
//! build -t alice-app:latest` all name the same tag. dockerd reads each with the
//! `distribution/reference` rules (`ParseNormalizedNamed`, then `TagNameOnly`): a first
//! path component with a `.` or `:`, or `localhost`, or an uppercase letter is a registry,
//! anything else is on `docker.io`, a single-component name there is under `library/`, and a
//! name without tag or digest is `:latest`. [`ImageRef`] applies the same rules and gives the
//! engine's short form (`RepoTags`' `busybox:latest`), so a policy never judges one spelling
//! while the engine acts on another. A reference it cannot read is refused: dockerd refuses
//! it too (`invalid reference format`), and a reader more lenient than the engine's would be
//! a way around the record.

use http::StatusCode;
use serde_json::Value;

use super::spool::LoadedTag;
use super::target::{self, TargetError};
use crate::error::{DockerError, IntoDockerError};
use crate::model;
use crate::owners::{Owners, OwnersError};
use crate::route::Route;
use crate::upstream::Upstream;

/// Why a request's tags could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    /// A reference dockerd would not accept either.
    #[error("invalid reference format: {field} = {reference:?}: {reason}")]
    BadReference {
        field: String,
        reference: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Owners(#[from] OwnersError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl IntoDockerError for TagError {
    fn to_docker_error(&self) -> DockerError {
        match self {
            TagError::BadReference { .. } => {
                DockerError::new(StatusCode::BAD_REQUEST, format!("portcullis: {self}"))
            }
            TagError::Owners(e) => e.to_docker_error(),
            TagError::Target(e) => e.to_docker_error(),
        }
    }
}

/// An image reference, read the way dockerd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository in the engine's short form: `busybox`, `alice/app`, `localhost:5000/x`.
    pub repository: String,
    /// The tag, if the reference has one.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if the reference has one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference` (`ParseNormalizedNamed`).
    pub fn parse(reference: &str) -> Result<Self, &'static str> {
        if reference.is_empty() || reference.len() > 255 + 1 + 128 + 1 + 256 {
            return Err("empty or too long");
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                valid_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            valid_tag(tag)?;
        }
        if name.len() > 255 {
            return Err("repository name longer than 255 characters");
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (Some(first), path)
            }
            _ => (None, name),
        };
        if let Some(d) = domain {
            valid_domain(d)?;
        }
        for component in path.split('/') {
            valid_component(component)?;
        }
        let repository = match domain {
            None | Some("docker.io") | Some("index.docker.io") => path
                .strip_prefix("library/")
                .filter(|p| !p.contains('/'))
                .unwrap_or(path)
                .to_owned(),
            Some(d) => format!("{d}/{path}"),
        };
        Ok(ImageRef {
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `repository` with `tag` (the query parameter some endpoints take beside it) replacing
    /// its own tag, as `reference.WithTag(reference.TrimNamed(...))` does.
    fn with_tag(mut self, tag: &str) -> Result<Self, &'static str> {
        if !tag.is_empty() {
            valid_tag(tag)?;
            self.tag = Some(tag.to_owned());
            self.digest = None;
        }
        Ok(self)
    }

    /// The engine's short form of the reference, `:latest` added to a bare name
    /// (`TagNameOnly`): `busybox:latest`, `app@sha256:...`.
    pub fn name(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("{}@{d}", self.repository),
            (Some(t), None) => format!("{}:{t}", self.repository),
            (None, None) => format!("{}:latest", self.repository),
        }
    }
}

fn valid_tag(tag: &str) -> Result<(), &'static str> {
    let ok = tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ok.then_some(()).ok_or("bad tag")
}

fn valid_digest(digest: &str) -> Result<(), &'static str> {
    let (algorithm, hex) = digest.split_once(':').ok_or("bad digest")?;
    let ok = !algorithm.is_empty()
        && algorithm.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-')
        })
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit());
    ok.then_some(()).ok_or("bad digest")
}

fn valid_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = (host.starts_with('[') && host.ends_with(']') && host.len() > 2)
        || host.split('.').all(label_ok);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    (host_ok && port_ok)
        .then_some(())
        .ok_or("bad registry host")
}

/// A path component: lowercase alphanumeric runs joined by `.`, `_`, `__` or any number of
/// `-` (distribution's `pathComponent`).
fn valid_component(component: &str) -> Result<(), &'static str> {
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut separator = String::new();
    let mut seen_alnum = false;
    for c in component.chars() {
        if alnum(c) {
            if !(separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.chars().all(|s| s == '-'))
            {
                return Err("bad separator in the repository name");
            }
            if !separator.is_empty() && !seen_alnum {
                return Err("bad repository name");
            }
            separator.clear();
            seen_alnum = true;
        } else if matches!(c, '.' | '_' | '-') {
            if !seen_alnum {
                return Err("bad repository name");
            }
            separator.push(c);
        } else {
            return Err("bad character in the repository name");
        }
    }
    (seen_alnum && separator.is_empty())
        .then_some(())
        .ok_or("bad repository name")
}

/// A tag the request names: where, and the reference read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mention {
    field: String,
    reference: ImageRef,
    /// Every tag of the repository (a pull or push without a tag), not one.
    whole_repository: bool,
    /// The image the request will point the tag at, when known before forwarding (the
    /// source of a `docker tag`, the config of a loaded image).
    image: Option<String>,
}

fn first<'a>(query: &'a [(String, String)], key: &str) -> &'a str {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The tags the request creates, moves or pushes, from its path and query, or for a load
/// from the `archive` (removals are found from the image, see [`removed`]).
fn mentions(
    route: &Route,
    query: &[(String, String)],
    archive: &[LoadedTag],
    source: Option<&str>,
) -> Result<Vec<Mention>, TagError> {
    let parse = |field: &str, reference: &str| {
        ImageRef::parse(reference).map_err(|reason| TagError::BadReference {
            field: field.to_owned(),
            reference: reference.to_owned(),
            reason,
        })
    };
    let with_tag = |field: &str, r: ImageRef, tag: &str| {
        r.with_tag(tag).map_err(|reason| TagError::BadReference {
            field: field.to_owned(),
            reference: tag.to_owned(),
            reason,
        })
    };
    let one = |field: &str, reference| Mention {
        field: field.to_owned(),
        reference,
        whole_repository: false,
        image: None,
    };
    let mut out = Vec::new();
    match route.endpoint.name {
        "image.tag" | "image.commit" => {
            let repo = first(query, "repo");
            if !repo.is_empty() {
                let r = with_tag("tag", parse("repo", repo)?, first(query, "tag"))?;
                let image = (route.endpoint.name == "image.tag")
                    .then(|| source.map(str::to_owned))
                    .flatten();
                out.push(Mention {
                    image,
                    ..one("repo", r)
                });
            }
        }
        "image.build" => {
            for (i, (_, t)) in query.iter().filter(|(k, _)| k == "t").enumerate() {
                let field = format!("t[{i}]");
                out.push(one(&field, parse(&field, t)?));
            }
        }
        "image.create" => {
            let (from_image, repo) = (first(query, "fromImage"), first(query, "repo"));
            let tag = first(query, "tag");
            if !from_image.is_empty() {
                let r = with_tag("tag", parse("fromImage", from_image)?, tag)?;
                let whole = r.tag.is_none() && r.digest.is_none();
                out.push(Mention {
                    whole_repository: whole,
                    ..one("fromImage", r)
                });
            } else if !repo.is_empty() {
                // `docker import`: the new image gets `repo[:tag]`.
                let r = with_tag("tag", parse("repo", repo)?, tag)?;
                out.push(one("repo", r));
            }
        }
        "image.load" => {
            for t in archive {
                out.push(Mention {
                    image: t.image.clone(),
                    ..one(&t.field, parse(&t.field, &t.reference)?)
                });
            }
        }
        "image.push" => {
            if let Some(name) = route.object_id.as_deref() {
                let r = with_tag("tag", parse("path", name)?, first(query, "tag"))?;
                let whole = r.tag.is_none() && r.digest.is_none();
                out.push(Mention {
                    whole_repository: whole,
                    ..one("path", r)
                });
            }
        }
        _ => {}
    }
    Ok(out)
}

/// The references `DELETE /images/{name}` removes, from the engine's inspect document of the
/// image: a name that is a prefix of the image's id removes the image and so every tag and
/// digest it has (dockerd's `isImageIDPrefix`); any other name removes that one reference.
fn removed(name: &str, image: &Value) -> Result<Vec<Mention>, TagError> {
    let id = image.get("Id").and_then(Value::as_str).unwrap_or_default();
    let by_id = !name.is_empty()
        && (id.starts_with(name) || id.trim_start_matches("sha256:").starts_with(name));
    let one = |field: String, reference| Mention {
        field,
        reference,
        whole_repository: false,
        image: None,
    };
    if !by_id {
        let r = ImageRef::parse(name).map_err(|reason| TagError::BadReference {
            field: "path".into(),
            reference: name.to_owned(),
            reason,
        })?;
        return Ok(vec![one("path".into(), r)]);
    }
    let mut out = Vec::new();
    for list in ["RepoTags", "RepoDigests"] {
        let names = image.get(list).and_then(Value::as_array);
        for (i, n) in names.into_iter().flatten().enumerate() {
            // The engine's own names: read as it wrote them; one it cannot have written is
            // left out rather than judged under another spelling.
            if let Some(r) = n.as_str().and_then(|n| ImageRef::parse(n).ok()) {
                out.push(one(format!("{list}[{i}]"), r));
            }
        }
    }
    Ok(out)
}

/// The tags the request names, each with the image it names now and its repository's owner,
/// as `tag` references for `request.related`. `archive`: the tags a `docker load` archive
/// names (see `spool`); `source`: the image a `docker tag` names. A tag the request leaves
/// on the image it names already is not moved, and not listed: re-loading or re-tagging a
/// shared image changes nothing.
pub async fn resolve(
    upstream: &Upstream,
    owners: &Owners,
    route: &Route,
    query: &[(String, String)],
    archive: &[LoadedTag],
    source: Option<&str>,
) -> Result<Vec<model::Reference>, TagError> {
    // A removal names tags of the image it removes: that image's inspect document says what
    // each of them names. Other requests ask the engine about each tag's repository.
    let (found, removing) = if route.endpoint.name == "image.delete" {
        let Some(name) = route.object_id.as_deref() else {
            return Ok(Vec::new());
        };
        match target::lookup_image(upstream, route, name).await? {
            Some(image) => (removed(name, &image)?, Some(image)),
            // The engine answers 404 itself: nothing is removed.
            None => return Ok(Vec::new()),
        }
    } else {
        (mentions(route, query, archive, source)?, None)
    };
    if found.len() > target::MAX_REFERENCES {
        return Err(TargetError::TooManyReferences {
            count: found.len(),
            limit: target::MAX_REFERENCES,
        }
        .into());
    }
    let mut out = Vec::with_capacity(found.len());
    for m in found {
        let repository = &m.reference.repository;
        let owner = owners.owner(repository)?;
        let name = if m.whole_repository {
            repository.clone()
        } else {
            m.reference.name()
        };
        let (exists, image) = match &removing {
            Some(image) => (true, Some(image.clone())),
            None => {
                let images = target::repository_images(upstream, route, repository).await?;
                // Only images with a name in the repository, each name read as the engine's
                // short form: Podman writes names in full (`docker.io/library/app:1`), and
                // its `reference` filter also matches repositories that merely end the same.
                let in_repository: Vec<(&Value, Vec<ImageRef>)> = images
                    .iter()
                    .map(|i| (i, engine_names(i)))
                    .filter(|(_, names)| names.iter().any(|n| &n.repository == repository))
                    .collect();
                let image = in_repository
                    .iter()
                    .find(|(_, names)| names.iter().any(|n| n.name() == name))
                    .map(|(i, _)| (*i).clone());
                (!in_repository.is_empty(), image)
            }
        };
        let described = image.as_ref().map(target::describe_image);
        let unmoved = m.image.is_some() && described.as_ref().map(|t| &t.id) == m.image.as_ref();
        if unmoved {
            continue;
        }
        let object = (exists || owner.is_some()).then(|| model::Target {
            kind: "tag".into(),
            id: described.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
            name: Some(name.clone()),
            labels: described.map(|t| t.labels).unwrap_or_default(),
            owner,
        });
        out.push(model::Reference {
            field: m.field,
            kind: "tag".into(),
            name,
            object,
        });
    }
    Ok(out)
}

/// The names an image list entry or inspect document gives the image (`RepoTags`,
/// `RepoDigests`), read as references; one the engine cannot have written (`<none>:<none>`)
/// is left out.
fn engine_names(image: &Value) -> Vec<ImageRef> {
    ["RepoTags", "RepoDigests"]
        .iter()
        .filter_map(|list| image.get(list).and_then(Value::as_array))
        .flatten()
        .filter_map(|n| n.as_str().and_then(|n| ImageRef::parse(n).ok()))
        .collect()
}

/// The endpoints that make tags (a push or removal of a name nobody has claims nothing).
const CREATES_TAGS: [&str; 6] = [
    "image.tag",
    "image.build",
    "build.solve",
    "image.commit",
    "image.create",
    "image.load",
];

/// Claims, for `user`, the repository of every tag the plugins allowed `endpoint` to create
/// as a new name (a `tag` reference without object). Fails when another request claimed one
/// in between: the plugins judged a name that is no longer free.
pub async fn claim(
    owners: &Owners,
    endpoint: &str,
    related: &[model::Reference],
    user: &str,
) -> Result<(), TagError> {
    if !CREATES_TAGS.contains(&endpoint) {
        return Ok(());
    }
    for r in related
        .iter()
        .filter(|r| r.kind == "tag" && r.object.is_none())
    {
        let repository = match ImageRef::parse(&r.name) {
            Ok(image) => image.repository,
            // A whole repository's name has no tag, and parses too; anything else was
            // written by `resolve`.
            Err(_) => continue,
        };
        owners.claim(&repository, user).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use serde_json::json;

    fn short(reference: &str) -> Result<String, &'static str> {
        ImageRef::parse(reference).map(|r| r.name())
    }

    #[test]
    fn references_read_as_dockerd_reads_them() {
        for (given, engine) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("library/busybox", "busybox:latest"),
            ("docker.io/library/busybox:latest", "busybox:latest"),
            ("index.docker.io/library/busybox", "busybox:latest"),
            ("docker.io/alice/app:v1", "alice/app:v1"),
            ("docker.io/library/team/app", "library/team/app:latest"),
            ("alice-app", "alice-app:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/team/app:1.0", "localhost:5000/team/app:1.0"),
            (
                "registry.example.com/app",
                "registry.example.com/app:latest",
            ),
            ("Registry/app", "Registry/app:latest"),
            ("a__b/c---d.e_f", "a__b/c---d.e_f:latest"),
            ("app:_x.Y-1", "app:_x.Y-1"),
        ] {
            assert_eq!(short(given).as_deref(), Ok(engine), "{given}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            short(&format!("docker.io/library/app@{digest}")),
            Ok(format!("app@{digest}"))
        );
        for bad in [
            "",
            "Busybox",
            "team/App",
            "app:",
            "app:-x",
            "app:a/b",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "a._b",
            "a//b",
            // A first component with a dot is a registry host, and hosts have no `_`.
            "a__b.c/d",
            "app@sha256:12",
            "app@",
            "a b",
            "app:x:y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ImageRef::parse(&"a".repeat(256)).is_err());
    }

    fn route(method: Method, path: &str) -> Route {
        crate::route::classify(&method, path).unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(route: &Route, query: &[(String, String)]) -> Vec<(String, String, bool)> {
        mentions(route, query, &[], None)
            .unwrap()
            .into_iter()
            .map(|m| (m.field, m.reference.name(), m.whole_repository))
            .collect()
    }

    #[test]
    fn the_tags_each_endpoint_creates_or_moves() {
        let own = |f: &str, n: &str| (f.to_owned(), n.to_owned(), false);
        let tag = route(Method::POST, "/images/src/tag");
        assert_eq!(
            names(
                &tag,
                &q(&[("repo", "docker.io/library/alice-app"), ("tag", "v1")])
            ),
            [own("repo", "alice-app:v1")]
        );
        assert_eq!(
            names(&tag, &q(&[("repo", "alice-app:v2")])),
            [own("repo", "alice-app:v2")]
        );
        assert_eq!(
            names(&tag, &q(&[("repo", "alice-app")])),
            [own("repo", "alice-app:latest")]
        );
        let build = route(Method::POST, "/v1.41/build");
        assert_eq!(
            names(&build, &q(&[("t", "a"), ("q", "1"), ("t", "b:2")])),
            [own("t[0]", "a:latest"), own("t[1]", "b:2")]
        );
        assert!(names(&build, &q(&[])).is_empty());
        let commit = route(Method::POST, "/commit");
        assert_eq!(
            names(
                &commit,
                &q(&[("container", "c"), ("repo", "snap"), ("tag", "")])
            ),
            [own("repo", "snap:latest")]
        );
        assert!(names(&commit, &q(&[("container", "c")])).is_empty());
        let create = route(Method::POST, "/images/create");
        assert_eq!(
            names(&create, &q(&[("fromImage", "busybox"), ("tag", "latest")])),
            [own("fromImage", "busybox:latest")]
        );
        // `docker pull -a`: every tag of the repository.
        assert_eq!(
            names(&create, &q(&[("fromImage", "busybox")])),
            [("fromImage".to_owned(), "busybox:latest".to_owned(), true)]
        );
        assert_eq!(
            names(
                &create,
                &q(&[("fromSrc", "-"), ("repo", "imported"), ("tag", "1")])
            ),
            [own("repo", "imported:1")]
        );
        assert!(names(&create, &q(&[("fromSrc", "-")])).is_empty());
        let push = route(Method::POST, "/images/registry:5000/app/push");
        assert_eq!(
            names(&push, &q(&[("tag", "1")])),
            [own("path", "registry:5000/app:1")]
        );
        let load = route(Method::POST, "/images/load");
        let archive = [LoadedTag {
            field: "manifest.json[0].RepoTags[0]".into(),
            reference: "docker.io/library/x".into(),
            image: Some("sha256:1".into()),
        }];
        let loaded = &mentions(&load, &[], &archive, None).unwrap()[0];
        assert_eq!(loaded.reference.name(), "x:latest");
        assert_eq!(loaded.image.as_deref(), Some("sha256:1"));
        // A reference the engine would refuse is refused before anything is looked up.
        assert!(matches!(
            mentions(&tag, &q(&[("repo", "Alice-App")]), &[], None),
            Err(TagError::BadReference { .. })
        ));
        assert!(matches!(
            mentions(&tag, &q(&[("repo", "app"), ("tag", "-bad")]), &[], None),
            Err(TagError::BadReference { .. })
        ));
    }

    #[test]
    fn a_removal_by_id_removes_every_reference() {
        let id = format!("sha256:{}", "3f".repeat(32));
        let digest = format!("app@sha256:{}", "b".repeat(64));
        let image =
            json!({"Id": id, "RepoTags": ["app:1", "other:latest"], "RepoDigests": [digest]});
        let found = |name: &str| -> Vec<(String, String)> {
            removed(name, &image)
                .unwrap()
                .into_iter()
                .map(|m| (m.field, m.reference.name()))
                .collect()
        };
        let all = vec![
            ("RepoTags[0]".to_owned(), "app:1".to_owned()),
            ("RepoTags[1]".to_owned(), "other:latest".to_owned()),
            ("RepoDigests[0]".to_owned(), digest.clone()),
        ];
        assert_eq!(found("3f3f3f"), all);
        assert_eq!(found(&id), all);
        assert_eq!(
            found("docker.io/library/app:1"),
            [("path".to_owned(), "app:1".to_owned())]
        );
        assert_eq!(
            found("other"),
            [("path".to_owned(), "other:latest".to_owned())]
        );
    }

    #[test]
    fn engine_names_are_read_in_the_short_form_whichever_engine_wrote_them() {
        let digest = "b".repeat(64);
        // dockerd's spelling, then Podman's.
        for image in [
            json!({"RepoTags": ["app:1", "team/app:2", "<none>:<none>"],
                   "RepoDigests": [format!("app@sha256:{digest}")]}),
            json!({"RepoTags": ["docker.io/library/app:1", "docker.io/team/app:2"],
                   "RepoDigests": [format!("docker.io/library/app@sha256:{digest}")]}),
        ] {
            let names: Vec<(String, String)> = engine_names(&image)
                .into_iter()
                .map(|r| (r.repository.clone(), r.name()))
                .collect();
            assert_eq!(
                names,
                [
                    ("app".to_owned(), "app:1".to_owned()),
                    ("team/app".to_owned(), "team/app:2".to_owned()),
                    ("app".to_owned(), format!("app@sha256:{digest}")),
                ],
                "{image}"
            );
        }
        assert!(engine_names(&json!({"RepoTags": null})).is_empty());
    }
}
