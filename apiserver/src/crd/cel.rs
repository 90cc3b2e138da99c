//! CEL validation rules of CRD schemas (`x-kubernetes-validations`), evaluated with the `cel-interpreter`
//! crate: each rule runs with `self` bound to the value at its schema node. A failed rule reports its
//! `messageExpression`'s string when that evaluates to a usable one (a single non-empty line; otherwise
//! upstream falls back and so do we), else its `message`, else `failed rule: <rule>`.
//!
//! Transition rules (those that read `oldSelf`) run on updates, with `oldSelf` bound to the stored value
//! that correlates with `self`: the same field of an object or map, and inside an
//! `x-kubernetes-list-type: map` list the stored item with the same key values (schema.rs decides
//! correlation); items of set, atomic and untyped lists never correlate, and a CRD putting `oldSelf` under
//! one is refused, as upstream. With `optionalOldSelf: true` a transition rule also runs where nothing
//! correlates (a new list item or field; a create, through `schema::validate_create_transitions`),
//! `oldSelf` being an optional there (`oldSelf.hasValue()`, `oldSelf.value()`, `oldSelf.orValue(x)`,
//! `optional.of(x)`, `optional.none()`). Upstream's type checking and cost limits are not applied.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use cel_interpreter::extractors::This;
use cel_interpreter::objects::{Key, Map as CelMap};
use cel_interpreter::{Context, ExecutionError, FunctionContext, Program, Value as Cel};
use parking_lot::Mutex;
use serde_json::Value;

/// Compiled expressions (rules and message expressions) by source: a CRD's rules run on every write of
/// its resources.
fn program(source: &str) -> Result<Arc<Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().get(source) {
        return Ok(p.clone());
    }
    // The expression is client input: a parser bug must cost the client an error, not the request task.
    let compiled = std::panic::catch_unwind(|| Program::compile(source))
        .map_err(|_| "the expression could not be parsed".to_string())?;
    let p = Arc::new(compiled.map_err(|e| e.to_string())?);
    let mut c = cache.lock();
    // Bounded by the distinct expressions of the CRDs seen; a runaway set starts over rather than grows.
    if c.len() > 4096 {
        c.clear();
    }
    c.insert(source.to_string(), p.clone());
    Ok(p)
}

/// Runs `p`; the interpreter's panics on odd calls (a macro without its arguments) become errors.
fn run(p: &Program, ctx: &Context) -> Result<Cel, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| p.execute(ctx))) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the expression could not be evaluated".to_string()),
    }
}

/// Whether `rule` reads `oldSelf` (a transition rule). The interpreter's reference list misses the middle
/// operand of `?:`, so the source is also scanned for the identifier outside string literals (a field
/// `x.oldSelf` does not count).
fn uses_old_self(rule: &str, p: &Program) -> bool {
    p.references().has_variable("oldSelf") || mentions_old_self(rule)
}

