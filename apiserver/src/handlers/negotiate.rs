//! Accept negotiation of resource endpoints, as upstream's `negotiation.NegotiateOutputMediaType`: the
//! Accept ranges in order (q, then specificity), each against the media types the endpoint serves (JSON,
//! YAML, protobuf), the first acceptable one wins, and a request none is acceptable for is answered 406
//! before anything else happens. Custom resources have no protobuf form: a protobuf range is acceptable
//! for them only as a conversion (their protobuf serializer is there for PartialObjectMetadata), so
//! `Accept: application/vnd.kubernetes.protobuf` alone is a 406 while
//! `application/vnd.kubernetes.protobuf, application/json` (client-go's) is answered in JSON.
//!
//! Which of JSON and protobuf the answer is written in is `prefers_protobuf`, the same negotiation
//! without the endpoint's restrictions (it also encodes errors, as upstream's error path does).

use crate::error::ApiError;

/// Upstream's serializers in their order (`runtime.SerializerInfo`): the list its 406 names.
const MEDIA: &[Media] = &[Media::Json, Media::Yaml, Media::Protobuf];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Media {
    Json,
    Yaml,
    Protobuf,
}

impl Media {
    fn subtype(self) -> &'static str {
        match self {
            Media::Json => "json",
            Media::Yaml => "yaml",
            Media::Protobuf => "vnd.kubernetes.protobuf",
        }
    }

    /// YAML has no stream serializer upstream: no watch in YAML.
    fn streams(self) -> bool {
        self != Media::Yaml
    }
}

/// What an endpoint can answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint {
    /// Its objects have a protobuf form (built-in kinds and the `scale` subresource; not custom resources).
    pub protobuf: bool,
}

/// The negotiated answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub media: Media,
    /// A `meta.k8s.io` Table conversion was asked for (`as=Table;g=meta.k8s.io;v=v1`).
    pub table: bool,
}

/// One range of an Accept header, as goautoneg parses it.
struct Clause {
    ty: String,
    subtype: String,
    q: f32,
    params: Vec<(String, String)>,
}

/// The ranges of `accept`, best first: higher q, then a concrete type before `*`, then a concrete subtype
/// before `*`, otherwise in header order (goautoneg's order; its sort is stable for headers this short).
fn clauses(accept: &str) -> Vec<Clause> {
    let mut out = Vec::new();
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let range = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
        let (ty, subtype) = match range.split_once('/') {
            Some((t, s)) => (t.trim().to_string(), s.trim().to_string()),
            None if range == "*" => ("*".to_string(), "*".to_string()),
            None => continue,
        };
        let mut clause = Clause {
            ty,
            subtype,
            q: 1.0,
            params: Vec::new(),
        };
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.trim());
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause.params.push((k.to_string(), v.to_string()));
            }
        }
        // A range the client refuses (q=0) is no offer.
        if clause.q > 0.0 {
            out.push(clause);
        }
    }
    let rank = |c: &Clause| (u8::from(c.ty != "*"), u8::from(c.subtype != "*"));
    out.sort_by(|a, b| b.q.total_cmp(&a.q).then_with(|| rank(b).cmp(&rank(a))));
    out
}

/// Whether `media` may answer `clause` on `endpoint` (upstream's `acceptMediaTypeOptions` with the
/// request scope's restrictions), and whether it asks for a Table.
fn acceptable(clause: &Clause, media: Media, endpoint: Endpoint) -> Option<bool> {
    let matches = (clause.ty == "application" && (clause.subtype == media.subtype() || clause.subtype == "*"))
        || (clause.ty == "*" && clause.subtype == "*");
    if !matches {
        return None;
    }
    let (mut kind, mut group, mut version, mut convert) = ("", "", "", false);
    for (k, v) in &clause.params {
        match k.as_str() {
            "as" => (kind, convert) = (v, true),
            "g" => (group, convert) = (v, true),
            "v" => (version, convert) = (v, true),
            "stream" if !v.is_empty() && (!media.streams() || v != "watch") => return None,
            // The server version of meta.k8s.io: only v1.
            "sv" if !v.is_empty() && v != "v1" => return None,
            _ => {}
        }
    }
    if !convert {
        return (media != Media::Protobuf || endpoint.protobuf).then_some(false);
    }
    if group != "meta.k8s.io" || !matches!(version, "v1" | "v1beta1") {
        return None;
    }
    match kind {
        // Tables have no protobuf form in 1.32.
        "Table" => (media != Media::Protobuf).then_some(true),
        "PartialObjectMetadata" | "PartialObjectMetadataList" => Some(false),
        _ => None,
    }
}

