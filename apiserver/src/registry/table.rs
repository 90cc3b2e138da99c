//! `meta.k8s.io/v1` Table output with the columns of upstream's `pkg/printers/internalversion/printers.go`.

use serde_json::{json, Value};

use super::{Printer, Resource};

/// (name, type, priority); priority 1 columns only show with `-o wide`.
type Col = (&'static str, &'static str, u8);

fn columns(p: Printer) -> &'static [Col] {
    use Printer::*;
    match p {
        NameAge | Custom => &[("Name", "string", 0), ("Age", "string", 0)],
        Pod => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        Namespace => &[("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        ConfigMap => &[("Name", "string", 0), ("Data", "string", 0), ("Age", "string", 0)],
        Secret => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        Deployment => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ReplicaSet => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        DaemonSet => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        StatefulSet => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        Job => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        Node => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        Service => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        ServiceAccount => &[("Name", "string", 0), ("Secrets", "string", 0), ("Age", "string", 0)],
        Event => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        Lease => &[("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        Endpoints => &[("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)],
        EndpointSlice => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        CronJob => &[
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        PersistentVolume => &[
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        PersistentVolumeClaim => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        ResourceQuota => &[
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("Request", "string", 0),
            ("Limit", "string", 0),
        ],
        PodDisruptionBudget => &[
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        ControllerRevision => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ],
        CreatedAt => &[("Name", "string", 0), ("Created At", "date", 0)],
        RoleBinding => &[
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
    }
}

pub fn column_definitions(r: &Resource) -> Value {
    if let Some(c) = &r.custom {
        return super::jsonpath::column_definitions(c);
    }
    Value::Array(
        columns(r.printer)
            .iter()
            .map(|(name, ty, prio)| {
                let format = if *name == "Name" { "name" } else { "" };
                json!({"name": name, "type": ty, "format": format, "description": "", "priority": prio})
            })
            .collect(),
    )
}

/// A Table holding `objects`; `with_columns` false for watch events after the first.
pub fn table(r: &Resource, objects: &[Value], list_meta: Value, with_columns: bool) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| row(r, o)).collect();
    let cols = if with_columns { column_definitions(r) } else { json!([]) };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": cols, "rows": rows,
    })
}

pub fn row(r: &Resource, o: &Value) -> Value {
    let meta = o.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let object = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta});
    let cells = match &r.custom {
        Some(c) => super::jsonpath::cells(c, o),
        None => cells(r.printer, o),
    };
    json!({"cells": cells, "object": object})
}