fn mentions_old_self(src: &str) -> bool {
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                let triple = b[i..].starts_with(&[q, q, q]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                    } else if triple && b[i..].starts_with(&[q, q, q]) {
                        i += 3;
                        break;
                    } else if !triple && b[i] == q {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if &src[start..i] == "oldSelf" && !src[..start].trim_end().ends_with('.') {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
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

/// An optional value (CEL's `optional_type`), which the interpreter lacks: a map whose only key is an int
/// no JSON object has, holding a list of zero or one value. Only `optionalOldSelf` rules see one.
const OPTIONAL: i64 = -0x6f70_7469_6f6e_616c;

fn optional(v: Option<Cel>) -> Cel {
    let list = Cel::List(Arc::new(v.into_iter().collect()));
    Cel::Map(CelMap {
        map: Arc::new(HashMap::from([(Key::Int(OPTIONAL), list)])),
    })
}

fn optional_value(ftx: &FunctionContext, v: &Cel) -> Result<Option<Cel>, ExecutionError> {
    if let Cel::Map(m) = v {
        if let (1, Some(Cel::List(l))) = (m.map.len(), m.map.get(&Key::Int(OPTIONAL))) {
            return Ok(l.first().cloned());
        }
    }
    Err(ftx.error("no such overload: not an optional value"))
}

fn has_value(ftx: &FunctionContext, This(this): This<Cel>) -> Result<bool, ExecutionError> {
    Ok(optional_value(ftx, &this)?.is_some())
}

fn value(ftx: &FunctionContext, This(this): This<Cel>) -> Result<Cel, ExecutionError> {
    optional_value(ftx, &this)?.ok_or_else(|| ftx.error("optional.none() dereference"))
}

fn or_value(ftx: &FunctionContext, This(this): This<Cel>, other: Cel) -> Result<Cel, ExecutionError> {
    Ok(optional_value(ftx, &this)?.unwrap_or(other))
}

/// `optional.of(x)` (the target is the `optional` namespace, bound to null).
fn optional_of(This(_): This<Cel>, v: Cel) -> Result<Cel, ExecutionError> {
    Ok(optional(Some(v)))
}

/// `optional.none()`.
fn optional_none(This(_): This<Cel>) -> Result<Cel, ExecutionError> {
    Ok(optional(None))
}

fn with_optionals(ctx: &mut Context) {
    ctx.add_variable_from_value("optional", Cel::Null);
    ctx.add_function("hasValue", has_value);
    ctx.add_function("value", value);
    ctx.add_function("orValue", or_value);
    ctx.add_function("of", optional_of);
    ctx.add_function("none", optional_none);
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

/// Rules of one schema node a CRD may not have, as CRD validation causes under `path`: rules and message
/// expressions that do not compile, `oldSelf` where nothing correlates (`uncorrelatable`: the path of the
/// enclosing list whose items do not correlate, if any), `optionalOldSelf` on a rule without `oldSelf`.
pub fn compile_errors(s: &Value, path: &str, uncorrelatable: Option<&str>, out: &mut Vec<(String, String)>) {
    for (i, r) in rules(s) {
        let at = |key: &str| format!("{path}.x-kubernetes-validations[{i}].{key}");
        let rule = text(r, "rule");
        let expr = text(r, "messageExpression");
        let no_rule = rule.trim().is_empty();
        if no_rule {
            out.push((at("rule"), "Required value: rule is not specified".to_string()));
        }
        if !expr.is_empty() && expr.trim().is_empty() {
            out.push((
                at("messageExpression"),
                "Required value: messageExpression must be non-empty if specified".to_string(),
            ));
        }
        if no_rule {
            continue;
        }
        let p = match program(rule) {
            Ok(p) => p,
            Err(e) => {
                out.push((at("rule"), format!("Invalid value: {rule:?}: compilation failed: {e}")));
                continue;
            }
        };
        // As upstream: the message expression is compiled once the rule is.
        if !expr.trim().is_empty() {
            if let Err(e) = program(expr) {
                out.push((
                    at("messageExpression"),
                    format!("Invalid value: {expr:?}: messageExpression compilation failed: {e}"),
                ));
            }
        }
        if uses_old_self(rule, &p) {
            if let Some(list) = uncorrelatable {
                out.push((
                    at("rule"),
                    format!(
                        "Invalid value: {rule:?}: oldSelf cannot be used on the uncorrelatable portion of the schema within {list}"
                    ),
                ));
            }
        } else if let Some(b) = r.get("optionalOldSelf").and_then(Value::as_bool) {
            out.push((
                at("optionalOldSelf"),
                format!("Invalid value: {b}: may not be set if oldSelf is not used in rule"),
            ));
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
    evaluate(v, Pass::Plain, s, path, ty)
}

/// The node's transition rules (those reading `oldSelf`) for a write where `old` is the stored value that
/// correlates with `v`: all of them when there is one, else those with `optionalOldSelf: true`.
pub fn check_transition(v: &Value, old: Option<&Value>, s: &Value, path: &str, ty: &str) -> Vec<(String, String)> {
    evaluate(v, Pass::Transition(old), s, path, ty)
}

/// Which of a node's rules an evaluation runs.
#[derive(Clone, Copy)]
enum Pass<'a> {
    /// Those without `oldSelf`.
    Plain,
    /// Those with `oldSelf`, against this correlated stored value (or none).
    Transition(Option<&'a Value>),
}

/// Upstream's bound on an evaluated message (`MaxEvaluatedMessageExpressionSizeBytes`).
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// The message of a failed rule from its `messageExpression`, or why there is none to use.
fn evaluated_message(expr: &str, ctx: &Context) -> Result<String, String> {
    let p = program(expr).map_err(|e| format!("messageExpression compilation failed: {e}"))?;
    let out = run(&p, ctx).map_err(|e| format!("messageExpression evaluation failed due to: {e}"))?;
    let Cel::String(s) = out else {
        return Err("messageExpression failed to convert to string".to_string());
    };
    let s = s.trim();
    if s.len() > MAX_MESSAGE_BYTES {
        Err(format!(
            "messageExpression beyond allowable length of {MAX_MESSAGE_BYTES}"
        ))
    } else if s.contains('\n') {
        Err("messageExpression should not contain line breaks".to_string())
    } else if s.is_empty() {
        Err("messageExpression should evaluate to a non-empty string".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// The rule's `message`, else `failed rule: <rule>` (upstream's `ruleMessageOrDefault`).
fn message_or_default(r: &Value) -> String {
    match text(r, "message").trim() {
        "" => format!("failed rule: {}", text(r, "rule").trim()),
        m => m.to_string(),
    }
}

/// How an evaluation error names the rule: by its message, else its source (upstream's `ruleErrorString`).
fn rule_error_string(r: &Value) -> &str {
    match text(r, "message").trim() {
        "" => text(r, "rule").trim(),
        m => m,
    }
}

fn evaluate(v: &Value, pass: Pass, s: &Value, path: &str, ty: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut self_value = None;
    for (_, r) in rules(s) {
        let rule = text(r, "rule");
        let Ok(p) = program(rule) else { continue }; // refused when the CRD was written
        let transition = uses_old_self(rule, &p);
        let optional_old = transition && r.get("optionalOldSelf").and_then(Value::as_bool) == Some(true);
        let old = match (pass, transition) {
            (Pass::Plain, false) => None,
            (Pass::Transition(Some(old)), true) => Some(to_cel(old)),
            (Pass::Transition(None), true) if optional_old => None,
            _ => continue,
        };
        let this = self_value.get_or_insert_with(|| to_cel(v)).clone();
        let bind = |old_self: Option<Cel>| {
            let mut ctx = Context::default();
            ctx.add_variable_from_value("self", this.clone());
            if let Some(o) = old_self {
                ctx.add_variable_from_value("oldSelf", o);
            }
            ctx
        };
        let result = if optional_old {
            let mut ctx = bind(Some(optional(old.clone())));
            with_optionals(&mut ctx);
            run(&p, &ctx)
        } else {
            run(&p, &bind(old.clone()))
        };
        let why = match result {
            Ok(Cel::Bool(true)) => continue,
            Ok(Cel::Bool(false)) => match text(r, "messageExpression").trim() {
                "" => message_or_default(r),
                // Upstream evaluates it with `oldSelf` a plain value, unset where there is none.
                expr => evaluated_message(expr, &bind(old)).unwrap_or_else(|e| {
                    tracing::debug!(message_expression = expr, error = %e, "messageExpression evaluation failed");
                    message_or_default(r)
                }),
            },
            Ok(other) => format!("rule did not evaluate to a bool: {other:?}"),
            Err(e) => format!("{e} evaluating rule: {}", rule_error_string(r)),
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
        assert!(check_transition(&json!("a"), Some(&json!("a")), &s, "spec.name", "string").is_empty());
        // Nothing correlates (a create, a new list item): not evaluated.
        assert!(check_transition(&json!("b"), None, &s, "spec.name", "string").is_empty());
        assert_eq!(
            check_transition(&json!("b"), Some(&json!("a")), &s, "spec.name", "string"),
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
        compile_errors(&s, "p", None, &mut out);
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
                "Required value: rule is not specified".to_string()
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
            compile_errors(
                &json!({"x-kubernetes-validations": [{"rule": junk}]}),
                "p",
                None,
                &mut out,
            );
            compile_errors(
                &json!({"x-kubernetes-validations": [{"rule": "true", "messageExpression": junk}]}),
                "p",
                None,
                &mut out,
            );
            let _ = check(
                &json!({"x": 1}),
                &json!({"x-kubernetes-validations": [{"rule": junk}]}),
                "p",
                "object",
            );
        }
    }

    fn failure(v: &Value, rule: Value) -> String {
        let s = json!({"type": "object", "x-kubernetes-validations": [rule]});
        let out = check(v, &s, "spec", "object");
        assert_eq!(out.len(), 1, "{out:?}");
        out[0].1.clone()
    }

    #[test]
    fn message_expressions_and_their_fallbacks() {
        let v = json!({"x": 12, "note": "two\nlines", "blank": "  "});
        let msg = |expr: &str, message: Option<&str>| {
            let mut r = json!({"rule": "self.x < 10", "messageExpression": expr});
            if let Some(m) = message {
                r["message"] = json!(m);
            }
            failure(&v, r)
        };
        // Used when it yields a string, over `message`; trimmed.
        assert_eq!(
            msg("'x is ' + string(self.x) + ', want < 10 '", Some("x too big")),
            "Invalid value: \"object\": x is 12, want < 10"
        );
        // Falls back to `message` when it fails, is no string, is empty or spans lines.
        for bad in ["self.missing + 'x'", "42", "self.blank", "self.note", "self.all("] {
            assert_eq!(
                msg(bad, Some(" x too big ")),
                "Invalid value: \"object\": x too big",
                "{bad}"
            );
        }
        // ... and to upstream's default without one.
        assert_eq!(
            msg("1 + 1", None),
            "Invalid value: \"object\": failed rule: self.x < 10"
        );
        // A transition rule's message expression sees `oldSelf`.
        let s = json!({"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf",
            "messageExpression": "'may not shrink from ' + string(oldSelf)", "reason": "FieldValueForbidden"}]});
        assert_eq!(
            check_transition(&json!(2), Some(&json!(5)), &s, "spec.n", "integer"),
            vec![("spec.n".to_string(), "Forbidden: may not shrink from 5".to_string())]
        );
    }

    #[test]
    fn message_expressions_that_do_not_compile_are_refused() {
        let s = json!({"x-kubernetes-validations": [
            {"rule": "self.x > 1", "messageExpression": "'x is ' +"},
            {"rule": "self.x > 1", "messageExpression": "   "},
            {"rule": "self.x > 1", "messageExpression": "'fine'"},
            {"rule": "self.x >", "messageExpression": "'x is ' +"}]});
        let mut out = Vec::new();
        compile_errors(&s, "p", None, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].0, "p.x-kubernetes-validations[0].messageExpression");
        assert!(
            out[0]
                .1
                .starts_with("Invalid value: \"'x is ' +\": messageExpression compilation failed: "),
            "{out:?}"
        );
        assert_eq!(
            out[1],
            (
                "p.x-kubernetes-validations[1].messageExpression".to_string(),
                "Required value: messageExpression must be non-empty if specified".to_string()
            )
        );
        // A rule that does not compile is reported alone, as upstream.
        assert_eq!(out[2].0, "p.x-kubernetes-validations[3].rule");
    }

    #[test]
    fn old_self_is_found_where_the_interpreter_misses_it() {
        for (rule, uses) in [
            ("self == oldSelf", true),
            ("self.a ? oldSelf.b == self.b : true", true),
            ("self.oldSelf == 1", false),
            ("self.x == 'oldSelf' && self.y != \"oldSelf\"", false),
            ("self.oldSelfish == 1 || has(oldSelf.z)", true),
        ] {
            let p = program(rule).unwrap();
            assert_eq!(uses_old_self(rule, &p), uses, "{rule}");
        }
        let mut out = Vec::new();
        let s = json!({"x-kubernetes-validations": [
            {"rule": "self.x > 1", "optionalOldSelf": true},
            {"rule": "self == oldSelf", "optionalOldSelf": true}]});
        compile_errors(&s, "p", None, &mut out);
        assert_eq!(
            out,
            vec![(
                "p.x-kubernetes-validations[0].optionalOldSelf".to_string(),
                "Invalid value: true: may not be set if oldSelf is not used in rule".to_string()
            )]
        );
        let mut out = Vec::new();
        compile_errors(&s, "p.items", Some("p"), &mut out);
        assert!(out.contains(&(
            "p.items.x-kubernetes-validations[1].rule".to_string(),
            "Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within p"
                .to_string()
        )));
    }

    #[test]
    fn optional_old_self() {
        let s = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "oldSelf.hasValue() || self.size < 10", "optionalOldSelf": true, "message": "new ones start small"},
            {"rule": "!oldSelf.hasValue() || self.size >= oldSelf.value().size", "optionalOldSelf": true,
                "messageExpression": "'may not shrink from ' + string(oldSelf.size)"},
            {"rule": "self.size >= oldSelf.orValue({'size': 0}).size", "optionalOldSelf": true, "message": "orValue"},
            {"rule": "oldSelf != optional.none() || optional.of(self.size).value() < 100", "optionalOldSelf": true,
                "message": "of/none"},
            {"rule": "self.size == oldSelf.size", "message": "not optional"}]});
        let new = |n: i64| json!({"size": n});
        // Nothing stored: only the optional rules run, `oldSelf` has no value.
        assert!(check_transition(&new(5), None, &s, "p", "object").is_empty());
        let big = check_transition(&new(200), None, &s, "p", "object");
        let msgs: Vec<&str> = big.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Invalid value: \"object\": new ones start small",
                "Invalid value: \"object\": of/none"
            ]
        );
        // A stored value: every transition rule, `oldSelf` holding it.
        assert!(check_transition(&new(200), Some(&new(200)), &s, "p", "object").is_empty());
        let shrunk = check_transition(&new(3), Some(&new(4)), &s, "p", "object");
        let msgs: Vec<&str> = shrunk.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Invalid value: \"object\": may not shrink from 4",
                "Invalid value: \"object\": orValue",
                "Invalid value: \"object\": not optional"
            ]
        );
        // `value()` of nothing is an evaluation error.
        let deref = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "oldSelf.value().size == self.size", "optionalOldSelf": true}]});
        let e = check_transition(&new(1), None, &deref, "p", "object");
        assert!(e[0].1.contains("optional.none() dereference"), "{e:?}");
        assert!(
            e[0].1.ends_with(" evaluating rule: oldSelf.value().size == self.size"),
            "{e:?}"
        );
    }
}
