//! The Go round trip of a built-in object's JSON: kube-apiserver decodes every write into its Go struct and
//! stores what that encodes to, so a non-pointer scalar with `omitempty` holding its zero (`paused: false`,
//! `hostNetwork: false`, `minReadySeconds: 0`) is absent from what it stores and serves, whatever the
//! client sent. Pointers keep their zero (`replicas: 0`, a PVC's `storageClassName: ""`), as do fields
//! without `omitempty`. The walk follows the protobuf schema table (messages, JSON names, nested types);
//! which fields drop comes from `go_omitempty.txt`.

use serde_json::Value;

use super::codec::is_zero;
use super::schema::{Label, Schema, Special, Ty};

/// Deeper than any Kubernetes object; bounds the recursion on hostile input.
const MAX_DEPTH: u32 = 100;

/// Drops the zero values a Go round trip drops from `obj`, an object of a kind with a protobuf message
/// (others are left alone: custom resources have no Go struct).
pub fn drop_go_omitted(obj: &mut Value) {
    let (Some(api_version), Some(kind)) = (
        obj.get("apiVersion").and_then(Value::as_str),
        obj.get("kind").and_then(Value::as_str),
    ) else {
        return;
    };
    let schema = Schema::get();
    if let Some(msg) = schema.kind(api_version, kind) {
        walk(schema, msg, obj, 0);
    }
}

fn walk(schema: &Schema, msg: usize, v: &mut Value, depth: u32) {
    if depth > MAX_DEPTH {
        return;
    }
    let m = &schema.messages[msg];
    let field_ty = |tag: u32| m.by_tag(tag).map(|f| f.raw.ty);
    match m.special {
        Special::None => {}
        // A CRD schema's `additionalProperties` and `items` hold schemas inside their special forms.
        Special::PropsOrBool | Special::PropsOrArray | Special::PropsOrStringArray => {
            let (one, many) = (
                field_ty(if m.special == Special::PropsOrBool { 2 } else { 1 }),
                field_ty(2),
            );
            match v {
                Value::Object(_) => {
                    if let Some(Ty::Msg(c)) = one {
                        walk(schema, c, v, depth + 1);
                    }
                }
                Value::Array(items) if m.special == Special::PropsOrArray => {
                    if let Some(Ty::Msg(c)) = many {
                        for it in items {
                            walk(schema, c, it, depth + 1);
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        // Times, quantities, raw JSON: not objects of fields.
        _ => return,
    }
    for f in &m.fields {
        if f.inline {
            // An embedded struct's fields sit in this same object.
            if let Ty::Msg(c) = f.raw.ty {
                walk(schema, c, v, depth + 1);
            }
            continue;
        }
        let Some(o) = v.as_object_mut() else { return };
        let Some(fv) = o.get_mut(&f.json) else { continue };
        match (f.raw.label, f.raw.ty) {
            (Label::Optional, Ty::Msg(c)) => walk(schema, c, fv, depth + 1),
            (Label::Repeated { .. }, Ty::Msg(c)) => {
                for it in fv.as_array_mut().into_iter().flatten() {
                    walk(schema, c, it, depth + 1);
                }
            }
            (Label::Map, Ty::Msg(c)) => {
                for it in fv.as_object_mut().into_iter().flat_map(|e| e.values_mut()) {
                    walk(schema, c, it, depth + 1);
                }
            }
            // JSON null decodes to the Go zero value too.
            (Label::Optional, ty) if m.go_known && f.go_omitempty && (fv.is_null() || is_zero(ty, fv)) => {
                o.remove(&f.json);
            }
            _ => {}
        }
    }
}
