//! Field ownership for server-side apply: the sets of fields each manager owns (`metadata.managedFields`,
//! FieldsV1), updated on every write. An applier conflicts with another owner when it would change a
//! field that owner set to a different value (409 unless `force`), and fields an applier stops applying
//! are removed when nobody else owns them.
//!
//! Lists are owned as the schema says (`crate::openapi::SchemaNode`, structured-merge-diff's rules): items of
//! `map` lists per item by all their keys (`k:{"containerPort":80,"protocol":"TCP"}`, a key an item omits
//! taking its default), items of `set` lists per value (`v:"a"`), every other list as a whole (atomic), as
//! are objects of `x-kubernetes-map-type: atomic`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::{ApiError, Target};
use crate::openapi::{ListType, SchemaNode};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// `f:<name>`: a field of an object.
    Field(String),
    /// `k:<json>`: the item of a map list whose key fields equal this (compact JSON object, keys sorted).
    Key(String),
    /// `v:<json>`: the item of a set list with this value (compact JSON).
    Value(String),
}

impl Elem {
    fn encode(&self) -> String {
        match self {
            Elem::Field(f) => format!("f:{f}"),
            Elem::Key(k) => format!("k:{k}"),
            Elem::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(s: &str) -> Option<Elem> {
        if let Some(f) = s.strip_prefix("f:") {
            Some(Elem::Field(f.to_string()))
        } else if let Some(k) = s.strip_prefix("k:") {
            // Canonical form (sorted, compact), so that it compares equal to the keys we compute.
            let fields: Map<String, Value> = serde_json::from_str(k).ok()?;
            Some(Elem::Key(key_json(fields.into_iter().collect())))
        } else {
            let v: Value = serde_json::from_str(s.strip_prefix("v:")?).ok()?;
            Some(Elem::Value(v.to_string()))
        }
    }

    /// How upstream prints the step in a conflict message: `.name`, `[name="c",port=80]`, `[="a"]`.
    fn display(&self) -> String {
        match self {
            Elem::Field(f) => format!(".{f}"),
            Elem::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", go_string(v))).collect())
                    .unwrap_or_default();
                format!("[{}]", parts.join(","))
            }
            Elem::Value(v) => {
                let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
                format!("[={}]", go_string(&v))
            }
        }
    }
}

/// structured-merge-diff's `value.ToString`: strings quoted, numbers and booleans bare.
fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_string).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", go_string(v))).collect();
            format!("{{{}}}", parts.join(";"))
        }
        other => other.to_string(),
    }
}

