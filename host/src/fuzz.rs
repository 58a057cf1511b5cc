//! Entry points for the fuzz targets in `fuzz/` (`just fuzz`) and for replaying their corpus
//! in the ordinary test suite (`host/tests/fuzz_corpus.rs`). Each runs one of the parsers the
//! security rule rests on over arbitrary input and panics when a property does not hold:
//! the canonical form must be a fixed point — what the gateway forwards must parse, on the
//! engine's side, to exactly what the plugins judged.

use http::Method;

use crate::pipeline::{canonical, gojson};
use crate::route;

/// Endpoints with JSON bodies the fuzzer picks from (by the input's first byte).
const JSON_ENDPOINTS: [&str; 8] = [
    "container.create",
    "container.update",
    "container.exec",
    "service.create",
    "volume.create",
    "network.create",
    "plugin.set",
    "no.schema",
];

/// JSON bodies: decoding never panics, and the re-serialized canonical body decodes to the
/// same value (no field is renamed twice, nothing is lost).
pub fn json_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = JSON_ENDPOINTS[usize::from(pick) % JSON_ENDPOINTS.len()];
    if let Ok(value) = gojson::decode(endpoint, body) {
        let forwarded = value.to_string();
        let again = gojson::decode(endpoint, forwarded.as_bytes())
            .unwrap_or_else(|e| panic!("the forwarded body {forwarded} does not decode: {e}"));
        assert_eq!(again, value, "canonical form is not a fixed point");
    }
}

/// Paths: classifying never panics, and the path forwarded upstream classifies to the same
/// endpoint, object and version.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for method in [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::HEAD,
    ] {
        if let Ok(route) = route::classify(&method, raw) {
            let forwarded = route.upstream_path();
            let again = route::classify(&method, &forwarded)
                .unwrap_or_else(|e| panic!("{method} {raw:?} forwarded as {forwarded:?}: {e}"));
            assert_eq!(
                again.endpoint.name, route.endpoint.name,
                "{method} {raw:?} → {forwarded:?}"
            );
            assert_eq!(
                again.object_id, route.object_id,
                "{method} {raw:?} → {forwarded:?}"
            );
            assert_eq!(
                again.version, route.version,
                "{method} {raw:?} → {forwarded:?}"
            );
            assert_eq!(again.path, route.path, "{method} {raw:?} → {forwarded:?}");
        }
    }
}

/// Query strings: the re-encoded query parses to the same pairs.
pub fn query(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let pairs = canonical::parse_query(Some(raw));
    if let Some(encoded) = canonical::encode_query(&pairs) {
        assert_eq!(
            canonical::parse_query(Some(&encoded)),
            pairs,
            "{raw:?} → {encoded:?}"
        );
    }
}
