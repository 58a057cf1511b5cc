//! JSON request bodies read the way dockerd reads them, so that a plugin reading
//! `HostConfig.Privileged` sees exactly what the engine will act on.
//!
//! dockerd decodes bodies with Go's `encoding/json`, which differs from a plain JSON parser
//! in ways that have been used to slip past authorization layers:
//!
//! - struct field names match case-insensitively (`hostconfig`, `HOSTCONFIG`, and the
//!   Kelvin sign `K` for `k`, the long s `ſ` for `s`): a policy reading `HostConfig` would
//!   miss `hostconfig.privileged`;
//! - a repeated key does not replace the earlier value when both are objects: Go decodes
//!   the second into the struct or map the first already filled, so the two merge — and a
//!   parser that keeps only the last one shows the policy half of what the engine applies.
//!
//! So every body is parsed with duplicate keys refused, and every struct field the engine
//! knows is renamed to its canonical name (map keys such as label names are data and stay
//! as sent); two spellings of one field in the same object are refused as ambiguous. The
//! field names come from the Engine API specs (`body_fields.json`, generated from every
//! spec version by this module's tests); fields the specs do not name are kept as sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum GoJsonError {
    /// Not JSON, a repeated key, nesting beyond the parser's depth limit, trailing data.
    #[error("{0}")]
    Syntax(String),
    /// Two spellings of one field in the same object.
    #[error("field {path} is given twice (as `{first}` and `{second}`); the engine would merge them, so the body is ambiguous")]
    Ambiguous {
        path: String,
        first: String,
        second: String,
    },
}

/// Parses `bytes` as the engine would decode the body of `endpoint`, with struct field
/// names canonicalized.
pub fn decode(endpoint: &str, bytes: &[u8]) -> Result<Value, GoJsonError> {
    let Strict(mut value) =
        serde_json::from_slice(bytes).map_err(|e| GoJsonError::Syntax(e.to_string()))?;
    if let Some(shape) = SCHEMA.endpoints.get(endpoint) {
        SCHEMA.canonicalize(&mut value, shape)?;
    }
    Ok(value)
}

