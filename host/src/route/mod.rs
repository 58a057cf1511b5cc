//! The endpoint classifier: method + raw path → which Docker Engine API endpoint a request
//! is, on which object, at which API version.
//!
//! # Why it reads paths exactly like dockerd
//!
//! The gateway's rule is that what the engine acts on is exactly what the policy saw. If the
//! classifier and dockerd disagreed about a path, a request could be checked as one endpoint
//! and executed as another (`/containers/x/..%2F..%2Fimages/y/json`-style tricks). So this
//! module reproduces, step by step, what dockerd's HTTP stack does with the request target:
//!
//! 1. **Decode.** Go's `net/url` percent-decodes the path before routing, and gorilla/mux
//!    matches routes against that decoded `URL.Path`: `%2F` is a `/` like any other, `%2E%2E`
//!    is `..`. Invalid escapes are a `400` in Go; here they are [`RouteError::BadPath`]. We
//!    also reject, where Go would not, decoded control characters (NUL, newline, ...) and
//!    bytes that are not UTF-8: no Docker object name contains them, and they are a classic
//!    way to make two parsers disagree.
//! 2. **Clean.** gorilla/mux runs Go's `path.Clean` on the decoded path (collapse `//`,
//!    drop `.`, resolve `..` without ever going above `/`) but puts a trailing slash back if
//!    the path had one. dockerd answers a non-clean path with a redirect to the clean one;
//!    the gateway instead forwards the clean path, so the engine acts on what was checked.
//! 3. **Trailing slash.** Routes are matched literally, so `/containers/json/` is not
//!    `/containers/json`. A trailing slash (other than the path `/`) is refused as an unknown
//!    endpoint. (dockerd has one such route, `GET /networks/`, a duplicate of `/networks`,
//!    and its catch-all parameters would swallow the slash into a name that then fails to
//!    resolve; denying both loses nothing a client sends.)
//! 4. **Version.** dockerd registers every route twice: bare and under `/v{version:[0-9.]+}`.
//!    A first segment made of `v` and digits and dots is therefore a version; it must be
//!    `major.minor` (anything else, like `/v1.2.3`, is [`RouteError::BadVersion`]). Podman
//!    reads the prefix more loosely (`/v{version:[0-9][0-9A-Za-z.-]*}`, so `/v1.41-x/` is a
//!    version to it): a first segment that either engine takes for a version is one here,
//!    so no path is an unknown endpoint to the gateway and a Docker endpoint to Podman.
//! 5. **Podman's own API.** Podman serves its libpod API beside the Docker one, under
//!    `/libpod/` and under any version prefix (`/v4.3.1/libpod/containers/create`). Its
//!    bodies and semantics are not the Docker Engine API plugins are written for, so such a
//!    path is always [`RouteError::Libpod`], even where unknown endpoints are passed through.
//! 6. **Match** the rest against the table in dockerd's registration order, first match wins
//!    (the patterns are documented in `table.rs`). A `{name:.*}` parameter is greedy but the
//!    route's literal suffix must still match, like the Go regexp it stands for:
//!    `/images/a/b/json` is `image.inspect` of `a/b`. Methods compare exactly (`get` is not
//!    `GET`, and `HEAD` is not `GET`), as in gorilla/mux.
//!
//! [`Route::upstream_path`] then re-encodes the canonical path so that the engine, decoding
//! it the same way, gets back exactly [`Route::path`].

#[cfg(test)]
pub(crate) mod specs;
mod table;

use std::fmt::Write as _;

use http::Method;

use self::table::ROUTES;

/// An API version as `(major, minor)`.
type Version = (u16, u16);

/// Longest raw path accepted. Real Docker paths are a few hundred bytes at most (image
/// references are capped at 255 characters); the bound keeps matching cheap.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// How a request's body and response behave, so the proxy knows what to buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The engine reads no request body.
    None,
    /// The request body is a JSON document: buffered (within limits) so policies can read
    /// and patch it.
    Json,
    /// The request body is a tar or other binary upload (build context, image load, archive
    /// PUT, import, plugin create): streamed through, never buffered whole.
    Stream,
}

