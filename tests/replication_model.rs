//! Replication changes nothing a client can see: the same random history of puts, deletes, txns,
//! ranges (current and past revisions) and compactions, sent through the etcd API to a one-member
//! Rudder and to a three-member Rudder (each request to a random member), gets identical answers
//! (revisions, kvs, counts, succeeded, prev_kvs, deleted, errors), and at the end every member holds the
//! same keys (read serializably, from its own state) and the same HashKV.
//!
//! Few cases (each starts four `rudder store` processes); `PROPTEST_CASES` raises the count and
//! `RUDDER_MODEL_TRACE=1` prints every op with its answer. Checked to catch a real divergence: with
//! `--unsafe-inject-bug stale-read` on the three members it fails and shrinks to a put then a range.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rudder_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use rudder_proto::etcdserverpb::kv_client::KvClient;
use rudder_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rudder_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use rudder_proto::etcdserverpb::{
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::transport::Channel;

const KEYS: u8 = 6;

fn key(i: u8) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// A range over keys `from..to` (`to` None: the single key).
#[derive(Clone, Debug)]
struct Span {
    from: u8,
    to: Option<u8>,
}

impl Span {
    fn key(&self) -> Vec<u8> {
        key(self.from)
    }

    fn end(&self) -> Vec<u8> {
        self.to.map(key).unwrap_or_default()
    }
}

/// Revisions are chosen relative to the current one when the op runs: `Back(n)` is n revisions ago
/// (may be compacted), `Future` is one ahead.
#[derive(Clone, Copy, Debug)]
enum Rev {
    Current,
    Back(i64),
    Future,
}

impl Rev {
    fn at(self, current: i64) -> i64 {
        match self {
            Rev::Current => 0,
            Rev::Back(n) => (current - n).max(1),
            Rev::Future => current + 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Simple {
    Put { key: u8, value: u8, prev_kv: bool },
    Delete { span: Span, prev_kv: bool },
    Range { span: Span, limit: i64, keys_only: bool },
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        value: u8,
        prev_kv: bool,
    },
    Delete {
        span: Span,
        prev_kv: bool,
    },
    Range {
        span: Span,
        rev: Rev,
        limit: i64,
        count_only: bool,
        keys_only: bool,
        descending: bool,
    },
    Txn {
        key: u8,
        target: u8,
        result: u8,
        operand: i64,
        success: Vec<Simple>,
        failure: Vec<Simple>,
    },
    Compact {
        rev: Rev,
        physical: bool,
    },
}

fn span() -> impl Strategy<Value = Span> {
    (0..KEYS, prop::option::of(0..=KEYS)).prop_map(|(from, to)| Span {
        from,
        // An end before the start is an empty range, which is worth sending too.
        to: to.map(|t| t.max(from)),
    })
}

fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        4 => Just(Rev::Current),
        4 => (0i64..12).prop_map(Rev::Back),
        1 => Just(Rev::Future),
    ]
}

fn simple() -> impl Strategy<Value = Simple> {
    prop_oneof![
        3 => (0..KEYS, any::<u8>(), any::<bool>()).prop_map(|(key, value, prev_kv)| Simple::Put { key, value, prev_kv }),
        1 => (span(), any::<bool>()).prop_map(|(span, prev_kv)| Simple::Delete { span, prev_kv }),
        2 => (span(), 0i64..3, any::<bool>()).prop_map(|(span, limit, keys_only)| Simple::Range { span, limit, keys_only }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS, any::<u8>(), any::<bool>()).prop_map(|(key, value, prev_kv)| Op::Put { key, value, prev_kv }),
        2 => (span(), any::<bool>()).prop_map(|(span, prev_kv)| Op::Delete { span, prev_kv }),
        4 => (span(), rev(), 0i64..4, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(span, rev, limit, count_only, keys_only, descending)| Op::Range {
                span,
                rev,
                limit,
                count_only,
                keys_only,
                descending,
            }
        ),
        3 => (
            0..KEYS,
            0u8..4,
            0u8..4,
            0i64..6,
            prop::collection::vec(simple(), 0..4),
            prop::collection::vec(simple(), 0..3)
        )
            .prop_map(|(key, target, result, operand, success, failure)| Op::Txn {
                key,
                target,
                result,
                operand,
                success,
                failure,
            }),
        1 => (rev(), any::<bool>()).prop_map(|(rev, physical)| Op::Compact { rev, physical }),
    ]
}

fn value(v: u8) -> Vec<u8> {
    format!("v{v}").into_bytes()
}

fn request_op(s: &Simple) -> RequestOp {
    let request = match s {
        Simple::Put {
            key: k,
            value: v,
            prev_kv,
        } => request_op::Request::RequestPut(PutRequest {
            key: key(*k),
            value: value(*v),
            prev_kv: *prev_kv,
            ..Default::default()
        }),
        Simple::Delete { span, prev_kv } => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: span.key(),
            range_end: span.end(),
            prev_kv: *prev_kv,
        }),
        Simple::Range { span, limit, keys_only } => request_op::Request::RequestRange(RangeRequest {
            key: span.key(),
            range_end: span.end(),
            limit: *limit,
            keys_only: *keys_only,
            ..Default::default()
        }),
    };
    RequestOp { request: Some(request) }
}

