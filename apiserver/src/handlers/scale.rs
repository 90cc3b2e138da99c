//! The `scale` subresource (autoscaling/v1 Scale) of deployments, replicasets, statefulsets and custom
//! resources whose CRD declares it: a view of `spec.replicas` (or the CRD's specReplicasPath,
//! statusReplicasPath and labelSelectorPath), written back to the parent object under its resourceVersion.

use std::collections::HashMap;

use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::patch::{self, PatchType};
use super::{json_response, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::storage::Write;
use crate::watchcache::decode;

use crate::registry::Resource;

/// (spec replicas, status replicas) pointers of `r`.
fn paths(r: &Resource) -> (&str, &str) {
    match r.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(s) => (&s.spec_replicas, &s.status_replicas),
        None => ("/spec/replicas", "/status/replicas"),
    }
}

fn selector(r: &Resource, parent: &Value) -> String {
    if let Some(c) = &r.custom {
        return c
            .scale
            .as_ref()
            .and_then(|s| s.label_selector.as_deref())
            .and_then(|p| parent.pointer(p))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    let mut labels: Vec<String> = parent
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    labels.join(",")
}

/// Sets the value at JSON pointer `ptr`, creating the objects on the way.
fn set_at(obj: &mut Value, ptr: &str, v: Value) {
    let mut cur = obj;
    let segs: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(o) = cur.as_object_mut() else { return };
        if i + 1 == segs.len() {
            o.insert(seg.clone(), v);
            return;
        }
        cur = o.entry(seg.clone()).or_insert_with(|| json!({}));
    }
}

fn scale_of(r: &Resource, parent: &Value) -> Value {
    let meta = &parent["metadata"];
    let (spec, status) = paths(r);
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": parent.pointer(spec).cloned().unwrap_or(json!(0))},
        "status": {"replicas": parent.pointer(status).cloned().unwrap_or(json!(0)),
            "selector": selector(r, parent)},
    })
}

pub async fn handle(
    ctx: &Ctx<'_>,
    method: &Method,
    name: &str,
    q: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Response> {
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    let (kv, _) = ctx.server.store.get(&key).await?;
    let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
    let mut parent =
        decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
    let current = scale_of(ctx.r, &parent);
    let wanted = match *method {
        Method::GET => return Ok(json_response(200, &current)),
        Method::PUT => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized or malformed: {e}")))?,
        Method::PATCH => {
            let kind = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::new(415, "UnsupportedMediaType", "unsupported patch type"))?;
            // Scale has no lists: nothing in it needs a schema.
            patch::apply(&kind, &current, body, crate::openapi::SchemaNode::UNKNOWN)?
        }
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "scale supports get, update and patch",
            ))
        }
    };
    if let Some(rv) = wanted.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        if !rv.is_empty() && rv != kv.mod_revision.to_string() {
            return Err(ApiError::conflict(
                &ctx.target(name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![(
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                )],
            )
        })?;
    set_at(&mut parent, paths(ctx.r).0, json!(replicas));
    if let Some(m) = parent.get_mut("metadata").and_then(Value::as_object_mut) {
        let g = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
        m.insert("generation".into(), json!(g + 1));
        m.remove("resourceVersion");
    }
    if q.get("dryRun").is_some_and(|d| d == "All") {
        return Ok(json_response(200, &scale_of(ctx.r, &parent)));
    }
    let value = serde_json::to_vec(&parent).unwrap_or_default();
    match ctx.server.store.put_if(&key, value, kv.mod_revision).await? {
        Write::Done(rev) => {
            if let Some(m) = parent.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("resourceVersion".into(), json!(rev.to_string()));
            }
            Ok(json_response(200, &scale_of(ctx.r, &parent)))
        }
        Write::Mismatch(_) => Err(ApiError::conflict(
            &ctx.target(name),
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
    }
}