fn first(clauses: &[Clause], endpoint: Endpoint) -> Option<Negotiated> {
    clauses.iter().find_map(|c| {
        MEDIA
            .iter()
            .find_map(|&media| acceptable(c, media, endpoint).map(|table| Negotiated { media, table }))
    })
}

/// Whether an answer is written in protobuf when its kind has a protobuf form (errors too): the first
/// acceptable range decides. A protobuf range asking for a conversion does not count: we write
/// conversions (Tables, partial metadata) in JSON.
pub(crate) fn prefers_protobuf(accept: &str) -> bool {
    let plain: Vec<Clause> = clauses(accept)
        .into_iter()
        .filter(|c| !(c.subtype == Media::Protobuf.subtype() && c.params.iter().any(|(k, _)| k == "as")))
        .collect();
    first(&plain, Endpoint { protobuf: true }).is_some_and(|n| n.media == Media::Protobuf)
}

/// The 406 upstream answers, naming the media types of the serializers (`stream` for a watch).
fn not_acceptable(stream: bool) -> ApiError {
    let types: Vec<String> = MEDIA
        .iter()
        .filter(|m| !stream || m.streams())
        .map(|m| {
            let t = format!("application/{}", m.subtype());
            if stream {
                format!("{t};stream=watch")
            } else {
                t
            }
        })
        .collect();
    ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: {}", types.join(", ")),
    )
}

/// Negotiates the answer of a request to `endpoint`; a watch must also find a streaming media type.
/// No Accept header means JSON.
pub(crate) fn negotiate(accept: &str, endpoint: Endpoint, watch: bool) -> Result<Negotiated, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Negotiated {
            media: Media::Json,
            table: false,
        });
    }
    let clauses = clauses(accept);
    let chosen = first(&clauses, endpoint).ok_or_else(|| not_acceptable(false))?;
    // Upstream's watch negotiates again for a stream serializer, taking the first acceptable range too:
    // `application/yaml, application/json` is no watch.
    if watch && !chosen.media.streams() {
        return Err(not_acceptable(true));
    }
    Ok(chosen)
}

