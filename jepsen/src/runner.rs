//! One test end to end: network and nodes up, workload and nemesis together until the time limit, heal,
//! final reads, nodes down, history written, checkers run, report written. Also the matrix of many tests,
//! re-checking a recorded run, and cleanup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::checker::{self, CheckResult, Validity};
use crate::db::{Cluster, ClusterOptions, DbKind};
use crate::history::{self, Event, Recorder, WatchRecord};
use crate::nemesis;
use crate::nemesis::{NemesisKind, NemesisOptions};
use crate::net::{self, Topology};
use crate::report::{self, MatrixRow, RunInfo};
use crate::workload::{self, Ctx, WorkloadKind};

/// Which store to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbChoice {
    Rudder,
    Etcd,
}

impl DbChoice {
    pub fn name(self) -> &'static str {
        match self {
            DbChoice::Rudder => "rudder",
            DbChoice::Etcd => "etcd",
        }
    }
}

/// Everything one test needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestSpec {
    pub db: DbChoice,
    pub nodes: usize,
    pub workload: WorkloadKind,
    pub nemesis: String,
    pub time_limit: u64,
    pub seed: u64,
    pub out: PathBuf,
    pub bug: Option<String>,
    pub rudder_bin: Option<PathBuf>,
    pub etcd_bin: PathBuf,
    pub concurrency: usize,
    pub rate: f64,
    pub checker_budget: u64,
}

/// Bugs Rudder can be started with (test-only switches in the store).
pub const BUGS: [&str; 3] = ["stale-read", "ack-before-fsync", "drop-watch-event"];

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The exit code for a verdict.
pub fn exit_code(v: Validity) -> u8 {
    match v {
        Validity::Valid => 0,
        Validity::Invalid => 1,
        Validity::Unknown => 2,
    }
}

pub(crate) fn rudder_binary(spec: &TestSpec) -> PathBuf {
    if let Some(b) = &spec.rudder_bin {
        return b.clone();
    }
    // Built into the same target dir as this binary.
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let candidate = dir.join("rudder");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from("rudder")
}

fn db_kind(spec: &TestSpec, kinds: &[NemesisKind]) -> Result<(DbKind, Vec<String>), RunError> {
    let mut extra: Vec<String> = kinds.iter().flat_map(|k| k.extra_args()).collect();
    let kind = match spec.db {
        DbChoice::Rudder => {
            if let Some(bug) = &spec.bug {
                if !BUGS.contains(&bug.as_str()) {
                    return Err(RunError::Setup(format!(
                        "unknown bug {bug:?}; known: {}",
                        BUGS.join(", ")
                    )));
                }
                extra.push(format!("--unsafe-inject-bug={bug}"));
                extra.push("--unsafe-allow-bug-injection".into());
            }
            DbKind::Rudder {
                binary: rudder_binary(spec),
            }
        }
        DbChoice::Etcd => {
            if spec.bug.is_some() {
                return Err(RunError::Setup("--bug injects bugs into Rudder only".into()));
            }
            DbKind::Etcd {
                binary: spec.etcd_bin.clone(),
            }
        }
    };
    Ok((kind, extra))
}

/// What the checkers found for one workload's history.
pub fn check(workload: WorkloadKind, events: &[Event], watches: &[WatchRecord], budget: Duration) -> Vec<CheckResult> {
    let mut results = Vec::new();
    match workload {
        WorkloadKind::Register => results.push(checker::linearizable::check(events, budget)),
        WorkloadKind::Set => results.push(checker::set::check(events)),
        WorkloadKind::Append => results.push(checker::append::check(events)),
        WorkloadKind::Watch => results.push(checker::watch::check(events, watches, &workload.prefix())),
        WorkloadKind::Lease => results.push(checker::lease::check(events)),
        WorkloadKind::Kubernetes => {
            results.push(checker::linearizable::check(events, budget));
            results.push(checker::watch::check(events, watches, &workload.prefix()));
        }
    }
    results.push(checker::availability::check(events));
    results
}

