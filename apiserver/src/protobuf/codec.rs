//! The table-driven codec: protobuf wire bytes of a Kubernetes message to its JSON form (`decode`) and
//! back (`encode`), over `serde_json::Value`, with prost's wire primitives.
//!
//! Decoding follows what upstream's JSON of the decoded Go object holds: Go clients send every non-pointer
//! field, and a zero one is dropped where the Go struct has `omitempty` on a non-pointer scalar (`omitted`);
//! pointers keep their zero (`replicas: 0` means something), as do messages (`emptyDir: {}`). A zero
//! metav1.Time is dropped (upstream's JSON has `null`).

use base64::Engine;
use bytes::Buf;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, skip_field, DecodeContext, WireType};
use serde_json::{Map, Number, Value};

use super::schema::{Field, Label, Message, Schema, Special, Ty};
use super::MAGIC;

/// Deeper than any Kubernetes object; bounds the recursion on hostile input (prost's limit too).
const MAX_DEPTH: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Wire(#[from] prost::DecodeError),
    #[error("proto: wrong wireType = {got} for field {field}")]
    WireType { got: u8, field: String },
    #[error("proto: {0}")]
    Invalid(String),
    /// Envelope-level errors, worded as upstream's serializer words them.
    #[error("{0}")]
    Plain(String),
}

fn invalid(m: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(m.into())
}

