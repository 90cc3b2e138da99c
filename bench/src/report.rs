//! Results: the raw per-round data, the summary (medians over rounds, ratio rudder/etcd, target met or
//! not), and their rendering as a markdown report and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::checkperf::CheckPerf;
use crate::cluster::FailoverRun;
use crate::load::{PhaseStats, PHASES};
use crate::server::{Memory, Target};

/// Everything one benchmark run produced; serialised as the JSON file.
#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub config: Config,
    pub runs: Vec<TargetRun>,
    /// Single-member results (empty when only `--members 3` ran).
    pub summary: Vec<SummaryRow>,
    /// Three-member results (empty unless `--members` included 3).
    pub summary_three: Vec<SummaryRow>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub date_utc: String,
    pub machine: BTreeMap<&'static str, String>,
    pub versions: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct Config {
    pub quick: bool,
    pub targets: Vec<Target>,
    pub members: Vec<usize>,
    pub failovers: usize,
    pub rounds: usize,
    pub phase_duration_s: f64,
    pub value_size: usize,
    pub keyspace: u32,
    pub check_perf_loads: Vec<String>,
    pub check_perf_rounds: usize,
    pub work_dir: String,
    pub rudder_binary: String,
    pub etcd_binary: String,
    pub etcdctl_binary: String,
}

/// One target in one round.
#[derive(Debug, Serialize)]
pub struct TargetRun {
    /// 1-based round number.
    pub round: usize,
    /// 1 if this target ran first in its round.
    pub position: usize,
    pub target: Target,
    /// Cluster size: 1, or 3 in three-member mode.
    pub members: usize,
    /// Set when the server for the load phases did not start; then nothing else ran.
    pub start_error: Option<String>,
    pub phases: Vec<PhaseRun>,
    pub memory: Option<Memory>,
    pub memory_error: Option<String>,
    pub check_perf: Vec<CheckPerfRun>,
    /// Leader failovers (three-member mode only).
    pub failover: Vec<FailoverRun>,
}

impl TargetRun {
    pub fn new(round: usize, position: usize, target: Target) -> Self {
        Self {
            round,
            position,
            target,
            members: 1,
            start_error: None,
            phases: Vec::new(),
            memory: None,
            memory_error: None,
            check_perf: Vec::new(),
            failover: Vec::new(),
        }
    }

    fn phase(&self, id: &str) -> Option<&PhaseRun> {
        self.phases.iter().find(|p| p.id == id)
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseRun {
    pub id: &'static str,
    pub title: &'static str,
    pub stats: Option<PhaseStats>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CheckPerfRun {
    pub load: String,
    pub result: Option<CheckPerf>,
    pub error: Option<String>,
}

/// Whether a larger or a smaller value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// How a metric takes part in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A target: throughput ratio >= 1, latency/memory ratio <= 1.
    Target,
    /// Shown for context only.
    Info,
    /// etcdctl's PASS/FAIL: the target is that rudder passes wherever etcd passes (a load etcd itself
    /// fails on this machine, e.g. `l` on two cores, judges nothing beyond its throughput ratio).
    Verdict,
}

/// One value of one metric for one target in one round.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sample {
    /// The value, and a warning (e.g. "12 request errors") if it is suspect.
    Value(f64, Option<String>),
    Failed(String),
    NotRun,
}

pub(crate) struct MetricDef {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) role: Role,
    pub(crate) sample: Box<dyn Fn(&TargetRun) -> Sample>,
}

pub(crate) fn phase_metric(
    phase: &'static str,
    title: &'static str,
    what: &'static str,
    unit: &'static str,
    better: Better,
    value: fn(&PhaseStats) -> f64,
) -> MetricDef {
    MetricDef {
        id: format!("{phase}.{what}"),
        label: format!("{title}: {what}"),
        unit,
        better,
        role: Role::Target,
        sample: Box::new(move |run: &TargetRun| {
            if run.start_error.is_some() {
                return Sample::Failed("server did not start".into());
            }
            match run.phase(phase) {
                None => Sample::NotRun,
                Some(PhaseRun { stats: Some(s), .. }) => {
                    let mut warnings = Vec::new();
                    if s.errors > 0 {
                        warnings.push(format!("{} request errors", s.errors));
                    }
                    if s.misses > 0 {
                        warnings.push(format!("{} gets missed written keys", s.misses));
                    }
                    Sample::Value(value(s), (!warnings.is_empty()).then(|| warnings.join(", ")))
                }
                Some(PhaseRun { error, .. }) => Sample::Failed(error.clone().unwrap_or_else(|| "failed".into())),
            }
        }),
    }
}

