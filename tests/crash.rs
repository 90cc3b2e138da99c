//! Durability across SIGKILL: every acknowledged write survives with the same mod_revision, the
//! revision counter continues, leases survive, and history below the current revision stays
//! readable. The kill happens while several clients are still writing.

mod common;

use common::*;
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const ACKED_BEFORE_KILL: usize = 2000;

#[derive(Default)]
struct Log {
    /// key -> (value, mod_revision) of the latest acknowledged write.
    acked: BTreeMap<String, (String, i64)>,
    /// (key, value, revision) of every acknowledged write, for history checks.
    history: Vec<(String, String, i64)>,
    /// Writes that were sent but not acknowledged (may or may not have been applied).
    in_flight: BTreeSet<(String, String)>,
}

async fn run_writers(s: &Server, round: usize, log: Arc<Mutex<Log>>) -> (usize, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let mut c = s.client().await;
        let (acked, stop, log) = (acked.clone(), stop.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Mostly unique keys, plus one frequently overwritten key per writer (history).
                let key = if seq % 10 == 9 {
                    format!("shared/{t}")
                } else {
                    format!("crash/{round}/{t}/{seq:05}")
                };
                let value = format!("r{round}-w{t}-s{seq}");
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .in_flight
                    .insert((key.clone(), value.clone()));
                let r = tokio::time::timeout(Duration::from_secs(10), c.put(key.clone(), value.clone(), None)).await;
                match r {
                    Ok(Ok(resp)) => {
                        let rev = resp.header().expect("put header").revision();
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        l.in_flight.remove(&(key.clone(), value.clone()));
                        l.acked.insert(key.clone(), (value.clone(), rev));
                        l.history.push((key, value, rev));
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // The server is gone (or never answered): stays in in_flight.
                    _ => return,
                }
                seq += 1;
            }
        }));
    }
    // Kill as soon as enough writes are acknowledged, while the writers are still going.
    let start = Instant::now();
    while acked.load(Ordering::Relaxed) < ACKED_BEFORE_KILL {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} writes acknowledged in 120 s",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    (n, tasks)
}

async fn all_with_prefix(c: &mut Client, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("range after restart");
    r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf8 key").to_string(),
                (kv.value_str().expect("utf8 value").to_string(), kv.mod_revision()),
            )
        })
        .collect()
}

