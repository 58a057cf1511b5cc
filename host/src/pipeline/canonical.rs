//! The canonical request: the single parsed form of a request that plugins judge and that
//! the gateway re-serializes to forward. Because the bytes sent to the engine are produced
//! from this form (body re-serialized from the parsed JSON, query re-encoded from the parsed
//! pairs, framing recomputed), the engine cannot act on anything the plugins did not see.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::chain::Patchable;
use crate::identity::{AuthMethod, Caller};
use crate::model;
use crate::route::Route;

/// Headers that carry credentials; plugins see them only when granted.
pub const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-registry-auth",
    "x-registry-config",
];

/// Headers a plugin may not edit: they frame the message or route the connection.
const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "host",
    "te",
    "trailer",
    "keep-alive",
];

/// Parses a query string the way Go's `url.ParseQuery` does for well-formed input.
pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Encodes query pairs for the engine; `None` when there are none.
pub fn encode_query(pairs: &[(String, String)]) -> Option<String> {
    if pairs.is_empty() {
        return None;
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    Some(s.finish())
}

/// A request in canonical form, with the plugin-facing view kept in step.
pub struct Canonical {
    view: model::Request,
    /// The headers to forward (credentials included; hop-by-hop removed later).
    pub headers: HeaderMap,
    body: Option<Value>,
}

impl Canonical {
    /// Builds the canonical form. `body` is the parsed JSON body, if any.
    pub fn new(
        id: u64,
        method: &http::Method,
        route: &Route,
        query: Vec<(String, String)>,
        headers: HeaderMap,
        body: Option<Value>,
        caller: &Caller,
    ) -> Self {
        let view = model::Request {
            id,
            method: method.as_str().to_owned(),
            path: route.path.clone(),
            api_version: route.version.map(|(a, b)| format!("{a}.{b}")),
            endpoint: route.endpoint.name.to_owned(),
            object_id: route.object_id.clone(),
            query: query
                .into_iter()
                .map(|(name, value)| model::Pair { name, value })
                .collect(),
            headers: visible_headers(&headers),
            body: body.as_ref().map(Value::to_string),
            caller: plugin_caller(caller),
            target: None,
            related: Vec::new(),
        };
        Self {
            view,
            headers,
            body,
        }
    }

    /// Sets the object the request acts on, as the engine reported it (see `target.rs`).
    pub fn set_target(&mut self, target: Option<model::Target>) {
        self.view.target = target;
    }

    /// Sets the other objects the body refers to (see `target.rs`).
    pub fn set_related(&mut self, related: Vec<model::Reference>) {
        self.view.related = related;
    }

    /// The canonical JSON body, if the request has one.
    pub fn body(&self) -> Option<&Value> {
        self.body.as_ref()
    }

    /// The query to forward.
    pub fn query(&self) -> Vec<(String, String)> {
        self.view
            .query
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect()
    }

    /// The plugin-facing view, kept after the request was forwarded (an event stream's
    /// events are judged against it).
    pub fn into_view(self) -> model::Request {
        self.view
    }

    /// The body to forward, serialized from the canonical JSON.
    pub fn body_bytes(&self) -> Option<Bytes> {
        self.view.body.clone().map(Bytes::from)
    }
}

impl Patchable for Canonical {
    fn view(&self) -> &model::Request {
        &self.view
    }

    fn apply(&mut self, patch: &model::Patch) -> Result<(), PatchError> {
        if let Some(ops) = &patch.body {
            let body = self.body.as_mut().ok_or(PatchError::NoBody)?;
            apply_json_patch(body, ops)?;
            self.view.body = Some(body.to_string());
        }
        for edit in &patch.headers {
            edit_headers(&mut self.headers, edit)?;
        }
        self.view.headers = visible_headers(&self.headers);
        for edit in &patch.query {
            edit_pairs(&mut self.view.query, edit);
        }
        Ok(())
    }
}

/// Why a plugin's patch cannot be applied (the plugin is then treated as failing: its patch
/// is malformed for this request).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("body patch is not RFC 6902 JSON Patch: {0}")]
    NotJsonPatch(serde_json::Error),
    #[error("body patch does not apply: {0}")]
    DoesNotApply(json_patch::PatchError),
    #[error("a body patch on a request without a JSON body")]
    NoBody,
    #[error("{0}")]
    NotJson(serde_json::Error),
    #[error("header {0:?} cannot be edited by plugins")]
    FramingHeader(String),
    #[error("bad header name {0:?}")]
    HeaderName(String),
    #[error("bad value for header {0}")]
    HeaderValue(HeaderName),
    /// What this hook cannot patch (a validating plugin, an event's headers).
    #[error("{0}")]
    NotHere(&'static str),
    #[error("the patched record is not a valid audit record: {0}")]
    NotARecord(serde_json::Error),
}

/// Applies an RFC 6902 patch document given as JSON text.
pub fn apply_json_patch(target: &mut Value, ops: &str) -> Result<(), PatchError> {
    let patch: json_patch::Patch = serde_json::from_str(ops).map_err(PatchError::NotJsonPatch)?;
    json_patch::patch(target, &patch).map_err(PatchError::DoesNotApply)
}

/// Applies a body patch to JSON text (`None`: `null`) and prints the result: the one way a
/// response, an event or an audit record is patched.
pub fn patch_text(text: Option<&str>, ops: &str) -> Result<String, PatchError> {
    let mut json: Value =
        serde_json::from_str(text.unwrap_or("null")).map_err(PatchError::NotJson)?;
    apply_json_patch(&mut json, ops)?;
    Ok(json.to_string())
}

/// Applies a header edit; framing headers cannot be edited.
pub fn edit_headers(headers: &mut HeaderMap, edit: &model::Edit) -> Result<(), PatchError> {
    let name = match edit {
        model::Edit::Set(p) => &p.name,
        model::Edit::Remove(n) => n,
    };
    let lower = name.to_ascii_lowercase();
    if FRAMING_HEADERS.contains(&lower.as_str()) {
        return Err(PatchError::FramingHeader(name.clone()));
    }
    let name = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| PatchError::HeaderName(name.clone()))?;
    match edit {
        model::Edit::Set(p) => {
            let value = HeaderValue::from_str(&p.value)
                .map_err(|_| PatchError::HeaderValue(name.clone()))?;
            headers.insert(name, value);
        }
        model::Edit::Remove(_) => {
            headers.remove(name);
        }
    }
    Ok(())
}