pub(super) fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}
pub(super) fn n(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or_default()
}
pub(super) fn none_if_empty(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn unknown_if_empty(v: &str) -> &str {
    if v.is_empty() {
        "<unknown>"
    } else {
        v
    }
}

pub(super) fn age(o: &Value) -> String {
    let ts = s(o, "/metadata/creationTimestamp");
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        return match secs % 60 {
            0 => format!("{mins}m"),
            s => format!("{mins}m{s}s"),
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = mins / 60;
    if hours < 8 {
        return match mins % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    format!("{}y", hours / 24 / 365)
}

fn containers(o: &Value) -> (String, String) {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector(o: &Value) -> String {
    let labels = o.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
    let mut v: Vec<String> = labels
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    none_if_empty(v.join(","))
}

fn cells(p: Printer, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match p {
        Printer::NameAge => vec![name, json!(age(o))],
        Printer::Pod => pod_cells(o),
        Printer::Namespace => vec![name, json!(s(o, "/status/phase")), json!(age(o))],
        Printer::ConfigMap => {
            let count = ["/data", "/binaryData"]
                .iter()
                .filter_map(|p| o.pointer(p).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            vec![name, json!(count), json!(age(o))]
        }
        Printer::Secret => {
            let count = o.pointer("/data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(s(o, "/type")), json!(count), json!(age(o))]
        }
        Printer::Deployment => {
            let (c, i) = containers(o);
            vec![
                name,
                json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                json!(age(o)),
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        Printer::ReplicaSet => {
            let (c, i) = containers(o);
            vec![
                name,
                json!(n(o, "/spec/replicas")),
                json!(n(o, "/status/replicas")),
                json!(n(o, "/status/readyReplicas")),
                json!(age(o)),
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        Printer::DaemonSet => {
            let (c, i) = containers(o);
            let ns = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .join(",");
            vec![
                name,
                json!(n(o, "/status/desiredNumberScheduled")),
                json!(n(o, "/status/currentNumberScheduled")),
                json!(n(o, "/status/numberReady")),
                json!(n(o, "/status/updatedNumberScheduled")),
                json!(n(o, "/status/numberAvailable")),
                json!(none_if_empty(ns)),
                json!(age(o)),
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        Printer::StatefulSet => {
            let (c, i) = containers(o);
            let ready = format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"));
            vec![name, json!(ready), json!(age(o)), json!(c), json!(i)]
        }
        Printer::Job => {
            let (c, i) = containers(o);
            let completions = o.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
            let status = if n(o, "/status/succeeded") >= completions {
                "Complete"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(format!("{}/{completions}", n(o, "/status/succeeded"))),
                json!(""),
                json!(age(o)),
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        Printer::Node => node_cells(o),
        Printer::Service => service_cells(o),
        Printer::ServiceAccount => {
            let secrets = o.pointer("/secrets").and_then(Value::as_array).map_or(0, Vec::len);
            vec![name, json!(secrets), json!(age(o))]
        }
        Printer::Event => {
            let obj = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            vec![
                json!(age(o)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(obj),
                json!(s(o, "/message")),
            ]
        }
        Printer::Lease => vec![name, json!(s(o, "/spec/holderIdentity")), json!(age(o))],
        Printer::Endpoints
        | Printer::EndpointSlice
        | Printer::CronJob
        | Printer::PersistentVolume
        | Printer::PersistentVolumeClaim
        | Printer::ResourceQuota
        | Printer::PodDisruptionBudget
        | Printer::ControllerRevision
        | Printer::CreatedAt
        | Printer::RoleBinding => super::cells::cells(p, o),
        // Custom resources are printed from their CRD's columns (`custom_cells`).
        Printer::Custom => vec![name, json!(age(o))],
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.get("ready") == Some(&json!(true))).count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let mut status = s(o, "/status/phase").to_string();
    if let Some(r) = o.pointer("/status/reason").and_then(Value::as_str) {
        status = r.to_string();
    }
    for c in &statuses {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = r.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    let ip = none_if_empty(s(o, "/status/podIP").to_string());
    let node = none_if_empty(s(o, "/spec/nodeName").to_string());
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(o)),
        json!(ip),
        json!(node),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conds
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status").to_string());
    let mut status = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
            .map(|x| s(x, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(status),
        json!(none_if_empty(roles.join(","))),
        json!(age(o)),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(unknown_if_empty(s(o, "/status/nodeInfo/osImage"))),
        json!(unknown_if_empty(s(o, "/status/nodeInfo/kernelVersion"))),
        json!(unknown_if_empty(s(o, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn service_cells(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let np = n(p, "/nodePort");
                    let proto = s(p, "/protocol");
                    if np > 0 {
                        format!("{}:{np}/{proto}", n(p, "/port"))
                    } else {
                        format!("{}/{proto}", n(p, "/port"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sel: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    sel.sort();
    let cluster_ip = none_if_empty(s(o, "/spec/clusterIP").to_string());
    vec![
        json!(s(o, "/metadata/name")),
        json!(s(o, "/spec/type")),
        json!(cluster_ip),
        json!("<none>"),
        json!(none_if_empty(ports.join(","))),
        json!(age(o)),
        json!(none_if_empty(sel.join(","))),
    ]
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_match_upstream() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3600 * 3), "3h");
        assert_eq!(human_duration(3600 * 50), "2d2h");
    }
}
