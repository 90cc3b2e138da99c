//! Structural schemas (`openAPIV3Schema` of a CRD version): validation of custom resources with
//! upstream-style field causes, pruning of undeclared fields, defaulting, and the structural checks a CRD's
//! schema must pass. Evaluated: `type`, `properties`, `additionalProperties`, `items`, `required`, `enum`,
//! `minimum`/`maximum` (and their `exclusive*` flags), `multipleOf`, `minLength`/`maxLength`, `pattern`,
//! `format`, `minItems`/`maxItems`, `minProperties`/`maxProperties`, `nullable`, `default`, the junctors
//! `allOf`/`anyOf`/`oneOf`/`not`, `x-kubernetes-list-type` set and map uniqueness,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string` and
//! `x-kubernetes-embedded-resource`, and CEL rules (`x-kubernetes-validations`, in `cel.rs`).
//!
//! Junctor failures are reported as upstream reports them: not as a field error but as an invalid empty
//! value at the root (`<nil>: Invalid value: "": "spec" must validate one and only one schema (oneOf)...`).

use serde_json::{Map, Value};

use crate::openapi::{ListType, SchemaNode};

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
        self.junctors(v, s, path, root);
        if s.get("x-kubernetes-validations").is_some() {
            let ty = s.get("type").and_then(Value::as_str).unwrap_or_else(|| type_name(v));
            self.causes.extend(crate::crd::cel::check(v, s, path, ty));
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
                self.list_uniqueness(items, s, path);
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
                if let Some(min) = num(s, "minProperties").filter(|m| n < *m) {
                    self.invalid(
                        path,
                        &Value::from(min as i64),
                        format!("{path} in body should have at least {} properties", fmt_num(min)),
                    );
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
        if let Some(factor) = num(s, "multipleOf").filter(|m| *m > 0.0) {
            let q = f / factor;
            if (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
                self.invalid(
                    path,
                    v,
                    format!("{path} in body should be a multiple of {}", fmt_num(factor)),
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
        if let Some(f) = s.get("format").and_then(Value::as_str) {
            if crate::crd::formats::check(f, st) == Some(false) {
                self.invalid(path, v, format!("{path} in body must be of type {f}: {st:?}"));
            }
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

/// Where upstream reports errors that belong to no single field (junctor failures): a nil field path.
const NO_FIELD: &str = "<nil>";

impl Validator {
    fn alternative(v: &Value, s: &Value, path: &str, root: bool) -> Vec<(String, String)> {
        let mut sub = Validator { causes: Vec::new() };
        sub.walk(v, s, path, root);
        sub.causes
    }

    fn composite(&mut self, why: String) {
        self.causes
            .push((NO_FIELD.to_string(), format!("Invalid value: \"\": {why}")));
    }

    /// `anyOf`, `oneOf`, `allOf` and `not`, with upstream's reporting: the junctor's own message, plus the
    /// causes of the alternative that came closest (fewest causes) when none matched.
    fn junctors(&mut self, v: &Value, s: &Value, path: &str, root: bool) {
        let quoted = format!("{path:?}");
        let list = |key: &str| s.get(key).and_then(Value::as_array).filter(|a| !a.is_empty());
        let closest = |results: Vec<Vec<(String, String)>>| results.into_iter().min_by_key(Vec::len);
        if let Some(alts) = list("anyOf") {
            let results: Vec<_> = alts.iter().map(|a| Self::alternative(v, a, path, root)).collect();
            if !results.iter().any(Vec::is_empty) {
                self.composite(format!("{quoted} must validate at least one schema (anyOf)"));
                self.causes.extend(closest(results).unwrap_or_default());
            }
        }
        if let Some(alts) = list("oneOf") {
            let results: Vec<_> = alts.iter().map(|a| Self::alternative(v, a, path, root)).collect();
            match results.iter().filter(|r| r.is_empty()).count() {
                1 => {}
                0 => {
                    self.composite(format!(
                        "{quoted} must validate one and only one schema (oneOf). Found none valid"
                    ));
                    self.causes.extend(closest(results).unwrap_or_default());
                }
                n => self.composite(format!(
                    "{quoted} must validate one and only one schema (oneOf). Found {n} valid alternatives"
                )),
            }
        }
        if let Some(alts) = list("allOf") {
            let mut valid = 0;
            for a in alts {
                let r = Self::alternative(v, a, path, root);
                valid += usize::from(r.is_empty());
                self.causes.extend(r);
            }
            if valid != alts.len() {
                let none = if valid == 0 { ". None validated" } else { "" };
                self.composite(format!("{quoted} must validate all the schemas (allOf){none}"));
            }
        }
        if let Some(not) = s.get("not").filter(|n| n.is_object()) {
            if Self::alternative(v, not, path, root).is_empty() {
                self.composite(format!("{quoted} must not validate the schema (not)"));
            }
        }
    }

    /// `x-kubernetes-list-type: set` (no item twice) and `map` (no two items with the same keys).
    fn list_uniqueness(&mut self, items: &[Value], s: &Value, path: &str) {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        self.causes
                            .push((format!("{path}[{i}]"), format!("Duplicate value: {}", go_shown(item))));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let key_of = |item: &Value| -> Option<Map<String, Value>> {
                    let o = item.as_object()?;
                    Some(
                        keys.iter()
                            .filter_map(|k| o.get(*k).map(|v| (k.to_string(), v.clone())))
                            .collect(),
                    )
                };
                let mut seen: Vec<Map<String, Value>> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let Some(key) = key_of(item) else { continue };
                    if seen.contains(&key) {
                        self.causes.push((
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {}", go_shown(&Value::Object(key))),
                        ));
                    } else {
                        seen.push(key);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A value as Go's `%#v` prints an unstructured one (what upstream's duplicate errors show).
fn go_shown(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(a) => format!(
            "[]interface {{}}{{{}}}",
            a.iter().map(go_shown).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "map[string]interface {{}}{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{k:?}:{}", go_shown(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The keys by which items of the list at `s` correlate with the stored list's items (upstream's rule for
/// transition rules): those of an `x-kubernetes-list-type: map` list, by their key fields. Set, atomic and
/// untyped lists do not correlate (None). The list type is read as server-side apply reads it.
fn correlating_keys(s: &Value) -> Option<Vec<String>> {
    // Only the node's list extensions are read (`of_custom` would also treat a `metadata` below it as
    // ObjectMeta).
    match SchemaNode::of_custom(Some(s)).list().apply {
        ListType::Map(keys) => Some(keys),
        ListType::Set | ListType::Atomic => None,
    }
}

/// The stored counterpart of `item` in the stored list `old` of a map list with these `keys`: the first
/// stored item with the same scalar values for all keys. Items missing a key, or with a non-scalar one,
/// have none.
fn correlated_item<'a>(keys: &[String], old: &'a [Value], item: &Value) -> Option<&'a Value> {
    let key_of = |v: &Value| -> Option<Vec<Value>> {
        let o = v.as_object()?;
        keys.iter()
            .map(|k| {
                o.get(k)
                    .filter(|v| v.is_string() || v.is_number() || v.is_boolean())
                    .cloned()
            })
            .collect()
    };
    let key = key_of(item)?;
    old.iter().find(|o| key_of(o).as_ref() == Some(&key))
}

/// An update's violations of the CEL transition rules (`oldSelf`) of `schema`, at every node where the
/// stored object `old` has a correlated value (the same field of an object or map; in a map list the item
/// with the same keys), and of the `optionalOldSelf` ones where it has none.
pub fn validate_transitions(new: &Value, old: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    transitions(new, Some(old), schema, "", &mut out);
    out
}

/// Whether `s` declares `x-kubernetes-validations` at any depth.
pub fn has_cel_rules(s: &Value) -> bool {
    match s {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_cel_rules),
        Value::Array(a) => a.iter().any(has_cel_rules),
        _ => false,
    }
}

/// A create's violations of the `optionalOldSelf` transition rules of `schema`, which run with `oldSelf`
/// unset (upstream runs them on create too). Rules without `optionalOldSelf` do not run.
pub fn validate_create_transitions(new: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    transitions(new, None, schema, "", &mut out);
    out
}

fn transitions(new: &Value, old: Option<&Value>, s: &Value, path: &str, out: &mut Vec<(String, String)>) {
    // As upstream, rules validate non-null values only, and a stored null is no stored value.
    if new.is_null() {
        return;
    }
    let old = old.filter(|o| !o.is_null());
    if s.get("x-kubernetes-validations").is_some() {
        let ty = s.get("type").and_then(Value::as_str).unwrap_or_else(|| type_name(new));
        out.extend(crate::crd::cel::check_transition(new, old, s, path, ty));
    }
    match new {
        Value::Object(n) => {
            let old = old.and_then(Value::as_object);
            for (k, nv) in n {
                if path.is_empty() && ROOT_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let Some(sub) = props(s).and_then(|p| p.get(k)).or_else(|| additional(s)) else {
                    continue;
                };
                transitions(nv, old.and_then(|o| o.get(k)), sub, &child(path, k), out);
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = s.get("items").filter(|i| i.is_object()) else {
                return;
            };
            let old = old.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let keys = correlating_keys(s);
            for (i, item) in items.iter().enumerate() {
                let ov = keys.as_deref().and_then(|k| correlated_item(k, old, item));
                transitions(item, ov, item_schema, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
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
    structural_node(schema, path, None, &mut out);
    out
}

/// `uncorrelatable`: the path of the outermost list above `s` whose items do not correlate with stored
/// ones, where transition rules (`oldSelf`) are refused as upstream refuses them.
fn structural_node(s: &Value, path: &str, uncorrelatable: Option<&str>, out: &mut Vec<(String, String)>) {
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
            structural_node(sub, &format!("{path}.properties[{k}]"), uncorrelatable, out);
        }
    }
    if let Some(a) = additional(s) {
        structural_node(a, &format!("{path}.additionalProperties"), uncorrelatable, out);
    }
    if let Some(i) = s.get("items").filter(|i| i.is_object()) {
        let below = uncorrelatable.or_else(|| correlating_keys(s).is_none().then_some(path));
        structural_node(i, &format!("{path}.items"), below, out);
    }
    list_type_errors(s, ty, path, out);
    crate::crd::cel::compile_errors(s, path, uncorrelatable, out);
    for_each_junctor(s, path, &mut |sub, vpath| {
        nested_errors(sub, vpath, out);
        completeness_errors(sub, s, path, vpath, out);
    });
}

/// `x-kubernetes-list-type` and its keys, and `uniqueItems` (which upstream refuses).
fn list_type_errors(s: &Value, ty: &str, path: &str, out: &mut Vec<(String, String)>) {
    let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
    let has_keys = s
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .is_some_and(|k| !k.is_empty());
    if let Some(lt) = list_type {
        if !["atomic", "set", "map"].contains(&lt) {
            out.push((
                format!("{path}.x-kubernetes-list-type"),
                format!("Unsupported value: {lt:?}: supported values: \"atomic\", \"set\", \"map\""),
            ));
        }
        if ty != "array" {
            out.push((
                format!("{path}.x-kubernetes-list-type"),
                format!("Invalid value: {lt:?}: must only be used if type == array"),
            ));
        } else if lt == "map" && !has_keys {
            out.push((
                format!("{path}.x-kubernetes-list-map-keys"),
                "Required value: must not be empty if x-kubernetes-list-type is map".to_string(),
            ));
        }
    }
    if has_keys && list_type != Some("map") {
        out.push((
            format!("{path}.x-kubernetes-list-map-keys"),
            "Forbidden: must only be used if x-kubernetes-list-type is map".to_string(),
        ));
    }
    if flag(s, "uniqueItems") {
        out.push((
            format!("{path}.uniqueItems"),
            "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic".to_string(),
        ));
    }
}

/// Whether `alts` is the one junctor upstream allows to carry types: `anyOf: [{type: integer}, {type:
/// string}]`, the spelled-out form of `x-kubernetes-int-or-string`.
fn is_int_or_string_any_of(alts: &[Value]) -> bool {
    let only_type = |a: &Value, t: &str| {
        a.as_object()
            .is_some_and(|o| o.len() == 1 && o.get("type").and_then(Value::as_str) == Some(t))
    };
    alts.len() == 2 && only_type(&alts[0], "integer") && only_type(&alts[1], "string")
}

/// Calls `f` with every junctor schema directly under `s` and its path (`{path}.anyOf[0]`), leaving out
/// the int-or-string `anyOf`, which upstream allows to name types.
fn for_each_junctor(s: &Value, path: &str, f: &mut dyn FnMut(&Value, &str)) {
    for key in ["allOf", "anyOf", "oneOf"] {
        let alts = s.get(key).and_then(Value::as_array);
        if key == "anyOf" && alts.is_some_and(|a| is_int_or_string_any_of(a)) {
            continue;
        }
        for (i, sub) in s.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            f(sub, &format!("{path}.{key}[{i}]"));
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        f(not, &format!("{path}.not"));
    }
}

/// What a schema under a junctor must not say (it may only restrict values, never shape them).
fn nested_errors(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for_each_junctor(v, path, &mut |sub, sub_path| nested_errors(sub, sub_path, out));
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        nested_errors(items, &format!("{path}.items"), out);
    }
    if let Some(ps) = props(v) {
        for (k, sub) in ps {
            nested_errors(sub, &format!("{path}.properties[{k}]"), out);
        }
    }
    let set = |key: &str| match v.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let forbidden: [(&str, &str); 11] = [
        ("type", "must be empty to be structural"),
        ("additionalProperties", "must be undefined to be structural"),
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
        ("x-kubernetes-embedded-resource", "must be false to be structural"),
        ("x-kubernetes-int-or-string", "must be false to be structural"),
        ("x-kubernetes-list-map-keys", "must be empty to be structural"),
        ("x-kubernetes-list-type", "must be undefined to be structural"),
    ];
    for (key, why) in forbidden {
        if set(key) {
            out.push((format!("{path}.{key}"), format!("Forbidden: {why}")));
        }
    }
    if props(v).is_some_and(|p| p.contains_key("metadata")) {
        out.push((
            format!("{path}.properties[metadata]"),
            "Forbidden: must not be specified in a nested context".to_string(),
        ));
    }
}

/// Every property or items a junctor schema `v` (at `vpath`) talks about must also be declared by the
/// structural schema `s` (at `spath`): the junctor restricts values, it cannot add fields.
fn completeness_errors(v: &Value, s: &Value, spath: &str, vpath: &str, out: &mut Vec<(String, String)>) {
    for_each_junctor(v, vpath, &mut |sub, sub_path| {
        completeness_errors(sub, s, spath, sub_path, out)
    });
    if let Some(vi) = v.get("items").filter(|i| i.is_object()) {
        let (sp, vp) = (format!("{spath}.items"), format!("{vpath}.items"));
        match s.get("items").filter(|i| i.is_object()) {
            Some(si) => completeness_errors(vi, si, &sp, &vp, out),
            None => out.push((sp, format!("Required value: because it is defined in {vp}"))),
        }
    }
    for (k, vf) in props(v).into_iter().flatten() {
        let (sp, vp) = (format!("{spath}.properties[{k}]"), format!("{vpath}.properties[{k}]"));
        match props(s).and_then(|p| p.get(k)) {
            Some(sf) => completeness_errors(vf, sf, &sp, &vp, out),
            None => out.push((sp, format!("Required value: because it is defined in {vp}"))),
        }
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

    fn has(causes: &[(String, String)], field: &str, msg: &str) -> bool {
        causes.iter().any(|(f, m)| f == field && m == msg)
    }

    #[test]
    fn junctors_report_as_upstream() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "n": {"type": "integer"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            "anyOf": [{"properties": {"n": {"minimum": 10}}}, {"properties": {"n": {"maximum": 0}}}],
            "not": {"required": ["n"], "properties": {"n": {"enum": [5]}}},
            "allOf": [{"properties": {"a": {"maxLength": 3}}}]}}});
        assert!(validate(&json!({"spec": {"a": "x", "n": 20}}), &s).is_empty());
        let none = validate(&json!({"spec": {"n": 20}}), &s);
        assert!(
            has(
                &none,
                "<nil>",
                "Invalid value: \"\": \"spec\" must validate one and only one schema (oneOf). Found none valid"
            ),
            "{none:?}"
        );
        assert!(has(&none, "spec.a", "Required value"), "{none:?}");
        let both = validate(&json!({"spec": {"a": "x", "b": "y"}}), &s);
        assert!(
            has(
                &both,
                "<nil>",
                "Invalid value: \"\": \"spec\" must validate one and only one schema (oneOf). Found 2 valid alternatives"
            ),
            "{both:?}"
        );
        let any = validate(&json!({"spec": {"a": "x", "n": 5}}), &s);
        assert!(
            has(
                &any,
                "<nil>",
                "Invalid value: \"\": \"spec\" must validate at least one schema (anyOf)"
            ),
            "{any:?}"
        );
        assert!(
            has(
                &any,
                "<nil>",
                "Invalid value: \"\": \"spec\" must not validate the schema (not)"
            ),
            "{any:?}"
        );
        assert!(
            has(
                &any,
                "spec.n",
                "Invalid value: 5: spec.n in body should be greater than or equal to 10"
            ),
            "{any:?}"
        );
        let all = validate(&json!({"spec": {"a": "long", "n": 20}}), &s);
        assert!(has(&all, "spec.a", "Too long: may not be more than 3 bytes"), "{all:?}");
        assert!(
            has(
                &all,
                "<nil>",
                "Invalid value: \"\": \"spec\" must validate all the schemas (allOf). None validated"
            ),
            "{all:?}"
        );
    }

    #[test]
    fn formats_multiples_properties_and_list_types() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "minProperties": 1,
            "properties": {
                "when": {"type": "string", "format": "date-time"},
                "step": {"type": "number", "multipleOf": 0.5},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "properties": {
                        "port": {"type": "integer"}, "protocol": {"type": "string"}, "name": {"type": "string"}}}}}}}});
        let ok = json!({"spec": {"when": "2024-01-02T03:04:05Z", "step": 1.5, "tags": ["a", "b"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"}]}});
        assert!(validate(&ok, &s).is_empty(), "{:?}", validate(&ok, &s));
        let bad = json!({"spec": {"when": "soon", "step": 1.2, "tags": ["a", "b", "a"],
            "ports": [{"port": 80, "protocol": "TCP", "name": "x"}, {"port": 80, "protocol": "TCP"}]}});
        let c = validate(&bad, &s);
        let want = [
            (
                "spec.when",
                "Invalid value: \"soon\": spec.when in body must be of type date-time: \"soon\"",
            ),
            (
                "spec.step",
                "Invalid value: 1.2: spec.step in body should be a multiple of 0.5",
            ),
            ("spec.tags[2]", "Duplicate value: \"a\""),
            (
                "spec.ports[1]",
                "Duplicate value: map[string]interface {}{\"port\":80, \"protocol\":\"TCP\"}",
            ),
        ];
        for (f, m) in want {
            assert!(has(&c, f, m), "missing {f}: {m} in {c:?}");
        }
        assert_eq!(c.len(), want.len(), "{c:?}");
        let empty = validate(&json!({"spec": {}}), &s);
        assert_eq!(
            empty,
            vec![(
                "spec".to_string(),
                "Invalid value: 1: spec in body should have at least 1 properties".to_string()
            )]
        );
    }

    #[test]
    fn junctors_may_only_restrict_values() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let s = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}},
                "anyOf": [{"type": "object", "description": "d", "properties": {"b": {"maxLength": 1}}}],
                "oneOf": [{"properties": {"a": {"nullable": true}}}]},
            "port": {"x-kubernetes-int-or-string": true,
                "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "list": {"type": "array", "items": {"type": "string"}, "uniqueItems": true,
                "x-kubernetes-list-type": "map"},
            "n": {"type": "string", "x-kubernetes-list-type": "set"}}});
        let errs = structural_errors(&s, p);
        let want = [
            (format!("{p}.properties[spec].anyOf[0].type"), "Forbidden: must be empty to be structural"),
            (
                format!("{p}.properties[spec].anyOf[0].description"),
                "Forbidden: must be empty to be structural",
            ),
            (
                format!("{p}.properties[spec].oneOf[0].properties[a].nullable"),
                "Forbidden: must be false to be structural",
            ),
            (
                format!("{p}.properties[spec].properties[b]"),
                "Required value: because it is defined in spec.versions[0].schema.openAPIV3Schema.properties[spec].anyOf[0].properties[b]",
            ),
            (
                format!("{p}.properties[list].x-kubernetes-list-map-keys"),
                "Required value: must not be empty if x-kubernetes-list-type is map",
            ),
            (
                format!("{p}.properties[list].uniqueItems"),
                "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ),
            (
                format!("{p}.properties[n].x-kubernetes-list-type"),
                "Invalid value: \"set\": must only be used if type == array",
            ),
        ];
        for (f, m) in &want {
            assert!(has(&errs, f, m), "missing {f}: {m} in {errs:?}");
        }
        assert_eq!(errs.len(), want.len(), "{errs:?}");
    }

    /// `spec.items`, a list of `{name, size}` objects whose sizes are immutable, of list type `list_type`
    /// (a map keyed by `name`).
    fn sized_items(list_type: Option<&str>) -> Value {
        let mut items = json!({"type": "array", "items": {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.size == oldSelf.size", "message": "size is immutable"}]}});
        if let Some(t) = list_type {
            items["x-kubernetes-list-type"] = json!(t);
            if t == "map" {
                items["x-kubernetes-list-map-keys"] = json!(["name"]);
            }
        }
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"items": items}}}})
    }

    #[test]
    fn transition_rules_in_map_lists_correlate_by_key() {
        let s = sized_items(Some("map"));
        assert!(
            structural_errors(&s, "p").is_empty(),
            "{:?}",
            structural_errors(&s, "p")
        );
        let old = json!({"spec": {"items": [{"name": "a", "size": 1}, {"name": "b", "size": 2}]}});
        // `b` changed its size (and moved); `c` is new, with nothing to compare to.
        let new = json!({"spec": {"items": [{"name": "b", "size": 3}, {"name": "a", "size": 1},
            {"name": "c", "size": 9}]}});
        assert_eq!(
            validate_transitions(&new, &old, &s),
            vec![(
                "spec.items[0]".to_string(),
                "Invalid value: \"object\": size is immutable".to_string()
            )]
        );
        let reordered = json!({"spec": {"items": [{"name": "b", "size": 2}, {"name": "a", "size": 1}]}});
        assert!(validate_transitions(&reordered, &old, &s).is_empty());
        // An item without its key correlates with nothing.
        let keyless = json!({"spec": {"items": [{"size": 7}]}});
        assert!(validate_transitions(&keyless, &json!({"spec": {"items": [{"size": 1}]}}), &s).is_empty());
    }

    #[test]
    fn transition_rules_do_not_run_in_uncorrelatable_lists() {
        let old = json!({"spec": {"items": [{"name": "a", "size": 1}]}});
        let new = json!({"spec": {"items": [{"name": "a", "size": 5}]}});
        for list_type in [Some("set"), Some("atomic"), None] {
            let s = sized_items(list_type);
            assert!(validate_transitions(&new, &old, &s).is_empty(), "{list_type:?}");
            // And a CRD saying so is refused, as upstream refuses it.
            assert_eq!(
                structural_errors(&s, "p"),
                vec![(
                    "p.properties[spec].properties[items].items.x-kubernetes-validations[0].rule".to_string(),
                    "Invalid value: \"self.size == oldSelf.size\": oldSelf cannot be used on the uncorrelatable portion of the schema within p.properties[spec].properties[items]".to_string()
                )],
                "{list_type:?}"
            );
        }
    }

    #[test]
    fn transition_rules_on_lists_maps_and_with_optional_old_self() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-validations": [
                {"rule": "self.size() >= oldSelf.size()", "message": "tags may only be added"}]},
            "limits": {"type": "object", "additionalProperties": {"type": "integer", "x-kubernetes-validations": [
                {"rule": "self >= oldSelf", "message": "limits may only grow"}]}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "properties": {
                    "port": {"type": "integer"}, "protocol": {"type": "string"}, "name": {"type": "string"}},
                    "x-kubernetes-validations": [
                        {"rule": "oldSelf.hasValue() || self.name.startsWith('p-')", "optionalOldSelf": true,
                            "message": "new ports are named p-*"},
                        {"rule": "self.name == oldSelf.name", "message": "names are immutable"}]}}}}}});
        assert!(
            structural_errors(&s, "p").is_empty(),
            "{:?}",
            structural_errors(&s, "p")
        );
        let old = json!({"spec": {"tags": ["a", "b"], "limits": {"cpu": 2, "mem": 4},
            "ports": [{"port": 80, "protocol": "TCP", "name": "web"}]}});
        let new = json!({"spec": {"tags": ["a"], "limits": {"cpu": 1, "mem": 4, "disk": 1},
            "ports": [{"port": 80, "protocol": "UDP", "name": "dns"}, {"port": 80, "protocol": "TCP", "name": "www"}]}});
        let mut got = validate_transitions(&new, &old, &s);
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "spec.limits.cpu".to_string(),
                    "Invalid value: \"integer\": limits may only grow".to_string()
                ),
                (
                    "spec.ports[0]".to_string(),
                    "Invalid value: \"object\": new ports are named p-*".to_string()
                ),
                (
                    "spec.ports[1]".to_string(),
                    "Invalid value: \"object\": names are immutable".to_string()
                ),
                (
                    "spec.tags".to_string(),
                    "Invalid value: \"array\": tags may only be added".to_string()
                ),
            ]
        );
        // Where the stored object has no list, the list's own rule does not run.
        assert!(validate_transitions(&json!({"spec": {"tags": []}}), &json!({"spec": {}}), &s).is_empty());
        // On create only the optionalOldSelf rules run.
        let created = json!({"spec": {"ports": [{"port": 1, "protocol": "TCP", "name": "x"},
            {"port": 2, "protocol": "TCP", "name": "p-2"}]}});
        assert_eq!(
            validate_create_transitions(&created, &s),
            vec![(
                "spec.ports[0]".to_string(),
                "Invalid value: \"object\": new ports are named p-*".to_string()
            )]
        );
    }
}
