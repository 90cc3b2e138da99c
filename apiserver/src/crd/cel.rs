//! CEL validation rules of CRD schemas (`x-kubernetes-validations`), evaluated with the `cel-interpreter`
//! crate: each rule runs with `self` bound to the value at its schema node. Transition rules (those that
//! read `oldSelf`) run on updates only, where the stored object has a value at the same object path
//! (not inside lists); upstream's cost limits are not applied.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel_interpreter::objects::{Key, Map as CelMap};
use cel_interpreter::{Context, Program, Value as Cel};
use parking_lot::Mutex;
use serde_json::Value;

/// Compiled rules by source: a CRD's rules run on every write of its resources.
fn program(rule: &str) -> Result<Arc<Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().get(rule) {
        return Ok(p.clone());
    }
    // The rule is client input: a parser bug must cost the client an error, not the request task.
    let compiled =
        std::panic::catch_unwind(|| Program::compile(rule)).map_err(|_| "the rule could not be parsed".to_string())?;
    let p = Arc::new(compiled.map_err(|e| e.to_string())?);
    let mut c = cache.lock();
    // Bounded by the distinct rules of the CRDs seen; a runaway set starts over rather than grows.
    if c.len() > 4096 {
        c.clear();
    }
    c.insert(rule.to_string(), p.clone());
    Ok(p)
}

/// A JSON value as CEL sees a Kubernetes object: integers are int, other numbers double.
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => Cel::Map(CelMap {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

fn rules(s: &Value) -> impl Iterator<Item = (usize, &Value)> {
    s.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn text<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Rules of one schema node that do not compile, as CRD validation causes under `path`.
pub fn compile_errors(s: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for (i, r) in rules(s) {
        let rule = text(r, "rule");
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        if rule.trim().is_empty() {
            out.push((field, "Required value".to_string()));
        } else if let Err(e) = program(rule) {
            out.push((field, format!("Invalid value: {rule:?}: compilation failed: {e}")));
        }
    }
}

/// Where a failed rule is reported: its `fieldPath` (`.spec.replicas`, relative to the node) when set.
fn field_of(path: &str, r: &Value) -> String {
    let rel = text(r, "fieldPath").trim_start_matches('.');
    match (path.is_empty(), rel.is_empty()) {
        (true, true) => "<nil>".to_string(),
        (true, false) => rel.to_string(),
        (false, true) => path.to_string(),
        (false, false) => format!("{path}.{rel}"),
    }
}

/// The node's rules evaluated against `v` (at `path`, of schema type `ty`), as validation causes.
/// Transition rules are left to [`check_transition`].
pub fn check(v: &Value, s: &Value, path: &str, ty: &str) -> Vec<(String, String)> {
    evaluate(v, None, s, path, ty)
}

/// The node's transition rules (those reading `oldSelf`), for an update whose stored value at this node
/// is `old`.
pub fn check_transition(v: &Value, old: &Value, s: &Value, path: &str, ty: &str) -> Vec<(String, String)> {
    evaluate(v, Some(old), s, path, ty)
}

fn evaluate(v: &Value, old: Option<&Value>, s: &Value, path: &str, ty: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut self_value = None;
    for (_, r) in rules(s) {
        let rule = text(r, "rule");
        let Ok(p) = program(rule) else { continue }; // refused when the CRD was written
        if p.references().has_variable("oldSelf") != old.is_some() {
            continue;
        }
        let mut ctx = Context::default();
        ctx.add_variable_from_value("self", self_value.get_or_insert_with(|| to_cel(v)).clone());
        if let Some(old) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(old));
        }
        let why = match p.execute(&ctx) {
            Ok(Cel::Bool(true)) => continue,
            Ok(Cel::Bool(false)) => match text(r, "message") {
                "" => format!("failed rule: {rule}"),
                m => m.to_string(),
            },
            Ok(other) => format!("rule did not evaluate to a bool: {other:?}"),
            Err(e) => e.to_string(),
        };
        let message = match text(r, "reason") {
            "FieldValueForbidden" => format!("Forbidden: {why}"),
            "FieldValueRequired" => format!("Required value: {why}"),
            _ => format!("Invalid value: {ty:?}: {why}"),
        };
        out.push((field_of(path, r), message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_pass_fail_and_report_as_upstream() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas", "message": "min must not exceed max"},
            {"rule": "has(self.name) && self.name.startsWith('app-')"},
            {"rule": "self.maxReplicas < 10", "fieldPath": ".maxReplicas", "reason": "FieldValueForbidden"},
            {"rule": "self.minReplicas == oldSelf.minReplicas"}]});
        let ok = json!({"minReplicas": 1, "maxReplicas": 3, "name": "app-x"});
        assert!(check(&ok, &s, "spec", "object").is_empty());
        let bad = json!({"minReplicas": 50, "maxReplicas": 30});
        assert_eq!(
            check(&bad, &s, "spec", "object"),
            vec![
                (
                    "spec".to_string(),
                    "Invalid value: \"object\": min must not exceed max".to_string()
                ),
                (
                    "spec".to_string(),
                    "Invalid value: \"object\": failed rule: has(self.name) && self.name.startsWith('app-')"
                        .to_string()
                ),
                (
                    "spec.maxReplicas".to_string(),
                    "Forbidden: failed rule: self.maxReplicas < 10".to_string()
                ),
            ]
        );
        let root = json!({"x-kubernetes-validations": [{"rule": "self.size() < 2"}]});
        assert_eq!(
            check(&json!({"a": 1, "b": 2}), &root, "", "object"),
            vec![(
                "<nil>".to_string(),
                "Invalid value: \"object\": failed rule: self.size() < 2".to_string()
            )]
        );
    }

    #[test]
    fn transition_rules_see_the_old_value() {
        let s = json!({"type": "string", "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "Value is immutable"},
            {"rule": "self.size() > 0"}]});
        assert!(check(&json!("a"), &s, "spec.name", "string").is_empty());
        assert!(check_transition(&json!("a"), &json!("a"), &s, "spec.name", "string").is_empty());
        assert_eq!(
            check_transition(&json!("b"), &json!("a"), &s, "spec.name", "string"),
            vec![(
                "spec.name".to_string(),
                "Invalid value: \"string\": Value is immutable".to_string()
            )]
        );
    }

    #[test]
    fn rules_that_do_not_compile_are_refused() {
        let s = json!({"x-kubernetes-validations": [{"rule": "self.x =="}, {"rule": ""}, {"rule": "self.x > 1"}]});
        let mut out = Vec::new();
        compile_errors(&s, "p", &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].0, "p.x-kubernetes-validations[0].rule");
        assert!(
            out[0].1.starts_with("Invalid value: \"self.x ==\": compilation failed"),
            "{out:?}"
        );
        assert_eq!(
            out[1],
            (
                "p.x-kubernetes-validations[1].rule".to_string(),
                "Required value".to_string()
            )
        );
        for junk in [
            "(((",
            "self.",
            "'open",
            "1 +",
            "a[",
            "}{",
            "self.x ? 1",
            "\u{0}",
            "has(",
            "[1,2",
            "é€😀",
            "self.x.all(",
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
        ] {
            let mut out = Vec::new();
            compile_errors(&json!({"x-kubernetes-validations": [{"rule": junk}]}), "p", &mut out);
            let _ = check(
                &json!({"x": 1}),
                &json!({"x-kubernetes-validations": [{"rule": junk}]}),
                "p",
                "object",
            );
        }
    }
}
