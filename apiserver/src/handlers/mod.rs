//! HTTP surface: routing by path (`/api/v1/...`, `/apis/<g>/<v>/...`), authentication, content
//! negotiation, and dispatch to the verb handlers.

pub(crate) mod delete;
mod negotiate;
pub(crate) mod patch;
mod pods;
mod read;
mod scale;
mod selector;
pub(crate) mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, Method};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Target};
use crate::registry::{find, Resource};
use crate::{discovery, openapi, ApiServer};

/// Set by the TLS layer when the client presented a certificate signed by our CA.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated(pub bool);

/// Upstream's default request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Per-request context for resource handlers.
pub struct Ctx<'a> {
    pub server: &'a ApiServer,
    pub r: &'static Resource,
    pub namespace: Option<String>,
    /// The client asked for `meta.k8s.io/v1` Table output.
    pub table: bool,
    /// `status` or `finalize` when the request addressed that subresource.
    pub subresource: Option<&'a str>,
    /// The request's User-Agent: writes without a `fieldManager` are recorded under its prefix.
    pub user_agent: &'a str,
}

impl Ctx<'_> {
    pub fn target<'b>(&'b self, name: &'b str) -> Target<'b> {
        Target {
            group: self.r.group,
            resource: self.r.plural,
            name,
        }
    }
}

/// An object answer: protobuf when the client prefers it and the kind has a message, JSON otherwise.
pub fn json_response(code: u16, v: &Value) -> Response {
    if crate::protobuf::negotiated() {
        if let Some(body) = crate::protobuf::encode_object(v) {
            return Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, crate::protobuf::CONTENT_TYPE)
                .body(Body::from(body))
                .unwrap_or_default();
        }
    }
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_default()
}

fn content_typed(ct: &'static str, v: &Value) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_default()
}

pub fn router(server: Arc<ApiServer>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(server)
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-rudder",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64",
    })
}

