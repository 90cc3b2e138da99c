//! A minimal OpenAPI v3: per group/version, a PATCH operation per kind carrying
//! `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter. That is what kubectl's
//! query-parameter verifier looks for before it delegates validation to the server (no client-side schema
//! validation then). Full schemas (for `kubectl explain`) are a later step.

use serde_json::{json, Value};

use crate::registry::{in_group, GROUPS};

fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

pub fn root() -> Value {
    let mut paths = serde_json::Map::new();
    for g in GROUPS {
        let p = gv_path(g);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

/// The document for `api/v1` or `apis/<group>/v1`.
pub fn group_version(path: &str) -> Option<Value> {
    let group = GROUPS.iter().find(|g| gv_path(g) == path)?;
    let mut paths = serde_json::Map::new();
    for r in in_group(group) {
        let url = if r.namespaced {
            format!("/{}/namespaces/{{namespace}}/{}/{{name}}", gv_path(group), r.plural)
        } else {
            format!("/{}/{}/{{name}}", gv_path(group), r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        paths.insert(
            url,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                }
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
