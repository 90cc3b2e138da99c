//! Backup and restore under load: while the register and set workloads run, `etcdctl snapshot save`
//! takes a snapshot; the cluster is stopped and three members are restored from that one file (with
//! `--bump-revision --mark-compacted` for Rudder; Debian's etcdctl 3.4 has no such flags). Then: every
//! write acknowledged at or below the snapshot's revision is there, later ones are not, clients never
//! see the revision go backwards, watches on old revisions are canceled as compacted, and a new member
//! can join the restored cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use serde_json::json;
use tracing::{info, warn};

use crate::checker::{self, Anomaly, CheckResult, Validity};
use crate::db::{self, Cluster, ClusterOptions};
use crate::history::{self, Event, EventType, Op, Recorder};
use crate::net::{self, Topology};
use crate::report::RunInfo;
use crate::runner::{exit_code, DbChoice, RunError, TestSpec};
use crate::workload::{self, Ctx, WorkloadKind};

/// Revisions added on restore, so restored revisions are above anything clients saw before.
const BUMP: i64 = 1_000_000;

fn result(
    checker: &str,
    valid: Validity,
    summary: String,
    figures: serde_json::Value,
    anomalies: Vec<Anomaly>,
) -> CheckResult {
    CheckResult {
        checker: checker.to_string(),
        valid,
        summary,
        figures,
        anomalies,
    }
}

