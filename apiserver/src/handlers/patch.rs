//! Patch application: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) through `json-patch`, and a
//! strategic merge patch covering what kubectl sends for built-in kinds: maps merge, lists of objects
//! merge by their `name` key (containers, ports, env, volumes... upstream's patchMergeKey for most lists),
//! `$patch: delete|replace`, `$retainKeys`, and the `$setElementOrder`/`$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

use crate::error::ApiError;

pub enum PatchType {
    Json,
    Merge,
    Strategic,
    /// Server-side apply: the applied object merges over the live one like a strategic merge patch; field
    /// ownership (conflicts, removal of fields no longer applied) is `crate::fieldmanager`'s.
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

pub fn apply(kind: &PatchType, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
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
        PatchType::Strategic | PatchType::Apply => {
            let Value::Object(p) = patch else {
                return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
            };
            doc = strategic(doc, p);
        }
    }
    Ok(doc)
}

const MERGE_KEYS: &[&str] = &[
    "name",
    "containerPort",
    "mountPath",
    "devicePath",
    "ip",
    "type",
    "topologyKey",
];

/// The merge key of a list of objects, if its items all carry one of the known keys.
pub(crate) fn merge_key(items: &[Value]) -> Option<&'static str> {
    let first = items.iter().find_map(Value::as_object)?;
    MERGE_KEYS
        .iter()
        .copied()
        .find(|k| first.contains_key(*k) && items.iter().all(|i| i.get(*k).is_some()))
}

fn strategic(target: Value, mut patch: Map<String, Value>) -> Value {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
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
        match pv {
            Value::Null => {
                out.remove(&k);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(&k);
                    continue;
                }
                let cur = out.remove(&k).unwrap_or(Value::Null);
                out.insert(k, strategic(cur, pm));
            }
            Value::Array(items) => {
                let merged = match out.remove(&k) {
                    Some(Value::Array(cur)) => merge_list(cur, items),
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

/// Lists of objects with a merge key merge element-wise; other lists are replaced, as upstream does for
/// lists without a patch strategy.
fn merge_list(mut cur: Vec<Value>, patch: Vec<Value>) -> Value {
    let Some(key) = merge_key(&patch).filter(|k| cur.iter().all(|c| c.get(*k).is_some())) else {
        return Value::Array(patch);
    };
    for item in patch {
        let Value::Object(mut pm) = item else { continue };
        let id = pm.get(key).cloned();
        let pos = cur.iter().position(|c| c.get(key) == id.as_ref());
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                cur.remove(i);
            }
            continue;
        }
        pm.remove("$patch");
        match pos {
            Some(i) => {
                let old = std::mem::take(&mut cur[i]);
                cur[i] = strategic(old, pm);
            }
            None => cur.push(Value::Object(pm)),
        }
    }
    Value::Array(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let cur = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}});
        let patch = json!({"$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "metadata": {"labels": {"a": null, "b": "2"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:2"}, {"name": "side", "$patch": "delete"}]}});
        let out = apply(&PatchType::Strategic, &cur, patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let cur = json!({"data": {"a": "1"}});
        let out = apply(
            &PatchType::Json,
            &cur,
            br#"[{"op":"add","path":"/data/b","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(out["data"]["b"], "2");
        let out = apply(&PatchType::Merge, &cur, br#"{"data":{"a":null}}"#).unwrap();
        assert_eq!(out["data"], json!({}));
        assert!(apply(&PatchType::Json, &cur, br#"[{"op":"remove","path":"/nope"}]"#).is_err());
    }
}
