//! The suite's infrastructure against real processes (needs root): namespaces and partitions, Debian's
//! etcd 3.4 under kill/pause/partition/delay/membership/compaction/quota, cleanup of interrupted runs,
//! and (when built) Rudder's store in the same harness.
//!
//! Peer proxies run as this very test binary (`proxy_child`, steered by environment variables), since
//! the `rudder-jepsen proxy` subcommand is not what `current_exe()` is here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rudder_jepsen::db::{Cluster, ClusterOptions, DbKind, Faketime, NodeStatus, ProxyLaunch};
use rudder_jepsen::history::{NemesisPhase, Op, Recorder};
use rudder_jepsen::nemesis::{proxy, Fault, Nemesis, NemesisOptions, ProxyControl, Targets};
use rudder_jepsen::net::{self, Topology, REGISTRY_DIR};

const CHILD_ENV: &str = "RUDDER_JEPSEN_INFRA_CHILD";

/// The `rudder` binary of the same build (this test runs from `<target>/release/deps/`).
fn rudder_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    let release = me.parent().and_then(Path::parent).expect("target dir");
    release.join("rudder")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

fn self_exe() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// Proxies are this test binary running only `proxy_child`.
fn proxy_launch() -> ProxyLaunch {
    ProxyLaunch::Env {
        program: self_exe(),
        args: ["proxy_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"]
            .map(String::from)
            .to_vec(),
    }
}

