//! `rudder store --unsafe-inject-bug`: the deliberate bugs the Jepsen suite uses to show its checkers
//! catch real ones. Each test shows the bug is really there (and, where cheap, that the same check
//! passes without it); the first one that the flag is refused without `--unsafe-allow-bug-injection`.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{ctl, Cluster};
use common::*;
use etcd_client::{GetOptions, WatchOptions};

const ALLOW: &str = "--unsafe-allow-bug-injection";

/// These bugs are rudder's own: there is nothing to calibrate against etcd.
fn skip() -> bool {
    target() == Target::Etcd
}

fn inject(bug: &str) -> Opts {
    Opts::new().arg(ALLOW).arg(&format!("--unsafe-inject-bug={bug}"))
}

#[test]
fn injection_is_refused_without_the_allow_flag() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let out = Command::new(env!("CARGO_BIN_EXE_rudder"))
            .args(["store", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run rudder store");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for args in [
        &["--unsafe-inject-bug", "stale-read"][..],
        &["--unsafe-inject-bug=ack-before-fsync,drop-watch-event"][..],
    ] {
        let (status, stderr) = run(args);
        assert!(!status.success(), "{args:?} must be refused: {stderr}");
        assert!(
            stderr.contains("refused") && stderr.contains(ALLOW),
            "{args:?}: the error names the missing flag:\n{stderr}"
        );
    }
    let (status, stderr) = run(&["--unsafe-inject-bug", "no-such-bug", ALLOW]);
    assert!(!status.success(), "an unknown bug must be refused: {stderr}");
    assert!(stderr.contains("unknown bug \"no-such-bug\""), "{stderr}");
    // Nothing was started, so nothing was written.
    assert!(
        !tmp.path().join("data").exists(),
        "a refused start must not create the data dir"
    );
}

/// Mod revisions a prefix watcher sees while `puts` keys are written, until events stop coming.
async fn watched_revisions(s: &Server, puts: usize) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let mut c = s.client().await;
    let (_watcher, mut stream) = c
        .watch("w/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let mut written = BTreeSet::new();
    for i in 0..puts {
        let r = c.put(format!("w/{i}"), "x", None).await.expect("put");
        written.insert(r.header().expect("header").revision());
    }
    let last = *written.last().expect("some puts");
    let mut seen = BTreeSet::new();
    // Until the last revision arrives, or nothing more comes for 3 s (the last one may be dropped).
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
        for e in resp.events() {
            seen.insert(e.kv().expect("event kv").mod_revision());
        }
        if seen.contains(&last) {
            break;
        }
    }
    (written, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_watch_event_leaves_gaps_in_a_watch() {
    if skip() {
        return;
    }
    // Without the bug: every revision arrives.
    let s = Server::start_default();
    let (written, seen) = watched_revisions(&s, 200).await;
    assert_eq!(seen, written, "a watcher sees every revision");
    drop(s);

    let s = Server::start(inject("drop-watch-event"));
    assert!(
        s.log_text().contains("UNSAFE TEST-ONLY BUG INJECTION"),
        "a loud warning at start:\n{}",
        s.log_tail(20)
    );
    let (written, seen) = watched_revisions(&s, 200).await;
    let missing: Vec<i64> = written.difference(&seen).copied().collect();
    assert!(seen.is_subset(&written), "only written revisions are reported");
    // One revision in 50 (counted from the member's start) is dropped: 4 of 200.
    assert!(
        (3..=5).contains(&missing.len()),
        "expected a few silent gaps, missing {missing:?} of {} revisions",
        written.len()
    );
    // The events are still in the history: a watcher starting in the past gets everything.
    let mut c = s.client().await;
    let first = *written.first().expect("some puts");
    let r = c
        .get("w/", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count");
    assert_eq!(r.count(), 200);
    let (_w, mut stream) = c
        .watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(first)))
        .await
        .expect("watch from the past");
    let mut replayed = BTreeSet::new();
    while replayed.len() < written.len() {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("history replay in time")
            .expect("watch stream")
            .expect("watch stream open");
        replayed.extend(resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()));
    }
    assert_eq!(replayed, written, "history itself is complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ack_before_fsync_loses_acknowledged_writes_on_sigkill() {
    if skip() {
        return;
    }
    const WRITERS: usize = 8;
    const ACKED: usize = 2000;
    let mut s = Server::start(inject("ack-before-fsync"));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = s.client().await;
        let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("k/{w}/{i:05}");
                match tokio::time::timeout(Duration::from_secs(5), c.put(k.clone(), "v", None)).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push(k);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return,
                }
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    while count.load(Ordering::Relaxed) < ACKED {
        assert!(start.elapsed() < Duration::from_secs(120), "writes too slow");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // It comes back (as after a power loss: a consistent prefix of the writes) and keeps working...
    s.restart();
    let mut c = s.client().await;
    let r = c
        .get("k/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("get after restart");
    let found: BTreeSet<String> = r
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    c.put("after-restart", "ok", None).await.expect("write after restart");
    // ...but without acknowledged writes.
    let lost = acked.iter().filter(|k| !found.contains(*k)).count();
    eprintln!("{lost} of {} acknowledged writes lost", acked.len());
    assert!(
        lost > 0,
        "ack-before-fsync: all {} acknowledged writes survived kill -9",
        acked.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Three members (separate processes), for stale-read
// ---------------------------------------------------------------------------------------------

/// Writes k=v1, waits until a follower has it, kills the leader and the other follower, then does a
/// linearizable get of k on the lone follower.
fn lone_follower_linearizable_get(extra: &[&str]) -> (Result<String, String>, String) {
    let mut c = Cluster::start(3, extra);
    let leader = c.wait_leader();
    ctl(&c.members[leader].endpoint(), &["put", "k", "v1"]).expect("put");
    let lone = (leader + 1) % 3;
    let endpoint = c.members[lone].endpoint();
    poll_until("the follower applied k", Duration::from_secs(10), || {
        ctl(&endpoint, &["get", "k", "--consistency=s", "--print-value-only"])
            .ok()
            .filter(|v| v.trim() == "v1")
    });
    for (i, m) in c.members.iter_mut().enumerate() {
        if i != lone {
            m.kill9();
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = ctl(&endpoint, &["get", "k", "--print-value-only"]);
    (got, c.members[lone].log())
}

#[test]
fn stale_read_serves_linearizable_reads_without_a_quorum() {
    if skip() {
        return;
    }
    // Without the bug a lone member cannot confirm it is up to date, so it refuses.
    let (got, log) = lone_follower_linearizable_get(&[]);
    assert!(
        got.is_err(),
        "a member without a quorum must refuse linearizable reads: {got:?}\n{log}"
    );
    // With it, it answers from its own (possibly stale) state.
    let (got, log) = lone_follower_linearizable_get(&[ALLOW, "--unsafe-inject-bug", "stale-read"]);
    assert_eq!(
        got.as_deref().map(str::trim),
        Ok("v1"),
        "stale-read: the lone member answers a linearizable read\n{log}"
    );
    assert!(log.contains("UNSAFE TEST-ONLY BUG INJECTION"), "{log}");
}
