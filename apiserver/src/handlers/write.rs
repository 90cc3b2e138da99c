//! POST, PUT, PATCH and DELETE: metadata bookkeeping, defaulting and validation, then conditional writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::response::Response;
use rand::Rng;
use serde_json::{json, Value};

use super::patch::{self, PatchType};
use super::{json_response, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::fieldmanager;
use crate::openapi::SchemaNode;
use crate::registry::find;
use crate::storage::Write;
use crate::watchcache::decode;

const MODIFIED: &str = "the object has been modified; please apply your changes to the latest version and try again";

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str<'a>(o: &'a Value, f: &str) -> Option<&'a str> {
    o.get("metadata")?.get(f)?.as_str()
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized or malformed: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the object provided is not a JSON object"));
    }
    Ok(v)
}

impl Ctx<'_> {
    /// Checks kind/apiVersion against the URL and fills them, and the namespace, in.
    fn check_type(&self, obj: &mut Value) -> ApiResult<()> {
        let av = self.r.api_version();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(self.r.kind)
            .to_string();
        let got_av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or(&av).to_string();
        if kind != self.r.kind || got_av != av {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({got_av}) does not match the expected API version ({av})"
            ))
            .with_kind_message(&kind, self.r.kind));
        }
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("object expected"));
        };
        o.insert("kind".into(), json!(self.r.kind));
        o.insert("apiVersion".into(), json!(av));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        let Some(m) = meta.as_object_mut() else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        if self.r.namespaced {
            let ns = self.namespace.clone().unwrap_or_else(|| "default".into());
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// Upstream's NamespaceLifecycle admission: the namespace must exist and not be terminating.
    async fn namespace_accepts(&self, name: &str) -> ApiResult<()> {
        let Some(ns) = self.namespace.as_deref().filter(|_| self.r.namespaced) else {
            return Ok(());
        };
        let Some(nsr) = find("", "v1", "namespaces") else {
            return Ok(());
        };
        let (kv, _) = self.server.store.get(&nsr.key(None, ns)).await?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(&crate::error::Target {
                group: "",
                resource: "namespaces",
                name: ns,
            }));
        };
        let terminating =
            decode(&kv.value, kv.mod_revision).is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
        if terminating {
            let t = self.target(name);
            return Err(ApiError::Status {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    t.qualified()
                ),
                details: Some(json!({"name": name, "group": self.r.group, "kind": self.r.plural,
                    "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"),
                        "field": "metadata.namespace"}]})),
            });
        }
        Ok(())
    }

    /// Records who wrote which fields of `new` (over `old`, `Value::Null` for a create) in its
    /// managedFields; for server-side apply (`applied` is the applied configuration) this is also where
    /// conflicts with other managers are found and fields the applier dropped are removed.
    fn manage_fields(
        &self,
        q: &HashMap<String, String>,
        old: &Value,
        new: Value,
        applied: Option<&Value>,
        name: &str,
    ) -> ApiResult<Value> {
        let api_version = self.r.api_version();
        let time = now();
        let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => m.clone(),
            None => fieldmanager::manager_from_user_agent(self.user_agent),
        };
        let w = fieldmanager::Writer {
            manager: &manager,
            api_version: &api_version,
            subresource: self.subresource.filter(|s| *s == "status"),
            time: &time,
            schema: SchemaNode::of_resource(self.r),
        };
        match applied {
            Some(applied) => {
                let force = q.get("force").is_some_and(|f| f == "true");
                fieldmanager::apply(old, applied, new, &w, force)
                    .map_err(|c| fieldmanager::conflict_error(&c, &self.target(name)))
            }
            None => {
                let mut new = new;
                fieldmanager::record_update(old, &mut new, &w);
                Ok(new)
            }
        }
    }
}

impl ApiError {
    fn with_kind_message(self, got: &str, want: &str) -> Self {
        if got != want {
            return ApiError::bad_request(format!(
                "the kind in the data ({got}) does not match the expected kind ({want})"
            ));
        }
        self
    }
}

impl Ctx<'_> {
    /// The resource's defaults, plus what needs the server: a CRD's names are granted against the other
    /// CRDs (`old`: the stored object on an update). Every write (create, update, patch, apply, status)
    /// passes here before validation and storage.
    ///
    /// A built-in object also takes the Go round trip upstream's decoding gives it: a zero in a
    /// non-pointer `omitempty` scalar is absent, to the defaulting (`restartPolicy: ""` is unset) and in
    /// what is stored (defaults and server-set fields included). Custom resources have no Go struct.
    fn default_object(&self, old: Option<&Value>, obj: &mut Value) {
        let builtin = self.r.custom.is_none();
        if builtin {
            crate::protobuf::drop_go_omitted(obj);
        }
        self.r.default_object(obj);
        if self.r.builtin_kind() == Some("CustomResourceDefinition") {
            crate::crd::accept_names_among_stored(self.server, old, obj);
        }
        if builtin {
            crate::protobuf::drop_go_omitted(obj);
        }
    }
}

