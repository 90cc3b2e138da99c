//! Pod subresources: `binding` (the scheduler's placement), `eviction` (a delete that honours
//! PodDisruptionBudgets), and `log` / `exec` / `attach` / `portforward`, which kube-apiserver proxies to
//! the kubelet on the pod's node. Until a node agent answers, those give the errors upstream gives when
//! it cannot reach one.

use std::collections::HashMap;
use std::time::Duration;

use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::delete::{delete_object, DeleteOptions};
use super::selector::Selector;
use super::write::encode;
use super::{json_response, Ctx};
use crate::error::{ApiError, ApiResult, Target};
use crate::registry::find;
use crate::storage::{prefix_end, Write};
use crate::watchcache::decode;

/// The kubelet's default port (`status.daemonEndpoints.kubeletEndpoint.Port` when the node says).
const KUBELET_PORT: i64 = 10250;

pub fn is_pod_subresource(s: &str) -> bool {
    matches!(s, "binding" | "eviction" | "log" | "exec" | "attach" | "portforward")
}

fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

async fn load(ctx: &Ctx<'_>, name: &str) -> ApiResult<(Value, i64)> {
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    let (kv, _) = ctx.server.store.get(&key).await?;
    let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
    let pod = decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
    Ok((pod, kv.mod_revision))
}

pub async fn handle(
    ctx: &Ctx<'_>,
    method: &Method,
    name: &str,
    sub: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    match (sub, method) {
        ("binding", &Method::POST) => bind(ctx, name, body).await,
        ("eviction", &Method::POST) => evict(ctx, name, body).await,
        ("log", &Method::GET) => node_proxy(ctx, name, sub, q).await,
        ("exec" | "attach" | "portforward", &Method::GET | &Method::POST) => node_proxy(ctx, name, sub, q).await,
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )),
    }
}

fn parse(body: &[u8], what: &str) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized or malformed: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!("{what} must be a JSON object")));
    }
    Ok(v)
}

/// Upstream's BindingREST: sets spec.nodeName (once), copies the binding's annotations and marks the
/// pod scheduled, in one conditional write.
async fn bind(ctx: &Ctx<'_>, name: &str, body: &[u8]) -> ApiResult<Response> {
    let binding = parse(body, "Binding")?;
    let bname = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if bname != name {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Binding object: {name} != {bname}"
        )));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("Node");
    if node.is_empty() || (kind != "Node" && !kind.is_empty()) {
        return Err(ApiError::invalid(
            "Binding",
            "",
            name,
            vec![(
                "target.name".into(),
                "Required value: the target node name is required".into(),
            )],
        ));
    }
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    for _ in 0..5 {
        let (mut pod, rev) = load(ctx, name).await?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                &ctx.target(name),
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(on) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                &ctx.target(name),
                &format!("pod {name} is already assigned to node \"{on}\""),
            ));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), json!(node));
        }
        if let Some(anns) = binding.pointer("/metadata/annotations").and_then(Value::as_object) {
            if let Some(m) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
                let into = m.entry("annotations").or_insert_with(|| json!({}));
                if let Some(into) = into.as_object_mut() {
                    for (k, v) in anns {
                        into.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        set_condition(&mut pod, "PodScheduled");
        match ctx.server.store.put_if(&key, encode(&pod), rev).await? {
            Write::Done(_) => return Ok(json_response(201, &success(201))),
            Write::Mismatch(None) => return Err(ApiError::not_found(&ctx.target(name))),
            Write::Mismatch(Some(_)) => continue,
        }
    }
    Err(ApiError::conflict(
        &ctx.target(name),
        "the object has been modified; please apply your changes to the latest version and try again",
    ))
}

fn set_condition(pod: &mut Value, ty: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let Some(o) = pod.as_object_mut() else { return };
    let status = o.entry("status").or_insert_with(|| json!({}));
    let Some(s) = status.as_object_mut() else { return };
    let conds = s.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conds.as_array_mut() else { return };
    list.retain(|c| c["type"] != ty);
    list.push(json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
}

fn too_many_requests(message: String, cause: Option<String>) -> ApiError {
    let details = cause.map(|c| json!({"causes": [{"reason": "DisruptionBudget", "message": c}]}));
    ApiError::Status {
        code: 429,
        reason: "TooManyRequests",
        message,
        details,
    }
}

/// Upstream's EvictionREST: a pod that is not running goes at once; otherwise the one matching
/// PodDisruptionBudget must allow a disruption, which is recorded in its status before the delete.
async fn evict(ctx: &Ctx<'_>, name: &str, body: &[u8]) -> ApiResult<Response> {
    let eviction = parse(body, "Eviction")?;
    if let Some(ename) = eviction.pointer("/metadata/name").and_then(Value::as_str) {
        if ename != name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {name} != {ename}"
            )));
        }
    }
    let opts_body = eviction
        .get("deleteOptions")
        .map(|d| serde_json::to_vec(d).unwrap_or_default())
        .unwrap_or_default();
    let opts = DeleteOptions::parse(&HashMap::new(), &opts_body)?;
    let (pod, _) = load(ctx, name).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    let terminal = matches!(phase, "Succeeded" | "Failed" | "Pending" | "");
    if !terminal && pod.pointer("/metadata/deletionTimestamp").is_none() {
        check_budget(ctx, name, &pod, opts.dry_run).await?;
    }
    delete_object(ctx, name, &opts).await?;
    Ok(json_response(201, &success(201)))
}

