//! Per-resource strategy: where a resource lives in the store, its discovery facts, defaulting, validation
//! and generation rules. Table columns are in `table.rs`.

mod cells;
pub mod dynamic;
mod jsonpath;
mod kinds;
pub mod table;

use serde_json::{json, Map, Value};

pub use dynamic::{Custom, PrinterColumn, ScalePaths};

use crate::error::ApiError;

/// Which Table printer a resource uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Printer {
    NameAge,
    Pod,
    Namespace,
    ConfigMap,
    Secret,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    Job,
    Node,
    Service,
    ServiceAccount,
    Event,
    Lease,
    Endpoints,
    EndpointSlice,
    CronJob,
    PersistentVolume,
    PersistentVolumeClaim,
    ResourceQuota,
    PodDisruptionBudget,
    ControllerRevision,
    /// Name and Created At: limit ranges, roles and cluster roles.
    CreatedAt,
    RoleBinding,
    /// A custom resource: Name and its CRD's `additionalPrinterColumns`.
    Custom,
}

#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Directory under `/registry/`; upstream uses special names for a few resources.
    pub etcd_dir: &'static str,
    pub printer: Printer,
    /// Bumps metadata.generation when the spec changes (workloads).
    pub has_generation: bool,
    /// Set for custom resources served from a CustomResourceDefinition (`dynamic.rs`).
    pub custom: Option<Box<Custom>>,
}

macro_rules! res {
    ($g:expr, $k:expr, $p:expr, $s:expr, $ns:expr, $short:expr, $cat:expr, $dir:expr, $pr:ident, $gen:expr) => {
        Resource {
            group: $g,
            version: "v1",
            kind: $k,
            plural: $p,
            singular: $s,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            etcd_dir: $dir,
            printer: Printer::$pr,
            has_generation: $gen,
            custom: None,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        NONE,
        "namespaces",
        Namespace,
        false
    ),
    res!(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        NONE,
        "configmaps",
        ConfigMap,
        false
    ),
    res!("", "Secret", "secrets", "secret", true, NONE, NONE, "secrets", Secret, false),
    res!("", "Pod", "pods", "pod", true, &["po"], ALL, "pods", Pod, false),
    res!(
        "",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        "services/specs",
        Service,
        false
    ),
    res!(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        NONE,
        "serviceaccounts",
        ServiceAccount,
        false
    ),
    res!(
        "",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        "events",
        Event,
        false
    ),
    res!(
        "",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        NONE,
        "minions",
        Node,
        false
    ),
    res!(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        NONE,
        "services/endpoints",
        Endpoints,
        false
    ),
    res!(
        "",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        &["limits"],
        NONE,
        "limitranges",
        CreatedAt,
        false
    ),
    res!(
        "",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        NONE,
        "resourcequotas",
        ResourceQuota,
        false
    ),
    res!(
        "",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        NONE,
        "persistentvolumes",
        PersistentVolume,
        false
    ),
    res!(
        "",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        NONE,
        "persistentvolumeclaims",
        PersistentVolumeClaim,
        false
    ),
    res!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        "deployments",
        Deployment,
        true
    ),
    res!(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        "replicasets",
        ReplicaSet,
        true
    ),
    res!(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        ALL,
        "daemonsets",
        DaemonSet,
        true
    ),
    res!(
        "apps",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        ALL,
        "statefulsets",
        StatefulSet,
        true
    ),
    res!(
        "apps",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        NONE,
        NONE,
        "controllerrevisions",
        ControllerRevision,
        false
    ),
    res!("batch", "Job", "jobs", "job", true, NONE, ALL, "jobs", Job, true),
    res!(
        "batch",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        ALL,
        "cronjobs",
        CronJob,
        true
    ),
    res!(
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        NONE,
        "poddisruptionbudgets",
        PodDisruptionBudget,
        true
    ),
    res!(
        RBAC,
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        NONE,
        NONE,
        "clusterrolebindings",
        RoleBinding,
        false
    ),
    res!(
        RBAC,
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        NONE,
        NONE,
        "clusterroles",
        CreatedAt,
        false
    ),
    res!(
        RBAC,
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        NONE,
        NONE,
        "rolebindings",
        RoleBinding,
        false
    ),
    res!(RBAC, "Role", "roles", "role", true, NONE, NONE, "roles", CreatedAt, false),
    res!(
        APIEXTENSIONS,
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        "apiextensions.k8s.io/customresourcedefinitions",
        CreatedAt,
        true
    ),
    res!(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        true,
        NONE,
        NONE,
        "leases",
        Lease,
        false
    ),
    res!(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        NONE,
        NONE,
        "endpointslices",
        EndpointSlice,
        false
    ),
];

