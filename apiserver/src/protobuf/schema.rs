//! The protobuf schema table: every Kubernetes message (generated into `$OUT_DIR` by build.rs from the
//! k8s-pb crate), with JSON names resolved at first use against the OpenAPI schemas of k8s-openapi.
//!
//! prost snake-cased upstream's proto field names (which are the JSON names: `hostIP` became `host_ip`,
//! `podIPs` became `pod_i_ps`), so a field's JSON name is the property of the type's OpenAPI schema that
//! is equal to it ignoring case and punctuation (which also matches `$ref` and `x-kubernetes-*`). Fields
//! the schemas do not know (types we do not describe, fields newer than Kubernetes 1.32) fall back to
//! lowerCamelCase.

use std::collections::HashMap;
use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bool,
    I32,
    I64,
    F64,
    Bytes,
    /// Index into the message table.
    Msg(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Label {
    Optional,
    Repeated {
        packed: bool,
    },
    /// `map<string, ty>`.
    Map,
}

pub(crate) struct RawField {
    pub name: &'static str,
    pub tag: u32,
    pub ty: Ty,
    pub label: Label,
}

pub(crate) struct RawMessage {
    pub name: &'static str,
    pub fields: &'static [RawField],
}

include!(concat!(env!("OUT_DIR"), "/k8s_pb_schema.rs"));

/// Messages whose JSON form is not an object of their fields (their Go types marshal themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// metav1.Time: RFC 3339 seconds.
    Time,
    /// metav1.MicroTime: RFC 3339 with microseconds.
    MicroTime,
    /// metav1.Duration: a Go duration string.
    Duration,
    /// intstr.IntOrString: a number or a string.
    IntOrString,
    /// resource.Quantity: its string form.
    Quantity,
    /// runtime.RawExtension, metav1.FieldsV1, apiextensions JSON: raw bytes holding JSON.
    RawJson,
    /// A Go slice type (`ExtraValue`, `Verbs`): the JSON array of its `items`.
    Slice,
    /// JSONSchemaPropsOrBool: `true`/`false` or a schema.
    PropsOrBool,
    /// JSONSchemaPropsOrArray: a schema or an array of schemas.
    PropsOrArray,
    /// JSONSchemaPropsOrStringArray: a schema or an array of strings.
    PropsOrStringArray,
}

pub(crate) struct Field {
    pub raw: &'static RawField,
    pub json: String,
    /// The JSON name came from an OpenAPI schema (not the lowerCamelCase fallback).
    pub from_schema: bool,
    /// An embedded Go struct: its fields sit in the parent's JSON object.
    pub inline: bool,
    /// A non-pointer scalar with `omitempty` in the Go struct (`go_omitempty.txt`): its zero is absent
    /// from what upstream serves.
    pub go_omitempty: bool,
}

pub(crate) struct Message {
    pub name: &'static str,
    pub special: Special,
    /// `go_omitempty.txt` has this message's Go struct, so `Field::go_omitempty` is known.
    pub go_known: bool,
    /// In tag order.
    pub fields: Vec<Field>,
}

impl Message {
    pub(crate) fn by_tag(&self, tag: u32) -> Option<&Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.raw.tag)
            .ok()
            .map(|i| &self.fields[i])
    }
}

pub(crate) struct Schema {
    pub messages: Vec<Message>,
    /// Lowercased: kinds keep upstream's acronyms (`CSIDriver`), prost's names do not (`CsiDriver`).
    by_name: HashMap<String, usize>,
    packages: HashMap<&'static str, &'static str>,
}

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Kinds of meta.k8s.io that travel under any group's apiVersion (`DeleteOptions` in a DELETE body, the
/// `Status` of an error).
const META_KINDS: &[&str] = &[
    "Status",
    "DeleteOptions",
    "WatchEvent",
    "APIVersions",
    "APIGroupList",
    "APIGroup",
    "APIResourceList",
];

/// By prost's type name (prost renamed `JSONSchemaProps` to `JsonSchemaProps`).
fn special(name: &str) -> Special {
    let Some((pkg, ty)) = name.rsplit_once('.') else {
        return Special::None;
    };
    let apiext = pkg.starts_with("k8s.io.apiextensions_apiserver.");
    match (pkg, ty) {
        (META, "Time") => Special::Time,
        (META, "MicroTime") => Special::MicroTime,
        (META, "Duration") => Special::Duration,
        (META, "FieldsV1") => Special::RawJson,
        (META, "Verbs") => Special::Slice,
        ("k8s.io.apimachinery.pkg.util.intstr", "IntOrString") => Special::IntOrString,
        ("k8s.io.apimachinery.pkg.api.resource", "Quantity") => Special::Quantity,
        ("k8s.io.apimachinery.pkg.runtime", "RawExtension") => Special::RawJson,
        (_, "Json") if apiext => Special::RawJson,
        (_, "JsonSchemaPropsOrBool") if apiext => Special::PropsOrBool,
        (_, "JsonSchemaPropsOrArray") if apiext => Special::PropsOrArray,
        (_, "JsonSchemaPropsOrStringArray") if apiext => Special::PropsOrStringArray,
        (_, "ExtraValue") => Special::Slice,
        _ => Special::None,
    }
}

