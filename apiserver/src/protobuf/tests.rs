use std::collections::BTreeSet;

use prost::Message as _;
use serde_json::{json, Value};

use super::schema::{Label, Schema, Special, Ty};
use super::*;

/// JSON -> enveloped protobuf -> JSON.
fn round_trip(v: &Value) -> Value {
    let bytes = encode_object(v).unwrap_or_else(|| panic!("no message for {}", v["kind"]));
    assert!(bytes.starts_with(MAGIC));
    let (back, (av, kind)) = decode_envelope(Schema::get(), &bytes, 0).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(
        (av.as_str(), kind.as_str()),
        (v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap())
    );
    back
}

fn assert_round_trips(v: Value) {
    let back = round_trip(&v);
    assert_eq!(
        back, v,
        "\nround trip changed the object:\n{back:#}\n----- sent -----\n{v:#}"
    );
}

/// The message inside an envelope, for decoding with k8s-pb.
fn unwrap_envelope(bytes: &[u8]) -> (k8s_pb::apimachinery::pkg::runtime::Unknown, Vec<u8>) {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[MAGIC.len()..]).expect("Unknown");
    let raw = unknown.raw.clone().unwrap_or_default();
    (unknown, raw)
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn request(body: &[u8], into: &str) -> Result<Value, String> {
    request_to_json(body, into)
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .map_err(|e| e.to_string())
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "team", "uid": "7d3c1a2e-0000-4000-8000-000000000001",
            "resourceVersion": "42", "generation": 3, "creationTimestamp": "2024-05-06T07:08:09Z",
            "labels": {"app": "web"}, "annotations": {"a": ""},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "o", "uid": "u1", "controller": true}],
            "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1",
                "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {".": {}}}}}],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx", "image": "nginx:1.27", "args": ["-g", "daemon off;"],
                        "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                        "env": [{"name": "A", "value": "1"},
                            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "1"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                            "initialDelaySeconds": 3, "periodSeconds": 10},
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
                        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    }],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                    "securityContext": {"supplementalGroups": [1, 2, 3], "fsGroup": 2000},
                    "automountServiceAccountToken": false,
                    "nodeSelector": {"disk": "ssd"},
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": -1}],
                },
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {"observedGeneration": 3, "replicas": 2,
            "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-05-06T07:08:09Z",
                "lastTransitionTime": "2024-05-06T07:08:10Z", "reason": "MinimumReplicasAvailable", "message": "ok"}]},
    })
}

#[test]
fn deployment_round_trips() {
    assert_round_trips(deployment());
}

#[test]
fn more_kinds_round_trip() {
    assert_round_trips(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080},
                {"name": "raw", "port": 81, "targetPort": 8081, "protocol": "UDP"}],
            "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ports": [{"port": 80, "protocol": "TCP"}]}]}}}));
    assert_round_trips(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "deletionTimestamp": "2024-01-01T00:00:30Z",
            "deletionGracePeriodSeconds": 0, "finalizers": ["x/y"]},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1500m"}, "requests": {"memory": "1Gi"}},
                "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}],
            "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "priority": 0,
            "overhead": {"cpu": "250m"}},
        "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.5",
            "podIPs": [{"ip": "10.1.0.5"}], "hostIPs": [{"ip": "10.0.0.1"}], "qosClass": "Burstable",
            "startTime": "2024-01-01T00:00:00Z",
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "busybox",
                "imageID": "docker://sha", "started": true,
                "state": {"running": {"startedAt": "2024-01-01T00:00:01Z"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "startedAt": "2023-12-31T23:00:00Z", "finishedAt": "2023-12-31T23:59:59Z"}}}]}}));
    assert_round_trips(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
        "data": {"a": "1", "empty": ""}, "binaryData": {"bin": "AAECAwT/"}, "immutable": false}),
    );
    assert_round_trips(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": ""}}));
    assert_round_trips(json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "uid": "u", "apiVersion": "v1",
            "fieldPath": "spec.containers{c}"},
        "reason": "Pulled", "message": "pulled", "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z", "count": 2,
        "type": "Normal", "eventTime": "2024-01-01T00:00:00.123456Z",
        "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000001Z"},
        "action": "Pulling", "reportingComponent": "kubelet", "reportingInstance": "n1"}));
    assert_round_trips(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
        "spec": {"holderIdentity": "n1_abc", "leaseDurationSeconds": 15,
            "acquireTime": "2024-01-01T00:00:00.000000Z", "renewTime": "2024-01-01T00:00:10.654321Z",
            "leaseTransitions": 0}}));
    assert_round_trips(json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "r1"}, "revision": 2,
        "data": {"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"name": "c"}]}}}}}));
    assert_round_trips(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    );
    assert_round_trips(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "nonResourceURLs": ["/x"]}],
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}),
    );
    assert_round_trips(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "metadata": {}, "spec": {"resourceAttributes": {"verb": "create", "resource": "deployments",
            "group": "apps", "namespace": "default"}},
        "status": {"allowed": true, "reason": "ok"}}),
    );
}

