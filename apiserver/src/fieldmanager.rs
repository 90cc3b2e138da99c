//! Field ownership for server-side apply: the sets of fields each manager owns (`metadata.managedFields`,
//! FieldsV1), updated on every write. An applier conflicts with another owner when it would change a
//! field that owner set to a different value (409 unless `force`), and fields an applier stops applying
//! are removed when nobody else owns them.
//!
//! Lists of objects that have a merge key (containers by name, ports by containerPort...) are owned per
//! item (`k:{"name":"c"}`); every other list is atomic, owned as a whole, as upstream's atomic lists are.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::{ApiError, Target};
use crate::handlers::merge_key;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// `f:<name>`: a field of an object.
    Field(String),
    /// `k:<json>`: the list item whose merge key fields equal this (compact JSON object).
    Key(String),
}

impl Elem {
    fn encode(&self) -> String {
        match self {
            Elem::Field(f) => format!("f:{f}"),
            Elem::Key(k) => format!("k:{k}"),
        }
    }

    fn decode(s: &str) -> Option<Elem> {
        if let Some(f) = s.strip_prefix("f:") {
            Some(Elem::Field(f.to_string()))
        } else {
            s.strip_prefix("k:").map(|k| Elem::Key(k.to_string()))
        }
    }

    /// How upstream prints the step in a conflict message.
    fn display(&self) -> String {
        match self {
            Elem::Field(f) => format!(".{f}"),
            Elem::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect())
                    .unwrap_or_default();
                format!("[{}]", parts.join(","))
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub type Path = Vec<Elem>;
pub type FieldSet = BTreeSet<Path>;

pub fn display_path(p: &[Elem]) -> String {
    p.iter().map(Elem::display).collect()
}

/// Metadata fields the server owns; never part of a manager's set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields `obj` sets, as paths. `with_status`: include `.status` (writes to the status subresource).
pub fn fields_of(obj: &Value, with_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if !with_status => {}
            "metadata" => {
                if let Some(meta) = v.as_object() {
                    for (mk, mv) in meta {
                        if !SERVER_METADATA.contains(&mk.as_str()) {
                            walk(
                                mv,
                                &mut vec![Elem::Field("metadata".into()), Elem::Field(mk.clone())],
                                &mut out,
                            );
                        }
                    }
                }
            }
            _ => walk(v, &mut vec![Elem::Field(k.clone())], &mut out),
        }
    }
    out
}

fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Elem::Field(k.clone()));
                walk(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_key(items) {
            Some(key) => {
                for item in items {
                    let Some(id) = item_key(item, key) else {
                        // An item without the key: the list cannot be split, own it whole.
                        out.insert(path.clone());
                        return;
                    };
                    path.push(Elem::Key(id));
                    out.insert(path.clone());
                    walk(item, path, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn item_key(item: &Value, key: &str) -> Option<String> {
    let v = item.get(key)?;
    let mut m = Map::new();
    m.insert(key.to_string(), v.clone());
    Some(Value::Object(m).to_string())
}

/// The value at `path` in `obj`.
pub fn value_at<'a>(obj: &'a Value, path: &[Elem]) -> Option<&'a Value> {
    let mut cur = obj;
    for e in path {
        cur = match e {
            Elem::Field(f) => cur.get(f)?,
            Elem::Key(k) => {
                let want: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|item| want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)))?
            }
        };
    }
    Some(cur)
}

/// Removes the value at `path` from `obj` (a field, or a list item); false if it was not there.
fn remove_at(obj: &mut Value, path: &[Elem]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = obj;
    for e in parent {
        let next = match e {
            Elem::Field(f) => cur.get_mut(f),
            Elem::Key(k) => {
                let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return false;
                };
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|item| want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)))
                })
            }
        };
        let Some(next) = next else { return false };
        cur = next;
    }
    match last {
        Elem::Field(f) => cur.as_object_mut().and_then(|m| m.remove(f)).is_some(),
        Elem::Key(k) => {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                return false;
            };
            let Some(a) = cur.as_array_mut() else { return false };
            let before = a.len();
            a.retain(|item| !want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)));
            a.len() != before
        }
    }
}

