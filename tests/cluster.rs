//! Three `rudder store` members on loopback, as separate processes: failover without losing an
//! acknowledged write, a minority refusing linearizable reads, restarts, and membership changes
//! (learner + promote catching up through a snapshot install, remove, move-leader), and requests with
//! etcd's require-leader metadata refused by a member left without a quorum.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{ctl, ctl_with_timeout, Cluster, Member};
use common::{etcdctl_bin, free_port};

/// Serializable read of one key on one member.
fn local_get(endpoint: &str, key: &str) -> Option<String> {
    let out = ctl(endpoint, &["get", key, "--consistency=s", "--print-value-only"]).ok()?;
    let v = out.trim_end().to_string();
    (!v.is_empty()).then_some(v)
}

/// Waits until `m` has applied `key = value`: a write is acknowledged once a majority holds it, so
/// one member may apply it later than the client hears back.
fn wait_applied(m: &Member, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while local_get(&m.endpoint(), key).as_deref() != Some(value) {
        assert!(
            Instant::now() < deadline,
            "{} did not apply {key}={value}:\n{}",
            m.name,
            m.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leader_kill9_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let endpoints = c.endpoints();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, endpoints) = (acked.clone(), stop.clone(), endpoints.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = (format!("load/{w}/{i}"), format!("v{i}"));
                    if ctl(&endpoints, &["put", &k, &v]).is_ok() {
                        acked.lock().expect("lock").push((k, v));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before_kill = acked.lock().expect("lock").len();
    c.members[leader].kill9();
    let killed_at = Instant::now();
    // A new leader serves writes within a few election timeouts (1 s each, randomised up to 2 s).
    let survivors = c.endpoints();
    let first_write = loop {
        if ctl(&survivors, &["put", "failover/probe", "x"]).is_ok() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "no leader after the old one was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("first write {first_write:?} after killing the leader");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > before_kill, "writes resumed after failover");

    // The old leader rejoins.
    let ic = Cluster::initial_cluster(&c.members);
    c.members[leader].start(&ic, "new");
    c.wait_healthy();
    // It catches up: every member applies the last acknowledged write.
    let last = acked.last().expect("some writes").clone();
    for m in &c.members {
        wait_applied(m, &last.0, &last.1);
    }
    // Every acknowledged write is on every member.
    for m in &c.members {
        let out = ctl(&m.endpoint(), &["get", "load/", "--prefix", "--consistency=s"]).expect("get");
        let lines: Vec<&str> = out.lines().collect();
        let stored: std::collections::HashMap<&str, &str> = lines
            .chunks(2)
            .map(|kv| (kv[0], kv.get(1).copied().unwrap_or("")))
            .collect();
        for (k, v) in &acked {
            assert_eq!(
                stored.get(k.as_str()),
                Some(&v.as_str()),
                "{} lost acknowledged write {k}",
                m.name
            );
        }
    }
}

/// etcdctl with a command timeout long enough to outlast a leader election.
fn ctl_patient(endpoint: &str, args: &[&str]) -> Result<String, String> {
    ctl_with_timeout(endpoint, "15s", args)
}

#[test]
fn requests_on_a_follower_wait_out_a_leader_election() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    ctl(&c.endpoints(), &["put", "k", "v1"]).expect("put");
    let follower = c.members[(leader + 1) % 3].endpoint();
    c.members[leader].kill9();
    // Sent at once, while the follower still takes the dead member for its leader: the forward is
    // refused, never delivered, so the follower holds the request for the next leader instead of
    // failing it.
    let started = Instant::now();
    ctl_patient(&follower, &["put", "k", "v2"]).expect("a put through the election");
    let put_took = started.elapsed();
    c.members[(leader + 2) % 3].kill9();
    let ic = Cluster::initial_cluster(&c.members);
    c.members[(leader + 2) % 3].start(&ic, "new");
    let started = Instant::now();
    let got = ctl_patient(&follower, &["get", "k", "--print-value-only"]).expect("a linearizable get");
    eprintln!("put took {put_took:?}; get after a restart {:?}", started.elapsed());
    assert_eq!(got.trim(), "v2");
}

#[test]
fn minority_refuses_linearizable_reads_and_restart_keeps_data() {
    let mut c = Cluster::start(3, &[]);
    c.wait_leader();
    ctl(&c.endpoints(), &["put", "k", "v1"]).expect("put");
    // The put may be acknowledged before member 0 has it; it must not be lost with the majority.
    wait_applied(&c.members[0], "k", "v1");
    c.members[1].kill9();
    c.members[2].kill9();
    let lone = c.members[0].endpoint();
    std::thread::sleep(Duration::from_secs(3));
    let err = ctl(&lone, &["get", "k"]).expect_err("a minority must not serve linearizable reads");
    assert!(!err.is_empty());
    assert_eq!(
        local_get(&lone, "k").as_deref(),
        Some("v1"),
        "serializable reads still work"
    );
    ctl(&lone, &["put", "k", "v2"]).expect_err("a minority must not accept writes");

    // Restart everything: the data and the cluster come back.
    c.members[0].kill9();
    let ic = Cluster::initial_cluster(&c.members);
    for m in &mut c.members {
        m.start(&ic, "new");
    }
    c.wait_healthy();
    c.wait_leader();
    let out = ctl(&c.endpoints(), &["get", "k", "--print-value-only"]).expect("get after restart");
    assert_eq!(out.trim(), "v1");
}

#[test]
fn learner_catches_up_by_snapshot_then_promote_move_leader_and_remove() {
    // A small snapshot count makes the leader purge its log, so the new member needs a snapshot.
    let mut c = Cluster::start(3, &["--snapshot-count", "200"]);
    c.wait_leader();
    let endpoints = c.endpoints();
    let txn_puts: String = (0..100).map(|i| format!("put pre/{i} value-{i}\n")).collect();
    for round in 0..6 {
        let input = format!("\n{txn_puts}\n\n");
        let out = Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args([format!("--endpoints={endpoints}"), "txn".into()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                ch.stdin.take().expect("stdin").write_all(input.as_bytes())?;
                ch.wait_with_output()
            })
            .expect("txn");
        assert!(out.status.success(), "txn round {round}");
        for i in 0..60 {
            ctl(&endpoints, &["put", &format!("single/{round}/{i}"), "x"]).expect("put");
        }
    }

    // etcdctl member add --learner, then start the member with --initial-cluster-state existing.
    let mut m = Member {
        name: "m3".into(),
        client: free_port(),
        peer: free_port(),
        dir: c.dir_for("m3"),
        child: None,
        extra: c.extra.clone(),
    };
    let out = ctl(
        &endpoints,
        &[
            "member",
            "add",
            "m3",
            &format!("--peer-urls={}", Member::url(m.peer)),
            "--learner",
        ],
    )
    .expect("member add");
    assert!(out.contains("added to cluster"), "{out}");
    c.members.push(m.stopped_copy());
    let ic = Cluster::initial_cluster(&c.members);
    c.members.pop();
    m.start(&ic, "existing");
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_get(&m.endpoint(), "single/5/59").is_none() {
        assert!(Instant::now() < deadline, "learner did not catch up:\n{}", m.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(local_get(&m.endpoint(), "pre/7").as_deref(), Some("value-7"));
    let list = ctl(&endpoints, &["member", "list"]).expect("member list");
    let row = list
        .lines()
        .find(|l| l.contains(&Member::url(m.peer)))
        .expect("new member listed")
        .to_string();
    assert!(row.ends_with("true"), "listed as learner: {row}");
    let id = row.split(',').next().expect("id").trim().to_string();
    ctl(&endpoints, &["member", "promote", &id]).expect("promote");
    let list = ctl(&endpoints, &["member", "list"]).expect("member list");
    assert!(
        list.lines().any(|l| l.starts_with(&id) && l.ends_with("false")),
        "promoted: {list}"
    );
    c.members.push(m);

    // Move leadership to the new member.
    let leader = c.wait_leader();
    let all = c.endpoints();
    ctl(&c.members[leader].endpoint(), &["move-leader", &id]).expect("move-leader");
    assert_eq!(c.wait_leader(), 3, "leadership moved to the new member");
    ctl(&all, &["put", "after-move", "ok"]).expect("write after move");

    // Remove one of the original members: it stops serving.
    let victim = c.member_id(0);
    ctl(&c.members[3].endpoint(), &["member", "remove", &victim]).expect("member remove");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.members[0].exited() {
        assert!(Instant::now() < deadline, "a removed member must stop serving");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = ctl(&c.members[3].endpoint(), &["member", "list"]).expect("member list");
    assert!(!list.contains(&victim), "{list}");
    ctl(&c.members[3].endpoint(), &["put", "after-remove", "ok"]).expect("cluster keeps working");
}

/// gRPC metadata asking to be refused when the member has no leader (clientv3's WithRequireLeader).
fn require_leader<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    req
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// A serializable get of `key`, with or without the require-leader metadata.
async fn raw_get(
    endpoint: &str,
    key: &str,
    require: bool,
) -> Result<rudder_proto::etcdserverpb::RangeResponse, tonic::Status> {
    let mut kv = rudder_proto::etcdserverpb::kv_client::KvClient::new(channel(endpoint).await);
    let msg = rudder_proto::etcdserverpb::RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable: true,
        ..Default::default()
    };
    let req = if require {
        require_leader(msg)
    } else {
        tonic::Request::new(msg)
    };
    kv.range(req).await.map(|r| r.into_inner())
}

/// Opens a require-leader watch on `key` and waits for its creation.
async fn raw_watch(
    endpoint: &str,
    key: &str,
) -> Result<tonic::Streaming<rudder_proto::etcdserverpb::WatchResponse>, tonic::Status> {
    use rudder_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    use tokio_stream::StreamExt;
    let mut client = rudder_proto::etcdserverpb::watch_client::WatchClient::new(channel(endpoint).await);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    };
    // Keep the sending side open: the watch lives until the server ends it.
    let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
    let mut stream = client.watch(require_leader(requests)).await?.into_inner();
    let created = stream.message().await?.expect("watch created");
    assert!(created.created, "{created:?}");
    Ok(stream)
}

/// Grants a lease and opens a require-leader keep-alive stream for it (one keep-alive answered).
async fn raw_keep_alive(endpoint: &str) -> tonic::Streaming<rudder_proto::etcdserverpb::LeaseKeepAliveResponse> {
    use rudder_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    use tokio_stream::StreamExt;
    let mut lease = rudder_proto::etcdserverpb::lease_client::LeaseClient::new(channel(endpoint).await);
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let requests = tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]).chain(tokio_stream::pending());
    let mut stream = lease
        .lease_keep_alive(require_leader(requests))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let first = stream.message().await.expect("keep-alive answer").expect("open");
    assert_eq!((first.id, first.ttl), (id, 60));
    stream
}

/// The next message of a stream the server is expected to end with an error.
async fn stream_error<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the stream ended in time")
}

fn assert_no_leader(s: &tonic::Status, what: &str) {
    assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
    assert_eq!(s.message(), "etcdserver: no leader", "{what}: {s:?}");
}

#[test]
fn require_leader_metadata_is_refused_without_a_leader() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    ctl(&c.endpoints(), &["put", "k", "v1"]).expect("put");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The survivor is the leader: it keeps its Raft role alone, so only the quorum check can tell.
    let survivor = c.members[leader].endpoint();
    let mut watch = rt.block_on(raw_watch(&survivor, "w")).expect("require-leader watch");
    // An idle, healthy cluster keeps its leader (heartbeats count as quorum acknowledgements): the
    // watch stays open and unary calls are served.
    std::thread::sleep(Duration::from_secs(3));
    let got = rt
        .block_on(raw_get(&survivor, "k", true))
        .expect("require-leader get with a leader");
    assert_eq!(got.kvs.len(), 1);
    ctl(&c.endpoints(), &["put", "w", "x"]).expect("put");
    let event = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), watch.message()).await })
        .expect("event in time")
        .expect("watch still open")
        .expect("an event");
    assert_eq!(event.events.len(), 1, "{event:?}");
    let mut keep_alive = rt.block_on(raw_keep_alive(&survivor));

    for i in (0..3).filter(|i| *i != leader) {
        c.members[i].kill9();
    }
    let killed = Instant::now();
    // The open require-leader streams are ended with etcd's error once the leader is gone.
    let ended = rt.block_on(stream_error(&mut watch));
    assert_no_leader(&ended, "open watch");
    eprintln!("require-leader watch ended {:?} after the kill", killed.elapsed());
    let ended = rt.block_on(stream_error(&mut keep_alive));
    assert_no_leader(&ended, "open keep-alive");

    let err = rt
        .block_on(raw_get(&survivor, "k", true))
        .expect_err("a require-leader get without a leader");
    assert_no_leader(&err, "unary get");
    let err = rt
        .block_on(raw_watch(&survivor, "w"))
        .expect_err("a require-leader watch without a leader");
    assert_no_leader(&err, "new watch");
    // Without the metadata a serializable read is still served.
    let got = rt.block_on(raw_get(&survivor, "k", false)).expect("serializable get");
    assert_eq!(got.kvs[0].value, b"v1");

    // A quorum again: require-leader requests are served again.
    let other = (0..3).find(|i| *i != leader).expect("another member");
    let ic = Cluster::initial_cluster(&c.members);
    c.members[other].start(&ic, "new");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(raw_get(&survivor, "k", true)).is_err() {
        assert!(Instant::now() < deadline, "require-leader get never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
