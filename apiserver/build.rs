//! Generates the protobuf schema table (`$OUT_DIR/k8s_pb_schema.rs`) that `src/protobuf` encodes and decodes
//! `application/vnd.kubernetes.protobuf` with: every message of the `k8s-pb` crate (prost types generated
//! from upstream's `generated.proto` files), with each field's tag, scalar kind, label and message type, and
//! which proto package serves each apiVersion.
//!
//! Why at build time: the facts come from the `k8s-pb` version pinned in Cargo.lock (a dev-dependency, so
//! cargo has its source), nothing upstream-derived is committed, and a k8s-pb bump regenerates the table.
//! The source is found with `cargo metadata` (which also works for vendored or patched sources), or at
//! `RUDDER_K8S_PB_SRC` (the crate's `src` directory) when set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use syn::punctuated::Punctuated;
use syn::{Expr, ImplItem, Item, Lit, Meta, Token, Type};

/// A scalar or message type, as in the table.
#[derive(Clone, Debug)]
enum Ty {
    Str,
    Bool,
    I32,
    I64,
    F64,
    Bytes,
    /// A message, by full proto name (resolved to an index when the table is written).
    Msg(String),
}

#[derive(Clone, Copy, Debug)]
enum Label {
    Optional,
    Repeated {
        packed: bool,
    },
    /// `map<string, ty>`: every map in the Kubernetes protos has string keys.
    Map,
}

