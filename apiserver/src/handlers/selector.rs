//! Label and field selectors, as `labels.Parse` and `fields.ParseSelector` accept them.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(v: &str) -> Option<Vec<String>> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(v.split(',').map(|x| x.trim().to_string()).collect())
}

fn parse_term(t: &str, allow_sets: bool) -> Result<Req, String> {
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Req::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==") {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once('=') {
        return Ok(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if allow_sets {
        if let Some((k, v)) = t.split_once(" notin ") {
            return set(v)
                .map(|s| Req::NotIn(k.trim().into(), s))
                .ok_or_else(|| format!("invalid set in {t:?}"));
        }
        if let Some((k, v)) = t.split_once(" in ") {
            return set(v)
                .map(|s| Req::In(k.trim().into(), s))
                .ok_or_else(|| format!("invalid set in {t:?}"));
        }
        if let Some(k) = t.strip_prefix('!') {
            return Ok(Req::NotExists(k.trim().into()));
        }
        if !t.contains(' ') {
            return Ok(Req::Exists(t.into()));
        }
    }
    Err(format!("invalid selector term {t:?}"))
}

impl Selector {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, ApiError> {
        let mut s = Selector::default();
        for t in terms(label.unwrap_or_default()) {
            s.labels.push(
                parse_term(&t, true).map_err(|m| ApiError::bad_request(format!("unable to parse requirement: {m}")))?,
            );
        }
        for t in terms(field.unwrap_or_default()) {
            s.fields.push(
                parse_term(&t, false).map_err(|m| ApiError::bad_request(format!("invalid field selector: {m}")))?,
            );
        }
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
        let label_ok = self.labels.iter().all(|r| match r {
            Req::Eq(k, v) => label(k) == Some(v.as_str()),
            Req::NotEq(k, v) => label(k) != Some(v.as_str()),
            Req::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Req::Exists(k) => label(k).is_some(),
            Req::NotExists(k) => label(k).is_none(),
        });
        label_ok
            && self.fields.iter().all(|r| match r {
                Req::Eq(k, v) => field(obj, k) == *v,
                Req::NotEq(k, v) => field(obj, k) != *v,
                _ => true,
            })
    }
}

/// A dotted field path as a string (fields selectors compare strings; absent = "").
fn field(obj: &Value, path: &str) -> String {
    let ptr = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "fe"}}});
        let s = |l: &str, f: &str| {
            Selector::parse(Some(l), Some(f))
                .map(|s| s.matches(&o))
                .unwrap_or(false)
        };
        assert!(s("app=web", ""));
        assert!(s("app in (web,db),tier", "metadata.name=a"));
        assert!(!s("app notin (web)", ""));
        assert!(!s("!tier", ""));
        assert!(s("", "metadata.namespace!=other"));
        assert!(!s("", "metadata.name=b"));
    }
}
