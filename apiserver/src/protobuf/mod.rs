//! `application/vnd.kubernetes.protobuf`: request bodies are decoded to JSON (and take the JSON path from
//! there), and objects, lists, errors and watch events are answered in protobuf to clients that prefer it.
//!
//! Wire form (upstream's protobuf serializer): the magic `k8s\0`, then a runtime.Unknown whose typeMeta
//! names the apiVersion and kind and whose `raw` holds the object's message. Watch streams are frames of a
//! 4-byte big-endian length and a metav1.WatchEvent (no magic), whose object is a RawExtension holding the
//! enveloped object. The messages come from a table generated at build time (`schema.rs`); the codec
//! between their wire form and JSON is `codec.rs`.

mod codec;
mod omit;
mod schema;
#[cfg(test)]
mod tests;

use prost::encoding::{decode_key, skip_field, DecodeContext, WireType};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use codec::{take, DecodeError, Decoder, Encoder};
use schema::Schema;

pub use omit::drop_go_omitted;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
pub(crate) const MAGIC: &[u8] = b"k8s\x00";

tokio::task_local! {
    /// Set for the duration of a request whose Accept header prefers protobuf.
    static PROTOBUF_OUT: bool;
}

/// Runs `f` (a request's handling) answering in protobuf where the kind has a message.
pub async fn with_output<F: std::future::Future>(protobuf: bool, f: F) -> F::Output {
    PROTOBUF_OUT.scope(protobuf, f).await
}

/// Whether the request being handled asked for protobuf answers.
pub fn negotiated() -> bool {
    PROTOBUF_OUT.try_with(|p| *p).unwrap_or(false)
}

/// Whether `content_type` is the protobuf media type (parameters aside).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The kind (apiVersion, kind) the envelope named, when it could be read.
type Gvk = Option<(String, String)>;

/// Reads the envelope: the object's JSON form (with its apiVersion and kind) and the kind it named.
pub(crate) fn decode_envelope(
    schema: &Schema,
    data: &[u8],
    depth: u32,
) -> Result<(Value, (String, String)), (Gvk, DecodeError)> {
    let invalid = |m: String| (None, DecodeError::Plain(m));
    if data.is_empty() {
        return Err((None, DecodeError::Plain("empty data".into())));
    }
    let Some(mut buf) = data.strip_prefix(MAGIC) else {
        // Go's `%v` of a byte slice: `[107 56 115 0]`.
        let prefix: Vec<String> = MAGIC.iter().map(u8::to_string).collect();
        return Err(invalid(format!(
            "provided data does not appear to be a protobuf message, expected prefix [{}]",
            prefix.join(" ")
        )));
    };
    if buf.is_empty() {
        return Err(invalid("empty body".into()));
    }
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), &[][..], String::new());
    let wire = |e: DecodeError| (None, e);
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).map_err(|e| wire(e.into()))?;
        match (tag, wt) {
            (1, WireType::LengthDelimited) => {
                let mut tm = take(&mut buf).map_err(wire)?;
                while !tm.is_empty() {
                    let (t, w) = decode_key(&mut tm).map_err(|e| wire(e.into()))?;
                    match (t, w) {
                        (1 | 2, WireType::LengthDelimited) => {
                            let s = String::from_utf8(take(&mut tm).map_err(wire)?.to_vec())
                                .map_err(|_| invalid("typeMeta is not valid UTF-8".into()))?;
                            if t == 1 {
                                api_version = s;
                            } else {
                                kind = s;
                            }
                        }
                        _ => skip_field(w, t, &mut tm, DecodeContext::default()).map_err(|e| wire(e.into()))?,
                    }
                }
            }
            (2, WireType::LengthDelimited) => raw = take(&mut buf).map_err(wire)?,
            (3, WireType::LengthDelimited) => {
                encoding = String::from_utf8_lossy(take(&mut buf).map_err(wire)?).into_owned();
            }
            // contentType: what `raw` holds; a protobuf message whatever it says.
            (4, WireType::LengthDelimited) => {
                take(&mut buf).map_err(wire)?;
            }
            (1..=4, w) => {
                return Err(wire(DecodeError::WireType {
                    got: w as u8,
                    field: format!("Unknown tag {tag}"),
                }))
            }
            (t, w) => skip_field(w, t, &mut buf, DecodeContext::default()).map_err(|e| wire(e.into()))?,
        }
    }
    let gvk = Some((api_version.clone(), kind.clone()));
    if kind.is_empty() {
        return Err((
            gvk,
            DecodeError::Plain("Object 'Kind' is missing in the protobuf body".into()),
        ));
    }
    if !encoding.is_empty() {
        return Err((
            gvk,
            DecodeError::Plain(format!("unsupported content encoding {encoding:?}")),
        ));
    }
    let Some(msg) = schema.kind(&api_version, &kind) else {
        return Err((
            gvk,
            DecodeError::Plain(format!("no kind {kind:?} is registered for version {api_version:?}")),
        ));
    };
    let mut obj = Decoder { schema }
        .message(msg, raw, depth)
        .map_err(|e| (gvk.clone(), e))?;
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(api_version.clone()));
        o.insert("kind".into(), Value::String(kind.clone()));
    }
    Ok((obj, (api_version, kind)))
}

