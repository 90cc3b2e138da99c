//! OpenAPI v3 as kube-apiserver serves it: `/openapi/v3` lists one document per group/version, each with the
//! REST operations (`paths`) and the full schemas of its kinds and everything they reference
//! (`components.schemas`, upstream names and descriptions). `kubectl explain` renders from these schemas;
//! kubectl's `--validate=strict` checks for the `fieldValidation` parameter on PATCH and then leaves the
//! validation to the server, which `validate` does against the same schemas.
//!
//! Schemas come from k8s-openapi's `schemars` impls (Kubernetes 1.32, our `/version`), documents are built
//! once, on first use.

mod catalog;
mod custom;
mod lists;
mod markers;
mod paths;
pub mod validate;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use crate::registry::{in_group, GROUPS};
use catalog::{Catalog, DELETE_OPTIONS, PATCH, STATUS};

pub use lists::{ListKind, ListType, PatchStrategy, SchemaNode};
pub use validate::{duplicate_fields, strict_decoding_message, strict_field_errors, unknown_fields, warning_header};

fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

pub(crate) fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let started = std::time::Instant::now();
        let c = Catalog::build();
        tracing::debug!(elapsed = ?started.elapsed(), "built OpenAPI schemas");
        c
    })
}

struct Documents {
    root: Value,
    by_path: HashMap<String, Value>,
}

fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_path = HashMap::new();
        let mut index = Map::new();
        for g in GROUPS {
            let p = gv_path(g);
            let doc = group_document(g);
            index.insert(p.clone(), index_entry(&p, &doc));
            by_path.insert(p, doc);
        }
        Documents {
            root: json!({"paths": index}),
            by_path,
        }
    })
}

/// An entry of the `/openapi/v3` index. Upstream's hash: SHA-512 of the document, upper-case hex; clients
/// cache by URL.
fn index_entry(path: &str, doc: &Value) -> Value {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let hash = Sha512::digest(&bytes).iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    });
    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")})
}

fn group_document(group: &str) -> Value {
    let c = catalog();
    let mut paths = Map::new();
    let mut roots = vec![STATUS, DELETE_OPTIONS, PATCH];
    for r in in_group(group).into_iter().filter(|r| r.custom.is_none()) {
        let schema = c.kind(r.group, r.version, r.kind);
        let list = c.kind(r.group, r.version, &format!("{}List", r.kind));
        if schema.is_none() {
            tracing::warn!(group = r.group, kind = r.kind, "no OpenAPI schema for kind");
        }
        paths::add(&mut paths, r, schema, list);
        roots.extend(schema);
        roots.extend(list);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": c.closure(roots)},
    })
}

/// The `/openapi/v3` index: the built-in groups, then the group versions of custom resources.
pub fn root() -> Cow<'static, Value> {
    let custom = custom::group_versions();
    if custom.is_empty() {
        return Cow::Borrowed(&documents().root);
    }
    let mut root = documents().root.clone();
    if let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) {
        for (group, version) in custom {
            let p = format!("apis/{group}/{version}");
            if let Some(doc) = custom::document(group, version) {
                paths.insert(p.clone(), index_entry(&p, &doc));
            }
        }
    }
    Cow::Owned(root)
}

/// The document for `api/v1` or `apis/<group>/<version>` (the `?hash=` query is not part of `path`).
pub fn group_version(path: &str) -> Option<Cow<'static, Value>> {
    if let Some(d) = documents().by_path.get(path) {
        return Some(Cow::Borrowed(d));
    }
    let (group, version) = path.strip_prefix("apis/")?.split_once('/')?;
    custom::document(group, version).map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_like_upstream() {
        let root = root();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        assert_eq!(url.len(), "/openapi/v3/apis/apps/v1?hash=".len() + 128);

        let core = group_version("api/v1").expect("core");
        let schemas = &core["components"]["schemas"];
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.core.v1.PodList",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        ] {
            assert!(schemas.get(name).is_some(), "{name} missing");
        }
        assert!(schemas.get("io.k8s.api.apps.v1.Deployment").is_none());
        let patch = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");

        // Referenced core types travel with the apps document.
        let apps = group_version("apis/apps/v1").expect("apps");
        let s = &apps["components"]["schemas"];
        assert!(s.get("io.k8s.api.apps.v1.DeploymentStrategy").is_some());
        assert!(s.get("io.k8s.api.core.v1.PodSpec").is_some());
        assert!(group_version("apis/nope/v1").is_none());
    }
}