/// Reads a length-delimited payload.
pub(crate) fn take<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| invalid("length overflow"))?;
    if len > buf.len() {
        return Err(invalid("unexpected EOF"));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn wire_type_of(ty: Ty) -> WireType {
    match ty {
        Ty::Str | Ty::Bytes | Ty::Msg(_) => WireType::LengthDelimited,
        Ty::Bool | Ty::I32 | Ty::I64 => WireType::Varint,
        Ty::F64 => WireType::SixtyFourBit,
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) struct Decoder<'s> {
    pub schema: &'s Schema,
}

impl Decoder<'_> {
    /// The JSON form of message `msg` from its wire bytes.
    pub(crate) fn message(&self, msg: usize, buf: &[u8], depth: u32) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(invalid("exceeded maximum nesting depth"));
        }
        let m = &self.schema.messages[msg];
        let obj = self.fields(m, buf, depth)?;
        Ok(match m.special {
            Special::None => Value::Object(obj),
            s => self.special(m, s, buf, obj, depth)?,
        })
    }

    fn fields(&self, m: &Message, mut buf: &[u8], depth: u32) -> Result<Map<String, Value>, DecodeError> {
        let mut out = Map::new();
        while buf.has_remaining() {
            let (tag, wt) = decode_key(&mut buf)?;
            let Some(f) = m.by_tag(tag) else {
                skip_field(wt, tag, &mut buf, DecodeContext::default())?;
                continue;
            };
            let ty = f.raw.ty;
            match f.raw.label {
                Label::Optional if f.inline => {
                    if let Value::Object(o) = self.single(m, &f.json, ty, wt, &mut buf, depth)? {
                        out.extend(o);
                    }
                }
                Label::Optional => {
                    let v = self.single(m, &f.json, ty, wt, &mut buf, depth)?;
                    if !omitted(m, f, &v) {
                        out.insert(f.json.clone(), v);
                    } else {
                        out.remove(&f.json);
                    }
                }
                Label::Repeated { .. } => {
                    let numeric = matches!(ty, Ty::Bool | Ty::I32 | Ty::I64 | Ty::F64);
                    let mut items = Vec::new();
                    if numeric && wt == WireType::LengthDelimited {
                        // Packed numbers are accepted whatever the declaration, as protobuf requires.
                        let mut packed = take(&mut buf)?;
                        while packed.has_remaining() {
                            items.push(self.single(m, &f.json, ty, wire_type_of(ty), &mut packed, depth)?);
                        }
                    } else {
                        items.push(self.single(m, &f.json, ty, wt, &mut buf, depth)?);
                    }
                    let entry = out.entry(f.json.clone()).or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(a) = entry {
                        a.extend(items);
                    }
                }
                Label::Map => {
                    if wt != WireType::LengthDelimited {
                        return Err(wrong(wt, m, &f.json));
                    }
                    let mut entry = take(&mut buf)?;
                    let (mut key, mut value) = (String::new(), None);
                    while entry.has_remaining() {
                        let (t, w) = decode_key(&mut entry)?;
                        match t {
                            1 => {
                                if let Value::String(k) = self.single(m, &f.json, Ty::Str, w, &mut entry, depth)? {
                                    key = k;
                                }
                            }
                            2 => value = Some(self.single(m, &f.json, ty, w, &mut entry, depth)?),
                            _ => skip_field(w, t, &mut entry, DecodeContext::default())?,
                        }
                    }
                    let value = match value {
                        Some(v) => v,
                        None => self.zero(ty, depth)?,
                    };
                    let map = out.entry(f.json.clone()).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(o) = map {
                        o.insert(key, value);
                    }
                }
            }
        }
        Ok(out)
    }

    /// A map value the entry left out: the type's zero value.
    fn zero(&self, ty: Ty, depth: u32) -> Result<Value, DecodeError> {
        Ok(match ty {
            Ty::Str | Ty::Bytes => Value::String(String::new()),
            Ty::Bool => Value::Bool(false),
            Ty::I32 | Ty::I64 => Value::from(0),
            Ty::F64 => Value::from(0.0),
            Ty::Msg(i) => self.message(i, &[], depth + 1)?,
        })
    }

    fn single(
        &self,
        m: &Message,
        field: &str,
        ty: Ty,
        wt: WireType,
        buf: &mut &[u8],
        depth: u32,
    ) -> Result<Value, DecodeError> {
        if wt != wire_type_of(ty) {
            return Err(wrong(wt, m, field));
        }
        Ok(match ty {
            Ty::Str => {
                let raw = take(buf)?;
                let s = std::str::from_utf8(raw)
                    .map_err(|_| invalid(format!("field {}.{field}: string is not valid UTF-8", short(m))))?;
                Value::String(s.to_string())
            }
            Ty::Bytes => Value::String(b64().encode(take(buf)?)),
            Ty::Bool => Value::Bool(decode_varint(buf)? != 0),
            // Truncation is protobuf's int32 rule (negative numbers travel sign-extended).
            Ty::I32 => Value::from(decode_varint(buf)? as i64 as i32),
            Ty::I64 => Value::from(decode_varint(buf)? as i64),
            Ty::F64 => {
                if buf.remaining() < 8 {
                    return Err(invalid("unexpected EOF"));
                }
                Number::from_f64(buf.get_f64_le()).map_or(Value::Null, Value::Number)
            }
            Ty::Msg(i) => {
                let raw = take(buf)?;
                self.message(i, raw, depth + 1)?
            }
        })
    }

    fn special(
        &self,
        m: &Message,
        s: Special,
        buf: &[u8],
        obj: Map<String, Value>,
        depth: u32,
    ) -> Result<Value, DecodeError> {
        let by_tag = |tag: u32| m.by_tag(tag).and_then(|f| obj.get(&f.json));
        let int = |tag: u32| by_tag(tag).and_then(Value::as_i64).unwrap_or(0);
        Ok(match s {
            Special::None => Value::Object(obj),
            Special::Time | Special::MicroTime => {
                // Go sends a zero Time as an empty message.
                if buf.is_empty() {
                    return Ok(Value::Null);
                }
                let nanos = if s == Special::Time { 0 } else { int(2) };
                Value::String(format_time(int(1), nanos, s == Special::MicroTime))
            }
            Special::Duration => Value::String(format_duration(int(1))),
            Special::IntOrString => {
                if int(1) == 1 {
                    by_tag(3).cloned().unwrap_or_else(|| Value::String(String::new()))
                } else {
                    Value::from(int(2))
                }
            }
            Special::Quantity => match by_tag(1).and_then(Value::as_str) {
                Some(q) if !q.is_empty() => Value::String(q.to_string()),
                _ => Value::String("0".into()),
            },
            Special::RawJson => {
                let raw = match by_tag(1).and_then(Value::as_str) {
                    Some(b) => b64().decode(b).map_err(|e| invalid(e.to_string()))?,
                    None => return Ok(Value::Null),
                };
                if raw.is_empty() {
                    return Ok(Value::Null);
                }
                if raw.starts_with(MAGIC) {
                    return super::decode_envelope(self.schema, &raw, depth + 1)
                        .map(|(v, _)| v)
                        .map_err(|(_, e)| e);
                }
                serde_json::from_slice(&raw).map_err(|e| invalid(format!("embedded JSON: {e}")))?
            }
            Special::Slice => by_tag(1).cloned().unwrap_or_else(|| Value::Array(Vec::new())),
            Special::PropsOrBool => match by_tag(2) {
                Some(schema) => schema.clone(),
                None => Value::Bool(by_tag(1).and_then(Value::as_bool).unwrap_or(false)),
            },
            Special::PropsOrArray | Special::PropsOrStringArray => match by_tag(2) {
                Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
                _ => by_tag(1).cloned().unwrap_or(Value::Null),
            },
        })
    }
}

