//! apiextensions.k8s.io/v1 CustomResourceDefinitions: their strategy (validation, defaulting, the status
//! the server maintains), the Resources their served versions become, the task that keeps the dynamic
//! registry (`registry::dynamic`) in step with the CRDs in the store, and the cleanup finalizer that deletes
//! a CRD's custom resources before the CRD goes.
//!
//! The registry follows the store, not this server's own writes: `run` consumes the CRD watch cache (one
//! store watch on the CRD prefix), so every API server on the same store serves the same custom resources.
//! A CRD write returns once this server's registry has seen it (`wait_seen`), so a client may use the new
//! resource right after its create.

mod cel;
mod formats;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::delete::{delete_matching, DeleteOptions};
use crate::handlers::Ctx;
use crate::registry::dynamic::{self, intern, leak, leak_list};
use crate::registry::{dns1123, find, Custom, Printer, PrinterColumn, Resource, ScalePaths, APIEXTENSIONS};
use crate::storage::{prefix_end, Write};
use crate::watchcache::{decode, Kind, Start, WatchCache};
use crate::ApiServer;

/// Upstream's finalizer: a CRD marked for deletion keeps it until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
const KIND: &str = "CustomResourceDefinition";

pub fn crd_resource() -> Option<&'static Resource> {
    find(APIEXTENSIONS, "v1", "customresourcedefinitions")
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn strings_at(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn versions(crd: &Value) -> &[Value] {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn storage_version(crd: &Value) -> Option<&str> {
    versions(crd)
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
}

/// Sets condition `ty` in `status.conditions`, keeping its lastTransitionTime when its status is unchanged.
fn set_condition(status: &mut serde_json::Map<String, Value>, ty: &str, st: &str, reason: &str, message: &str) {
    let conds = status.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else { return };
    let old = list
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let since = old
        .and_then(|i| list.get(i))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(st))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    let c = json!({"type": ty, "status": st, "lastTransitionTime": since, "reason": reason, "message": message});
    match old {
        Some(i) => list[i] = c,
        None => list.push(c),
    }
}

/// Upstream's CRD defaulting plus the status the server keeps: `storedVersions` gains the storage version,
/// and a CRD marked for deletion carries `Terminating`. The names and the `NamesAccepted` / `Established`
/// conditions come from [`accept_names`], which needs the other CRDs.
pub fn default_crd(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let spec = crate::registry::entry_obj(o, "spec");
    let names = crate::registry::entry_obj(spec, "names");
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !kind.is_empty() {
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_ascii_lowercase()));
        names.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
    }
    spec.entry("conversion").or_insert_with(|| json!({"strategy": "None"}));
    let terminating = o.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some();
    let stored = storage_version(obj).map(str::to_string);
    let Some(o) = obj.as_object_mut() else { return };
    let status = crate::registry::entry_obj(o, "status");
    if terminating {
        set_condition(
            status,
            "Terminating",
            "True",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; waiting for instances to be removed",
        );
    }
    let mut sv: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = stored {
        if !sv.iter().any(|x| x == v.as_str()) {
            sv.push(json!(v));
        }
    }
    status.insert("storedVersions".into(), Value::Array(sv));
}

/// `Err("\"x\" is already in use")` when `requested` is new to this CRD and another one has it.
fn accepted_or_fresh(requested: &str, accepted: &str, used: &HashSet<String>) -> Result<(), String> {
    if requested == accepted || !used.contains(requested) {
        Ok(())
    } else {
        Err(format!("{requested:?} is already in use"))
    }
}

