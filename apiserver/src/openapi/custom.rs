//! OpenAPI v3 documents of custom resource group versions, built on request from the CRDs' schemas as
//! upstream's apiextensions server publishes them: `<reversed group>.<version>.<Kind>` (and its list) with
//! apiVersion, kind and ObjectMeta added, the REST operations of the resource, and the meta types they use.

use serde_json::{json, Map, Value};

use super::catalog::{list_schema, schema_ref, DELETE_OPTIONS, LIST_META, OBJECT_META, PATCH, STATUS};
use crate::registry::{all, Resource};

/// (group, version) of every custom resource served, each once.
pub(super) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&'static str, &'static str)> = all()
        .into_iter()
        .filter(|r| r.custom.is_some())
        .map(|r| (r.group, r.version))
        .collect();
    gvs.sort_unstable();
    gvs.dedup();
    gvs
}

/// `stable.example.com` -> `com.example.stable`.
fn reversed(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn kind_schema(r: &Resource) -> Value {
    let mut s = r
        .custom
        .as_ref()
        .and_then(|c| c.schema.clone())
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(o) = s.as_object_mut() {
        let props = o.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [schema_ref(OBJECT_META)], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        o.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "kind": r.kind, "version": r.version}]),
        );
    }
    s
}

/// The document for `apis/<group>/<version>` if custom resources are served there.
pub(super) fn document(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&'static Resource> = all()
        .into_iter()
        .filter(|r| r.custom.is_some() && r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let catalog = super::catalog();
    let mut schemas = catalog.closure([STATUS, DELETE_OPTIONS, PATCH, OBJECT_META, LIST_META]);
    let mut paths = Map::new();
    for r in rs {
        let list_kind = r
            .custom
            .as_ref()
            .map_or_else(|| format!("{}List", r.kind), |c| c.list_kind.clone());
        let name = format!("{}.{}.{}", reversed(r.group), r.version, r.kind);
        let list_name = format!("{}.{}.{}", reversed(r.group), r.version, list_kind);
        schemas.insert(name.clone(), kind_schema(r));
        let mut list = list_schema(&name, &list_name);
        if let Some(o) = list.as_object_mut() {
            o.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "kind": list_kind, "version": r.version}]),
            );
        }
        schemas.insert(list_name.clone(), list);
        super::paths::add(&mut paths, r, Some(&name), Some(&list_name));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_group() {
        assert_eq!(reversed("stable.example.com"), "com.example.stable");
    }
}
