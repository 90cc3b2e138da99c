//! Discovery documents: aggregated v2 (`apidiscovery.k8s.io/v2`, chosen by client-go from the response
//! Content-Type) and the legacy APIVersions / APIGroupList / APIResourceList.

use serde_json::{json, Value};

use crate::registry::{groups, in_group, versions, Resource};

pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client asked for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let a = a.replace(' ', "");
        a.contains("g=apidiscovery.k8s.io") && a.contains("v=v2;") && a.contains("as=APIGroupDiscoveryList")
            || a.ends_with("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    })
}

/// Pod subresources beyond status: (name, response kind, verbs), as upstream advertises them.
const POD_SUBRESOURCES: &[(&str, &str, &[&str])] = &[
    ("attach", "PodAttachOptions", &["create", "get"]),
    ("binding", "Binding", &["create"]),
    ("eviction", "Eviction", &["create"]),
    ("exec", "PodExecOptions", &["create", "get"]),
    ("log", "Pod", &["get"]),
    ("portforward", "PodPortForwardOptions", &["create", "get"]),
];

fn resource_discovery(r: &Resource) -> Value {
    let kind = |k: &str| json!({"group": r.group, "version": r.version, "kind": k});
    let mut subresources = Vec::new();
    if r.has_status_subresource() {
        subresources
            .push(json!({"subresource": "status", "responseKind": kind(r.kind), "verbs": ["get", "patch", "update"]}));
    }
    if r.has_scale() {
        let scale = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        subresources.push(json!({"subresource": "scale", "responseKind": scale, "verbs": ["get", "patch", "update"]}));
    }
    if r.builtin_kind() == Some("Namespace") {
        subresources.push(json!({"subresource": "finalize", "responseKind": kind(r.kind), "verbs": ["update"]}));
    }
    if r.builtin_kind() == Some("Pod") {
        for (sub, response, verbs) in POD_SUBRESOURCES {
            let response = match *response {
                "Eviction" => json!({"group": "policy", "version": "v1", "kind": "Eviction"}),
                k => json!({"group": "", "version": "v1", "kind": k}),
            };
            subresources.push(json!({"subresource": sub, "responseKind": response, "verbs": verbs}));
        }
    }
    let mut v = json!({
        "resource": r.plural,
        "responseKind": kind(r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
        "subresources": subresources,
    });
    if let Some(o) = v.as_object_mut() {
        if !r.short_names.is_empty() {
            o.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            o.insert("categories".into(), json!(r.categories));
        }
    }
    v
}

/// A group version's resources in upstream's order: alphabetical by plural (kubectl expands `all` in this
/// order).
fn sorted(group: &str, version: &str) -> Vec<&'static Resource> {
    let mut rs: Vec<&'static Resource> = in_group(group).into_iter().filter(|r| r.version == version).collect();
    rs.sort_by_key(|r| r.plural);
    rs
}

fn group_discovery(group: &str) -> Value {
    let versions: Vec<Value> = versions(group)
        .into_iter()
        .map(|v| {
            let resources: Vec<Value> = sorted(group, v).into_iter().map(resource_discovery).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": versions,
    })
}

/// `/api` (core only) or `/apis` (all named groups, custom resource groups included) as an
/// APIGroupDiscoveryList.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = groups()
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(group_discovery)
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let gvs: Vec<Value> = versions(g)
                .into_iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            let preferred = gvs.first().cloned().unwrap_or(Value::Null);
            json!({"name": g, "versions": gvs, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/<group>/<version>`; None for an unknown group version.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let rs = sorted(group, version);
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rs {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(),
        });
        if let Some(o) = e.as_object_mut() {
            if !r.short_names.is_empty() {
                o.insert("shortNames".into(), json!(r.short_names));
            }
            if !r.categories.is_empty() {
                o.insert("categories".into(), json!(r.categories));
            }
        }
        resources.push(e);
        if r.has_status_subresource() {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.builtin_kind() == Some("Pod") {
            for (sub, kind, verbs) in POD_SUBRESOURCES {
                let (group, version) = if *kind == "Eviction" {
                    ("policy", "v1")
                } else {
                    ("", "v1")
                };
                resources.push(
                    json!({"name": format!("pods/{sub}"), "singularName": "", "namespaced": true,
                    "group": group, "version": version, "kind": kind, "verbs": verbs}),
                );
            }
        }
        if r.builtin_kind() == Some("Namespace") {
            resources.push(
                json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false,
                "kind": "Namespace", "verbs": ["update"]}),
            );
        }
        if r.has_scale() {
            resources.push(
                json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_header() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn core_group_has_empty_name() {
        let d = aggregated(true);
        assert_eq!(d.pointer("/items/0/metadata/name"), Some(&json!("")));
    }
}