/// Upstream's naming controller: grants `crd` the requested names that no other CRD of its group holds
/// (`others`: any CRDs, their accepted names count), keeps the ones granted before (`previously`, its
/// last `status.acceptedNames`) where a request conflicts, and sets `NamesAccepted` and `Established`.
/// A CRD whose names were never all accepted is not established, hence not served.
pub fn accept_names(crd: &mut Value, previously: Option<&Value>, others: &[Arc<Value>]) {
    let name = str_at(crd, "/metadata/name").to_string();
    let group = str_at(crd, "/spec/group").to_string();
    let mut resources = HashSet::new();
    let mut kinds = HashSet::new();
    for other in others
        .iter()
        .filter(|o| str_at(o, "/spec/group") == group && str_at(o, "/metadata/name") != name)
    {
        let Some(acc) = other.pointer("/status/acceptedNames") else {
            continue;
        };
        for key in ["/plural", "/singular"] {
            resources.insert(str_at(acc, key).to_string());
        }
        resources.extend(strings_at(acc, "/shortNames"));
        for key in ["/kind", "/listKind"] {
            kinds.insert(str_at(acc, key).to_string());
        }
    }
    resources.remove("");
    kinds.remove("");
    let empty = json!({});
    let requested = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let before = previously.filter(|p| p.is_object()).unwrap_or(&empty);
    let mut granted = before.as_object().cloned().unwrap_or_default();
    let mut conflict: Option<(&str, String)> = None;
    let single = |field: &str, reason: &'static str, used: &HashSet<String>| {
        let req = str_at(&requested, &format!("/{field}"));
        accepted_or_fresh(req, str_at(before, &format!("/{field}")), used)
            .map(|()| json!(req))
            .map_err(|e| (reason, e))
    };
    let (req_short, acc_short) = (strings_at(&requested, "/shortNames"), strings_at(before, "/shortNames"));
    let short = (req_short != acc_short).then(|| {
        let errs: Vec<String> = req_short
            .iter()
            .filter(|s| !acc_short.contains(s))
            .filter_map(|s| accepted_or_fresh(s, "", &resources).err())
            .collect();
        match errs.len() {
            0 => Ok(json!(req_short)),
            1 => Err(("ShortNamesConflict", errs[0].clone())),
            _ => Err(("ShortNamesConflict", format!("[{}]", errs.join(", ")))),
        }
    });
    // In upstream's order: the last conflict found is the one reported.
    for (field, outcome) in [
        ("plural", Some(single("plural", "PluralConflict", &resources))),
        ("singular", Some(single("singular", "SingularConflict", &resources))),
        ("shortNames", short),
        ("kind", Some(single("kind", "KindConflict", &kinds))),
        ("listKind", Some(single("listKind", "ListKindConflict", &kinds))),
    ] {
        match outcome {
            Some(Ok(v)) => {
                granted.insert(field.into(), v);
            }
            Some(Err(c)) => conflict = Some(c),
            None => {}
        }
    }
    // Categories are shared, never a conflict.
    match requested.get("categories") {
        Some(c) => granted.insert("categories".into(), c.clone()),
        None => granted.remove("categories"),
    };
    granted.retain(|_, v| !v.is_null() && v != "");
    let Some(o) = crd.as_object_mut() else { return };
    let status = crate::registry::entry_obj(o, "status");
    status.insert("acceptedNames".into(), Value::Object(granted));
    let established = condition_in(status, "Established").map(|c| c["status"] == "True");
    match conflict {
        None => {
            set_condition(status, "NamesAccepted", "True", "NoConflicts", "no conflicts found");
            set_condition(
                status,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        }
        Some((reason, message)) => {
            set_condition(status, "NamesAccepted", "False", reason, &message);
            if established.is_none() {
                set_condition(
                    status,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
        }
    }
}

/// [`accept_names`] against the CRDs this server knows (its CRD watch cache), for a CRD being written;
/// `old` is the stored object on an update.
pub fn accept_names_among_stored(server: &ApiServer, old: Option<&Value>, crd: &mut Value) {
    let Some(r) = crd_resource() else { return };
    if old.is_none() {
        // A new CRD's status is the server's to write, whatever the client sent.
        if let Some(st) = crd.get_mut("status").and_then(Value::as_object_mut) {
            st.remove("conditions");
            st.remove("acceptedNames");
        }
    }
    let others = server
        .cache(r)
        .and_then(|c| c.list(&r.prefix(None)))
        .map(|(objs, _)| objs)
        .unwrap_or_default();
    accept_names(crd, old.and_then(|o| o.pointer("/status/acceptedNames")), &others);
}

/// Whether a CRD's resource is served: its names were accepted once (`Established`). A CRD stored
/// without conditions (written by an older Rudder) counts as established.
fn established(crd: &Value) -> bool {
    condition(crd, "Established").is_none_or(|c| c["status"] == "True")
}

/// The condition of type `ty` in a CRD's status, if set.
fn condition<'a>(crd: &'a Value, ty: &str) -> Option<&'a Value> {
    crd.get("status")
        .and_then(Value::as_object)
        .and_then(|st| condition_in(st, ty))
}