/// What an endpoint is and how it behaves on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable dotted name, first word the object kind: `container.create`, `exec.start`,
    /// `image.build`, `system.ping`, ...
    pub name: &'static str,
    /// The request body kind.
    pub body: BodyKind,
    /// The engine may hijack or upgrade the connection (attach, exec start, session, grpc).
    pub hijack: bool,
    /// The response is a long-lived or unbounded stream (logs, events, stats, attach, wait,
    /// pull/push progress, build, exports, ...), not a bounded document.
    pub streaming: bool,
}

/// A classified request: which endpoint, on which object, at which API version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The endpoint the engine will run.
    pub endpoint: Endpoint,
    /// The API version from the `/v1.41` prefix; `None` when the path had no prefix (the
    /// engine then uses its own default version).
    pub version: Option<(u16, u16)>,
    /// The canonical path without the version prefix, percent-decoded and cleaned, e.g.
    /// `/containers/abc/json`.
    pub path: String,
    /// The object the request acts on: the first path parameter (`abc`,
    /// `registry:5000/foo/bar:tag`), `None` for collection endpoints (list, create, prune,
    /// ...). For some endpoints the target is in the query instead (`/commit?container=`,
    /// `/images/create?fromImage=`, `/plugins/pull?remote=`).
    pub object_id: Option<String>,
    /// All named path parameters, in path order, named as in the Engine API spec (`id`,
    /// `name`, `checkpoint`).
    pub params: Vec<(&'static str, String)>,
}

/// Why a request path could not be classified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// No known endpoint has this method and path (dockerd would answer 404 or 405, or the
    /// endpoint is one the gateway deliberately does not know).
    #[error("unknown endpoint: {method} {path}")]
    UnknownEndpoint {
        /// The request method.
        method: Method,
        /// The canonical (decoded, cleaned) path, version prefix included.
        path: String,
    },
    /// The path cannot be read safely: not absolute, bad percent escape, control characters,
    /// not UTF-8, too long.
    #[error("invalid request path: {0}")]
    BadPath(String),
    /// The first segment looks like an API version (`v` + digits and dots) but is not
    /// `v<major>.<minor>`.
    #[error("invalid API version in path: {0:?}")]
    BadVersion(String),
    /// A path of Podman's own (libpod) API, with or without a version prefix: refused
    /// whatever the configuration, because plugins judge the Docker Engine API only.
    #[error("{0} is Podman's own API (libpod), which portcullis does not serve: portcullis serves only the Docker Engine API, so Podman clients must use Podman's Docker-compatible API (the docker CLI, compose or a Docker SDK with DOCKER_HOST set to the gateway); `podman --remote` and the libpod bindings are not supported")]
    Libpod(String),
}

/// Classifies a request by method and raw path (the URI path only, no query, still
/// percent-encoded, as received).
pub fn classify(method: &Method, raw_path: &str) -> Result<Route, RouteError> {
    let clean = canonicalize(raw_path)?;
    if is_libpod(&clean) {
        return Err(RouteError::Libpod(clean));
    }
    let (version, path) = split_version(&clean)?;
    let unknown = || RouteError::UnknownEndpoint {
        method: method.clone(),
        path: clean.clone(),
    };
    if path.len() > 1 && path.ends_with('/') {
        return Err(unknown());
    }
    for spec in ROUTES {
        if spec.method != *method {
            continue;
        }
        let mut found = Vec::new();
        if match_template(spec.template, path, &mut found) {
            let params: Vec<(&'static str, String)> = found
                .into_iter()
                .map(|(name, value)| (name, value.to_owned()))
                .collect();
            return Ok(Route {
                endpoint: spec.endpoint,
                version,
                path: path.to_owned(),
                object_id: params.first().map(|(_, value)| value.clone()),
                params,
            });
        }
    }
    Err(unknown())
}

/// The endpoint of a request no route matches, when `[api] pass_unknown_endpoints` lets it
/// through: its body is streamed as it comes (the gateway does not know its format, so
/// plugins never see it) and its answer is relayed as a stream.
pub const UNKNOWN: Endpoint = Endpoint {
    name: "unknown",
    body: BodyKind::Stream,
    hijack: false,
    streaming: true,
};

/// Like [`classify`], but a path no route matches becomes the [`UNKNOWN`] endpoint instead
/// of an error (the path is still cleaned and its version prefix read, as for any request).
pub fn classify_or_unknown(method: &Method, raw_path: &str) -> Result<Route, RouteError> {
    match classify(method, raw_path) {
        Err(RouteError::UnknownEndpoint { .. }) => {
            let clean = canonicalize(raw_path)?;
            let (version, path) = split_version(&clean)?;
            Ok(Route {
                endpoint: UNKNOWN,
                version,
                path: path.to_owned(),
                object_id: None,
                params: Vec::new(),
            })
        }
        other => other,
    }
}

/// Every endpoint the classifier knows, once per route (an endpoint served on two methods,
/// like `system.ping`, appears twice). For validating endpoint names in configuration.
pub fn endpoints() -> impl Iterator<Item = &'static Endpoint> {
    ROUTES.iter().map(|spec| &spec.endpoint)
}