/// Writes history, watches, results and the report of a run; returns the verdict.
fn write_outputs(
    dir: &Path,
    info: &mut RunInfo,
    events: &[Event],
    watches: &[WatchRecord],
    results: &[CheckResult],
) -> Result<Validity, RunError> {
    let verdict = checker::worst(results);
    info.verdict = Some(verdict);
    info.exit_code = i32::from(exit_code(verdict));
    let hist = dir.join("history.jsonl");
    history::write_jsonl(&hist, events).map_err(io_err(&hist))?;
    let w = dir.join("watches.jsonl");
    history::write_jsonl(&w, watches).map_err(io_err(&w))?;
    let results_path = dir.join("results.json");
    let body = serde_json::json!({ "run": info, "valid": verdict, "results": results });
    let text = serde_json::to_string_pretty(&body).map_err(|e| RunError::Setup(e.to_string()))?;
    std::fs::write(&results_path, text).map_err(io_err(&results_path))?;
    report::write_run_report(dir, info, events, watches, results).map_err(|e| RunError::Setup(e.to_string()))?;
    Ok(verdict)
}

fn verdict_name(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Unknown => "unknown",
        Validity::Invalid => "invalid",
    }
}

/// Runs one test and returns its exit code.
pub async fn run_test(spec: TestSpec) -> u8 {
    match run_test_inner(&spec).await {
        Ok((verdict, _)) => {
            println!(
                "{}: {} (report: {})",
                spec.out.display(),
                verdict_name(verdict),
                spec.out.join("index.html").display()
            );
            exit_code(verdict)
        }
        Err(e) => {
            eprintln!("rudder-jepsen: {e}");
            3
        }
    }
}