pub(crate) fn encode(obj: &Value) -> Vec<u8> {
    // resourceVersion is the key's mod_revision, never stored in the value.
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

pub(super) fn with_rv(mut obj: Value, rev: i64) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rev.to_string()));
    }
    obj
}

/// `fieldValidation`: unknown or duplicate fields fail the request (Strict), come back as warnings (Warn,
/// upstream's default) or are dropped silently (Ignore).
fn field_validation(ctx: &Ctx<'_>, q: &HashMap<String, String>, errors: Vec<String>) -> ApiResult<Vec<String>> {
    let mode = q.get("fieldValidation").map(String::as_str).unwrap_or("Warn");
    if !["Strict", "Warn", "Ignore", ""].contains(&mode) {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {mode:?}"
        )));
    }
    if errors.is_empty() || mode == "Ignore" {
        return Ok(Vec::new());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(crate::openapi::strict_decoding_message(
            ctx.r.kind,
            ctx.r.version,
            &errors,
        )));
    }
    Ok(errors)
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&crate::openapi::warning_header(w)) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

impl Ctx<'_> {
    /// Unknown and duplicate fields of a request body, for `fieldValidation`.
    fn body_field_errors(&self, body: &[u8]) -> Vec<String> {
        match &self.r.custom {
            Some(c) => {
                let mut errors = crate::openapi::duplicate_fields(body);
                if let Ok(o) = serde_json::from_slice::<Value>(body) {
                    errors.extend(c.unknown_fields(&o));
                }
                errors
            }
            None => crate::openapi::strict_field_errors(self.r.group, self.r.kind, body),
        }
    }

    /// Unknown fields of a patched object, for `fieldValidation`.
    fn object_field_errors(&self, obj: &Value) -> Vec<String> {
        match &self.r.custom {
            Some(c) => c.unknown_fields(obj),
            None => crate::openapi::unknown_fields(self.r.group, self.r.kind, obj),
        }
    }

    /// A CRD write is answered once this server serves what it defines.
    async fn settle(&self, rev: i64) {
        if self.r.builtin_kind() == Some("CustomResourceDefinition") {
            crate::crd::wait_seen(self.server, rev).await;
        }
    }
}

/// Whether an update changes what metadata.generation counts: the spec for built-in kinds; for custom
/// resources everything but metadata (and status, when status is a subresource), as upstream.
fn generation_changed(ctx: &Ctx<'_>, old: &Value, new: &Value) -> bool {
    let Some(c) = &ctx.r.custom else {
        return old.get("spec") != new.get("spec");
    };
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            if c.status {
                o.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|d| d == "All")
}

pub async fn create(ctx: &Ctx<'_>, q: &HashMap<String, String>, body: &[u8], op: &str) -> ApiResult<Response> {
    if let Some(c) = &ctx.r.custom {
        if crate::crd::terminating(ctx.server, &c.crd) {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
            ));
        }
    }
    let mut obj = parse_body(body)?;
    ctx.check_type(&mut obj)?;
    // Server-side apply creating the object: the applier owns what it applied (not the defaults).
    let applied = (op == "Apply").then(|| obj.clone());
    let warnings = field_validation(ctx, q, ctx.body_field_errors(body))?;
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let named = m.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !named {
            if let Some(base) = m.get("generateName").and_then(Value::as_str) {
                const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let mut rng = rand::rng();
                let suffix: String = (0..5)
                    .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
                    .collect();
                let name = format!("{base}{suffix}");
                m.insert("name".into(), json!(name));
            }
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        if ctx.r.has_generation {
            m.insert("generation".into(), json!(1));
        }
    }
    // Upstream's PrepareForCreate: status is not the client's to set where it is a subresource.
    if ctx.r.custom.as_ref().is_some_and(|c| c.status) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    ctx.default_object(None, &mut obj);
    if ctx.r.builtin_kind() == Some("Service") {
        allocate_service_addresses(ctx, &mut obj);
    }
    let created = meta_str(&obj, "name").unwrap_or_default().to_string();
    let obj = ctx.manage_fields(q, &Value::Null, obj, applied.as_ref(), &created)?;
    ctx.r.validate_create(&obj)?;
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    ctx.namespace_accepts(&name).await?;
    if dry_run(q) {
        return Ok(with_warnings(json_response(201, &obj), &warnings));
    }
    let key = ctx.r.key(ctx.namespace.as_deref(), &name);
    match ctx.server.store.put_if(&key, encode(&obj), 0).await? {
        Write::Done(rev) => {
            ctx.settle(rev).await;
            Ok(with_warnings(json_response(201, &with_rv(obj, rev)), &warnings))
        }
        Write::Mismatch(_) => Err(ApiError::already_exists(&ctx.target(&name))),
    }
}

