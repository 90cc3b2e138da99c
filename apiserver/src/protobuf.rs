//! `application/vnd.kubernetes.protobuf` request bodies: the `k8s\0` + runtime.Unknown envelope and the
//! message subset client-go's typed clients send for `kubectl create` of namespaces, configmaps, secrets,
//! serviceaccounts, services, deployments, jobs, cronjobs, roles, clusterroles, (cluster)rolebindings,
//! resourcequotas and poddisruptionbudgets (field numbers from upstream's `generated.proto`). Decoded
//! bodies are turned into JSON and take the JSON path from there. Kinds not covered get 415.

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelSelector {
    #[prost(btree_map = "string, string", tag = "1")]
    match_labels: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "2")]
    match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelSelectorRequirement {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    operator: Option<String>,
    #[prost(string, repeated, tag = "3")]
    values: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerPort {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "3")]
    container_port: Option<i32>,
    #[prost(string, optional, tag = "4")]
    protocol: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct EnvVar {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    image: Option<String>,
    #[prost(string, repeated, tag = "3")]
    command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    ports: Vec<ContainerPort>,
    #[prost(message, repeated, tag = "7")]
    env: Vec<EnvVar>,
    #[prost(string, optional, tag = "14")]
    image_pull_policy: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PodSpec {
    #[prost(message, repeated, tag = "2")]
    containers: Vec<Container>,
    #[prost(string, optional, tag = "3")]
    restart_policy: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PodTemplateSpec {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct DeploymentSpec {
    #[prost(int32, optional, tag = "1")]
    replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    template: Option<PodTemplateSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct Deployment {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<DeploymentSpec>,
}

/// Sets `k` unless absent or an empty string: gogo-generated Go messages always send their string fields,
/// where JSON would have omitted them.
#[derive(Clone, PartialEq, Message)]
struct IntOrString {
    #[prost(int64, optional, tag = "1")]
    r#type: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    int_val: Option<i32>,
    #[prost(string, optional, tag = "3")]
    str_val: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ServicePort {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    protocol: Option<String>,
    #[prost(int32, optional, tag = "3")]
    port: Option<i32>,
    #[prost(message, optional, tag = "4")]
    target_port: Option<IntOrString>,
    #[prost(int32, optional, tag = "5")]
    node_port: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceSpec {
    #[prost(message, repeated, tag = "1")]
    ports: Vec<ServicePort>,
    #[prost(btree_map = "string, string", tag = "2")]
    selector: BTreeMap<String, String>,
    #[prost(string, optional, tag = "3")]
    cluster_ip: Option<String>,
    #[prost(string, optional, tag = "4")]
    r#type: Option<String>,
    #[prost(string, optional, tag = "10")]
    external_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Service {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<ServiceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct JobSpec {
    #[prost(int32, optional, tag = "1")]
    parallelism: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    completions: Option<i32>,
    #[prost(int64, optional, tag = "3")]
    active_deadline_seconds: Option<i64>,
    #[prost(message, optional, tag = "4")]
    selector: Option<LabelSelector>,
    #[prost(bool, optional, tag = "5")]
    manual_selector: Option<bool>,
    #[prost(message, optional, tag = "6")]
    template: Option<PodTemplateSpec>,
    #[prost(int32, optional, tag = "7")]
    backoff_limit: Option<i32>,
    #[prost(int32, optional, tag = "8")]
    ttl_seconds_after_finished: Option<i32>,
    #[prost(string, optional, tag = "9")]
    completion_mode: Option<String>,
    #[prost(bool, optional, tag = "10")]
    suspend: Option<bool>,
}

/// Job (1 metadata, 2 spec) and JobTemplateSpec (the same two fields).
#[derive(Clone, PartialEq, Message)]
struct Job {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<JobSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct CronJobSpec {
    #[prost(string, optional, tag = "1")]
    schedule: Option<String>,
    #[prost(int64, optional, tag = "2")]
    starting_deadline_seconds: Option<i64>,
    #[prost(string, optional, tag = "3")]
    concurrency_policy: Option<String>,
    #[prost(bool, optional, tag = "4")]
    suspend: Option<bool>,
    #[prost(message, optional, tag = "5")]
    job_template: Option<Job>,
    #[prost(int32, optional, tag = "6")]
    successful_jobs_history_limit: Option<i32>,
    #[prost(int32, optional, tag = "7")]
    failed_jobs_history_limit: Option<i32>,
    #[prost(string, optional, tag = "8")]
    time_zone: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct CronJob {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<CronJobSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct PolicyRule {
    #[prost(string, repeated, tag = "1")]
    verbs: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    api_groups: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    resources: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    resource_names: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    non_resource_urls: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct AggregationRule {
    #[prost(message, repeated, tag = "1")]
    cluster_role_selectors: Vec<LabelSelector>,
}

/// Role and ClusterRole (a Role never sends field 3).
#[derive(Clone, PartialEq, Message)]
struct Role {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    rules: Vec<PolicyRule>,
    #[prost(message, optional, tag = "3")]
    aggregation_rule: Option<AggregationRule>,
}

#[derive(Clone, PartialEq, Message)]
struct Subject {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    namespace: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct RoleRef {
    #[prost(string, optional, tag = "1")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
}

/// RoleBinding and ClusterRoleBinding.
#[derive(Clone, PartialEq, Message)]
struct RoleBinding {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    subjects: Vec<Subject>,
    #[prost(message, optional, tag = "3")]
    role_ref: Option<RoleRef>,
}

/// resource.Quantity travels as its string form.
#[derive(Clone, PartialEq, Message)]
struct Quantity {
    #[prost(string, optional, tag = "1")]
    string: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopedResourceSelectorRequirement {
    #[prost(string, optional, tag = "1")]
    scope_name: Option<String>,
    #[prost(string, optional, tag = "2")]
    operator: Option<String>,
    #[prost(string, repeated, tag = "3")]
    values: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSelector {
    #[prost(message, repeated, tag = "1")]
    match_expressions: Vec<ScopedResourceSelectorRequirement>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceQuotaSpec {
    #[prost(btree_map = "string, message", tag = "1")]
    hard: BTreeMap<String, Quantity>,
    #[prost(string, repeated, tag = "2")]
    scopes: Vec<String>,
    #[prost(message, optional, tag = "3")]
    scope_selector: Option<ScopeSelector>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceQuota {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<ResourceQuotaSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct PodDisruptionBudgetSpec {
    #[prost(message, optional, tag = "1")]
    min_available: Option<IntOrString>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    max_unavailable: Option<IntOrString>,
    #[prost(string, optional, tag = "4")]
    unhealthy_pod_eviction_policy: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PodDisruptionBudget {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodDisruptionBudgetSpec>,
}

fn selector(sel: LabelSelector) -> Value {
    let mut o = Map::new();
    put(&mut o, "matchLabels", string_map(&sel.match_labels));
    if !sel.match_expressions.is_empty() {
        let exprs: Vec<Value> = sel
            .match_expressions
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                put(&mut m, "key", e.key);
                put(&mut m, "operator", e.operator);
                if !e.values.is_empty() {
                    m.insert("values".into(), json!(e.values));
                }
                Value::Object(m)
            })
            .collect();
        o.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(o)
}

/// IntOrString: type 0 = int, 1 = string. Present means set (the Go fields are pointers here).
fn int_or_string(v: IntOrString) -> Value {
    if v.r#type == Some(1) {
        json!(v.str_val.unwrap_or_default())
    } else {
        json!(v.int_val.unwrap_or_default())
    }
}

fn pod_template(t: PodTemplateSpec) -> Value {
    let pod = t.spec.unwrap_or_default();
    let mut ps = Map::new();
    ps.insert("containers".into(), pod.containers.into_iter().map(container).collect());
    put(&mut ps, "restartPolicy", pod.restart_policy);
    json!({"metadata": meta(t.metadata), "spec": ps})
}

fn job_spec(spec: JobSpec) -> Value {
    let mut s = Map::new();
    put(&mut s, "parallelism", spec.parallelism);
    put(&mut s, "completions", spec.completions);
    put(&mut s, "activeDeadlineSeconds", spec.active_deadline_seconds);
    if let Some(sel) = spec.selector {
        s.insert("selector".into(), selector(sel));
    }
    put(&mut s, "manualSelector", spec.manual_selector);
    s.insert("template".into(), pod_template(spec.template.unwrap_or_default()));
    put(&mut s, "backoffLimit", spec.backoff_limit);
    put(&mut s, "ttlSecondsAfterFinished", spec.ttl_seconds_after_finished);
    put(&mut s, "completionMode", spec.completion_mode);
    put(&mut s, "suspend", spec.suspend);
    Value::Object(s)
}

fn job(j: Job) -> Value {
    json!({"metadata": meta(j.metadata), "spec": job_spec(j.spec.unwrap_or_default())})
}

fn cron_job(c: CronJob) -> Value {
    let spec = c.spec.unwrap_or_default();
    let mut s = Map::new();
    put(&mut s, "schedule", spec.schedule);
    put(&mut s, "timeZone", spec.time_zone);
    put(&mut s, "startingDeadlineSeconds", spec.starting_deadline_seconds);
    put(&mut s, "concurrencyPolicy", spec.concurrency_policy);
    put(&mut s, "suspend", spec.suspend);
    s.insert("jobTemplate".into(), job(spec.job_template.unwrap_or_default()));
    put(&mut s, "successfulJobsHistoryLimit", spec.successful_jobs_history_limit);
    put(&mut s, "failedJobsHistoryLimit", spec.failed_jobs_history_limit);
    json!({"metadata": meta(c.metadata), "spec": s})
}

fn strings(o: &mut Map<String, Value>, k: &str, v: Vec<String>) {
    if !v.is_empty() {
        o.insert(k.into(), json!(v));
    }
}

fn role(r: Role) -> Value {
    let rules: Vec<Value> = r
        .rules
        .into_iter()
        .map(|p| {
            let mut o = Map::new();
            strings(&mut o, "verbs", p.verbs);
            strings(&mut o, "apiGroups", p.api_groups);
            strings(&mut o, "resources", p.resources);
            strings(&mut o, "resourceNames", p.resource_names);
            strings(&mut o, "nonResourceURLs", p.non_resource_urls);
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("metadata".into(), meta(r.metadata));
    if !rules.is_empty() {
        o.insert("rules".into(), Value::Array(rules));
    }
    if let Some(a) = r.aggregation_rule {
        let sels: Vec<Value> = a.cluster_role_selectors.into_iter().map(selector).collect();
        o.insert("aggregationRule".into(), json!({"clusterRoleSelectors": sels}));
    }
    Value::Object(o)
}

fn role_binding(b: RoleBinding) -> Value {
    let subjects: Vec<Value> = b
        .subjects
        .into_iter()
        .map(|s| {
            let mut o = Map::new();
            put(&mut o, "kind", s.kind);
            // apiGroup is "" for service accounts and kept as sent.
            o.insert("apiGroup".into(), json!(s.api_group.unwrap_or_default()));
            put(&mut o, "name", s.name);
            put(&mut o, "namespace", s.namespace);
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("metadata".into(), meta(b.metadata));
    if !subjects.is_empty() {
        o.insert("subjects".into(), Value::Array(subjects));
    }
    let rr = b.role_ref.unwrap_or_default();
    let mut r = Map::new();
    put(&mut r, "apiGroup", rr.api_group);
    put(&mut r, "kind", rr.kind);
    put(&mut r, "name", rr.name);
    o.insert("roleRef".into(), Value::Object(r));
    Value::Object(o)
}

fn resource_quota(q: ResourceQuota) -> Value {
    let spec = q.spec.unwrap_or_default();
    let mut s = Map::new();
    if !spec.hard.is_empty() {
        let hard: Map<String, Value> = spec
            .hard
            .into_iter()
            .map(|(k, v)| (k, json!(v.string.unwrap_or_default())))
            .collect();
        s.insert("hard".into(), Value::Object(hard));
    }
    strings(&mut s, "scopes", spec.scopes);
    if let Some(sel) = spec.scope_selector {
        let exprs: Vec<Value> = sel
            .match_expressions
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                put(&mut m, "scopeName", e.scope_name);
                put(&mut m, "operator", e.operator);
                strings(&mut m, "values", e.values);
                Value::Object(m)
            })
            .collect();
        s.insert("scopeSelector".into(), json!({"matchExpressions": exprs}));
    }
    json!({"metadata": meta(q.metadata), "spec": s})
}

fn pdb(p: PodDisruptionBudget) -> Value {
    let spec = p.spec.unwrap_or_default();
    let mut s = Map::new();
    if let Some(v) = spec.min_available {
        s.insert("minAvailable".into(), int_or_string(v));
    }
    if let Some(sel) = spec.selector {
        s.insert("selector".into(), selector(sel));
    }
    if let Some(v) = spec.max_unavailable {
        s.insert("maxUnavailable".into(), int_or_string(v));
    }
    put(&mut s, "unhealthyPodEvictionPolicy", spec.unhealthy_pod_eviction_policy);
    json!({"metadata": meta(p.metadata), "spec": s})
}

fn service(svc: Service) -> Value {
    let spec = svc.spec.unwrap_or_default();
    let ports: Vec<Value> = spec
        .ports
        .into_iter()
        .map(|p| {
            let mut o = Map::new();
            put(&mut o, "name", p.name);
            put(&mut o, "protocol", p.protocol);
            put(&mut o, "port", p.port);
            if let Some(t) = p.target_port {
                // IntOrString: type 0 = int, 1 = string.
                let v = if t.r#type == Some(1) {
                    json!(t.str_val)
                } else {
                    json!(t.int_val)
                };
                if v != json!(0) && !v.is_null() {
                    o.insert("targetPort".into(), v);
                }
            }
            put(&mut o, "nodePort", p.node_port.filter(|n| *n != 0));
            Value::Object(o)
        })
        .collect();
    let mut s = Map::new();
    if !ports.is_empty() {
        s.insert("ports".into(), Value::Array(ports));
    }
    put(&mut s, "selector", string_map(&spec.selector));
    put(&mut s, "clusterIP", spec.cluster_ip);
    put(&mut s, "type", spec.r#type);
    put(&mut s, "externalName", spec.external_name);
    json!({"metadata": meta(svc.metadata), "spec": s})
}

fn put<T: Into<Value>>(m: &mut Map<String, Value>, k: &str, v: Option<T>) {
    if let Some(v) = v.map(Into::into).filter(|v| v.as_str() != Some("")) {
        m.insert(k.into(), v);
    }
}

fn string_map(m: &BTreeMap<String, String>) -> Option<Value> {
    (!m.is_empty()).then(|| json!(m))
}

fn bytes_map(m: &BTreeMap<String, Vec<u8>>) -> Option<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    (!m.is_empty()).then(|| Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(b64.encode(v)))).collect()))
}

fn meta(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut o = Map::new();
    put(&mut o, "name", m.name);
    put(&mut o, "generateName", m.generate_name);
    put(&mut o, "namespace", m.namespace);
    put(&mut o, "resourceVersion", m.resource_version);
    put(&mut o, "labels", string_map(&m.labels));
    put(&mut o, "annotations", string_map(&m.annotations));
    if !m.finalizers.is_empty() {
        o.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(o)
}

fn container(c: Container) -> Value {
    let mut o = Map::new();
    put(&mut o, "name", c.name);
    put(&mut o, "image", c.image);
    if !c.command.is_empty() {
        o.insert("command".into(), json!(c.command));
    }
    if !c.args.is_empty() {
        o.insert("args".into(), json!(c.args));
    }
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .into_iter()
            .map(|p| {
                let mut po = Map::new();
                put(&mut po, "name", p.name);
                put(&mut po, "containerPort", p.container_port);
                put(&mut po, "protocol", p.protocol);
                Value::Object(po)
            })
            .collect();
        o.insert("ports".into(), Value::Array(ports));
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c
            .env
            .into_iter()
            .map(|e| json!({"name": e.name, "value": e.value}))
            .collect();
        o.insert("env".into(), Value::Array(env));
    }
    put(&mut o, "imagePullPolicy", c.image_pull_policy);
    o.insert("resources".into(), json!({}));
    Value::Object(o)
}

fn decode_err(e: prost::DecodeError) -> ApiError {
    ApiError::bad_request(format!("the object provided is unrecognized or malformed: {e}"))
}

/// Converts a protobuf request body for `r` into the equivalent JSON object.
pub fn to_json(r: &Resource, body: &[u8]) -> ApiResult<Vec<u8>> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("protobuf body lacks the k8s envelope"))?;
    let unknown = Unknown::decode(raw).map_err(decode_err)?;
    let kind = unknown.type_meta.and_then(|t| t.kind).unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let raw = &raw[..];
    let mut obj = match kind.as_str() {
        // ServiceAccount: its secrets lists are not sent by `kubectl create serviceaccount`.
        "ServiceAccount" => {
            let n = Namespace::decode(raw).map_err(decode_err)?;
            json!({"metadata": meta(n.metadata)})
        }
        "Service" => service(Service::decode(raw).map_err(decode_err)?),
        "Namespace" => {
            let n = Namespace::decode(raw).map_err(decode_err)?;
            json!({"metadata": meta(n.metadata), "spec": {}})
        }
        "ConfigMap" => {
            let c = ConfigMap::decode(raw).map_err(decode_err)?;
            let mut o = Map::new();
            o.insert("metadata".into(), meta(c.metadata.clone()));
            put(&mut o, "data", string_map(&c.data));
            put(&mut o, "binaryData", bytes_map(&c.binary_data));
            put(&mut o, "immutable", c.immutable);
            Value::Object(o)
        }
        "Secret" => {
            let s = Secret::decode(raw).map_err(decode_err)?;
            let mut o = Map::new();
            o.insert("metadata".into(), meta(s.metadata.clone()));
            put(&mut o, "data", bytes_map(&s.data));
            put(&mut o, "stringData", string_map(&s.string_data));
            put(&mut o, "type", s.r#type);
            Value::Object(o)
        }
        "Deployment" => {
            let d = Deployment::decode(raw).map_err(decode_err)?;
            let spec = d.spec.unwrap_or_default();
            let mut s = Map::new();
            put(&mut s, "replicas", spec.replicas);
            if let Some(sel) = spec.selector {
                s.insert("selector".into(), selector(sel));
            }
            s.insert("template".into(), pod_template(spec.template.unwrap_or_default()));
            json!({"metadata": meta(d.metadata), "spec": s})
        }
        "Job" => job(Job::decode(raw).map_err(decode_err)?),
        "CronJob" => cron_job(CronJob::decode(raw).map_err(decode_err)?),
        "Role" | "ClusterRole" => role(Role::decode(raw).map_err(decode_err)?),
        "RoleBinding" | "ClusterRoleBinding" => role_binding(RoleBinding::decode(raw).map_err(decode_err)?),
        "ResourceQuota" => resource_quota(ResourceQuota::decode(raw).map_err(decode_err)?),
        "PodDisruptionBudget" => pdb(PodDisruptionBudget::decode(raw).map_err(decode_err)?),
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("protobuf request bodies for kind {other:?} are not supported yet; send application/json"),
            ))
        }
    };
    if kind != r.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            r.kind
        )));
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("kind".into(), json!(r.kind));
        o.insert("apiVersion".into(), json!(r.api_version()));
    }
    Ok(serde_json::to_vec(&obj).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_envelope_decodes() {
        let cm = ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let env = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
            }),
            raw: Some(cm.encode_to_vec()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(env.encode_to_vec());
        let r = crate::registry::find("", "v1", "configmaps").unwrap();
        let v: Value = serde_json::from_slice(&to_json(r, &body).unwrap()).unwrap();
        assert_eq!(v["data"]["k"], "v");
        assert_eq!(v["metadata"]["name"], "c");
        assert!(to_json(r, b"garbage").is_err());
    }
}
