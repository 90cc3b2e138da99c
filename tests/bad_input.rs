//! Invalid requests get etcd's exact gRPC status codes and messages (which etcdctl and clientv3
//! map back to typed errors), and never disturb the server or earlier data.
//! Server flags: --max-request-bytes 1048576 --max-txn-ops 3.

mod common;

use common::*;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, LeaseGrantOptions, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use std::time::Duration;
use tonic::Code;

const MAX_REQUEST: u64 = 1024 * 1024;
const MAX_TXN_OPS: u64 = 3;

fn start() -> Server {
    Server::start(Opts::new().max_request_bytes(MAX_REQUEST).max_txn_ops(MAX_TXN_OPS))
}

/// The gRPC status of a failed call.
fn status<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) -> tonic::Status {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(Error::GRpcStatus(s)) => s,
        Err(e) => panic!("{what}: expected a gRPC status, got {e:?}"),
    }
}

fn assert_status<T: std::fmt::Debug>(what: &str, r: Result<T, Error>, code: Code, msg: &str) {
    let s = status(what, r);
    assert_eq!((s.code(), s.message()), (code, msg), "{what}: {s:?}");
}

/// Seed data written before the bad requests; checked after each one.
async fn seed(c: &mut Client) -> i64 {
    for i in 0..10 {
        c.put(format!("base/{i}"), format!("v{i}"), None)
            .await
            .expect("seed put");
    }
    c.get("base/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

async fn still_serving(c: &mut Client, what: &str) {
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let resp = c.get("base/", Some(GetOptions::new().with_prefix())).await?;
        let got: Vec<(String, String)> = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap_or("?").to_string(),
                    kv.value_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = (0..10).map(|i| (format!("base/{i}"), format!("v{i}"))).collect();
        assert_eq!(got, want, "earlier data changed after: {what}");
        // Every seed key still has version 1 (nothing partially applied).
        assert!(
            resp.kvs().iter().all(|kv| kv.version() == 1),
            "seed keys modified after {what}"
        );
        let p = c.put("probe", what, None).await?;
        let g = c.get("probe", None).await?;
        assert_eq!(g.kvs()[0].value_str().unwrap_or(""), what);
        assert_eq!(
            g.kvs()[0].mod_revision(),
            p.header().map(|h| h.revision()).unwrap_or(-1)
        );
        Ok::<(), Error>(())
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("server not serving after {what}: {e:?}"),
        Err(_) => panic!("server not serving after {what}: timed out"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests() {
    let s = start();
    let mut c = s.client().await;
    seed(&mut c).await;

    // Just under the limit is fine.
    let ok = vec![b'a'; 900 * 1024];
    c.put("big/ok", ok.clone(), None)
        .await
        .expect("900 KiB put under a 1 MiB limit");
    let g = c.get("big/ok", None).await.expect("get");
    assert_eq!(g.kvs()[0].value().len(), ok.len());
    still_serving(&mut c, "900 KiB put").await;

    // Over --max-request-bytes (but under the gRPC receive limit of max + 512 KiB): etcdserver error.
    let big = vec![b'b'; 1200 * 1024];
    assert_status(
        "1.2 MiB put",
        c.put("big/no", big.clone(), None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    still_serving(&mut c, "1.2 MiB put").await;
    let out = s.ctl_stdin(&["put", "big/no"], &big);
    assert_eq!(
        out.error_message().as_deref(),
        Some("etcdserver: request is too large"),
        "{out}"
    );
    still_serving(&mut c, "1.2 MiB etcdctl put").await;

    // The limit applies to the whole request, e.g. a txn of individually small puts.
    let part = vec![b'c'; 400 * 1024];
    let txn = Txn::new().and_then(vec![
        TxnOp::put("big/t1", part.clone(), None),
        TxnOp::put("big/t2", part.clone(), None),
        TxnOp::put("big/t3", part.clone(), None),
    ]);
    assert_status(
        "1.2 MiB txn",
        c.txn(txn).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    assert!(c
        .get("big/t", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .kvs()
        .is_empty());
    still_serving(&mut c, "1.2 MiB txn").await;

    // Far over (2 MiB > max-request-bytes + 512 KiB gRPC overhead): rejected by the gRPC layer.
    let huge = vec![b'd'; 2 * 1024 * 1024];
    let st = status("2 MiB put", c.put("big/huge", huge, None).await);
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    still_serving(&mut c, "2 MiB put").await;
    assert!(c.get("big/no", None).await.expect("get").kvs().is_empty());
    assert!(c.get("big/huge", None).await.expect("get").kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_txn_ops() {
    let s = start();
    let mut c = s.client().await;
    seed(&mut c).await;
    let msg = "etcdserver: too many operations in txn request";

    let puts = |n: usize, p: &str| {
        (0..n)
            .map(|i| TxnOp::put(format!("{p}{i}"), "x", None))
            .collect::<Vec<_>>()
    };
    assert_status(
        "4 success ops",
        c.txn(Txn::new().and_then(puts(4, "t/s"))).await,
        Code::InvalidArgument,
        msg,
    );
    still_serving(&mut c, "4 success ops").await;
    assert_status(
        "4 failure ops",
        c.txn(Txn::new().or_else(puts(4, "t/f"))).await,
        Code::InvalidArgument,
        msg,
    );
    still_serving(&mut c, "4 failure ops").await;
    let cmps: Vec<Compare> = (0..4)
        .map(|i| Compare::version(format!("base/{i}"), CompareOp::Equal, 1))
        .collect();
    assert_status(
        "4 compares",
        c.txn(Txn::new().when(cmps)).await,
        Code::InvalidArgument,
        msg,
    );
    still_serving(&mut c, "4 compares").await;
    assert!(c
        .get("t/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .kvs()
        .is_empty());

    // The limit is per list: 3 compares + 3 success + 3 failure is fine.
    let cmps: Vec<Compare> = (0..3)
        .map(|i| Compare::version(format!("base/{i}"), CompareOp::Equal, 1))
        .collect();
    let r = c
        .txn(Txn::new().when(cmps).and_then(puts(3, "t/s")).or_else(puts(3, "t/f")))
        .await
        .expect("3/3/3 txn must be accepted");
    assert!(r.succeeded());
    assert_eq!(
        c.get("t/s", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get")
            .kvs()
            .len(),
        3
    );

    // Same through etcdctl.
    let out = s.ctl_stdin(&["txn"], b"\nput a 1\nput b 2\nput c 3\nput d 4\n\n\n");
    assert_eq!(out.error_message().as_deref(), Some(msg), "{out}");
    still_serving(&mut c, "etcdctl 4-op txn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_duplicate_keys() {
    let s = start();
    let mut c = s.client().await;
    seed(&mut c).await;
    let empty = "etcdserver: key is not provided";
    assert_status(
        "put empty key",
        c.put("", "v", None).await,
        Code::InvalidArgument,
        empty,
    );
    assert_status("get empty key", c.get("", None).await, Code::InvalidArgument, empty);
    assert_status(
        "delete empty key",
        c.delete("", None).await,
        Code::InvalidArgument,
        empty,
    );
    assert_status(
        "txn put empty key",
        c.txn(Txn::new().and_then(vec![TxnOp::put("", "v", None)])).await,
        Code::InvalidArgument,
        empty,
    );
    assert_eq!(s.ctl_err(&["put", "", "x"]), empty);
    assert_eq!(s.ctl_err(&["get", ""]), empty);
    still_serving(&mut c, "empty keys").await;

    let dup = "etcdserver: duplicate key given in txn request";
    let rev = c.get("x", None).await.expect("get").header().expect("h").revision();
    assert_status(
        "put+put same key",
        c.txn(Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await,
        Code::InvalidArgument,
        dup,
    );
    assert_status(
        "put+delete same key",
        c.txn(Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::delete("d", None)]))
            .await,
        Code::InvalidArgument,
        dup,
    );
    assert_status(
        "put inside a deleted range",
        c.txn(Txn::new().and_then(vec![
            TxnOp::delete("base/", Some(DeleteOptions::new().with_prefix())),
            TxnOp::put("base/5", "x", None),
        ]))
        .await,
        Code::InvalidArgument,
        dup,
    );
    assert_status(
        "duplicate put in the failure branch",
        c.txn(Txn::new().or_else(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await,
        Code::InvalidArgument,
        dup,
    );
    let out = s.ctl_stdin(&["txn"], b"\nput d 1\nput d 2\n\n\n");
    assert_eq!(out.error_message().as_deref(), Some(dup), "{out}");
    // Nothing was applied.
    let now = c.get("x", None).await.expect("get").header().expect("h").revision();
    assert_eq!(now, rev, "rejected txns must not create revisions");
    still_serving(&mut c, "duplicate keys").await;

    // Not duplicates: put+get of one key, and the same key in different branches.
    let r = c
        .txn(Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::get("d", None)]))
        .await
        .expect("put+get same key is allowed");
    assert!(r.succeeded());
    let r = c
        .txn(
            Txn::new()
                .when(vec![Compare::value("d", CompareOp::Equal, "1")])
                .and_then(vec![TxnOp::put("d", "2", None)])
                .or_else(vec![TxnOp::put("d", "3", None)]),
        )
        .await
        .expect("same key in both branches is allowed");
    assert!(r.succeeded());
    assert_eq!(
        c.get("d", None).await.expect("get").kvs()[0].value_str().unwrap_or(""),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_invalid_leases() {
    let s = start();
    let mut c = s.client().await;
    seed(&mut c).await;
    let not_found = "etcdserver: requested lease not found";
    let unknown: i64 = 0x1234_5678;
    assert_status(
        "put with unknown lease",
        c.put("l", "v", Some(PutOptions::new().with_lease(unknown))).await,
        Code::NotFound,
        not_found,
    );
    assert!(c.get("l", None).await.expect("get").kvs().is_empty());
    assert_status(
        "revoke unknown lease",
        c.lease_revoke(unknown).await,
        Code::NotFound,
        not_found,
    );
    assert_eq!(
        s.ctl_err(&["put", "l", "v", &format!("--lease={unknown:x}")]),
        not_found
    );
    still_serving(&mut c, "unknown lease").await;

    // TimeToLive of an unknown lease is not an error: TTL -1.
    let ttl = c
        .lease_time_to_live(unknown, None)
        .await
        .expect("time_to_live of unknown lease");
    assert_eq!(ttl.ttl(), -1, "{ttl:?}");
    // KeepAlive of an unknown lease is not a stream error: the server answers with TTL 0, which
    // etcd-client turns into LeaseKeepAliveError (a gRPC error would surface as GRpcStatus).
    match c.lease_keep_alive(unknown).await {
        Err(Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        other => panic!("keep-alive of an unknown lease: expected a TTL<=0 response, got {other:?}"),
    }

    // Granting an ID that exists.
    let g = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x77)))
        .await
        .expect("grant with id");
    assert_eq!((g.id(), g.ttl()), (0x77, 60));
    assert_status(
        "grant duplicate id",
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x77))).await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    // TTL above etcd's maximum (9,000,000,000 s).
    assert_status(
        "grant huge ttl",
        c.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    still_serving(&mut c, "lease errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_and_compacted_revisions() {
    let s = start();
    let mut c = s.client().await;
    let rev = seed(&mut c).await;
    let future = "etcdserver: mvcc: required revision is a future revision";
    let compacted = "etcdserver: mvcc: required revision has been compacted";

    assert_status(
        "get future rev",
        c.get("base/1", Some(GetOptions::new().with_revision(rev + 1))).await,
        Code::OutOfRange,
        future,
    );
    assert_status(
        "txn get at future rev",
        c.txn(Txn::new().and_then(vec![TxnOp::get(
            "base/1",
            Some(GetOptions::new().with_revision(rev + 100)),
        )]))
        .await,
        Code::OutOfRange,
        future,
    );
    assert_status(
        "compact future rev",
        c.compact(rev + 1, None).await,
        Code::OutOfRange,
        future,
    );
    assert_eq!(s.ctl_err(&["get", "base/1", "--rev", &(rev + 5).to_string()]), future);
    still_serving(&mut c, "future revisions").await;

    let now = c.get("x", None).await.expect("get").header().expect("h").revision();
    c.compact(now - 2, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_status(
        "get compacted rev",
        c.get("base/1", Some(GetOptions::new().with_revision(now - 3))).await,
        Code::OutOfRange,
        compacted,
    );
    assert_status(
        "compact again",
        c.compact(now - 2, None).await,
        Code::OutOfRange,
        compacted,
    );
    still_serving(&mut c, "compacted revisions").await;

    // A watch from a compacted revision: created, then canceled with the compact revision.
    let (_w, mut stream) = c
        .watch("base/", Some(WatchOptions::new().with_prefix().with_start_revision(2)))
        .await
        .expect("watch creation succeeds even if the revision is compacted");
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("cancel in time")
        .expect("watch response")
        .expect("stream open");
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(
        resp.compact_revision(),
        now - 2,
        "clients detect compaction by compact_revision: {resp:?}"
    );
    // etcd 3.4 leaves cancel_reason empty here (3.5 fills it in); either is acceptable.
    assert!(["", compacted].contains(&resp.cancel_reason()), "{resp:?}");
    assert!(resp.events().is_empty(), "{resp:?}");
    still_serving(&mut c, "compacted watch").await;
}
