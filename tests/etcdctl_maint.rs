//! Maintenance and cluster surface through etcdctl: endpoint status/health, defrag, alarms,
//! member list, `check perf`, `lock`, `elect`, and the HTTP /health and /metrics endpoints.

mod common;

use common::*;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// `check perf` measures latency; it takes the write side so no other test of this binary runs
/// concurrently with it on a small machine. Every other test takes the read side.
static PERF_GATE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    PERF_GATE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    PERF_GATE.write().unwrap_or_else(|e| e.into_inner())
}

fn status(s: &Server) -> Value {
    let v = s.ctl_json(&["endpoint", "status"]);
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("endpoint status -w json is an array: {v}"));
    assert_eq!(arr.len(), 1, "{v}");
    assert_eq!(arr[0]["Endpoint"].as_str(), Some(s.endpoint().as_str()), "{v}");
    arr[0]["Status"].clone()
}

#[test]
fn endpoint_status_and_health() {
    let _g = shared();
    let s = Server::start(Opts::new().name("maint-node"));
    s.ctl_ok(&["put", "a", "1"]);
    let st = status(&s);
    let version = st["version"].as_str().unwrap_or_else(|| panic!("no version: {st}"));
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (3, 4),
        "server version must be >= 3.4 for etcdctl/kube compatibility: {st}"
    );
    assert!(st["dbSize"].as_i64().unwrap_or(0) > 0, "{st}");
    let member = st["header"]["member_id"].as_u64().unwrap_or(0);
    assert!(member != 0, "{st}");
    assert_eq!(
        st["leader"].as_u64(),
        Some(member),
        "single member must be its own leader: {st}"
    );
    let raft_index = st["raftIndex"].as_u64().unwrap_or(0);
    let raft_term = st["raftTerm"].as_u64().unwrap_or(0);
    assert!(raft_index > 0 && raft_term > 0, "{st}");
    assert_eq!(st["header"]["revision"].as_i64(), Some(2), "{st}");
    assert!(st.get("errors").is_none(), "no alarms expected: {st}");

    // Writes advance the raft index; the term is stable without elections.
    for i in 0..3 {
        s.ctl_ok(&["put", "a", &i.to_string()]);
    }
    let st2 = status(&s);
    assert!(
        st2["raftIndex"].as_u64().unwrap_or(0) >= raft_index + 3,
        "{st} -> {st2}"
    );
    assert_eq!(st2["raftTerm"].as_u64(), Some(raft_term), "{st} -> {st2}");
    assert_eq!(st2["header"]["revision"].as_i64(), Some(5), "{st2}");

    // Table/simple output lists the endpoint, hex member id, version.
    let out = s.ctl_ok(&["endpoint", "status"]);
    let fields: Vec<&str> = out.trim_end().split(", ").collect();
    assert_eq!(fields[0], s.endpoint(), "{out:?}");
    assert_eq!(fields[1], format!("{member:x}"), "{out:?}");
    assert_eq!(fields[2], version, "{out:?}");
    assert_eq!(fields[4], "true", "is leader: {out:?}");

    // endpoint health: simple output goes to stderr in 3.4; -w json to stdout.
    let out = s.ctl(&["endpoint", "health"]);
    assert!(out.success(), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!(
            "{} is healthy: successfully committed proposal: took = ",
            s.endpoint()
        )),
        "{out}"
    );
    let v = s.ctl_json(&["endpoint", "health"]);
    assert_eq!(v[0]["health"].as_bool(), Some(true), "{v}");
    assert_eq!(v[0]["endpoint"].as_str(), Some(s.endpoint().as_str()), "{v}");

    // hashkv is stable for the same revision.
    let h1 = s.ctl_json(&["endpoint", "hashkv"]);
    let h2 = s.ctl_json(&["endpoint", "hashkv"]);
    assert_eq!(h1[0]["HashKV"]["hash"], h2[0]["HashKV"]["hash"], "{h1} vs {h2}");
    assert!(h1[0]["HashKV"]["hash"].as_u64().unwrap_or(0) != 0, "{h1}");
}