fn run_cmd(cmd: &mut Command) -> Result<String, RunError> {
    let out = cmd.output().map_err(|e| RunError::Setup(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(RunError::Setup(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn run_backup(spec: TestSpec) -> u8 {
    match run_inner(&spec).await {
        Ok(v) => {
            println!("{}: backup scenario {:?}", spec.out.display(), v);
            exit_code(v)
        }
        Err(e) => {
            eprintln!("rudder-jepsen backup: {e}");
            3
        }
    }
}

async fn run_inner(spec: &TestSpec) -> Result<Validity, RunError> {
    let wall = StdInstant::now();
    let dir = spec.out.clone();
    std::fs::create_dir_all(dir.join("nodes")).map_err(|e| RunError::Setup(e.to_string()))?;
    if let Err(e) = net::cleanup_all() {
        warn!("cleaning up earlier runs: {e}");
    }
    let kind = match spec.db {
        DbChoice::Rudder => crate::db::DbKind::Rudder {
            binary: crate::runner::rudder_binary(spec),
        },
        DbChoice::Etcd => crate::db::DbKind::Etcd {
            binary: spec.etcd_bin.clone(),
        },
    };
    let topology = Topology::create(spec.nodes).map_err(|e| RunError::Setup(e.to_string()))?;
    let on_signal = net::cleanup_on_signal(topology.run_id()).ok();
    let cluster =
        Cluster::start(topology, kind, ClusterOptions::new(&dir)).map_err(|e| RunError::Setup(e.to_string()))?;
    let outcome = scenario(spec, &cluster, &dir, wall).await;
    if let Err(e) = cluster.teardown() {
        warn!("teardown: {e}");
    }
    if let Some(h) = on_signal {
        h.abort();
    }
    outcome
}

async fn scenario(
    spec: &TestSpec,
    cluster: &Cluster,
    dir: &std::path::Path,
    wall: StdInstant,
) -> Result<Validity, RunError> {
    let dir = dir.to_path_buf();
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .map_err(|e| RunError::Setup(e.to_string()))?;

    // Load: register and set together, the snapshot taken half-way.
    let recorder = Arc::new(Recorder::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(spec.time_limit);
    let endpoints = cluster.client_endpoints();
    let mk = |base: u64| {
        Arc::new(
            Ctx::new(
                recorder.clone(),
                endpoints.clone(),
                spec.concurrency,
                spec.rate / 2.0,
                Duration::from_secs(2),
                deadline,
                spec.seed,
            )
            .offset(base),
        )
    };
    let reg_ctx = mk(0);
    let set_ctx = mk(1 << 40);
    let mut reg = workload::start(WorkloadKind::Register, reg_ctx.clone());
    let mut set = workload::start(WorkloadKind::Set, set_ctx.clone());
    tokio::time::sleep(Duration::from_secs(spec.time_limit / 2)).await;
    let snapshot = dir.join("snapshot.db");
    let endpoint = endpoints.first().cloned().unwrap_or_default();
    let save_started = recorder.now();
    run_cmd(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "snapshot", "save"])
            .arg(&snapshot),
    )?;
    let save_done = recorder.now();
    let status = run_cmd(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status", "-w", "json"])
            .arg(&snapshot),
    )?;
    let status: serde_json::Value =
        serde_json::from_str(status.trim()).map_err(|e| RunError::Setup(format!("snapshot status: {e}")))?;
    let snap_rev = status["revision"].as_i64().unwrap_or(0);
    info!(snap_rev, "snapshot saved under load");
    reg.wait_generators().await;
    set.wait_generators().await;
    let events = recorder.events();
    let max_seen_before = events.iter().filter_map(|e| e.revision).max().unwrap_or(0);

    // Stop every member (the peer proxies stay) and restore all of them from the one file, with the
    // cluster token the members are started with.
    for i in 0..spec.nodes {
        cluster.kill(i).map_err(|e| RunError::Setup(e.to_string()))?;
    }
    let token = cluster.options().cluster_token.clone();
    let initial_cluster = (0..spec.nodes)
        .map(|i| format!("{}={}", db::node_name(i), db::peer_url(cluster.topology(), i)))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..spec.nodes {
        let data = cluster.data_dir(i);
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = match spec.db {
            DbChoice::Rudder => {
                let mut c = Command::new(crate::runner::rudder_binary(spec));
                c.args(["snapshot", "restore"]).arg(&snapshot);
                c.args(["--bump-revision", &BUMP.to_string(), "--mark-compacted"]);
                c
            }
            DbChoice::Etcd => {
                let mut c = Command::new("etcdctl");
                c.env("ETCDCTL_API", "3").args(["snapshot", "restore"]).arg(&snapshot);
                c
            }
        };
        cmd.arg("--data-dir").arg(&data);
        cmd.args(["--name", &db::node_name(i), "--initial-cluster", &initial_cluster]);
        cmd.args([
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &db::peer_url(cluster.topology(), i),
        ]);
        run_cmd(&mut cmd)?;
    }
    for i in 0..spec.nodes {
        cluster
            .restart(i)
            .map_err(|e| RunError::Setup(format!("restarting restored n{}: {e}", i + 1)))?;
    }
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .map_err(|e| RunError::Setup(format!("restored cluster: {e}")))?;

    let mut results = Vec::new();
    let mut client = workload::connect(&endpoint, Duration::from_secs(5))
        .await
        .map_err(|e| RunError::Setup(e.to_string()))?;
    // The members have just elected a leader and publish their attributes: wait until a linearizable
    // read answers, so the checks below judge the data rather than the start-up.
    let settle = StdInstant::now() + Duration::from_secs(20);
    while let Err(e) = client
        .get("/jepsen/", Some(etcd_client::GetOptions::new().with_count_only()))
        .await
    {
        if StdInstant::now() > settle {
            warn!("restored cluster still refuses reads: {e}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    results.push(check_set(&events, &mut client, snap_rev, save_started, save_done).await);
    results.push(check_register(&events, &mut client, snap_rev).await);
    results.push(check_revision(spec.db, &mut client, snap_rev, max_seen_before).await);
    results.push(check_old_watch(spec.db, &mut client, snap_rev).await);
    results.push(check_new_member(cluster, &mut client).await);
    results.push(checker::linearizable::check(
        &events,
        Duration::from_secs(spec.checker_budget),
    ));
    cluster.stop_all();

    let mut info = RunInfo {
        name: format!("backup-restore-{}", spec.seed),
        db: spec.db.name().to_string(),
        nodes: spec.nodes,
        workload: "register+set".into(),
        nemesis: "snapshot save, stop, restore x3".into(),
        seed: spec.seed,
        time_limit_s: spec.time_limit,
        started: crate::runner::chrono_now(),
        duration_s: wall.elapsed().as_secs_f64(),
        exit_code: 0,
        verdict: None,
        extra: json!({ "snapshot_revision": snap_rev, "max_revision_seen_before": max_seen_before, "bump": BUMP }),
    };
    let verdict = checker::worst(&results);
    info.verdict = Some(verdict);
    info.exit_code = i32::from(exit_code(verdict));
    history::write_jsonl(&dir.join("history.jsonl"), &events).map_err(|e| RunError::Setup(e.to_string()))?;
    history::write_jsonl::<history::WatchRecord>(&dir.join("watches.jsonl"), &[])
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let body = json!({ "run": info, "valid": verdict, "results": results });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
    .map_err(|e| RunError::Setup(e.to_string()))?;
    crate::report::write_run_report(&dir, &info, &events, &[], &results).map_err(|e| RunError::Setup(e.to_string()))?;
    Ok(verdict)
}

/// Acknowledged adds at or below the snapshot's revision are present; those above are absent.
async fn check_set(
    events: &[Event],
    client: &mut etcd_client::Client,
    snap_rev: i64,
    _t0: u64,
    _t1: u64,
) -> CheckResult {
    let present: BTreeSet<u64> = match client
        .get(
            "/jepsen/set/",
            Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
    {
        Ok(resp) => resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                String::from_utf8_lossy(kv.key())
                    .strip_prefix("/jepsen/set/")
                    .and_then(|s| s.parse().ok())
            })
            .collect(),
        Err(e) => {
            return result(
                "restore-set",
                Validity::Unknown,
                format!("reading the restored set: {e}"),
                json!({}),
                vec![],
            )
        }
    };
    let mut missing = Vec::new();
    let mut resurrected = Vec::new();
    let mut attempted = BTreeSet::new();
    let mut below = 0;
    for op in history::pair(events) {
        let Op::Add { element } = op.invoke.op else { continue };
        attempted.insert(element);
        let Some(done) = &op.complete else { continue };
        if done.kind != EventType::Ok {
            continue;
        }
        let rev = done.revision.unwrap_or(0);
        if rev <= snap_rev {
            below += 1;
            if !present.contains(&element) {
                missing.push((element, done.index));
            }
        } else if present.contains(&element) {
            resurrected.push((element, done.index));
        }
    }
    let unexpected: Vec<u64> = present.iter().filter(|e| !attempted.contains(e)).copied().collect();
    let mut anomalies = Vec::new();
    for (e, idx) in missing.iter().take(20) {
        anomalies.push(Anomaly { kind: "lost".into(), explanation: format!("element {e} was acknowledged at or below the snapshot revision {snap_rev} but is missing after restore"), events: vec![*idx] });
    }
    for (e, idx) in resurrected.iter().take(20) {
        anomalies.push(Anomaly {
            kind: "from-the-future".into(),
            explanation: format!(
                "element {e} was acknowledged above the snapshot revision {snap_rev} yet is present after restore"
            ),
            events: vec![*idx],
        });
    }
    if !unexpected.is_empty() {
        anomalies.push(Anomaly {
            kind: "unexpected".into(),
            explanation: format!(
                "elements never added are present: {:?}",
                &unexpected[..unexpected.len().min(20)]
            ),
            events: vec![],
        });
    }
    let valid = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    result(
        "restore-set",
        valid,
        format!("{below} adds acknowledged at or below revision {snap_rev}: {} missing; {} later ones present; {} unexpected", missing.len(), resurrected.len(), unexpected.len()),
        json!({ "snapshot_revision": snap_rev, "acknowledged_below": below, "present": present.len(), "missing": missing.len(), "later_present": resurrected.len(), "unexpected": unexpected.len() }),
        anomalies,
    )
}

/// Each register holds the value of its last acknowledged write at or below the snapshot's revision
/// (or the value of a write whose outcome is unknown).
async fn check_register(events: &[Event], client: &mut etcd_client::Client, snap_rev: i64) -> CheckResult {
    // key -> (revision, value, event) of the newest acknowledged write at or below snap_rev.
    let mut last: BTreeMap<u64, (i64, u64, usize)> = BTreeMap::new();
    let mut unknown: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut later: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for op in history::pair(events) {
        let (key, value) = match op.invoke.op {
            Op::Write { key, value } => (key, value),
            Op::Cas { key, to, .. } => (key, to),
            _ => continue,
        };
        match op.outcome() {
            EventType::Ok => {
                let (rev, idx) = op
                    .complete
                    .as_ref()
                    .map_or((0, 0), |c| (c.revision.unwrap_or(0), c.index));
                if rev <= snap_rev {
                    if last.get(&key).is_none_or(|(r, _, _)| *r < rev) {
                        last.insert(key, (rev, value, idx));
                    }
                } else {
                    later.entry(key).or_default().insert(value);
                }
            }
            EventType::Info => {
                unknown.entry(key).or_default().insert(value);
            }
            _ => {}
        }
    }
    let mut anomalies = Vec::new();
    let mut checked = 0;
    for (key, (rev, value, idx)) in &last {
        let stored = match client.get(format!("/jepsen/register/{key}"), None).await {
            Ok(resp) => resp
                .kvs()
                .first()
                .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse::<u64>().ok()),
            Err(e) => {
                return result(
                    "restore-register",
                    Validity::Unknown,
                    format!("reading register {key}: {e}"),
                    json!({}),
                    vec![],
                )
            }
        };
        checked += 1;
        let ok = stored == Some(*value) || stored.is_some_and(|s| unknown.get(key).is_some_and(|u| u.contains(&s)));
        if !ok {
            let kind = if stored.is_some_and(|s| later.get(key).is_some_and(|l| l.contains(&s))) {
                "from-the-future"
            } else {
                "wrong-value"
            };
            anomalies.push(Anomaly {
                kind: kind.into(),
                explanation: format!("register {key}: expected {value} (written at revision {rev} <= snapshot revision {snap_rev}), restored {stored:?}"),
                events: vec![*idx],
            });
        }
    }
    let valid = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    result(
        "restore-register",
        valid,
        format!(
            "{checked} registers checked against the snapshot revision {snap_rev}: {} wrong",
            anomalies.len()
        ),
        json!({ "checked": checked, "wrong": anomalies.len() }),
        anomalies,
    )
}

/// After restore, a client's first read must not show a revision below what clients saw before.
async fn check_revision(db: DbChoice, client: &mut etcd_client::Client, snap_rev: i64, max_seen: i64) -> CheckResult {
    let rev = match client
        .get(
            "/jepsen/",
            Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
        )
        .await
    {
        Ok(resp) => resp.header().map_or(0, |h| h.revision()),
        Err(e) => {
            return result(
                "restore-revision",
                Validity::Unknown,
                format!("reading the revision: {e}"),
                json!({}),
                vec![],
            )
        }
    };
    let figures =
        json!({ "revision_after_restore": rev, "max_revision_seen_before": max_seen, "snapshot_revision": snap_rev });
    if db == DbChoice::Etcd {
        // etcdctl 3.4 cannot bump revisions: going back is expected there, so only report it.
        return result("restore-revision", Validity::Valid, format!("etcdctl 3.4 restore has no --bump-revision: revision {rev} after restore, {max_seen} seen before (not checked)"), figures, vec![]);
    }
    if rev > max_seen {
        result(
            "restore-revision",
            Validity::Valid,
            format!("revision {rev} after restore > {max_seen}, the highest seen before"),
            figures,
            vec![],
        )
    } else {
        result(
            "restore-revision",
            Validity::Invalid,
            format!("revision went backwards: {rev} after restore, {max_seen} seen before"),
            figures,
            vec![Anomaly {
                kind: "revision-backwards".into(),
                explanation: format!("clients saw revision {max_seen} before the restore and {rev} after"),
                events: vec![],
            }],
        )
    }
}

/// A watch from an old revision is canceled as compacted (Rudder's --mark-compacted).
async fn check_old_watch(db: DbChoice, client: &mut etcd_client::Client, snap_rev: i64) -> CheckResult {
    if db == DbChoice::Etcd {
        return result(
            "restore-old-watch",
            Validity::Valid,
            "etcdctl 3.4 restore has no --mark-compacted (not checked)".into(),
            json!({}),
            vec![],
        );
    }
    let options = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_start_revision(snap_rev.max(2) - 1);
    let outcome = async {
        let (_w, mut stream) = client.watch("/jepsen/", Some(options)).await?;
        loop {
            match stream.message().await? {
                Some(resp) if resp.canceled() => return Ok::<_, etcd_client::Error>(Some(resp.compact_revision())),
                Some(resp) if !resp.events().is_empty() => return Ok(None),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), outcome).await {
        Ok(Ok(Some(compact))) if compact > 0 => result(
            "restore-old-watch",
            Validity::Valid,
            format!(
                "a watch from revision {} was canceled as compacted at {compact}",
                snap_rev - 1
            ),
            json!({ "compact_revision": compact }),
            vec![],
        ),
        Ok(Ok(_)) => result(
            "restore-old-watch",
            Validity::Invalid,
            "a watch from an old revision was not canceled as compacted".into(),
            json!({}),
            vec![Anomaly {
                kind: "old-watch-served".into(),
                explanation: format!(
                    "watch from revision {} after a --mark-compacted restore delivered events or no cancel",
                    snap_rev - 1
                ),
                events: vec![],
            }],
        ),
        Ok(Err(e)) => result(
            "restore-old-watch",
            Validity::Unknown,
            format!("watch failed: {e}"),
            json!({}),
            vec![],
        ),
        Err(_) => result(
            "restore-old-watch",
            Validity::Invalid,
            "a watch from an old revision got no answer in 5 s".into(),
            json!({}),
            vec![],
        ),
    }
}

/// Replaces the last member with a new, empty one; it must catch up and serve the restored data.
async fn check_new_member(cluster: &Cluster, client: &mut etcd_client::Client) -> CheckResult {
    let want = match client
        .get(
            "/jepsen/",
            Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
        )
        .await
    {
        Ok(r) => r.count(),
        Err(e) => {
            return result(
                "restore-new-member",
                Validity::Unknown,
                format!("counting keys: {e}"),
                json!({}),
                vec![],
            )
        }
    };
    let last = cluster.len() - 1;
    // A member change is refused while an earlier one (the members publishing their attributes after the
    // restore) is still uncommitted: retry for a while, as an operator would.
    let retry_until = StdInstant::now() + Duration::from_secs(20);
    let removed = loop {
        match cluster.remove_member(last).await {
            Ok(()) => break Ok(()),
            Err(e) if StdInstant::now() < retry_until => {
                warn!("removing n{}: {e}; retrying", last + 1);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = removed {
        return result(
            "restore-new-member",
            Validity::Unknown,
            format!("removing n{}: {e}", last + 1),
            json!({}),
            vec![],
        );
    }
    if let Err(e) = cluster.readd_member(last, Duration::from_secs(30)).await {
        return result(
            "restore-new-member",
            Validity::Invalid,
            format!("adding a new member failed: {e}"),
            json!({}),
            vec![],
        );
    }
    let endpoint = cluster.client_endpoints().get(last).cloned().unwrap_or_default();
    let deadline = StdInstant::now() + Duration::from_secs(30);
    let mut got = -1;
    while StdInstant::now() < deadline {
        if let Ok(mut c) = workload::connect(&endpoint, Duration::from_secs(2)).await {
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            if let Ok(r) = c.get("/jepsen/", Some(opts)).await {
                got = r.count();
                if got == want {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let figures = json!({ "keys_expected": want, "keys_on_new_member": got });
    if got == want {
        result(
            "restore-new-member",
            Validity::Valid,
            format!("a new member joined the restored cluster and serves all {want} keys"),
            figures,
            vec![],
        )
    } else {
        result(
            "restore-new-member",
            Validity::Invalid,
            format!("the new member serves {got} keys, expected {want}"),
            figures,
            vec![Anomaly {
                kind: "new-member-behind".into(),
                explanation: format!("new member has {got} of {want} keys after 30 s"),
                events: vec![],
            }],
        )
    }
}