/// Whether a decoded singular value is absent from the JSON of upstream's Go object. Go clients send every
/// non-pointer field. Where the table knows the message's Go struct, a zero drops only from a non-pointer
/// scalar with `omitempty` (`paused: false`; `replicas: 0` and `storageClassName: ""` are pointers and
/// stay, as does a non-omitempty `name: ""`); elsewhere every empty string drops. Empty byte strings and
/// a zero metav1.Time (`null`) always drop.
fn omitted(m: &Message, f: &Field, v: &Value) -> bool {
    let ty = f.raw.ty;
    match v {
        Value::Null => true,
        Value::String(s) if ty == Ty::Bytes => s.is_empty(),
        _ if m.go_known && m.special == Special::None => f.go_omitempty && is_zero(ty, v),
        Value::String(s) => s.is_empty() && ty == Ty::Str,
        _ => false,
    }
}

/// A Go scalar's zero value (`""`, `false`, `0`) as JSON of the field's protobuf type.
pub(crate) fn is_zero(ty: Ty, v: &Value) -> bool {
    match (ty, v) {
        (Ty::Str, Value::String(s)) => s.is_empty(),
        (Ty::Bool, Value::Bool(b)) => !b,
        (Ty::I32 | Ty::I64 | Ty::F64, Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn short(m: &Message) -> &str {
    m.name.rsplit('.').next().unwrap_or(m.name)
}

fn wrong(wt: WireType, m: &Message, field: &str) -> DecodeError {
    DecodeError::WireType {
        got: wt as u8,
        field: format!("{}.{field}", short(m)),
    }
}

/// RFC 3339 in UTC, as metav1.Time (seconds) and MicroTime (six fraction digits) marshal.
pub(crate) fn format_time(secs: i64, nanos: i64, micro: bool) -> String {
    let nanos = u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) if micro => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => String::new(),
    }
}

fn parse_time(s: &str) -> Option<(i64, i64)> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some((t.timestamp(), i64::from(t.timestamp_subsec_nanos())))
}

/// Go's `time.Duration.String()`: `1h0m0s`, `1m30s`, `1.5s`, `300ms`, `0s`.
pub(crate) fn format_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let u = d.unsigned_abs();
    let frac = |v: u64, div: u64, width: usize| {
        let (int, rest) = (v / div, v % div);
        if rest == 0 {
            int.to_string()
        } else {
            let f = format!("{rest:0width$}");
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    let mut out = String::new();
    if d < 0 {
        out.push('-');
    }
    const S: u64 = 1_000_000_000;
    if u < 1_000 {
        out.push_str(&format!("{u}ns"));
    } else if u < 1_000_000 {
        out.push_str(&format!("{}µs", frac(u, 1_000, 3)));
    } else if u < S {
        out.push_str(&format!("{}ms", frac(u, 1_000_000, 6)));
    } else {
        let (h, rem) = (u / (3600 * S), u % (3600 * S));
        let (m, ns) = (rem / (60 * S), rem % (60 * S));
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(ns, S, 9)));
    }
    out
}

/// Go's `time.ParseDuration`: a sign, then numbers with units (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`).
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, fracs) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && fracs.is_empty() {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut v = int.checked_mul(scale)?;
        let mut div = 1i128;
        for c in fracs.chars() {
            div = div.checked_mul(10)?;
            let digit = i128::from(c.to_digit(10)?);
            v = v.checked_add(digit * scale / div)?;
        }
        total = total.checked_add(v)?;
        rest = tail;
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok()
}

pub(crate) struct Encoder<'s> {
    pub schema: &'s Schema,
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

