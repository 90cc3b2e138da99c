//! A read-only Txn is served from the local applied state while the apply path keeps writing. Its reads
//! must all observe one revision (found by the Jepsen append workload: a read-only txn saw one key after
//! a write and another key before an earlier one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rudder_proto::etcdserverpb::{request_op, response_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rudder_proto::mvccpb::Event;
use rudder_store::apply::{Applier, EventSink};
use rudder_store::command::{Command, Op as Cmd};
use rudder_store::lease::Lessor;
use rudder_store::mvcc::Mvcc;

struct Discard;

impl EventSink for Discard {
    fn publish(&self, _revision: i64, _events: Vec<Event>) {}
}

fn put(key: &str, value: String) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.into_bytes(),
            ..Default::default()
        })),
    }
}

fn get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

#[test]
fn read_only_txn_reads_one_revision_while_writes_apply() {
    let dir = tempfile::tempdir().unwrap();
    let db = rudder_store::backend::open(dir.path()).unwrap();
    let (mvcc, _) = Mvcc::open(db).unwrap();
    let applier = Arc::new(Applier::new(Arc::new(mvcc), Arc::new(Lessor::new(2)), Arc::new(Discard)).unwrap());
    let write = |i: u64| {
        let txn = TxnRequest {
            success: vec![put("a", i.to_string()), put("b", i.to_string())],
            ..Default::default()
        };
        applier.apply(&Command::encode(Cmd::Txn(txn)).0, |_| {}).unwrap();
    };
    write(0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let applier = applier.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let txn = TxnRequest {
                    success: vec![put("a", i.to_string()), put("b", i.to_string())],
                    ..Default::default()
                };
                applier.apply(&Command::encode(Cmd::Txn(txn)).0, |_| {}).unwrap();
                i += 1;
            }
        })
    };
    let mut torn = 0;
    for _ in 0..5_000 {
        // Many reads per txn widen the window in which an unpinned txn would see two states.
        let ops: Vec<RequestOp> = (0..8).flat_map(|_| [get("a"), get("b")]).collect();
        let r = applier
            .read_txn(TxnRequest {
                success: ops,
                ..Default::default()
            })
            .unwrap();
        let header_rev = r.header.as_ref().map_or(0, |h| h.revision);
        let mut values = Vec::new();
        for op in r.responses {
            let Some(response_op::Response::ResponseRange(range)) = op.response else {
                panic!("not a range")
            };
            let kv = &range.kvs[0];
            assert!(
                kv.mod_revision <= header_rev,
                "read {kv:?} above the txn's revision {header_rev}"
            );
            values.push(kv.value.clone());
        }
        if values.windows(2).any(|w| w[0] != w[1]) {
            torn += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(torn, 0, "{torn} read-only txns saw more than one revision");
}
