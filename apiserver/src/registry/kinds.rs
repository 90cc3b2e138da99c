//! Defaulting and validation for the built-in kinds beyond pods and workloads: storage (PV, PVC), quota and
//! limits, endpoints and endpoint slices, Job/CronJob, PodDisruptionBudget, ControllerRevision and RBAC.
//! Only what upstream's defaulters set for fields clients read back, and the checks clients meet most
//! (required fields, enums), with upstream's field paths and wording (`pkg/apis/*/validation`).

use serde_json::{json, Map, Value};

use super::{default_template, entry_obj, Resource};
use crate::error::ApiError;

type Causes = Vec<(String, String)>;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub(super) fn default_object(kind: &str, o: &mut Map<String, Value>) {
    match kind {
        "CronJob" => {
            let spec = entry_obj(o, "spec");
            spec.entry("concurrencyPolicy").or_insert_with(|| json!("Allow"));
            spec.entry("suspend").or_insert_with(|| json!(false));
            spec.entry("successfulJobsHistoryLimit").or_insert_with(|| json!(3));
            spec.entry("failedJobsHistoryLimit").or_insert_with(|| json!(1));
            // The job template gets the pod defaults only: SetDefaults_Job runs on Jobs, not on templates.
            if let Some(Value::Object(js)) = spec.get_mut("jobTemplate").and_then(|t| t.get_mut("spec")) {
                default_template(js);
            }
            o.entry("status").or_insert_with(|| json!({}));
        }
        "PersistentVolume" => {
            let spec = entry_obj(o, "spec");
            spec.entry("persistentVolumeReclaimPolicy")
                .or_insert_with(|| json!("Retain"));
            spec.entry("volumeMode").or_insert_with(|| json!("Filesystem"));
            entry_obj(o, "status")
                .entry("phase")
                .or_insert_with(|| json!("Pending"));
        }
        "PersistentVolumeClaim" => {
            entry_obj(o, "spec")
                .entry("volumeMode")
                .or_insert_with(|| json!("Filesystem"));
            entry_obj(o, "status")
                .entry("phase")
                .or_insert_with(|| json!("Pending"));
        }
        "ResourceQuota" => {
            o.entry("status").or_insert_with(|| json!({}));
        }
        "PodDisruptionBudget" => {
            // These four status counters have no omitempty upstream, so clients always see them.
            let status = entry_obj(o, "status");
            for f in ["disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"] {
                status.entry(f).or_insert_with(|| json!(0));
            }
        }
        "Endpoints" => {
            for subset in array_objects(o.get_mut("subsets")) {
                for p in array_objects(subset.get_mut("ports")) {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for p in array_objects(o.get_mut("ports")) {
                p.entry("name").or_insert_with(|| json!(""));
                p.entry("protocol").or_insert_with(|| json!("TCP"));
            }
        }
        "LimitRange" => {
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                for item in array_objects(spec.get_mut("limits")) {
                    default_limit_range_item(item);
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            // roleRef is a struct (not a pointer) upstream, so its apiGroup is defaulted even when absent.
            entry_obj(o, "roleRef")
                .entry("apiGroup")
                .or_insert_with(|| json!(RBAC_GROUP));
            for s in array_objects(o.get_mut("subjects")) {
                let group = match s.get("kind").and_then(Value::as_str) {
                    Some("ServiceAccount") => "",
                    Some("User" | "Group") => RBAC_GROUP,
                    _ => continue,
                };
                if s.get("apiGroup").and_then(Value::as_str).is_none_or(str::is_empty) {
                    s.insert("apiGroup".into(), json!(group));
                }
            }
        }
        _ => {}
    }
}

fn array_objects(v: Option<&mut Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    v.and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Container limits: default limit from max, default request from the default limit, then from min.
fn default_limit_range_item(item: &mut Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let list = |item: &Map<String, Value>, k: &str| item.get(k).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut default = list(item, "default");
    for (k, v) in list(item, "max") {
        default.entry(k).or_insert(v);
    }
    let mut request = list(item, "defaultRequest");
    for (k, v) in default.iter().chain(list(item, "min").iter()) {
        request.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // Empty maps are omitted on the wire.
    if !default.is_empty() {
        item.insert("default".into(), Value::Object(default));
    }
    if !request.is_empty() {
        item.insert("defaultRequest".into(), Value::Object(request));
    }
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn len(o: &Value, ptr: &str) -> usize {
    match o.pointer(ptr) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(m)) => m.len(),
        _ => 0,
    }
}

fn push(c: &mut Causes, field: impl Into<String>, msg: impl Into<String>) {
    c.push((field.into(), msg.into()));
}

/// `Unsupported value: "x": supported values: "a", "b"`.
fn not_supported(value: &str, allowed: &[&str]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    format!("Unsupported value: {value:?}: supported values: {}", allowed.join(", "))
}

pub(super) fn validate(kind: &str, obj: &Value, c: &mut Causes) {
    match kind {
        "Job" => pod_template_for_job(obj.pointer("/spec/template"), "spec.template", c),
        "CronJob" => cron_job(obj, c),
        "PersistentVolume" => persistent_volume(obj, c),
        "PersistentVolumeClaim" => {
            if len(obj, "/spec/accessModes") == 0 {
                push(
                    c,
                    "spec.accessModes",
                    "Required value: at least 1 access mode is required",
                );
            }
            if obj.pointer("/spec/resources/requests/storage").is_none() {
                push(c, "spec.resources[storage]", "Required value");
            }
        }
        "PodDisruptionBudget" => pdb(obj, c),
        "ControllerRevision" => {
            if obj.get("data").is_none_or(Value::is_null) {
                push(c, "data", "Required value: data is mandatory");
            }
            if let Some(r) = obj.get("revision").and_then(Value::as_i64).filter(|r| *r < 0) {
                push(
                    c,
                    "revision",
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                );
            }
        }
        "EndpointSlice" => {
            let at = s(obj, "/addressType");
            if at.is_empty() {
                push(c, "addressType", "Required value");
            } else if !["IPv4", "IPv6", "FQDN"].contains(&at) {
                push(c, "addressType", not_supported(at, &["IPv4", "IPv6", "FQDN"]));
            }
            for (i, e) in obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if len(e, "/addresses") == 0 {
                    push(
                        c,
                        format!("endpoints[{i}].addresses"),
                        "Required value: must contain at least 1 address",
                    );
                }
            }
        }
        "Endpoints" => {
            let subsets = obj.get("subsets").and_then(Value::as_array);
            for (i, ss) in subsets.into_iter().flatten().enumerate() {
                for list in ["addresses", "notReadyAddresses"] {
                    let addrs = ss.get(list).and_then(Value::as_array);
                    for (j, a) in addrs.into_iter().flatten().enumerate() {
                        if s(a, "/ip").is_empty() {
                            push(c, format!("subsets[{i}].{list}[{j}].ip"), "Required value");
                        }
                    }
                }
                let ports = ss.get("ports").and_then(Value::as_array);
                for (j, p) in ports.into_iter().flatten().enumerate() {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        push(
                            c,
                            format!("subsets[{i}].ports[{j}].port"),
                            format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                        );
                    }
                }
            }
        }
        "LimitRange" => {
            let limits = obj.pointer("/spec/limits").and_then(Value::as_array);
            for (i, l) in limits.into_iter().flatten().enumerate() {
                let t = s(l, "/type");
                if t.is_empty() {
                    push(c, format!("spec.limits[{i}].type"), "Required value");
                }
            }
        }
        "Role" | "ClusterRole" => {
            let rules = obj.get("rules").and_then(Value::as_array);
            for (i, r) in rules.into_iter().flatten().enumerate() {
                policy_rule(r, kind == "Role", &format!("rules[{i}]"), c);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => role_binding(kind, obj, c),
        _ => {}
    }
}

pub(super) fn validate_update(kind: &str, old: &Value, new: &Value, c: &mut Causes) {
    if matches!(kind, "RoleBinding" | "ClusterRoleBinding") {
        let rr = |o: &Value| {
            (
                s(o, "/roleRef/apiGroup").to_string(),
                s(o, "/roleRef/kind").to_string(),
                s(o, "/roleRef/name").to_string(),
            )
        };
        if rr(old) != rr(new) {
            let (g, k, n) = rr(new);
            // Upstream prints the Go struct (`%#v`).
            push(
                c,
                "roleRef",
                format!("Invalid value: rbac.RoleRef{{APIGroup:{g:?}, Kind:{k:?}, Name:{n:?}}}: cannot change roleRef"),
            );
        }
    }
}

fn pod_template_for_job(t: Option<&Value>, path: &str, c: &mut Causes) {
    let spec = t.and_then(|t| t.get("spec"));
    if spec.map_or(0, |s| len(s, "/containers")) == 0 {
        push(c, format!("{path}.spec.containers"), "Required value");
    }
    let rp = spec.map(|sp| s(sp, "/restartPolicy")).unwrap_or_default();
    if rp != "OnFailure" && rp != "Never" {
        push(
            c,
            format!("{path}.spec.restartPolicy"),
            "Required value: valid values: \"OnFailure\", \"Never\"",
        );
    }
}

fn cron_job(obj: &Value, c: &mut Causes) {
    let name = s(obj, "/metadata/name");
    // The controller appends an 11-character suffix to name its Jobs.
    if name.len() > 52 {
        push(
            c,
            "metadata.name",
            format!("Invalid value: {name:?}: must be no more than 52 characters"),
        );
    }
    let schedule = s(obj, "/spec/schedule");
    if schedule.is_empty() {
        push(c, "spec.schedule", "Required value");
    } else if let Some(why) = cron_schedule_error(schedule) {
        push(c, "spec.schedule", format!("Invalid value: {schedule:?}: {why}"));
    }
    let policy = s(obj, "/spec/concurrencyPolicy");
    if !["Allow", "Forbid", "Replace"].contains(&policy) {
        push(
            c,
            "spec.concurrencyPolicy",
            not_supported(policy, &["Allow", "Forbid", "Replace"]),
        );
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(v) = obj
            .pointer(&format!("/spec/{f}"))
            .and_then(Value::as_i64)
            .filter(|v| *v < 0)
        {
            push(
                c,
                format!("spec.{f}"),
                format!("Invalid value: {v}: must be greater than or equal to 0"),
            );
        }
    }
    pod_template_for_job(
        obj.pointer("/spec/jobTemplate/spec/template"),
        "spec.jobTemplate.spec.template",
        c,
    );
}

/// The shape checks of robfig/cron's standard parser, with its messages: five fields or a descriptor.
fn cron_schedule_error(schedule: &str) -> Option<String> {
    let schedule = schedule.trim();
    if let Some(d) = schedule.strip_prefix('@') {
        let known = ["yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"];
        if known.contains(&d) || d.starts_with("every ") {
            return None;
        }
        return Some(format!("unrecognized descriptor: {schedule}"));
    }
    // A leading TZ=/CRON_TZ= is allowed by the parser (upstream then rejects it separately).
    let fields: Vec<&str> = schedule
        .split_whitespace()
        .skip_while(|f| f.starts_with("TZ=") || f.starts_with("CRON_TZ="))
        .collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    None
}

fn persistent_volume(obj: &Value, c: &mut Causes) {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    // Any key other than these is a volume source (hostPath, nfs, csi, local, ...).
    const NOT_SOURCES: &[&str] = &[
        "capacity",
        "accessModes",
        "claimRef",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "mountOptions",
        "volumeMode",
        "nodeAffinity",
        "volumeAttributesClassName",
    ];
    let sources = spec
        .as_object()
        .map_or(0, |m| m.keys().filter(|k| !NOT_SOURCES.contains(&k.as_str())).count());
    if sources == 0 {
        push(c, "spec", "Required value: must specify a volume type");
    }
    if len(&spec, "/accessModes") == 0 {
        push(c, "spec.accessModes", "Required value");
    }
    let capacity = spec.get("capacity").and_then(Value::as_object);
    if capacity.is_none_or(Map::is_empty) {
        push(c, "spec.capacity", "Required value");
    } else if let Some(m) = capacity.filter(|m| m.len() > 1 || !m.contains_key("storage")) {
        let value = Value::Object(m.clone());
        push(
            c,
            "spec.capacity",
            format!("Unsupported value: {value}: supported values: \"storage\""),
        );
    }
    let policy = s(&spec, "/persistentVolumeReclaimPolicy");
    if !["Delete", "Recycle", "Retain"].contains(&policy) {
        push(
            c,
            "spec.persistentVolumeReclaimPolicy",
            not_supported(policy, &["Delete", "Recycle", "Retain"]),
        );
    }
}

fn int_or_percent(v: &Value, field: &str, c: &mut Causes) {
    match v {
        Value::Number(n) if n.as_i64().is_none_or(|n| n < 0) => {
            push(
                c,
                field,
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            );
        }
        Value::String(p) => {
            let num = p
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match num.map(str::parse::<u64>) {
                None => push(
                    c,
                    field,
                    format!("Invalid value: {p:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                ),
                Some(Ok(n)) if n <= 100 => {}
                Some(_) => push(c, field, format!("Invalid value: {p:?}: must not be greater than 100%")),
            }
        }
        _ => {}
    }
}

fn pdb(obj: &Value, c: &mut Causes) {
    let min = obj.pointer("/spec/minAvailable");
    let max = obj.pointer("/spec/maxUnavailable");
    if min.is_some() && max.is_some() {
        push(
            c,
            "spec",
            "Invalid value: policy.PodDisruptionBudgetSpec{...}: minAvailable and maxUnavailable cannot be both set",
        );
    }
    if let Some(v) = min {
        int_or_percent(v, "spec.minAvailable", c);
    }
    if let Some(v) = max {
        int_or_percent(v, "spec.maxUnavailable", c);
    }
}

fn policy_rule(r: &Value, namespaced: bool, path: &str, c: &mut Causes) {
    if len(r, "/verbs") == 0 {
        push(
            c,
            format!("{path}.verbs"),
            "Required value: verbs must contain at least one value",
        );
    }
    if len(r, "/nonResourceURLs") > 0 {
        let urls = r.get("nonResourceURLs").map(go_strings).unwrap_or_default();
        if namespaced {
            push(
                c,
                format!("{path}.nonResourceURLs"),
                format!("Invalid value: {urls}: namespaced rules cannot apply to non-resource URLs"),
            );
        }
        if len(r, "/apiGroups") > 0 || len(r, "/resources") > 0 || len(r, "/resourceNames") > 0 {
            push(
                c,
                format!("{path}.nonResourceURLs"),
                format!("Invalid value: {urls}: rules cannot apply to both regular resources and non-resource URLs"),
            );
        }
        return;
    }
    if len(r, "/apiGroups") == 0 {
        push(
            c,
            format!("{path}.apiGroups"),
            "Required value: resource rules must supply at least one api group",
        );
    }
    if len(r, "/resources") == 0 {
        push(
            c,
            format!("{path}.resources"),
            "Required value: resource rules must supply at least one resource",
        );
    }
    if len(r, "/resourceNames") > 0 && len(r, "/resources") > 1 {
        push(
            c,
            format!("{path}.resourceNames"),
            "Required value: resource names cannot apply to multiple resources",
        );
    }
}

/// A string list as Go's `%#v` prints a `[]string`.
fn go_strings(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("{:?}", x.as_str().unwrap_or_default()))
        .collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn role_binding(kind: &str, obj: &Value, c: &mut Causes) {
    let group = s(obj, "/roleRef/apiGroup");
    if group != RBAC_GROUP {
        push(c, "roleRef.apiGroup", not_supported(group, &[RBAC_GROUP]));
    }
    let ref_kind = s(obj, "/roleRef/kind");
    let allowed: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !allowed.contains(&ref_kind) {
        push(c, "roleRef.kind", not_supported(ref_kind, allowed));
    }
    let ref_name = s(obj, "/roleRef/name");
    if ref_name.is_empty() {
        push(c, "roleRef.name", "Required value");
    } else {
        for why in path_segment_errors(ref_name) {
            push(c, "roleRef.name", format!("Invalid value: {ref_name:?}: {why}"));
        }
    }
    let subjects = obj.get("subjects").and_then(Value::as_array);
    for (i, sub) in subjects.into_iter().flatten().enumerate() {
        let p = format!("subjects[{i}]");
        let name = s(sub, "/name");
        let group = s(sub, "/apiGroup");
        if name.is_empty() {
            push(c, format!("{p}.name"), "Required value");
        }
        match s(sub, "/kind") {
            "ServiceAccount" => {
                if let Some(why) = (!name.is_empty()).then(|| super::dns1123(name, false)).flatten() {
                    push(c, format!("{p}.name"), format!("Invalid value: {name:?}: {why}"));
                }
                if !group.is_empty() {
                    push(c, format!("{p}.apiGroup"), not_supported(group, &[""]));
                }
                if kind == "ClusterRoleBinding" && s(sub, "/namespace").is_empty() {
                    push(c, format!("{p}.namespace"), "Required value");
                }
            }
            k @ ("User" | "Group") => {
                if name.is_empty() {
                    let what = if k == "User" { "user" } else { "group" };
                    push(
                        c,
                        format!("{p}.name"),
                        format!("Invalid value: \"\": {what} name cannot be empty"),
                    );
                }
                if group != RBAC_GROUP {
                    push(c, format!("{p}.apiGroup"), not_supported(group, &[RBAC_GROUP]));
                }
            }
            other => push(
                c,
                format!("{p}.kind"),
                not_supported(other, &["ServiceAccount", "User", "Group"]),
            ),
        }
    }
}

/// Upstream's IsValidPathSegmentName, the only name rule for RBAC objects.
pub(super) fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| name.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// 422 Invalid for this resource (see `ApiError::invalid`).
pub(super) fn invalid(r: &Resource, name: &str, causes: Causes) -> ApiError {
    ApiError::invalid(r.kind, r.group, name, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn err_message(e: ApiError) -> String {
        match e {
            ApiError::Status { code: 422, message, .. } => message,
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn cron_job_defaults_and_schedule() {
        let r = find("batch", "v1", "cronjobs").expect("cronjobs");
        let mut cj = json!({"metadata": {"name": "cj"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        r.default_object(&mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        let msg = err_message(r.validate(&cj).expect_err("no schedule"));
        assert_eq!(msg, "CronJob.batch \"cj\" is invalid: spec.schedule: Required value");
        cj["spec"]["schedule"] = json!("bad");
        let msg = err_message(r.validate(&cj).expect_err("bad schedule"));
        assert!(msg.contains("expected exactly 5 fields, found 1: [bad]"), "{msg}");
        cj["spec"]["schedule"] = json!("*/1 * * * *");
        assert!(r.validate(&cj).is_ok());
        cj["spec"]["schedule"] = json!("@hourly");
        assert!(r.validate(&cj).is_ok());
    }

    #[test]
    fn role_binding_rules() {
        let r = find("rbac.authorization.k8s.io", "v1", "rolebindings").expect("rolebindings");
        let mut rb = json!({"metadata": {"name": "system:rb"}, "subjects": [{"kind": "User", "name": "alice"}]});
        r.default_object(&mut rb);
        assert_eq!(rb["subjects"][0]["apiGroup"], RBAC_GROUP);
        let msg = err_message(r.validate(&rb).expect_err("no roleRef"));
        assert!(
            msg.contains("roleRef.kind: Unsupported value: \"\": supported values: \"Role\", \"ClusterRole\"")
                && msg.contains("roleRef.name: Required value"),
            "{msg}"
        );
        rb["roleRef"] = json!({"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"});
        assert!(r.validate(&rb).is_ok(), "colons are fine in RBAC names");
        let mut changed = rb.clone();
        changed["roleRef"]["name"] = json!("r2");
        let msg = err_message(r.validate_update(&rb, &changed).expect_err("roleRef changed"));
        assert!(msg.ends_with("roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"r2\"}: cannot change roleRef"), "{msg}");
        assert!(r.validate_update(&rb, &rb).is_ok());
    }

    #[test]
    fn storage_defaults_and_required_fields() {
        let pv = find("", "v1", "persistentvolumes").expect("pv");
        let mut o = json!({"metadata": {"name": "pv1"}, "spec": {}});
        pv.default_object(&mut o);
        assert_eq!(o["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(o["status"]["phase"], "Pending");
        let msg = err_message(pv.validate(&o).expect_err("empty pv"));
        assert!(
            msg.contains("spec: Required value: must specify a volume type"),
            "{msg}"
        );
        let pvc = find("", "v1", "persistentvolumeclaims").expect("pvc");
        let mut o = json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"]}});
        pvc.default_object(&mut o);
        assert_eq!(o["spec"]["volumeMode"], "Filesystem");
        let msg = err_message(pvc.validate(&o).expect_err("no storage request"));
        assert_eq!(
            msg,
            "PersistentVolumeClaim \"c\" is invalid: spec.resources[storage]: Required value"
        );
    }

    #[test]
    fn limit_range_container_defaults() {
        let mut item = json!({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "1Mi"}});
        if let Some(m) = item.as_object_mut() {
            default_limit_range_item(m);
        }
        assert_eq!(item["default"], json!({"cpu": "1"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "1", "memory": "1Mi"}));
    }
}