fn condition_in<'a>(status: &'a serde_json::Map<String, Value>, ty: &str) -> Option<&'a Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
}

/// What a DELETE does to a CRD before it can go: the cleanup finalizer and the Terminating condition.
pub fn mark_terminating(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let status = crate::registry::entry_obj(o, "status");
    set_condition(
        status,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; waiting for instances to be removed",
    );
}

fn invalid(name: &str, causes: Vec<(String, String)>) -> ApiError {
    ApiError::invalid(KIND, APIEXTENSIONS, name, causes)
}

/// Upstream's CRD validation (the parts clients run into): name = `<plural>.<group>`, a group with a dot,
/// names, scope, versions with exactly one storage version, structural schemas, subresource paths.
pub fn validate_crd(obj: &Value) -> Result<(), ApiError> {
    let name = str_at(obj, "/metadata/name");
    let group = str_at(obj, "/spec/group");
    let plural = str_at(obj, "/spec/names/plural");
    let kind = str_at(obj, "/spec/names/kind");
    let mut c: Vec<(String, String)> = Vec::new();
    if name.is_empty() {
        c.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if name != format!("{plural}.{group}") {
        c.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        c.push(("spec.group".into(), "Required value".into()));
    } else if !group.contains('.') {
        c.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    } else if let Some(why) = dns1123(group, false) {
        c.push(("spec.group".into(), format!("Invalid value: {group:?}: {why}")));
    }
    match str_at(obj, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => c.push(("spec.scope".into(), "Required value".into())),
        s => c.push((
            "spec.scope".into(),
            format!("Unsupported value: {s:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    for (field, v) in [("plural", plural), ("singular", str_at(obj, "/spec/names/singular"))] {
        if v.is_empty() && field == "plural" {
            c.push(("spec.names.plural".into(), "Required value".into()));
        } else if !v.is_empty() {
            if let Some(why) = dns1123(v, true) {
                c.push((format!("spec.names.{field}"), format!("Invalid value: {v:?}: {why}")));
            }
        }
    }
    for (i, s) in strings_at(obj, "/spec/names/shortNames").iter().enumerate() {
        if let Some(why) = dns1123(s, true) {
            c.push((
                format!("spec.names.shortNames[{i}]"),
                format!("Invalid value: {s:?}: {why}"),
            ));
        }
    }
    if kind.is_empty() {
        c.push(("spec.names.kind".into(), "Required value".into()));
    }
    let vs = versions(obj);
    let storage = vs
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if vs.is_empty() {
        c.push((
            "spec.versions".into(),
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
    } else if storage != 1 {
        c.push((
            "spec.versions".into(),
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                json!(vs.iter().map(|v| str_at(v, "/name")).collect::<Vec<_>>())
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, v) in vs.iter().enumerate() {
        let vname = str_at(v, "/name");
        let p = format!("spec.versions[{i}]");
        if vname.is_empty() {
            c.push((format!("{p}.name"), "Required value".into()));
        } else if let Some(why) = dns1123(vname, true) {
            c.push((format!("{p}.name"), format!("Invalid value: {vname:?}: {why}")));
        } else if !seen.insert(vname) {
            c.push((format!("{p}.name"), format!("Duplicate value: {vname:?}")));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => c.push((
                format!("{p}.schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            )),
            Some(s) => c.extend(schema::structural_errors(s, &format!("{p}.schema.openAPIV3Schema"))),
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            let sp = format!("{p}.subresources.scale");
            let spec_path = str_at(scale, "/specReplicasPath");
            if spec_path.is_empty() {
                c.push((format!("{sp}.specReplicasPath"), "Required value".into()));
            } else if !spec_path.starts_with(".spec.") {
                c.push((
                    format!("{sp}.specReplicasPath"),
                    format!("Invalid value: {spec_path:?}: should be a json path under .spec"),
                ));
            }
            let status_path = str_at(scale, "/statusReplicasPath");
            if status_path.is_empty() {
                c.push((format!("{sp}.statusReplicasPath"), "Required value".into()));
            } else if !status_path.starts_with(".status.") {
                c.push((
                    format!("{sp}.statusReplicasPath"),
                    format!("Invalid value: {status_path:?}: should be a json path under .status"),
                ));
            }
            let sel = str_at(scale, "/labelSelectorPath");
            if !sel.is_empty() && !sel.starts_with(".spec.") && !sel.starts_with(".status.") {
                c.push((
                    format!("{sp}.labelSelectorPath"),
                    format!("Invalid value: {sel:?}: should be a json path under either .spec or .status"),
                ));
            }
        }
        for (j, col) in v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{p}.additionalPrinterColumns[{j}]");
            if str_at(col, "/name").is_empty() {
                c.push((format!("{cp}.name"), "Required value".into()));
            }
            match str_at(col, "/type") {
                "integer" | "number" | "string" | "boolean" | "date" => {}
                "" => c.push((format!("{cp}.type"), "Required value".into())),
                t => c.push((
                    format!("{cp}.type"),
                    format!("Unsupported value: {t:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""),
                )),
            }
            if str_at(col, "/jsonPath").is_empty() {
                c.push((format!("{cp}.jsonPath"), "Required value".into()));
            }
        }
    }
    if c.is_empty() {
        Ok(())
    } else {
        Err(invalid(name, c))
    }
}

/// Update validation: the above plus upstream's immutable scope and the rule that a stored version may
/// not be dropped from spec.versions while status.storedVersions lists it.
pub fn validate_crd_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    validate_crd(new)?;
    let name = str_at(new, "/metadata/name");
    let mut c = Vec::new();
    let (was, is) = (str_at(old, "/spec/scope"), str_at(new, "/spec/scope"));
    if was != is {
        c.push((
            "spec.scope".into(),
            format!("Invalid value: {is:?}: field is immutable"),
        ));
    }
    let names: Vec<&str> = versions(new).iter().map(|v| str_at(v, "/name")).collect();
    for (i, sv) in strings_at(new, "/status/storedVersions").iter().enumerate() {
        if !names.contains(&sv.as_str()) {
            c.push((
                format!("status.storedVersions[{i}]"),
                format!("Invalid value: {sv:?}: must appear in spec.versions"),
            ));
        }
    }
    if c.is_empty() {
        Ok(())
    } else {
        Err(invalid(name, c))
    }
}

/// `.spec.replicas` -> `/spec/replicas`.
fn pointer(json_path: &str) -> String {
    json_path
        .trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut p, seg| {
            p.push('/');
            p.push_str(&seg.replace('~', "~0").replace('/', "~1"));
            p
        })
}

/// The Resources of a CRD's served versions (interned: an unchanged definition gives the same values).
pub fn resources_of(crd: &Value) -> Vec<&'static Resource> {
    let name = str_at(crd, "/metadata/name");
    let group = str_at(crd, "/spec/group");
    if !established(crd) {
        return Vec::new();
    }
    // Served under the names granted to it, which lag the requested ones while those conflict.
    let names = crd
        .pointer("/status/acceptedNames")
        .filter(|n| !str_at(n, "/kind").is_empty())
        .or_else(|| crd.pointer("/spec/names"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let plural = str_at(&names, "/plural");
    let kind = str_at(&names, "/kind");
    let scope = str_at(crd, "/spec/scope");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for v in versions(crd) {
        let version = str_at(v, "/name");
        if version.is_empty() || v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let fingerprint =
            json!({"crd": name, "group": group, "names": names, "scope": scope, "version": v}).to_string();
        out.push(intern(fingerprint, || build(name, group, &names, scope, v)));
    }
    out
}

fn build(crd: &str, group: &str, names: &Value, scope: &str, v: &Value) -> Resource {
    let kind = str_at(names, "/kind");
    let singular = match str_at(names, "/singular") {
        "" => kind.to_ascii_lowercase(),
        s => s.to_string(),
    };
    let list_kind = match str_at(names, "/listKind") {
        "" => format!("{kind}List"),
        s => s.to_string(),
    };
    let plural = str_at(names, "/plural");
    let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
        spec_replicas: pointer(str_at(s, "/specReplicasPath")),
        status_replicas: pointer(str_at(s, "/statusReplicasPath")),
        label_selector: Some(str_at(s, "/labelSelectorPath"))
            .filter(|p| !p.is_empty())
            .map(pointer),
    });
    let mut columns: Vec<PrinterColumn> = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| PrinterColumn {
            name: str_at(c, "/name").to_string(),
            ty: str_at(c, "/type").to_string(),
            format: str_at(c, "/format").to_string(),
            description: match str_at(c, "/description") {
                "" => format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    str_at(c, "/jsonPath")
                ),
                d => d.to_string(),
            },
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: str_at(c, "/jsonPath").to_string(),
        })
        .collect();
    if columns.is_empty() {
        // Upstream's default for a version without printer columns.
        columns.push(PrinterColumn {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created."
                .into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
    }
    Resource {
        group: leak(group),
        version: leak(str_at(v, "/name")),
        kind: leak(kind),
        plural: leak(plural),
        singular: leak(&singular),
        namespaced: scope == "Namespaced",
        short_names: leak_list(&strings_at(names, "/shortNames")),
        categories: leak_list(&strings_at(names, "/categories")),
        etcd_dir: leak(&format!("{group}/{plural}")),
        printer: Printer::Custom,
        has_generation: true,
        custom: Some(Box::new(Custom {
            crd: crd.to_string(),
            list_kind,
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            cel_rules: v.pointer("/schema/openAPIV3Schema").is_some_and(schema::has_cel_rules),
            status: v.pointer("/subresources/status").is_some(),
            scale,
            columns,
        })),
    }
}

/// Serves what `crds` define: replaces the dynamic registry and starts or stops the watch caches.
/// New watch caches start before their resources are routed; old ones stop after theirs are gone.
fn rebuild(server: &ApiServer, crds: &BTreeMap<String, Arc<Value>>) {
    let served: Vec<&'static Resource> = crds.values().flat_map(|c| resources_of(c)).collect();
    let wanted: HashSet<(&str, &str)> = served.iter().map(|r| (r.group, r.plural)).collect();
    {
        let mut caches = server.dynamic_caches.write();
        for r in &served {
            if caches.contains_key(&(r.group, r.plural)) {
                continue;
            }
            let cache = WatchCache::new(r.prefix(None));
            let task = tokio::spawn(cache.clone().run(server.store.clone())).abort_handle();
            caches.insert((r.group, r.plural), (cache, task));
        }
    }
    dynamic::set(served);
    server.dynamic_caches.write().retain(|k, (_, task)| {
        let keep = wanted.contains(&(k.0, k.1));
        if !keep {
            task.abort();
        }
        keep
    });
}

/// Keeps the dynamic registry in step with the CRDs in the store, from the CRD watch cache.
pub async fn run(server: Arc<ApiServer>) {
    let Some(r) = crd_resource() else { return };
    let prefix = r.prefix(None);
    loop {
        let Some(cache) = server.cache(r) else { return };
        let mut live = match cache.watch(0) {
            Start::Stream(_, live) => live,
            Start::NotReady | Start::TooOld(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Subscribed first, listed second: events up to the list's revision are already in it.
        let Some((objs, listed)) = cache.list(&prefix) else {
            continue;
        };
        let mut crds: BTreeMap<String, Arc<Value>> = objs
            .into_iter()
            .map(|o| (str_at(&o, "/metadata/name").to_string(), o))
            .collect();
        rebuild(&server, &crds);
        server
            .crd_seen
            .send_if_modified(|s| std::mem::replace(s, (*s).max(listed)) < listed);
        server.crd_cleanup.notify_one();
        loop {
            let ev = match live.recv().await {
                Ok(ev) => ev,
                // Lagged, or the cache relisted: start over from a fresh list.
                Err(_) => break,
            };
            if ev.kind != Kind::Bookmark && ev.revision > listed {
                let Some(obj) = ev.object.clone() else { continue };
                let name = str_at(&obj, "/metadata/name").to_string();
                match ev.kind {
                    Kind::Deleted => {
                        crds.remove(&name);
                    }
                    _ => {
                        if obj.pointer("/metadata/deletionTimestamp").is_some() {
                            server.crd_cleanup.notify_one();
                        }
                        crds.insert(name, obj);
                    }
                }
                rebuild(&server, &crds);
            }
            let rev = ev.revision;
            server
                .crd_seen
                .send_if_modified(|s| std::mem::replace(s, (*s).max(rev)) < rev);
        }
    }
}

/// Waits (bounded) until this server's registry reflects store revision `rev` and the watch caches of the
/// custom resources it serves have their initial lists.
pub async fn wait_seen(server: &ApiServer, rev: i64) {
    let mut rx = server.crd_seen.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s >= rev)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let ready = server.dynamic_caches.read().values().all(|(c, _)| c.ready());
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether CRD `name` is marked for deletion (upstream then refuses new custom resources).
pub fn terminating(server: &ApiServer, name: &str) -> bool {
    let Some(r) = crd_resource() else { return false };
    let Some((objs, _)) = server.cache(r).and_then(|c| c.list(&r.key(None, name))) else {
        return false;
    };
    objs.iter()
        .any(|o| str_at(o, "/metadata/name") == name && o.pointer("/metadata/deletionTimestamp").is_some())
}

/// The cleanup finalizer: deletes the custom resources of CRDs marked for deletion, then lets the CRD go.
pub async fn cleanup(server: Arc<ApiServer>) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), server.crd_cleanup.notified()).await;
        let Some(r) = crd_resource() else { return };
        let Some((crds, _)) = server.cache(r).and_then(|c| c.list(&r.prefix(None))) else {
            continue;
        };
        retry_names(&server, &crds).await;
        for crd in crds.iter().filter(|c| {
            c.pointer("/metadata/deletionTimestamp").is_some()
                && strings_at(c, "/metadata/finalizers")
                    .iter()
                    .any(|f| f == CLEANUP_FINALIZER)
        }) {
            let name = str_at(crd, "/metadata/name");
            if let Err(e) = finalize(&server, crd).await {
                tracing::warn!(crd = name, error = %e, "custom resource cleanup");
            }
        }
    }
}

/// The naming controller's retry: a CRD whose names conflicted gets them once the other CRD lets go
/// (is deleted or renamed). Its status is rewritten only when the outcome changed.
async fn retry_names(server: &ApiServer, crds: &[Arc<Value>]) {
    let Some(r) = crd_resource() else { return };
    for crd in crds {
        let accepted = condition(crd, "NamesAccepted").is_none_or(|c| c["status"] == "True");
        if accepted || crd.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let mut next = Value::clone(crd);
        accept_names(&mut next, crd.pointer("/status/acceptedNames"), crds);
        if next.get("status") == crd.get("status") {
            continue;
        }
        let name = str_at(crd, "/metadata/name");
        let Some(rv) = str_at(crd, "/metadata/resourceVersion").parse::<i64>().ok() else {
            continue;
        };
        let key = r.key(None, name);
        match server
            .store
            .put_if(&key, crate::handlers::write::encode(&next), rv)
            .await
        {
            Ok(Write::Done(_)) => tracing::info!(crd = name, "names accepted after a conflict cleared"),
            Ok(_) => {} // changed meanwhile: looked at again on the next pass
            Err(e) => tracing::warn!(crd = name, error = %e, "naming status update"),
        }
    }
}

async fn finalize(server: &ApiServer, crd: &Value) -> ApiResult<()> {
    let name = str_at(crd, "/metadata/name");
    let Some(crd_r) = crd_resource() else { return Ok(()) };
    if let Some(r) = resources_of(crd).into_iter().next() {
        let ctx = Ctx {
            server,
            r,
            namespace: None,
            table: false,
            subresource: None,
            user_agent: "",
        };
        let opts = DeleteOptions {
            propagation: Some("Background".into()),
            ..Default::default()
        };
        delete_matching(&ctx, &HashMap::new(), &opts).await?;
    }
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let prefix = format!("/registry/{group}/{plural}/");
    let left = server
        .store
        .list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 1)
        .await?;
    if !left.kvs.is_empty() {
        return Ok(()); // instances with finalizers of their own: retried on the next pass
    }
    let key = crd_r.key(None, name);
    let (kv, _) = server.store.get(&key).await?;
    let Some(kv) = kv else { return Ok(()) };
    let Some(mut cur) = decode(&kv.value, kv.mod_revision) else {
        return Ok(());
    };
    let fins: Vec<String> = strings_at(&cur, "/metadata/finalizers")
        .into_iter()
        .filter(|f| f != CLEANUP_FINALIZER)
        .collect();
    let res = if fins.is_empty() {
        server.store.delete_if(&key, kv.mod_revision).await?
    } else {
        if let Some(m) = cur.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("finalizers".into(), json!(fins));
        }
        server
            .store
            .put_if(&key, crate::handlers::write::encode(&cur), kv.mod_revision)
            .await?
    };
    if let Write::Done(_) = res {
        tracing::info!(crd = name, "custom resources removed; CRD finalized");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                        "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas"}},
                        "additionalPrinterColumns": [{"name": "Size", "type": "string", "jsonPath": ".spec.size"}]},
                    {"name": "v1beta1", "served": false, "storage": false,
                        "schema": {"openAPIV3Schema": {"type": "object"}}},
                ]},
        })
    }

    fn causes(e: ApiError) -> Vec<String> {
        e.status()["details"]["causes"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["field"].as_str().unwrap_or(""),
                            c["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn defaulting_sets_names_and_status() {
        let mut c = crd();
        default_crd(&mut c);
        accept_names(&mut c, None, &[]);
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
        assert_eq!(c["status"]["acceptedNames"]["shortNames"], json!(["wd"]));
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        let types: Vec<&str> = c["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "True")
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["NamesAccepted", "Established"]);
        assert!(validate_crd(&c).is_ok());
        // Defaulting again keeps the transition times and the stored versions.
        let before = c.clone();
        default_crd(&mut c);
        let granted = c["status"]["acceptedNames"].clone();
        accept_names(&mut c, Some(&granted), &[]);
        assert_eq!(before, c);
    }

    fn condition_of<'a>(c: &'a Value, ty: &str) -> (&'a str, &'a str, &'a str) {
        match condition(c, ty) {
            Some(x) => (
                x["status"].as_str().unwrap_or(""),
                x["reason"].as_str().unwrap_or(""),
                x["message"].as_str().unwrap_or(""),
            ),
            None => ("", "", ""),
        }
    }

    #[test]
    fn conflicting_names_are_not_accepted() {
        let mut first = crd();
        default_crd(&mut first);
        accept_names(&mut first, None, &[]);
        let first = Arc::new(first);
        // Same group and kind, another plural: the kind is taken.
        let mut second = crd();
        second["metadata"]["name"] = json!("gadgets.example.com");
        second["spec"]["names"] = json!({"plural": "gadgets", "kind": "Widget", "shortNames": ["gd"]});
        default_crd(&mut second);
        accept_names(&mut second, None, std::slice::from_ref(&first));
        assert_eq!(
            condition_of(&second, "NamesAccepted"),
            ("False", "ListKindConflict", "\"WidgetList\" is already in use")
        );
        assert_eq!(
            condition_of(&second, "Established"),
            ("False", "NotAccepted", "not all names are accepted")
        );
        assert!(
            resources_of(&second).is_empty(),
            "a CRD never established is not served"
        );
        assert_eq!(second["status"]["acceptedNames"]["plural"], "gadgets");
        assert!(second["status"]["acceptedNames"].get("kind").is_none());
        // A short name held by the first one.
        let mut third = crd();
        third["metadata"]["name"] = json!("gears.example.com");
        third["spec"]["names"] = json!({"plural": "gears", "kind": "Gear", "shortNames": ["wd", "widget"]});
        default_crd(&mut third);
        accept_names(&mut third, None, std::slice::from_ref(&first));
        assert_eq!(
            condition_of(&third, "NamesAccepted"),
            (
                "False",
                "ShortNamesConflict",
                "[\"wd\" is already in use, \"widget\" is already in use]"
            )
        );
        // Another group does not conflict; and once the holder is gone the names are granted.
        accept_names(&mut second, None, &[]);
        assert_eq!(
            condition_of(&second, "NamesAccepted"),
            ("True", "NoConflicts", "no conflicts found")
        );
        assert_eq!(condition_of(&second, "Established").0, "True");
        assert_eq!(resources_of(&second).len(), 1);
        // An established CRD that asks for a taken kind keeps serving its granted one.
        let mut gizmos = crd();
        gizmos["metadata"]["name"] = json!("gizmos.example.com");
        gizmos["spec"]["names"] = json!({"plural": "gizmos", "kind": "Gizmo"});
        default_crd(&mut gizmos);
        accept_names(&mut gizmos, None, &[]);
        let granted = gizmos["status"]["acceptedNames"].clone();
        let mut renamed = gizmos.clone();
        renamed["spec"]["names"]["kind"] = json!("Widget");
        renamed["spec"]["names"]["listKind"] = json!("WidgetList");
        accept_names(&mut renamed, Some(&granted), std::slice::from_ref(&first));
        assert_eq!(condition_of(&renamed, "NamesAccepted").0, "False");
        assert_eq!(condition_of(&renamed, "Established").0, "True");
        assert_eq!(renamed["status"]["acceptedNames"]["kind"], granted["kind"]);
        assert_eq!(resources_of(&renamed).first().map(|r| r.kind), granted["kind"].as_str());
    }

    #[test]
    fn validation_causes() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets.other.com");
        c["spec"]["versions"][1]["storage"] = json!(true);
        c["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] = json!(".status.x");
        c["spec"]["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("text");
        let got = causes(validate_crd(&c).expect_err("invalid"));
        assert_eq!(
            got,
            vec![
                "metadata.name: Invalid value: \"widgets.other.com\": must be spec.names.plural+\".\"+spec.group",
                "spec.versions: Invalid value: [\"v1\",\"v1beta1\"]: must have exactly one version marked as storage version",
                "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".status.x\": should be a json path under .spec",
                "spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"text\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
            ]
        );
        let mut old = crd();
        default_crd(&mut old);
        let mut new = old.clone();
        new["spec"]["scope"] = json!("Cluster");
        let got = causes(validate_crd_update(&old, &new).expect_err("immutable"));
        assert_eq!(got, vec!["spec.scope: Invalid value: \"Cluster\": field is immutable"]);
    }

    #[test]
    fn served_versions_become_interned_resources() {
        let rs = resources_of(&crd());
        assert_eq!(rs.len(), 1, "only served versions");
        let r = rs[0];
        assert_eq!(
            (r.group, r.version, r.kind, r.plural, r.singular),
            ("example.com", "v1", "Widget", "widgets", "widget")
        );
        assert_eq!(r.key(Some("ns"), "a"), "/registry/example.com/widgets/ns/a");
        assert_eq!(r.short_names, ["wd"]);
        assert!(r.has_status_subresource() && r.has_scale());
        let c = r.custom.as_ref().expect("custom");
        assert_eq!(c.list_kind, "WidgetList");
        assert_eq!(
            c.scale.as_ref().map(|s| s.spec_replicas.as_str()),
            Some("/spec/replicas")
        );
        assert_eq!(c.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Size"]);
        // The same definition again: the same leaked value.
        let again = resources_of(&crd());
        assert!(std::ptr::eq(r, again[0]));
        let mut changed = crd();
        changed["spec"]["versions"][0]["additionalPrinterColumns"] = json!([]);
        let other = resources_of(&changed)[0];
        assert!(!std::ptr::eq(r, other));
        assert_eq!(other.custom.as_ref().map(|c| c.columns[0].name.as_str()), Some("Age"));
        assert!(resources_of(&json!({"spec": {}})).is_empty());
    }
}
