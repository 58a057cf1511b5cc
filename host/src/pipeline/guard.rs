//! Checks that need no plugin: whether a client may use this part of the API at all. They
//! run on every request, before the body is read.

use http::header::{self, HeaderMap};

use super::PipelineError;
use crate::config::{ApiConfig, ApiVersion, BuildkitMode};
use crate::route::Route;

/// Refuses API versions outside the configured range, BuildKit tunnels unless enabled,
/// ambiguous framing and form-encoded bodies.
pub fn check(api: &ApiConfig, route: &Route, headers: &HeaderMap) -> Result<(), PipelineError> {
    if let Some((major, minor)) = route.version {
        let version = ApiVersion(major, minor);
        if version < api.min_version {
            return Err(PipelineError::VersionTooOld {
                version,
                min: api.min_version,
            });
        }
        if let Some(max) = api.max_version.filter(|max| version > *max) {
            return Err(PipelineError::VersionTooNew { version, max });
        }
    }
    if matches!(route.endpoint.name, "session" | "grpc") && api.buildkit == BuildkitMode::Deny {
        return Err(PipelineError::BuildkitDisabled {
            endpoint: route.endpoint.name,
        });
    }
    // Both framings at once, or a transfer coding other than one plain `chunked`: whichever
    // one a reader believes, another may believe the other (request smuggling). hyper
    // refuses non-chunked codings itself and, when both framings come, drops
    // Content-Length before we see it (reading chunked, closing afterwards); this catches
    // what it lets through, such as a repeated Transfer-Encoding.
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !te.is_empty() {
        let plain_chunked = te.len() == 1 && te[0].as_bytes().eq_ignore_ascii_case(b"chunked");
        if !plain_chunked || headers.contains_key(header::CONTENT_LENGTH) {
            return Err(PipelineError::AmbiguousFraming);
        }
    }
    // Go's `Request.ParseForm`, which dockerd calls before reading parameters, reads a
    // form-encoded POST/PUT body and lets its values win over the query string. Nothing the
    // docker CLI or an SDK sends is form-encoded, so such a body is refused rather than
    // parsed a second way.
    let form = headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        let media = v.to_str().unwrap_or("").split(';').next().unwrap_or("");
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if form {
        return Err(PipelineError::FormBody);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::classify;
    use http::{HeaderValue, Method};

    fn checked(
        path: &str,
        api: &ApiConfig,
        content_type: Option<&str>,
    ) -> Result<(), PipelineError> {
        let route = classify(&Method::POST, path).unwrap();
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        check(api, &route, &h)
    }

    #[test]
    fn version_range() {
        let mut api = ApiConfig::default();
        assert!(checked("/v1.41/containers/create", &api, None).is_ok());
        assert!(checked("/containers/create", &api, None).is_ok());
        assert!(matches!(
            checked("/v1.23/containers/x/start", &api, None),
            Err(PipelineError::VersionTooOld { .. })
        ));
        api.max_version = Some(ApiVersion(1, 41));
        assert!(matches!(
            checked("/v1.50/containers/create", &api, None),
            Err(PipelineError::VersionTooNew { .. })
        ));
    }

    #[test]
    fn buildkit_tunnels_need_the_switch() {
        let mut api = ApiConfig::default();
        assert!(
            checked("/session", &api, None).is_ok(),
            "mediated by default"
        );
        api.buildkit = BuildkitMode::Deny;
        assert!(checked("/session", &api, None).is_err());
        assert!(checked("/v1.41/grpc", &api, None).is_err());
        api.buildkit = BuildkitMode::Pass;
        assert!(checked("/session", &api, None).is_ok());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let api = ApiConfig::default();
        let route = classify(&Method::POST, "/containers/create").unwrap();
        let framed = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            check(&api, &route, &h)
        };
        assert!(framed(&[("transfer-encoding", "chunked")]).is_ok());
        assert!(framed(&[("content-length", "2")]).is_ok());
        for bad in [
            &[("transfer-encoding", "chunked"), ("content-length", "2")][..],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "identity")],
        ] {
            assert!(
                matches!(framed(bad), Err(PipelineError::AmbiguousFraming)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn form_bodies_are_refused_in_any_spelling() {
        let api = ApiConfig::default();
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            " application/x-www-form-urlencoded ;",
        ] {
            assert!(
                matches!(
                    checked("/build", &api, Some(ct)),
                    Err(PipelineError::FormBody)
                ),
                "{ct}"
            );
        }
        assert!(checked("/build", &api, Some("application/x-tar")).is_ok());
        assert!(checked(
            "/containers/create",
            &api,
            Some("application/json; charset=utf-8")
        )
        .is_ok());
    }
}
