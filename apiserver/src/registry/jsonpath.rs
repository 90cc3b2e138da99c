//! Table output of custom resources: Name, then the CRD version's `additionalPrinterColumns`, each read
//! with a JSONPath and converted by its column type as upstream's table convertor does (`date` columns
//! become ages like `5m`). The JSONPath subset: `.a.b`, `['a.b']`, `[0]`, `[*]`, optionally in `{...}`.

use serde_json::{json, Value};

use super::dynamic::Custom;
use super::table::human_duration;

pub fn column_definitions(c: &Custom) -> Value {
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0})];
    for col in &c.columns {
        cols.push(json!({"name": col.name, "type": col.ty, "format": col.format,
            "description": col.description, "priority": col.priority}));
    }
    Value::Array(cols)
}

pub fn cells(c: &Custom, o: &Value) -> Vec<Value> {
    let mut out = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    for col in &c.columns {
        let found = eval(o, &col.json_path);
        let v = match found.as_slice() {
            [] => Value::Null,
            [one] => (*one).clone(),
            many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
        };
        out.push(cell(&col.ty, v));
    }
    out
}

fn cell(ty: &str, v: Value) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("date", Value::String(ts)) => match chrono::DateTime::parse_from_rfc3339(&ts) {
            Ok(t) => json!(human_duration(
                chrono::Utc::now().signed_duration_since(t).num_seconds()
            )),
            Err(_) => json!("<invalid>"),
        },
        ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        ("number", Value::Number(n)) => Value::Number(n),
        ("boolean", Value::Bool(b)) => Value::Bool(b),
        ("string", Value::String(s)) => Value::String(s),
        // Anything else prints as its JSON text (upstream formats it with %v).
        (_, Value::String(s)) => Value::String(s),
        (_, other) => Value::String(other.to_string()),
    }
}

enum Step {
    Field(String),
    Index(usize),
    All,
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p)
        .trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut steps = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                if j > start {
                    steps.push(Step::Field(p[start..j].to_string()));
                }
                i = j;
            }
            b'[' => {
                let end = p[i..].find(']')? + i;
                let inner = p[i + 1..end].trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                {
                    steps.push(Step::Field(q.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = end + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// The values `path` selects in `o` (empty for an unsupported path or nothing there).
pub fn eval<'a>(o: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut cur = vec![o];
    for s in &steps {
        cur = cur
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match s {
                    Step::Field(f) => v.get(f.as_str()).into_iter().collect(),
                    Step::Index(i) => v.get(*i).into_iter().collect(),
                    Step::All => match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => Vec::new(),
                    },
                }
            })
            .collect();
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let o = json!({"spec": {"a.b": 1, "list": [{"n": "x"}, {"n": "y"}], "r": 3}});
        assert_eq!(eval(&o, ".spec.r"), vec![&json!(3)]);
        assert_eq!(eval(&o, "{.spec['a.b']}"), vec![&json!(1)]);
        assert_eq!(eval(&o, ".spec.list[1].n"), vec![&json!("y")]);
        assert_eq!(eval(&o, ".spec.list[*].n"), vec![&json!("x"), &json!("y")]);
        assert!(eval(&o, ".spec.missing").is_empty());
        assert!(eval(&o, "spec").is_empty());
    }

    #[test]
    fn cells_by_type() {
        assert_eq!(cell("integer", json!(3)), json!(3));
        assert_eq!(cell("string", json!(3)), json!("3"));
        assert_eq!(cell("string", Value::Null), Value::Null);
        let ts = (chrono::Utc::now() - chrono::Duration::seconds(300))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert_eq!(cell("date", json!(ts)), json!("5m"));
    }
}