impl Route {
    /// The path to forward upstream: `/v{major}.{minor}` (when the request had a version)
    /// followed by the canonical path, percent-encoded so that the engine decodes it to
    /// exactly [`Route::path`]. Characters that are not plain path characters (`%`, space,
    /// `?`, `#`, non-ASCII, ...) are escaped; `/` stays a separator, which is what it is to
    /// dockerd even when the client sent `%2F`.
    pub fn upstream_path(&self) -> String {
        let mut out = String::with_capacity(self.path.len() + 8);
        if let Some((major, minor)) = self.version {
            // Writing to a String cannot fail.
            let _ = write!(out, "/v{major}.{minor}");
        }
        for byte in self.path.bytes() {
            if is_path_char(byte) {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "%{byte:02X}");
            }
        }
        out
    }
}

/// RFC 3986 `pchar` plus `/`: characters that mean themselves in a path to every parser,
/// Go's and the `http` crate's alike.
fn is_path_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte)
}

/// Decodes and cleans a raw path the way Go's `net/url` and gorilla/mux's `cleanPath` do.
fn canonicalize(raw: &str) -> Result<String, RouteError> {
    let bad = |reason: &str| Err(RouteError::BadPath(reason.to_owned()));
    if raw.len() > MAX_PATH_LEN {
        return Err(RouteError::BadPath(format!(
            "path longer than {MAX_PATH_LEN} bytes"
        )));
    }
    if !raw.starts_with('/') {
        return bad("path must start with '/'");
    }
    // Go refuses raw control bytes in a request target; `?` and `#` would end the path for
    // one parser and not another.
    if raw
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return bad("raw control character, space, '?' or '#' in path");
    }
    let decoded = percent_decode(raw.as_bytes())
        .ok_or_else(|| RouteError::BadPath("invalid percent escape".to_owned()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| RouteError::BadPath("path is not valid UTF-8 once decoded".to_owned()))?;
    if decoded.chars().any(char::is_control) {
        return bad("control character in decoded path");
    }
    Ok(clean_path(&decoded))
}

