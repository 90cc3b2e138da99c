//! The same surface as the etcdctl tests, driven from Rust through the `etcd-client` crate (a second,
//! independent client implementation): KV + txn, watch, leases, compaction, maintenance, cluster,
//! lock and election.

mod common;

use common::*;
use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, Error, EventType, GetOptions, KeyValue,
    LeaseTimeToLiveOptions, LockOptions, ProclaimOptions, PutOptions, ResignOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use std::future::Future;
use std::time::Duration;
use tonic::Code;

const T: Duration = Duration::from_secs(20);

async fn tmo<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(T, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {T:?}: {what}"),
    }
}

fn kv_strs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn rev_of(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response header").revision()
}

fn grpc_code<T: std::fmt::Debug>(r: Result<T, Error>) -> (Code, String) {
    match r {
        Err(Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_txn() {
    let s = Server::start_default();
    let mut c = s.client().await;

    let r = c.get("nothing", None).await.expect("get");
    assert_eq!(rev_of(r.header()), 1);
    assert!(r.kvs().is_empty() && r.count() == 0 && !r.more());
    let h = r.header().expect("header");
    assert!(h.member_id() != 0 && h.cluster_id() != 0 && h.raft_term() >= 1, "{h:?}");

    let p = c.put("a", "1", None).await.expect("put");
    assert_eq!(rev_of(p.header()), 2);
    assert!(p.prev_key().is_none());
    let p = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    let prev = p.prev_key().expect("prev kv");
    assert_eq!((prev.value(), prev.mod_revision(), prev.version()), (&b"1"[..], 2, 1));
    for (k, v) in [("b", "5"), ("c", "4"), ("d", "3"), ("e", "2"), ("f", "1")] {
        c.put(k, v, None).await.expect("put"); // 4..=8
    }
    let g = c.get("a", None).await.expect("get");
    let kv = &g.kvs()[0];
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease()),
        (2, 3, 2, 0)
    );
    assert_eq!(rev_of(g.header()), 8);

    // Ranges.
    let g = c
        .get("b", Some(GetOptions::new().with_range("e")))
        .await
        .expect("range");
    assert_eq!(keys(g.kvs()), ["b", "c", "d"]);
    let g = c
        .get("d", Some(GetOptions::new().with_from_key()))
        .await
        .expect("from key");
    assert_eq!(keys(g.kvs()), ["d", "e", "f"]);
    let g = c
        .get("", Some(GetOptions::new().with_all_keys().with_limit(2)))
        .await
        .expect("all keys");
    assert_eq!(
        (keys(g.kvs()), g.more(), g.count()),
        (vec!["a".to_string(), "b".to_string()], true, 6)
    );
    let g = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(3),
            ),
        )
        .await
        .expect("sorted");
    assert_eq!(
        kv_strs(g.kvs()),
        [
            ("b".into(), "5".into()),
            ("c".into(), "4".into()),
            ("d".into(), "3".into())
        ]
    );
    let g = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_limit(1),
            ),
        )
        .await
        .expect("sorted");
    assert_eq!(keys(g.kvs()), ["f"]);
    let g = c
        .get("", Some(GetOptions::new().with_all_keys().with_count_only()))
        .await
        .expect("count only");
    assert_eq!((g.count(), g.kvs().len()), (6, 0));
    let g = c
        .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
        .await
        .expect("keys only");
    assert_eq!(g.kvs().len(), 6);
    assert!(g.kvs().iter().all(|kv| kv.value().is_empty() && kv.mod_revision() > 0));
    let g = c
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable");
    assert_eq!(g.kvs()[0].value(), b"2");
    let g = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .expect("old revision");
    assert_eq!(g.kvs()[0].value(), b"1");
    // Revision filters.
    let g = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_min_mod_revision(5)
                    .with_max_mod_revision(7),
            ),
        )
        .await
        .expect("mod rev filter");
    assert_eq!(keys(g.kvs()), ["c", "d", "e"]);
    let g = c
        .get("", Some(GetOptions::new().with_all_keys().with_max_create_revision(4)))
        .await
        .expect("create rev filter");
    assert_eq!(keys(g.kvs()), ["a", "b"]);

    // Delete.
    let d = c
        .delete("e", Some(DeleteOptions::new().with_range("g").with_prev_key()))
        .await
        .expect("delete");
    assert_eq!(d.deleted(), 2);
    assert_eq!(
        kv_strs(d.prev_kvs()),
        [("e".into(), "2".into()), ("f".into(), "1".into())]
    );
    assert_eq!(rev_of(d.header()), 9);
    let d = c.delete("zzz", None).await.expect("delete nothing");
    assert_eq!((d.deleted(), rev_of(d.header())), (0, 9));

    // Txn: compares on value / version / create / mod / lease.
    let t = Txn::new()
        .when(vec![
            Compare::value("a", CompareOp::Equal, "2"),
            Compare::version("a", CompareOp::Equal, 2),
            Compare::create_revision("a", CompareOp::Equal, 2),
            Compare::mod_revision("a", CompareOp::Less, 4),
            Compare::lease("a", CompareOp::Equal, 0),
            Compare::version("missing", CompareOp::Equal, 0),
        ])
        .and_then(vec![
            TxnOp::put("a", "3", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("b", None),
            TxnOp::delete("c", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::txn(
                Txn::new()
                    .when(vec![Compare::value("d", CompareOp::Greater, "2")])
                    .and_then(vec![TxnOp::put("nested", "yes", None)]),
            ),
        ])
        .or_else(vec![TxnOp::put("failed", "1", None)]);
    let r = c.txn(t).await.expect("txn");
    assert!(r.succeeded());
    assert_eq!(rev_of(r.header()), 10, "all writes of a txn share one revision");
    let ops = r.op_responses();
    assert_eq!(ops.len(), 4);
    match &ops[0] {
        TxnOpResponse::Put(p) => assert_eq!(p.prev_key().map(|kv| kv.value().to_vec()), Some(b"2".to_vec())),
        other => panic!("expected put response, got {other:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(kv_strs(g.kvs()), [("b".into(), "5".into())]),
        other => panic!("expected range response, got {other:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Delete(d) => assert_eq!((d.deleted(), d.prev_kvs().len()), (1, 1)),
        other => panic!("expected delete response, got {other:?}"),
    }
    match &ops[3] {
        TxnOpResponse::Txn(t) => assert!(t.succeeded()),
        other => panic!("expected txn response, got {other:?}"),
    }
    for (k, want) in [("a", Some("3")), ("c", None), ("nested", Some("yes")), ("failed", None)] {
        let g = c.get(k, None).await.expect("get");
        assert_eq!(
            g.kvs()
                .first()
                .map(|kv| kv.value_str().unwrap_or("").to_string())
                .as_deref(),
            want,
            "{k}"
        );
    }
    let g = c.get("nested", None).await.expect("get");
    assert_eq!(g.kvs()[0].mod_revision(), 10);

    // Failing compare runs the failure branch; range compares.
    let r = c
        .txn(
            Txn::new()
                .when(vec![Compare::version("a", CompareOp::Greater, 0).with_range("z")])
                .and_then(vec![TxnOp::get("a", None)])
                .or_else(vec![TxnOp::put("failed", "1", None)]),
        )
        .await
        .expect("txn");
    assert!(r.succeeded(), "version > 0 holds for every key in [a, z)");
    // A range compare fails if any key in the range fails it.
    let r = c
        .txn(Txn::new().when(vec![Compare::value("a", CompareOp::Greater, "3").with_range("z")]))
        .await
        .expect("txn");
    assert!(!r.succeeded(), "value > \"3\" does not hold for a (= \"3\")");
    let r = c
        .txn(
            Txn::new()
                .when(vec![Compare::value("a", CompareOp::NotEqual, "3")])
                .and_then(vec![TxnOp::put("never", "1", None)])
                .or_else(vec![TxnOp::put("failed", "1", None), TxnOp::get("failed", None)]),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded());
    assert_eq!(rev_of(r.header()), 11);
    match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(
            kv_strs(g.kvs()),
            [("failed".into(), "1".into())],
            "reads see earlier ops of the same txn"
        ),
        other => panic!("{other:?}"),
    }
    // Txn reading at an old revision.
    let r = c
        .txn(Txn::new().and_then(vec![TxnOp::get("a", Some(GetOptions::new().with_revision(2)))]))
        .await
        .expect("txn");
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"1"),
        other => panic!("{other:?}"),
    }
    // etcdctl agrees with what the crate wrote.
    assert_eq!(s.ctl_ok(&["get", "nested"]), "nested\nyes\n");
}

