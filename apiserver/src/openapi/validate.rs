//! Server-side field validation (`fieldValidation=Strict|Warn`): the unknown and duplicate fields of an
//! object, found by walking it against its OpenAPI schema and reported in the words of upstream's strict JSON
//! decoder (sigs.k8s.io/json): `unknown field "spec.containers[0].imagee"`, `duplicate field "spec.replicas"`,
//! in document order. Maps (`additionalProperties`), free-form objects (FieldsV1, RawExtension) and
//! `x-kubernetes-preserve-unknown-fields` are not checked, as upstream does not check them.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::catalog::Catalog;

/// Unknown fields of `obj`, a `kind` of `group`/v1, as `unknown field "<path>"` messages. Empty for a kind
/// without a schema. Duplicates cannot be seen in a parsed `Value`: use `strict_field_errors` on the body.
pub fn unknown_fields(group: &str, kind: &str, obj: &Value) -> Vec<String> {
    check(super::catalog(), group, kind, obj)
}

/// Unknown and duplicate fields of a JSON request body, in document order, as upstream reports them
/// (`unknown field "spec.foo"`, `duplicate field "spec.replicas"`). Empty if the body is not JSON: the
/// caller's own decoding reports that.
pub fn strict_field_errors(group: &str, kind: &str, body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Raw>(body) {
        Ok(raw) => check(super::catalog(), group, kind, &raw),
        Err(_) => Vec::new(),
    }
}

/// Duplicate fields of a JSON request body in document order (`duplicate field "spec.replicas"`), whatever
/// the schema: for custom resources, whose unknown fields their structural schema finds.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    fn walk(node: &Raw, path: &mut String, out: &mut Vec<String>) {
        match node {
            Raw::Object(entries) => {
                let mut seen = HashSet::new();
                for (k, v) in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    if !seen.insert(k.as_str()) {
                        out.push(format!("duplicate field {}", quote(path)));
                    }
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            Raw::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            Raw::Scalar => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(raw) = serde_json::from_slice::<Raw>(body) {
        walk(&raw, &mut String::new(), &mut out);
    }
    out
}

/// The message of the 400 BadRequest for `fieldValidation=Strict`, e.g.
/// `Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.foo"`.
pub fn strict_decoding_message(kind: &str, version: &str, errors: &[String]) -> String {
    format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        errors.join(", ")
    )
}

/// A `Warning` header value for `fieldValidation=Warn`, one per error: `299 - "unknown field \"spec.foo\""`
/// (kubectl prints `Warning: unknown field "spec.foo"`).
pub fn warning_header(message: &str) -> String {
    format!("299 - {}", quote(message))
}

/// A double-quoted string with `"`, `\`, control and non-ASCII characters escaped, so it is also a valid
/// header value.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn check<N: Node>(catalog: &Catalog, group: &str, kind: &str, obj: &N) -> Vec<String> {
    let Some(schema) = catalog.kind(group, "v1", kind).and_then(|n| catalog.schema(n)) else {
        return Vec::new();
    };
    let mut w = Walker {
        catalog,
        errors: Vec::new(),
    };
    w.walk(obj, schema, &mut String::new());
    w.errors
}

/// The two shapes a checked object comes in: a parsed `Value`, or `Raw`, which keeps duplicate keys.
trait Node: Sized {
    fn entries(&self) -> Option<Vec<(&str, &Self)>>;
    fn items(&self) -> Option<&[Self]>;
}

impl Node for Value {
    fn entries(&self) -> Option<Vec<(&str, &Self)>> {
        self.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
    }
    fn items(&self) -> Option<&[Self]> {
        self.as_array().map(Vec::as_slice)
    }
}

/// A JSON document with every key kept, in order.
enum Raw {
    Object(Vec<(String, Raw)>),
    Array(Vec<Raw>),
    Scalar,
}