pub(crate) fn memory_metric(id: &str, label: &str, role: Role, value: fn(&Memory) -> f64) -> MetricDef {
    MetricDef {
        id: id.into(),
        label: label.into(),
        unit: "MiB",
        better: Better::Lower,
        role,
        sample: Box::new(
            move |run: &TargetRun| match (&run.start_error, &run.memory, &run.memory_error) {
                (Some(_), _, _) => Sample::Failed("server did not start".into()),
                (_, Some(m), _) => Sample::Value(value(m), None),
                (_, None, Some(e)) => Sample::Failed(e.clone()),
                (_, None, None) => Sample::NotRun,
            },
        ),
    }
}

fn check_perf_metric(
    load: &str,
    what: &str,
    unit: &'static str,
    better: Better,
    role: Role,
    value: fn(&CheckPerf) -> Option<f64>,
) -> MetricDef {
    let load_owned = load.to_string();
    MetricDef {
        id: format!("check_perf_{load}.{what}"),
        label: format!("etcdctl check perf --load={load}: {what}"),
        unit,
        better,
        role,
        sample: Box::new(
            move |run: &TargetRun| match run.check_perf.iter().find(|c| c.load == load_owned) {
                None => Sample::NotRun,
                Some(CheckPerfRun { result: Some(r), .. }) => match value(r) {
                    Some(v) => Sample::Value(v, None),
                    None => Sample::Failed("not reported by etcdctl".into()),
                },
                Some(CheckPerfRun { error, .. }) => Sample::Failed(error.clone().unwrap_or_else(|| "failed".into())),
            },
        ),
    }
}

fn metrics(check_perf_loads: &[String]) -> Vec<MetricDef> {
    let mut defs = Vec::new();
    for p in &PHASES {
        defs.push(phase_metric(
            p.id,
            p.title,
            "throughput",
            "ops/s",
            Better::Higher,
            |s| s.ops_per_sec,
        ));
        defs.push(phase_metric(p.id, p.title, "p50", "ms", Better::Lower, |s| s.p50_ms));
        defs.push(phase_metric(p.id, p.title, "p99", "ms", Better::Lower, |s| s.p99_ms));
    }
    defs.push(memory_metric(
        "memory.rss",
        "RSS after the load phases (VmRSS)",
        Role::Target,
        |m| m.rss_mib,
    ));
    defs.push(memory_metric(
        "memory.hwm",
        "peak RSS during the load phases (VmHWM)",
        Role::Info,
        |m| m.hwm_mib,
    ));
    for load in check_perf_loads {
        defs.push(check_perf_metric(
            load,
            "verdict",
            "",
            Better::Higher,
            Role::Verdict,
            |c| Some(if c.passed { 1.0 } else { 0.0 }),
        ));
        defs.push(check_perf_metric(
            load,
            "throughput",
            "writes/s",
            Better::Higher,
            Role::Target,
            |c| c.writes_per_sec,
        ));
        defs.push(check_perf_metric(
            load,
            "slowest request",
            "ms",
            Better::Lower,
            Role::Info,
            |c| c.slowest_ms,
        ));
        defs.push(check_perf_metric(
            load,
            "stddev",
            "ms",
            Better::Lower,
            Role::Info,
            |c| c.stddev_ms,
        ));
    }
    defs
}

