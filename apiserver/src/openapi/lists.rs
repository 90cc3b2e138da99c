//! What kind of list (or map) sits at a position of an object, read from its schema: the one answer that
//! server-side apply (`crate::fieldmanager`, and its merge in `handlers::patch`) and strategic merge patch
//! both use.
//!
//! Built-in kinds use the catalog's OpenAPI schemas with upstream's extensions (`markers.rs`); custom
//! resources their CRD version's structural schema, whose `metadata` is ObjectMeta as upstream's is.
//! Where nothing is known (a `x-kubernetes-preserve-unknown-fields` subtree, a kind without a schema),
//! lists are atomic and maps are merged per key, as upstream's deduced schema treats them.
//!
//! Server-side apply follows structured-merge-diff's reading of the extensions: `x-kubernetes-list-type`
//! (`map` with `x-kubernetes-list-map-keys`, `set`, `atomic`) and, where a list has none, a
//! `x-kubernetes-patch-strategy` containing `merge` (a map keyed by `x-kubernetes-patch-merge-key`, a set
//! without one); anything else is atomic. Strategic merge patch merges only lists whose patch strategy
//! contains `merge` (objects by the merge key, scalars as a union) and replaces all others.

use serde_json::Value;

use super::catalog::OBJECT_META;
use crate::registry::Resource;

/// How server-side apply owns and merges a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole.
    Atomic,
    /// Scalars, owned one by one by value (`v:<json>`).
    Set,
    /// Objects, owned one by one by these key fields (`k:{...}`).
    Map(Vec<String>),
}

/// How strategic merge patch treats a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchStrategy {
    /// The patch's list replaces the current one.
    Replace,
    /// Merged with the current list: objects by this merge key, scalars (no key) as a union.
    Merge(Option<String>),
}

/// The list at a schema position, as both writers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListKind {
    pub apply: ListType,
    pub patch: PatchStrategy,
}

/// A position in a resource's schema; `UNKNOWN` where there is none.
#[derive(Clone, Copy, Debug)]
pub struct SchemaNode<'a> {
    /// The schema as written at this position (perhaps a `$ref`/`allOf` wrapper with extensions).
    raw: Option<&'a Value>,
    /// The top of an object (a kind, or an embedded resource): its `metadata` is ObjectMeta.
    root: bool,
}

impl<'a> SchemaNode<'a> {
    pub const UNKNOWN: SchemaNode<'static> = SchemaNode { raw: None, root: false };

    /// The schema of the objects of `r`: the catalog's for built-in kinds, the CRD version's for custom
    /// resources.
    pub fn of_resource(r: &'a Resource) -> SchemaNode<'a> {
        match &r.custom {
            Some(c) => Self::of_custom(c.schema.as_ref()),
            None => SchemaNode::of_builtin(r.group, r.version, r.kind),
        }
    }

    /// A built-in kind's schema from the catalog.
    pub fn of_builtin(group: &str, version: &str, kind: &str) -> SchemaNode<'static> {
        let c = super::catalog();
        SchemaNode {
            raw: c.kind(group, version, kind).and_then(|n| c.schema(n)),
            root: true,
        }
    }

    /// A custom resource's structural schema (`openAPIV3Schema`).
    pub fn of_custom(schema: Option<&'a Value>) -> SchemaNode<'a> {
        SchemaNode {
            raw: schema,
            root: true,
        }
    }

    fn resolved(&self) -> Option<&'a Value> {
        self.raw.map(|s| super::catalog().resolve(s))
    }