const RBAC: &str = "rbac.authorization.k8s.io";
pub const APIEXTENSIONS: &str = "apiextensions.k8s.io";

/// Built-in groups in discovery order: kube-apiserver sorts `/apis` by its group priority (apps 17800,
/// batch 17400, policy 17100, rbac 17000, apiextensions 16700, coordination 16500, discovery 16200).
/// Groups of custom resources follow (`groups()`).
pub const GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "policy",
    RBAC,
    APIEXTENSIONS,
    "coordination.k8s.io",
    "discovery.k8s.io",
];

/// A built-in resource or a custom resource currently served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| dynamic::find(group, version, plural))
}

/// The resources of `group` (all its versions), built-in and custom.
pub fn in_group(group: &str) -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = RESOURCES.iter().filter(|r| r.group == group).collect();
    out.extend(dynamic::all().into_iter().filter(|r| r.group == group));
    out
}

/// Every resource served now: the built-in table, then the custom resources.
pub fn all() -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = RESOURCES.iter().collect();
    out.extend(dynamic::all());
    out
}

/// Every group in discovery order: the built-in ones, then those of custom resources by name (upstream
/// gives CRD groups a priority below every built-in group and orders them by name).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = GROUPS.to_vec();
    let mut custom: Vec<&'static str> = dynamic::all()
        .into_iter()
        .map(|r| r.group)
        .filter(|g| !GROUPS.contains(g))
        .collect();
    custom.sort_unstable();
    custom.dedup();
    out.extend(custom);
    out
}

