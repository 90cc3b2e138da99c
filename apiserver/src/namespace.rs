//! Namespace lifecycle: upstream's namespace controller, run inside the API server. A namespace marked for
//! deletion has its content deleted (honouring finalizers and grace periods), its status conditions say
//! what remains, and once it is empty its `kubernetes` finalizer is removed and it goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::delete::{delete_matching, DeleteOptions};
use crate::handlers::write::encode;
use crate::handlers::Ctx;
use crate::registry::{all, find};
use crate::storage::{prefix_end, Write};
use crate::watchcache::decode;
use crate::ApiServer;

/// How often terminating namespaces are looked at (upstream requeues with a few seconds' back-off).
const PERIOD: Duration = Duration::from_secs(1);

pub async fn run(server: Arc<ApiServer>) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let Some(nsr) = find("", "v1", "namespaces") else {
            return;
        };
        let Some((list, _)) = server.cache(nsr).and_then(|c| c.list(&nsr.prefix(None))) else {
            continue;
        };
        for ns in list
            .iter()
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
        {
            let name = ns.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            if let Err(e) = finalize(&server, name).await {
                tracing::warn!(namespace = name, error = %e, "namespace deletion");
            }
        }
    }
}

/// What is left in a namespace after a deletion pass.
#[derive(Default)]
struct Remaining {
    /// "pods" or "deployments.apps" -> count
    resources: BTreeMap<String, usize>,
    /// finalizer -> objects carrying it
    finalizers: BTreeMap<String, usize>,
}

async fn finalize(server: &ApiServer, ns: &str) -> ApiResult<()> {
    let opts = DeleteOptions {
        propagation: Some("Background".into()),
        ..Default::default()
    };
    let no_selector = HashMap::new();
    let mut left = Remaining::default();
    for r in all().into_iter().filter(|r| r.namespaced) {
        let ctx = Ctx {
            server,
            r,
            namespace: Some(ns.to_string()),
            table: false,
            subresource: None,
            user_agent: "",
        };
        delete_matching(&ctx, &no_selector, &opts).await?;
        let prefix = r.prefix(Some(ns));
        let page = server
            .store
            .list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 0)
            .await?;
        if page.kvs.is_empty() {
            continue;
        }
        let gr = if r.group.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        left.resources.insert(gr, page.kvs.len());
        for kv in &page.kvs {
            let Some(o) = decode(&kv.value, kv.mod_revision) else {
                continue;
            };
            for f in o
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                *left.finalizers.entry(f.to_string()).or_default() += 1;
            }
        }
    }
    update_namespace(server, ns, &left).await
}

fn conditions(left: &Remaining) -> Value {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cond = |ty: &str, status: bool, reason: &str, message: String| {
        json!({"type": ty, "status": if status { "True" } else { "False" }, "lastTransitionTime": now,
            "reason": reason, "message": message})
    };
    let mut out = vec![
        cond(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        cond(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
    ];
    if left.resources.is_empty() {
        out.push(cond(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        ));
    } else {
        let list: Vec<String> = left
            .resources
            .iter()
            .map(|(gr, n)| format!("{gr} has {n} resource instances"))
            .collect();
        out.push(cond(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", list.join(", ")),
        ));
    }
    if left.finalizers.is_empty() {
        out.push(cond(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        ));
    } else {
        let list: Vec<String> = left
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        out.push(cond(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                list.join(", ")
            ),
        ));
    }
    json!(out)
}

/// Records the conditions; once nothing is left, drops the `kubernetes` finalizer and, with no other
/// finalizers, deletes the namespace.
async fn update_namespace(server: &ApiServer, ns: &str, left: &Remaining) -> ApiResult<()> {
    let Some(nsr) = find("", "v1", "namespaces") else {
        return Ok(());
    };
    let key = nsr.key(None, ns);
    for _ in 0..5 {
        let (kv, _) = server.store.get(&key).await?;
        let Some(kv) = kv else { return Ok(()) };
        let Some(mut obj) = decode(&kv.value, kv.mod_revision) else {
            return Err(ApiError::internal("undecodable stored namespace"));
        };
        let before = obj.clone();
        let empty = left.resources.is_empty();
        if let Some(o) = obj.as_object_mut() {
            let status = o.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                // Only rewrite the conditions when what they say changed (their timestamps always do).
                let strip = |v: &Value| -> Vec<(Value, Value, Value)> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| (c["type"].clone(), c["status"].clone(), c["message"].clone()))
                        .collect()
                };
                let new = conditions(left);
                if s.get("conditions").map(strip) != Some(strip(&new)) {
                    s.insert("conditions".into(), new);
                }
            }
            if empty {
                if let Some(f) = o
                    .get_mut("spec")
                    .and_then(|s| s.get_mut("finalizers"))
                    .and_then(Value::as_array_mut)
                {
                    f.retain(|x| x != "kubernetes");
                }
            }
        }
        if obj == before {
            return Ok(());
        }
        let no_spec_fin = obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let no_meta_fin = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let res = if no_spec_fin && no_meta_fin {
            server.store.delete_if(&key, kv.mod_revision).await?
        } else {
            server.store.put_if(&key, encode(&obj), kv.mod_revision).await?
        };
        match res {
            Write::Done(_) => {
                if no_spec_fin && no_meta_fin {
                    tracing::info!(namespace = ns, "namespace deleted");
                }
                return Ok(());
            }
            Write::Mismatch(None) => return Ok(()),
            Write::Mismatch(Some(_)) => continue,
        }
    }
    Ok(())
}