    /// An extension (or keyword) of this position: on the wrapper first, then on what it refers to.
    fn ext(&self, name: &str) -> Option<&'a Value> {
        let raw = self.raw?;
        raw.get(name).or_else(|| self.resolved().and_then(|s| s.get(name)))
    }

    fn node(raw: &'a Value) -> SchemaNode<'a> {
        let root = raw.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
        SchemaNode { raw: Some(raw), root }
    }

    /// The schema of field `name` of the object here (a declared property, else the map's values).
    pub fn field(&self, name: &str) -> SchemaNode<'a> {
        if self.root && name == "metadata" {
            // Built-in kinds refer to ObjectMeta already; CRD schemas say at most something about names.
            return match super::catalog().schema(OBJECT_META) {
                Some(m) => SchemaNode::node(m),
                None => SchemaNode::UNKNOWN,
            };
        }
        let Some(s) = self.resolved() else {
            return SchemaNode::UNKNOWN;
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(name)) {
            return SchemaNode::node(p);
        }
        match s.get("additionalProperties").filter(|a| a.is_object()) {
            Some(a) => SchemaNode::node(a),
            None => SchemaNode::UNKNOWN,
        }
    }

    /// The schema of the items of the list here.
    pub fn items(&self) -> SchemaNode<'a> {
        match self.resolved().and_then(|s| s.get("items")).filter(|i| i.is_object()) {
            Some(i) => SchemaNode::node(i),
            None => SchemaNode::UNKNOWN,
        }
    }

    /// Whether the object here is atomic (`x-kubernetes-map-type: atomic`, or a `+structType=atomic`
    /// type): owned and replaced as a whole.
    pub fn atomic_map(&self) -> bool {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The default of field `name` of this position's objects (a map list's items use it for a key they
    /// omit).
    pub fn default_of(&self, name: &str) -> Option<&'a Value> {
        self.field(name).ext("default")
    }

    /// What kind of list is here.
    pub fn list(&self) -> ListKind {
        let str_ext = |n: &str| self.ext(n).and_then(Value::as_str);
        let keys: Vec<String> = self
            .ext("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let merges = str_ext("x-kubernetes-patch-strategy").is_some_and(|s| s.split(',').any(|p| p == "merge"));
        let merge_key = str_ext("x-kubernetes-patch-merge-key").map(str::to_string);
        let apply = match str_ext("x-kubernetes-list-type") {
            Some("set") => ListType::Set,
            Some("map") if !keys.is_empty() => ListType::Map(keys),
            Some(_) => ListType::Atomic,
            None if merges => match &merge_key {
                Some(k) => ListType::Map(vec![k.clone()]),
                None => ListType::Set,
            },
            None => ListType::Atomic,
        };
        let patch = if merges {
            PatchStrategy::Merge(merge_key)
        } else {
            PatchStrategy::Replace
        };
        ListKind { apply, patch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at<'a>(mut n: SchemaNode<'a>, path: &[&str]) -> SchemaNode<'a> {
        for p in path {
            n = if *p == "[]" { n.items() } else { n.field(p) };
        }
        n
    }

    #[test]
    fn built_in_lists_from_the_schema() {
        let pod = SchemaNode::of_builtin("", "v1", "Pod");
        let containers = at(pod, &["spec", "containers"]).list();
        assert_eq!(containers.apply, ListType::Map(vec!["name".into()]));
        assert_eq!(containers.patch, PatchStrategy::Merge(Some("name".into())));
        let ports = at(pod, &["spec", "containers", "[]", "ports"]);
        assert_eq!(
            ports.list().apply,
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        assert_eq!(ports.list().patch, PatchStrategy::Merge(Some("containerPort".into())));
        assert_eq!(ports.items().default_of("protocol"), Some(&json!("TCP")));
        let args = at(pod, &["spec", "containers", "[]", "args"]).list();
        assert_eq!((args.apply, args.patch), (ListType::Atomic, PatchStrategy::Replace));
        let tolerations = at(pod, &["spec", "tolerations"]).list();
        assert_eq!(tolerations.apply, ListType::Atomic);
        let mounts = at(pod, &["spec", "containers", "[]", "volumeMounts"]).list();
        assert_eq!(mounts.patch, PatchStrategy::Merge(Some("mountPath".into())));
        let finalizers = at(pod, &["metadata", "finalizers"]).list();
        assert_eq!(
            (finalizers.apply, finalizers.patch),
            (ListType::Set, PatchStrategy::Merge(None))
        );
        // ownerReferences: no list type, a merge strategy by uid: a map keyed by uid for apply too.
        assert_eq!(
            at(pod, &["metadata", "ownerReferences"]).list().apply,
            ListType::Map(vec!["uid".into()])
        );
        let svc = SchemaNode::of_builtin("", "v1", "Service");
        assert_eq!(
            at(svc, &["spec", "ports"]).list().apply,
            ListType::Map(vec!["port".into(), "protocol".into()])
        );
        let deploy = SchemaNode::of_builtin("apps", "v1", "Deployment");
        assert!(at(deploy, &["spec", "selector"]).atomic_map());
        assert!(!at(deploy, &["spec", "template", "metadata"]).atomic_map());
        assert_eq!(
            at(deploy, &["spec", "template", "spec", "containers"]).list().apply,
            ListType::Map(vec!["name".into()])
        );
    }

    #[test]
    fn custom_lists_from_the_structural_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["host", "port"],
                "items": {"type": "object", "properties": {"host": {"type": "string"},
                    "port": {"type": "integer", "default": 80}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        let cr = SchemaNode::of_custom(Some(&schema));
        let routes = at(cr, &["spec", "routes"]);
        assert_eq!(routes.list().apply, ListType::Map(vec!["host".into(), "port".into()]));
        assert_eq!(routes.list().patch, PatchStrategy::Replace);
        assert_eq!(routes.items().default_of("port"), Some(&json!(80)));
        assert_eq!(at(cr, &["spec", "tags"]).list().apply, ListType::Set);
        assert_eq!(at(cr, &["spec", "args"]).list().apply, ListType::Atomic);
        assert_eq!(at(cr, &["spec", "free", "x", "y"]).list().apply, ListType::Atomic);
        assert_eq!(at(cr, &["metadata", "finalizers"]).list().apply, ListType::Set);
        assert_eq!(SchemaNode::UNKNOWN.field("a").items().list().apply, ListType::Atomic);
        // A kind without a schema still has ObjectMeta's metadata.
        let bare = SchemaNode::of_custom(None);
        assert_eq!(at(bare, &["metadata", "finalizers"]).list().apply, ListType::Set);
        assert_eq!(at(bare, &["spec", "list"]).list().apply, ListType::Atomic);
    }
}
