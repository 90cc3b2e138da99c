//! Patch application: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) through `json-patch`; strategic
//! merge patch for built-in kinds, which merges lists as their schema says (`x-kubernetes-patch-strategy:
//! merge`: objects by `x-kubernetes-patch-merge-key`, e.g. containers by `name`, ports by `containerPort`,
//! scalars such as finalizers as a union; every other list is replaced), with `$patch: delete|replace`,
//! `$retainKeys` and `$deleteFromPrimitiveList` (`$setElementOrder` is accepted and ignored); and the merge
//! of a server-side apply, whose lists follow `x-kubernetes-list-type` (`crate::openapi::SchemaNode` gives
//! both answers).

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openapi::{ListType, PatchStrategy, SchemaNode};

pub enum PatchType {
    Json,
    Merge,
    Strategic,
    /// Server-side apply: the applied object merges over the live one as structured-merge-diff merges (map
    /// lists by their keys, sets by value, the rest replaced); field ownership (conflicts, removal of
    /// fields no longer applied) is `crate::fieldmanager`'s.
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies `body` to `current`, an object of schema `schema`.
pub fn apply(kind: &PatchType, current: &Value, body: &[u8], schema: SchemaNode<'_>) -> Result<Value, ApiError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = current.clone();
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Strategic => {
            let Value::Object(p) = patch else {
                return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
            };
            doc = strategic(doc, p, schema);
        }
        PatchType::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("the applied configuration must be a JSON object"));
            }
            doc = merge_applied(doc, patch, schema);
        }
    }
    Ok(doc)
}

/// The `$patch` directive of a patch object, if any.
fn directive(m: &Map<String, Value>) -> Option<&str> {
    m.get("$patch").and_then(Value::as_str)
}

fn strategic(target: Value, mut patch: Map<String, Value>, schema: SchemaNode<'_>) -> Value {
    if directive(&patch) == Some("replace") {
        patch.remove("$patch");
        return Value::Object(patch);
    }
    let mut out = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(Value::Array(keep)) = patch.remove("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut deletions: Vec<(String, Vec<Value>)> = Vec::new();
    patch.retain(|k, v| {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            deletions.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            return false;
        }
        !k.starts_with('$')
    });
    for (k, pv) in patch {
        let field = schema.field(&k);
        match pv {
            Value::Null => {
                out.remove(&k);
            }
            Value::Object(pm) => {
                if directive(&pm) == Some("delete") {
                    out.remove(&k);
                    continue;
                }
                let cur = out.remove(&k).unwrap_or(Value::Null);
                out.insert(k, strategic(cur, pm, field));
            }
            Value::Array(items) => {
                let merged = match out.remove(&k) {
                    Some(Value::Array(cur)) => merge_list(cur, items, field),
                    _ => Value::Array(items.into_iter().filter(|i| i.get("$patch").is_none()).collect()),
                };
                out.insert(k, merged);
            }
            other => {
                out.insert(k, other);
            }
        }
    }
    for (field, gone) in deletions {
        if let Some(Value::Array(a)) = out.get_mut(&field) {
            a.retain(|x| !gone.contains(x));
        }
    }
    Value::Object(out)
}

/// A list of a strategic merge patch over the current one, at `schema`: merged where the schema's patch
/// strategy says so, replaced otherwise (and wherever the patch says `$patch: replace`).
fn merge_list(mut cur: Vec<Value>, patch: Vec<Value>, schema: SchemaNode<'_>) -> Value {
    if patch
        .iter()
        .any(|i| i.as_object().and_then(directive) == Some("replace"))
    {
        return Value::Array(patch.into_iter().filter(|i| i.get("$patch").is_none()).collect());
    }
    let key = match schema.list().patch {
        PatchStrategy::Replace => return Value::Array(patch),
        PatchStrategy::Merge(None) => {
            // A list of scalars: the union, current order first.
            for item in patch {
                if !cur.contains(&item) {
                    cur.push(item);
                }
            }
            return Value::Array(cur);
        }
        PatchStrategy::Merge(Some(key)) => key,
    };
    let item_schema = schema.items();
    for item in patch {
        let Value::Object(mut pm) = item else { continue };
        let id = pm.get(&key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| cur.iter().position(|c| c.get(&key) == Some(id)));
        if directive(&pm) == Some("delete") {
            if let Some(i) = pos {
                cur.remove(i);
            }
            continue;
        }
        pm.remove("$patch");
        match pos {
            Some(i) => {
                let old = std::mem::take(&mut cur[i]);
                cur[i] = strategic(old, pm, item_schema);
            }
            None => cur.push(strategic(Value::Null, pm, item_schema)),
        }
    }
    Value::Array(cur)
}