impl Encoder<'_> {
    /// Appends the wire form of `v` as message `msg` (its fields, no length prefix).
    pub(crate) fn message(&self, msg: usize, v: &Value, out: &mut Vec<u8>, depth: u32) {
        if depth > MAX_DEPTH {
            return;
        }
        let m = &self.schema.messages[msg];
        match m.special {
            Special::None => {}
            s => return self.special(m, s, v, out, depth),
        }
        let Value::Object(obj) = v else {
            tracing::debug!(message = m.name, "not an object; encoded empty");
            return;
        };
        for f in &m.fields {
            if f.inline {
                // The embedded struct reads its fields from this same object; Go always sends it.
                self.single(f.raw.tag, f.raw.ty, v, out, depth);
                continue;
            }
            let Some(jv) = obj.get(&f.json).filter(|v| !v.is_null()) else {
                continue;
            };
            let (tag, ty) = (f.raw.tag, f.raw.ty);
            match f.raw.label {
                Label::Optional => self.single(tag, ty, jv, out, depth),
                Label::Repeated { packed } => {
                    let Value::Array(items) = jv else { continue };
                    if packed && !items.is_empty() {
                        let mut body = Vec::new();
                        for it in items {
                            self.scalar_body(ty, it, &mut body);
                        }
                        put_bytes(tag, &body, out);
                    } else {
                        for it in items {
                            self.single(tag, ty, it, out, depth);
                        }
                    }
                }
                Label::Map => {
                    let Value::Object(entries) = jv else { continue };
                    for (k, val) in entries {
                        let mut entry = Vec::new();
                        put_bytes(1, k.as_bytes(), &mut entry);
                        self.single(2, ty, val, &mut entry, depth);
                        put_bytes(tag, &entry, out);
                    }
                }
            }
        }
    }

    /// A varint or fixed64 without its key (packed elements).
    fn scalar_body(&self, ty: Ty, v: &Value, out: &mut Vec<u8>) {
        match ty {
            Ty::F64 => out.extend_from_slice(&v.as_f64().unwrap_or(0.0).to_le_bytes()),
            Ty::Bool => encode_varint(u64::from(v.as_bool().unwrap_or(false)), out),
            _ => encode_varint(as_int(v).unwrap_or(0) as u64, out),
        }
    }

    fn single(&self, tag: u32, ty: Ty, v: &Value, out: &mut Vec<u8>, depth: u32) {
        match ty {
            Ty::Str => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return skipped(tag, v),
                };
                put_bytes(tag, s.as_bytes(), out);
            }
            Ty::Bytes => {
                let Some(b) = v.as_str().and_then(|s| {
                    b64()
                        .decode(s)
                        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
                        .ok()
                }) else {
                    return skipped(tag, v);
                };
                put_bytes(tag, &b, out);
            }
            Ty::Bool => match v.as_bool() {
                Some(b) => put_varint(tag, u64::from(b), out),
                None => skipped(tag, v),
            },
            Ty::I32 | Ty::I64 => match as_int(v) {
                Some(i) => {
                    // int32 travels sign-extended to 64 bits.
                    let i = if ty == Ty::I32 {
                        i64::from(i32::try_from(i).unwrap_or(i as i32))
                    } else {
                        i
                    };
                    put_varint(tag, i as u64, out);
                }
                None => skipped(tag, v),
            },
            Ty::F64 => match v.as_f64() {
                Some(f) => {
                    encode_key(tag, WireType::SixtyFourBit, out);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                None => skipped(tag, v),
            },
            Ty::Msg(i) => {
                if v.is_null() {
                    return;
                }
                let mut body = Vec::new();
                self.message(i, v, &mut body, depth + 1);
                put_bytes(tag, &body, out);
            }
        }
    }

    fn special(&self, m: &Message, s: Special, v: &Value, out: &mut Vec<u8>, depth: u32) {
        // Fields by tag; the layouts are fixed by upstream's protos.
        let field_ty = |tag: u32| m.by_tag(tag).map(|f| f.raw.ty);
        match s {
            Special::None => {}
            Special::Time | Special::MicroTime => {
                if let Some((secs, nanos)) = v.as_str().and_then(parse_time) {
                    put_varint(1, secs as u64, out);
                    put_varint(2, nanos as u64, out);
                }
            }
            Special::Duration => {
                if let Some(d) = v.as_str().and_then(parse_duration) {
                    put_varint(1, d as u64, out);
                }
            }
            Special::IntOrString => match v {
                Value::String(s) => {
                    put_varint(1, 1, out);
                    put_bytes(3, s.as_bytes(), out);
                }
                other => {
                    put_varint(1, 0, out);
                    put_varint(2, i64::from(as_int(other).unwrap_or(0) as i32) as u64, out);
                }
            },
            Special::Quantity => {
                let q = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return,
                };
                put_bytes(1, q.as_bytes(), out);
            }
            Special::RawJson => {
                if let Ok(raw) = serde_json::to_vec(v) {
                    put_bytes(1, &raw, out);
                }
            }
            Special::Slice => {
                for it in v.as_array().into_iter().flatten() {
                    self.single(1, Ty::Str, it, out, depth);
                }
            }
            Special::PropsOrBool => match (v, field_ty(2)) {
                (Value::Bool(b), _) => put_varint(1, u64::from(*b), out),
                (obj, Some(ty)) => {
                    put_varint(1, 1, out);
                    self.single(2, ty, obj, out, depth);
                }
                _ => {}
            },
            Special::PropsOrArray | Special::PropsOrStringArray => match (v, field_ty(1), field_ty(2)) {
                (Value::Array(items), _, Some(ty)) => {
                    for it in items {
                        self.single(2, ty, it, out, depth);
                    }
                }
                (obj, Some(ty), _) => self.single(1, ty, obj, out, depth),
                _ => {}
            },
        }
    }
}

fn skipped(tag: u32, v: &Value) {
    tracing::debug!(tag, value = %v, "value does not fit its protobuf field; left out");
}