/// A live display of the run: operations so far and the faults in force.
fn progress(recorder: Arc<Recorder>, label: String, total: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(total.as_secs());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(label);
        let start = StdInstant::now();
        loop {
            let c = recorder.counts();
            bar.set_position(start.elapsed().as_secs().min(total.as_secs()));
            let faults = if c.active_faults.is_empty() {
                "-".to_string()
            } else {
                c.active_faults.join(",")
            };
            bar.set_message(format!(
                "ok {} fail {} info {} watch {} | fault: {faults}",
                c.ok, c.fail, c.info, c.watch_records
            ));
            if start.elapsed() > total + Duration::from_secs(600) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn run_test_inner(spec: &TestSpec) -> Result<(Validity, usize), RunError> {
    let started = chrono_now();
    let wall = StdInstant::now();
    let dir = spec.out.clone();
    std::fs::create_dir_all(dir.join("nodes")).map_err(io_err(&dir))?;
    if let Err(e) = net::cleanup_all() {
        warn!("cleaning up earlier runs: {e}");
    }
    let kinds = nemesis::parse_nemeses(&spec.nemesis).map_err(|e| RunError::Setup(e.to_string()))?;
    // Faults end early enough that the workload runs on the healed cluster for a while: that is where
    // availability after the heal is judged.
    let fault_window = Duration::from_secs(spec.time_limit)
        .saturating_sub(Duration::from_secs(8))
        .max(Duration::from_secs(5));
    let plan = nemesis::plan(&kinds, spec.nodes, fault_window, spec.seed);
    if plan.steps.is_empty() && kinds.iter().any(|k| *k != NemesisKind::None) {
        // A run that asked for faults and got none would report "valid" having tested nothing.
        return Err(RunError::Setup(format!(
            "--time-limit {}s leaves no room for a fault (needs at least 15 s)",
            spec.time_limit
        )));
    }
    let (kind, extra) = db_kind(spec, &kinds)?;
    let topology = Topology::create(spec.nodes).map_err(|e| RunError::Setup(e.to_string()))?;
    let on_signal = net::cleanup_on_signal(topology.run_id()).ok();
    let mut opts = ClusterOptions::new(&dir);
    opts.extra_args = extra;
    let cluster = Cluster::start(topology, kind, opts).map_err(|e| RunError::Setup(format!("starting nodes: {e}")))?;
    if let Err(e) = cluster.wait_ready(Duration::from_secs(30)).await {
        let _ = cluster.teardown();
        return Err(RunError::Setup(format!("nodes not ready: {e}")));
    }
    info!(nodes = spec.nodes, db = spec.db.name(), "cluster ready");

    let recorder = Arc::new(Recorder::new());
    let time_limit = Duration::from_secs(spec.time_limit);
    let deadline = tokio::time::Instant::now() + time_limit;
    let ctx = Arc::new(Ctx::new(
        recorder.clone(),
        cluster.client_endpoints(),
        spec.concurrency,
        spec.rate,
        Duration::from_secs(2),
        deadline,
        spec.seed,
    ));
    let label = format!("{} {} {}", spec.workload.name(), spec.nemesis, spec.seed);
    let bar = progress(recorder.clone(), label, time_limit);
    let mut running = workload::start(spec.workload, ctx.clone());
    let nem = nemesis::Nemesis::new(spec.seed, NemesisOptions::default());
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The nemesis runs its plan (over by the time limit), then heals; the generators stop at the deadline.
    let (healed, ()) = tokio::join!(nem.run(&plan, &cluster, &recorder, stop_rx), running.wait_generators());
    if let Err(e) = healed {
        warn!("the final heal failed: {e}");
    }
    running.finish(ctx.clone(), Duration::from_secs(30)).await;
    bar.abort();
    if let Err(e) = cluster.teardown() {
        warn!("teardown: {e}");
    }
    if let Some(h) = on_signal {
        h.abort();
    }

    let events = recorder.events();
    let watches = recorder.watches();
    let results = check(
        spec.workload,
        &events,
        &watches,
        Duration::from_secs(spec.checker_budget),
    );
    let mut info = RunInfo {
        name: format!("{}-{}-{}", spec.workload.name(), spec.nemesis, spec.seed),
        db: spec.db.name().to_string(),
        nodes: spec.nodes,
        workload: spec.workload.name().to_string(),
        nemesis: spec.nemesis.clone(),
        seed: spec.seed,
        time_limit_s: spec.time_limit,
        started,
        duration_s: wall.elapsed().as_secs_f64(),
        exit_code: 0,
        verdict: None,
        extra: serde_json::json!({
            "bug": spec.bug,
            "concurrency": spec.concurrency,
            "rate": spec.rate,
            "faults planned": plan.steps.len(),
        }),
    };
    let verdict = write_outputs(&dir, &mut info, &events, &watches, &results)?;
    Ok((verdict, events.len()))
}

pub(crate) fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Re-runs the checkers on a recorded run.
pub fn recheck(dir: &Path, budget: u64) -> u8 {
    let run = || -> Result<Validity, RunError> {
        let events: Vec<Event> = history::read_jsonl(&dir.join("history.jsonl")).map_err(io_err(dir))?;
        let watches: Vec<WatchRecord> = history::read_jsonl(&dir.join("watches.jsonl")).unwrap_or_default();
        let results_path = dir.join("results.json");
        let text = std::fs::read_to_string(&results_path).map_err(io_err(&results_path))?;
        let old: serde_json::Value = serde_json::from_str(&text).map_err(|e| RunError::Setup(e.to_string()))?;
        let mut info: RunInfo =
            serde_json::from_value(old["run"].clone()).map_err(|e| RunError::Setup(format!("results.json: {e}")))?;
        let workload = WorkloadKind::all()
            .into_iter()
            .find(|w| w.name() == info.workload)
            .ok_or_else(|| RunError::Setup(format!("unknown workload {}", info.workload)))?;
        let results = check(workload, &events, &watches, Duration::from_secs(budget));
        write_outputs(dir, &mut info, &events, &watches, &results)
    };
    match run() {
        Ok(v) => {
            println!("{}: {}", dir.display(), verdict_name(v));
            exit_code(v)
        }
        Err(e) => {
            eprintln!("rudder-jepsen: {e}");
            3
        }
    }
}

pub fn cleanup() -> u8 {
    match net::cleanup_all() {
        Ok(removed) => {
            for r in removed {
                println!("removed {r}");
            }
            0
        }
        Err(e) => {
            eprintln!("rudder-jepsen cleanup: {e}");
            3
        }
    }
}

pub async fn proxy(listen: &str, upstream: &str, control: &Path) -> u8 {
    let (Ok(listen), Ok(upstream)) = (listen.parse(), upstream.parse()) else {
        eprintln!("rudder-jepsen proxy: --listen and --upstream take IP:PORT");
        return 3;
    };
    match nemesis::run_proxy(listen, upstream, control.to_path_buf()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rudder-jepsen proxy: {e}");
            3
        }
    }
}

/// One entry of a matrix: a test and the verdict it is expected to reach.
struct Planned {
    spec: TestSpec,
    expect: Validity,
}

fn smoke(base: &TestSpec, out: &Path) -> Vec<Planned> {
    let mk = |w: WorkloadKind, n: &str, secs: u64, bug: Option<&str>, expect: Validity| {
        let mut spec = base.clone();
        spec.workload = w;
        spec.nemesis = n.to_string();
        spec.time_limit = secs;
        spec.bug = bug.map(str::to_string);
        let tag = bug.map(|b| format!("-bug-{b}")).unwrap_or_default();
        spec.out = out.join(format!("{}-{}-{}{}", w.name(), n.replace(',', "+"), spec.seed, tag));
        Planned { spec, expect }
    };
    use WorkloadKind::*;
    let mut plan = vec![
        mk(Register, "partition", 40, None, Validity::Valid),
        mk(Set, "kill", 40, None, Validity::Valid),
        mk(Append, "pause", 35, None, Validity::Valid),
        mk(Watch, "compaction,kill", 40, None, Validity::Valid),
        mk(Lease, "partition", 35, None, Validity::Valid),
        mk(Kubernetes, "membership", 40, None, Validity::Valid),
    ];
    if base.db == DbChoice::Rudder {
        plan.push(mk(Register, "partition", 30, Some("stale-read"), Validity::Invalid));
        plan.push(mk(Set, "kill", 30, Some("ack-before-fsync"), Validity::Invalid));
        plan.push(mk(Watch, "none", 20, Some("drop-watch-event"), Validity::Invalid));
    }
    plan
}

/// Runs a matrix and writes its summary; returns the exit code (a bug run counts as passing when it
/// reports the anomaly it was started to show).
pub async fn run_matrix(
    base: TestSpec,
    workloads: Option<String>,
    nemeses: Option<String>,
    seeds: &str,
    preset: Option<&str>,
    out: &Path,
) -> u8 {
    let plan: Vec<Planned> = match preset {
        Some("smoke") => smoke(&base, out),
        Some(other) => {
            eprintln!("rudder-jepsen: unknown preset {other:?} (known: smoke)");
            return 3;
        }
        None => {
            let workloads: Vec<WorkloadKind> = match workloads {
                None => WorkloadKind::all().to_vec(),
                Some(list) => {
                    let mut ws = Vec::new();
                    for name in list.split(',') {
                        match WorkloadKind::all().into_iter().find(|w| w.name() == name) {
                            Some(w) => ws.push(w),
                            None => {
                                eprintln!("rudder-jepsen: unknown workload {name:?}");
                                return 3;
                            }
                        }
                    }
                    ws
                }
            };
            let nemeses: Vec<String> = nemeses
                .unwrap_or_else(|| NemesisKind::all_faults().map(|k| k.name()).join(","))
                .split(',')
                .map(str::to_string)
                .collect();
            let mut seeds_list = Vec::new();
            for s in seeds.split(',') {
                match s.trim().parse::<u64>() {
                    Ok(v) => seeds_list.push(v),
                    Err(_) => {
                        eprintln!("rudder-jepsen: bad seed {s:?}");
                        return 3;
                    }
                }
            }
            let mut plan = Vec::new();
            for w in &workloads {
                for n in &nemeses {
                    for seed in &seeds_list {
                        let mut spec = base.clone();
                        spec.workload = *w;
                        spec.nemesis = n.clone();
                        spec.seed = *seed;
                        spec.out = out.join(format!("{}-{}-{}", w.name(), n, seed));
                        plan.push(Planned {
                            spec,
                            expect: Validity::Valid,
                        });
                    }
                }
            }
            plan
        }
    };
    let mut rows = Vec::new();
    let mut all_as_expected = true;
    let mut harness_error = false;
    for p in plan {
        let wall = StdInstant::now();
        let (verdict, ops) = match run_test_inner(&p.spec).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("rudder-jepsen: {}: {e}", p.spec.out.display());
                harness_error = true;
                (Validity::Unknown, 0)
            }
        };
        let checkers = read_checker_verdicts(&p.spec.out);
        println!(
            "{:<40} {:<8} (expected {})",
            p.spec
                .out
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            verdict_name(verdict),
            verdict_name(p.expect)
        );
        all_as_expected &= verdict == p.expect;
        rows.push(MatrixRow {
            workload: p.spec.workload.name().to_string(),
            nemesis: p.spec.nemesis.clone(),
            seed: p.spec.seed,
            db: p.spec.db.name().to_string(),
            bug: p.spec.bug.clone(),
            expected: p.expect,
            verdict,
            checkers,
            ops,
            duration_s: wall.elapsed().as_secs_f64(),
            run_dir: p
                .spec
                .out
                .strip_prefix(out)
                .unwrap_or(&p.spec.out)
                .display()
                .to_string(),
        });
    }
    if preset == Some("smoke") {
        let backup_out = out.join("backup");
        let mut spec = base.clone();
        spec.out = backup_out.clone();
        spec.time_limit = 30;
        let wall = StdInstant::now();
        let code = run_backup(spec.clone()).await;
        let verdict = match code {
            0 => Validity::Valid,
            1 => Validity::Invalid,
            _ => Validity::Unknown,
        };
        all_as_expected &= verdict == Validity::Valid;
        rows.push(MatrixRow {
            workload: "backup-restore".into(),
            nemesis: "snapshot+restore".into(),
            seed: spec.seed,
            db: spec.db.name().to_string(),
            bug: None,
            expected: Validity::Valid,
            verdict,
            checkers: read_checker_verdicts(&backup_out),
            ops: 0,
            duration_s: wall.elapsed().as_secs_f64(),
            run_dir: "backup".into(),
        });
    }
    if let Err(e) = report::write_matrix_report(out, &rows) {
        eprintln!("rudder-jepsen: writing the matrix report: {e}");
        return 3;
    }
    println!("matrix: {}", out.join("index.html").display());
    if harness_error {
        3
    } else if all_as_expected {
        0
    } else {
        1
    }
}

/// Writes a Markdown document with the matrix summary: when, on what, with which command.
pub fn write_doc(doc: &Path, out: &Path, command: &str) -> Result<(), RunError> {
    let summary_path = out.join("summary.md");
    let summary = std::fs::read_to_string(&summary_path).map_err(io_err(&summary_path))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let text = format!(
        "# Jepsen results\n\nWritten by `rudder-jepsen matrix` on {} ({cores} cores). Command:\n\n```\n{command}\n```\n\n\
         Each run's report (timeline, plots, anomalies) is under `{}`; `make jepsen` runs the full matrix.\n\n{summary}",
        chrono_now(),
        out.display()
    );
    std::fs::write(doc, text).map_err(io_err(doc))
}

fn read_checker_verdicts(dir: &Path) -> Vec<(String, Validity)> {
    let Ok(text) = std::fs::read_to_string(dir.join("results.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let results: Vec<CheckResult> = serde_json::from_value(v["results"].clone()).unwrap_or_default();
    results.into_iter().map(|r| (r.checker, r.valid)).collect()
}

pub use crate::backup_scenario::run_backup;