/// Service CIDR 10.96.0.0/16 (10.96.0.1 is the `kubernetes` service) and the NodePort range 30000-32767.
/// Picks at random and avoids what the watch cache shows in use; two concurrent creates may still collide
/// (upstream keeps an allocation bitmap in etcd; a later step).
fn allocate_service_addresses(ctx: &Ctx<'_>, obj: &mut Value) {
    let used: Vec<Arc<Value>> = ctx
        .server
        .cache(ctx.r)
        .and_then(|c| c.list(&ctx.r.prefix(None)))
        .map(|(v, _)| v)
        .unwrap_or_default();
    let used_ips: HashSet<&str> = used
        .iter()
        .filter_map(|s| s.pointer("/spec/clusterIP")?.as_str())
        .collect();
    let used_ports: HashSet<i64> = used
        .iter()
        .filter_map(|s| s.pointer("/spec/ports")?.as_array())
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_i64())
        .collect();
    let mut rng = rand::rng();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return;
    }
    let wants_ip = spec.get("clusterIP").and_then(Value::as_str).is_none_or(str::is_empty);
    if wants_ip {
        let ip = (0..1000)
            .map(|_| {
                let n: u16 = rng.random_range(2..65535);
                format!("10.96.{}.{}", n >> 8, n & 0xff)
            })
            .find(|ip| !used_ips.contains(ip.as_str()));
        if let Some(ip) = ip {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    }
    spec.entry("internalTrafficPolicy").or_insert_with(|| json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                    let port = (0..1000)
                        .map(|_| rng.random_range(30000..=32767))
                        .find(|p| !used_ports.contains(p));
                    if let Some(port) = port {
                        p.insert("nodePort".into(), json!(port));
                    }
                }
            }
        }
    }
}

/// Carries over what clients may not change and bumps generation when the spec changed. On the main
/// resource of a kind with a status subresource, status is kept as stored; on `/status` only status is
/// taken from the request (upstream's status strategies). `/finalize` takes only `spec.finalizers`.
fn carry_over(ctx: &Ctx<'_>, old: &Value, new: &mut Value) -> ApiResult<()> {
    if let Some(sub @ ("status" | "finalize")) = ctx.subresource {
        let mut merged = old.clone();
        let (from, path) = if sub == "status" {
            (new.get("status").cloned(), "status")
        } else {
            (new.pointer("/spec/finalizers").cloned(), "finalizers")
        };
        if let Some(o) = merged.as_object_mut() {
            if path == "status" {
                match from {
                    Some(st) => o.insert("status".into(), st),
                    None => o.remove("status"),
                };
            } else if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("finalizers".into(), from.unwrap_or(json!([])));
            }
        }
        // Keep the request's resourceVersion for the precondition check done by the caller.
        if let (Some(rv), Some(m)) = (
            new.pointer("/metadata/resourceVersion").cloned(),
            merged.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            m.insert("resourceVersion".into(), rv);
        }
        *new = merged;
        return Ok(());
    }
    if ctx.r.has_status_subresource() {
        if let Some(o) = new.as_object_mut() {
            match old.get("status") {
                Some(st) => o.insert("status".into(), st.clone()),
                None => o.remove("status"),
            };
        }
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let had: Vec<&Value> = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added: Vec<String> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|f| !had.contains(f))
                    .filter_map(Value::as_str)
                    .map(|f| format!("{f:?}"))
                    .collect()
            })
            .unwrap_or_default();
        if !added.is_empty() {
            let name = meta_str(old, "name").unwrap_or_default();
            return Err(ApiError::invalid(
                ctx.r.kind,
                ctx.r.group,
                name,
                vec![(
                    "metadata.finalizers".into(),
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        added.join(", ")
                    ),
                )],
            ));
        }
    }
    let spec_changed = generation_changed(ctx, old, new);
    let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    // Go's omitempty drops empty maps: a label removed last leaves no `labels: {}` behind.
    for f in ["labels", "annotations", "finalizers"] {
        if m.get(f).is_some_and(|v| {
            v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty()) || v.is_null()
        }) {
            m.remove(f);
        }
    }
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old.pointer(&format!("/metadata/{f}")) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    if ctx.r.has_generation {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        m.insert("generation".into(), json!(if spec_changed { g + 1 } else { g }));
    }
    if m.get("managedFields").is_none() {
        if let Some(mf) = old.pointer("/metadata/managedFields") {
            m.insert("managedFields".into(), mf.clone());
        }
    }
    Ok(())
}

