#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test
//! Model-based test of the state machine: random histories of put / delete / txn / compact / lease /
//! range-at-revision are applied to the real store (RocksDB in a temp dir, reopened at random points to
//! model a restart) and to a small reference model; every answer must match.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use rudder_proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rudder_proto::mvccpb::{Event, KeyValue};
use rudder_store::apply::{Applier, EventSink};
use rudder_store::command::{ApplyError, ApplyResult, Command, Op as Cmd};
use rudder_store::lease::Lessor;
use rudder_store::mvcc::Mvcc;

#[derive(Default)]
struct Recorder(Mutex<Vec<(i64, Vec<Event>)>>);

impl EventSink for Recorder {
    fn publish(&self, revision: i64, events: Vec<Event>) {
        self.0.lock().unwrap().push((revision, events));
    }
}

struct Real {
    dir: tempfile::TempDir,
    applier: Applier,
    events: Arc<Recorder>,
}

impl Real {
    fn open(dir: tempfile::TempDir) -> Self {
        let db = rudder_store::backend::open(dir.path()).unwrap();
        let (mvcc, attachments) = Mvcc::open(db).unwrap();
        let events = Arc::new(Recorder::default());
        let applier = Applier::new(Arc::new(mvcc), Arc::new(Lessor::new(2)), events.clone()).unwrap();
        applier.restore_leases(attachments).unwrap();
        Real { dir, applier, events }
    }

    fn restart(self) -> Self {
        let Real { dir, applier, .. } = self;
        drop(applier);
        Real::open(dir)
    }

    fn apply(&self, op: Cmd) -> ApplyResult {
        self.applier.apply(&Command::encode(op).0, |_| {}).unwrap()
    }
}

/// The reference: the full key space at every revision.
#[derive(Clone, Default)]
struct Model {
    states: BTreeMap<i64, BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
    leases: BTreeMap<i64, Vec<Vec<u8>>>,
}

impl Model {
    fn new() -> Self {
        let mut m = Model::default();
        m.states.insert(1, BTreeMap::new());
        m
    }
    fn rev(&self) -> i64 {
        *self.states.keys().next_back().unwrap()
    }
    fn latest(&self) -> BTreeMap<Vec<u8>, KeyValue> {
        self.states.values().next_back().unwrap().clone()
    }
    fn at(&self, rev: i64) -> Result<&BTreeMap<Vec<u8>, KeyValue>, ApplyError> {
        let rev = if rev <= 0 { self.rev() } else { rev };
        if rev > self.rev() {
            return Err(ApplyError::FutureRevision);
        }
        if rev < self.compacted {
            return Err(ApplyError::Compacted);
        }
        Ok(&self.states[&rev])
    }
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else {
        k >= key && (end == [0] || k < end)
    }
}

/// Applies writes to `state` at revision `rev`; returns (changed, per-op results, events).
struct Writer<'a> {
    state: BTreeMap<Vec<u8>, KeyValue>,
    rev: i64,
    changed: bool,
    events: Vec<Event>,
    leases: &'a BTreeMap<i64, Vec<Vec<u8>>>,
}

impl Writer<'_> {
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>, ApplyError> {
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(ApplyError::LeaseNotFound);
        }
        let prev = self.state.get(key).cloned();
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(self.rev),
            mod_revision: self.rev,
            version: prev.as_ref().map(|p| p.version + 1).unwrap_or(1),
            value: value.to_vec(),
            lease,
        };
        self.events.push(Event {
            r#type: 0,
            kv: Some(kv.clone()),
            prev_kv: prev.clone(),
        });
        self.state.insert(key.to_vec(), kv);
        self.changed = true;
        Ok(prev)
    }
    fn delete(&mut self, key: &[u8], end: &[u8]) -> Vec<KeyValue> {
        let gone: Vec<KeyValue> = self
            .state
            .values()
            .filter(|kv| in_range(&kv.key, key, end))
            .cloned()
            .collect();
        for kv in &gone {
            self.state.remove(&kv.key);
            let ev = KeyValue {
                key: kv.key.clone(),
                mod_revision: self.rev,
                ..Default::default()
            };
            self.events.push(Event {
                r#type: 1,
                kv: Some(ev),
                prev_kv: Some(kv.clone()),
            });
            self.changed = true;
        }
        gone
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8, Option<u8>),
    Delete(u8, Option<u8>),
    /// If version(key) == v then put(key2) else delete(key2), then range all.
    Txn(u8, i64, u8),
    Compact(i64),
    Grant(u8),
    Revoke(u8),
    Range(u8, Option<u8>, i64, i64),
    Restart,
}