/// FieldsV1 JSON (`{"f:data":{"f:a":{}}, ...}`, `"."` marking an item that is owned itself).
pub fn encode(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        own: bool,
        children: BTreeMap<String, Node>,
    }
    fn to_json(n: &Node) -> Value {
        let mut m = Map::new();
        if n.own && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), to_json(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let mut cur = &mut root;
        for e in path {
            cur = cur.children.entry(e.encode()).or_default();
        }
        cur.own = true;
    }
    to_json(&root)
}

/// The set a FieldsV1 value describes (unknown step prefixes are skipped).
pub fn decode(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
            return;
        }
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let Some(e) = Elem::decode(k) else { continue };
            path.push(e);
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }
}

pub fn entries_of(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("Update")
                    .to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
                time: e.get("time").and_then(Value::as_str).unwrap_or_default().to_string(),
                fields: e.get("fieldsV1").map(decode).unwrap_or_default(),
            })
        })
        .collect()
}

fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            m.insert("time".into(), json!(e.time));
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), encode(&e.fields));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), json!(s));
            }
            Value::Object(m)
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Upstream's limit on a field manager's length, in bytes.
const MAX_MANAGER_BYTES: usize = 128;

/// The field manager of a write that names none, as upstream derives it: the User-Agent up to its
/// first `/` (`kubectl/v1.32.0 (linux/amd64) ...` gives `kubectl`), printable characters only, cut at
/// 128 bytes.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let mut out = String::new();
    for c in user_agent.split('/').next().unwrap_or_default().chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_MANAGER_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// Who is writing: the field manager, its API version, and the subresource written (status or none).
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub time: &'a str,
}

/// Records a non-apply write (create, update, patch) of `new` over `old` (`Value::Null` for a create):
/// the writer takes every field whose value it set or changed, other managers lose those, and fields
/// that no longer exist leave every set. The request's own managedFields win if it changed them.
pub fn record_update(old: &Value, new: &mut Value, w: &Writer<'_>) {
    let requested = new.pointer("/metadata/managedFields").cloned();
    let previous = old.pointer("/metadata/managedFields").cloned();
    let mut entries = match (&requested, &previous) {
        (Some(r), p) if Some(r) != p.as_ref() => entries_of(new),
        _ => entries_of(old),
    };
    let with_status = w.subresource == Some("status");
    let now_set = fields_of(new, true);
    let changed: FieldSet = fields_of(new, with_status)
        .into_iter()
        .filter(|p| value_at(old, p) != value_at(new, p) || value_at(old, p).is_none())
        .collect();
    for e in &mut entries {
        e.fields.retain(|p| now_set.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(w.manager, "Update", w.subresource))
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = w.time.to_string();
                e.api_version = w.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                subresource: w.subresource.map(str::to_string),
                time: w.time.to_string(),
                fields: changed,
            }),
        }
    }
    set_entries(new, &entries);
}

/// A field another manager owns with a different value than the applier's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

