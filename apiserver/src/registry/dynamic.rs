//! The dynamic part of the registry: custom resources served from CustomResourceDefinitions, next to the
//! static built-in table. Handlers hold `&'static Resource`, so a custom resource's `Resource` is built once
//! from its CRD and leaked (`intern`). The leak is bounded by CRD churn, not by requests: an identical
//! definition registered again (a relist, another API server's write, an update touching other versions)
//! gets the value leaked the first time, so only a changed definition costs a new one.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::Resource;

/// Where the scale subresource reads and writes, as JSON pointers (`/spec/replicas`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One of a CRD version's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What a custom resource adds to `Resource`.
#[derive(Debug)]
pub struct Custom {
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    pub list_kind: String,
    /// The version's `openAPIV3Schema` (None: anything goes, as for a CRD without one).
    pub schema: Option<Value>,
    /// Whether the schema has CEL rules anywhere: without, an update has no transition rules to walk.
    pub cel_rules: bool,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// The Table columns after Name.
    pub columns: Vec<PrinterColumn>,
}

impl Custom {
    /// Drops the fields the schema does not declare and fills in its defaults.
    pub fn prune_and_default(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            crate::crd::schema::prune(obj, s, true);
            crate::crd::schema::apply_defaults(obj, s);
        }
    }

    /// Schema violations as (field, message) causes.
    pub fn validate(&self, obj: &Value) -> Vec<(String, String)> {
        match &self.schema {
            Some(s) => crate::crd::schema::validate(obj, s),
            None => Vec::new(),
        }
    }

    /// An update's violations of the schema's CEL transition rules (`oldSelf`).
    pub fn validate_transitions(&self, old: &Value, new: &Value) -> Vec<(String, String)> {
        match &self.schema {
            Some(s) if self.cel_rules => crate::crd::schema::validate_transitions(new, old, s),
            _ => Vec::new(),
        }
    }

    /// A create's violations of the schema's `optionalOldSelf` transition rules (no old value anywhere).
    pub fn validate_create_transitions(&self, new: &Value) -> Vec<(String, String)> {
        match &self.schema {
            Some(s) if self.cel_rules => crate::crd::schema::validate_create_transitions(new, s),
            _ => Vec::new(),
        }
    }

    /// The fields `obj` has that the schema does not declare, as `unknown field "spec.x"` (strict field
    /// validation).
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        match &self.schema {
            Some(s) => crate::crd::schema::unknown_fields(obj, s),
            None => Vec::new(),
        }
    }
}

/// Custom resources served now, in CRD name order.
static SERVED: RwLock<Vec<&'static Resource>> = RwLock::new(Vec::new());
/// Every Resource leaked so far, by the definition it was built from.
static POOL: Mutex<BTreeMap<String, &'static Resource>> = Mutex::new(BTreeMap::new());

/// The `Resource` for a definition: the one leaked earlier for the same `fingerprint`, or `build()` leaked.
/// `fingerprint` must cover everything `build` reads.
pub fn intern(fingerprint: String, build: impl FnOnce() -> Resource) -> &'static Resource {
    let mut pool = POOL.lock();
    if let Some(r) = pool.get(&fingerprint) {
        return r;
    }
    let r: &'static Resource = Box::leak(Box::new(build()));
    pool.insert(fingerprint, r);
    r
}

/// Leaks a string for a `&'static str` field of a custom `Resource` (called only from `intern`'s builder).
pub fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Leaks a list of strings for `short_names` / `categories`.
pub fn leak_list(items: &[String]) -> &'static [&'static str] {
    let v: Vec<&'static str> = items.iter().map(|s| leak(s)).collect();
    Box::leak(v.into_boxed_slice())
}

/// Replaces the set of served custom resources.
pub fn set(resources: Vec<&'static Resource>) {
    *SERVED.write() = resources;
}

pub fn all() -> Vec<&'static Resource> {
    SERVED.read().clone()
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    SERVED
        .read()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .copied()
}

/// `v1` -> (3, 1, 0), `v2beta3` -> (2, 2, 3), `v1alpha1` -> (1, 1, 1); None for other names.
fn version_key(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let major: u64 = rest[..digits].parse().ok()?;
    if rest[..digits].starts_with('0') {
        return None;
    }
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((3, major, 0));
    }
    let (level, minor) = if let Some(m) = tail.strip_prefix("beta") {
        (2, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (1, m)
    } else {
        return None;
    };
    if minor.is_empty() || minor.starts_with('0') || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((level, major, minor.parse().ok()?))
}

/// Upstream's kube-aware version order: GA before beta before alpha, higher numbers first; versions that
/// do not look like Kubernetes versions come last, alphabetically.
pub fn version_order(a: &str, b: &str) -> Ordering {
    match (version_key(a), version_key(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_aware_version_order() {
        let mut vs = vec![
            "v1alpha1",
            "foo",
            "v2",
            "v1",
            "v11alpha2",
            "v10beta3",
            "v1beta2",
            "v12alpha1",
            "bar",
        ];
        vs.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            vs,
            vec![
                "v2",
                "v1",
                "v10beta3",
                "v1beta2",
                "v12alpha1",
                "v11alpha2",
                "v1alpha1",
                "bar",
                "foo"
            ]
        );
    }
}
