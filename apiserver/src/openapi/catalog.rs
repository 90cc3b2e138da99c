//! Every schema we publish, by upstream name, in OpenAPI 3 form. k8s-openapi's `schemars` impls give the
//! types with upstream's names and descriptions; we add what they lack (list kinds, group-version-kind,
//! list and patch extensions) from the facts in `markers.rs`.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::ListableResource;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::markers::{ATOMIC_STRUCTS, FIELDS, KEY_DEFAULTS, LISTS};

const REF_PREFIX: &str = "#/components/schemas/";

/// A top-level kind we can describe.
struct KindSchema {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    /// Adds the kind's schema (and everything it references) to the generator; returns its name.
    add: fn(&mut SchemaGenerator) -> String,
}

fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

fn kind<T: ListableResource + JsonSchema>() -> KindSchema {
    KindSchema {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: T::LIST_KIND,
        add: add::<T>,
    }
}

/// Broader than the registry, so a resource added there is described without touching this module.
fn kind_table() -> Vec<KindSchema> {
    use k8s_openapi::api::{
        admissionregistration, apps, batch, certificates, coordination, core, discovery, events, networking, node,
        policy, rbac, scheduling, storage,
    };
    vec![
        kind::<core::v1::Namespace>(),
        kind::<core::v1::ConfigMap>(),
        kind::<core::v1::Secret>(),
        kind::<core::v1::Pod>(),
        kind::<core::v1::Service>(),
        kind::<core::v1::ServiceAccount>(),
        kind::<core::v1::Event>(),
        kind::<core::v1::Node>(),
        kind::<core::v1::Endpoints>(),
        kind::<core::v1::PersistentVolume>(),
        kind::<core::v1::PersistentVolumeClaim>(),
        kind::<core::v1::ReplicationController>(),
        kind::<core::v1::ResourceQuota>(),
        kind::<core::v1::LimitRange>(),
        kind::<core::v1::PodTemplate>(),
        kind::<apps::v1::Deployment>(),
        kind::<apps::v1::ReplicaSet>(),
        kind::<apps::v1::DaemonSet>(),
        kind::<apps::v1::StatefulSet>(),
        kind::<apps::v1::ControllerRevision>(),
        kind::<batch::v1::Job>(),
        kind::<batch::v1::CronJob>(),
        kind::<coordination::v1::Lease>(),
        kind::<rbac::v1::Role>(),
        kind::<rbac::v1::ClusterRole>(),
        kind::<rbac::v1::RoleBinding>(),
        kind::<rbac::v1::ClusterRoleBinding>(),
        kind::<policy::v1::PodDisruptionBudget>(),
        kind::<networking::v1::NetworkPolicy>(),
        kind::<networking::v1::Ingress>(),
        kind::<networking::v1::IngressClass>(),
        kind::<storage::v1::StorageClass>(),
        kind::<storage::v1::CSIDriver>(),
        kind::<storage::v1::CSINode>(),
        kind::<storage::v1::VolumeAttachment>(),
        kind::<scheduling::v1::PriorityClass>(),
        kind::<discovery::v1::EndpointSlice>(),
        kind::<node::v1::RuntimeClass>(),
        kind::<certificates::v1::CertificateSigningRequest>(),
        kind::<admissionregistration::v1::ValidatingWebhookConfiguration>(),
        kind::<admissionregistration::v1::MutatingWebhookConfiguration>(),
        kind::<events::v1::Event>(),
        kind::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(),
    ]
}

/// Meta types the operations refer to.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(super) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

pub(crate) struct Catalog {
    schemas: Map<String, Value>,
    /// (group, version, kind) -> schema name, for top-level kinds and their lists.
    kinds: HashMap<(String, String, String), String>,
}