/// Parses `bytes` with repeated keys refused and no field renamed: for documents other than
/// request bodies, whose struct fields are read with [`struct_field`].
pub fn decode_strict(bytes: &[u8]) -> Result<Value, GoJsonError> {
    let Strict(value) =
        serde_json::from_slice(bytes).map_err(|e| GoJsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// The value Go decodes into the struct field `name` from `object`: the one key that matches
/// it case-insensitively (`repotags` for `RepoTags`). Two such keys are refused: Go would
/// take the last, a reader keeping another would judge something else.
pub fn struct_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a Value>, GoJsonError> {
    let folded = fold(name);
    let mut found: Option<(&String, &Value)> = None;
    for (k, v) in object {
        if fold(k) == folded {
            if let Some((first, _)) = found {
                return Err(GoJsonError::Ambiguous {
                    path: format!("{path}{name}"),
                    first: first.clone(),
                    second: k.clone(),
                });
            }
            found = Some((k, v));
        }
    }
    Ok(found.map(|(_, v)| v))
}

/// A JSON value parsed with repeated object keys refused (serde_json would keep the last).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "key `{key}` is given twice in one object; the engine would merge them, so the body is ambiguous"
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Go's case-insensitive field matching reduced to what can match an ASCII field name:
/// ASCII case, plus the two non-ASCII runes that fold to ASCII letters.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{212A}' => 'k',
            '\u{17F}' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// How the engine decodes a JSON value.
#[derive(Debug)]
enum Shape {
    /// A scalar, or a value whose inside the specs do not describe: left as sent.
    Opaque,
    /// A list of values of one shape.
    Array(Box<Shape>),
    /// A Go map: keys are data, kept as sent.
    Map(Box<Shape>),
    /// A Go struct: keys are field names, matched case-insensitively.
    Struct(usize),
}

#[derive(Debug, Default)]
struct Struct {
    /// Canonical field name and shape, by exact name.
    exact: HashMap<String, (String, Shape)>,
    /// Canonical field name by folded name.
    folded: HashMap<String, String>,
}

/// Every struct the engine decodes request bodies into, and the root shape per endpoint.
#[derive(Debug, Default)]
struct Schema {
    structs: Vec<Struct>,
    endpoints: HashMap<String, Shape>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // Checked in and verified by the tests below; not input from a client.
    Schema::parse(include_str!("body_fields.json")).expect("body_fields.json is well-formed")
});

impl Schema {
    /// Reads the generated file: `{"endpoints": {name: shape}, "types": {Name: {Field: shape}}}`
    /// where a shape is `null`, a type name, `{"array": s}`, `{"map": s}` or `{"struct": {..}}`.
    fn parse(text: &str) -> Result<Schema, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let types = doc["types"].as_object().ok_or("no types")?;
        let mut schema = Schema::default();
        let ids: HashMap<&str, usize> = types
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        schema.structs.resize_with(ids.len(), Struct::default);
        for (name, fields) in types {
            let s = schema.parse_struct(fields, &ids)?;
            schema.structs[ids[name.as_str()]] = s;
        }
        for (name, shape) in doc["endpoints"].as_object().ok_or("no endpoints")? {
            let shape = schema.parse_shape(shape, &ids)?;
            schema.endpoints.insert(name.clone(), shape);
        }
        Ok(schema)
    }

    fn parse_struct(
        &mut self,
        fields: &Value,
        ids: &HashMap<&str, usize>,
    ) -> Result<Struct, String> {
        let mut s = Struct::default();
        for (name, shape) in fields.as_object().ok_or("a struct is not an object")? {
            let shape = self.parse_shape(shape, ids)?;
            if let Some(other) = s.folded.insert(fold(name), name.clone()) {
                // Go prefers the exact match; a case-insensitive one would be ambiguous.
                return Err(format!("fields {other} and {name} fold to the same name"));
            }
            s.exact.insert(name.clone(), (name.clone(), shape));
        }
        Ok(s)
    }

    fn parse_shape(&mut self, v: &Value, ids: &HashMap<&str, usize>) -> Result<Shape, String> {
        Ok(match v {
            Value::Null => Shape::Opaque,
            Value::String(name) => Shape::Struct(
                *ids.get(name.as_str())
                    .ok_or(format!("unknown type {name}"))?,
            ),
            Value::Object(o) if o.len() == 1 => {
                let (kind, inner) = o.iter().next().ok_or("empty shape")?;
                match kind.as_str() {
                    "array" => Shape::Array(Box::new(self.parse_shape(inner, ids)?)),
                    "map" => Shape::Map(Box::new(self.parse_shape(inner, ids)?)),
                    "struct" => {
                        let s = self.parse_struct(inner, ids)?;
                        self.structs.push(s);
                        Shape::Struct(self.structs.len() - 1)
                    }
                    other => return Err(format!("unknown shape kind {other}")),
                }
            }
            other => return Err(format!("bad shape {other}")),
        })
    }

    fn canonicalize(&self, value: &mut Value, shape: &Shape) -> Result<(), GoJsonError> {
        match (shape, value) {
            (Shape::Opaque, _) => Ok(()),
            (Shape::Array(inner), Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.canonicalize(item, inner)
                        .map_err(|e| e.under(&format!("[{i}]")))?;
                }
                Ok(())
            }
            (Shape::Map(inner), Value::Object(map)) => {
                for (key, item) in map.iter_mut() {
                    self.canonicalize(item, inner)
                        .map_err(|e| e.under(&format!("[{key:?}]")))?;
                }
                Ok(())
            }
            (Shape::Struct(id), Value::Object(map)) => {
                let s = &self.structs[*id];
                let mut out = Map::new();
                // Sent keys that matched a field only case-insensitively, for the error
                // message (rare: clients send the canonical spelling). A canonical name
                // already in `out` was produced by an earlier key: an unknown key kept as
                // sent can never equal a field's name, or it would have matched exactly.
                let mut folded_from: Vec<(&str, String)> = Vec::new();
                for (key, mut item) in std::mem::take(map) {
                    let field = s
                        .exact
                        .get(&key)
                        .or_else(|| s.folded.get(&fold(&key)).and_then(|c| s.exact.get(c)));
                    let Some((canonical, inner)) = field else {
                        // Unknown to every spec version: the engine ignores it or knows it
                        // under exactly this spelling; either way it is forwarded as seen.
                        out.insert(key, item);
                        continue;
                    };
                    if out.contains_key(canonical) {
                        let first = folded_from
                            .iter()
                            .find(|(c, _)| c == canonical)
                            .map_or_else(|| canonical.clone(), |(_, sent)| sent.clone());
                        return Err(GoJsonError::Ambiguous {
                            path: canonical.clone(),
                            first,
                            second: key,
                        });
                    }
                    if key != *canonical {
                        folded_from.push((canonical, key));
                    }
                    self.canonicalize(&mut item, inner)
                        .map_err(|e| e.under(canonical))?;
                    out.insert(canonical.clone(), item);
                }
                *map = out;
                Ok(())
            }
            // A value of the wrong type: the engine refuses it when decoding.
            _ => Ok(()),
        }
    }
}