/// Upstream's ShouldDeleteDuringUpdate: an object marked for deletion whose last finalizer is gone (and,
/// for a namespace, whose spec finalizers are done) is deleted by that update.
fn deletes_on_update(obj: &Value) -> bool {
    let empty = |p: &str| obj.pointer(p).and_then(Value::as_array).is_none_or(|a| a.is_empty());
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && empty("/metadata/finalizers")
        && empty("/spec/finalizers")
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0)
}

/// Writes `new` over the stored object at revision `expected`.
async fn store_update(ctx: &Ctx<'_>, name: &str, expected: i64, new: Value, dry: bool) -> ApiResult<Value> {
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    if dry {
        return Ok(with_rv(new, expected));
    }
    let res = if deletes_on_update(&new) {
        ctx.server.store.delete_if(&key, expected).await?
    } else {
        ctx.server.store.put_if(&key, encode(&new), expected).await?
    };
    match res {
        Write::Done(rev) => {
            ctx.settle(rev).await;
            Ok(with_rv(new, rev))
        }
        Write::Mismatch(None) => Err(ApiError::not_found(&ctx.target(name))),
        Write::Mismatch(Some(_)) => Err(ApiError::conflict(&ctx.target(name), MODIFIED)),
    }
}

pub async fn update(ctx: &Ctx<'_>, name: &str, q: &HashMap<String, String>, body: &[u8]) -> ApiResult<Response> {
    let mut obj = parse_body(body)?;
    ctx.check_type(&mut obj)?;
    let warnings = field_validation(ctx, q, ctx.body_field_errors(body))?;
    if meta_str(&obj, "name") != Some(name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&obj, "name").unwrap_or_default()
        )));
    }
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    let (kv, _) = ctx.server.store.get(&key).await?;
    let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
    let old = decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
    let expected = match meta_str(&obj, "resourceVersion").filter(|r| !r.is_empty()) {
        Some(rv) => {
            let rv: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if rv != kv.mod_revision {
                return Err(ApiError::conflict(&ctx.target(name), MODIFIED));
            }
            rv
        }
        None => kv.mod_revision,
    };
    carry_over(ctx, &old, &mut obj)?;
    ctx.default_object(Some(&old), &mut obj);
    ctx.r.validate_update(&old, &obj)?;
    let obj = ctx.manage_fields(q, &old, obj, None, name)?;
    let out = store_update(ctx, name, expected, obj, dry_run(q)).await?;
    Ok(with_warnings(json_response(200, &out), &warnings))
}

pub async fn patch(
    ctx: &Ctx<'_>,
    name: &str,
    q: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Response> {
    let kind = PatchType::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {content_type:?}"),
        )
    })?;
    if ctx.r.custom.is_some() && matches!(kind, PatchType::Strategic) {
        // Custom resources have no Go struct to take patch strategies from, so upstream refuses these.
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    if matches!(kind, PatchType::Apply) {
        if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        if ctx.server.store.get(&key).await?.0.is_none() {
            // Server-side apply creates what does not exist yet.
            return create(ctx, q, body, "Apply").await;
        }
    }
    // The applied configuration, for field ownership.
    let applied = match kind {
        PatchType::Apply => Some(parse_body(body)?),
        _ => None,
    };
    // The server retries its own read-modify-write when another writer got in between, as upstream does.
    for _ in 0..5 {
        let (kv, _) = ctx.server.store.get(&key).await?;
        let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
        let mut old =
            decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
        ctx.r.present(&mut old);
        let mut new = patch::apply(&kind, &old, body, SchemaNode::of_resource(ctx.r))?;
        ctx.check_type(&mut new)?;
        let warnings = field_validation(ctx, q, ctx.object_field_errors(&new))?;
        let pinned = meta_str(&new, "resourceVersion").map(str::to_string);
        if pinned.as_deref().is_some_and(|rv| rv != kv.mod_revision.to_string()) {
            return Err(ApiError::conflict(&ctx.target(name), MODIFIED));
        }
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::bad_request("metadata.name may not be changed by a patch"));
        }
        carry_over(ctx, &old, &mut new)?;
        ctx.default_object(Some(&old), &mut new);
        ctx.r.validate_update(&old, &new)?;
        let new = ctx.manage_fields(q, &old, new, applied.as_ref(), name)?;
        match store_update(ctx, name, kv.mod_revision, new, dry_run(q)).await {
            Err(ApiError::Status { code: 409, .. }) if pinned.is_none() => continue,
            r => return r.map(|o| with_warnings(json_response(200, &o), &warnings)),
        }
    }
    Err(ApiError::conflict(&ctx.target(name), MODIFIED))
}