#[test]
fn defrag_alarm_member_list() {
    let _g = shared();
    let s = Server::start(Opts::new().name("member-one"));
    for i in 0..200 {
        s.ctl_ok(&["put", &format!("big/{:03}", i % 20), &"x".repeat(2000)]);
    }
    let before = status(&s);
    let rev = s.revision();
    s.ctl_ok(&["compact", &rev.to_string(), "--physical"]);
    let out = s.ctl_ok(&["defrag"]);
    assert_eq!(out, format!("Finished defragmenting etcd member[{}]\n", s.endpoint()));
    let after = status(&s);
    assert!(after["dbSize"].as_i64().unwrap_or(0) > 0, "{after}");
    assert!(
        after["dbSize"].as_i64() <= before["dbSize"].as_i64(),
        "defrag after compaction must not grow the db: {before} -> {after}"
    );
    // Data intact, revision unchanged.
    assert_eq!(s.revision(), rev);
    assert_eq!(kvs(&s.ctl_json(&["get", "big/", "--prefix", "--keys-only"])).len(), 20);
    assert_eq!(kvs(&s.ctl_json(&["get", "big/007"]))[0].value, "x".repeat(2000));
    s.ctl_ok(&["put", "after-defrag", "ok"]);
    assert_eq!(s.ctl_ok(&["get", "after-defrag"]), "after-defrag\nok\n");

    // No alarms: list and disarm print nothing and succeed.
    assert_eq!(s.ctl_ok(&["alarm", "list"]), "");
    assert_eq!(s.ctl_ok(&["alarm", "disarm"]), "");

    // member list: one started member with the given name and URLs.
    let out = s.ctl_ok(&["member", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let member = after["header"]["member_id"].as_u64().unwrap_or(0);
    assert_eq!(
        lines[0],
        format!(
            "{member:x}, started, member-one, http://127.0.0.1:{}, {}, false",
            s.peer_port,
            s.client_url()
        )
    );
    let v = s.ctl_json(&["member", "list"]);
    let members = v["members"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(members.len(), 1, "{v}");
    assert_eq!(members[0]["ID"].as_u64(), Some(member), "{v}");
    assert_eq!(members[0]["name"].as_str(), Some("member-one"), "{v}");
    assert_eq!(
        members[0]["peerURLs"][0].as_str(),
        Some(format!("http://127.0.0.1:{}", s.peer_port).as_str()),
        "{v}"
    );
    assert_eq!(
        members[0]["clientURLs"][0].as_str(),
        Some(s.client_url().as_str()),
        "{v}"
    );
    assert_eq!(v["header"]["member_id"].as_u64(), Some(member), "{v}");
    assert!(v["header"]["cluster_id"].as_u64().unwrap_or(0) != 0, "{v}");
}

#[test]
fn endpoints_given_as_http_urls() {
    // etcdctl users (and kubeadm docs) usually write --endpoints=http(s)://host:port. For the
    // per-endpoint commands etcdctl 3.4 then dials "passthrough:///http://127.0.0.1:PORT", so
    // the HTTP/2 :authority is "http://127.0.0.1:PORT". etcd (grpc-go) accepts that; the Rust
    // h2 server rejects it as a malformed authority (RST_STREAM PROTOCOL_ERROR).
    let _g = shared();
    let s = Server::start_default();
    let url = s.client_url();
    s.ctl_ok(&["put", "k", "v"]);
    let out = s.ctl_at(&url, &["endpoint", "status", "-w", "json"]);
    assert!(out.success(), "{out}");
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v[0]["Endpoint"].as_str(), Some(url.as_str()), "{out}");
    assert_eq!(v[0]["Status"]["header"]["revision"].as_i64(), Some(2), "{out}");
    let out = s.ctl_at(&url, &["endpoint", "hashkv", "-w", "json"]);
    assert!(out.success() && out.stdout.contains("\"hash\""), "{out}");
    let out = s.ctl_at(&url, &["defrag"]);
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout,
        format!("Finished defragmenting etcd member[{url}]\n"),
        "{out}"
    );
    let out = s.ctl_at(&url, &["endpoint", "health"]);
    assert!(out.success(), "{out}");
    let out = s.ctl_at(&url, &["get", "k", "--print-value-only"]);
    assert_eq!(out.stdout, "v\n", "{out}");
}

#[test]
fn check_perf_small_load_passes() {
    // Takes ~60 s by design (etcdctl runs a fixed 60 s load). Not #[ignore]d: runs in `cargo test`.
    let _g = exclusive();
    let s = Server::start_default();
    let out = s.ctl_timeout(&["check", "perf", "--load=s"], Duration::from_secs(180));
    assert!(out.success(), "check perf failed:\n{out}");
    let stdout = out.stdout.replace('\r', "\n");
    for needle in ["PASS: Throughput is", "PASS: Slowest request took", "PASS: Stddev is"] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{out}");
    }
    assert_eq!(stdout.trim_end().lines().last(), Some("PASS"), "{out}");
    assert!(!stdout.contains("FAIL"), "{out}");
    // check perf cleans up its keys.
    assert!(s
        .ctl_ok(&["get", "/etcdctl-check-perf/", "--prefix", "--keys-only"])
        .is_empty());
}

