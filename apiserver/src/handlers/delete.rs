//! DELETE of one object or of a collection, as upstream's generic registry does it: preconditions,
//! graceful deletion (pods), finalizers and the propagation policy's `orphan` / `foregroundDeletion`
//! finalizers. An object that still has finalizers (or a grace period) is only marked with
//! `deletionTimestamp`; whoever removes the last finalizer deletes it (see `write::store_update`).

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{json, Value};

use super::selector::Selector;
use super::{json_response, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::storage::{prefix_end, Write};
use crate::watchcache::decode;

/// Namespaces upstream refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const MODIFIED: &str = "the object has been modified; please apply your changes to the latest version and try again";

/// `metav1.DeleteOptions`, from the body and the query (the query wins, as upstream's decoding does).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<Self> {
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))?
        };
        if !body.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        let mut o = DeleteOptions {
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            orphan_dependents: body.get("orphanDependents").and_then(Value::as_bool),
            uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource_version: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All")),
        };
        if let Some(g) = q.get("gracePeriodSeconds") {
            o.grace_period = Some(
                g.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
            );
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        if let Some(b) = q.get("orphanDependents") {
            o.orphan_dependents = Some(b == "true");
        }
        if let Some(d) = q.get("dryRun") {
            if d != "All" {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {d:?}; supported values: \"All\""
                )));
            }
            o.dry_run = true;
        }
        o.validate()?;
        Ok(o)
    }

    fn validate(&self) -> ApiResult<()> {
        let mut causes = Vec::new();
        if let Some(p) = &self.propagation {
            if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
                causes.push((
                    "propagationPolicy".to_string(),
                    format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                ));
            }
            if self.orphan_dependents.is_some() {
                causes.push((
                    "propagationPolicy".to_string(),
                    format!("Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"),
                ));
            }
        }
        if causes.is_empty() {
            return Ok(());
        }
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        Err(ApiError::Status {
            code: 422,
            reason: "Invalid",
            message: format!("DeleteOptions.meta.k8s.io \"\" is invalid: {}", msgs.join(", ")),
            details: Some(json!({"group": "meta.k8s.io", "kind": "DeleteOptions",
                "causes": causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>()})),
        })
    }

    /// Whether dependents are orphaned, given the resource's default when the client did not say.
    fn orphans(&self, kind: &str, existing: &[String]) -> bool {
        if let Some(p) = &self.propagation {
            return p == "Orphan";
        }
        if let Some(o) = self.orphan_dependents {
            return o;
        }
        if existing.iter().any(|f| f == FOREGROUND) {
            return false;
        }
        // batch/v1 Jobs keep upstream's legacy default: orphan when the client says nothing.
        existing.iter().any(|f| f == ORPHAN) || kind == "Job"
    }

    fn foreground(&self, existing: &[String]) -> bool {
        if let Some(p) = &self.propagation {
            return p == "Foreground";
        }
        if self.orphan_dependents.is_some() {
            return false;
        }
        existing.iter().any(|f| f == FOREGROUND)
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What a finished DELETE answers: the object (pods, services, namespaces) or a Success Status.
fn deleted_response(ctx: &Ctx<'_>, obj: &Value) -> Value {
    if ctx.r.returns_deleted_object() {
        return obj.clone();
    }
    let mut details = json!({"name": obj.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        "kind": ctx.r.plural});
    if let Some(d) = details.as_object_mut() {
        if !ctx.r.group.is_empty() {
            d.insert("group".into(), json!(ctx.r.group));
        }
        if let Some(uid) = obj.pointer("/metadata/uid") {
            d.insert("uid".into(), uid.clone());
        }
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// The outcome of deleting one object.
pub struct Deleted {
    /// What the client gets back.
    pub body: Value,
    /// Gone from the store (false: marked for deletion, waiting for finalizers or its grace period).
    pub gone: bool,
}

/// Deletes (or marks for deletion) one object, retrying the read-modify-write when another writer got in
/// between, as upstream's GuaranteedUpdate does.
pub async fn delete_object(ctx: &Ctx<'_>, name: &str, opts: &DeleteOptions) -> ApiResult<Deleted> {
    if ctx.r.builtin_kind() == Some("Namespace") && PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        ));
    }
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    for _ in 0..8 {
        let (kv, _) = ctx.server.store.get(&key).await?;
        let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
        let obj = decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
        if let Some(uid) = &opts.uid {
            let have = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
            if have != uid {
                return Err(ApiError::conflict(
                    &ctx.target(name),
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if *rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(
                    &ctx.target(name),
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
        }
        let Some(marked) = mark_for_deletion(ctx, &obj, opts)? else {
            // Nothing holds it: delete now.
            if opts.dry_run {
                return Ok(Deleted {
                    body: deleted_response(ctx, &obj),
                    gone: true,
                });
            }
            match ctx.server.store.delete_if(&key, kv.mod_revision).await? {
                Write::Done(_) => {
                    return Ok(Deleted {
                        body: deleted_response(ctx, &obj),
                        gone: true,
                    })
                }
                Write::Mismatch(None) => return Err(ApiError::not_found(&ctx.target(name))),
                Write::Mismatch(Some(_)) if opts.resource_version.is_some() => {
                    return Err(ApiError::conflict(&ctx.target(name), MODIFIED))
                }
                Write::Mismatch(Some(_)) => continue,
            }
        };
        if marked == obj || opts.dry_run {
            return Ok(Deleted {
                body: marked,
                gone: false,
            });
        }
        let value = super::write::encode(&marked);
        match ctx.server.store.put_if(&key, value, kv.mod_revision).await? {
            Write::Done(rev) => {
                return Ok(Deleted {
                    body: super::write::with_rv(marked, rev),
                    gone: false,
                })
            }
            Write::Mismatch(None) => return Err(ApiError::not_found(&ctx.target(name))),
            Write::Mismatch(Some(_)) if opts.resource_version.is_some() => {
                return Err(ApiError::conflict(&ctx.target(name), MODIFIED))
            }
            Write::Mismatch(Some(_)) => continue,
        }
    }
    Err(ApiError::conflict(&ctx.target(name), MODIFIED))
}

/// The object as it should be stored when its deletion has to wait (finalizers, grace period, namespace
/// lifecycle), or None when it can go at once.
fn mark_for_deletion(ctx: &Ctx<'_>, obj: &Value, opts: &DeleteOptions) -> ApiResult<Option<Value>> {
    let mut out = obj.clone();
    let mut fins = finalizers(obj);
    let before = fins.clone();
    let orphan = opts.orphans(ctx.r.builtin_kind().unwrap_or_default(), &fins);
    let foreground = !orphan && opts.foreground(&fins);
    fins.retain(|f| f != ORPHAN && f != FOREGROUND);
    let crd = ctx.r.builtin_kind() == Some("CustomResourceDefinition");
    if crd && !fins.iter().any(|f| f == crate::crd::CLEANUP_FINALIZER) {
        // Its custom resources go first (`crd::cleanup`).
        fins.push(crate::crd::CLEANUP_FINALIZER.into());
    }
    if orphan {
        fins.push(ORPHAN.into());
    }
    if foreground {
        fins.push(FOREGROUND.into());
    }
    // An orphan or foreground finalizer only matters on an object that is otherwise going away now; upstream
    // adds it regardless, and so do we (the garbage collector removes it).
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    let grace = grace_period(ctx, obj, opts);
    let namespace_pending = ctx.r.builtin_kind() == Some("Namespace")
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    if fins.is_empty() && grace == 0 && !namespace_pending {
        return Ok(None);
    }
    if already && ctx.r.builtin_kind() == Some("Namespace") {
        return Err(ApiError::Status {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on namespaces \"{}\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.", obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()),
            details: Some(json!({"name": obj.pointer("/metadata/name"), "kind": "namespaces"})),
        });
    }
    let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(ApiError::internal("stored object without metadata"));
    };
    if fins != before {
        if fins.is_empty() {
            m.remove("finalizers");
        } else {
            m.insert("finalizers".into(), json!(fins));
        }
    }
    let current_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
    if !already {
        m.insert(
            "deletionTimestamp".into(),
            json!(if grace > 0 { rfc3339_in(grace) } else { now() }),
        );
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    } else if current_grace.is_some_and(|g| grace < g) {
        // A shorter grace period may replace a longer one (kubectl delete --grace-period=1 on a
        // terminating pod), never the other way.
        m.insert("deletionTimestamp".into(), json!(rfc3339_in(grace)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if crd {
        crate::crd::mark_terminating(&mut out);
    }
    if ctx.r.builtin_kind() == Some("Namespace") {
        if let Some(o) = out.as_object_mut() {
            let status = o.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                s.insert("phase".into(), json!("Terminating"));
            }
        }
    }
    // A pod whose grace period ran down to zero and has no finalizers goes now.
    let done_grace = out
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g == 0);
    if already && done_grace && fins.is_empty() && !namespace_pending {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Upstream's pod strategy: the requested or the pod's own grace period, zero when the pod never ran
/// (not scheduled) or has finished. Other kinds are deleted without a grace period.
fn grace_period(ctx: &Ctx<'_>, obj: &Value, opts: &DeleteOptions) -> i64 {
    if ctx.r.builtin_kind() != Some("Pod") {
        return 0;
    }
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let own = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    match opts.grace_period {
        // Upstream maps a negative request to the pod's own period... and 0 means "now" only with force;
        // the API itself takes 0 as immediate.
        Some(g) if g < 0 => own,
        Some(g) => g,
        None => own,
    }
}

pub async fn delete(ctx: &Ctx<'_>, name: &str, q: &HashMap<String, String>, body: &[u8]) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(q, body)?;
    let d = delete_object(ctx, name, &opts).await?;
    // Upstream answers 202 only when the client asked for cascading (orphanDependents=false) and the
    // object is not gone yet; everything else is 200.
    let code = if !d.gone && opts.orphan_dependents == Some(false) {
        202
    } else {
        200
    };
    Ok(json_response(code, &d.body))
}

/// DELETE on a collection: every object matching the label and field selectors, one by one with the same
/// options; answers the list of what was deleted or marked.
pub async fn delete_collection(ctx: &Ctx<'_>, q: &HashMap<String, String>, body: &[u8]) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(q, body)?;
    let items = delete_matching(ctx, q, &opts).await?;
    let out = json!({"kind": format!("{}List", ctx.r.kind), "apiVersion": ctx.r.api_version(),
        "metadata": {}, "items": items});
    Ok(json_response(200, &out))
}

/// Deletes what matches the selectors in `q` under the context's namespace (or everywhere).
pub async fn delete_matching(
    ctx: &Ctx<'_>,
    q: &HashMap<String, String>,
    opts: &DeleteOptions,
) -> ApiResult<Vec<Value>> {
    let sel = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let prefix = ctx.r.prefix(ctx.namespace.as_deref());
    let page = ctx
        .server
        .store
        .list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 0)
        .await?;
    let mut items = Vec::new();
    for kv in page.kvs {
        let Some(obj) = decode(&kv.value, kv.mod_revision) else {
            continue;
        };
        if !sel.matches(&obj) {
            continue;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let one = Ctx {
            server: ctx.server,
            r: ctx.r,
            namespace: ns.or_else(|| ctx.namespace.clone()),
            table: false,
            subresource: None,
            user_agent: ctx.user_agent,
        };
        match delete_object(&one, name, opts).await {
            Ok(d) => items.push(if d.gone { obj } else { d.body }),
            // Gone in between, or refused (protected namespaces): skip, as upstream's
            // DeleteCollection does for objects that vanish.
            Err(ApiError::Status { code: 404 | 403, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_from_body_and_query() {
        let o = DeleteOptions::parse(
            &q(&[("gracePeriodSeconds", "5")]),
            br#"{"propagationPolicy":"Foreground"}"#,
        )
        .expect("valid");
        assert_eq!(o.grace_period, Some(5));
        assert!(o.foreground(&[]));
        assert!(!o.orphans("Deployment", &[]));
        let o = DeleteOptions::parse(&q(&[]), b"").expect("empty body");
        assert!(o.orphans("Job", &[]), "jobs orphan by default");
        assert!(!o.orphans("Deployment", &[]));
        assert!(DeleteOptions::parse(&q(&[("propagationPolicy", "Sideways")]), b"").is_err());
        assert!(DeleteOptions::parse(&q(&[("dryRun", "Some")]), b"").is_err());
        assert!(DeleteOptions::parse(&q(&[]), b"[1]").is_err());
        let both = DeleteOptions::parse(&q(&[]), br#"{"propagationPolicy":"Orphan","orphanDependents":true}"#);
        assert!(matches!(both, Err(ApiError::Status { code: 422, .. })));
    }
}
