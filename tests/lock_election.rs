//! etcd's concurrency services (`v3lockpb.Lock`, `v3electionpb.Election`) through the `etcd-client`
//! crate: mutual exclusion and hand-over, leases ending a hold, abandoned waits cleaning up after
//! themselves, and the election's campaign / leader / proclaim / observe / resign cycle with etcd's
//! errors. Calibrated against Debian's etcd 3.4 (`RUDDER_E2E_TARGET=etcd`).

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use etcd_client::{Client, Error, LeaderKey, LockOptions, ObserveStream, ProclaimOptions, ResignOptions};
use tokio::task::JoinHandle;
use tonic::Code;

/// Upper bound for anything that should happen promptly.
const T: Duration = Duration::from_secs(20);
/// How long a blocked call is given to (wrongly) return before we call it blocked.
const BLOCKED: Duration = Duration::from_millis(1200);

async fn tmo<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(T, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {T:?}: {what}"),
    }
}

fn grpc_err<V: std::fmt::Debug>(r: Result<V, Error>) -> (Code, String) {
    match r {
        Err(Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("lease grant").id()
}

/// Locks `name` with `lease` in the background, answering the holder's key.
fn lock_in_background(c: &Client, name: &str, lease: i64) -> JoinHandle<Result<Vec<u8>, Error>> {
    let mut c = c.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        c.lock(name, Some(LockOptions::new().with_lease(lease)))
            .await
            .map(|r| r.key().to_vec())
    })
}

async fn lock(c: &mut Client, name: &str, lease: i64) -> Vec<u8> {
    tmo("lock", c.lock(name, Some(LockOptions::new().with_lease(lease))))
        .await
        .expect("lock")
        .key()
        .to_vec()
}

async fn assert_blocked<V>(what: &str, h: &JoinHandle<V>) {
    tokio::time::sleep(BLOCKED).await;
    assert!(!h.is_finished(), "{what} must still be waiting");
}

async fn exists(c: &mut Client, key: &[u8]) -> bool {
    !c.get(key, None).await.expect("get").kvs().is_empty()
}