#[test]
fn lock_is_mutually_exclusive() {
    let _g = shared();
    let s = Server::start_default();
    let t = Duration::from_secs(15);
    let mut first = s.ctl_spawn(&["lock", "mylock"]);
    let k1 = first.expect_next(t);
    assert!(k1.starts_with("mylock/"), "lock prints the owner key: {k1:?}");

    let mut second = s.ctl_spawn(&["lock", "mylock"]);
    // Both contenders have a key under the lock prefix; the second is waiting.
    poll_until("second contender's key", t, || {
        (kvs(&s.ctl_json(&["get", "mylock/", "--prefix"])).len() == 2).then_some(())
    });
    second.expect_silence(Duration::from_millis(1500));
    let owners = kvs(&s.ctl_json(&["get", "mylock/", "--prefix", "--sort-by=CREATE"]));
    assert_eq!(owners[0].key, k1, "oldest key owns the lock: {owners:?}");
    assert!(owners.iter().all(|o| o.lease != 0), "lock keys are leased: {owners:?}");

    // Releasing the first (Ctrl-C) hands the lock to the second.
    first.interrupt();
    let k2 = second.expect_next(t);
    assert!(k2.starts_with("mylock/") && k2 != k1, "{k2:?} vs {k1:?}");
    first.wait(t);
    let owners = kvs(&s.ctl_json(&["get", "mylock/", "--prefix"]));
    assert_eq!(owners.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), [k2.as_str()]);
    second.interrupt();
    second.wait(t);
    poll_until("lock keys to be released", t, || {
        s.ctl_ok(&["get", "mylock/", "--prefix"]).is_empty().then_some(())
    });

    // Exec form: runs the command while holding the lock, then releases it.
    let out = s.ctl(&["lock", "mylock", "echo", "holding"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "holding\n", "{out}");
    assert!(s.ctl_ok(&["get", "mylock/", "--prefix"]).is_empty());
}

#[test]
fn elect_and_observe() {
    let _g = shared();
    let s = Server::start_default();
    let t = Duration::from_secs(15);
    let mut c1 = s.ctl_spawn(&["elect", "myelection", "cand1"]);
    let key1 = c1.expect_next(t);
    assert!(key1.starts_with("myelection/"), "{key1:?}");
    assert_eq!(c1.expect_next(t), "cand1");

    let mut observer = s.ctl_spawn(&["elect", "-l", "myelection"]);
    observer.expect_lines(&[key1.as_str(), "cand1"], t);

    let mut c2 = s.ctl_spawn(&["elect", "myelection", "cand2"]);
    poll_until("second candidate's key", t, || {
        (kvs(&s.ctl_json(&["get", "myelection/", "--prefix"])).len() == 2).then_some(())
    });
    c2.expect_silence(Duration::from_millis(1000));

    // The leader resigns: the second candidate wins and the observer sees it.
    c1.interrupt();
    let key2 = c2.expect_next(t);
    assert!(key2.starts_with("myelection/") && key2 != key1, "{key2:?}");
    assert_eq!(c2.expect_next(t), "cand2");
    observer.expect_lines(&[key2.as_str(), "cand2"], t);
    c1.wait(t);

    assert_eq!(
        s.ctl_err(&["elect", "myelection"]),
        "no proposal argument but -l not set"
    );
}

#[test]
fn http_health_and_metrics() {
    let _g = shared();
    let s = Server::start_default();
    s.ctl_ok(&["put", "m", "1"]);

    let r = s.http_get("/health");
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(r.body.trim()).unwrap_or_else(|e| panic!("/health body not JSON ({e}): {r:?}"));
    assert_eq!(
        v["health"].as_str(),
        Some("true"),
        "health is the string \"true\": {r:?}"
    );

    let r = s.http_get("/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "Prometheus text format expected, got {ct:?}"
    );
    let metric = |name: &str| -> f64 {
        r.body
            .lines()
            .find(|l| {
                !l.starts_with('#') && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from /metrics ({} bytes)", r.body.len()))
    };
    assert_eq!(metric("etcd_server_has_leader"), 1.0);
    assert_eq!(metric("etcd_server_is_leader"), 1.0);
    assert!(metric("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(
        r.body.contains("# TYPE etcd_server_has_leader gauge"),
        "TYPE line missing"
    );
    assert!(
        r.body.contains("# HELP etcd_mvcc_db_total_size_in_bytes "),
        "HELP line missing"
    );
}

#[test]
fn http_version() {
    let _g = shared();
    let s = Server::start_default();
    let r = s.http_get("/version");
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(r.body.trim()).unwrap_or_else(|e| panic!("/version ({e}): {r:?}"));
    assert!(v["etcdserver"].as_str().is_some_and(|x| x.starts_with("3.")), "{v}");
    assert!(v["etcdcluster"].as_str().is_some_and(|x| x.starts_with("3.")), "{v}");
}