/// Server-side apply of `applied` by `w` onto `live`, whose plain merge is `merged`: checks conflicts
/// (unless `force`, which takes the fields over), removes fields the applier no longer applies and nobody
/// else owns, and records the applier's set. Returns the object to store.
pub fn apply(
    live: &Value,
    applied: &Value,
    mut merged: Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = entries_of(live);
    let with_status = w.subresource == Some("status");
    let set = fields_of(applied, with_status);
    let leaves: Vec<&Path> = set
        .iter()
        .filter(|p| !set.iter().any(|q| q.len() > p.len() && q.starts_with(p)))
        .collect();
    // Fields the applier would change that another manager owns: (entry, path).
    let mut contested: Vec<(usize, &Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.same_owner(w.manager, "Apply", w.subresource) {
            continue;
        }
        for p in &leaves {
            if e.fields.contains(*p) && value_at(applied, p) != value_at(live, p) {
                contested.push((i, p));
            }
        }
    }
    // Upstream lets `kubectl apply --server-side` (manager "kubectl") take over fields an earlier
    // client-side apply set, when they are all in its last-applied-configuration: the switch from
    // client-side to server-side apply then does not conflict (kubectl moves the ownership afterwards).
    let force = force
        || (!contested.is_empty()
            && w.manager == "kubectl"
            && last_applied_fields(live).is_some_and(|allowed| contested.iter().all(|(_, p)| allowed.contains(*p))));
    let mut conflicts = Vec::new();
    for (i, p) in contested {
        if force {
            entries[i].fields.remove(p);
        } else {
            conflicts.push(Conflict {
                manager: entries[i].manager.clone(),
                api_version: entries[i].api_version.clone(),
                path: display_path(p),
            });
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let before = entries
        .iter()
        .position(|e| e.same_owner(w.manager, "Apply", w.subresource))
        .map(|i| entries.remove(i));
    if let Some(prev) = &before {
        // Deepest first, so an item goes after its fields were looked at.
        let mut dropped: Vec<&Path> = prev
            .fields
            .iter()
            .filter(|p| !set.contains(*p) && !entries.iter().any(|e| e.fields.contains(*p)))
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in dropped {
            // A field kept under a path the applier still applies is its to merge, not to drop.
            if set.iter().any(|q| q.len() > p.len() && q.starts_with(p)) {
                continue;
            }
            remove_at(&mut merged, p);
        }
    }
    let now_set = fields_of(&merged, true);
    for e in &mut entries {
        e.fields.retain(|p| now_set.contains(p));
    }
    entries.push(Entry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        subresource: w.subresource.map(str::to_string),
        time: w.time.to_string(),
        fields: set,
    });
    set_entries(&mut merged, &entries);
    Ok(merged)
}

/// The fields of the object's `kubectl.kubernetes.io/last-applied-configuration`, if it has one.
fn last_applied_fields(live: &Value) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get("kubectl.kubernetes.io/last-applied-configuration")?
        .as_str()?;
    let obj: Value = serde_json::from_str(text).ok()?;
    Some(fields_of(&obj, false))
}

