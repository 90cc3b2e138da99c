//! Per-key sequential models for the linearizability checker, and how a history's operations become
//! their inputs. Both models start from an absent key; neither workload deletes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::search::{Model, SearchOp};
use crate::history::{EventType, Op, Operation};

/// Stands for any value no operation observes (see [`Model::forget`]); workloads never write it.
const UNSEEN: u64 = u64::MAX;

/// A register per key: reads, blind writes and compare-and-set of unique values.
pub struct Register;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    Read(Option<u64>),
    Write(u64),
    Cas { from: u64, to: u64 },
}

impl Model for Register {
    type Input = RegisterOp;
    type State = Option<u64>;

    fn name(&self) -> &'static str {
        "register"
    }
    fn init(&self) -> Option<u64> {
        None
    }
    fn step(&self, state: &Option<u64>, input: &RegisterOp) -> Option<Option<u64>> {
        match input {
            RegisterOp::Read(v) => (v == state).then_some(*state),
            RegisterOp::Write(v) => Some(Some(*v)),
            RegisterOp::Cas { from, to } => (*state == Some(*from)).then_some(Some(*to)),
        }
    }
    fn writes(&self, input: &RegisterOp) -> Option<u64> {
        match input {
            RegisterOp::Read(_) => None,
            RegisterOp::Write(v) | RegisterOp::Cas { to: v, .. } => Some(*v),
        }
    }
    fn reads(&self, input: &RegisterOp) -> Option<Option<u64>> {
        match input {
            RegisterOp::Read(v) => Some(*v),
            RegisterOp::Cas { from, .. } => Some(Some(*from)),
            RegisterOp::Write(_) => None,
        }
    }
    fn read_only(&self, input: &RegisterOp) -> bool {
        matches!(input, RegisterOp::Read(_))
    }
    fn describe(&self, input: &RegisterOp) -> String {
        match input {
            RegisterOp::Read(Some(v)) => format!("read {v}"),
            RegisterOp::Read(None) => "read absent".into(),
            RegisterOp::Write(v) => format!("write {v}"),
            RegisterOp::Cas { from, to } => format!("cas {from}->{to}"),
        }
    }
    fn describe_state(&self, state: &Option<u64>) -> String {
        match state {
            None => "absent".into(),
            Some(UNSEEN) => "a value nobody read".into(),
            Some(v) => v.to_string(),
        }
    }
    fn forget(&self, state: Option<u64>) -> Option<u64> {
        state.map(|_| UNSEEN)
    }
    fn same_effect(&self, a: &RegisterOp, b: &RegisterOp) -> bool {
        match (a, b) {
            (RegisterOp::Write(_), RegisterOp::Write(_)) => true,
            (RegisterOp::Cas { from: x, .. }, RegisterOp::Cas { from: y, .. }) => x == y,
            _ => false,
        }
    }
}

/// What kube-apiserver relies on per object: create-if-absent, update guarded by mod_revision, and
/// lists that show (value, mod_revision) or absence.
#[derive(Default)]
pub struct Kubernetes {
    /// Every revision known to be some write's (from `ok` writes and lists), with that write's value.
    /// Revisions are unique store-wide, so a write of unknown revision cannot have one of these
    /// unless it is the same write.
    known: HashMap<i64, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KubeOp {
    /// `revision`: the new mod_revision when known (an `ok` completion's header revision).
    Create { value: u64, revision: Option<i64> },
    Update {
        from_revision: i64,
        value: u64,
        revision: Option<i64>,
    },
    /// One key's slice of a list: (value, mod_revision) or absent.
    Observe(Option<(u64, i64)>),
}

/// A mod_revision exactly known, or only known to be at least `.0` (written by an op with unknown
/// outcome; the first read or guarded update that sees it pins it down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rev {
    Exact(i64),
    AtLeast(i64),
}

impl Rev {
    fn floor(self) -> i64 {
        match self {
            Rev::Exact(x) | Rev::AtLeast(x) => x,
        }
    }
}

/// The revision a write installs over a previous one (`floor` = the previous revision, 0 if none):
/// revisions only grow.
fn new_rev(floor: i64, revision: Option<i64>) -> Option<Rev> {
    match revision {
        Some(r) if r > floor => Some(Rev::Exact(r)),
        Some(_) => None,
        None => Some(Rev::AtLeast(floor + 1)),
    }
}