fn query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn dispatch(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let authed = parts.extensions.get::<Authenticated>().is_some_and(|a| a.0);
    let hdr = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let accept = hdr(header::ACCEPT);
    let content_type = hdr(header::CONTENT_TYPE);
    let user_agent = hdr(header::USER_AGENT);
    // Open to anonymous clients, as upstream's system:public-info-viewer role allows.
    match path.as_str() {
        "/version" | "/version/" => return json_response(200, &version()),
        p if ["/healthz", "/livez", "/readyz"]
            .iter()
            .any(|h| p == *h || p.starts_with(&format!("{h}/"))) =>
        {
            let ok = !p.starts_with("/readyz") || server.ready();
            let (code, text) = if ok {
                (200, "ok")
            } else {
                (503, "[-]watch-cache not ready\nreadyz check failed")
            };
            return (http::StatusCode::from_u16(code).unwrap_or_default(), text).into_response();
        }
        _ => {}
    }
    if !authed {
        return ApiError::new(401, "Unauthorized", "Unauthorized").into_response();
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(413, "RequestEntityTooLarge", "the request body is too large").into_response(),
    };
    let q = query(parts.uri.query());
    let started = std::time::Instant::now();
    let req = RequestInfo {
        method: &method,
        path: &path,
        accept: &accept,
        content_type: &content_type,
        user_agent: &user_agent,
    };
    let protobuf = negotiate::prefers_protobuf(&accept);
    let resp = crate::protobuf::with_output(protobuf, async {
        match route(&server, &req, &q, &body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    })
    .await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// The parts of a request's head that routing and the handlers look at.
struct RequestInfo<'a> {
    method: &'a Method,
    path: &'a str,
    accept: &'a str,
    content_type: &'a str,
    user_agent: &'a str,
}

async fn route(
    server: &ApiServer,
    req: &RequestInfo<'_>,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    let RequestInfo {
        method,
        path,
        accept,
        content_type,
        user_agent,
    } = *req;
    let trimmed = path.trim_end_matches('/');
    let aggregated = discovery::wants_aggregated(accept);
    match trimmed {
        "/api" if aggregated => {
            return Ok(content_typed(
                discovery::AGGREGATED_CONTENT_TYPE,
                &discovery::aggregated(true),
            ))
        }
        "/apis" if aggregated => {
            return Ok(content_typed(
                discovery::AGGREGATED_CONTENT_TYPE,
                &discovery::aggregated(false),
            ))
        }
        "/api" => return Ok(json_response(200, &discovery::api_versions())),
        "/apis" => return Ok(json_response(200, &discovery::api_group_list())),
        "/openapi/v3" => return Ok(json_response(200, &openapi::root())),
        _ => {}
    }
    if trimmed == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && *method == Method::POST {
        // No authorization yet: every authenticated user may do everything, which is what this answers.
        // The body (often protobuf) is not read back; the spec is not echoed.
        let review = json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {}, "spec": {}, "status": {"allowed": true, "reason": "no authorization configured"}});
        return Ok(json_response(201, &review));
    }
    if let Some(gv) = trimmed.strip_prefix("/openapi/v3/") {
        if !negotiate::accepts_openapi_json(accept) {
            // kube-openapi answers a bare 406 when no range takes JSON (we do not serve its protobuf form).
            return Ok(http::StatusCode::NOT_ACCEPTABLE.into_response());
        }
        return openapi::group_version(gv)
            .map(|d| json_response(200, &d))
            .ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let (group, version, rest) = if let Some(rest) = trimmed.strip_prefix("/api/v1") {
        ("", "v1", rest)
    } else if let Some(rest) = trimmed.strip_prefix("/apis/") {
        let mut it = rest.splitn(3, '/');
        let g = it.next().unwrap_or_default();
        let Some(v) = it.next() else {
            // `/apis/<group>`: the APIGroup.
            let list = discovery::api_group_list();
            let group = list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == g))
                .cloned()
                .ok_or_else(not_found)?;
            let mut group = group;
            if let Some(o) = group.as_object_mut() {
                o.insert("kind".into(), json!("APIGroup"));
                o.insert("apiVersion".into(), json!("v1"));
            }
            return Ok(json_response(200, &group));
        };
        let rest = it
            .next()
            .map(|r| &trimmed[trimmed.len() - r.len() - 1..])
            .unwrap_or_default();
        (g, v, rest)
    } else {
        return Err(not_found());
    };
    if rest.is_empty() {
        return discovery::api_resource_list(group, version)
            .map(|l| json_response(200, &l))
            .ok_or_else(not_found);
    }
    let mut segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let mut watch_path = false;
    if segs.first() == Some(&"watch") {
        watch_path = true;
        segs.remove(0);
    }
    let (namespace, rest): (Option<String>, &[&str]) =
        if segs.len() >= 3 && segs[0] == "namespaces" && find(group, version, segs[2]).is_some() {
            (Some(segs[1].to_string()), &segs[2..])
        } else {
            (None, &segs[..])
        };
    let r = find(group, version, rest[0]).ok_or_else(not_found)?;
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).copied();
    let sub_ok = |s: &str| match s {
        "scale" => r.has_scale(),
        "status" => r.has_status_subresource(),
        "finalize" => r.builtin_kind() == Some("Namespace"),
        s if pods::is_pod_subresource(s) => r.builtin_kind() == Some("Pod"),
        _ => false,
    };
    if rest.len() > 3 || sub.is_some_and(|s| !sub_ok(s)) {
        return Err(not_found());
    }
    // A namespaced resource addressed cluster-wide (list/watch across namespaces) has no namespace.
    let namespace = if r.namespaced { namespace } else { None };
    if r.namespaced && namespace.is_none() && (name.is_some() || *method == Method::POST) {
        return Err(not_found());
    }
    let is_watch = watch_path || q.get("watch").is_some_and(|w| w == "true" || w == "1");
    // Object endpoints negotiate their answer first (406 when nothing acceptable is served); a pod's
    // streaming and action subresources answer in their own forms.
    let table = if sub.is_some_and(pods::is_pod_subresource) {
        accept.contains("as=Table")
    } else {
        let endpoint = negotiate::Endpoint {
            protobuf: r.custom.is_none() || sub == Some("scale"),
        };
        negotiate::negotiate(accept, endpoint, is_watch)?.table
    };
    let ctx = Ctx {
        server,
        r,
        namespace,
        table,
        subresource: sub.filter(|s| *s != "scale"),
        user_agent,
    };
    let body_owned;
    let body = if crate::protobuf::is_protobuf(content_type)
        && (matches!(*method, Method::POST | Method::PUT) || (*method == Method::DELETE && !body.is_empty()))
    {
        if r.custom.is_some() {
            // Custom resources have no protobuf messages (upstream serves them JSON and YAML only).
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
            ));
        }
        // The kind the endpoint decodes into, for upstream's wording of decode errors.
        let into = match (sub, method) {
            (Some("eviction"), _) => "Eviction",
            (Some("binding"), _) => "Binding",
            (Some("scale"), _) => "Scale",
            (_, &Method::DELETE) => "DeleteOptions",
            _ => r.kind,
        };
        body_owned = crate::protobuf::request_to_json(body, into)?;
        &body_owned[..]
    } else {
        body
    };
    if let (Some(s), Some(n)) = (sub, name.as_deref()) {
        if pods::is_pod_subresource(s) {
            return pods::handle(&ctx, method, n, s, q, body).await;
        }
    }
    if let (Some("scale"), Some(n)) = (sub, name.as_deref()) {
        return scale::handle(&ctx, method, n, q, content_type, body).await;
    }
    match (method.clone(), name) {
        (Method::GET, Some(n)) if is_watch => {
            let mut q = q.clone();
            q.insert("fieldSelector".into(), format!("metadata.name={n}"));
            read::watch(&ctx, &q).await
        }
        (Method::GET, Some(n)) => read::get(&ctx, &n).await,
        (Method::GET, None) if is_watch => read::watch(&ctx, q).await,
        (Method::GET, None) => read::list(&ctx, q).await,
        (Method::POST, None) => write::create(&ctx, q, body, "Update").await,
        (Method::PUT, Some(n)) => write::update(&ctx, &n, q, body).await,
        (Method::PATCH, Some(n)) if sub != Some("finalize") => write::patch(&ctx, &n, q, content_type, body).await,
        (Method::DELETE, Some(n)) if sub.is_none() => delete::delete(&ctx, &n, q, body).await,
        (Method::DELETE, None) if !r.namespaced || ctx.namespace.is_some() => {
            delete::delete_collection(&ctx, q, body).await
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )),
    }
}