impl GoJsonError {
    /// Prefixes the path of an ambiguity with the enclosing field.
    fn under(self, parent: &str) -> Self {
        match self {
            GoJsonError::Ambiguous {
                path,
                first,
                second,
            } => {
                let sep = if path.starts_with('[') { "" } else { "." };
                GoJsonError::Ambiguous {
                    path: format!("{parent}{sep}{path}"),
                    first,
                    second,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::specs::{expected_name, load, SPECS};
    use crate::route::{endpoints, BodyKind};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    fn canon(endpoint: &str, body: &str) -> Result<Value, GoJsonError> {
        decode(endpoint, body.as_bytes())
    }

    #[test]
    fn field_names_are_canonicalized_case_insensitively() {
        let v = canon(
            "container.create",
            r#"{"image":"busybox","hostconfig":{"PRIVILEGED":true,"binds":["/:/host"],"capadd":["ALL"]}}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"Image":"busybox","HostConfig":{"Privileged":true,"Binds":["/:/host"],"CapAdd":["ALL"]}})
        );
    }

    #[test]
    fn kelvin_sign_and_long_s_fold_like_go() {
        // "Lin\u{212A}s" is Links with a Kelvin sign; "Privileged" has no k/s, "ſecurityOpt"
        // starts with a long s.
        let v = canon(
            "container.create",
            "{\"HostConfig\":{\"Lin\u{212A}s\":[\"a:b\"],\"\u{17F}ecurityOpt\":[\"seccomp=unconfined\"]}}",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"HostConfig":{"Links":["a:b"],"SecurityOpt":["seccomp=unconfined"]}})
        );
    }

    #[test]
    fn escaped_keys_are_decoded_before_matching() {
        let v = canon(
            "container.create",
            r#"{"\u0048ostConfig":{"Privil\u0065ged":true}}"#,
        )
        .unwrap();
        assert_eq!(v, json!({"HostConfig":{"Privileged":true}}));
    }

    #[test]
    fn map_keys_are_data_and_stay_as_sent() {
        let v = canon(
            "container.create",
            r#"{"labels":{"Com.Example.Owner":"alice","hostconfig":"x"},"exposedports":{"80/TCP":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"Labels":{"Com.Example.Owner":"alice","hostconfig":"x"},"ExposedPorts":{"80/TCP":{}}})
        );
    }

    #[test]
    fn nested_arrays_of_structs_are_canonicalized() {
        let v = canon(
            "container.create",
            r#"{"HostConfig":{"mounts":[{"type":"bind","source":"/etc","target":"/x","bindoptions":{"propagation":"shared"}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"HostConfig":{"Mounts":[{"Type":"bind","Source":"/etc","Target":"/x","BindOptions":{"Propagation":"shared"}}]}})
        );
        let v = canon(
            "service.create",
            r#"{"tasktemplate":{"containerspec":{"image":"x","privileges":{"seccomp":{"mode":"unconfined"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            v["TaskTemplate"]["ContainerSpec"]["Privileges"]["Seccomp"]["Mode"],
            json!("unconfined")
        );
    }

    #[test]
    fn two_spellings_of_one_field_are_refused() {
        let err = canon(
            "container.create",
            r#"{"HostConfig":{"Privileged":false,"privileged":true}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("HostConfig.Privileged"), "{err}");
        assert!(
            err.to_string().contains("`Privileged` and `privileged`"),
            "{err}"
        );
        let err = canon(
            "container.create",
            r#"{"HostConfig":{},"hostConfig":{"Privileged":true}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, GoJsonError::Ambiguous { .. }), "{err}");
        // Both spellings folded: the message still names both as sent.
        let err = canon(
            "container.create",
            r#"{"hostconfig":{},"hostConfig":{"Privileged":true}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`hostConfig` and `hostconfig`"),
            "{err}"
        );
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        // Go would merge the two HostConfig objects: Privileged stays true.
        for body in [
            r#"{"HostConfig":{"Privileged":true},"HostConfig":{"Memory":0}}"#,
            r#"{"Labels":{"a":"1"},"Labels":{"b":"2"}}"#,
            r#"{"Env":["A=1"],"Image":"x","Image":"y"}"#,
        ] {
            let err = canon("container.create", body).unwrap_err();
            assert!(err.to_string().contains("given twice"), "{body}: {err}");
        }
        // Also on endpoints whose shape is not known.
        assert!(canon("no.such.endpoint", r#"{"a":{"b":1,"b":2}}"#).is_err());
    }

    #[test]
    fn bad_json_is_refused() {
        for body in [
            "",
            "{",
            r#"{"Image":"x"} trailing"#,
            "[1,]",
            &"[".repeat(200),
        ] {
            assert!(canon("container.create", body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn unknown_fields_are_kept_and_plain_values_untouched() {
        let v = canon("container.create", r#"{"FutureField":{"x":1},"Image":"x"}"#).unwrap();
        assert_eq!(v, json!({"FutureField":{"x":1},"Image":"x"}));
        let v = canon("plugin.set", r#"["DEBUG=1"]"#).unwrap();
        assert_eq!(v, json!(["DEBUG=1"]));
        // A wrong type is left for the engine to refuse.
        let v = canon("container.create", r#"{"hostconfig":"nope"}"#).unwrap();
        assert_eq!(v, json!({"HostConfig":"nope"}));
    }

    #[test]
    fn every_json_endpoint_with_a_spec_body_has_a_shape() {
        for name in [
            "container.create",
            "container.update",
            "container.exec",
            "exec.start",
            "service.create",
            "service.update",
            "volume.create",
            "network.create",
            "network.connect",
            "swarm.init",
            "secret.create",
            "config.create",
            "node.update",
            "system.auth",
            "image.commit",
            "container.start",
        ] {
            assert!(SCHEMA.endpoints.contains_key(name), "{name}");
        }
        let v = canon("container.start", r#"{"privileged":true}"#).unwrap();
        assert_eq!(v, json!({"Privileged":true}));
    }

    // --- The generator: body_fields.json from the Engine API specs. ---

    struct Gen<'a> {
        defs: &'a serde_yaml::Value,
        types: BTreeMap<String, Value>,
        in_progress: BTreeSet<String>,
    }

    impl Gen<'_> {
        fn shape(&mut self, s: &serde_yaml::Value) -> Value {
            if let Some(r) = s["$ref"].as_str() {
                return self.named(r.rsplit('/').next().unwrap());
            }
            if let Some(parts) = s["allOf"].as_sequence() {
                let mut fields = Map::new();
                for part in parts {
                    match self.shape(part) {
                        Value::String(n) => {
                            if let Some(Value::Object(f)) = self.types.get(&n) {
                                fields.extend(f.clone());
                            }
                        }
                        Value::Object(o) if o.contains_key("struct") => {
                            if let Some(Value::Object(f)) = o.get("struct") {
                                fields.extend(f.clone());
                            }
                        }
                        _ => {}
                    }
                }
                return if fields.is_empty() {
                    Value::Null
                } else {
                    json!({ "struct": fields })
                };
            }
            if s["type"].as_str() == Some("array") {
                let inner = self.shape(&s["items"]);
                return if inner.is_null() {
                    Value::Null
                } else {
                    json!({ "array": inner })
                };
            }
            if let Some(props) = s["properties"].as_mapping() {
                let mut fields = Map::new();
                for (k, v) in props {
                    fields.insert(k.as_str().unwrap().to_owned(), self.shape(v));
                }
                return json!({ "struct": fields });
            }
            if s["additionalProperties"].is_mapping() {
                let inner = self.shape(&s["additionalProperties"]);
                return if inner.is_null() {
                    Value::Null
                } else {
                    json!({ "map": inner })
                };
            }
            Value::Null
        }

        /// A named definition: structs become entries of `types`, referred to by name;
        /// anything else is inlined.
        fn named(&mut self, name: &str) -> Value {
            if self.types.contains_key(name) || self.in_progress.contains(name) {
                return Value::String(name.to_owned());
            }
            self.in_progress.insert(name.to_owned());
            let shape = self.shape(&self.defs[name]);
            self.in_progress.remove(name);
            match shape {
                Value::Object(mut o) if o.contains_key("struct") => {
                    self.types
                        .insert(name.to_owned(), o.remove("struct").unwrap());
                    Value::String(name.to_owned())
                }
                other => other,
            }
        }
    }

    /// Union of two shapes: struct fields from both (the newer spec's shape wins per field).
    fn merge(old: Value, new: Value) -> Value {
        match (old, new) {
            (Value::Object(mut a), Value::Object(b))
                if a.contains_key("struct") && b.contains_key("struct") =>
            {
                let (Some(Value::Object(fa)), Some(Value::Object(fb))) =
                    (a.remove("struct"), b.get("struct").cloned())
                else {
                    unreachable!()
                };
                json!({ "struct": merge_fields(fa, fb) })
            }
            (old, Value::Null) => old,
            (_, new) => new,
        }
    }

    fn merge_fields(mut a: Map<String, Value>, b: Map<String, Value>) -> Map<String, Value> {
        for (k, v) in b {
            let merged = match a.remove(&k) {
                Some(old) => merge(old, v),
                None => v,
            };
            a.insert(k, merged);
        }
        a
    }

    fn generate() -> Value {
        let json_endpoints: BTreeSet<&str> = endpoints()
            .filter(|e| e.body == BodyKind::Json)
            .map(|e| e.name)
            .collect();
        let mut types: BTreeMap<String, Value> = BTreeMap::new();
        let mut roots: BTreeMap<String, Value> = BTreeMap::new();
        for file in SPECS {
            let doc = load(file);
            let mut g = Gen {
                defs: &doc["definitions"],
                types: BTreeMap::new(),
                in_progress: BTreeSet::new(),
            };
            for (_, methods) in doc["paths"].as_mapping().unwrap() {
                for (method, op) in methods.as_mapping().unwrap() {
                    if method.as_str() == Some("parameters") {
                        continue;
                    }
                    let name = expected_name(op["operationId"].as_str().unwrap());
                    if !json_endpoints.contains(name.as_str()) {
                        continue;
                    }
                    for p in op["parameters"].as_sequence().into_iter().flatten() {
                        if p["in"].as_str() == Some("body") {
                            let shape = g.shape(&p["schema"]);
                            let merged = merge(roots.remove(&name).unwrap_or(Value::Null), shape);
                            roots.insert(name.clone(), merged);
                        }
                    }
                }
            }
            // A named definition may also be reached only through another: add them all.
            for (name, fields) in g.types {
                let merged = match types.remove(&name) {
                    Some(Value::Object(old)) => Value::Object(merge_fields(
                        old,
                        fields.as_object().cloned().unwrap_or_default(),
                    )),
                    _ => fields,
                };
                types.insert(name, merged);
            }
        }
        // API < 1.24 clients could send a HostConfig to start; engines still decode it.
        roots.insert("container.start".into(), json!("HostConfig"));
        json!({ "endpoints": roots, "types": types })
    }

    #[test]
    fn body_fields_json_matches_the_specs() {
        let generated = generate();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pipeline/body_fields.json");
        if std::env::var_os("PORTCULLIS_REGENERATE").is_some() {
            let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
        }
        let checked_in: Value = serde_json::from_str(include_str!("body_fields.json")).unwrap();
        assert!(
            checked_in == generated,
            "body_fields.json is out of date with the specs: regenerate with \
             PORTCULLIS_REGENERATE=1 cargo test -p portcullis body_fields_json"
        );
        // And the runtime reads what was generated.
        Schema::parse(&generated.to_string()).unwrap();
    }
}