/// A key as upstream serializes it: a compact JSON object, fields sorted by name.
fn key_json(mut fields: Vec<(String, Value)>) -> String {
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The key of an item of a map list (at `list`) keyed by `keys`: the key fields it has, the defaults of
/// those it omits (as upstream, a key without value nor default is left out); None when the item is not
/// an object or carries none of the keys.
fn item_key(item: &Value, keys: &[String], list: SchemaNode<'_>) -> Option<String> {
    let m = item.as_object()?;
    let items = list.items();
    let fields: Vec<(String, Value)> = keys
        .iter()
        .filter_map(|k| {
            let v = m.get(k).or_else(|| items.default_of(k))?;
            Some((k.clone(), v.clone()))
        })
        .collect();
    (!fields.is_empty()).then(|| key_json(fields))
}

/// The value of an item of a set list: scalars only.
fn item_value(item: &Value) -> Option<String> {
    (!item.is_object() && !item.is_array() && !item.is_null()).then(|| item.to_string())
}

/// The path step of every item of `items`, a list at `list`; None when the list is owned as a whole
/// (atomic, or an item that cannot be told apart by the schema's keys).
fn item_elems(items: &[Value], list: SchemaNode<'_>) -> Option<Vec<Elem>> {
    match list.list().apply {
        ListType::Map(keys) => items.iter().map(|i| item_key(i, &keys, list).map(Elem::Key)).collect(),
        ListType::Set => items.iter().map(|i| item_value(i).map(Elem::Value)).collect(),
        ListType::Atomic => None,
    }
}

/// The position of the item `e` names in `items`, a list at `list`.
fn find_item(items: &[Value], e: &Elem, list: SchemaNode<'_>) -> Option<usize> {
    match e {
        Elem::Field(_) => None,
        Elem::Key(k) => {
            let keys = match list.list().apply {
                ListType::Map(keys) => keys,
                // Recorded under another schema: match the fields the key names.
                _ => serde_json::from_str::<Map<String, Value>>(k)
                    .ok()?
                    .keys()
                    .cloned()
                    .collect(),
            };
            items
                .iter()
                .position(|i| item_key(i, &keys, list).as_deref() == Some(k.as_str()))
        }
        Elem::Value(v) => items.iter().position(|i| item_value(i).as_deref() == Some(v.as_str())),
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

/// The fields `obj` (of schema `schema`) sets, as paths. `with_status`: include `.status` (writes to the
/// status subresource).
pub fn fields_of(obj: &Value, with_status: bool, schema: SchemaNode<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if !with_status => {}
            "metadata" => {
                if let Some(meta) = v.as_object() {
                    let meta_schema = schema.field("metadata");
                    for (mk, mv) in meta {
                        if !SERVER_METADATA.contains(&mk.as_str()) {
                            walk(
                                mv,
                                meta_schema.field(mk),
                                &mut vec![Elem::Field("metadata".into()), Elem::Field(mk.clone())],
                                &mut out,
                            );
                        }
                    }
                }
            }
            _ => walk(v, schema.field(k), &mut vec![Elem::Field(k.clone())], &mut out),
        }
    }
    out
}

fn walk(v: &Value, schema: SchemaNode<'_>, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !schema.atomic_map() => {
            for (k, child) in m {
                path.push(Elem::Field(k.clone()));
                walk(child, schema.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match item_elems(items, schema) {
            Some(elems) => {
                let item_schema = schema.items();
                for (item, e) in items.iter().zip(elems) {
                    let is_value = matches!(e, Elem::Value(_));
                    path.push(e);
                    out.insert(path.clone());
                    if !is_value {
                        walk(item, item_schema, path, out);
                    }
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

/// The value at `path` in `obj` (of schema `schema`).
pub fn value_at<'v>(obj: &'v Value, path: &[Elem], schema: SchemaNode<'_>) -> Option<&'v Value> {
    let mut cur = obj;
    let mut s = schema;
    for e in path {
        cur = match e {
            Elem::Field(f) => {
                s = s.field(f);
                cur.get(f)?
            }
            _ => {
                let items = cur.as_array()?;
                let i = find_item(items, e, s)?;
                s = s.items();
                &items[i]
            }
        };
    }
    Some(cur)
}

/// Removes the value at `path` from `obj` (a field, or a list item); false if it was not there.
fn remove_at(obj: &mut Value, path: &[Elem], schema: SchemaNode<'_>) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = obj;
    let mut s = schema;
    for e in parent {
        let next = match e {
            Elem::Field(f) => {
                s = s.field(f);
                cur.get_mut(f)
            }
            _ => {
                let list = s;
                s = s.items();
                cur.as_array_mut().and_then(|a| {
                    let i = find_item(a, e, list)?;
                    a.get_mut(i)
                })
            }
        };
        let Some(next) = next else { return false };
        cur = next;
    }
    match last {
        Elem::Field(f) => cur.as_object_mut().and_then(|m| m.remove(f)).is_some(),
        _ => {
            let Some(a) = cur.as_array_mut() else { return false };
            match find_item(a, last, s) {
                Some(i) => {
                    a.remove(i);
                    true
                }
                None => false,
            }
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
    /// The schema of the object written: which lists are owned per item, which as a whole.
    pub schema: SchemaNode<'a>,
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
    let schema = w.schema;
    let now_set = fields_of(new, true, schema);
    let changed: FieldSet = fields_of(new, with_status, schema)
        .into_iter()
        .filter(|p| value_at(old, p, schema) != value_at(new, p, schema) || value_at(old, p, schema).is_none())
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
    let schema = w.schema;
    let set = fields_of(applied, with_status, schema);
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
            if e.fields.contains(*p) && value_at(applied, p, schema) != value_at(live, p, schema) {
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
            && last_applied_fields(live, schema)
                .is_some_and(|allowed| contested.iter().all(|(_, p)| allowed.contains(*p))));
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
        // A field stays while the applier still applies it or anything under it, or another manager owns
        // it or anything under it. Shallowest first: an item goes whole, before its key fields would be
        // looked at (removing those first would lose the item).
        let kept = |p: &Path| {
            set.iter()
                .chain(entries.iter().flat_map(|e| e.fields.iter()))
                .any(|q| q.starts_with(p))
        };
        let mut dropped: Vec<&Path> = prev.fields.iter().filter(|p| !kept(p)).collect();
        dropped.sort_by_key(|p| p.len());
        let mut removed: Vec<&Path> = Vec::new();
        for p in dropped {
            if removed.iter().any(|r| p.starts_with(r)) {
                continue;
            }
            if remove_at(&mut merged, p, schema) {
                removed.push(p);
            }
        }
    }
    let now_set = fields_of(&merged, true, schema);
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
fn last_applied_fields(live: &Value, schema: SchemaNode<'_>) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get("kubectl.kubernetes.io/last-applied-configuration")?
        .as_str()?;
    let obj: Value = serde_json::from_str(text).ok()?;
    Some(fields_of(&obj, false, schema))
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

    fn w(manager: &str) -> Writer<'_> {
        wk(manager, SchemaNode::of_builtin("", "v1", "ConfigMap"))
    }

    fn wk<'a>(manager: &'a str, schema: SchemaNode<'a>) -> Writer<'a> {
        Writer {
            manager,
            api_version: "v1",
            subresource: None,
            time: "2026-12-02T00:00:00Z",
            schema,
        }
    }

    fn pod_schema() -> SchemaNode<'static> {
        SchemaNode::of_builtin("", "v1", "Pod")
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
        let set = fields_of(&pod, false, pod_schema());
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
        let ssa = wk("ssa", pod_schema());
        let live = apply(&Value::Null, &pod(&["a", "b"]), pod(&["a", "b"]), &ssa, false).unwrap();
        let out = apply(&live, &pod(&["a"]), live.clone(), &ssa, false).unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["a"]);
    }

    /// What the handler stores before ownership is applied: the applied configuration merged over `live`.
    fn merged(live: &Value, applied: &Value, schema: SchemaNode<'_>) -> Value {
        use crate::handlers::patch::{apply, PatchType};
        apply(&PatchType::Apply, live, applied.to_string().as_bytes(), schema).unwrap()
    }

    fn paths(set: &FieldSet) -> Vec<String> {
        set.iter().map(|p| display_path(p)).collect()
    }

    #[test]
    fn container_ports_are_keyed_by_port_and_protocol() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "dns", "image": "coredns",
            "ports": [{"containerPort": 53, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9153}]}]}});
        let set = fields_of(&pod, false, pod_schema());
        let enc = encode(&set);
        let ports = &enc["f:spec"]["f:containers"]["k:{\"name\":\"dns\"}"]["f:ports"];
        let keys: Vec<&String> = ports.as_object().unwrap().keys().collect();
        // Two items with the same number and different protocols; the one without protocol keyed by its
        // default.
        assert_eq!(
            keys,
            vec![
                "k:{\"containerPort\":53,\"protocol\":\"TCP\"}",
                "k:{\"containerPort\":53,\"protocol\":\"UDP\"}",
                "k:{\"containerPort\":9153,\"protocol\":\"TCP\"}",
            ]
        );
        assert_eq!(
            ports["k:{\"containerPort\":9153,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:containerPort": {}})
        );
        assert_eq!(decode(&enc), set);
        // The defaulted live object (protocol filled in) has the same items.
        let mut live = pod.clone();
        live["spec"]["containers"][0]["ports"][2]["protocol"] = json!("TCP");
        let p = set
            .iter()
            .find(|p| {
                display_path(p)
                    == ".spec.containers[name=\"dns\"].ports[containerPort=9153,protocol=\"TCP\"].containerPort"
            })
            .expect("path");
        assert_eq!(value_at(&live, p, pod_schema()), Some(&json!(9153)));
        // Another manager changing the UDP port's hostPort conflicts on that item only.
        let mut owned_live = live.clone();
        record_update(&Value::Null, &mut owned_live, &wk("create", pod_schema()));
        let mut applied = live.clone();
        applied["spec"]["containers"][0]["ports"] = json!([{"containerPort": 53, "protocol": "UDP", "hostPort": 5353}]);
        let mut changed = owned_live.clone();
        changed["spec"]["containers"][0]["ports"][1]["hostPort"] = json!(1);
        let mut with_host = changed.clone();
        record_update(&owned_live, &mut with_host, &wk("edit", pod_schema()));
        let err = apply(&with_host, &applied, with_host.clone(), &wk("ssa", pod_schema()), false).unwrap_err();
        assert_eq!(
            err.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            vec![".spec.containers[name=\"dns\"].ports[containerPort=53,protocol=\"UDP\"].hostPort"]
        );
    }

    #[test]
    fn set_items_are_owned_by_value() {
        let obj = |f: &[&str]| {
            cm(json!({"x": "1"}))
                .as_object()
                .cloned()
                .map(|mut m| {
                    m["metadata"]["finalizers"] = json!(f);
                    Value::Object(m)
                })
                .unwrap()
        };
        let set = fields_of(
            &obj(&["a.io/x", "b.io/y"]),
            false,
            SchemaNode::of_builtin("", "v1", "ConfigMap"),
        );
        assert_eq!(
            encode(&set)["f:metadata"]["f:finalizers"],
            json!({"v:\"a.io/x\"": {}, "v:\"b.io/y\"": {}})
        );
        assert!(paths(&set).contains(&".metadata.finalizers[=\"a.io/x\"]".to_string()));
        assert_eq!(decode(&encode(&set)), set);
        // Two appliers each own their value; one dropping its own leaves the other's.
        let a = apply(&Value::Null, &obj(&["a.io/x"]), obj(&["a.io/x"]), &w("a"), false).unwrap();
        let m = merged(&a, &obj(&["b.io/y"]), SchemaNode::of_builtin("", "v1", "ConfigMap"));
        let b = apply(&a, &obj(&["b.io/y"]), m, &w("b"), false).unwrap();
        assert_eq!(b["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
        let none = cm(json!({"x": "1"}));
        let out = apply(&b, &none, b.clone(), &w("a"), false).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b.io/y"]));
    }

    #[test]
    fn atomic_lists_are_owned_whole() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i", "args": ["a", "b"]}]}});
        let ps = paths(&fields_of(&pod, false, pod_schema()));
        assert!(ps.contains(&".spec.tolerations".to_string()), "{ps:?}");
        assert!(ps.contains(&".spec.containers[name=\"c\"].args".to_string()), "{ps:?}");
        assert!(
            !ps.iter()
                .any(|p| p.starts_with(".spec.tolerations[") || p.contains(".args[")),
            "{ps:?}"
        );
        // Without a schema every list is atomic.
        let ps = paths(&fields_of(&pod, false, SchemaNode::UNKNOWN));
        assert!(ps.contains(&".spec.containers".to_string()), "{ps:?}");
        assert!(!ps.iter().any(|p| p.contains('[')), "{ps:?}");
    }

    #[test]
    fn custom_resource_lists_follow_the_structural_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["host", "port"],
                "items": {"type": "object", "properties": {"host": {"type": "string"}, "port": {"type": "integer"},
                    "backend": {"type": "string"}}}},
            "args": {"type": "array", "items": {"type": "string"}}}}}});
        let s = SchemaNode::of_custom(Some(&schema));
        let cr = |routes: Value, args: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Gate", "metadata": {"name": "g"},
                "spec": {"routes": routes, "args": args}})
        };
        let one = cr(json!([{"host": "a", "port": 80, "backend": "x"}]), json!(["-v"]));
        let ps = paths(&fields_of(&one, false, s));
        assert_eq!(
            ps,
            vec![
                ".spec.args",
                ".spec.routes[host=\"a\",port=80]",
                ".spec.routes[host=\"a\",port=80].backend",
                ".spec.routes[host=\"a\",port=80].host",
                ".spec.routes[host=\"a\",port=80].port",
            ]
        );
        // Manager a owns the route (a, 80); manager b applies (a, 443): a different item, no conflict.
        let live = apply(&Value::Null, &one, one.clone(), &wk("a", s), false).unwrap();
        let b_cfg = json!({"apiVersion": "example.com/v1", "kind": "Gate", "metadata": {"name": "g"},
            "spec": {"routes": [{"host": "a", "port": 443, "backend": "y"}]}});
        let m = merged(&live, &b_cfg, s);
        let live = apply(&live, &b_cfg, m, &wk("b", s), false).unwrap();
        assert_eq!(live["spec"]["routes"].as_array().map(Vec::len), Some(2));
        assert_eq!(live["spec"]["args"], json!(["-v"]));
        // b changing a's item conflicts; so does b setting the atomic list a owns.
        let b_bad = json!({"apiVersion": "example.com/v1", "kind": "Gate", "metadata": {"name": "g"},
            "spec": {"routes": [{"host": "a", "port": 443, "backend": "y"}, {"host": "a", "port": 80, "backend": "z"}],
                "args": ["-q"]}});
        let m = merged(&live, &b_bad, s);
        let err = apply(&live, &b_bad, m, &wk("b", s), false).unwrap_err();
        let mut got: Vec<&str> = err.iter().map(|c| c.path.as_str()).collect();
        got.sort();
        assert_eq!(got, vec![".spec.args", ".spec.routes[host=\"a\",port=80].backend"]);
        // b dropping its item removes it and leaves a's.
        let b_none = json!({"apiVersion": "example.com/v1", "kind": "Gate", "metadata": {"name": "g"}, "spec": {}});
        let out = apply(&live, &b_none, live.clone(), &wk("b", s), false).unwrap();
        assert_eq!(
            out["spec"]["routes"],
            json!([{"host": "a", "port": 80, "backend": "x"}])
        );
    }
}