async fn check_budget(ctx: &Ctx<'_>, name: &str, pod: &Value, dry_run: bool) -> ApiResult<()> {
    let Some(pdbr) = find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let prefix = pdbr.prefix(ctx.namespace.as_deref());
    let page = ctx
        .server
        .store
        .list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 0)
        .await?;
    let mut matching = Vec::new();
    for kv in page.kvs {
        let Some(pdb) = decode(&kv.value, kv.mod_revision) else {
            continue;
        };
        if selects(&pdb, pod) {
            matching.push((pdb, kv.mod_revision));
        }
    }
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some((mut pdb, rev)) = matching.pop() else {
        return Ok(());
    };
    let pdb_name = pdb
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let observed = pdb
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let refuse = "Cannot evict pod as it would violate the pod's disruption budget.".to_string();
    if observed < generation {
        return Err(too_many_requests(
            refuse,
            Some(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )),
        ));
    }
    let allowed = pdb
        .pointer("/status/disruptionsAllowed")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if allowed <= 0 {
        let desired = pdb
            .pointer("/status/desiredHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let current = pdb
            .pointer("/status/currentHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        return Err(too_many_requests(
            refuse,
            Some(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            )),
        ));
    }
    if dry_run {
        return Ok(());
    }
    // Record the disruption so concurrent evictions cannot both spend the last allowance.
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    if let Some(st) = pdb.get_mut("status").and_then(Value::as_object_mut) {
        st.insert("disruptionsAllowed".into(), json!(allowed - 1));
        let dp = st.entry("disruptedPods").or_insert_with(|| json!({}));
        if let Some(dp) = dp.as_object_mut() {
            dp.insert(name.to_string(), json!(now));
        }
    }
    let key = pdbr.key(ctx.namespace.as_deref(), &pdb_name);
    match ctx.server.store.put_if(&key, encode(&pdb), rev).await? {
        Write::Done(_) => Ok(()),
        Write::Mismatch(_) => Err(ApiError::conflict(
            &Target {
                group: "policy",
                resource: "poddisruptionbudgets",
                name: &pdb_name,
            },
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
    }
}

/// Whether a PDB's label selector picks the pod (an empty selector picks every pod in policy/v1).
fn selects(pdb: &Value, pod: &Value) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector") else {
        return false;
    };
    let mut terms: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return false,
        });
    }
    Selector::parse(Some(&terms.join(",")), None).is_ok_and(|s| s.matches(pod))
}

/// The kubelet-backed subresources: the same checks as upstream before it dials the node.
async fn node_proxy(ctx: &Ctx<'_>, name: &str, sub: &str, q: &HashMap<String, String>) -> ApiResult<Response> {
    let (pod, _) = load(ctx, name).await?;
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    if sub != "portforward" {
        match q.get("container") {
            Some(c) => {
                let init = pod
                    .pointer("/spec/initContainers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|x| x["name"] == c.as_str());
                if !containers.contains(&c.as_str()) && !init {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
            }
            None if containers.len() > 1 => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
            None => {}
        }
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if matches!(sub, "exec" | "attach") && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        if sub == "log" {
            // Upstream: no host yet means no logs yet, an empty answer rather than an error.
            return Ok(axum::response::IntoResponse::into_response((
                [(http::header::CONTENT_TYPE, "text/plain")],
                "",
            )));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let Some(nodes) = find("", "v1", "nodes") else {
        return Err(ApiError::internal("no node resource"));
    };
    let (kv, _) = ctx.server.store.get(&nodes.key(None, node)).await?;
    let Some(n) = kv.and_then(|kv| decode(&kv.value, kv.mod_revision)) else {
        return Err(ApiError::not_found(&Target {
            group: "",
            resource: "nodes",
            name: node,
        }));
    };
    let address = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| n.pointer("/status/addresses/0"))
        .and_then(|a| a["address"].as_str())
        .unwrap_or(node)
        .to_string();
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(KUBELET_PORT);
    let target = format!("{address}:{port}");
    let url = format!(
        "https://{target}/{}/{}/{name}",
        match sub {
            "log" => "containerLogs",
            "exec" => "exec",
            "attach" => "attach",
            _ => "portForward",
        },
        ctx.namespace.as_deref().unwrap_or_default()
    );
    let dial = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&target)).await;
    let why = match dial {
        Ok(Ok(_)) => "the node agent does not serve this yet".to_string(),
        Ok(Err(e)) => format!("dial tcp {target}: connect: {}", e.to_string().to_lowercase()),
        Err(_) => format!("dial tcp {target}: i/o timeout"),
    };
    Err(ApiError::internal(format!("Get \"{url}\": {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdb_selectors() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let pdb = |sel: Value| json!({"spec": {"selector": sel}});
        assert!(selects(&pdb(json!({"matchLabels": {"app": "web"}})), &pod));
        assert!(!selects(&pdb(json!({"matchLabels": {"app": "db"}})), &pod));
        assert!(selects(
            &pdb(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]})),
            &pod
        ));
        assert!(!selects(
            &pdb(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            &pod
        ));
        assert!(selects(&pdb(json!({})), &pod), "an empty selector picks every pod");
        assert!(!selects(&json!({"spec": {}}), &pod), "no selector picks nothing");
    }
}