impl Kubernetes {
    /// Whether the current object (value and revision knowledge) can have mod_revision `r`.
    fn matches(&self, cur: Rev, state: &Option<(u64, Rev)>, r: i64) -> bool {
        match cur {
            Rev::Exact(x) => x == r,
            Rev::AtLeast(x) => r >= x && self.known.get(&r).is_none_or(|v| state.is_some_and(|(cv, _)| cv == *v)),
        }
    }
}

impl Model for Kubernetes {
    type Input = KubeOp;
    type State = Option<(u64, Rev)>;

    fn name(&self) -> &'static str {
        "kubernetes"
    }
    fn init(&self) -> Self::State {
        None
    }
    fn step(&self, state: &Self::State, input: &KubeOp) -> Option<Self::State> {
        match (input, state) {
            (KubeOp::Create { value, revision }, None) => new_rev(0, *revision).map(|r| Some((*value, r))),
            (KubeOp::Create { .. }, Some(_)) => None,
            (
                KubeOp::Update {
                    from_revision,
                    value,
                    revision,
                },
                Some((_, cur)),
            ) => {
                if !self.matches(*cur, state, *from_revision) {
                    return None;
                }
                new_rev(*from_revision, *revision).map(|r| Some((*value, r)))
            }
            (KubeOp::Update { .. }, None) => None,
            (KubeOp::Observe(None), None) => Some(None),
            (KubeOp::Observe(Some((v, r))), Some((cv, cur))) if v == cv && self.matches(*cur, state, *r) => {
                Some(Some((*v, Rev::Exact(*r))))
            }
            (KubeOp::Observe(_), _) => None,
        }
    }
    fn writes(&self, input: &KubeOp) -> Option<u64> {
        match input {
            KubeOp::Create { value, .. } | KubeOp::Update { value, .. } => Some(*value),
            KubeOp::Observe(_) => None,
        }
    }
    fn reads(&self, input: &KubeOp) -> Option<Option<u64>> {
        match input {
            KubeOp::Observe(o) => Some(o.map(|(v, _)| v)),
            _ => None,
        }
    }
    fn observes_unknown(&self, input: &KubeOp) -> bool {
        // A guard on a revision no known write has can only refer to a write of unknown outcome.
        matches!(input, KubeOp::Update { from_revision, .. } if !self.known.contains_key(from_revision))
    }
    fn read_only(&self, input: &KubeOp) -> bool {
        matches!(input, KubeOp::Observe(_))
    }
    fn describe(&self, input: &KubeOp) -> String {
        let rev = |r: &Option<i64>| r.map_or("?".to_string(), |r| r.to_string());
        match input {
            KubeOp::Create { value, revision } => format!("create {value} @rev {}", rev(revision)),
            KubeOp::Update {
                from_revision,
                value,
                revision,
            } => {
                format!("update {value} if rev={from_revision} @rev {}", rev(revision))
            }
            KubeOp::Observe(Some((v, r))) => format!("list saw {v} @rev {r}"),
            KubeOp::Observe(None) => "list saw absent".into(),
        }
    }
    fn forget(&self, state: Self::State) -> Self::State {
        state.map(|(_, r)| (UNSEEN, r))
    }
    fn describe_state(&self, state: &Self::State) -> String {
        match state {
            None => "absent".into(),
            Some((UNSEEN, r)) => format!("a value nobody listed @rev {r:?}"),
            Some((v, Rev::Exact(r))) => format!("{v} @rev {r}"),
            Some((v, r)) => format!("{v} @rev >={}", r.floor()),
        }
    }
}

/// The part of an operation every model input shares.
fn base<I>(o: &Operation, input: I) -> SearchOp<I> {
    let known = o.outcome() == EventType::Ok;
    SearchOp {
        input,
        call: o.call_time(),
        ret: if known { o.return_time() } else { None },
        required: known,
        invoke_index: o.invoke.index,
        complete_index: o.complete.as_ref().map(|c| c.index),
        blind: false,
    }
}

/// Register operations per key. `fail` operations did not happen and are left out.
pub fn register_partitions(ops: &[Operation]) -> BTreeMap<u64, Vec<SearchOp<RegisterOp>>> {
    let mut out: BTreeMap<u64, Vec<SearchOp<RegisterOp>>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome() != EventType::Fail) {
        let (key, input) = match o.op() {
            Op::Read { key, value } => (*key, RegisterOp::Read(*value)),
            Op::Write { key, value } => (*key, RegisterOp::Write(*value)),
            Op::Cas { key, from, to } => (*key, RegisterOp::Cas { from: *from, to: *to }),
            _ => continue,
        };
        out.entry(key).or_default().push(base(o, input));
    }
    out
}

