//! Table cells for endpoints, storage, quota, CronJob, PDB, ControllerRevision and RBAC kinds, as
//! upstream's `printers.go` fills them. Column definitions are in `table.rs`.

use serde_json::{json, Value};

use super::table::{age, n, none_if_empty, s};
use super::Printer;

pub(super) fn cells(p: Printer, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match p {
        Printer::Endpoints => vec![name, json!(endpoints(o)), json!(age(o))],
        Printer::EndpointSlice => vec![
            name,
            json!(s(o, "/addressType")),
            json!(slice_ports(o)),
            json!(slice_endpoints(o)),
            json!(age(o)),
        ],
        Printer::CronJob => cron_job(o),
        Printer::PersistentVolume => persistent_volume(o),
        Printer::PersistentVolumeClaim => claim(o),
        Printer::ResourceQuota => {
            let (request, limit) = quota_columns(o);
            vec![name, json!(age(o)), json!(request), json!(limit)]
        }
        Printer::PodDisruptionBudget => {
            let int_or_na = |ptr: &str| match o.pointer(ptr) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(v)) => v.to_string(),
                _ => "N/A".into(),
            };
            vec![
                name,
                json!(int_or_na("/spec/minAvailable")),
                json!(int_or_na("/spec/maxUnavailable")),
                json!(n(o, "/status/disruptionsAllowed")),
                json!(age(o)),
            ]
        }
        Printer::ControllerRevision => {
            vec![name, json!(controller(o)), json!(n(o, "/revision")), json!(age(o))]
        }
        Printer::CreatedAt => vec![name, json!(created_at(o))],
        Printer::RoleBinding => role_binding(o),
        _ => vec![name, json!(age(o))],
    }
}

/// `Created At`: the creation time in RFC 3339, UTC, whole seconds.
fn created_at(o: &Value) -> String {
    match chrono::DateTime::parse_from_rfc3339(s(o, "/metadata/creationTimestamp")) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "<unknown>".into(),
    }
}

fn arr<'a>(o: &'a Value, ptr: &str) -> &'a [Value] {
    o.pointer(ptr).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// `ip:port` for every address and port, the first three, then `+ N more...`.
fn endpoints(o: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addrs.len();
            list.extend(addrs.iter().map(|a| s(a, "/ip").to_string()));
        } else {
            for p in ports {
                count += addrs.len();
                list.extend(addrs.iter().map(|a| host_port(s(a, "/ip"), n(p, "/port"))));
            }
        }
    }
    if list.is_empty() {
        return "<none>".into();
    }
    let shown = list.iter().take(MAX).cloned().collect::<Vec<_>>().join(",");
    if count > MAX {
        format!("{shown} + {} more...", count - MAX)
    } else {
        shown
    }
}

fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn first_three(items: Vec<String>) -> String {
    if items.is_empty() {
        return "<unset>".into();
    }
    let shown = items.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if items.len() > 3 {
        format!("{shown} + {} more...", items.len() - 3)
    } else {
        shown
    }
}

fn slice_ports(o: &Value) -> String {
    let ports = arr(o, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => "<unset>".into(),
        })
        .collect();
    first_three(ports)
}

fn slice_endpoints(o: &Value) -> String {
    let addrs = arr(o, "/endpoints")
        .iter()
        .filter_map(|e| arr(e, "/addresses").first())
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    first_three(addrs)
}

/// metav1.FormatLabelSelector: `k=v` labels, then `key op (values)` expressions; `<none>` when unset.
fn label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    for e in arr(sel, "/matchExpressions") {
        let key = s(e, "/key");
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        // An empty selector selects everything.
        return "".into();
    }
    parts.join(",")
}

fn cron_job(o: &Value) -> Vec<Value> {
    let cs = arr(o, "/spec/jobTemplate/spec/template/spec/containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last = match o.pointer("/status/lastScheduleTime").and_then(Value::as_str) {
        Some(t) => age(&json!({"metadata": {"creationTimestamp": t}})),
        None => "<none>".into(),
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(s(o, "/spec/schedule")),
        json!(none_if_empty(s(o, "/spec/timeZone").to_string())),
        json!(suspend),
        json!(arr(o, "/status/active").len()),
        json!(last),
        json!(age(o)),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(label_selector(o.pointer("/spec/jobTemplate/spec/selector"))),
    ]
}