impl Node for Raw {
    fn entries(&self) -> Option<Vec<(&str, &Self)>> {
        match self {
            Raw::Object(o) => Some(o.iter().map(|(k, v)| (k.as_str(), v)).collect()),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Self]> {
        match self {
            Raw::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Raw::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Raw>()? {
            entries.push((k, v));
        }
        Ok(Raw::Object(entries))
    }
}

struct Walker<'c> {
    catalog: &'c Catalog,
    errors: Vec<String>,
}

impl Walker<'_> {
    fn walk<N: Node>(&mut self, node: &N, schema: &Value, path: &mut String) {
        let s = self.catalog.resolve(schema);
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(entries) = node.entries() {
            let props = s.get("properties").and_then(Value::as_object).filter(|p| !p.is_empty());
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return; // free-form
            }
            let mut seen = HashSet::new();
            for (k, v) in entries {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match props.and_then(|p| p.get(k)).or(additional) {
                    Some(sub) => {
                        if !seen.insert(k) {
                            self.errors.push(format!("duplicate field {}", quote(path)));
                        }
                        self.walk(v, sub, path);
                    }
                    None => self.errors.push(format!("unknown field {}", quote(path))),
                }
                path.truncate(len);
            }
        } else if let (Some(items), Some(item_schema)) = (node.items(), s.get("items")) {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                self.walk(v, item_schema, path);
                path.truncate(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x", "any-label": "y"},
                "annotations": {"a/b": "c"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": "u"}]},
            "spec": {
                "containers": [{"name": "c", "image": "nginx",
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                "nodeSelector": {"disk": "ssd"},
                "affinity": {"nodeAffinity": {}},
            },
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    #[test]
    fn a_valid_object_has_no_errors() {
        assert_eq!(unknown_fields("", "Pod", &pod()), Vec::<String>::new());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"any.key": "v"}, "binaryData": {"b": "AA=="}});
        assert!(unknown_fields("", "ConfigMap", &cm).is_empty());
    }

    #[test]
    fn unknown_fields_with_upstream_paths() {
        let mut p = pod();
        p["spec"]["containers"][0]["imagee"] = json!("x");
        p["spec"]["foo"] = json!(1);
        p["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["bogus"] = json!(true);
        p["status"]["conditions"][0]["why"] = json!("x");
        p["metadata"]["nope"] = json!("x");
        let errs = unknown_fields("", "Pod", &p);
        for want in [
            "unknown field \"spec.containers[0].imagee\"",
            "unknown field \"spec.foo\"",
            "unknown field \"spec.containers[0].env[0].valueFrom.fieldRef.bogus\"",
            "unknown field \"status.conditions[0].why\"",
            "unknown field \"metadata.nope\"",
        ] {
            assert!(errs.iter().any(|e| e == want), "{want} not in {errs:?}");
        }
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn workloads_and_other_groups() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "commandd": []}]}}}});
        assert_eq!(
            unknown_fields("apps", "Deployment", &d),
            vec!["unknown field \"spec.template.spec.containers[0].commandd\"".to_string()]
        );
        let lease = json!({"kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "h", "x": 1}});
        assert_eq!(
            unknown_fields("coordination.k8s.io", "Lease", &lease),
            vec!["unknown field \"spec.x\"".to_string()]
        );
        assert!(unknown_fields("nope.io", "Thing", &lease).is_empty());
        assert!(unknown_fields("", "Pod", &json!("not an object")).is_empty());
        assert!(unknown_fields("", "Pod", &json!({"spec": []})).is_empty());
    }

    #[test]
    fn duplicates_from_the_raw_body_in_document_order() {
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","labels":{"a":"1","a":"2"}},
            "spec":{"replicas":1,"unknownField":true,"replicas":2,"selector":{}}}"#;
        assert_eq!(
            strict_field_errors("apps", "Deployment", body),
            vec![
                "duplicate field \"metadata.labels.a\"".to_string(),
                "unknown field \"spec.unknownField\"".to_string(),
                "duplicate field \"spec.replicas\"".to_string(),
            ]
        );
        assert!(strict_field_errors("apps", "Deployment", b"{not json").is_empty());
        let cr = br#"{"spec":{"size":"a","size":"b","items":[{"x":1,"x":2}]}}"#;
        assert_eq!(
            duplicate_fields(cr),
            vec![
                "duplicate field \"spec.size\"".to_string(),
                "duplicate field \"spec.items[0].x\"".to_string(),
            ]
        );
    }

    #[test]
    fn messages() {
        let errs = vec![
            "unknown field \"spec.foo\"".to_string(),
            "unknown field \"spec.bar\"".to_string(),
        ];
        assert_eq!(
            strict_decoding_message("Pod", "v1", &errs),
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.foo\", unknown field \"spec.bar\""
        );
        assert_eq!(warning_header(&errs[0]), r#"299 - "unknown field \"spec.foo\"""#);
        assert_eq!(quote("é\n"), r#""\u00e9\u000a""#);
    }
}