/// Kubernetes operations per key. A list becomes one observation per key ever created or listed
/// (absent when the list does not show it), all with the list's call and return times.
pub fn kube_partitions(ops: &[Operation]) -> (Kubernetes, BTreeMap<u64, Vec<SearchOp<KubeOp>>>) {
    let mut keys: BTreeSet<u64> = BTreeSet::new();
    let mut model = Kubernetes::default();
    for o in ops {
        let ok = o.outcome() == EventType::Ok;
        let revision = o.complete.as_ref().and_then(|c| c.revision).filter(|_| ok);
        match o.op() {
            Op::KCreate { key, value } | Op::KUpdate { key, value, .. } => {
                keys.insert(*key);
                if let Some(r) = revision {
                    model.known.entry(r).or_insert(*value);
                }
            }
            Op::KList { items: Some(items) } => {
                keys.extend(items.iter().map(|i| i.key));
                for i in items.iter().filter(|_| ok) {
                    model.known.entry(i.mod_revision).or_insert(i.value);
                }
            }
            _ => {}
        }
    }
    let mut out: BTreeMap<u64, Vec<SearchOp<KubeOp>>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome() != EventType::Fail) {
        let revision = o
            .complete
            .as_ref()
            .filter(|c| c.kind == EventType::Ok)
            .and_then(|c| c.revision);
        match o.op() {
            Op::KCreate { key, value } => {
                out.entry(*key).or_default().push(base(
                    o,
                    KubeOp::Create {
                        value: *value,
                        revision,
                    },
                ));
            }
            Op::KUpdate {
                key,
                from_revision,
                value,
            } => {
                let input = KubeOp::Update {
                    from_revision: *from_revision,
                    value: *value,
                    revision,
                };
                out.entry(*key).or_default().push(base(o, input));
            }
            Op::KList { items } => {
                // Unknown lists observed nothing usable.
                let Some(items) = items.as_ref().filter(|_| o.outcome() == EventType::Ok) else {
                    continue;
                };
                let mut seen: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
                for i in items {
                    seen.entry(i.key).or_insert((i.value, i.mod_revision));
                }
                for key in &keys {
                    out.entry(*key)
                        .or_default()
                        .push(base(o, KubeOp::Observe(seen.get(key).copied())));
                }
            }
            _ => {}
        }
    }
    (model, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_model_follows_mod_revisions() {
        let m = Kubernetes::default();
        let s0 = m.init();
        let s1 = m
            .step(
                &s0,
                &KubeOp::Create {
                    value: 1,
                    revision: Some(5),
                },
            )
            .unwrap();
        assert_eq!(
            m.step(
                &s1,
                &KubeOp::Create {
                    value: 2,
                    revision: Some(6)
                }
            ),
            None
        );
        assert_eq!(
            m.step(
                &s1,
                &KubeOp::Update {
                    from_revision: 4,
                    value: 2,
                    revision: Some(6)
                }
            ),
            None
        );
        let s2 = m
            .step(
                &s1,
                &KubeOp::Update {
                    from_revision: 5,
                    value: 2,
                    revision: None,
                },
            )
            .unwrap();
        assert_eq!(s2, Some((2, Rev::AtLeast(6))));
        // An unknown revision is pinned by the first observation.
        assert_eq!(m.step(&s2, &KubeOp::Observe(Some((2, 5)))), None);
        let s3 = m.step(&s2, &KubeOp::Observe(Some((2, 9)))).unwrap();
        assert_eq!(s3, Some((2, Rev::Exact(9))));
        assert_eq!(m.step(&s3, &KubeOp::Observe(Some((2, 10)))), None);
        assert_eq!(m.step(&s3, &KubeOp::Observe(None)), None);
        // Revisions never go back.
        assert_eq!(
            m.step(
                &s3,
                &KubeOp::Update {
                    from_revision: 9,
                    value: 3,
                    revision: Some(8)
                }
            ),
            None
        );
    }

    #[test]
    fn register_model_steps() {
        let m = Register;
        assert_eq!(m.step(&None, &RegisterOp::Read(None)), Some(None));
        assert_eq!(m.step(&None, &RegisterOp::Cas { from: 1, to: 2 }), None);
        assert_eq!(m.step(&Some(1), &RegisterOp::Cas { from: 1, to: 2 }), Some(Some(2)));
        assert_eq!(m.step(&Some(1), &RegisterOp::Read(Some(2))), None);
    }
}