fn txn_request(k: u8, target: u8, result: u8, operand: i64, success: &[Simple], failure: &[Simple]) -> TxnRequest {
    let (target, union) = match target {
        0 => (CompareTarget::Version, TargetUnion::Version(operand)),
        1 => (CompareTarget::Create, TargetUnion::CreateRevision(operand * 3)),
        2 => (CompareTarget::Mod, TargetUnion::ModRevision(operand * 3)),
        _ => (CompareTarget::Value, TargetUnion::Value(value(operand as u8))),
    };
    let result = match result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        _ => CompareResult::NotEqual,
    };
    TxnRequest {
        compare: vec![Compare {
            result: result as i32,
            target: target as i32,
            key: key(k),
            target_union: Some(union),
            range_end: Vec::new(),
        }],
        success: success.iter().map(request_op).collect(),
        failure: failure.iter().map(request_op).collect(),
    }
}

/// What a client sees, without what legitimately differs between clusters (ids, terms).
#[derive(Debug, PartialEq)]
enum Answer {
    Range(RangeResponse),
    Put(rudder_proto::etcdserverpb::PutResponse),
    Delete(rudder_proto::etcdserverpb::DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(Option<ResponseHeader>),
    Error(tonic::Code, String),
}

fn scrub(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h {
        *h = ResponseHeader {
            revision: h.revision,
            ..Default::default()
        };
    }
}

fn scrub_txn(t: &mut TxnResponse) {
    scrub(&mut t.header);
    for r in &mut t.responses {
        match &mut r.response {
            Some(response_op::Response::ResponseRange(x)) => scrub(&mut x.header),
            Some(response_op::Response::ResponsePut(x)) => scrub(&mut x.header),
            Some(response_op::Response::ResponseDeleteRange(x)) => scrub(&mut x.header),
            Some(response_op::Response::ResponseTxn(x)) => scrub_txn(x),
            None => {}
        }
    }
}

fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>, f: impl FnOnce(T) -> Answer) -> Answer {
    match r {
        Ok(resp) => f(resp.into_inner()),
        Err(s) => Answer::Error(s.code(), s.message().to_string()),
    }
}

/// Sends `op` (revisions resolved against `current`) and returns the scrubbed answer.
async fn run(kv: &mut KvClient<Channel>, op: &Op, current: i64) -> Answer {
    match op {
        Op::Put {
            key: k,
            value: v,
            prev_kv,
        } => {
            let req = PutRequest {
                key: key(*k),
                value: value(*v),
                prev_kv: *prev_kv,
                ..Default::default()
            };
            answer(kv.put(req).await, |mut r| {
                scrub(&mut r.header);
                Answer::Put(r)
            })
        }
        Op::Delete { span, prev_kv } => {
            let req = DeleteRangeRequest {
                key: span.key(),
                range_end: span.end(),
                prev_kv: *prev_kv,
            };
            answer(kv.delete_range(req).await, |mut r| {
                scrub(&mut r.header);
                Answer::Delete(r)
            })
        }
        Op::Range {
            span,
            rev,
            limit,
            count_only,
            keys_only,
            descending,
        } => {
            let req = RangeRequest {
                key: span.key(),
                range_end: span.end(),
                revision: rev.at(current),
                limit: *limit,
                count_only: *count_only,
                keys_only: *keys_only,
                sort_order: if *descending {
                    SortOrder::Descend
                } else {
                    SortOrder::None
                } as i32,
                sort_target: SortTarget::Key as i32,
                ..Default::default()
            };
            answer(kv.range(req).await, |mut r| {
                scrub(&mut r.header);
                Answer::Range(r)
            })
        }
        Op::Txn {
            key: k,
            target,
            result,
            operand,
            success,
            failure,
        } => {
            let req = txn_request(*k, *target, *result, *operand, success, failure);
            answer(kv.txn(req).await, |mut r| {
                scrub_txn(&mut r);
                Answer::Txn(r)
            })
        }
        Op::Compact { rev, physical } => {
            let req = CompactionRequest {
                revision: match rev {
                    Rev::Current => current,
                    other => other.at(current),
                },
                physical: *physical,
            };
            answer(kv.compact(req).await, |mut r| {
                scrub(&mut r.header);
                Answer::Compact(r.header)
            })
        }
    }
}

/// One `rudder store` member process, killed when dropped.
struct Proc {
    child: Child,
    endpoint: String,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of `n` members on loopback with data under `dir`.
struct Cluster {
    members: Vec<Proc>,
    kv: Vec<KvClient<Channel>>,
    maintenance: Vec<MaintenanceClient<Channel>>,
}

fn spawn(n: usize, dir: &std::path::Path, tag: &str) -> Vec<Proc> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("{tag}{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let name = format!("{tag}{i}");
            let log = dir.join(format!("{name}.log"));
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new(env!("CARGO_BIN_EXE_rudder"))
                .args(["store", "--name", &name, "--data-dir"])
                .arg(dir.join(&name))
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &cluster])
                .env("RUST_BACKTRACE", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("start rudder store");
            Proc {
                child,
                endpoint: client_url,
                log,
            }
        })
        .collect()
}