/// The applied configuration of a server-side apply merged over the live object, at `schema`: objects
/// field by field (unless atomic), map lists item by item by their keys, sets as a union, everything else
/// replaced.
fn merge_applied(live: Value, applied: Value, schema: SchemaNode<'_>) -> Value {
    match applied {
        Value::Object(am) if !schema.atomic_map() => {
            let mut out = match live {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            for (k, av) in am {
                if av.is_null() {
                    out.remove(&k);
                    continue;
                }
                let cur = out.remove(&k).unwrap_or(Value::Null);
                let merged = merge_applied(cur, av, schema.field(&k));
                out.insert(k, merged);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let Value::Array(mut cur) = live else {
                return Value::Array(items);
            };
            match schema.list().apply {
                ListType::Atomic => Value::Array(items),
                ListType::Set => {
                    for item in items {
                        if !cur.contains(&item) {
                            cur.push(item);
                        }
                    }
                    Value::Array(cur)
                }
                ListType::Map(keys) => {
                    let item_schema = schema.items();
                    let key = |i: &Value| -> Vec<Option<Value>> {
                        keys.iter()
                            .map(|k| i.get(k).or_else(|| item_schema.default_of(k)).cloned())
                            .collect()
                    };
                    for item in items {
                        let id = key(&item);
                        match cur.iter().position(|c| key(c) == id) {
                            Some(i) => {
                                let old = std::mem::take(&mut cur[i]);
                                cur[i] = merge_applied(old, item, item_schema);
                            }
                            None => cur.push(merge_applied(Value::Null, item, item_schema)),
                        }
                    }
                    Value::Array(cur)
                }
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> SchemaNode<'static> {
        SchemaNode::of_builtin("", "v1", "Pod")
    }

    fn smp(cur: &Value, patch: Value, schema: SchemaNode<'_>) -> Value {
        apply(&PatchType::Strategic, cur, patch.to_string().as_bytes(), schema).unwrap()
    }

    #[test]
    fn strategic_lists_follow_the_patch_strategy() {
        let cur = json!({"metadata": {"finalizers": ["a"]}, "spec": {
            "tolerations": [{"key": "x", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i", "args": ["-a", "-b"],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}});
        let out = smp(
            &cur,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {
                "tolerations": [{"key": "y", "operator": "Exists"}],
                "containers": [{"name": "c", "args": ["-z"], "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 81}],
                    "env": [{"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "w", "mountPath": "/v"}]}]}}),
            pod(),
        );
        // Lists without a merge strategy are replaced.
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "y", "operator": "Exists"}]));
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["-z"]));
        assert_eq!(c["image"], "i");
        // Merged by their merge keys: ports by containerPort, env by name, volumeMounts by mountPath.
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 81}])
        );
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(c["volumeMounts"], json!([{"name": "w", "mountPath": "/v"}]));
        // A merge list of scalars: the union.
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        // Without a schema nothing is merged (no guessing by field names).
        let out = smp(
            &cur,
            json!({"spec": {"containers": [{"name": "d"}]}}),
            SchemaNode::UNKNOWN,
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "d"}]));
    }

    #[test]
    fn apply_merges_lists_by_list_type() {
        let cur = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c", "image": "i",
            "args": ["-a"], "ports": [{"containerPort": 53, "protocol": "TCP"}]}]}});
        let applied = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "c",
            "args": ["-z"], "ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "name": "dns"}]}]}});
        let out = apply(&PatchType::Apply, &cur, applied.to_string().as_bytes(), pod()).unwrap();
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["-z"]));
        // The port without protocol is the TCP one (its default); UDP is another item.
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 53, "protocol": "TCP", "name": "dns"}, {"containerPort": 53, "protocol": "UDP"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let cur = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}});
        let patch = json!({"$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "metadata": {"labels": {"a": null, "b": "2"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:2"}, {"name": "side", "$patch": "delete"}]}});
        let out = apply(&PatchType::Strategic, &cur, patch.to_string().as_bytes(), pod()).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let cur = json!({"data": {"a": "1"}});
        let cm = SchemaNode::of_builtin("", "v1", "ConfigMap");
        let out = apply(
            &PatchType::Json,
            &cur,
            br#"[{"op":"add","path":"/data/b","value":"2"}]"#,
            cm,
        )
        .unwrap();
        assert_eq!(out["data"]["b"], "2");
        let out = apply(&PatchType::Merge, &cur, br#"{"data":{"a":null}}"#, cm).unwrap();
        assert_eq!(out["data"], json!({}));
        assert!(apply(&PatchType::Json, &cur, br#"[{"op":"remove","path":"/nope"}]"#, cm).is_err());
    }
}