impl Catalog {
    pub(crate) fn build() -> Catalog {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut kinds = HashMap::new();
        let mut tops = Vec::new();
        for k in kind_table() {
            let name = (k.add)(&mut generator);
            let list = match name.rsplit_once('.') {
                Some((pkg, _)) => format!("{pkg}.{}", k.list_kind),
                None => k.list_kind.to_string(),
            };
            kinds.insert((k.group.into(), k.version.into(), k.kind.into()), name.clone());
            kinds.insert((k.group.into(), k.version.into(), k.list_kind.into()), list.clone());
            tops.push((k, name, list));
        }
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
        let mut schemas = generator.take_definitions(true);

        for (name, prop, list_type, keys, strategy, merge_key, map_type) in FIELDS {
            let Some(p) = schemas
                .get_mut(*name)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(*prop))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if !list_type.is_empty() {
                p.insert("x-kubernetes-list-type".into(), json!(list_type));
            }
            if !keys.is_empty() {
                p.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            }
            if !strategy.is_empty() {
                p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            }
            if !merge_key.is_empty() {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(merge_key));
            }
            if !map_type.is_empty() {
                p.insert("x-kubernetes-map-type".into(), json!(map_type));
            }
        }
        for (name, prop, default) in KEY_DEFAULTS {
            if let Some(p) = schemas
                .get_mut(*name)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(*prop))
                .and_then(Value::as_object_mut)
            {
                p.insert("default".into(), json!(default));
            }
        }
        for name in ATOMIC_STRUCTS {
            if let Some(s) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
                s.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
        }

        for (k, name, list) in tops {
            let gvk = |kind: &str| json!([{"group": k.group, "kind": kind, "version": k.version}]);
            if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                s.insert("x-kubernetes-group-version-kind".into(), gvk(k.kind));
                // k8s-openapi marks metadata required on every kind (it is not optional in Rust); upstream
                // only on Events, whose Go field lacks omitempty.
                if k.kind != "Event" {
                    unrequire(s, "metadata");
                }
            }
            let mut list_schema = list_schema(&name, &list);
            if let Some(o) = list_schema.as_object_mut() {
                o.insert("x-kubernetes-group-version-kind".into(), gvk(k.list_kind));
            }
            schemas.insert(list, list_schema);
        }
        Catalog { schemas, kinds }
    }

    /// The schema name of a top-level kind or list kind.
    pub(crate) fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(String::as_str)
    }

    pub(crate) fn schema(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    /// Every schema, by name.
    pub(crate) fn schemas(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.schemas.iter()
    }

    /// Follows `$ref` and single-element `allOf` wrappers to the schema they stand for.
    pub(crate) fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        // Bounded: a cycle of bare references would otherwise spin.
        for _ in 0..8 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r.strip_prefix(REF_PREFIX).and_then(|n| self.schemas.get(n)) {
                    Some(t) => s = t,
                    None => return s,
                }
            } else if let Some([inner]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                s = inner;
            } else {
                return s;
            }
        }
        s
    }

    /// `roots` and every schema they reach, by name.
    pub(crate) fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(s) = self.schemas.get(&name) {
                refs(s, &mut todo);
            }
        }
        seen.into_iter()
            .filter_map(|n| self.schemas.get(&n).map(|s| (n, s.clone())))
            .collect()
    }
}

pub(super) fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(n) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(n.to_string());
            }
            o.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn unrequire(s: &mut Map<String, Value>, field: &str) {
    let empty = match s.get_mut("required").and_then(Value::as_array_mut) {
        Some(req) => {
            req.retain(|f| f != field);
            req.is_empty()
        }
        None => false,
    };
    if empty {
        s.remove("required");
    }
}

/// `<Kind>List`, shaped like upstream's list schemas.
pub(super) fn list_schema(item: &str, list: &str) -> Value {
    let (description, items_description) = LISTS
        .iter()
        .find(|(n, _, _)| *n == list)
        .map(|(_, d, i)| (d.to_string(), i.to_string()))
        .unwrap_or_else(|| {
            let kind = item.rsplit('.').next().unwrap_or(item);
            (
                format!("{kind}List is a list of {kind} objects."),
                format!("List of {kind} objects."),
            )
        });
    json!({
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {"description": items_description, "type": "array", "items": schema_ref(item)},
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_extensions() {
        let c = Catalog::build();
        let pod = c.schema("io.k8s.api.core.v1.Pod").expect("pod");
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod.get("required").is_none(), "{pod}");
        let meta = &pod["properties"]["metadata"];
        assert_eq!(
            meta["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(meta["description"]
            .as_str()
            .is_some_and(|d| d.contains("Standard object")));
        let containers = &c.schema("io.k8s.api.core.v1.PodSpec").expect("spec")["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let om = c
            .schema("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .expect("meta");
        assert_eq!(om["properties"]["finalizers"]["x-kubernetes-list-type"], "set");
        assert_eq!(
            om["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"],
            "uid"
        );
        let list = c.schema("io.k8s.api.apps.v1.DeploymentList").expect("list");
        assert_eq!(list["description"], "DeploymentList is a list of Deployments.");
        assert_eq!(list["x-kubernetes-group-version-kind"][0]["group"], "apps");
        assert_eq!(
            c.kind("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        let event = c.schema("io.k8s.api.core.v1.Event").expect("event");
        assert!(event["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("metadata"))));
        assert!(
            c.schema("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
                .expect("ls")["x-kubernetes-map-type"]
                == "atomic"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let c = Catalog::build();
        let mut names = Vec::new();
        for s in c.schemas.values() {
            refs(s, &mut names);
        }
        for n in names {
            assert!(c.schema(&n).is_some(), "dangling $ref {n}");
        }
    }
}