/// `io.k8s.api.apps.v1.Deployment` for `k8s.io.api.apps.v1.Deployment` (OpenAPI spells packages with
/// dashes where proto has underscores).
pub(crate) fn openapi_name(proto: &str) -> String {
    let rest = proto.strip_prefix("k8s.io.").unwrap_or(proto);
    let rest = rest
        .replacen("apiextensions_apiserver.", "apiextensions-apiserver.", 1)
        .replacen("kube_aggregator.", "kube-aggregator.", 1);
    format!("io.k8s.{rest}")
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Schemas of the kinds served outside the OpenAPI catalog (subresources, reviews, meta lists).
fn extra_schemas() -> Map<String, Value> {
    use k8s_openapi::api::{authentication, authorization, autoscaling, core, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut g = SchemaSettings::openapi3().into_generator();
    g.subschema_for::<authorization::v1::SelfSubjectAccessReview>();
    g.subschema_for::<authorization::v1::SubjectAccessReview>();
    g.subschema_for::<authentication::v1::TokenRequest>();
    g.subschema_for::<authentication::v1::TokenReview>();
    g.subschema_for::<autoscaling::v1::Scale>();
    g.subschema_for::<policy::v1::Eviction>();
    g.subschema_for::<core::v1::Binding>();
    g.subschema_for::<meta::APIGroupList>();
    g.subschema_for::<meta::APIResourceList>();
    g.subschema_for::<meta::APIVersions>();
    g.take_definitions(true)
}

/// Per Go struct, by lowercased message name (prost lost upstream's acronyms): the JSON names of its
/// non-pointer scalar fields with `omitempty`. Generated by `scripts/gen_go_omitempty.py`.
fn go_omitempty() -> HashMap<String, Vec<&'static str>> {
    include_str!("go_omitempty.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            Some((name.to_ascii_lowercase(), words.collect()))
        })
        .collect()
}

impl Schema {
    fn build() -> Schema {
        let catalog = crate::openapi::catalog();
        let go = go_omitempty();
        let extra = extra_schemas();
        // Case-insensitively: prost's type names lost upstream's acronyms (`TcpSocketAction`).
        let by_lower: HashMap<String, &Value> = catalog
            .schemas()
            .chain(extra.iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        // Pass 1: each message's own OpenAPI properties.
        let mut props: Vec<Vec<String>> = MESSAGES
            .iter()
            .map(|raw| {
                by_lower
                    .get(&openapi_name(raw.name).to_ascii_lowercase())
                    .and_then(|s| s.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default()
            })
            .collect();
        // Pass 2: embedded Go structs (`Probe` inlines `ProbeHandler`, `Volume` its `VolumeSource`) are a
        // message field in proto but inline in JSON: a field the parent's schema does not name, whose
        // message's fields it does. The child then takes its JSON names from the parent's schema.
        let mut inline = vec![Vec::new(); MESSAGES.len()];
        for (i, raw) in MESSAGES.iter().enumerate() {
            if props[i].is_empty() {
                continue;
            }
            let own: Vec<String> = props[i].iter().map(|p| norm(p)).collect();
            for f in raw.fields {
                let (Ty::Msg(c), Label::Optional) = (f.ty, f.label) else {
                    continue;
                };
                let child = &MESSAGES[c];
                if own.contains(&norm(f.name)) || child.fields.is_empty() {
                    continue;
                }
                let hits = child.fields.iter().filter(|cf| own.contains(&norm(cf.name))).count();
                if hits * 2 >= child.fields.len() {
                    inline[i].push(f.tag);
                    if props[c].is_empty() {
                        props[c] = props[i].clone();
                    }
                }
            }
        }
        let mut messages = Vec::with_capacity(MESSAGES.len());
        for (i, raw) in MESSAGES.iter().enumerate() {
            let go_listed = go.get(&raw.name.to_ascii_lowercase());
            let omits = |json: &str| go_listed.is_some_and(|l| l.contains(&json));
            let fields: Vec<Field> = raw
                .fields
                .iter()
                .map(|f| {
                    let n = norm(f.name);
                    let inline = inline[i].contains(&f.tag);
                    match props[i].iter().find(|p| norm(p) == n) {
                        Some(p) => Field {
                            raw: f,
                            json: p.clone(),
                            from_schema: true,
                            inline,
                            go_omitempty: omits(p),
                        },
                        None => {
                            let json = lower_camel(f.name);
                            Field {
                                raw: f,
                                go_omitempty: omits(&json),
                                json,
                                from_schema: inline,
                                inline,
                            }
                        }
                    }
                })
                .collect();
            messages.push(Message {
                name: raw.name,
                special: special(raw.name),
                go_known: go_listed.is_some(),
                fields,
            });
        }
        let by_name = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.to_ascii_lowercase(), i))
            .collect();
        Schema {
            messages,
            by_name,
            packages: PACKAGES.iter().copied().collect(),
        }
    }

    pub(crate) fn get() -> &'static Schema {
        static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
            let started = std::time::Instant::now();
            let s = Schema::build();
            let guessed = s
                .messages
                .iter()
                .flat_map(|m| &m.fields)
                .filter(|f| !f.from_schema)
                .count();
            tracing::debug!(elapsed = ?started.elapsed(), messages = s.messages.len(), guessed_json_names = guessed,
                "built the protobuf schema table");
            s
        });
        &SCHEMA
    }

    pub(crate) fn message(&self, proto_name: &str) -> Option<usize> {
        self.by_name.get(&proto_name.to_ascii_lowercase()).copied()
    }

    /// The message of `kind` in `api_version` (lists included), or the meta.k8s.io kind of that name.
    pub(crate) fn kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        if let Some(pkg) = self.packages.get(api_version) {
            if let Some(i) = self.message(&format!("{pkg}.{kind}")) {
                return Some(i);
            }
        }
        if META_KINDS.contains(&kind) {
            return self.message(&format!("{META}.{kind}"));
        }
        None
    }
}
