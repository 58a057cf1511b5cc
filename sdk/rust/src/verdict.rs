//! What a plugin answers: [`Verdict`], and the [`Patch`] builder for the changes a mutating,
//! response or audit hook makes. A patch is data (an RFC 6902 JSON Patch plus header and query
//! edits) so the gateway can apply it to exactly what it forwards and show it in the audit
//! record.

use serde_json::{json, Value};

use crate::bindings::portcullis::plugin::types as wit;
use crate::Pair;

/// A plugin's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Let it pass unchanged.
    Allow,
    /// Refuse it.
    Deny(Denial),
    /// Let it pass with these changes. Only plugins configured as `mutate` may patch a
    /// request; response and audit hooks may always patch. An empty patch is sent as
    /// [`Verdict::Allow`].
    Patch(Patch),
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The HTTP status sent to the client, usually 403.
    pub status: u16,
    /// Why; the docker CLI shows `Error response from daemon: <plugin>: <message>`.
    pub message: String,
}

impl Verdict {
    /// Refuses with status 403 (forbidden) and `message`.
    pub fn deny(message: impl Into<String>) -> Self {
        Self::deny_with(403, message)
    }

    /// Refuses with `status` and `message`.
    pub fn deny_with(status: u16, message: impl Into<String>) -> Self {
        Verdict::Deny(Denial {
            status,
            message: message.into(),
        })
    }
}

impl From<Patch> for Verdict {
    fn from(patch: Patch) -> Self {
        Verdict::Patch(patch)
    }
}

/// A change to a header or a query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Set the named entry to this value, replacing every existing one.
    Set(Pair),
    /// Remove every entry with this name.
    Remove(String),
}

/// Changes to the request, the response or the audit record, built step by step:
///
/// ```
/// use portcullis_plugin::{json_pointer, Patch, Verdict};
/// use serde_json::json;
///
/// let patch = Patch::new()
///     .add(json_pointer(["Labels", "com.acme/owner"]), json!("alice"))
///     .replace("/HostConfig/Privileged", json!(false))
///     .remove("/HostConfig/CapAdd")
///     .set_header("x-portcullis", "rewritten");
/// assert_eq!(
///     patch.body().unwrap(),
///     r#"[{"op":"add","path":"/Labels/com.acme~1owner","value":"alice"},{"op":"replace","path":"/HostConfig/Privileged","value":false},{"op":"remove","path":"/HostConfig/CapAdd"}]"#,
/// );
/// let verdict = Verdict::from(patch);
/// ```
///
/// Operations apply in order, as RFC 6902 says: an `add` to `/Labels/x` fails if `Labels` is
/// absent or `null`, so add the whole object in that case. Paths are JSON Pointers; build them
/// with [`json_pointer`] when a segment may contain `/` or `~`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    ops: Vec<Value>,
    headers: Vec<Edit>,
    query: Vec<Edit>,
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// `add`: sets `path` to `value` (creating the member, or inserting into an array at an
    /// index or at `-`, the end).
    pub fn add(self, path: impl Into<String>, value: Value) -> Self {
        self.op(json!({"op": "add", "path": path.into(), "value": value}))
    }

    /// `replace`: sets the existing `path` to `value`; the patch fails if it is absent.
    pub fn replace(self, path: impl Into<String>, value: Value) -> Self {
        self.op(json!({"op": "replace", "path": path.into(), "value": value}))
    }

    /// `remove`: removes `path`; the patch fails if it is absent. Remove array elements from
    /// the highest index down, since each removal shifts the ones after it.
    pub fn remove(self, path: impl Into<String>) -> Self {
        self.op(json!({"op": "remove", "path": path.into()}))
    }

    /// `test`: the whole patch fails unless `path` equals `value`.
    pub fn test(self, path: impl Into<String>, value: Value) -> Self {
        self.op(json!({"op": "test", "path": path.into(), "value": value}))
    }

    /// Appends any RFC 6902 operation as JSON (for `move` and `copy`).
    pub fn op(mut self, op: Value) -> Self {
        self.ops.push(op);
        self
    }

    /// Sets the header `name` (lowercased) to `value`, replacing every existing value.
    pub fn set_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push(Edit::Set(Pair::new(name.to_ascii_lowercase(), value)));
        self
    }

    /// Removes every value of the header `name` (lowercased).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.push(Edit::Remove(name.to_ascii_lowercase()));
        self
    }

    /// Sets the query parameter `name` to `value`, replacing every existing value (requests
    /// only).
    pub fn set_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push(Edit::Set(Pair::new(name, value)));
        self
    }

    /// Removes every value of the query parameter `name` (requests only).
    pub fn remove_query(mut self, name: impl Into<String>) -> Self {
        self.query.push(Edit::Remove(name.into()));
        self
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.headers.is_empty() && self.query.is_empty()
    }

    /// The JSON Patch operations, in order.
    pub fn ops(&self) -> &[Value] {
        &self.ops
    }

    /// The header edits, in order.
    pub fn header_edits(&self) -> &[Edit] {
        &self.headers
    }

    /// The query edits, in order.
    pub fn query_edits(&self) -> &[Edit] {
        &self.query
    }

    /// The JSON Patch document as text, as the gateway receives it; `None` without
    /// operations.
    pub fn body(&self) -> Option<String> {
        (!self.ops.is_empty()).then(|| Value::from(self.ops.clone()).to_string())
    }
}

