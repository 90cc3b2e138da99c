//! Structural schemas (`openAPIV3Schema` of a CRD version): validation of custom resources with
//! upstream-style field causes, pruning of undeclared fields, defaulting, and the structural checks a CRD's
//! schema must pass. Supported: `type`, `properties`, `additionalProperties`, `items`, `required`, `enum`,
//! `minimum`/`maximum` (and their `exclusive*` flags), `minLength`/`maxLength`, `pattern`, `minItems`/
//! `maxItems`, `nullable`, `default`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`
//! and `x-kubernetes-embedded-resource`. Not evaluated: `allOf`/`anyOf`/`oneOf`/`not`, `format`,
//! `multipleOf`, `uniqueItems`, list types and CEL rules.

use serde_json::{Map, Value};

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool) == Some(true)
}

fn preserves(s: &Value) -> bool {
    flag(s, "x-kubernetes-preserve-unknown-fields")
}

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// The schema for values of a map (`additionalProperties: {schema}`), if any.
fn additional(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fields kept at the root of every object regardless of the schema.
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Walks `v` against `s` and calls `unknown` with the path of every field the schema does not declare;
/// removes them when `remove` is set.
fn walk_unknown(v: &mut Value, s: &Value, path: &str, root: bool, remove: bool, unknown: &mut Vec<String>) {
    if preserves(s) && props(s).is_none() && additional(s).is_none() {
        return;
    }
    let embedded = root || flag(s, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(o) => {
            let declared = props(s);
            let add = additional(s);
            // Free-form when the schema says nothing about fields and keeps unknown ones; else a field
            // without a schema is unknown.
            let keep_unknown = preserves(s) || s.get("additionalProperties") == Some(&Value::Bool(true));
            let mut drop = Vec::new();
            for (k, val) in o.iter_mut() {
                let p = child(path, k);
                if embedded && ROOT_FIELDS.contains(&k.as_str()) {
                    if let Some(sub) = declared.and_then(|d| d.get(k)).filter(|_| k != "metadata") {
                        walk_unknown(val, sub, &p, false, remove, unknown);
                    }
                    continue;
                }
                match declared.and_then(|d| d.get(k)).or(add) {
                    Some(sub) => walk_unknown(val, sub, &p, false, remove, unknown),
                    None if keep_unknown => {}
                    None => {
                        unknown.push(p);
                        drop.push(k.clone());
                    }
                }
            }
            if remove {
                for k in drop {
                    o.remove(&k);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    walk_unknown(item, item_schema, &format!("{path}[{i}]"), false, remove, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Removes the fields `schema` does not declare (upstream's pruning). `root`: `obj` is a whole object, whose
/// apiVersion, kind and metadata are always kept.
pub fn prune(obj: &mut Value, schema: &Value, root: bool) {
    walk_unknown(obj, schema, "", root, true, &mut Vec::new());
}

/// The fields pruning would drop, as upstream's strict decoding reports them: `unknown field "spec.x"`.
pub fn unknown_fields(obj: &Value, schema: &Value) -> Vec<String> {
    let mut copy = obj.clone();
    let mut out = Vec::new();
    walk_unknown(&mut copy, schema, "", true, false, &mut out);
    out.into_iter().map(|p| format!("unknown field {p:?}")).collect()
}

/// Fills in `default`s of missing fields and drops nulls the schema does not allow (upstream drops them
/// before defaulting).
pub fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(o) => {
            if let Some(ps) = props(s) {
                for (k, sub) in ps {
                    if o.get(k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                        o.remove(k);
                    }
                    if !o.contains_key(k) {
                        if let Some(d) = sub.get("default") {
                            o.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(val) = o.get_mut(k) {
                        apply_defaults(val, sub);
                    }
                }
            }
            if let Some(add) = additional(s) {
                for (k, val) in o.iter_mut() {
                    if props(s).is_some_and(|p| p.contains_key(k)) {
                        continue;
                    }
                    apply_defaults(val, add);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items").filter(|i| i.is_object()) {
                for item in items.iter_mut() {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, ty: &str) -> bool {
    match ty {
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0) && v.is_number(),
        "number" => v.is_number(),
        other => type_name(v) == other,
    }
}

/// A value as upstream's field errors print it: strings quoted, everything else as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn num(s: &Value, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

struct Validator {
    causes: Vec<(String, String)>,
}

impl Validator {
    fn invalid(&mut self, path: &str, v: &Value, why: String) {
        self.causes
            .push((path.to_string(), format!("Invalid value: {}: {why}", shown(v))));
    }

    fn walk(&mut self, v: &Value, s: &Value, path: &str, root: bool) {
        if v.is_null() && (flag(s, "nullable") || s.get("type").is_none()) {
            return;
        }
        let int_or_string = flag(s, "x-kubernetes-int-or-string");
        if int_or_string {
            if !(is_type(v, "integer") || v.is_string()) {
                let t = type_name(v);
                self.invalid(
                    path,
                    &Value::String(t.into()),
                    format!("{path} in body must be of type integer or string: {t:?}"),
                );
                return;
            }
        } else if let Some(ty) = s.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if !is_type(v, ty) {
                let t = type_name(v);
                self.invalid(
                    path,
                    &Value::String(t.into()),
                    format!("{path} in body must be of type {ty}: {t:?}"),
                );
                return;
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                let list: Vec<String> = allowed.iter().map(shown).collect();
                self.causes.push((
                    path.to_string(),
                    format!("Unsupported value: {}: supported values: {}", shown(v), list.join(", ")),
                ));
            }
        }
        match v {
            Value::Number(_) => self.number(v, s, path),
            Value::String(st) => self.string(v, st, s, path),
            Value::Array(items) => {
                let n = items.len() as f64;
                if let Some(max) = num(s, "maxItems").filter(|m| n > *m) {
                    self.causes.push((
                        path.to_string(),
                        format!("Too many: {}: must have at most {} items", items.len(), fmt_num(max)),
                    ));
                }
                if let Some(min) = num(s, "minItems").filter(|m| n < *m) {
                    self.invalid(
                        path,
                        &Value::from(items.len()),
                        format!("{path} in body should have at least {} items", fmt_num(min)),
                    );
                }
                if let Some(item_schema) = s.get("items").filter(|i| i.is_object()) {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item, item_schema, &format!("{path}[{i}]"), false);
                    }
                }
            }
            Value::Object(o) => {
                for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(name) = r.as_str() {
                        if !o.contains_key(name) {
                            self.causes.push((child(path, name), "Required value".into()));
                        }
                    }
                }
                let n = o.len() as f64;
                if let Some(max) = num(s, "maxProperties").filter(|m| n > *m) {
                    self.causes.push((
                        path.to_string(),
                        format!("Too many: {}: must have at most {} items", o.len(), fmt_num(max)),
                    ));
                }
                let declared = props(s);
                for (k, val) in o {
                    if root && (k == "metadata" || k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    if let Some(sub) = declared.and_then(|d| d.get(k)).or_else(|| additional(s)) {
                        self.walk(val, sub, &child(path, k), false);
                    }
                }
            }
            _ => {}
        }
    }

    fn number(&mut self, v: &Value, s: &Value, path: &str) {
        let Some(f) = v.as_f64() else { return };
        if let Some(min) = num(s, "minimum") {
            if flag(s, "exclusiveMinimum") && f <= min {
                self.invalid(
                    path,
                    v,
                    format!("{path} in body should be greater than {}", fmt_num(min)),
                );
            } else if f < min {
                self.invalid(
                    path,
                    v,
                    format!("{path} in body should be greater than or equal to {}", fmt_num(min)),
                );
            }
        }
        if let Some(max) = num(s, "maximum") {
            if flag(s, "exclusiveMaximum") && f >= max {
                self.invalid(path, v, format!("{path} in body should be less than {}", fmt_num(max)));
            } else if f > max {
                self.invalid(
                    path,
                    v,
                    format!("{path} in body should be less than or equal to {}", fmt_num(max)),
                );
            }
        }
    }

    fn string(&mut self, v: &Value, st: &str, s: &Value, path: &str) {
        let len = st.chars().count() as f64;
        if let Some(max) = num(s, "maxLength").filter(|m| len > *m) {
            self.causes.push((
                path.to_string(),
                format!("Too long: may not be more than {} bytes", fmt_num(max)),
            ));
        }
        if let Some(min) = num(s, "minLength").filter(|m| len < *m) {
            self.invalid(
                path,
                v,
                format!("{path} in body should be at least {} chars long", fmt_num(min)),
            );
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(p).ok() {
                Some(re) if !re.is_match(st) => {
                    self.invalid(path, v, format!("{path} in body should match '{p}'"));
                }
                _ => {}
            }
        }
    }
}

/// Violations of `schema` by `obj`, as (field, message) causes in upstream's words, e.g.
/// (`spec.replicas`, `Invalid value: "string": spec.replicas in body must be of type integer: "string"`).
pub fn validate(obj: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut v = Validator { causes: Vec::new() };
    v.walk(obj, schema, "", true);
    v.causes
}

/// Why a CRD version's `openAPIV3Schema` is not structural, as causes under `path`
/// (`spec.versions[0].schema.openAPIV3Schema`).
pub fn structural_errors(schema: &Value, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !schema.is_object() {
        out.push((path.to_string(), "Invalid value: must be an object".to_string()));
        return out;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or_default();
    if ty != "object" {
        out.push((
            format!("{path}.type"),
            if ty.is_empty() {
                "Required value: must not be empty at the root".to_string()
            } else {
                format!("Invalid value: {ty:?}: must be object at the root")
            },
        ));
    }
    structural_node(schema, path, &mut out);
    out
}

fn structural_node(s: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or_default();
    let untyped_ok = flag(s, "x-kubernetes-int-or-string") || preserves(s);
    if ty.is_empty() && !untyped_ok {
        out.push((
            format!("{path}.type"),
            "Required value: must not be empty for specified object fields".to_string(),
        ));
    }
    if !ty.is_empty() && !["object", "array", "string", "integer", "number", "boolean"].contains(&ty) {
        out.push((
            format!("{path}.type"),
            format!("Unsupported value: {ty:?}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        ));
    }
    if props(s).is_some() && additional(s).is_some() {
        out.push((
            format!("{path}.additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".to_string(),
        ));
    }
    if ty == "array" && s.get("items").is_none() {
        out.push((format!("{path}.items"), "Required value: must be specified".to_string()));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if regex::Regex::new(p).ok().is_none() {
            out.push((
                format!("{path}.pattern"),
                format!("Invalid value: {p:?}: must be a valid regular expression"),
            ));
        }
    }
    if let Some(ps) = props(s) {
        for (k, sub) in ps {
            structural_node(sub, &format!("{path}.properties[{k}]"), out);
        }
    }
    if let Some(a) = additional(s) {
        structural_node(a, &format!("{path}.additionalProperties"), out);
    }
    if let Some(i) = s.get("items").filter(|i| i.is_object()) {
        structural_node(i, &format!("{path}.items"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "string", "enum": ["small", "large"]},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "nullable": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
        }})
    }

    #[test]
    fn valid_objects_pass() {
        let obj = json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": "small", "replicas": 3, "name": "abc", "port": "http", "tags": ["a"],
                "labels": {"k": "v"}, "note": null, "extra": {"anything": [1, {"x": 2}]}}});
        assert_eq!(validate(&obj, &schema()), Vec::<(String, String)>::new());
        let obj = json!({"spec": {"size": "large", "port": 8080}});
        assert!(validate(&obj, &schema()).is_empty());
    }

    #[test]
    fn violations_in_upstream_words() {
        let obj = json!({"spec": {"replicas": "three", "name": "A", "port": true, "tags": ["a", "b", "c"],
            "labels": {"k": 1}, "note": 5, "size": "medium"}});
        let causes = validate(&obj, &schema());
        let want = [
            (
                "spec.replicas",
                "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            ),
            (
                "spec.name",
                "Invalid value: \"A\": spec.name in body should be at least 2 chars long",
            ),
            (
                "spec.name",
                "Invalid value: \"A\": spec.name in body should match '^[a-z]+$'",
            ),
            (
                "spec.port",
                "Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
            ),
            ("spec.tags", "Too many: 3: must have at most 2 items"),
            (
                "spec.labels.k",
                "Invalid value: \"integer\": spec.labels.k in body must be of type string: \"integer\"",
            ),
            (
                "spec.note",
                "Invalid value: \"integer\": spec.note in body must be of type string: \"integer\"",
            ),
            (
                "spec.size",
                "Unsupported value: \"medium\": supported values: \"small\", \"large\"",
            ),
        ];
        for (f, m) in want {
            assert!(
                causes.iter().any(|(cf, cm)| cf == f && cm == m),
                "missing {f}: {m} in {causes:?}"
            );
        }
        assert_eq!(causes.len(), want.len(), "{causes:?}");

        let missing = validate(&json!({"spec": {"replicas": 0}}), &schema());
        assert!(
            missing.contains(&("spec.size".into(), "Required value".into())),
            "{missing:?}"
        );
        assert!(missing.contains(&(
            "spec.replicas".into(),
            "Invalid value: 0: spec.replicas in body should be greater than or equal to 1".into()
        )));
        let big = validate(
            &json!({"spec": {"size": "small", "replicas": 11, "name": "abcdef"}}),
            &schema(),
        );
        assert!(big.contains(&(
            "spec.replicas".into(),
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10".into()
        )));
        assert!(big.contains(&("spec.name".into(), "Too long: may not be more than 5 bytes".into())));
        let null = validate(&json!({"spec": {"size": null}}), &schema());
        assert_eq!(null.len(), 1, "{null:?}");
    }

    #[test]
    fn pruning_keeps_declared_and_preserved_fields() {
        let mut obj = json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "a", "labels": {"l": "1"}},
            "top": 1,
            "spec": {"size": "small", "bogus": true, "labels": {"free": "x"}, "extra": {"kept": {"deep": 1}},
                "tags": ["a"]},
            "status": {"replicas": 1, "phase": "x"}});
        assert_eq!(
            unknown_fields(&obj, &schema()),
            vec![
                "unknown field \"spec.bogus\"".to_string(),
                "unknown field \"status.phase\"".to_string(),
                "unknown field \"top\"".to_string(),
            ]
        );
        prune(&mut obj, &schema(), true);
        assert_eq!(
            obj,
            json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "a", "labels": {"l": "1"}},
                "spec": {"size": "small", "labels": {"free": "x"}, "extra": {"kept": {"deep": 1}}, "tags": ["a"]},
                "status": {"replicas": 1}})
        );
        let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let mut any = json!({"spec": {"x": 1}});
        prune(&mut any, &open, true);
        assert_eq!(any, json!({"spec": {"x": 1}}));
    }

    #[test]
    fn defaults_fill_missing_fields_and_drop_disallowed_nulls() {
        let mut obj = json!({"spec": {"size": "small", "name": null, "note": null}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj, json!({"spec": {"size": "small", "replicas": 1, "note": null}}));
    }

    #[test]
    fn structural_checks() {
        assert!(structural_errors(&schema(), "s").is_empty());
        let bad = json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "array"}},
            "additionalProperties": {"type": "string"}}, "p": {"type": "string", "pattern": "("}}});
        let errs = structural_errors(&bad, "spec.versions[0].schema.openAPIV3Schema");
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties[p].pattern",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].additionalProperties",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[a].items",
            ],
            "{errs:?}"
        );
        assert_eq!(
            structural_errors(&json!({"type": "string"}), "x"),
            vec![(
                "x.type".to_string(),
                "Invalid value: \"string\": must be object at the root".to_string()
            )]
        );
    }
}