/// helper.GetAccessModesAsString: the short forms in a fixed order.
fn access_modes(o: &Value, ptr: &str) -> String {
    let modes: Vec<&str> = arr(o, ptr).iter().filter_map(Value::as_str).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| modes.contains(long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn unset_if_empty(v: &str) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v.to_string()
    }
}

/// Quantities are kept as the client wrote them; upstream prints their canonical form.
fn quantity(o: &Value, ptr: &str) -> String {
    match o.pointer(ptr) {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(q)) => q.to_string(),
        _ => "0".into(),
    }
}

fn persistent_volume(o: &Value) -> Vec<Value> {
    let claim = match (s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name")) {
        (_, "") => String::new(),
        (ns, name) => format!("{ns}/{name}"),
    };
    let mut phase = s(o, "/status/phase").to_string();
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        phase = "Terminating".into();
    }
    let capacity = match o.pointer("/spec/capacity/storage") {
        Some(_) => quantity(o, "/spec/capacity/storage"),
        None => "0".into(),
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(capacity),
        json!(access_modes(o, "/spec/accessModes")),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(o)),
        json!(unset_if_empty(s(o, "/spec/volumeAttributesClassName"))),
        json!(s(o, "/status/reason")),
        json!(age(o)),
        json!(unset_if_empty(s(o, "/spec/volumeMode"))),
    ]
}

/// The beta annotation wins over spec.storageClassName, as upstream's helpers read it.
fn storage_class(o: &Value) -> String {
    let ann = o
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    ann.unwrap_or_else(|| s(o, "/spec/storageClassName")).to_string()
}

fn claim(o: &Value) -> Vec<Value> {
    let mut phase = s(o, "/status/phase").to_string();
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        phase = "Terminating".into();
    }
    // Capacity and access modes come from the status, and only once the claim is bound to a volume.
    let bound = !s(o, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            quantity(o, "/status/capacity/storage"),
            access_modes(o, "/status/accessModes"),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(phase),
        json!(s(o, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        json!(unset_if_empty(s(o, "/spec/volumeAttributesClassName"))),
        json!(age(o)),
        json!(unset_if_empty(s(o, "/spec/volumeMode"))),
    ]
}

/// `resource: used/hard` for each resource in spec.hard (sorted), read from the status the quota
/// controller keeps; `limits.*` resources go to the Limit column.
fn quota_columns(o: &Value) -> (String, String) {
    let mut names: Vec<&String> = o
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    names.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for r in names {
        let esc = r.replace('~', "~0").replace('/', "~1");
        let entry = format!(
            "{r}: {}/{}",
            quantity(o, &format!("/status/used/{esc}")),
            quantity(o, &format!("/status/hard/{esc}"))
        );
        if r.split('.').next() == Some("limits") && r.contains('.') {
            limit.push(entry);
        } else {
            request.push(entry);
        }
    }
    (request.join(", "), limit.join(", "))
}

/// The controlling owner as `kind.group/name`, lower-case kind.
fn controller(o: &Value) -> String {
    let owner = arr(o, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let Some(owner) = owner else {
        return "<none>".into();
    };
    let group = s(owner, "/apiVersion")
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    let kind = s(owner, "/kind").to_lowercase();
    let name = s(owner, "/name");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

fn role_binding(o: &Value) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for sub in arr(o, "/subjects") {
        let name = s(sub, "/name").to_string();
        match s(sub, "/kind") {
            "User" => users.push(name),
            "Group" => groups.push(name),
            "ServiceAccount" => sas.push(format!("{}/{name}", s(sub, "/namespace"))),
            _ => {}
        }
    }
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{}/{}", s(o, "/roleRef/kind"), s(o, "/roleRef/name"))),
        json!(age(o)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_column() {
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(endpoints(&ep), "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");
        assert_eq!(endpoints(&json!({})), "<none>");
    }

    #[test]
    fn quota_and_controller_columns() {
        let q = json!({"spec": {"hard": {"pods": "2", "limits.cpu": "1"}},
            "status": {"hard": {"pods": "2", "limits.cpu": "1"}, "used": {"pods": "1"}}});
        assert_eq!(quota_columns(&q), ("pods: 1/2".into(), "limits.cpu: 0/1".into()));
        let cr = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": true}]}});
        assert_eq!(controller(&cr), "daemonset.apps/ds");
    }
}
