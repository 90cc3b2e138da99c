//! GET, LIST and WATCH.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::selector::Selector;
use super::{json_response, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::registry::{table, Resource};
use crate::storage::prefix_end;
use crate::watchcache::{decode, Event, Kind, Start};

/// Upstream caps a list page read from etcd at 10,000 keys when it has to filter.
const MAX_PAGE: i64 = 10_000;

pub async fn get(ctx: &Ctx<'_>, name: &str) -> ApiResult<Response> {
    let key = ctx.r.key(ctx.namespace.as_deref(), name);
    let (kv, _) = ctx.server.store.get(&key).await?;
    let kv = kv.ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
    let mut obj = decode(&kv.value, kv.mod_revision).ok_or_else(|| ApiError::internal("undecodable stored object"))?;
    ctx.r.present(&mut obj);
    if ctx.table {
        let meta = json!({"resourceVersion": kv.mod_revision.to_string()});
        return Ok(json_response(200, &table::table(ctx.r, &[obj], meta, true)));
    }
    Ok(json_response(200, &obj))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let c = Continue {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<Continue> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let c: Continue = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if c.v != "meta.k8s.io/v1" || c.start.contains("..") {
        return Err(bad());
    }
    Ok(c)
}

fn list_object(ctx: &Ctx<'_>, mut items: Vec<Value>, rv: i64, cont: Option<String>) -> Value {
    for o in &mut items {
        ctx.r.present(o);
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let (Some(c), Some(m)) = (cont, meta.as_object_mut()) {
        m.insert("continue".into(), Value::String(c));
    }
    if ctx.table {
        return table::table(ctx.r, &items, meta, true);
    }
    let list_kind = match &ctx.r.custom {
        Some(c) => c.list_kind.clone(),
        None => format!("{}List", ctx.r.kind),
    };
    json!({"kind": list_kind, "apiVersion": ctx.r.api_version(), "metadata": meta, "items": items})
}

pub async fn list(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> ApiResult<Response> {
    let sel = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let prefix = ctx.r.prefix(ctx.namespace.as_deref());
    let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0).max(0);
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or_default();
    let cont = q.get("continue").filter(|c| !c.is_empty());
    if cont.is_some() && !rv.is_empty() {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    // resourceVersion=0: any state is fine, so serve from the watch cache (what reflectors do).
    if rv == "0" {
        if let Some((objs, rev)) = ctx.server.cache(ctx.r).and_then(|c| c.list(&prefix)) {
            let items = objs.iter().filter(|o| sel.matches(o)).map(|o| (**o).clone()).collect();
            return Ok(json_response(200, &list_object(ctx, items, rev, None)));
        }
    }
    let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let (mut start, mut revision) = match cont {
        Some(c) => {
            let c = decode_continue(c)?;
            (format!("{prefix}{}", c.start).into_bytes(), c.rv)
        }
        None => (
            prefix.clone().into_bytes(),
            if exact { rv.parse().unwrap_or(0) } else { 0 },
        ),
    };
    let end = prefix_end(prefix.as_bytes());
    let mut items = Vec::new();
    let mut next = None;
    loop {
        let want = if limit > 0 {
            (limit - items.len() as i64).max(1)
        } else {
            0
        };
        let page_limit = if sel.is_empty() {
            want
        } else {
            want.max(limit * 2).min(MAX_PAGE)
        };
        let page = ctx
            .server
            .store
            .list(&start, &end, revision, page_limit)
            .await
            .map_err(|e| match e.code() {
                tonic::Code::OutOfRange if cont.is_some() => ApiError::gone(format!(
                    "The provided continue parameter is too old to display a consistent list result. {}",
                    e.message()
                )),
                tonic::Code::OutOfRange => ApiError::gone(format!("too old resource version: {rv}: {}", e.message())),
                _ => ApiError::Storage(e),
            })?;
        if revision == 0 {
            revision = page.revision;
        }
        let n = page.kvs.len();
        let mut last_key: Option<Vec<u8>> = None;
        for kv in page.kvs {
            last_key = Some(kv.key.clone());
            if limit > 0 && items.len() as i64 >= limit {
                next = Some(kv.key);
                break;
            }
            if let Some(o) = decode(&kv.value, kv.mod_revision) {
                if sel.matches(&o) {
                    items.push(o);
                }
            }
        }
        if next.is_some() {
            break;
        }
        if !page.more || n == 0 {
            break;
        }
        let Some(mut k) = last_key else { break };
        k.push(0);
        if limit > 0 && items.len() as i64 >= limit {
            next = Some(k);
            break;
        }
        start = k;
    }
    let cont = next.map(|k| {
        let rel = String::from_utf8_lossy(&k[prefix.len().min(k.len())..]).into_owned();
        encode_continue(revision, &rel)
    });
    Ok(json_response(200, &list_object(ctx, items, revision, cont)))
}

/// How a watch stream's events are written.
#[derive(Clone, Copy)]
struct WatchFormat {
    table: bool,
    /// Length-prefixed protobuf WatchEvent frames instead of JSON lines.
    protobuf: bool,
}

fn watch_line(r: &'static Resource, fmt: WatchFormat, ty: &str, obj: &Value, first: &mut bool) -> Bytes {
    let mut object = if fmt.table && ty != "BOOKMARK" && ty != "ERROR" {
        let t = table::table(r, std::slice::from_ref(obj), json!({}), *first);
        *first = false;
        t
    } else {
        obj.clone()
    };
    if !fmt.table && ty != "ERROR" {
        r.present(&mut object);
    }
    if fmt.protobuf {
        if let Some(frame) = crate::protobuf::watch_frame(ty, &object) {
            return Bytes::from(frame);
        }
    }
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Chooses the event a watcher with selector `sel` sees: selector transitions become ADDED/DELETED.
fn visible(ev: &Event, sel: &Selector) -> Option<(&'static str, Arc<Value>)> {
    let obj = ev.object.clone()?;
    let now = sel.matches(&obj);
    match ev.kind {
        Kind::Added => now.then_some(("ADDED", obj)),
        Kind::Deleted => now.then_some(("DELETED", obj)),
        Kind::Modified => {
            let before = ev.prev.as_ref().is_some_and(|p| sel.matches(p));
            match (before, now) {
                (true, true) => Some(("MODIFIED", obj)),
                (false, true) => Some(("ADDED", obj)),
                (true, false) => Some(("DELETED", obj)),
                (false, false) => None,
            }
        }
        Kind::Bookmark => None,
    }
}

pub async fn watch(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> ApiResult<Response> {
    let sel = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let cache = ctx
        .server
        .cache(ctx.r)
        .ok_or_else(|| ApiError::internal("no watch cache for resource"))?;
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or_default();
    let from: i64 = match rv {
        "" | "0" => 0,
        v => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
    };
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    // WatchList: the current state as ADDED events (from the cache, at least as new as `from`), then a
    // bookmark marking their end.
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![(
                "allowWatchBookmarks".into(),
                "Forbidden: sendInitialEvents requires allowWatchBookmarks".into(),
            )],
        ));
    }
    let from = if send_initial { 0 } else { from };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let prefix = ctx.r.prefix(ctx.namespace.as_deref());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let mut first = true;
    // Built-in kinds only: custom resources and tables have no protobuf messages.
    let fmt = WatchFormat {
        table: ctx.table,
        protobuf: crate::protobuf::negotiated() && !ctx.table && ctx.r.custom.is_none(),
    };

    // Without a resourceVersion the watch starts with the current state as ADDED events.
    let (initial, mut live, floor) = match cache.watch(from) {
        Start::NotReady => return Err(ApiError::new(503, "ServiceUnavailable", "watch cache is not ready")),
        Start::TooOld(oldest) => {
            let status = ApiError::gone(format!("too old resource version: {from} ({oldest})")).status();
            let line = watch_line(ctx.r, fmt, "ERROR", &status, &mut first);
            let _ = tx.try_send(Ok(line));
            drop(tx);
            return Ok(stream_response(rx, fmt.protobuf));
        }
        Start::Stream(past, live) if from != 0 => {
            let floor = past.iter().map(|e| e.revision).max().unwrap_or(from).max(from);
            let shown = past
                .iter()
                .filter(|e| e.key.starts_with(&prefix))
                .filter_map(|e| visible(e, &sel))
                .collect::<Vec<_>>();
            (shown, live, floor)
        }
        Start::Stream(_, live) => {
            let (objs, rev) = cache.list(&prefix).unwrap_or_default();
            let added = objs
                .into_iter()
                .filter(|o| sel.matches(o))
                .map(|o| ("ADDED", o))
                .collect();
            (added, live, rev)
        }
    };
    let mut out = Vec::new();
    for (ty, obj) in &initial {
        out.push(watch_line(ctx.r, fmt, ty, obj, &mut first));
    }
    if send_initial {
        let obj = json!({"kind": ctx.r.kind, "apiVersion": ctx.r.api_version(), "metadata": {
            "resourceVersion": floor.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
        out.push(watch_line(ctx.r, fmt, "BOOKMARK", &obj, &mut first));
    }
    let mut last_sent = floor;
    let r = ctx.r;
    let kind_av = (r.kind, r.api_version());
    tokio::spawn(async move {
        for line in out {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => return,
                ev = live.recv() => ev,
            };
            let ev = match ev {
                Ok(ev) => ev,
                // A slow watcher that fell behind ends its watch; the client re-watches from its last RV.
                Err(_) => break,
            };
            if ev.revision <= last_sent && ev.kind != Kind::Bookmark {
                continue;
            }
            if ev.kind == Kind::Bookmark {
                if bookmarks && ev.revision >= last_sent {
                    let obj = json!({"kind": kind_av.0, "apiVersion": kind_av.1,
                        "metadata": {"resourceVersion": ev.revision.to_string()}});
                    if tx
                        .send(Ok(watch_line(r, fmt, "BOOKMARK", &obj, &mut first)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            last_sent = ev.revision;
            if !ev.key.starts_with(&prefix) {
                continue;
            }
            if let Some((ty, obj)) = visible(&ev, &sel) {
                if tx.send(Ok(watch_line(r, fmt, ty, &obj, &mut first))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(stream_response(rx, fmt.protobuf))
}

fn stream_response(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::convert::Infallible>>,
    protobuf: bool,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let ct = if protobuf {
        crate::protobuf::WATCH_CONTENT_TYPE
    } else {
        "application/json"
    };
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, ct)
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "b\u{0}");
        let c = decode_continue(&t).unwrap();
        assert_eq!((c.rv, c.start.as_str()), (42, "b\u{0}"));
        assert!(decode_continue("!!").is_err());
    }
}