async fn verify(s: &Server, c: &mut Client, log: &Log, lease: i64, leased: &[String], hist: &[(String, i64)]) -> i64 {
    // 1. Every acknowledged write is present with the same value and mod_revision.
    let mut found = all_with_prefix(c, "crash/").await;
    found.extend(all_with_prefix(c, "shared/").await);
    let mut missing = Vec::new();
    for (k, (v, rev)) in &log.acked {
        match found.get(k) {
            Some((fv, frev)) if fv == v && frev == rev => {}
            // A later in-flight overwrite of the same key may legitimately have been applied.
            Some((fv, frev)) if frev > rev && log.in_flight.contains(&(k.clone(), fv.clone())) => {}
            other => missing.push(format!("{k}: acked ({v}, rev {rev}), found {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost or changed after SIGKILL, e.g.:\n{}\n--- server log tail ---\n{}",
        missing.len(),
        log.acked.len(),
        missing.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        s.log_tail(40)
    );
    // 2. Nothing that was never written appears.
    for (k, (v, _)) in &found {
        let known = log.acked.get(k).is_some_and(|(av, _)| av == v) || log.in_flight.contains(&(k.clone(), v.clone()));
        assert!(known, "phantom key after restart: {k} = {v}");
    }
    // 3. The revision did not go backwards.
    let max_acked = log.history.iter().map(|h| h.2).max().unwrap_or(0);
    let r = c.get("nothing", None).await.expect("get");
    let rev = r.header().expect("header").revision();
    assert!(
        rev >= max_acked,
        "revision went backwards: {rev} < acknowledged {max_acked}"
    );
    // 4. The lease and its keys survived.
    let t = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("lease time_to_live after restart");
    assert!(t.ttl() > 0, "lease lost after restart: {t:?}");
    assert_eq!(t.granted_ttl(), 600);
    let mut ks: Vec<String> = t
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    ks.sort();
    assert_eq!(ks, leased, "keys attached to the lease after restart");
    let listed = c.leases().await.expect("leases");
    assert!(
        listed.leases().iter().any(|l| l.id() == lease),
        "lease missing from LeaseLeases"
    );
    let got = all_with_prefix(c, "leased/").await;
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), leased);
    // 5. History at old revisions.
    for (v, r) in hist {
        let g = c
            .get("hist", Some(GetOptions::new().with_revision(*r)))
            .await
            .expect("old revision");
        assert_eq!(g.kvs()[0].value_str().unwrap_or(""), v, "hist at revision {r}");
    }
    let shared_hist: Vec<&(String, String, i64)> = log.history.iter().filter(|h| h.0.starts_with("shared/")).collect();
    for (k, v, r) in shared_hist.iter().step_by(7) {
        let g = c
            .get(k.as_str(), Some(GetOptions::new().with_revision(*r)))
            .await
            .expect("old revision");
        let kv = &g.kvs()[0];
        assert_eq!(
            (kv.value_str().unwrap_or(""), kv.mod_revision()),
            (v.as_str(), *r),
            "{k} at revision {r}"
        );
    }
    rev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    // A snapshot every 500 entries: each round builds several and purges the log behind them, so the
    // restart depends on the state having been flushed before its log went away.
    let mut s = Server::start(Opts {
        extra_args: vec!["--snapshot-count".into(), "500".into()],
        ..Opts::new()
    });
    let mut c = s.client().await;

    // History of one key, and a long lease with keys.
    let mut hist = Vec::new();
    for i in 1..=3 {
        let v = format!("h{i}");
        let r = c.put("hist", v.clone(), None).await.expect("put");
        hist.push((v, r.header().expect("header").revision()));
    }
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    let mut leased = Vec::new();
    for i in 0..20 {
        let k = format!("leased/{i:02}");
        c.put(k.clone(), "x", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put");
        leased.push(k);
    }

    let log = Arc::new(Mutex::new(Log::default()));
    for round in 0..2 {
        let (n, tasks) = run_writers(&s, round, log.clone()).await;
        s.kill9();
        eprintln!("round {round}: SIGKILL after {n} acknowledged writes");
        // Writers finish their last (failing) request before the server comes back, so no write
        // can sneak in after the restart.
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("writer did not stop after the server was killed")
                .expect("writer task panicked");
        }
        s.restart();
        let mut c = s.client().await;
        let snapshot = {
            let l = log.lock().unwrap_or_else(|e| e.into_inner());
            Log {
                acked: l.acked.clone(),
                history: l.history.clone(),
                in_flight: l.in_flight.clone(),
            }
        };
        let rev = verify(&s, &mut c, &snapshot, lease, &leased, &hist).await;
        // The counter continues from where it was: the next write gets rev + 1.
        let p = c
            .put("after-restart", format!("{round}"), None)
            .await
            .expect("put after restart");
        assert_eq!(p.header().expect("header").revision(), rev + 1);
        // In-flight writes have been resolved one way or the other; forget them so a later
        // round does not confuse them with new writes.
        let found: BTreeMap<String, (String, i64)> = {
            let mut f = all_with_prefix(&mut c, "crash/").await;
            f.extend(all_with_prefix(&mut c, "shared/").await);
            f
        };
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        let resolved: Vec<(String, String)> = l.in_flight.iter().cloned().collect();
        for (k, v) in resolved {
            if let Some((fv, frev)) = found.get(&k) {
                if *fv == v {
                    l.acked.insert(k.clone(), (v.clone(), *frev));
                    l.history.push((k.clone(), v.clone(), *frev));
                }
            }
        }
        l.in_flight.clear();
    }
}