#[test]
fn lists_and_status_round_trip() {
    let mut item = deployment();
    if let Some(o) = item.as_object_mut() {
        // Items of a typed list carry no kind (the list's envelope names it).
        o.remove("kind");
        o.remove("apiVersion");
    }
    assert_round_trips(json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
        "metadata": {"resourceVersion": "77", "continue": "abc", "remainingItemCount": 0},
        "items": [item.clone(), item]}));
    assert_round_trips(json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": "configmaps \"x\" not found", "reason": "NotFound", "code": 404,
        "details": {"name": "x", "kind": "configmaps", "retryAfterSeconds": 1,
            "causes": [{"reason": "FieldValueInvalid", "message": "bad", "field": "metadata.name"}]}}));
}

#[test]
fn crd_schemas_round_trip() {
    assert_round_trips(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gates.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gates", "singular": "gate", "kind": "Gate", "listKind": "GateList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "spec": {"type": "object", "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1.0, "default": 3},
                                "mode": {"type": "string", "enum": ["a", "b"], "x-kubernetes-validations": [
                                    {"rule": "self != 'c'", "message": "no c"}]},
                                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "free": {"type": "object", "additionalProperties": true},
                                "ref": {"$ref": "#/x"},
                            }},
                    }}}}]}}),
    );
}

#[test]
fn k8s_pb_decodes_what_we_encode() {
    use k8s_pb::api::apps::v1::Deployment;
    let bytes = encode_object(&deployment()).expect("encodable");
    let (unknown, raw) = unwrap_envelope(&bytes);
    let tm = unknown.type_meta.expect("typeMeta");
    assert_eq!(tm.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(tm.kind.as_deref(), Some("Deployment"));
    let d = Deployment::decode(raw.as_slice()).expect("k8s-pb decodes our Deployment");
    let meta = d.metadata.expect("metadata");
    assert_eq!(meta.name.as_deref(), Some("web"));
    assert_eq!(meta.generation, Some(3));
    assert_eq!(meta.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(meta.creation_timestamp.and_then(|t| t.seconds), Some(1_714_979_289));
    let fields = meta.managed_fields[0]
        .fields_v1
        .as_ref()
        .and_then(|f| f.raw.clone())
        .expect("fieldsV1");
    let fields: Value = serde_json::from_slice(&fields).expect("fieldsV1 JSON");
    assert!(fields["f:spec"]["f:replicas"].is_object());
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(0), "a zero pointer keeps its presence");
    let ru = spec.strategy.and_then(|s| s.rolling_update).expect("rollingUpdate");
    let max_unavailable = ru.max_unavailable.expect("maxUnavailable");
    assert_eq!(
        (max_unavailable.r#type, max_unavailable.str_val.as_deref()),
        (Some(1), Some("25%"))
    );
    assert_eq!(ru.max_surge.and_then(|m| m.int_val), Some(1));
    let pod = spec.template.and_then(|t| t.spec).expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.security_context.as_ref().map(|s| s.supplemental_groups.clone()),
        Some(vec![1, 2, 3])
    );
    assert_eq!(pod.tolerations[0].toleration_seconds, Some(-1));
    assert!(pod.volumes[0]
        .volume_source
        .as_ref()
        .and_then(|v| v.empty_dir.as_ref())
        .is_some());
    let c = &pod.containers[0];
    let limits = &c.resources.as_ref().expect("resources").limits;
    assert_eq!(limits.get("cpu").and_then(|q| q.string.as_deref()), Some("500m"));
    let port = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.handler.as_ref())
        .and_then(|h| h.http_get.as_ref());
    assert_eq!(
        port.and_then(|g| g.port.as_ref()).and_then(|p| p.str_val.as_deref()),
        Some("http")
    );
    assert_eq!(c.security_context.as_ref().and_then(|s| s.run_as_user), Some(0));
}