/// The versions of `group`, preferred first (upstream's version priority: GA > beta > alpha, higher
/// numbers first, then other names alphabetically).
pub fn versions(group: &str) -> Vec<&'static str> {
    let mut vs: Vec<&'static str> = in_group(group).into_iter().map(|r| r.version).collect();
    vs.sort_by(|a, b| dynamic::version_order(a, b));
    vs.dedup();
    vs
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/registry/<dir>/` for a cluster-wide listing, `/registry/<dir>/<ns>/` within a namespace.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.etcd_dir),
            _ => format!("/registry/{}/", self.etcd_dir),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Kinds whose status is written only through `/status` (and kept as stored on the main resource).
    pub fn has_status_subresource(&self) -> bool {
        if let Some(c) = &self.custom {
            return c.status;
        }
        matches!(
            self.kind,
            "Namespace"
                | "Pod"
                | "Node"
                | "Service"
                | "PersistentVolume"
                | "PersistentVolumeClaim"
                | "ResourceQuota"
                | "Deployment"
                | "ReplicaSet"
                | "DaemonSet"
                | "StatefulSet"
                | "Job"
                | "CronJob"
                | "PodDisruptionBudget"
                | "CustomResourceDefinition"
        )
    }

    /// Whether the resource has the `scale` subresource (autoscaling/v1 Scale).
    pub fn has_scale(&self) -> bool {
        match &self.custom {
            Some(c) => c.scale.is_some(),
            None => matches!(self.kind, "Deployment" | "ReplicaSet" | "StatefulSet"),
        }
    }

    /// Shows a stored custom resource as this version: upstream's `None` conversion only changes
    /// apiVersion. Built-in objects are left alone.
    pub fn present(&self, obj: &mut Value) {
        if self.custom.is_some() {
            if let Some(o) = obj.as_object_mut() {
                o.insert("apiVersion".into(), Value::String(self.api_version()));
            }
        }
    }

    /// The built-in kind this resource is, or None for a custom resource (whose kind may well be spelled
    /// like a built-in one in another group: kind-specific strategies must not apply to it).
    pub fn builtin_kind(&self) -> Option<&'static str> {
        self.custom.is_none().then_some(self.kind)
    }

    /// Upstream's registries that answer a finished DELETE with the object rather than a Status.
    pub fn returns_deleted_object(&self) -> bool {
        matches!(self.builtin_kind(), Some("Pod" | "Service" | "Namespace"))
    }

    /// Fills the defaults upstream's defaulters set for the fields clients read back. For a custom resource:
    /// prunes the fields its schema does not know and applies the schema's defaults.
    pub fn default_object(&self, obj: &mut Value) {
        if let Some(c) = &self.custom {
            c.prune_and_default(obj);
            return;
        }
        if self.kind == "CustomResourceDefinition" {
            crate::crd::default_crd(obj);
            return;
        }
        let Some(o) = obj.as_object_mut() else { return };
        match self.kind {
            "Namespace" => {
                let spec = entry_obj(o, "spec");
                spec.entry("finalizers").or_insert_with(|| json!(["kubernetes"]));
                entry_obj(o, "status").entry("phase").or_insert_with(|| json!("Active"));
            }
            "Pod" => {
                let spec = entry_obj(o, "spec");
                default_pod_spec(spec);
                let status = entry_obj(o, "status");
                status.entry("phase").or_insert_with(|| json!("Pending"));
                status.entry("qosClass").or_insert_with(|| json!("BestEffort"));
            }
            "Deployment" | "ReplicaSet" | "StatefulSet" => {
                let spec = entry_obj(o, "spec");
                spec.entry("replicas").or_insert_with(|| json!(1));
                spec.entry("revisionHistoryLimit").or_insert_with(|| json!(10));
                if self.kind == "Deployment" {
                    spec.entry("progressDeadlineSeconds").or_insert_with(|| json!(600));
                    // As SetDefaults_Deployment: an empty strategy (what Go clients send) is a rolling update.
                    let strategy = entry_obj(spec, "strategy");
                    let ty = strategy.entry("type").or_insert_with(|| json!("RollingUpdate"));
                    if ty.as_str() == Some("") {
                        *ty = json!("RollingUpdate");
                    }
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = entry_obj(strategy, "rollingUpdate");
                        ru.entry("maxUnavailable").or_insert_with(|| json!("25%"));
                        ru.entry("maxSurge").or_insert_with(|| json!("25%"));
                    }
                }
                default_template(spec);
                o.entry("status").or_insert_with(|| json!({}));
            }
            "DaemonSet" | "Job" => {
                let spec = entry_obj(o, "spec");
                default_template(spec);
                o.entry("status").or_insert_with(|| json!({}));
            }
            "Secret" => {
                o.entry("type").or_insert_with(|| json!("Opaque"));
            }
            "CronJob"
            | "PersistentVolume"
            | "PersistentVolumeClaim"
            | "ResourceQuota"
            | "PodDisruptionBudget"
            | "Endpoints"
            | "EndpointSlice"
            | "LimitRange"
            | "RoleBinding"
            | "ClusterRoleBinding" => kinds::default_object(self.kind, o),
            "Service" => {
                let spec = entry_obj(o, "spec");
                spec.entry("type").or_insert_with(|| json!("ClusterIP"));
                spec.entry("sessionAffinity").or_insert_with(|| json!("None"));
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert_with(|| json!("TCP"));
                        // 0 and "" are unset too (a Go client's zero IntOrString).
                        let unset = p
                            .get("targetPort")
                            .is_none_or(|t| t.as_i64() == Some(0) || t.as_str() == Some(""));
                        if let (true, Some(port)) = (unset, p.get("port").cloned()) {
                            p.insert("targetPort".into(), port);
                        }
                    }
                }
                o.entry("status").or_insert_with(|| json!({"loadBalancer": {}}));
            }
            _ => {}
        }
    }

    /// Upstream's create validation: the name rules of the kind and the required fields clients get 422 for.
    pub fn validate(&self, obj: &Value) -> Result<(), ApiError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut causes = Vec::new();
        if let Some(c) = &self.custom {
            if name.is_empty() {
                causes.push((
                    "metadata.name".to_string(),
                    "Required value: name or generateName is required".to_string(),
                ));
            } else if let Some(why) = dns1123(name, false) {
                causes.push(("metadata.name".to_string(), format!("Invalid value: \"{name}\": {why}")));
            }
            causes.extend(c.validate(obj));
            return if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::invalid(self.kind, self.group, name, causes))
            };
        }
        if self.kind == "CustomResourceDefinition" {
            return crate::crd::validate_crd(obj);
        }
        if name.is_empty() {
            causes.push((
                "metadata.name".to_string(),
                "Required value: name or generateName is required".to_string(),
            ));
        } else {
            for why in self.name_errors(name) {
                causes.push(("metadata.name".to_string(), format!("Invalid value: \"{name}\": {why}")));
            }
        }
        let containers = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if self.kind == "Pod" && containers == 0 {
            causes.push(("spec.containers".to_string(), "Required value".to_string()));
        }
        let workload = matches!(self.kind, "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet");
        if workload && obj.pointer("/spec/selector").is_none() {
            causes.push(("spec.selector".to_string(), "Required value".to_string()));
        }
        kinds::validate(self.kind, obj, &mut causes);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(kinds::invalid(self, name, causes))
        }
    }

    /// Validation of a create: `validate`, plus, for custom resources, the `optionalOldSelf` transition
    /// rules, which run with no old value.
    pub fn validate_create(&self, obj: &Value) -> Result<(), ApiError> {
        self.validate(obj)?;
        let Some(c) = &self.custom else { return Ok(()) };
        let causes = c.validate_create_transitions(obj);
        if causes.is_empty() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Err(ApiError::invalid(self.kind, self.group, name, causes))
    }

    /// Validation of an update against the stored object: `validate` plus the fields upstream keeps
    /// immutable. The write handlers call this where they have the old object.
    pub fn validate_update(&self, old: &Value, new: &Value) -> Result<(), ApiError> {
        self.validate(new)?;
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut causes = Vec::new();
        if let Some(c) = &self.custom {
            let causes = c.validate_transitions(old, new);
            return if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::invalid(self.kind, self.group, name, causes))
            };
        }
        if self.kind == "CustomResourceDefinition" {
            return crate::crd::validate_crd_update(old, new);
        }
        kinds::validate_update(self.kind, old, new, &mut causes);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(kinds::invalid(self, name, causes))
        }
    }

    /// Why `name` is not a valid name for this kind (upstream's per-kind name validators).
    fn name_errors(&self, name: &str) -> Vec<String> {
        match self.kind {
            // RBAC objects only need to be a valid path segment ("system:controller:x" is a fine name).
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => kinds::path_segment_errors(name),
            "Namespace" | "Service" => dns1123(name, true).into_iter().collect(),
            _ => dns1123(name, false).into_iter().collect(),
        }
    }
}

pub(crate) fn entry_obj<'a>(o: &'a mut Map<String, Value>, k: &str) -> &'a mut Map<String, Value> {
    let v = o.entry(k).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    match v {
        Value::Object(m) => m,
        // Replaced by an object just above.
        _ => unreachable!("entry_obj holds an object"),
    }
}

pub(crate) fn default_template(spec: &mut Map<String, Value>) {
    if let Some(Value::Object(t)) = spec.get_mut("template") {
        if let Some(Value::Object(ps)) = t.get_mut("spec") {
            default_pod_spec(ps);
        }
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert_with(|| json!("Always"));
    spec.entry("dnsPolicy").or_insert_with(|| json!("ClusterFirst"));
    spec.entry("terminationGracePeriodSeconds").or_insert_with(|| json!(30));
    spec.entry("schedulerName")
        .or_insert_with(|| json!("default-scheduler"));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    if let Some(Value::Array(cs)) = spec.get_mut("containers") {
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            // Upstream: Always for ":latest" or untagged images, IfNotPresent otherwise.
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'))
                .map(|(_, t)| t);
            let policy = if tag.is_none() || tag == Some("latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            c.entry("imagePullPolicy").or_insert_with(|| json!(policy));
            c.entry("terminationMessagePath")
                .or_insert_with(|| json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert_with(|| json!("File"));
            c.entry("resources").or_insert_with(|| json!({}));
            for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
    }
}

/// Why `name` is not a DNS-1123 label (`label_only`) or subdomain, upstream's wording.
pub fn dns1123(name: &str, label_only: bool) -> Option<String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if label_only {
        if name.len() > 63 {
            return Some("must be no more than 63 characters".into());
        }
        if !label_ok(name) {
            return Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
        }
        return None;
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if !name.split('.').all(label_ok) {
        return Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123("my-app.v1", false).is_none());
        assert!(dns1123("My_App", false).is_some());
        assert!(dns1123("a.b", true).is_some());
        assert!(dns1123("-a", true).is_some());
    }

    #[test]
    fn special_prefixes() {
        let nodes = find("", "v1", "nodes").map(|r| r.key(None, "n1"));
        assert_eq!(nodes.as_deref(), Some("/registry/minions/n1"));
        let svc = find("", "v1", "services").map(|r| r.key(Some("default"), "k"));
        assert_eq!(svc.as_deref(), Some("/registry/services/specs/default/k"));
    }
}