/// The 409 upstream answers for apply conflicts.
pub fn conflict_error(conflicts: &[Conflict], target: &Target<'_>) -> ApiError {
    let n = conflicts.len();
    let message = if n == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.path
        )
    } else {
        let mut by_manager: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for c in conflicts {
            by_manager
                .entry((c.manager.as_str(), c.api_version.as_str()))
                .or_default()
                .push(c.path.as_str());
        }
        let parts: Vec<String> = by_manager
            .iter()
            .map(|((m, v), paths)| {
                let lines: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with \"{m}\" using {v}:\n{}", lines.join("\n"))
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                "field": c.path})
        })
        .collect();
    let mut details = target.details();
    details["causes"] = Value::Array(causes);
    ApiError::Status {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_defaults_to_the_user_agent_prefix() {
        assert_eq!(
            manager_from_user_agent("kubectl/v1.32.3 (linux/amd64) kubernetes/32cc146"),
            "kubectl"
        );
        assert_eq!(manager_from_user_agent("kube-rs/0.98"), "kube-rs");
        assert_eq!(manager_from_user_agent("Python-urllib"), "Python-urllib");
        assert_eq!(manager_from_user_agent("a\u{7}b/c"), "ab");
        assert_eq!(manager_from_user_agent(""), "");
        assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
    }

    fn w<'a>(manager: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version: "v1",
            subresource: None,
            time: "2026-12-02T00:00:00Z",
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"}, "data": data})
    }

    fn owned(obj: &Value, manager: &str) -> Vec<String> {
        entries_of(obj)
            .into_iter()
            .filter(|e| e.manager == manager)
            .flat_map(|e| e.fields.into_iter().map(|p| display_path(&p)))
            .collect()
    }

    #[test]
    fn fieldsv1_round_trips_and_marks_items() {
        let pod = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let set = fields_of(&pod, false);
        let enc = encode(&set);
        assert_eq!(
            enc,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
        assert_eq!(decode(&enc), set);
    }

    #[test]
    fn updates_take_changed_fields_from_other_managers() {
        let mut a = cm(json!({"x": "1", "y": "2"}));
        record_update(&Value::Null, &mut a, &w("create"));
        assert_eq!(owned(&a, "create"), vec![".data.x", ".data.y"]);
        let mut b = a.clone();
        b["data"]["y"] = json!("3");
        record_update(&a, &mut b, &w("edit"));
        assert_eq!(owned(&b, "create"), vec![".data.x"]);
        assert_eq!(owned(&b, "edit"), vec![".data.y"]);
    }

    #[test]
    fn apply_conflicts_unless_forced_and_shares_equal_values() {
        let mut live = cm(json!({"x": "1"}));
        record_update(&Value::Null, &mut live, &w("kubectl-create"));
        // Same value: no conflict, both own it.
        let same = cm(json!({"x": "1"}));
        let out = apply(&live, &same, live.clone(), &w("ssa"), false).unwrap();
        assert_eq!(owned(&out, "ssa"), vec![".data.x"]);
        assert_eq!(owned(&out, "kubectl-create"), vec![".data.x"]);
        // Different value: a conflict naming the owner and the field.
        let other = cm(json!({"x": "2"}));
        let err = apply(&live, &other, other.clone(), &w("ssa"), false).unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "kubectl-create".into(),
                api_version: "v1".into(),
                path: ".data.x".into()
            }]
        );
        let t = Target {
            group: "",
            resource: "configmaps",
            name: "c",
        };
        match conflict_error(&err, &t) {
            ApiError::Status { code, message, .. } => {
                assert_eq!(code, 409);
                assert_eq!(
                    message,
                    "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.x"
                );
            }
            other => panic!("{other:?}"),
        }
        // The same apply by "kubectl" over a client-side apply whose last-applied config has the field.
        let mut csa = live.clone();
        csa["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": cm(json!({"x": "1"})).to_string()});
        let out = apply(&csa, &other, other.clone(), &w("kubectl"), false).unwrap();
        assert_eq!(owned(&out, "kubectl"), vec![".data.x"]);
        assert!(apply(&live, &other, other.clone(), &w("kubectl"), false).is_err());
        // Forced: the applier takes the field over.
        let out = apply(&live, &other, other.clone(), &w("ssa"), true).unwrap();
        assert_eq!(owned(&out, "ssa"), vec![".data.x"]);
        assert!(owned(&out, "kubectl-create").is_empty());
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_someone_else_owns_them() {
        let first = cm(json!({"a": "1", "b": "2"}));
        let live = apply(&Value::Null, &first, first.clone(), &w("ssa"), false).unwrap();
        let second = cm(json!({"a": "1"}));
        let merged = live.clone(); // what the merge of `second` over `live` gives
        let out = apply(&live, &second, merged, &w("ssa"), false).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        // When another manager also owns b, it stays.
        let mut shared = live.clone();
        let mut entries = entries_of(&shared);
        entries.push(Entry {
            manager: "other".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            subresource: None,
            time: String::new(),
            fields: [vec![Elem::Field("data".into()), Elem::Field("b".into())]].into(),
        });
        set_entries(&mut shared, &entries);
        let out = apply(&shared, &second, shared.clone(), &w("ssa"), false).unwrap();
        assert_eq!(out["data"]["b"], "2");
    }

    #[test]
    fn list_items_are_owned_and_dropped_by_key() {
        let pod = |names: &[&str]| {
            let cs: Vec<Value> = names.iter().map(|n| json!({"name": n, "image": "busybox"})).collect();
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}})
        };
        let live = apply(&Value::Null, &pod(&["a", "b"]), pod(&["a", "b"]), &w("ssa"), false).unwrap();
        let out = apply(&live, &pod(&["a"]), live.clone(), &w("ssa"), false).unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["a"]);
    }
}