/// Waits until `key` is gone (a server-side cleanup runs after the client has moved on).
async fn wait_gone(c: &mut Client, key: &[u8]) {
    let deadline = tokio::time::Instant::now() + T;
    while exists(c, key).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was never removed",
            text(key)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn next_value(obs: &mut ObserveStream) -> String {
    let resp = tmo("observe", obs.message())
        .await
        .expect("observe")
        .expect("observe stream open");
    text(resp.kv().expect("observed kv").value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_exclusive_and_handed_over_on_unlock() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let l1 = grant(&mut c, 60).await;
    let l2 = grant(&mut c, 60).await;

    let r = tmo("lock", c.lock("mtx", Some(LockOptions::new().with_lease(l1))))
        .await
        .expect("lock");
    let k1 = r.key().to_vec();
    assert_eq!(text(&k1), format!("mtx/{l1:x}"), "key is name/<lease in hex>");
    let held = c.get(k1.clone(), None).await.expect("get");
    let kv = &held.kvs()[0];
    assert_eq!((kv.lease(), kv.value()), (l1, &b""[..]));
    assert_eq!(
        r.header().expect("header").revision(),
        kv.create_revision(),
        "an uncontended lock answers at the revision that created its key"
    );

    // The second contender queues behind the holder with its own key.
    let waiter = lock_in_background(&c, "mtx", l2);
    assert_blocked("second lock", &waiter).await;
    let k2 = format!("mtx/{l2:x}").into_bytes();
    assert!(exists(&mut c, &k2).await, "a waiting contender has its key in place");

    let unlocked = c.unlock(k1.clone()).await.expect("unlock");
    let unlock_rev = unlocked.header().expect("header").revision();
    assert!(!exists(&mut c, &k1).await, "unlock deletes the holder's key");
    assert_eq!(tmo("second lock", waiter).await.expect("join").expect("lock 2"), k2);

    // Locking again with the lease that holds the lock is the same acquisition.
    let again = tmo("relock", c.lock("mtx", Some(LockOptions::new().with_lease(l2))))
        .await
        .expect("relock");
    assert_eq!(again.key(), &k2[..]);
    assert!(again.header().expect("header").revision() >= unlock_rev);

    // A third contender waits for the new holder in turn.
    let l3 = grant(&mut c, 60).await;
    let waiter = lock_in_background(&c, "mtx", l3);
    assert_blocked("third lock", &waiter).await;
    c.unlock(k2).await.expect("unlock 2");
    assert_eq!(
        tmo("third lock", waiter).await.expect("join").expect("lock 3"),
        format!("mtx/{l3:x}").into_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_by_a_lease_ends_with_the_lease() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let l1 = grant(&mut c, 60).await;
    let l2 = grant(&mut c, 60).await;

    let k1 = lock(&mut c, "leased", l1).await;
    let waiter = lock_in_background(&c, "leased", l2);
    assert_blocked("second lock", &waiter).await;
    c.lease_revoke(l1).await.expect("revoke");
    let k2 = tmo("lock after revoke", waiter).await.expect("join").expect("lock 2");
    assert_eq!(text(&k2), format!("leased/{l2:x}"));
    assert!(
        !exists(&mut c, &k1).await,
        "revoking the lease deleted the holder's key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_whose_lease_ends_fails() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let l1 = grant(&mut c, 60).await;
    let l2 = grant(&mut c, 60).await;

    let k1 = lock(&mut c, "expiring", l1).await;
    let waiter = lock_in_background(&c, "expiring", l2);
    assert_blocked("second lock", &waiter).await;
    c.lease_revoke(l2).await.expect("revoke the waiter's lease");
    c.unlock(k1).await.expect("unlock");
    let got = tmo("waiter", waiter).await.expect("join");
    if target() == Target::Etcd && got.is_ok() {
        // etcd 3.4.23 predates the mutex's "session is expired" check (later etcd has it) and hands
        // out the lock on a key that no longer exists.
        return;
    }
    let (code, msg) = grpc_err(got);
    assert_eq!((code, msg.as_str()), (Code::Unknown, "mutex: session is expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_remove_their_keys() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let l1 = grant(&mut c, 60).await;
    let l2 = grant(&mut c, 60).await;

    // A lock waiter that gives up takes its key with it, so it does not block later contenders.
    let k1 = lock(&mut c, "gaveup", l1).await;
    let mut c2 = c.clone();
    let gave_up = tokio::time::timeout(BLOCKED, c2.lock("gaveup", Some(LockOptions::new().with_lease(l2)))).await;
    assert!(gave_up.is_err(), "the lock must still be waiting: {gave_up:?}");
    wait_gone(&mut c, format!("gaveup/{l2:x}").as_bytes()).await;
    assert!(exists(&mut c, &k1).await, "the holder keeps its lock");

    // Likewise a candidate that gives up withdraws its candidacy.
    let e1 = grant(&mut c, 60).await;
    let e2 = grant(&mut c, 60).await;
    tmo("campaign", c.campaign("gaveup-el", "one", e1))
        .await
        .expect("campaign");
    let gave_up = tokio::time::timeout(BLOCKED, c2.campaign("gaveup-el", "two", e2)).await;
    assert!(gave_up.is_err(), "the campaign must still be waiting: {gave_up:?}");
    wait_gone(&mut c, format!("gaveup-el/{e2:x}").as_bytes()).await;
    let leader = c.leader("gaveup-el").await.expect("leader");
    assert_eq!(leader.kv().expect("kv").value(), b"one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_errors_and_lease_defaults() {
    let s = Server::start_default();
    let mut c = s.client().await;

    let (code, msg) = grpc_err(c.lock("nolease", Some(LockOptions::new().with_lease(0x7777))).await);
    // Unknown, not NotFound: etcd's lock server relays the store's error as a plain error.
    assert_eq!(
        (code, msg.as_str()),
        (Code::Unknown, "etcdserver: requested lease not found")
    );

    // No lease given: the server binds the lock to a fresh 60-second lease of its own.
    let key = tmo("lock", c.lock("nolease", None)).await.expect("lock").key().to_vec();
    let kv = c.get(key.clone(), None).await.expect("get").kvs()[0].clone();
    assert_ne!(kv.lease(), 0);
    assert_eq!(text(&key), format!("nolease/{:x}", kv.lease()));
    let ttl = c.lease_time_to_live(kv.lease(), None).await.expect("ttl");
    assert_eq!(ttl.granted_ttl(), 60);
    c.unlock(key.clone()).await.expect("unlock");
    assert!(!exists(&mut c, &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_cycle() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let e1 = grant(&mut c, 60).await;
    let e2 = grant(&mut c, 60).await;

    let (code, msg) = grpc_err(c.leader("el").await);
    assert_eq!((code, msg.as_str()), (Code::Unknown, "election: no leader"));

    // An observer started before anyone campaigns sees the first leader. (etcd only answers the
    // Observe call, headers included, with its first message, so it cannot be awaited first.)
    let mut co = c.clone();
    let observer = tokio::spawn(async move { co.observe("el").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = tmo("campaign", c.campaign("el", "alpha", e1)).await.expect("campaign");
    let mut obs = tmo("observe", observer).await.expect("join").expect("observe");
    let leader = r.leader().expect("leader key").clone();
    assert_eq!(
        (leader.name(), text(leader.key()), leader.lease()),
        (&b"el"[..], format!("el/{e1:x}"), e1)
    );
    assert_eq!(leader.rev(), r.header().expect("header").revision());
    assert_eq!(next_value(&mut obs).await, "alpha");

    let lr = c.leader("el").await.expect("leader");
    let kv = lr.kv().expect("kv");
    assert_eq!(
        (kv.key(), kv.value(), kv.create_revision()),
        (leader.key(), &b"alpha"[..], leader.rev())
    );

    // Proclaiming changes the value; the observer sees it.
    c.proclaim("beta", Some(ProclaimOptions::new().with_leader(leader.clone())))
        .await
        .expect("proclaim");
    assert_eq!(next_value(&mut obs).await, "beta");
    let lr = c.leader("el").await.expect("leader");
    assert_eq!(lr.kv().expect("kv").value(), b"beta");

    // Campaigning again with the leader's lease resumes the same leadership with the new value.
    let again = tmo("re-campaign", c.campaign("el", "beta2", e1))
        .await
        .expect("campaign");
    assert_eq!(again.leader().expect("leader").rev(), leader.rev());
    assert_eq!(next_value(&mut obs).await, "beta2");

    // A second candidate waits; a stale or forged leadership can neither proclaim nor resign.
    let mut c2 = c.clone();
    let cand = tokio::spawn(async move { c2.campaign("el", "gamma", e2).await });
    assert_blocked("second campaign", &cand).await;
    let forged = LeaderKey::new()
        .with_name("el")
        .with_key(leader.key().to_vec())
        .with_rev(leader.rev() + 1000)
        .with_lease(e1);
    let (code, msg) = grpc_err(
        c.proclaim("forged", Some(ProclaimOptions::new().with_leader(forged.clone())))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::Unknown, "election: not leader"));
    c.resign(Some(ResignOptions::new().with_leader(forged)))
        .await
        .expect("resigning a leadership one does not hold is not an error");
    assert!(!cand.is_finished());

    // Resigning hands leadership to the waiting candidate.
    c.resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await
        .expect("resign");
    let r2 = tmo("second campaign", cand).await.expect("join").expect("campaign 2");
    let leader2 = r2.leader().expect("leader").clone();
    assert_eq!((text(leader2.key()), leader2.lease()), (format!("el/{e2:x}"), e2));
    assert!(leader2.rev() > leader.rev());
    assert_eq!(next_value(&mut obs).await, "gamma");

    // The old leadership is over for good.
    let (code, msg) = grpc_err(
        c.proclaim("late", Some(ProclaimOptions::new().with_leader(leader)))
            .await,
    );
    assert_eq!((code, msg.as_str()), (Code::Unknown, "election: not leader"));

    // The leader's lease ending also ends the leadership; the observer follows.
    let e3 = grant(&mut c, 60).await;
    let mut c3 = c.clone();
    let cand = tokio::spawn(async move { c3.campaign("el", "delta", e3).await });
    assert_blocked("third campaign", &cand).await;
    c.lease_revoke(e2).await.expect("revoke");
    let r3 = tmo("third campaign", cand).await.expect("join").expect("campaign 3");
    assert_eq!(r3.leader().expect("leader").lease(), e3);
    assert_eq!(next_value(&mut obs).await, "delta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_requires_a_leader_key() {
    let s = Server::start_default();
    let mut c = s.client().await;
    let missing = (Code::Unknown, "\"leader\" field must be provided".to_string());
    assert_eq!(grpc_err(c.proclaim("v", None).await), missing);
    assert_eq!(grpc_err(c.resign(None).await), missing);
}