/// A JSON Pointer (RFC 6901) from unescaped segments: `~` becomes `~0` and `/` becomes `~1`,
/// so `json_pointer(["Labels", "com.acme/team"])` is `/Labels/com.acme~1team`.
pub fn json_pointer<S: AsRef<str>>(segments: impl IntoIterator<Item = S>) -> String {
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        pointer.push_str(&segment.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    pointer
}

impl From<Edit> for wit::Edit {
    fn from(edit: Edit) -> Self {
        match edit {
            Edit::Set(p) => wit::Edit::Set(wit::Pair {
                name: p.name,
                value: p.value,
            }),
            Edit::Remove(name) => wit::Edit::Remove(name),
        }
    }
}

impl From<Verdict> for wit::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow => wit::Verdict::Allow,
            Verdict::Deny(d) => wit::Verdict::Deny(wit::Denial {
                status: d.status,
                message: d.message,
            }),
            Verdict::Patch(p) if p.is_empty() => wit::Verdict::Allow,
            Verdict::Patch(p) => wit::Verdict::Patch(wit::Patch {
                body: p.body(),
                headers: p.headers.into_iter().map(Into::into).collect(),
                query: p.query.into_iter().map(Into::into).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_defaults_to_forbidden() {
        assert_eq!(
            Verdict::deny("no"),
            Verdict::Deny(Denial {
                status: 403,
                message: "no".into()
            })
        );
        let Verdict::Deny(d) = Verdict::deny_with(401, "who are you") else {
            panic!()
        };
        assert_eq!((d.status, d.message.as_str()), (401, "who are you"));
    }

    #[test]
    fn builder_keeps_order_and_shapes_ops() {
        let p = Patch::new()
            .add("/Labels/a", json!("1"))
            .replace("/Image", json!("busybox"))
            .remove("/Env/2")
            .test("/User", json!("root"))
            .op(json!({"op": "copy", "from": "/a", "path": "/b"}));
        let body: Value = serde_json::from_str(&p.body().unwrap()).unwrap();
        assert_eq!(
            body,
            json!([
                {"op": "add", "path": "/Labels/a", "value": "1"},
                {"op": "replace", "path": "/Image", "value": "busybox"},
                {"op": "remove", "path": "/Env/2"},
                {"op": "test", "path": "/User", "value": "root"},
                {"op": "copy", "from": "/a", "path": "/b"},
            ])
        );
        assert_eq!(p.ops().len(), 5);
    }

    #[test]
    fn header_and_query_edits() {
        let p = Patch::new()
            .set_header("X-Trace", "1")
            .remove_header("User-Agent")
            .set_query("force", "0")
            .remove_query("v");
        assert_eq!(p.body(), None);
        assert_eq!(
            p.header_edits(),
            [
                Edit::Set(Pair::new("x-trace", "1")),
                Edit::Remove("user-agent".into())
            ]
        );
        assert_eq!(
            p.query_edits(),
            [Edit::Set(Pair::new("force", "0")), Edit::Remove("v".into())]
        );
        let wit::Verdict::Patch(w) = Verdict::from(p).into() else {
            panic!("not a patch")
        };
        assert_eq!(w.body, None);
        assert_eq!(w.headers.len(), 2);
        assert_eq!(w.query.len(), 2);
    }

    #[test]
    fn empty_patch_is_allow() {
        assert!(Patch::new().is_empty());
        assert!(matches!(
            wit::Verdict::from(Verdict::from(Patch::new())),
            wit::Verdict::Allow
        ));
    }

    #[test]
    fn verdicts_convert() {
        assert!(matches!(
            wit::Verdict::from(Verdict::Allow),
            wit::Verdict::Allow
        ));
        let wit::Verdict::Deny(d) = Verdict::deny_with(409, "busy").into() else {
            panic!()
        };
        assert_eq!((d.status, d.message.as_str()), (409, "busy"));
        let wit::Verdict::Patch(p) = Verdict::from(Patch::new().remove("/x")).into() else {
            panic!()
        };
        assert_eq!(p.body.as_deref(), Some(r#"[{"op":"remove","path":"/x"}]"#));
    }

    #[test]
    fn pointers_escape() {
        assert_eq!(
            json_pointer(["Labels", "com.acme/team"]),
            "/Labels/com.acme~1team"
        );
        assert_eq!(json_pointer(["a~b", "0"]), "/a~0b/0");
        assert_eq!(json_pointer(Vec::<String>::new()), "");
        assert_eq!(json_pointer([""]), "/");
    }
}