#[test]
fn we_decode_what_k8s_pb_encodes() {
    use k8s_pb::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Probe, ProbeHandler, TcpSocketAction};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    // As Go clients send it: every non-pointer string present, empty ones included.
    let meta = ObjectMeta {
        name: Some("cm".into()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        creation_timestamp: Some(Time::default()),
        labels: [("a".to_string(), String::new())].into(),
        ..Default::default()
    };
    let cm = ConfigMap {
        metadata: Some(meta.clone()),
        data: [("k".to_string(), "v".to_string())].into(),
        binary_data: [("b".to_string(), vec![0u8, 1, 255])].into(),
        immutable: Some(false),
    };
    let v = request(&envelope("v1", "ConfigMap", cm.encode_to_vec()), "ConfigMap").expect("decodes");
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": ""}},
            "data": {"k": "v"}, "binaryData": {"b": "AAH/"}, "immutable": false})
    );
    let pod = Pod {
        metadata: Some(meta),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: Some("c".into()),
                readiness_probe: Some(Probe {
                    handler: Some(ProbeHandler {
                        tcp_socket: Some(TcpSocketAction {
                            port: Some(IntOrString {
                                r#type: Some(0),
                                int_val: Some(8080),
                                str_val: Some(String::new()),
                            }),
                            host: Some(String::new()),
                        }),
                        ..Default::default()
                    }),
                    timeout_seconds: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let v = request(&envelope("v1", "Pod", pod.encode_to_vec()), "Pod").expect("decodes");
    let probe = &v["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(probe["tcpSocket"], json!({"port": 8080}));
    // A non-pointer omitempty int32: Go's JSON of the decoded object has no zero (defaulting then sets 1).
    assert_eq!(probe.get("timeoutSeconds"), None);
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: None,
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            renew_time: Some(MicroTime {
                seconds: Some(1_704_067_200),
                nanos: Some(123_456_000),
            }),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let v = request(
        &envelope("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
        "Lease",
    )
    .expect("decodes");
    assert_eq!(
        v["spec"],
        json!({"renewTime": "2024-01-01T00:00:00.123456Z", "leaseDurationSeconds": 15})
    );
}

#[test]
fn watch_frames_decode_with_k8s_pb() {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w", "resourceVersion": "9"}});
    let frame = watch_frame("ADDED", &cm).expect("frame");
    let len = u32::from_be_bytes(frame[..4].try_into().expect("length")) as usize;
    assert_eq!(len, frame.len() - 4);
    let ev = WatchEvent::decode(&frame[4..]).expect("WatchEvent");
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let raw = ev.object.and_then(|o| o.raw).expect("object");
    let (_, inner) = unwrap_envelope(&raw);
    let got = k8s_pb::api::core::v1::ConfigMap::decode(inner.as_slice()).expect("ConfigMap");
    assert_eq!(got.metadata.and_then(|m| m.resource_version).as_deref(), Some("9"));
}

#[test]
fn malformed_bodies_get_upstream_errors() {
    let e = request(b"garbage", "ConfigMap").expect_err("not protobuf");
    assert_eq!(
        e,
        "the object provided is unrecognized (must be of type ConfigMap): provided data does not appear to be \
         a protobuf message, expected prefix [107 56 115 0] (67617262616765)"
    );
    assert!(request(b"", "ConfigMap").expect_err("empty").contains("empty data"));
    assert!(request(MAGIC, "ConfigMap").expect_err("empty").contains("empty body"));
    let mut truncated = MAGIC.to_vec();
    truncated.extend([0x0a, 0x40, 0x0a]);
    assert!(request(&truncated, "ConfigMap").is_err());
    // A good envelope around a broken message: the kind is known, so upstream's other wording.
    let e = request(&envelope("v1", "ConfigMap", vec![0x0a, 0x05, 0x01]), "ConfigMap").expect_err("broken");
    assert!(
        e.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap:"),
        "{e}"
    );
    // Wrong wire type for metadata (a varint).
    let e = request(&envelope("v1", "ConfigMap", vec![0x08, 0x01]), "ConfigMap").expect_err("wire type");
    assert!(e.contains("wrong wireType"), "{e}");
    let e = request(&envelope("example.com/v1", "Gate", vec![]), "Gate").expect_err("unknown kind");
    assert!(e.contains("no kind \"Gate\" is registered"), "{e}");
    // Deep nesting is refused, not a stack overflow.
    let mut nested = Vec::new();
    for _ in 0..200 {
        let mut outer = vec![0x0a];
        prost::encoding::encode_varint(nested.len() as u64, &mut outer);
        outer.extend(nested);
        nested = outer;
    }
    assert!(request(&envelope("apiextensions.k8s.io/v1", "JSONSchemaProps", nested), "X").is_err());
    // Invalid UTF-8 in a string.
    let e = request(
        &envelope("v1", "Namespace", vec![0x0a, 0x03, 0x0a, 0x01, 0xff]),
        "Namespace",
    );
    assert!(e.expect_err("utf8").contains("UTF-8"));
}

#[test]
fn content_types() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf; charset=binary"));
    assert!(!is_protobuf("application/json"));
}

#[test]
fn durations_and_times() {
    use super::codec::{format_duration, format_time, parse_duration};
    for (n, s) in [
        (0, "0s"),
        (3_600_000_000_000, "1h0m0s"),
        (90_000_000_000, "1m30s"),
        (1_500_000_000, "1.5s"),
        (300_000_000, "300ms"),
        (1_500, "1.5µs"),
        (7, "7ns"),
        (-5_000_000_000, "-5s"),
    ] {
        assert_eq!(format_duration(n), s);
        assert_eq!(parse_duration(s), Some(n), "{s}");
    }
    assert_eq!(parse_duration("2h45m"), Some(9_900_000_000_000));
    assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("1d"), None);
    assert_eq!(format_time(0, 0, false), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(0, 5_000, true), "1970-01-01T00:00:00.000005Z");
    // A Duration field (the only served one is in no kind we serve, so through the codec directly).
    let schema = Schema::get();
    let d = schema
        .message("k8s.io.apimachinery.pkg.apis.meta.v1.Duration")
        .expect("Duration");
    let mut out = Vec::new();
    super::codec::Encoder { schema }.message(d, &json!("1h0m0s"), &mut out, 0);
    let back = super::codec::Decoder { schema }.message(d, &out, 0).expect("decodes");
    assert_eq!(back, json!("1h0m0s"));
}

/// Every kind we serve has a message, and every property of each type they reach (as the OpenAPI
/// catalog describes it) has a protobuf field: nothing a client can send or read is lost in protobuf.
#[test]
fn the_table_covers_every_served_kind() {
    let schema = Schema::get();
    let catalog = crate::openapi::catalog();
    let mut todo = Vec::new();
    for r in crate::registry::RESOURCES {
        let av = r.api_version();
        for kind in [r.kind.to_string(), format!("{}List", r.kind)] {
            let m = schema
                .kind(&av, &kind)
                .unwrap_or_else(|| panic!("no protobuf message for {av} {kind}"));
            todo.push(m);
        }
    }
    for (av, kind) in [
        ("v1", "Status"),
        ("v1", "DeleteOptions"),
        ("autoscaling/v1", "Scale"),
        ("policy/v1", "Eviction"),
        ("v1", "Binding"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
    ] {
        todo.push(
            schema
                .kind(av, kind)
                .unwrap_or_else(|| panic!("no message for {av} {kind}")),
        );
    }
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    let mut guessed = Vec::new();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        let m = &schema.messages[i];
        let mut names = BTreeSet::new();
        // The JSON names of this object: its own fields and those of the structs it embeds.
        let mut stack = vec![m];
        while let Some(x) = stack.pop() {
            for f in &x.fields {
                match (f.inline, f.raw.ty) {
                    (true, Ty::Msg(j)) => stack.push(&schema.messages[j]),
                    _ => assert!(names.insert(f.json.as_str()), "{}: two fields named {}", m.name, f.json),
                }
            }
        }
        for f in &m.fields {
            if let Ty::Msg(j) = f.raw.ty {
                todo.push(j);
            }
            if !f.from_schema && m.special == Special::None {
                guessed.push(format!("{}.{}", m.name, f.json));
            }
            if f.raw.label == Label::Map {
                assert!(
                    matches!(f.raw.ty, Ty::Str | Ty::Bytes | Ty::Msg(_)),
                    "{}.{}",
                    m.name,
                    f.json
                );
            }
        }
        if m.special != Special::None {
            continue;
        }
        let oa = schema::openapi_name(m.name).to_ascii_lowercase();
        let Some((_, s)) = catalog.schemas().find(|(k, _)| k.to_ascii_lowercase() == oa) else {
            continue;
        };
        for prop in s["properties"].as_object().into_iter().flatten().map(|(k, _)| k) {
            if prop == "apiVersion" || prop == "kind" {
                // In the envelope's typeMeta, or a real field where the type has one.
                continue;
            }
            if !names.contains(prop.as_str()) {
                missing.push(format!("{}.{prop}", m.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "OpenAPI properties without a protobuf field: {missing:#?}"
    );
    assert!(seen.len() > 200, "walked only {} messages", seen.len());
    // Fields the 1.32 schemas do not have are newer than the API we serve; clients of 1.32 never send them.
    // Their count is a tripwire for a k8s-pb upgrade that renames what we do serve.
    assert!(guessed.len() < 60, "{} guessed JSON names: {guessed:#?}", guessed.len());
}

#[test]
fn go_round_trip_drops_only_non_pointer_omitempty_zeros() {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "generation": 0},
        "spec": {"replicas": 0, "paused": false, "minReadySeconds": 0, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {}, "spec": {"hostNetwork": false, "containers": [{"name": "c", "image": "",
                "ports": [{"containerPort": 80, "hostPort": 0}], "stdin": false}]}}},
        "status": {"replicas": 0, "readyReplicas": 0}});
    drop_go_omitted(&mut d);
    assert_eq!(
        d,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {}, "spec": {"containers": [{"name": "c",
                    "ports": [{"containerPort": 80}]}]}}},
            "status": {}})
    );
    // Pointers keep their zero: a PVC's storageClassName "" means "no class", not "the default".
    let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"storageClassName": "", "volumeName": "", "accessModes": ["ReadWriteOnce"]}});
    drop_go_omitted(&mut pvc);
    assert_eq!(
        pvc["spec"],
        json!({"storageClassName": "", "accessModes": ["ReadWriteOnce"]})
    );
    // A field without omitempty keeps its zero; custom resources are left alone.
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "immutable": false});
    drop_go_omitted(&mut cm);
    assert_eq!(cm["immutable"], false);
    let mut cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"paused": false}});
    let before = cr.clone();
    drop_go_omitted(&mut cr);
    assert_eq!(cr, before);
}