fn namespaces() -> BTreeSet<String> {
    net::run_cmd("ip", &["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn assert_gone(run_id: &str) {
    let left: Vec<String> = namespaces().into_iter().filter(|n| n.starts_with(run_id)).collect();
    assert!(left.is_empty(), "namespaces of {run_id} left: {left:?}");
    assert!(
        !Path::new(REGISTRY_DIR).join(format!("{run_id}.json")).exists(),
        "registry of {run_id} left"
    );
    assert!(
        !Path::new("/sys/class/net").join(format!("{run_id}h")).exists(),
        "host veth of {run_id} left"
    );
}

#[test]
#[ignore = "helper: a peer proxy started by the cluster (see proxy_launch)"]
fn proxy_child() {
    if let Some(args) = proxy::proxy_args_from_env() {
        let (listen, upstream, control) = args.expect("proxy args");
        proxy::run_proxy_blocking(listen, upstream, control).expect("proxy");
    }
}

#[test]
#[ignore = "helper: a run that dies without tearing down (see leftovers_of_a_dead_run_are_cleaned)"]
fn forgotten_topology_child() {
    let Ok(out) = std::env::var(CHILD_ENV) else { return };
    let topo = Topology::create(2).expect("topology");
    // A process inside a node namespace, as a store would be.
    let sleeper = topo.command(0, "sleep").arg("600").spawn().expect("sleep");
    std::fs::write(&out, format!("{} {}", topo.run_id(), sleeper.id())).expect("write run id");
    std::mem::forget(sleeper);
    std::mem::forget(topo);
}

#[test]
fn leftovers_of_a_dead_run_are_cleaned() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let st = std::process::Command::new(self_exe())
        .args(["forgotten_topology_child", "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_ENV, &out)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let (run_id, pid) = text.split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    assert!(
        namespaces().iter().any(|n| n.starts_with(run_id)),
        "child left nothing to clean?"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // Another test creating a topology meanwhile may have cleaned it up already (every create does).
    let removed = net::cleanup_all().unwrap();
    let registry = Path::new(REGISTRY_DIR).join(format!("{run_id}.json"));
    assert!(removed.iter().any(|r| r == run_id) || !registry.exists(), "{removed:?}");
    assert_gone(run_id);
    // Dead means gone or a zombie (re-parented to an init that has not reaped it yet).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("gone");
    assert!(
        state == "gone" || state == "Z",
        "process in the namespace survived (state {state})"
    );
}

async fn put(cluster: &Cluster, i: usize, key: &str, value: &str) -> Result<(), String> {
    let mut c = cluster.client(i).await.map_err(|e| e.to_string())?;
    c.put(key, value, None).await.map(drop).map_err(|e| e.to_string())
}

async fn get(cluster: &Cluster, i: usize, key: &str) -> Result<Option<String>, String> {
    let mut c = cluster.client(i).await.map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(Duration::from_secs(3), c.get(key, None))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Retries a put until it works (leader elections after faults take a moment).
async fn put_eventually(cluster: &Cluster, i: usize, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match put(cluster, i, key, value).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("put through n{} never worked: {e}", i + 1),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn median_put_latency(cluster: &Cluster, i: usize) -> Duration {
    let mut c = cluster.client(i).await.expect("client");
    let mut times = Vec::new();
    for k in 0..5 {
        let t = Instant::now();
        c.put(format!("lat{k}"), "x", None).await.expect("put");
        times.push(t.elapsed());
    }
    times.sort();
    times[2]
}

fn nemesis_events(rec: &Recorder) -> Vec<(String, NemesisPhase, String)> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e.op {
            Op::Nemesis { fault, phase, detail } => Some((fault, phase, detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_under_faults() {
    init_tracing();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::create(3).unwrap();
    let run_id = topo.run_id().to_string();
    let mut opts = ClusterOptions::new(dir.path());
    opts.proxy = Some(proxy_launch());
    opts.faketime = Some(Faketime::Realtime);
    // Small, so the quota fault fills it in a few seconds.
    opts.extra_args = vec!["--quota-backend-bytes".into(), (16 * 1024 * 1024).to_string()];
    let cluster = Arc::new(
        Cluster::start(
            topo,
            DbKind::Etcd {
                binary: "/usr/bin/etcd".into(),
            },
            opts,
        )
        .unwrap(),
    );
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    assert_eq!(cluster.client_endpoints().len(), 3);
    for i in 0..3 {
        put(&cluster, i, &format!("k{i}"), "v").await.unwrap();
    }
    assert_eq!(get(&cluster, 0, "k2").await.unwrap().as_deref(), Some("v"));
    let leader = cluster.leader().await.expect("a leader");
    eprintln!("started in {:?}, leader n{}", t0.elapsed(), leader + 1);

    // Partition a follower away: it cannot serve linearizable reads, the majority goes on.
    let f = (0..3).find(|&i| i != leader).unwrap();
    let others: BTreeSet<usize> = (0..3).filter(|&i| i != f).collect();
    let mut grudge: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    grudge.insert(f, others.clone());
    for &o in &others {
        grudge.insert(o, BTreeSet::from([f]));
    }
    cluster.topology().partition(&grudge).unwrap();
    assert!(cluster.topology().rules(f).unwrap().contains("-j DROP"));
    put_eventually(&cluster, leader, "during-partition", "1").await;
    assert!(
        get(&cluster, f, "during-partition").await.is_err(),
        "isolated n{} served a linearizable read",
        f + 1
    );
    cluster.topology().heal().unwrap();
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        get(&cluster, f, "during-partition").await.unwrap().as_deref(),
        Some("1")
    );
    eprintln!("partition done at {:?}", t0.elapsed());

    // Kill -9 and restart: it rejoins and catches up.
    cluster.kill(f).unwrap();
    assert_eq!(cluster.status(f), NodeStatus::Stopped);
    put_eventually(&cluster, leader, "during-kill", "2").await;
    cluster.restart(f).unwrap();
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    assert_eq!(get(&cluster, f, "during-kill").await.unwrap().as_deref(), Some("2"));

    // Pause: requests through it hang; resume and it serves again.
    cluster.pause(f).unwrap();
    assert_eq!(cluster.status(f), NodeStatus::Paused);
    assert!(get(&cluster, f, "during-kill").await.is_err());
    cluster.resume(f).unwrap();
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    eprintln!("kill/pause done at {:?}", t0.elapsed());

    // Delay through the peer proxies: a write needs a round trip to a follower.
    let leader = cluster.leader().await.expect("a leader");
    let fast = median_put_latency(&cluster, leader).await;
    for i in 0..3 {
        cluster
            .set_proxy(
                i,
                &ProxyControl {
                    delay_ms: 150,
                    ..Default::default()
                },
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let slow = median_put_latency(&cluster, leader).await;
    for i in 0..3 {
        cluster.set_proxy(i, &ProxyControl::default()).unwrap();
    }
    eprintln!("put latency {fast:?} -> {slow:?} with 150 ms proxy delay");
    assert!(slow >= fast + Duration::from_millis(200), "{fast:?} -> {slow:?}");

    // Random packet loss rules land in the namespace.
    cluster.topology().drop_packets(&[0], 0.2).unwrap();
    assert!(cluster.topology().rules(0).unwrap().contains("statistic"));
    cluster.topology().heal().unwrap();

    // Nemesis faults, recorded: kill the leader, a membership change, compaction, quota.
    let rec = Recorder::new();
    let nemesis = Nemesis::new(7, NemesisOptions::default());
    let (_tx, mut stop) = tokio::sync::watch::channel(false);
    let short = Duration::from_millis(500);
    for fault in [
        Fault::Kill(Targets::Leader),
        Fault::Membership(Targets::One(f)),
        Fault::Compaction,
        Fault::Quota,
    ] {
        assert!(nemesis.execute(&fault, short, &cluster, &rec, &mut stop).await);
        cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
        eprintln!("{} done at {:?}", fault.name(), t0.elapsed());
    }
    let events = nemesis_events(&rec);
    for e in &events {
        eprintln!("  {e:?}");
    }
    assert_eq!(events.len(), 8);
    assert!(events[0].2.contains("(leader)"), "{events:?}");
    assert!(events[1].2.starts_with("restart n"), "{events:?}");
    assert!(events[3].2.starts_with(&format!("re-added n{}", f + 1)), "{events:?}");
    assert!(events[5].2.contains("defragmented n1 n2 n3"), "{events:?}");
    assert!(
        events[7].2.contains("NOSPACE after") && events[7].2.contains("write ok"),
        "{events:?}"
    );
    put_eventually(&cluster, f, "after-nemesis", "3").await;
    nemesis.heal_all(&cluster).await.unwrap();

    cluster.teardown().unwrap();
    cluster.teardown().unwrap(); // idempotent
    drop(cluster);
    assert_gone(&run_id);
    eprintln!("etcd test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudder_cluster_put_get() {
    let rudder = rudder_binary();
    if !rudder.exists() {
        eprintln!("skipped: {} not built", rudder.display());
        return;
    }
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::create(3).unwrap();
    let run_id = topo.run_id().to_string();
    let mut opts = ClusterOptions::new(dir.path());
    opts.proxy = Some(proxy_launch());
    opts.faketime = Some(Faketime::Realtime);
    let cluster = Cluster::start(topo, DbKind::Rudder { binary: rudder }, opts).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    put_eventually(&cluster, 0, "rk", "rv").await;
    for i in 0..3 {
        assert_eq!(get(&cluster, i, "rk").await.unwrap().as_deref(), Some("rv"));
    }
    assert!(cluster.leader().await.is_some());
    // A clock bump goes through libfaketime without upsetting the store.
    cluster.set_clock_offset(1, 5_000).unwrap();
    put_eventually(&cluster, 1, "rk2", "rv2").await;
    cluster.set_clock_offset(1, 0).unwrap();
    cluster.teardown().unwrap();
    drop(cluster);
    assert_gone(&run_id);
}