/// Upstream's summary of an undecodable body in its error: up to 30 bytes, hex unless it looks like JSON.
fn summarize(data: &[u8]) -> String {
    const MAX: usize = 30;
    let more = if data.len() > MAX { " ..." } else { "" };
    let head = &data[..data.len().min(MAX)];
    match head.first() {
        None => "<empty>".into(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(head)),
        Some(_) => format!("{}{more}", head.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// Decodes a protobuf request body meant to be an `into` (the kind the endpoint takes) into its JSON
/// bytes; errors are upstream's 400s.
pub fn request_to_json(body: &[u8], into: &str) -> ApiResult<Vec<u8>> {
    match decode_envelope(Schema::get(), body, 0) {
        Ok((obj, _)) => serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string())),
        Err((Some((api_version, kind)), e)) if !kind.is_empty() => {
            let version = api_version.rsplit('/').next().unwrap_or_default();
            Err(ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {into}: {e}"
            )))
        }
        Err((_, e)) => Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {into}): {e} ({})",
            summarize(body)
        ))),
    }
}

/// The protobuf message body of a JSON object (no envelope), when its kind has a message.
fn encode_message(v: &Value) -> Option<(Vec<u8>, &str, &str)> {
    let api_version = v.get("apiVersion")?.as_str()?;
    let kind = v.get("kind")?.as_str()?;
    let schema = Schema::get();
    let msg = schema.kind(api_version, kind)?;
    let mut body = Vec::new();
    Encoder { schema }.message(msg, v, &mut body, 0);
    Some((body, api_version, kind))
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, out);
    prost::encoding::encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// The enveloped protobuf form of a JSON object, or `None` when its kind has no message (custom
/// resources, tables, discovery documents without a kind).
pub fn encode_object(v: &Value) -> Option<Vec<u8>> {
    let (body, api_version, kind) = encode_message(v)?;
    let mut type_meta = Vec::new();
    put_bytes(1, api_version.as_bytes(), &mut type_meta);
    put_bytes(2, kind.as_bytes(), &mut type_meta);
    let mut out = Vec::with_capacity(body.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(1, &type_meta, &mut out);
    put_bytes(2, &body, &mut out);
    // contentEncoding and contentType: empty, as Go sends them.
    put_bytes(3, b"", &mut out);
    put_bytes(4, b"", &mut out);
    Some(out)
}

/// One watch stream frame: the length, then a WatchEvent whose object holds the enveloped object.
pub fn watch_frame(event_type: &str, obj: &Value) -> Option<Vec<u8>> {
    let object = encode_object(obj)?;
    let mut raw_ext = Vec::with_capacity(object.len() + 8);
    put_bytes(1, &object, &mut raw_ext);
    let mut event = Vec::with_capacity(raw_ext.len() + 16);
    put_bytes(1, event_type.as_bytes(), &mut event);
    put_bytes(2, &raw_ext, &mut event);
    let len = u32::try_from(event.len()).ok()?;
    let mut frame = Vec::with_capacity(event.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend(event);
    Some(frame)
}