fn key(k: u8) -> Vec<u8> {
    format!("k{}", k % 6).into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>(), proptest::option::weighted(0.2, 0u8..3)).prop_map(|(k, v, l)| Step::Put(k, v, l)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| Step::Delete(k, e)),
        2 => (any::<u8>(), 0i64..3, any::<u8>()).prop_map(|(k, v, k2)| Step::Txn(k, v, k2)),
        1 => (-2i64..30).prop_map(Step::Compact),
        1 => (0u8..3).prop_map(Step::Grant),
        1 => (0u8..3).prop_map(Step::Revoke),
        3 => (any::<u8>(), proptest::option::of(any::<u8>()), -1i64..30, 0i64..4).prop_map(|(k, e, r, l)| Step::Range(k, e, r, l)),
        1 => Just(Step::Restart),
    ]
}

fn range_end(k: u8, e: Option<u8>) -> Vec<u8> {
    match e {
        None => Vec::new(),
        Some(0) => vec![0],
        Some(e) => format!("k{}", (k % 6).max(e % 6) + 1).into_bytes(),
    }
}

fn check(steps: Vec<Step>) {
    let mut real = Real::open(tempfile::tempdir().unwrap());
    let mut model = Model::new();
    for (i, s) in steps.into_iter().enumerate() {
        let ctx = format!("step {i}: {s:?}");
        match s {
            Step::Restart => real = real.restart(),
            Step::Put(k, v, l) => {
                let lease = l.map(|l| l as i64 + 100).unwrap_or(0);
                let got = real.apply(Cmd::Put(PutRequest {
                    key: key(k),
                    value: vec![v],
                    lease,
                    prev_kv: true,
                    ..Default::default()
                }));
                let mut w = Writer {
                    state: model.latest(),
                    rev: model.rev() + 1,
                    changed: false,
                    events: vec![],
                    leases: &model.leases,
                };
                match w.put(&key(k), &[v], lease) {
                    Ok(prev) => {
                        let ApplyResult::Put(r) = got else {
                            panic!("{ctx}: {got:?}")
                        };
                        assert_eq!(r.prev_kv, prev, "{ctx}");
                        assert_eq!(r.header.unwrap().revision, w.rev, "{ctx}");
                        let (rev, ev, st) = (w.rev, w.events, w.state);
                        model.states.insert(rev, st);
                        if lease != 0 {
                            model.leases.get_mut(&lease).unwrap().push(key(k));
                        }
                        assert_eq!(real.events.0.lock().unwrap().last().cloned(), Some((rev, ev)), "{ctx}");
                    }
                    Err(e) => assert_eq!(got, ApplyResult::Error(e), "{ctx}"),
                }
            }
            Step::Delete(k, e) => {
                let end = range_end(k, e);
                let got = real.apply(Cmd::DeleteRange(DeleteRangeRequest {
                    key: key(k),
                    range_end: end.clone(),
                    prev_kv: true,
                }));
                let mut w = Writer {
                    state: model.latest(),
                    rev: model.rev() + 1,
                    changed: false,
                    events: vec![],
                    leases: &model.leases,
                };
                let gone = w.delete(&key(k), &end);
                let ApplyResult::DeleteRange(r) = got else {
                    panic!("{ctx}: {got:?}")
                };
                assert_eq!(r.prev_kvs, gone, "{ctx}");
                assert_eq!(r.deleted, gone.len() as i64, "{ctx}");
                if w.changed {
                    let (rev, st) = (w.rev, w.state);
                    model.states.insert(rev, st);
                }
                assert_eq!(r.header.unwrap().revision, model.rev(), "{ctx}");
            }
            Step::Txn(k, v, k2) => {
                let cmp = Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Version as i32,
                    key: key(k),
                    target_union: Some(compare::TargetUnion::Version(v)),
                    range_end: vec![],
                };
                let all = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                };
                let req = TxnRequest {
                    compare: vec![cmp],
                    success: vec![
                        RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: key(k2),
                                value: b"t".to_vec(),
                                ..Default::default()
                            })),
                        },
                        RequestOp {
                            request: Some(request_op::Request::RequestRange(all.clone())),
                        },
                    ],
                    failure: vec![
                        RequestOp {
                            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                                key: key(k2),
                                ..Default::default()
                            })),
                        },
                        RequestOp {
                            request: Some(request_op::Request::RequestRange(all)),
                        },
                    ],
                };
                let got = real.apply(Cmd::Txn(req));
                let version = model.latest().get(&key(k)).map(|kv| kv.version).unwrap_or(0);
                let mut w = Writer {
                    state: model.latest(),
                    rev: model.rev() + 1,
                    changed: false,
                    events: vec![],
                    leases: &model.leases,
                };
                let ok = version == v;
                if ok {
                    w.put(&key(k2), b"t", 0).unwrap();
                } else {
                    w.delete(&key(k2), b"");
                }
                let seen: Vec<KeyValue> = w.state.values().cloned().collect();
                let ApplyResult::Txn(r) = got else {
                    panic!("{ctx}: {got:?}")
                };
                assert_eq!(r.succeeded, ok, "{ctx}");
                let Some(response_op::Response::ResponseRange(rr)) = &r.responses[1].response else {
                    panic!("{ctx}")
                };
                assert_eq!(rr.kvs, seen, "{ctx}: a txn's range sees its own writes");
                if w.changed {
                    let (rev, st) = (w.rev, w.state);
                    model.states.insert(rev, st);
                }
                assert_eq!(r.header.unwrap().revision, model.rev(), "{ctx}");
            }
            Step::Compact(rev) => {
                let got = real.apply(Cmd::Compaction(CompactionRequest {
                    revision: rev,
                    physical: true,
                }));
                if rev <= model.compacted {
                    assert_eq!(got, ApplyResult::Error(ApplyError::Compacted), "{ctx}");
                } else if rev > model.rev() {
                    assert_eq!(got, ApplyResult::Error(ApplyError::FutureRevision), "{ctx}");
                } else {
                    assert!(matches!(got, ApplyResult::Compaction(_)), "{ctx}: {got:?}");
                    model.compacted = rev;
                }
            }
            Step::Grant(l) => {
                let id = l as i64 + 100;
                let got = real.apply(Cmd::LeaseGrant(LeaseGrantRequest { ttl: 60, id }));
                match model.leases.entry(id) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert_eq!(got, ApplyResult::Error(ApplyError::LeaseExists), "{ctx}")
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        assert!(
                            matches!(got, ApplyResult::LeaseGrant(ref g) if g.id == id && g.ttl == 60),
                            "{ctx}: {got:?}"
                        );
                        slot.insert(vec![]);
                    }
                }
            }
            Step::Revoke(l) => {
                let id = l as i64 + 100;
                let got = real.apply(Cmd::LeaseRevoke(LeaseRevokeRequest { id }));
                match model.leases.remove(&id) {
                    None => assert_eq!(got, ApplyResult::Error(ApplyError::LeaseNotFound), "{ctx}"),
                    Some(_) => {
                        assert!(matches!(got, ApplyResult::LeaseRevoke(_)), "{ctx}: {got:?}");
                        let mut w = Writer {
                            state: model.latest(),
                            rev: model.rev() + 1,
                            changed: false,
                            events: vec![],
                            leases: &model.leases,
                        };
                        let attached: Vec<Vec<u8>> = w
                            .state
                            .values()
                            .filter(|kv| kv.lease == id)
                            .map(|kv| kv.key.clone())
                            .collect();
                        for k in attached {
                            w.delete(&k, b"");
                        }
                        if w.changed {
                            let (rev, st) = (w.rev, w.state);
                            model.states.insert(rev, st);
                        }
                    }
                }
            }
            Step::Range(k, e, rev, limit) => {
                let end = range_end(k, e);
                let req = RangeRequest {
                    key: key(k),
                    range_end: end.clone(),
                    revision: rev,
                    limit,
                    ..Default::default()
                };
                let got = real.applier.range(&req);
                match model.at(rev) {
                    Err(e) => assert_eq!(got.err(), Some(e), "{ctx}"),
                    Ok(state) => {
                        let all: Vec<KeyValue> = state
                            .values()
                            .filter(|kv| in_range(&kv.key, &key(k), &end))
                            .cloned()
                            .collect();
                        let (out, current) = got.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        assert_eq!(current, model.rev(), "{ctx}");
                        assert_eq!(out.count, all.len() as i64, "{ctx}");
                        let lim = if limit > 0 { limit as usize } else { usize::MAX };
                        assert_eq!(out.more, all.len() > lim, "{ctx}");
                        assert_eq!(out.kvs, all.into_iter().take(lim).collect::<Vec<_>>(), "{ctx}");
                    }
                }
            }
        }
        // Leases that still exist keep only keys that still carry them.
        for (id, keys) in model.leases.iter_mut() {
            let latest = model.states.values().next_back().unwrap();
            keys.retain(|k| latest.get(k).map(|kv| kv.lease == *id).unwrap_or(false));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..60)) {
        check(steps);
    }
}