/// Applies a query (or any pair list) edit.
pub fn edit_pairs(pairs: &mut Vec<model::Pair>, edit: &model::Edit) {
    match edit {
        model::Edit::Set(p) => {
            pairs.retain(|q| q.name != p.name);
            pairs.push(p.clone());
        }
        model::Edit::Remove(n) => pairs.retain(|q| &q.name != n),
    }
}

/// Headers as plugins see them: lowercase names, credentials removed.
pub fn visible_headers(headers: &HeaderMap) -> Vec<model::Pair> {
    headers
        .iter()
        .filter(|(n, _)| !CREDENTIAL_HEADERS.contains(&n.as_str()))
        .map(|(n, v)| model::Pair {
            name: n.as_str().to_owned(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect()
}

fn plugin_caller(c: &Caller) -> model::Caller {
    model::Caller {
        user: c.user.clone(),
        groups: c.groups.clone(),
        auth: match c.auth {
            AuthMethod::None => model::AuthMethod::None,
            AuthMethod::PeerCredentials => model::AuthMethod::PeerCredentials,
            AuthMethod::MutualTls => model::AuthMethod::MutualTls,
            AuthMethod::Token => model::AuthMethod::Token,
        },
        peer: c.peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip_is_go_compatible() {
        let q = parse_query(Some(
            "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&all=1&x=a+b",
        ));
        assert_eq!(q[0].1, r#"{"label":["a=b"]}"#);
        assert_eq!(q[2].1, "a b");
        let back = encode_query(&q).unwrap();
        assert_eq!(parse_query(Some(&back)), q);
    }

    #[test]
    fn framing_headers_cannot_be_edited() {
        let mut h = HeaderMap::new();
        let edit = model::Edit::Set(model::Pair {
            name: "Content-Length".into(),
            value: "0".into(),
        });
        assert!(edit_headers(&mut h, &edit).is_err());
        let edit = model::Edit::Set(model::Pair {
            name: "X-Team".into(),
            value: "a".into(),
        });
        edit_headers(&mut h, &edit).unwrap();
        assert_eq!(h["x-team"], "a");
    }

    #[test]
    fn json_patch_errors_are_reported() {
        let mut v = serde_json::json!({"Labels": {}});
        apply_json_patch(&mut v, r#"[{"op":"add","path":"/Labels/a","value":"b"}]"#).unwrap();
        assert_eq!(v["Labels"]["a"], "b");
        assert!(apply_json_patch(&mut v, "not json").is_err());
        assert!(apply_json_patch(&mut v, r#"[{"op":"remove","path":"/nope"}]"#).is_err());
    }
}