async fn next_resp(stream: &mut WatchStream) -> WatchResponse {
    tmo("watch response", stream.message())
        .await
        .expect("watch stream error")
        .expect("watch stream closed")
}

/// Collect events until `n` have arrived: (type, key, value, mod_revision, prev value).
async fn events(stream: &mut WatchStream, n: usize) -> Vec<(EventType, String, String, i64, Option<String>)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next_resp(stream).await;
        assert!(!r.canceled(), "unexpected cancel: {r:?}");
        for e in r.events() {
            let kv = e.kv().expect("event kv");
            out.push((
                e.event_type(),
                kv.key_str().unwrap_or("?").to_string(),
                kv.value_str().unwrap_or("?").to_string(),
                kv.mod_revision(),
                e.prev_kv().map(|p| p.value_str().unwrap_or("?").to_string()),
            ));
        }
    }
    assert_eq!(out.len(), n, "more events than expected: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_start_revision_prev_kv_and_cancel() {
    let s = Server::start_default();
    let mut c = s.client().await;
    c.put("w/a", "1", None).await.expect("put"); // 2
    c.put("w/a", "2", None).await.expect("put"); // 3
    c.delete("w/a", None).await.expect("delete"); // 4
    c.put("x", "not watched", None).await.expect("put"); // 5

    let (mut watcher, mut stream) = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2).with_prev_key()),
        )
        .await
        .expect("watch");
    assert!(watcher.watch_id() >= 0);
    let ev = events(&mut stream, 3).await;
    assert_eq!(
        ev,
        vec![
            (EventType::Put, "w/a".into(), "1".into(), 2, None),
            (EventType::Put, "w/a".into(), "2".into(), 3, Some("1".into())),
            (EventType::Delete, "w/a".into(), "".into(), 4, Some("2".into())),
        ]
    );
    c.put("w/b", "live", None).await.expect("put");
    let ev = events(&mut stream, 1).await;
    assert_eq!(ev, vec![(EventType::Put, "w/b".into(), "live".into(), 6, None)]);

    // Progress request: a response with no events whose header revision is current.
    watcher.request_progress().await.expect("progress");
    let r = next_resp(&mut stream).await;
    assert!(r.events().is_empty(), "{r:?}");
    assert_eq!(rev_of(r.header()), 6, "{r:?}");

    // Cancel: the server confirms with canceled=true for our watch id and stops sending.
    let id = watcher.watch_id();
    watcher.cancel().await.expect("cancel");
    let r = next_resp(&mut stream).await;
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), id, "{r:?}");
    c.put("w/c", "after cancel", None).await.expect("put");
    match tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
        Err(_) => {}
        Ok(Ok(None)) => {}
        Ok(other) => panic!("no events expected after cancel, got {other:?}"),
    }

    // Filters: NoDelete.
    let (_w2, mut s2) = c
        .watch(
            "f",
            Some(
                WatchOptions::new()
                    .with_filters(vec![WatchFilterType::NoDelete])
                    .with_start_revision(7),
            ),
        )
        .await
        .expect("watch");
    c.put("f", "1", None).await.expect("put");
    c.delete("f", None).await.expect("delete");
    c.put("f", "2", None).await.expect("put");
    let ev = events(&mut s2, 2).await;
    assert_eq!(
        ev.iter().map(|e| (e.0, e.2.clone())).collect::<Vec<_>>(),
        [(EventType::Put, "1".to_string()), (EventType::Put, "2".to_string())]
    );

    // Two watches with different start revisions see consistent histories.
    let (_w3, mut s3) = c
        .watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(1)))
        .await
        .expect("watch");
    let ev = events(&mut s3, 5).await;
    assert_eq!(ev.iter().map(|e| e.3).collect::<Vec<_>>(), [2, 3, 4, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let g = c.lease_grant(60, None).await.expect("grant");
    assert!(g.id() > 0 && g.ttl() == 60 && g.error().is_empty(), "{g:?}");
    let id = g.id();
    c.put("l/1", "a", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put");
    c.put("l/2", "b", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put");

    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!((t.id(), t.granted_ttl()), (id, 60));
    assert!((50..=60).contains(&t.ttl()), "{t:?}");
    let mut ks: Vec<String> = t
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    ks.sort();
    assert_eq!(ks, ["l/1", "l/2"]);
    let t = c.lease_time_to_live(id, None).await.expect("ttl");
    assert!(t.keys().is_empty(), "keys only with the keys option: {t:?}");

    let list = c.leases().await.expect("leases");
    assert_eq!(list.leases().iter().map(|l| l.id()).collect::<Vec<_>>(), [id]);

    // keep_alive: each request gets a response with the full TTL.
    let short = c.lease_grant(3, None).await.expect("grant").id();
    c.put("l/short", "x", Some(PutOptions::new().with_lease(short)))
        .await
        .expect("put");
    let (mut keeper, mut stream) = c.lease_keep_alive(short).await.expect("keep_alive");
    assert_eq!(keeper.id(), short);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        keeper.keep_alive().await.expect("send keep-alive");
        let r = tmo("keep-alive response", stream.message())
            .await
            .expect("stream")
            .expect("open");
        assert_eq!((r.id(), r.ttl()), (short, 3), "{r:?}");
    }
    // 5 s after granting a 3 s lease it is still alive thanks to the keep-alives.
    assert_eq!(c.get("l/short", None).await.expect("get").kvs().len(), 1);
    drop(keeper);
    drop(stream);
    // Without keep-alives it expires and its key goes away.
    let start = std::time::Instant::now();
    loop {
        if c.get("l/short", None).await.expect("get").kvs().is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = c.lease_time_to_live(short, None).await.expect("ttl of expired lease");
    assert_eq!(t.ttl(), -1);

    // Revoke deletes attached keys.
    let before = rev_of(c.get("x", None).await.expect("get").header());
    let r = c.lease_revoke(id).await.expect("revoke");
    assert_eq!(rev_of(r.header()), before + 1, "{r:?}");
    assert!(c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .kvs()
        .is_empty());
    assert!(c.leases().await.expect("leases").leases().is_empty());
    assert_eq!(grpc_code(c.lease_revoke(id).await).0, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_maintenance() {
    let s = Server::start(Opts::new().name("crate-node"));
    let mut c = s.client().await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.expect("put"); // 2..=11
    }
    let st = c.status().await.expect("status");
    let member = st.header().expect("header").member_id();
    assert_eq!(st.leader(), member);
    assert!(st.version().starts_with("3."), "{st:?}");
    assert!(st.db_size() > 0 && st.raft_index() > 0 && st.raft_term() > 0, "{st:?}");
    assert!(
        st.raft_applied_index() >= st.raft_index() || st.raft_applied_index() > 0,
        "{st:?}"
    );
    assert!(st.errors().is_empty(), "{st:?}");
    assert_eq!(rev_of(st.header()), 11);

    // hash_kv is deterministic for a revision and changes with new writes.
    let h1 = c.hash_kv(0).await.expect("hash_kv");
    let h2 = c.hash_kv(11).await.expect("hash_kv");
    assert_eq!(h1.hash(), h2.hash(), "hash_kv(0) is the current revision");
    assert!(h1.hash() != 0);
    let h_old = c.hash_kv(5).await.expect("hash_kv old rev");
    assert_ne!(h_old.hash(), h1.hash(), "different revisions should hash differently");

    // Compaction.
    let r = c
        .compact(6, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_eq!(rev_of(r.header()), 11);
    let (code, msg) = grpc_code(c.get("k", Some(GetOptions::new().with_revision(5))).await);
    assert_eq!(
        (code, msg.as_str()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    let g = c
        .get("k", Some(GetOptions::new().with_revision(6)))
        .await
        .expect("at compact rev");
    assert_eq!(g.kvs()[0].value(), b"v4");
    let h3 = c.hash_kv(11).await.expect("hash_kv after compaction");
    assert_eq!(h3.compact_version(), 6, "{h3:?}");
    let (code, _) = grpc_code(c.hash_kv(5).await);
    assert_eq!(code, Code::OutOfRange);

    // Defragment keeps data and hashes.
    c.defragment().await.expect("defragment");
    let h4 = c.hash_kv(11).await.expect("hash_kv after defrag");
    assert_eq!(h4.hash(), h3.hash(), "defrag must not change content");
    assert_eq!(c.get("k", None).await.expect("get").kvs()[0].value(), b"v9");

    // Alarms: none.
    let a = c
        .alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
        .await
        .expect("alarm get");
    assert!(a.alarms().is_empty(), "{a:?}");

    // Cluster.
    let m = c.member_list().await.expect("member_list");
    assert_eq!(m.members().len(), 1);
    let me = &m.members()[0];
    assert_eq!(me.id(), member);
    assert_eq!(me.name(), "crate-node");
    assert_eq!(me.client_urls(), [s.client_url()]);
    assert_eq!(me.peer_urls(), [format!("http://127.0.0.1:{}", s.peer_port)]);
    assert!(!me.is_learner());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election() {
    let s = Server::start_default();
    let mut c1 = s.client().await;
    let mut c2 = s.client().await;

    // Lock: the holder's key lives under the lock name and is bound to its lease.
    let l1 = c1.lease_grant(30, None).await.expect("grant").id();
    let l2 = c2.lease_grant(30, None).await.expect("grant").id();
    let k1 = c1
        .lock("crate-lock", Some(LockOptions::new().with_lease(l1)))
        .await
        .expect("lock")
        .key()
        .to_vec();
    assert!(k1.starts_with(b"crate-lock/"), "{:?}", String::from_utf8_lossy(&k1));
    let g = c1.get(k1.clone(), None).await.expect("get");
    assert_eq!(g.kvs()[0].lease(), l1);

    // A second locker blocks until the first unlocks.
    let mut c2b = c2.clone();
    let waiter = tokio::spawn(async move {
        c2b.lock("crate-lock", Some(LockOptions::new().with_lease(l2)))
            .await
            .map(|r| r.key().to_vec())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiter.is_finished(), "second lock must wait while the first is held");
    c1.unlock(k1.clone()).await.expect("unlock");
    let k2 = tmo("second lock", waiter).await.expect("join").expect("lock 2");
    assert!(k2.starts_with(b"crate-lock/") && k2 != k1);
    assert!(
        c1.get(k1.clone(), None).await.expect("get").kvs().is_empty(),
        "unlock deletes the key"
    );

    // Revoking the holder's lease also releases the lock.
    let mut c1b = c1.clone();
    let waiter = tokio::spawn(async move {
        c1b.lock("crate-lock", Some(LockOptions::new().with_lease(l1)))
            .await
            .map(|r| r.key().to_vec())
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!waiter.is_finished());
    c2.lease_revoke(l2).await.expect("revoke");
    tmo("lock after revoke", waiter).await.expect("join").expect("lock 3");

    // Election.
    let e1 = c1.lease_grant(30, None).await.expect("grant").id();
    let e2 = c2.lease_grant(30, None).await.expect("grant").id();
    let r = c1.campaign("crate-elect", "alpha", e1).await.expect("campaign");
    let leader = r.leader().expect("leader key").clone();
    assert_eq!(leader.name(), b"crate-elect");
    assert_eq!(leader.lease(), e1);
    assert!(leader.key().starts_with(b"crate-elect/"));
    let lr = c2.leader("crate-elect").await.expect("leader");
    assert_eq!(lr.kv().expect("kv").value(), b"alpha");

    let mut obs = c2.observe("crate-elect").await.expect("observe");
    let first = tmo("observe", obs.message()).await.expect("observe").expect("open");
    assert_eq!(first.kv().expect("kv").value(), b"alpha");

    c1.proclaim("beta", Some(ProclaimOptions::new().with_leader(leader.clone())))
        .await
        .expect("proclaim");
    let next = tmo("observe proclaim", obs.message())
        .await
        .expect("observe")
        .expect("open");
    assert_eq!(next.kv().expect("kv").value(), b"beta");
    assert_eq!(
        c2.leader("crate-elect")
            .await
            .expect("leader")
            .kv()
            .expect("kv")
            .value(),
        b"beta"
    );

    // A second candidate waits; resigning hands over leadership.
    let mut c2b = c2.clone();
    let cand = tokio::spawn(async move { c2b.campaign("crate-elect", "gamma", e2).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!cand.is_finished(), "second campaign must wait");
    c1.resign(Some(ResignOptions::new().with_leader(leader)))
        .await
        .expect("resign");
    let r2 = tmo("second campaign", cand).await.expect("join").expect("campaign 2");
    assert_eq!(r2.leader().expect("leader").lease(), e2);
    let next = tmo("observe new leader", obs.message())
        .await
        .expect("observe")
        .expect("open");
    assert_eq!(next.kv().expect("kv").value(), b"gamma");

    // Leader on an election nobody campaigns in.
    let (code, msg) = grpc_code(c1.leader("no-such-election").await);
    assert_eq!((code, msg.as_str()), (Code::Unknown, "election: no leader"));
}