impl Cluster {
    /// Connects to every member once each serves a serializable read.
    async fn connect(members: Vec<Proc>) -> Cluster {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut kv = Vec::new();
        let mut maintenance = Vec::new();
        for m in &members {
            let channel = loop {
                let attempt = async {
                    let ch = tonic::transport::Endpoint::from_shared(m.endpoint.clone())
                        .ok()?
                        .connect_timeout(Duration::from_secs(1))
                        .timeout(Duration::from_secs(15))
                        .connect()
                        .await
                        .ok()?;
                    let probe = RangeRequest {
                        key: b"probe".to_vec(),
                        serializable: true,
                        ..Default::default()
                    };
                    KvClient::new(ch.clone()).range(probe).await.ok()?;
                    Some(ch)
                };
                match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                    Ok(Some(ch)) => break ch,
                    _ => {
                        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                        assert!(Instant::now() < deadline, "{} never served:\n{log}", m.endpoint);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            kv.push(KvClient::new(channel.clone()));
            maintenance.push(MaintenanceClient::new(channel));
        }
        Cluster {
            members,
            kv,
            maintenance,
        }
    }

    /// Every member's keys at its applied revision, read serializably, once it reached `revision`.
    async fn local_state(&mut self, revision: i64) -> Vec<RangeResponse> {
        let mut out = Vec::new();
        for (i, kv) in self.kv.iter_mut().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let req = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    serializable: true,
                    ..Default::default()
                };
                let mut r = kv.range(req).await.expect("serializable full range").into_inner();
                let at = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
                if at >= revision {
                    scrub(&mut r.header);
                    out.push(r);
                    break;
                }
                let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
                assert!(
                    Instant::now() < deadline,
                    "member {i} stuck at revision {at} < {revision}:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        out
    }

    /// Every member's (HashKV at the current revision, compact revision).
    async fn hashes(&mut self) -> Vec<(u32, i64)> {
        let mut out = Vec::new();
        for (kv, m) in self.kv.iter_mut().zip(self.maintenance.iter_mut()) {
            // HashKV answers from the member's applied state; a linearizable read through the member first
            // makes it apply everything committed so far (a compaction leaves the revision unchanged, so
            // waiting for a revision is not enough).
            let barrier = RangeRequest {
                key: vec![0],
                ..Default::default()
            };
            kv.range(barrier).await.expect("linearizable read");
            let r = m
                .hash_kv(HashKvRequest { revision: 0 })
                .await
                .expect("hashkv")
                .into_inner();
            out.push((r.hash, r.compact_revision));
        }
        out
    }
}

fn current_of(a: &Answer) -> Option<i64> {
    let h = match a {
        Answer::Range(r) => &r.header,
        Answer::Put(r) => &r.header,
        Answer::Delete(r) => &r.header,
        Answer::Txn(r) => &r.header,
        Answer::Compact(h) => h,
        Answer::Error(..) => return None,
    };
    h.as_ref().map(|h| h.revision)
}

async fn check_history(ops: Vec<(Op, usize)>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let single = spawn(1, tmp.path(), "one");
    let triple = spawn(3, tmp.path(), "three");
    let mut one = Cluster::connect(single).await;
    let mut three = Cluster::connect(triple).await;
    let trace = std::env::var_os("RUDDER_MODEL_TRACE").is_some();
    let mut current = 1;
    for (i, (op, member)) in ops.iter().enumerate() {
        let expected = run(&mut one.kv[0], op, current).await;
        let got = run(&mut three.kv[*member % 3], op, current).await;
        prop_assert_eq!(&got, &expected, "op {} {:?} on member {}", i, op, member % 3);
        if trace {
            eprintln!("{i} {op:?} on member {} -> {expected:?}", member % 3);
        }
        if let Some(rev) = current_of(&expected) {
            current = current.max(rev);
        }
    }
    let reference = one.local_state(current).await;
    for (i, state) in three.local_state(current).await.iter().enumerate() {
        prop_assert_eq!(state, &reference[0], "member {} holds different keys", i);
    }
    let reference = one.hashes().await;
    for (i, h) in three.hashes().await.iter().enumerate() {
        prop_assert_eq!(h, &reference[0], "member {} has a different HashKV", i);
    }
    Ok(())
}

#[test]
fn three_members_answer_like_one() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut runner = TestRunner::new(Config {
        cases,
        // Every shrink step starts four processes: stop early.
        max_shrink_iters: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let history = prop::collection::vec((op(), 0usize..3), 40);
    let result = runner.run(&history, |ops| rt.block_on(check_history(ops)));
    if let Err(e) = result {
        panic!("{e}");
    }
}
