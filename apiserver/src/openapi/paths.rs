//! The REST operations of a group/version, shaped like kube-apiserver's. kubectl reads two things here: the
//! PATCH operation of a kind (with `x-kubernetes-group-version-kind`) and whether it takes `fieldValidation`,
//! which decides whether `--validate=strict` is delegated to the server.

use serde_json::{json, Map, Value};

use super::catalog::{schema_ref, DELETE_OPTIONS, PATCH, STATUS};
use crate::registry::Resource;

/// `Core`, `Apps`, `Coordination`, `RbacAuthorization`: the group part of upstream's operation ids.
fn group_id(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(with_force: bool) -> Value {
    let mut p = vec![
        query("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed"),
        query("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered."),
    ];
    if with_force {
        p.push(query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."));
    }
    Value::Array(p)
}

fn list_params() -> Value {
    json!([
        query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
        query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
    ])
}

fn delete_params() -> Value {
    json!([
        query("dryRun", "string", "When present, indicates that modifications should not be persisted."),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'."),
    ])
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

fn ok(schema: Value, codes: &[&str]) -> Value {
    let mut m = Map::new();
    for c in codes {
        let d = match *c {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        m.insert(
            (*c).into(),
            json!({"description": d, "content": json_content(schema.clone())}),
        );
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

/// Adds the operations of one resource. `schema` is the kind's schema name, if we have one.
pub(super) fn add(paths: &mut Map<String, Value>, r: &Resource, schema: Option<&str>, list: Option<&str>) {
    let base = if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let gid = format!("{}{}", group_id(r.group), upper_first(r.version));
    let tag = if r.group.is_empty() {
        "core_v1".to_string()
    } else {
        format!(
            "{}_{}",
            r.group.trim_end_matches(".k8s.io").replace('.', "_"),
            r.version
        )
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let gvk = json!({"group": r.group, "version": r.version, "kind": kind});
    let object = schema.map_or_else(|| json!({"type": "object"}), schema_ref);
    let list_schema = list.map_or_else(|| json!({"type": "object"}), schema_ref);
    // Upstream's ids: `<verb><Group><Version>[Collection][Namespaced]<Kind>`.
    let id = |verb: &str| format!("{verb}{gid}{scope}{kind}");
    let op = |id: String, action: &str, description: String, extra: Value| {
        let mut o = json!({
            "tags": [tag],
            "operationId": id,
            "description": description,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if let (Some(o), Value::Object(e)) = (o.as_object_mut(), extra) {
            o.extend(e);
        }
        o
    };
    let ns = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name = path_param("name", &format!("name of the {kind}"));
    let pretty = query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    );
    let (collection, item, mut collection_params, mut item_params) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            vec![ns.clone()],
            vec![name, ns],
        )
    } else {
        (
            format!("{base}/{}", r.plural),
            format!("{base}/{}/{{name}}", r.plural),
            vec![],
            vec![name],
        )
    };
    collection_params.push(pretty.clone());
    item_params.push(pretty.clone());

    let delete_collection = op(
        format!("delete{gid}Collection{scope}{kind}"),
        "deletecollection",
        format!("delete collection of {kind}"),
        json!({
            "parameters": delete_params(),
            "requestBody": {"content": json_content(schema_ref(DELETE_OPTIONS))},
            "responses": ok(schema_ref(STATUS), &["200"]),
        }),
    );
    paths.insert(
        collection,
        json!({
            "parameters": collection_params,
            "get": op(id("list"), "list", format!("list or watch objects of kind {kind}"), json!({
                "parameters": list_params(),
                "responses": ok(list_schema.clone(), &["200"]),
            })),
            "post": op(id("create"), "post", format!("create a {kind}"), json!({
                "parameters": write_params(false),
                "requestBody": {"content": json_content(object.clone()), "required": true},
                "responses": ok(object.clone(), &["200", "201", "202"]),
            })),
            "delete": delete_collection,
        }),
    );
    let patch_types = [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ];
    // kubectl apply sends a strategic merge patch only where the PATCH operation accepts one; custom
    // resources take the other three, as upstream publishes them.
    let patch_content: Map<String, Value> = patch_types
        .iter()
        .filter(|t| r.custom.is_none() || !t.starts_with("application/strategic"))
        .map(|t| ((*t).to_string(), json!({"schema": schema_ref(PATCH)})))
        .collect();
    paths.insert(
        item,
        json!({
            "parameters": item_params,
            "get": op(id("read"), "get", format!("read the specified {kind}"), json!({
                "responses": ok(object.clone(), &["200"]),
            })),
            "put": op(id("replace"), "put", format!("replace the specified {kind}"), json!({
                "parameters": write_params(false),
                "requestBody": {"content": json_content(object.clone()), "required": true},
                "responses": ok(object.clone(), &["200", "201"]),
            })),
            "delete": op(id("delete"), "delete", format!("delete a {kind}"), json!({
                "parameters": delete_params(),
                "requestBody": {"content": json_content(schema_ref(DELETE_OPTIONS))},
                "responses": ok(schema_ref(STATUS), &["200", "202"]),
            })),
            "patch": op(id("patch"), "patch", format!("partially update the specified {kind}"), json!({
                "parameters": write_params(true),
                "requestBody": {"content": patch_content, "required": true},
                "responses": ok(object, &["200", "201"]),
            })),
        }),
    );
    if r.namespaced {
        let all = op(
            format!("list{gid}{kind}ForAllNamespaces"),
            "list",
            format!("list or watch objects of kind {kind}"),
            json!({"responses": ok(list_schema, &["200"])}),
        );
        let mut params = list_params();
        if let Some(a) = params.as_array_mut() {
            a.push(pretty);
        }
        paths.insert(
            format!("{base}/{}", r.plural),
            json!({"parameters": params, "get": all}),
        );
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_like_upstream() {
        assert_eq!(group_id(""), "Core");
        assert_eq!(group_id("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_id("coordination.k8s.io"), "Coordination");
        let pods = crate::registry::find("", "v1", "pods").expect("pods");
        let mut paths = Map::new();
        add(
            &mut paths,
            pods,
            Some("io.k8s.api.core.v1.Pod"),
            Some("io.k8s.api.core.v1.PodList"),
        );
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedPod");
        assert_eq!(item["patch"]["x-kubernetes-group-version-kind"]["kind"], "Pod");
        let params = item["patch"]["parameters"].as_array().expect("params");
        assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
        let coll = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(coll["delete"]["operationId"], "deleteCoreV1CollectionNamespacedPod");
        assert_eq!(coll["get"]["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
    }
}