/// `/openapi/v3/<group-version>` (kube-openapi's handler): JSON, or a bare 406 when no range takes it.
/// No Accept header is `*/*`. (Upstream also serves the OpenAPI protobuf form, which we do not.)
pub(crate) fn accepts_openapi_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    clauses(accept)
        .iter()
        .any(|c| (c.ty == "application" || c.ty == "*") && (c.subtype == "json" || c.subtype == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: Endpoint = Endpoint { protobuf: true };
    const CUSTOM: Endpoint = Endpoint { protobuf: false };
    const PB: &str = "application/vnd.kubernetes.protobuf";
    const OBJECT_406: &str = "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf";

    fn media(accept: &str, e: Endpoint, watch: bool) -> Result<Media, String> {
        negotiate(accept, e, watch).map(|n| n.media).map_err(|e| match e {
            ApiError::Status { code, message, .. } => format!("{code} {message}"),
            other => other.to_string(),
        })
    }

    #[test]
    fn custom_resources_refuse_protobuf_alone() {
        assert_eq!(media(PB, CUSTOM, false), Err(format!("406 {OBJECT_406}")));
        // Watches are negotiated as objects first, so the same list.
        assert_eq!(media(PB, CUSTOM, true), Err(format!("406 {OBJECT_406}")));
        assert_eq!(
            media(&format!("{PB}, application/json"), CUSTOM, false),
            Ok(Media::Json)
        );
        assert_eq!(media(&format!("{PB}, application/json"), CUSTOM, true), Ok(Media::Json));
        assert_eq!(
            media(&format!("{PB};stream=watch"), CUSTOM, true),
            Err(format!("406 {OBJECT_406}"))
        );
        assert_eq!(media(PB, BUILTIN, false), Ok(Media::Protobuf));
        assert_eq!(media(PB, BUILTIN, true), Ok(Media::Protobuf));
    }

    #[test]
    fn what_clients_send_is_acceptable() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        for e in [BUILTIN, CUSTOM] {
            assert_eq!(negotiate(kubectl_get, e, false).map(|n| n.table).ok(), Some(true));
            assert_eq!(negotiate(kubectl_get, e, true).map(|n| n.table).ok(), Some(true));
            for accept in [
                "",
                "*/*",
                "application/json",
                "application/json, */*",
                "application/*",
                "application/yaml",
            ] {
                assert!(negotiate(accept, e, false).is_ok_and(|n| !n.table), "{accept}");
            }
        }
        // A Table is JSON or YAML only; a later range can still answer.
        let pb_table = format!("{PB};as=Table;v=v1;g=meta.k8s.io");
        assert!(negotiate(&pb_table, BUILTIN, false).is_err());
        assert_eq!(
            negotiate(&format!("{pb_table},application/json"), BUILTIN, false).ok(),
            Some(Negotiated {
                media: Media::Json,
                table: false
            })
        );
        // Partial object metadata may be protobuf, for custom resources too.
        let pom = format!("{PB};as=PartialObjectMetadataList;g=meta.k8s.io;v=v1");
        assert_eq!(media(&pom, CUSTOM, false), Ok(Media::Protobuf));
        // An unknown conversion is not served.
        assert!(negotiate("application/json;as=Other;g=meta.k8s.io;v=v1", BUILTIN, false).is_err());
    }

    #[test]
    fn order_and_refusals() {
        assert_eq!(media("text/html", BUILTIN, false), Err(format!("406 {OBJECT_406}")));
        assert_eq!(
            media(&format!("application/json;q=0.5, {PB}"), BUILTIN, false),
            Ok(Media::Protobuf)
        );
        assert_eq!(
            media(&format!("{PB};q=0, application/json"), BUILTIN, false),
            Ok(Media::Json)
        );
        assert_eq!(media(&format!("*/*, {PB}"), BUILTIN, false), Ok(Media::Protobuf));
        // No YAML watch: the first acceptable range is YAML, so the stream negotiation fails.
        assert_eq!(
            media("application/yaml, application/json", BUILTIN, true),
            Err("406 only the following media types are accepted: application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch".into())
        );
        assert_eq!(
            media("application/yaml;stream=watch, application/json", BUILTIN, true),
            Ok(Media::Json)
        );
    }

    #[test]
    fn protobuf_preference() {
        assert!(prefers_protobuf("application/vnd.kubernetes.protobuf,application/json"));
        assert!(prefers_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(!prefers_protobuf(
            "application/json, application/vnd.kubernetes.protobuf"
        ));
        assert!(prefers_protobuf(
            "application/json;q=0.5, application/vnd.kubernetes.protobuf"
        ));
        assert!(!prefers_protobuf(
            "application/vnd.kubernetes.protobuf;q=0.2, application/json"
        ));
        assert!(!prefers_protobuf("*/*"));
        assert!(!prefers_protobuf(""));
        assert!(prefers_protobuf("*/*, application/vnd.kubernetes.protobuf"));
        assert!(!prefers_protobuf(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!prefers_protobuf(
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        ));
        assert!(prefers_protobuf("text/html, application/vnd.kubernetes.protobuf"));
    }

    #[test]
    fn openapi_takes_json_only() {
        assert!(accepts_openapi_json(""));
        assert!(accepts_openapi_json("application/json"));
        assert!(accepts_openapi_json("*/*"));
        assert!(accepts_openapi_json(&format!("{PB}, application/json")));
        assert!(!accepts_openapi_json(PB));
    }
}