/// Percent-decodes like Go's `url.PathUnescape`: every `%` must start a two-digit hex escape;
/// `+` stays `+`.
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = hex_value(*raw.get(i + 1)?)?;
            let lo = hex_value(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// gorilla/mux's `cleanPath`: Go's `path.Clean` of an absolute path, keeping a trailing slash
/// the original had (except for the root itself).
fn clean_path(p: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(p.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    // The root itself, or the trailing slash gorilla/mux puts back.
    if out.is_empty() || p.ends_with('/') {
        out.push('/');
    }
    out
}

/// Whether a path segment is a version prefix to dockerd (`v` + `[0-9.]+`) or to Podman
/// (`v` + `[0-9][0-9A-Za-z.-]*`).
fn is_version_segment(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let docker = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let podman = rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    docker || podman
}

/// Whether a clean path is in Podman's libpod API: `/libpod/...`, bare or after a version
/// prefix as Podman reads one.
fn is_libpod(clean: &str) -> bool {
    let mut segments = clean.strip_prefix('/').unwrap_or(clean).split('/');
    let mut first = segments.next().unwrap_or_default();
    if is_version_segment(first) {
        first = segments.next().unwrap_or_default();
    }
    first == "libpod"
}

/// Splits a clean path into its `/v{major}.{minor}` prefix and the rest. A first segment
/// that dockerd's `/v{version:[0-9.]+}` or Podman's looser prefix matches is always a
/// version, valid or not.
fn split_version(clean: &str) -> Result<(Option<Version>, &str), RouteError> {
    let after_slash = clean.strip_prefix('/').unwrap_or(clean);
    let first = after_slash.split('/').next().unwrap_or_default();
    if !is_version_segment(first) {
        return Ok((None, clean));
    }
    let digits = &first[1..];
    let bad = || RouteError::BadVersion(first.to_owned());
    let (major, minor) = digits.split_once('.').ok_or_else(bad)?;
    let number = |s: &str| -> Result<u16, RouteError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let version = (number(major)?, number(minor)?);
    Ok((Some(version), &after_slash[first.len()..]))
}

/// Matches `path` against a dockerd route template (`/images/{name:.*}/json`), pushing the
/// parameters onto `params`. Semantics are those of the Go regexp gorilla/mux builds from the
/// template, anchored at both ends: `{p}` is `[^/]+`, `{p:.*}` is `.*`, `{p:.+}` is `.+`,
/// greedy, backtracking to let the rest of the template match.
fn match_template<'p>(
    template: &'static str,
    path: &'p str,
    params: &mut Vec<(&'static str, &'p str)>,
) -> bool {
    let Some(open) = template.find('{') else {
        return template == path;
    };
    let Some(path) = path.strip_prefix(&template[..open]) else {
        return false;
    };
    let Some(close) = template[open..].find('}').map(|i| open + i) else {
        return false;
    };
    let (name, pattern) = match template[open + 1..close].split_once(':') {
        Some((name, pattern)) => (name, Some(pattern)),
        None => (&template[open + 1..close], None),
    };
    let rest = &template[close + 1..];
    let (min, max) = match pattern {
        None => (1, path.find('/').unwrap_or(path.len())),
        Some(".*") => (0, path.len()),
        Some(".+") => (1, path.len()),
        Some(_) => return false,
    };
    // Longest first: Go's regexp prefers the greedy match.
    for len in (min..=max).rev() {
        if !path.is_char_boundary(len) {
            continue;
        }
        let (value, remainder) = path.split_at(len);
        params.push((name, value));
        if match_template(rest, remainder, params) {
            return true;
        }
        params.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::specs::{expected_name, load, SPECS};
    use super::*;
    use std::collections::HashSet;

    /// Routes dockerd serves that none of the specs lists.
    const NOT_IN_SPECS: [&str; 5] = [
        "container.checkpoint.list",
        "container.checkpoint.create",
        "container.checkpoint.delete",
        "build.cancel",
        "grpc",
    ];

    fn sample_value(spec_path: &str, param: &str) -> &'static str {
        match param {
            "id" => "abc123",
            "name" if spec_path.starts_with("/volumes/") => "my-volume",
            "name" => "registry:5000/team/app:1.0",
            other => panic!("unexpected path parameter {other} in {spec_path}"),
        }
    }

    /// Every (method, path, operationId) of one spec, with parameters substituted; also the
    /// substituted value of the path's parameter, if it has one.
    fn spec_operations(file: &str) -> Vec<(Method, String, String, Option<String>)> {
        let doc = load(file);
        let mut out = Vec::new();
        for (spec_path, methods) in doc["paths"].as_mapping().unwrap() {
            let spec_path = spec_path.as_str().unwrap();
            let mut concrete = String::new();
            let mut value = None;
            let mut rest = spec_path;
            while let Some(open) = rest.find('{') {
                let close = rest.find('}').unwrap();
                concrete.push_str(&rest[..open]);
                let sample = sample_value(spec_path, &rest[open + 1..close]);
                concrete.push_str(sample);
                assert!(value.is_none(), "{spec_path}: more than one parameter");
                value = Some(sample.to_owned());
                rest = &rest[close + 1..];
            }
            concrete.push_str(rest);
            for (method, operation) in methods.as_mapping().unwrap() {
                let method = method.as_str().unwrap();
                if method == "parameters" {
                    continue;
                }
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let op_id = operation["operationId"].as_str().unwrap().to_owned();
                out.push((method, concrete.clone(), op_id, value.clone()));
            }
        }
        assert!(out.len() > 90, "{file}: only {} operations", out.len());
        out
    }

    fn ok(method: Method, path: &str) -> Route {
        classify(&method, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn name(method: Method, path: &str) -> &'static str {
        ok(method, path).endpoint.name
    }

    #[test]
    fn unknown_paths_pass_as_the_unknown_endpoint_only_when_asked() {
        let r = classify_or_unknown(&Method::GET, "/v1.41//nope/./x").unwrap();
        assert_eq!(r.endpoint.name, "unknown");
        assert_eq!(r.version, Some((1, 41)));
        assert_eq!(r.path, "/nope/x");
        let known = classify_or_unknown(&Method::GET, "/v1.41/containers/json").unwrap();
        assert_eq!(known.endpoint.name, "container.list");
        assert!(classify_or_unknown(&Method::GET, "/v1.41/a%00b").is_err());
    }

    fn unknown(method: Method, path: &str) -> bool {
        matches!(
            classify(&method, path),
            Err(RouteError::UnknownEndpoint { .. })
        )
    }

    fn bad_path(path: &str) -> bool {
        matches!(classify(&Method::GET, path), Err(RouteError::BadPath(_)))
    }

    #[test]
    fn every_spec_operation_classifies_to_its_operation_id() {
        let mut seen = HashSet::new();
        for file in SPECS {
            for (method, path, op_id, value) in spec_operations(file) {
                let want = expected_name(&op_id);
                for (prefix, version) in [("", None), ("/v1.41", Some((1, 41)))] {
                    let raw = format!("{prefix}{path}");
                    let route = ok(method.clone(), &raw);
                    assert_eq!(
                        route.endpoint.name, want,
                        "{file}: {method} {raw} ({op_id})"
                    );
                    assert_eq!(route.version, version, "{method} {raw}");
                    assert_eq!(route.path, path, "{method} {raw}");
                    assert_eq!(route.object_id, value, "{method} {raw}");
                    assert_eq!(route.params.len(), usize::from(value.is_some()));
                }
                // The same request with every reserved character escaped lands the same way.
                let escaped = path.replace(':', "%3A").replace("app", "%61pp");
                assert_eq!(ok(method.clone(), &escaped).endpoint.name, want);
                seen.insert(want);
            }
        }
        // Every endpoint of the table comes from a spec or is a known extra.
        for endpoint in endpoints() {
            assert!(
                seen.contains(endpoint.name) || NOT_IN_SPECS.contains(&endpoint.name),
                "{} is in neither the specs nor NOT_IN_SPECS",
                endpoint.name
            );
        }
    }

    #[test]
    fn table_is_well_formed() {
        let mut pairs = HashSet::new();
        for spec in ROUTES {
            assert!(
                pairs.insert((spec.method.clone(), spec.template)),
                "duplicate route {} {}",
                spec.method,
                spec.template
            );
            assert!(spec.template.starts_with('/'), "{}", spec.template);
            // Every parameter pattern is one the matcher understands.
            let mut rest = spec.template;
            while let Some(open) = rest.find('{') {
                let close = rest.find('}').expect("unclosed parameter");
                let param = &rest[open + 1..close];
                let pattern = param.split_once(':').map(|(_, p)| p);
                assert!(matches!(pattern, None | Some(".*") | Some(".+")), "{param}");
                rest = &rest[close + 1..];
            }
            let n = spec.endpoint.name;
            assert!(!n.is_empty() && n.split('.').all(|w| !w.is_empty()), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'.'),
                "{n}"
            );
        }
    }

    #[test]
    fn body_and_stream_flags() {
        use BodyKind::*;
        let cases = [
            (Method::POST, "/containers/create", Json, false, false),
            (Method::POST, "/containers/x/exec", Json, false, false),
            (Method::POST, "/exec/x/start", Json, true, true),
            (Method::POST, "/containers/x/attach", None, true, true),
            (Method::GET, "/containers/x/attach/ws", None, true, true),
            (Method::POST, "/build", Stream, false, true),
            (Method::POST, "/images/load", Stream, false, true),
            (Method::POST, "/images/create", Stream, false, true),
            (Method::PUT, "/containers/x/archive", Stream, false, false),
            (Method::GET, "/containers/x/archive", None, false, true),
            (Method::POST, "/plugins/create", Stream, false, false),
            (Method::POST, "/plugins/pull", Json, false, true),
            (Method::POST, "/plugins/x/set", Json, false, false),
            (Method::GET, "/containers/x/logs", None, false, true),
            (Method::GET, "/events", None, false, true),
            (Method::POST, "/containers/x/wait", None, false, true),
            (Method::POST, "/session", None, true, true),
            (Method::POST, "/grpc", None, true, true),
            (Method::POST, "/services/create", Json, false, false),
            (Method::POST, "/networks/n/connect", Json, false, false),
            (Method::POST, "/swarm/init", Json, false, false),
            (Method::GET, "/containers/json", None, false, false),
        ];
        for (method, path, body, hijack, streaming) in cases {
            let e = ok(method.clone(), path).endpoint;
            assert_eq!(
                (e.body, e.hijack, e.streaming),
                (body, hijack, streaming),
                "{method} {path} ({})",
                e.name
            );
        }
    }

    /// (endpoint name, object id) of a request that must classify.
    fn target(method: Method, path: &str) -> (&'static str, Option<String>) {
        let route = ok(method, path);
        (route.endpoint.name, route.object_id)
    }

    fn on(name: &'static str, object: &str) -> (&'static str, Option<String>) {
        (name, Some(object.to_owned()))
    }

    #[test]
    fn greedy_names_and_literal_routes() {
        assert_eq!(name(Method::GET, "/images/json"), "image.list");
        assert_eq!(name(Method::GET, "/images/search"), "image.search");
        assert_eq!(name(Method::GET, "/images/get"), "image.get.all");
        let get = |path| target(Method::GET, path);
        assert_eq!(get("/images/a/b/json"), on("image.inspect", "a/b"));
        assert_eq!(get("/images/json/json"), on("image.inspect", "json"));
        // Greedy: the name runs up to the last "/json".
        assert_eq!(get("/images/a/json/json"), on("image.inspect", "a/json"));
        assert_eq!(get("/images/get/get"), on("image.get", "get"));
        assert_eq!(
            target(Method::DELETE, "/images/registry:5000/team/app@sha256:0123"),
            on("image.delete", "registry:5000/team/app@sha256:0123")
        );
        // dockerd's container parameters are `.*` too: a legacy link name spans segments.
        assert_eq!(
            get("/containers/web/db/json"),
            on("container.inspect", "web/db")
        );
        // The checkpoint route is registered first and keeps its DELETE...
        let r = ok(Method::DELETE, "/containers/c1/checkpoints/cp1");
        assert_eq!(r.endpoint.name, "container.checkpoint.delete");
        let params = vec![("id", "c1".to_owned()), ("checkpoint", "cp1".to_owned())];
        assert_eq!(r.params, params);
        assert_eq!(r.object_id.as_deref(), Some("c1"));
        // ...but its parameters are single segments, so this one is a container delete.
        assert_eq!(
            target(Method::DELETE, "/containers/a/b/checkpoints/cp1"),
            on("container.delete", "a/b/checkpoints/cp1")
        );
        // Networks: GET takes `.+`, so "create" is a network name on GET.
        assert_eq!(get("/networks/create"), on("network.inspect", "create"));
        assert_eq!(name(Method::POST, "/networks/create"), "network.create");
        assert_eq!(get("/networks/a/b"), on("network.inspect", "a/b"));
        // Swarm objects are single segments.
        assert!(unknown(Method::GET, "/services/a/b"));
        assert_eq!(get("/services/a/logs"), on("service.logs", "a"));
        assert_eq!(name(Method::HEAD, "/_ping"), "system.ping");
        assert_eq!(name(Method::GET, "/version"), "system.version");
        assert_eq!(name(Method::GET, "/v1.41/version"), "system.version");
        assert_eq!(name(Method::POST, "/build/cancel"), "build.cancel");
        assert_eq!(get("/containers/json"), ("container.list", None));
    }

    #[test]
    fn methods_compare_exactly() {
        assert!(unknown(Method::POST, "/_ping"));
        assert!(unknown(Method::HEAD, "/containers/json"));
        assert!(unknown(Method::from_bytes(b"get").unwrap(), "/_ping"));
        assert!(unknown(Method::OPTIONS, "/_ping"));
        assert!(unknown(Method::PATCH, "/containers/x/update"));
    }

    #[test]
    fn canonicalization_follows_go_and_gorilla() {
        let r = ok(Method::GET, "//containers//json");
        assert_eq!(
            (r.endpoint.name, r.path.as_str()),
            ("container.list", "/containers/json")
        );
        let r = ok(Method::GET, "/v1.41/containers/abc/../xyz/json");
        assert_eq!(r.endpoint.name, "container.inspect");
        assert_eq!(r.object_id.as_deref(), Some("xyz"));
        assert_eq!(r.version, Some((1, 41)));
        assert_eq!(r.path, "/containers/xyz/json");
        // %2F is a slash to dockerd: decoded before routing, then cleaned.
        assert_eq!(name(Method::GET, "/containers%2Fjson"), "container.list");
        assert_eq!(name(Method::GET, "/%2Fcontainers%2Fjson"), "container.list");
        assert_eq!(
            ok(Method::GET, "/v1.41%2Fcontainers%2Fjson").version,
            Some((1, 41))
        );
        let r = ok(Method::GET, "/images/registry%3A5000%2Fteam%2Fapp/json");
        assert_eq!(r.object_id.as_deref(), Some("registry:5000/team/app"));
        // Encoded dot segments are resolved too.
        let r = ok(Method::GET, "/containers/abc/%2E%2E/xyz/json");
        assert_eq!(r.object_id.as_deref(), Some("xyz"));
        let r = ok(Method::GET, "/containers/abc%2F..%2F..%2Fimages%2Fx/json");
        assert_eq!(
            (r.endpoint.name, r.object_id.as_deref()),
            ("image.inspect", Some("x"))
        );
        let r = ok(Method::GET, "/v1.41/../v1.41/_ping");
        assert_eq!((r.endpoint.name, r.version), ("system.ping", Some((1, 41))));
        assert_eq!(name(Method::GET, "/../../_ping"), "system.ping");
        assert_eq!(name(Method::GET, "/containers/json/."), "container.list");
        assert_eq!(
            ok(Method::GET, "/containers/json/.").path,
            "/containers/json"
        );
        // A trailing slash is significant to gorilla/mux.
        assert!(unknown(Method::GET, "/containers/json/"));
        assert!(unknown(Method::GET, "/containers/json/./"));
        assert!(unknown(Method::GET, "/containers/json%2F"));
        assert!(unknown(Method::DELETE, "/images/foo/"));
        assert!(unknown(Method::GET, "/networks/"));
        assert!(unknown(Method::GET, "/v1.41/"));
        assert!(unknown(Method::GET, "/v1.41"));
        assert!(unknown(Method::GET, "/"));
        assert!(unknown(Method::GET, "/v1.41/v1.41/_ping"));
        // `+` is not a space in a path.
        assert_eq!(
            ok(Method::DELETE, "/volumes/a+b").object_id.as_deref(),
            Some("a+b")
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(bad_path(""));
        assert!(bad_path("%2Fcontainers%2Fjson"));
        assert!(bad_path("containers/json"));
        assert!(bad_path("*"));
        assert!(bad_path("/containers/%zz/json"));
        assert!(bad_path("/containers/%4/json"));
        assert!(bad_path("/containers/abc%"));
        assert!(bad_path("/containers/abc%2"));
        assert!(bad_path("/containers/a%00b/json"));
        assert!(bad_path("/containers/a%0Ab/json"));
        assert!(bad_path("/containers/a%7Fb/json"));
        assert!(bad_path("/containers/a%C2%85b/json"));
        assert!(bad_path("/containers/a\0b/json"));
        assert!(bad_path("/containers/a b/json"));
        assert!(bad_path("/containers/json?all=1"));
        assert!(bad_path("/containers/a#b/json"));
        assert!(bad_path("/images/%FF/json"));
        assert!(bad_path(&format!(
            "/images/{}/json",
            "a".repeat(MAX_PATH_LEN)
        )));
    }

    #[test]
    fn versions() {
        assert_eq!(ok(Method::GET, "/v1.41/_ping").version, Some((1, 41)));
        assert_eq!(ok(Method::GET, "/v1.50/_ping").version, Some((1, 50)));
        assert_eq!(ok(Method::GET, "/v01.041/_ping").version, Some((1, 41)));
        assert_eq!(ok(Method::GET, "/_ping").version, None);
        for bad in [
            "/v1.2.3/_ping",
            "/v.1/_ping",
            "/v1/_ping",
            "/v1./_ping",
            "/v./_ping",
            "/v99999.1/_ping",
            "/v1..41/_ping",
            // Versions to Podman, which would serve the endpoint behind them.
            "/v1.41x/_ping",
            "/v1.41-rc1/containers/json",
            "/v4.3.1/containers/json",
        ] {
            assert_eq!(
                classify(&Method::GET, bad),
                Err(RouteError::BadVersion(
                    bad.split('/').nth(1).unwrap().to_owned()
                )),
                "{bad}"
            );
        }
        // A version to neither engine: not a version, just an unknown path.
        assert!(unknown(Method::GET, "/v/_ping"));
        assert!(unknown(Method::GET, "/vx1/_ping"));
        assert!(unknown(Method::GET, "/v-1/_ping"));
        assert!(unknown(Method::GET, "/vx/_ping"));
    }

    #[test]
    fn podman_libpod_paths_are_refused() {
        for (raw, clean) in [
            ("/libpod/_ping", "/libpod/_ping"),
            ("/libpod", "/libpod"),
            (
                "/v4.3.1/libpod/containers/json",
                "/v4.3.1/libpod/containers/json",
            ),
            ("/v4.0.0-dev/libpod/info", "/v4.0.0-dev/libpod/info"),
            (
                "/v1.41/libpod/containers/create",
                "/v1.41/libpod/containers/create",
            ),
            ("/v4/libpod/images/json", "/v4/libpod/images/json"),
            // Spelled so that it becomes one only once decoded and cleaned.
            ("/v4.3.1%2Flibpod%2Fpods%2Fjson", "/v4.3.1/libpod/pods/json"),
            ("/containers/../libpod/./pods/json", "/libpod/pods/json"),
            ("//libpod//containers/create", "/libpod/containers/create"),
        ] {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                assert_eq!(
                    classify(&method, raw),
                    Err(RouteError::Libpod(clean.to_owned())),
                    "{method} {raw}"
                );
                // Passing unknown endpoints through never passes Podman's API.
                assert_eq!(
                    classify_or_unknown(&method, raw),
                    Err(RouteError::Libpod(clean.to_owned())),
                    "{method} {raw}"
                );
            }
        }
        let message = RouteError::Libpod("/v4.3.1/libpod/info".into()).to_string();
        assert!(message.starts_with("/v4.3.1/libpod/info is Podman's own API"));
        assert!(message.contains("serves only the Docker Engine API"));
        assert!(message.contains("Docker-compatible API"));
        assert!(message.contains("`podman --remote`"));
        // Only the segment itself: names that merely contain it are other paths.
        assert!(unknown(Method::GET, "/libpodx/_ping"));
        assert!(unknown(Method::GET, "/Libpod/_ping"));
        assert_eq!(
            ok(Method::GET, "/containers/libpod/json")
                .object_id
                .as_deref(),
            Some("libpod")
        );
    }

    #[test]
    fn upstream_path_round_trips() {
        let names = [
            "registry:5000/team/app:1.0",
            "registry.example.com/team/app@sha256:0123abcd",
            "100%",
            "a%2Fb",
            "with space",
            "q?x#y",
            "ünïcödé",
            "semi;colon=x&y+z",
            "sub!$'()*,delims",
            "quote\"brace{}pipe|caret^back`slash\\",
        ];
        for image in names {
            let encoded = image
                .replace('%', "%25")
                .replace(' ', "%20")
                .replace('?', "%3F")
                .replace('#', "%23");
            for prefix in ["", "/v1.41"] {
                let route = ok(Method::GET, &format!("{prefix}/images/{encoded}/json"));
                assert_eq!(route.object_id.as_deref(), Some(image));
                let upstream = route.upstream_path();
                assert!(
                    upstream.starts_with(&format!("{prefix}/images/")),
                    "{upstream}"
                );
                assert!(upstream.is_ascii(), "{upstream}");
                assert!(upstream.parse::<http::Uri>().is_ok(), "{upstream}");
                assert_eq!(ok(Method::GET, &upstream), route, "{image} via {upstream}");
            }
        }
        let route = ok(Method::GET, "/v1.41//containers/./abc/json");
        assert_eq!(route.upstream_path(), "/v1.41/containers/abc/json");
        assert_eq!(ok(Method::GET, "/_ping").upstream_path(), "/_ping");
        let route = ok(Method::POST, "/v1.41/images/a%20b/tag");
        assert_eq!(route.upstream_path(), "/v1.41/images/a%20b/tag");
    }
}