/// A target's aggregate for one metric over the rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    /// Median over the rounds that produced a value (for verdicts: the fraction of PASS).
    pub median: Option<f64>,
    /// Per-round values, in round order (failed rounds left out).
    pub values: Vec<f64>,
    /// Rounds in which the metric was attempted.
    pub attempts: usize,
    /// Why rounds failed, if any did.
    pub failures: Vec<String>,
    /// Warnings attached to values (request errors, missed keys).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SummaryRow {
    pub id: String,
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub role: Role,
    pub cells: BTreeMap<Target, Cell>,
    /// rudder / etcd of the medians, when both exist.
    pub ratio: Option<f64>,
    /// Whether rudder meets the target; `None` when it cannot be judged (info rows, missing data).
    pub met: Option<bool>,
    /// Why `met` is what it is, in a few words.
    pub verdict: String,
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn cell(def: &MetricDef, runs: &[&TargetRun]) -> Option<Cell> {
    let mut c = Cell {
        median: None,
        values: Vec::new(),
        attempts: 0,
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    for run in runs {
        match (def.sample)(run) {
            Sample::NotRun => continue,
            Sample::Value(v, warning) => {
                c.values.push(v);
                if let Some(w) = warning {
                    c.warnings.push(format!("round {}: {w}", run.round));
                }
            }
            Sample::Failed(why) => c.failures.push(format!("round {}: {}", run.round, first_line(&why))),
        }
        c.attempts += 1;
    }
    if c.attempts == 0 {
        return None;
    }
    c.median = if def.role == Role::Verdict {
        (!c.values.is_empty()).then(|| c.values.iter().sum::<f64>() / c.values.len() as f64)
    } else {
        median(&c.values)
    };
    Some(c)
}

fn judge(def: &MetricDef, rudder: Option<&Cell>, etcd: Option<&Cell>, ratio: Option<f64>) -> (Option<bool>, String) {
    if def.role == Role::Info {
        return (None, "info only".into());
    }
    let Some(r) = rudder else {
        return (None, "rudder not run".into());
    };
    if r.median.is_none() {
        return (Some(false), "not met: rudder failed".into());
    }
    if !r.failures.is_empty() {
        return (
            Some(false),
            format!(
                "not met: rudder failed in {} of {} rounds",
                r.failures.len(),
                r.attempts
            ),
        );
    }
    if !r.warnings.is_empty() {
        return (Some(false), "not met: rudder had errors".into());
    }
    if def.role == Role::Verdict {
        return match (r.median == Some(1.0), etcd.and_then(|e| e.median)) {
            (true, _) => (Some(true), "met".into()),
            (false, Some(e)) if e < 1.0 => (None, "n/a: etcd fails it too".into()),
            (false, _) => (Some(false), "not met".into()),
        };
    }
    let Some(ratio) = ratio else {
        return match etcd {
            Some(e) if e.median.is_none() => (None, "n/a: etcd failed".into()),
            _ => (None, "n/a: no etcd figure".into()),
        };
    };
    let met = match def.better {
        Better::Higher => ratio >= 1.0,
        Better::Lower => ratio <= 1.0,
    };
    (Some(met), if met { "met".into() } else { "not met".into() })
}

/// Builds the single-member summary rows from the per-round runs.
pub fn summarize(runs: &[TargetRun], check_perf_loads: &[String]) -> Vec<SummaryRow> {
    summarize_defs(metrics(check_perf_loads), runs, 1)
}

/// Summary rows for `defs` over the runs with `members` members.
pub(crate) fn summarize_defs(defs: Vec<MetricDef>, runs: &[TargetRun], members: usize) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for def in defs {
        let mut cells = BTreeMap::new();
        for target in [Target::Rudder, Target::Etcd] {
            let mine: Vec<&TargetRun> = runs
                .iter()
                .filter(|r| r.target == target && r.members == members)
                .collect();
            if let Some(c) = cell(&def, &mine) {
                cells.insert(target, c);
            }
        }
        if cells.is_empty() {
            continue;
        }
        let (rudder, etcd) = (cells.get(&Target::Rudder), cells.get(&Target::Etcd));
        let ratio = match (rudder.and_then(|c| c.median), etcd.and_then(|c| c.median)) {
            (Some(r), Some(e)) if def.role != Role::Verdict && e > 0.0 => Some(r / e),
            _ => None,
        };
        let (met, verdict) = judge(&def, rudder, etcd, ratio);
        rows.push(SummaryRow {
            id: def.id,
            label: def.label,
            unit: def.unit,
            better: def.better,
            role: def.role,
            cells,
            ratio,
            met,
            verdict,
        });
    }
    rows
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Formats a number with a precision suited to its magnitude.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_cell(row: &SummaryRow, target: Target) -> String {
    let Some(c) = row.cells.get(&target) else {
        return "not run".into();
    };
    let Some(m) = c.median else {
        return format!(
            "**FAILED** ({})",
            c.failures.first().map_or("no value", |f| trim_round(f))
        );
    };
    let mut s = if row.role == Role::Verdict {
        let passes = c.values.iter().filter(|&&v| v == 1.0).count();
        match (passes, c.values.len()) {
            (p, n) if p == n && n == 1 => "PASS".to_string(),
            (0, 1) => "FAIL".to_string(),
            (p, n) => format!("PASS {p}/{n}"),
        }
    } else {
        fmt_num(m)
    };
    if !c.failures.is_empty() {
        let _ = write!(s, " ⚠ failed in {}/{} rounds", c.failures.len(), c.attempts);
    }
    if !c.warnings.is_empty() {
        let _ = write!(
            s,
            " ⚠ {}",
            c.warnings.iter().map(|w| trim_round(w)).collect::<Vec<_>>().join("; ")
        );
    }
    s
}

/// "round 2: reason" -> "reason", for compact table cells.
fn trim_round(s: &str) -> &str {
    s.split_once(": ").map_or(s, |(_, rest)| rest)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The results table (markdown), also printed to stdout.
pub fn results_table(rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    out.push_str("| Metric | Unit | rudder | etcd | rudder/etcd | Better | Target |\n");
    out.push_str("|---|---|---:|---:|---:|---|---|\n");
    for row in rows {
        let ratio = row.ratio.map_or_else(|| "—".to_string(), |r| format!("{r:.2}"));
        let better = match (row.role, row.better) {
            (Role::Verdict, _) => "PASS",
            (_, Better::Higher) => "higher",
            (_, Better::Lower) => "lower",
        };
        let target = match row.met {
            Some(true) => format!("✅ {}", row.verdict),
            Some(false) => format!("❌ {}", row.verdict),
            None => row.verdict.clone(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            escape(&row.label),
            row.unit,
            escape(&truncate(&fmt_cell(row, Target::Rudder), 90)),
            escape(&truncate(&fmt_cell(row, Target::Etcd), 90)),
            ratio,
            better,
            target
        );
    }
    out
}

/// Count of target rows met / judged.
pub fn tally(rows: &[SummaryRow]) -> (usize, usize) {
    let judged: Vec<bool> = rows.iter().filter_map(|r| r.met).collect();
    (judged.iter().filter(|&&m| m).count(), judged.len())
}

/// Every start failure and phase error, with full messages.
pub fn failures(runs: &[TargetRun]) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs {
        let who = if run.members == 1 {
            format!("round {} {}", run.round, run.target)
        } else {
            format!("round {} {} ({} members)", run.round, run.target, run.members)
        };
        if let Some(e) = &run.start_error {
            out.push(format!("{who}: failed to start: {e}"));
        }
        for p in &run.phases {
            if let Some(e) = &p.error {
                out.push(format!("{who}, {}: {e}", p.title));
            }
            if let Some(s) = &p.stats {
                if let Some(e) = &s.first_error {
                    out.push(format!("{who}, {}: {} request errors, first: {e}", p.title, s.errors));
                }
            }
        }
        if let Some(e) = &run.memory_error {
            out.push(format!("{who}, memory: {e}"));
        }
        for c in &run.check_perf {
            if let Some(e) = &c.error {
                out.push(format!("{who}, check perf --load={}: {e}", c.load));
            }
        }
        for f in &run.failover {
            if let Some(e) = &f.error {
                out.push(format!("{who}, failover {}: {e}", f.repeat));
            }
        }
    }
    out
}

pub(crate) fn raw_value(run: &TargetRun, def: &MetricDef) -> String {
    match (def.sample)(run) {
        Sample::NotRun => "—".into(),
        Sample::Failed(_) => "failed".into(),
        Sample::Value(v, warning) => {
            let mut s = if def.role == Role::Verdict {
                (if v == 1.0 { "PASS" } else { "FAIL" }).to_string()
            } else {
                fmt_num(v)
            };
            if let Some(w) = warning {
                let _ = write!(s, " ⚠ {w}");
            }
            s
        }
    }
}

/// The full markdown document.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let c = &report.config;
    md.push_str("# Benchmarks: `rudder store` vs etcd\n\n");
    let _ = writeln!(
        md,
        "Generated by `rudder-bench` (`make bench`) on {}{}. Both servers ran one after the other on the same \
         machine with the same load generator; figures are medians over the rounds.\n",
        report.meta.date_utc,
        if c.quick {
            " in **quick mode** (smoke run: short phases, one round; not for comparison)"
        } else {
            ""
        }
    );

    md.push_str("## Machine\n\n| | |\n|---|---|\n");
    for (k, v) in &report.meta.machine {
        let _ = writeln!(md, "| {k} | {} |", escape(v));
    }
    md.push_str("\n## Versions\n\n| | |\n|---|---|\n");
    for (k, v) in &report.meta.versions {
        let _ = writeln!(md, "| {k} | {} |", escape(v));
    }

    md.push_str("\n## Method\n\n");
    // The single-member bullets only describe runs that happened.
    let single = c.members.contains(&1);
    let _ = writeln!(
        md,
        "- Cluster sizes (`--members`): {}. {}",
        c.members.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        match (c.members.contains(&1), c.members.contains(&crate::cluster::MEMBERS)) {
            (true, true) =>
                "The rest of this section describes the single-member runs; three-member mode has its \
                             own section below.",
            (false, _) => "Only three-member mode ran; it is described in its own section below.",
            (true, false) => "",
        }
    );
    let _ = writeln!(
        md,
        "- Targets: {}; {} round(s), alternating which target goes first (round 1 in the order listed, \
         round 2 reversed, ...).",
        c.targets.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "),
        c.rounds
    );
    if single {
        let _ = writeln!(
            md,
            "- Each target gets a fresh data dir under `{}` (same disk for both), is started as a single-member \
             cluster with etcd's flags on loopback ports, and is considered up once a linearizable get succeeds. \
             It is killed and its data deleted before the next target starts.",
            c.work_dir
        );
    }
    let _ = writeln!(
        md,
        "- Load generator: Rust, `etcd-client` crate, in the same process as the harness (so it shares the {} \
         cores with the server). A *connection* is a separate `Client` (one HTTP/2 connection); *clients* are \
         concurrent tokio tasks, each issuing one request at a time (closed loop), spread round-robin over the \
         connections. Latency is per request, recorded in an HDR histogram (µs resolution).",
        report.meta.machine.get("cpus").map_or("?", String::as_str)
    );
    if single {
        let _ = writeln!(
            md,
            "- Phases, {} s each, in this order against one server instance:",
            c.phase_duration_s
        );
        let _ = writeln!(
            md,
            "  1. puts, 1 client / 1 connection, {}-byte random values, 8-byte keys drawn uniformly from a keyspace of {};",
            c.value_size, c.keyspace
        );
        md.push_str("  2. puts, 256 clients over 16 connections, same keys and values;\n");
        md.push_str(
            "  3. linearizable gets, 64 clients over 16 connections, uniformly over the keys the put phases wrote;\n",
        );
        md.push_str("  4. serializable gets, same;\n");
        md.push_str(
            "  5. server memory right after phase 4: VmRSS (target) and VmHWM (peak) from `/proc/PID/status`.\n",
        );
        if c.check_perf_loads.is_empty() {
            md.push_str("- `etcdctl check perf` was skipped.\n");
        } else {
            let _ = writeln!(
                md,
                "- `etcdctl check perf --load=L` for L in {}, each against a **fresh** server instance \
                 (new data dir), as etcd's docs run it against an idle cluster; each run lasts 60 s. {}. The loads are rate-limited \
                 (s: 150, m: 1000, l: 8000 writes/s with 50/200/500 clients, 256-byte keys, 1 KiB values), so \
                 throughput near the limit plus PASS means the server kept up; etcdctl fails a run below 90% of \
                 the limit, with a request slower than 500 ms, or a latency stddev above 100 ms.",
                c.check_perf_loads.join(", "),
                if c.check_perf_rounds >= c.rounds {
                    "Run in every round".to_string()
                } else {
                    format!("Run in the first {} round(s) only, to keep the whole benchmark near 10 minutes", c.check_perf_rounds)
                }
            );
        }
    }
    md.push_str(
        "- The machine should otherwise be idle: both servers and the load generator share its cores, so other \
         work skews the figures (see the load averages above).\n",
    );
    if single {
        md.push_str(
            "- Targets for rudder: throughput ratio rudder/etcd ≥ 1.0 (higher is better), latency and RSS ratio \
             ≤ 1.0 (lower is better), check perf PASS wherever etcd passes. Any request error in a phase, or a failed round, counts as not \
             met. A target that fails to start or errors is shown as FAILED, never with a made-up number.\n",
        );
    }

    if !report.summary.is_empty() {
        md.push_str("\n## Results\n\n");
        let (met, judged) = tally(&report.summary);
        let _ = writeln!(md, "rudder meets **{met} of {judged}** judged targets.\n");
        md.push_str(&results_table(&report.summary));
    }
    if !report.summary_three.is_empty() {
        md.push_str(&crate::report_three::section(report));
    }

    let fails = failures(&report.runs);
    if !fails.is_empty() {
        md.push_str("\n## Failures and errors\n\n");
        for f in &fails {
            let _ = writeln!(md, "- {}", escape(&truncate(f, 1500)));
        }
    }

    let defs = metrics(&c.check_perf_loads);
    let single: Vec<&TargetRun> = report.runs.iter().filter(|r| r.members == 1).collect();
    if !single.is_empty() {
        md.push_str("\n## Raw per-round numbers\n\n");
    }
    let rounds: Vec<usize> = {
        let mut r: Vec<usize> = single.iter().map(|r| r.round).collect();
        r.dedup();
        r
    };
    for round in rounds {
        let mut runs: Vec<&TargetRun> = single.iter().copied().filter(|r| r.round == round).collect();
        runs.sort_by_key(|r| r.position);
        let _ = writeln!(
            md,
            "### Round {round} (order: {})\n",
            runs.iter().map(|r| r.target.name()).collect::<Vec<_>>().join(" → ")
        );
        let _ = writeln!(
            md,
            "| Metric | Unit | {} |\n|---|---|{}",
            runs.iter().map(|r| r.target.name()).collect::<Vec<_>>().join(" | "),
            "---:|".repeat(runs.len())
        );
        for def in &defs {
            if runs.iter().all(|r| (def.sample)(r) == Sample::NotRun) {
                continue;
            }
            let values: Vec<String> = runs.iter().map(|r| escape(&raw_value(r, def))).collect();
            let _ = writeln!(md, "| {} | {} | {} |", escape(&def.label), def.unit, values.join(" | "));
        }
        let extra: Vec<String> = runs
            .iter()
            .flat_map(|r| {
                let phases = r.phases.iter().filter_map(move |p| {
                    p.stats.as_ref().map(|s| {
                        format!(
                            "{} {}: {} ops in {:.1} s, mean {} ms, max {} ms, {} errors, {} misses",
                            r.target,
                            p.title,
                            s.ops,
                            s.elapsed_s,
                            fmt_num(s.mean_ms),
                            fmt_num(s.max_ms),
                            s.errors,
                            s.misses
                        )
                    })
                });
                let perf = r.check_perf.iter().filter_map(move |cp| {
                    cp.result.as_ref().map(|res| {
                        format!(
                            "{} check perf --load={}: `{}`",
                            r.target,
                            cp.load,
                            res.lines.join("` / `")
                        )
                    })
                });
                phases.chain(perf).collect::<Vec<_>>()
            })
            .collect();
        md.push('\n');
        for e in extra {
            let _ = writeln!(md, "- {}", escape(&e));
        }
        md.push('\n');
    }
    md.push_str("The same data, with every field, is in `benchmarks.json` next to this file.\n");
    md
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, u32::try_from(m).unwrap_or(0), u32::try_from(d).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 2.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    fn stats(ops_per_sec: f64, p99_ms: f64) -> PhaseStats {
        PhaseStats {
            ops: 100,
            errors: 0,
            first_error: None,
            misses: 0,
            elapsed_s: 1.0,
            ops_per_sec,
            mean_ms: 1.0,
            p50_ms: 1.0,
            p99_ms,
            max_ms: 5.0,
        }
    }

    fn run_with(round: usize, target: Target, ops: f64, p99: f64) -> TargetRun {
        let mut run = TargetRun::new(round, 1, target);
        run.phases.push(PhaseRun {
            id: PHASES[0].id,
            title: PHASES[0].title,
            stats: Some(stats(ops, p99)),
            error: None,
        });
        run.memory = Some(Memory {
            rss_mib: 100.0,
            hwm_mib: 120.0,
        });
        run
    }

    fn row<'a>(rows: &'a [SummaryRow], id: &str) -> &'a SummaryRow {
        rows.iter().find(|r| r.id == id).expect("row present")
    }

    #[test]
    fn ratios_and_targets() {
        let runs = vec![
            run_with(1, Target::Rudder, 1200.0, 2.0),
            run_with(1, Target::Etcd, 1000.0, 4.0),
            run_with(2, Target::Etcd, 800.0, 4.0),
            run_with(2, Target::Rudder, 600.0, 2.0),
        ];
        let rows = summarize(&runs, &[]);
        let tput = row(&rows, "put_1c.throughput");
        assert_eq!(tput.cells[&Target::Rudder].median, Some(900.0));
        assert_eq!(tput.cells[&Target::Etcd].median, Some(900.0));
        assert_eq!(tput.ratio, Some(1.0));
        assert_eq!(tput.met, Some(true));
        let p99 = row(&rows, "put_1c.p99");
        assert_eq!(p99.ratio, Some(0.5));
        assert_eq!(p99.met, Some(true));
        assert_eq!(row(&rows, "memory.rss").met, Some(true));
        assert_eq!(row(&rows, "memory.hwm").met, None);
        // Phases that never ran produce no rows.
        assert!(rows.iter().all(|r| !r.id.starts_with("get_ser")));
    }

    #[test]
    fn failed_start_is_reported_not_faked() {
        let mut failed = TargetRun::new(1, 1, Target::Rudder);
        failed.start_error = Some("rudder exited (exit status: 0)".into());
        let runs = vec![failed, run_with(1, Target::Etcd, 1000.0, 4.0)];
        let rows = summarize(&runs, &[]);
        let tput = row(&rows, "put_1c.throughput");
        assert_eq!(tput.cells[&Target::Rudder].median, None);
        assert_eq!(tput.ratio, None);
        assert_eq!(tput.met, Some(false));
        let table = results_table(&rows);
        assert!(table.contains("**FAILED** (server did not start)"), "{table}");
        assert!(failures(&runs)[0].contains("failed to start"));
    }

    #[test]
    fn request_errors_fail_the_target() {
        let mut rudder = run_with(1, Target::Rudder, 5000.0, 1.0);
        if let Some(s) = rudder.phases[0].stats.as_mut() {
            s.errors = 3;
        }
        let rows = summarize(&[rudder, run_with(1, Target::Etcd, 1000.0, 4.0)], &[]);
        let tput = row(&rows, "put_1c.throughput");
        assert_eq!(tput.met, Some(false));
        assert!(results_table(&rows).contains("3 request errors"));
    }
}