#[derive(Debug)]
struct Field {
    name: String,
    tag: u32,
    ty: Ty,
    label: Label,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUDDER_K8S_PB_SRC");
    let src = k8s_pb_src();
    let mut messages: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut packages: BTreeMap<String, String> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    files.sort();
    for file in files {
        let rel = file
            .parent()
            .and_then(|p| p.strip_prefix(&src).ok())
            .map(Path::to_path_buf);
        let Some(rel) = rel else { continue };
        let module: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.is_empty() {
            continue; // lib.rs: traits only
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
        let package = format!("k8s.io.{}", module.join("."));
        for item in parsed.items {
            match item {
                Item::Struct(s) if is_message(&s.attrs) => {
                    let mut fields = Vec::new();
                    if let syn::Fields::Named(named) = &s.fields {
                        for f in &named.named {
                            let Some(ident) = &f.ident else { continue };
                            let name = ident.to_string().trim_start_matches("r#").to_string();
                            if let Some(field) = field(&name, &f.attrs, &f.ty, &module) {
                                fields.push(field);
                            }
                        }
                    }
                    fields.sort_by_key(|f| f.tag);
                    messages.insert(format!("{package}.{}", s.ident), fields);
                }
                Item::Impl(i) => {
                    let is_resource = i
                        .trait_
                        .as_ref()
                        .and_then(|(_, p, _)| p.segments.last())
                        .is_some_and(|s| s.ident == "Resource");
                    if !is_resource {
                        continue;
                    }
                    for it in &i.items {
                        if let ImplItem::Const(c) = it {
                            if c.ident == "API_VERSION" {
                                if let Some(av) = str_lit(&c.expr) {
                                    let prev = packages.insert(av.clone(), package.clone());
                                    if prev.as_ref().is_some_and(|p| *p != package) {
                                        panic!("apiVersion {av} is served by two proto packages");
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        messages.contains_key("k8s.io.api.apps.v1.Deployment"),
        "no messages found under {}",
        src.display()
    );
    // Kinds are looked up case-insensitively (prost renamed `CSIDriver` to `CsiDriver`): names must stay unique.
    let mut lower = std::collections::BTreeSet::new();
    for n in messages.keys() {
        assert!(
            lower.insert(n.to_ascii_lowercase()),
            "{n} differs from another message only in case"
        );
    }
    let index: BTreeMap<&str, usize> = messages.keys().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut out = String::new();
    out.push_str("// Generated by apiserver/build.rs from the k8s-pb crate's source; do not edit.\n\n");
    out.push_str("pub(super) static MESSAGES: &[RawMessage] = &[\n");
    for (name, fields) in &messages {
        let _ = writeln!(out, "    RawMessage {{ name: {name:?}, fields: &[");
        for f in fields {
            let ty = match &f.ty {
                Ty::Str => "Ty::Str".to_string(),
                Ty::Bool => "Ty::Bool".to_string(),
                Ty::I32 => "Ty::I32".to_string(),
                Ty::I64 => "Ty::I64".to_string(),
                Ty::F64 => "Ty::F64".to_string(),
                Ty::Bytes => "Ty::Bytes".to_string(),
                Ty::Msg(m) => {
                    let i = index
                        .get(m.as_str())
                        .unwrap_or_else(|| panic!("{name}.{}: unknown message {m}", f.name));
                    format!("Ty::Msg({i})")
                }
            };
            let label = match f.label {
                Label::Optional => "Label::Optional".to_string(),
                Label::Repeated { packed } => format!("Label::Repeated {{ packed: {packed} }}"),
                Label::Map => "Label::Map".to_string(),
            };
            let _ = writeln!(
                out,
                "        RawField {{ name: {:?}, tag: {}, ty: {ty}, label: {label} }},",
                f.name, f.tag
            );
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n/// apiVersion -> the proto package of its kinds.\n");
    out.push_str("pub(super) static PACKAGES: &[(&str, &str)] = &[\n");
    for (av, pkg) in &packages {
        let _ = writeln!(out, "    ({av:?}, {pkg:?}),");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("k8s_pb_schema.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

/// The `src` directory of the k8s-pb crate cargo resolved for this workspace.
fn k8s_pb_src() -> PathBuf {
    if let Ok(p) = std::env::var("RUDDER_K8S_PB_SRC") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // Offline first (no network, no lock on the index); then letting cargo download what is missing.
    for offline in [true, false] {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--locked", "--manifest-path"])
            .arg(&manifest);
        if offline {
            cmd.arg("--offline");
        }
        let Ok(out) = cmd.output() else { continue };
        if !out.status.success() {
            continue;
        }
        let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        let found = meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "k8s-pb")
            .and_then(|p| p["manifest_path"].as_str())
            .and_then(|m| Path::new(m).parent().map(|d| d.join("src")));
        if let Some(dir) = found.filter(|d| d.is_dir()) {
            return dir;
        }
    }
    panic!("cannot find the k8s-pb crate's source (cargo metadata); set RUDDER_K8S_PB_SRC to its src directory");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.file_name().is_some_and(|n| n == "mod.rs") {
            out.push(p);
        }
    }
}

fn is_message(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated)
                .is_ok_and(|ps| {
                    ps.iter()
                        .any(|p| p.segments.last().is_some_and(|s| s.ident == "Message"))
                })
    })
}

fn str_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Some(s.value()),
            _ => None,
        },
        _ => None,
    }
}

fn scalar(s: &str) -> Option<Ty> {
    Some(match s {
        "string" => Ty::Str,
        "bool" => Ty::Bool,
        "int32" => Ty::I32,
        "int64" => Ty::I64,
        "double" => Ty::F64,
        "bytes" => Ty::Bytes,
        _ => return None,
    })
}

/// One field from its `#[prost(...)]` attribute and Rust type.
fn field(name: &str, attrs: &[syn::Attribute], ty: &Type, module: &[String]) -> Option<Field> {
    let attr = attrs.iter().find(|a| a.path().is_ident("prost"))?;
    let metas = attr
        .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        .unwrap_or_else(|e| panic!("field {name}: {e}"));
    let (mut kind, mut tag, mut label) = (None, None, Label::Optional);
    let mut packed = true;
    let mut repeated = false;
    for m in &metas {
        match m {
            Meta::Path(p) => {
                let id = p.get_ident().map(|i| i.to_string()).unwrap_or_default();
                match id.as_str() {
                    "optional" | "required" | "boxed" => {}
                    "repeated" => repeated = true,
                    "message" => kind = Some(Ty::Msg(message_type(ty, module))),
                    other => match scalar(other) {
                        Some(t) => kind = Some(t),
                        None => panic!("field {name}: unsupported prost attribute {other}"),
                    },
                }
            }
            Meta::NameValue(nv) => {
                let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
                let val = str_lit(&nv.value).unwrap_or_default();
                match key.as_str() {
                    "tag" => tag = val.parse().ok(),
                    "bytes" => kind = Some(Ty::Bytes),
                    "packed" => packed = val == "true",
                    "btree_map" | "hash_map" | "map" => {
                        let (k, v) = val.split_once(',').unwrap_or_else(|| panic!("field {name}: map {val}"));
                        assert_eq!(k.trim(), "string", "field {name}: only string map keys are supported");
                        label = Label::Map;
                        kind = Some(match v.trim() {
                            "message" => Ty::Msg(message_type(ty, module)),
                            s => scalar(s.split('(').next().unwrap_or(s))
                                .unwrap_or_else(|| panic!("field {name}: map value {s}")),
                        });
                    }
                    other => panic!("field {name}: unsupported prost attribute {other}"),
                }
            }
            Meta::List(l) => panic!("field {name}: unsupported prost attribute {:?}", l.path.get_ident()),
        }
    }
    if repeated {
        // prost packs repeated numbers unless told `packed = "false"` (what proto2 fields get).
        label = Label::Repeated {
            packed: packed && !matches!(kind, Some(Ty::Str | Ty::Bytes | Ty::Msg(_))),
        };
    }
    Some(Field {
        name: name.to_string(),
        tag: tag.unwrap_or_else(|| panic!("field {name}: no tag")),
        ty: kind.unwrap_or_else(|| panic!("field {name}: no type")),
        label,
    })
}

/// The full proto name of the message inside `Option<..>`, `Vec<..>` or a map's value type.
fn message_type(ty: &Type, module: &[String]) -> String {
    let Type::Path(tp) = ty else {
        panic!("unexpected field type")
    };
    let last = tp.path.segments.last().expect("type path");
    let name = last.ident.to_string();
    if matches!(name.as_str(), "Option" | "Vec" | "Box" | "BTreeMap" | "HashMap") {
        if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
            let inner = args.args.iter().rev().find_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            if let Some(t) = inner {
                return message_type(t, module);
            }
        }
        panic!("unexpected generic field type {name}");
    }
    let segs: Vec<String> = tp.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let supers = segs.iter().take_while(|s| *s == "super").count();
    let mut path: Vec<String> = module[..module.len() - supers].to_vec();
    path.extend(segs[supers..].iter().cloned());
    let (ty_name, pkg) = path.split_last().expect("type name");
    format!("k8s.io.{}.{ty_name}", pkg.join("."))
}
