//! The HTML report: one self-contained page per run (`index.html` next to `history.jsonl`) and one summary
//! page per matrix. Everything is inlined (CSS, SVG) so a run directory can be copied or attached as is.
//!
//! The page is built from the same history the checkers read; nothing here judges it. Every string that
//! came from the history (ops, errors, fault details, checker text) is HTML-escaped.

mod html;
mod matrix;
mod plots;
mod timeline;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checker::{CheckResult, Validity};
use crate::history::{pair, Event, EventType, Mop, NemesisPhase, Op, Operation, WatchRecord, NEMESIS_PROCESS};

/// The parameters of one run, shown in the report header (and meant to be saved as `run.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub name: String,
    /// `rudder` or `etcd`.
    pub db: String,
    pub nodes: usize,
    pub workload: String,
    pub nemesis: String,
    pub seed: u64,
    pub time_limit_s: u64,
    /// When the run started, RFC 3339.
    pub started: String,
    pub duration_s: f64,
    /// The process exit code the run ends with (0 valid, 1 anomaly, 2 unknown, 3 harness error).
    pub exit_code: i32,
    /// The runner's own verdict when it knows more than the checkers (e.g. a run cut short is `Unknown`);
    /// the page shows the worst of this and the checkers' verdicts.
    #[serde(default)]
    pub verdict: Option<Validity>,
    /// Anything else worth showing (concurrency, rate, injected bug...); an object's fields become rows.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// One run of a matrix, a row of its summary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MatrixRow {
    pub workload: String,
    pub nemesis: String,
    pub seed: u64,
    pub db: String,
    /// The test-only bug Rudder ran with, if any (such a run is expected to be invalid).
    #[serde(default)]
    pub bug: Option<String>,
    /// The verdict the run should reach.
    #[serde(default = "valid")]
    pub expected: Validity,
    pub verdict: Validity,
    /// Each checker's name and verdict.
    pub checkers: Vec<(String, Validity)>,
    /// Client operations (invocations) in the history.
    pub ops: usize,
    pub duration_s: f64,
    /// The run's directory relative to the matrix directory; its `index.html` is linked.
    pub run_dir: String,
}

fn valid() -> Validity {
    Validity::Valid
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing the {chart} chart: {message}")]
    Plot { chart: &'static str, message: String },
}

/// The worst verdict of several; no results at all is `Unknown` (nothing was checked).
pub fn overall_verdict(results: &[CheckResult]) -> Validity {
    results.iter().map(|r| r.valid).max().unwrap_or(Validity::Unknown)
}

/// Writes `dir/index.html` for one run (creating `dir` if needed). The page links `history.jsonl`,
/// `watches.jsonl` and `results.json` (written by the runner, before or after) and whatever `dir/nodes/*.log`
/// exist now.
pub fn write_run_report(
    dir: &Path,
    info: &RunInfo,
    events: &[Event],
    watches: &[WatchRecord],
    results: &[CheckResult],
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let model = Model::new(events, watches, results);
    let logs = node_logs(dir);
    let page = html::run_page(info, &model, watches, results, &logs)?;
    write_file(&dir.join("index.html"), &page)
}

/// Writes `dir/index.html` and `dir/summary.md` for a matrix of runs.
pub fn write_matrix_report(dir: &Path, rows: &[MatrixRow]) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&dir.join("index.html"), &matrix::html(rows))?;
    write_file(&dir.join("summary.md"), &matrix::markdown(rows))
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `nodes/*.log` under the run directory, relative paths, sorted. A missing directory is simply none.
fn node_logs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("nodes")) else {
        return Vec::new();
    };
    let mut logs: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .map(|n| format!("nodes/{n}"))
        .collect();
    logs.sort();
    logs
}

/// A fault as the nemesis recorded it: from its start to its stop (or the end of the run).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Window {
    pub fault: String,
    pub start: u64,
    /// `None` when the run ended with the fault still on.
    pub stop: Option<u64>,
    pub detail: String,
    /// Position of the fault name among all fault names, to pick a color.
    pub color: usize,
}

impl Window {
    pub fn end(&self, run_end: u64) -> u64 {
        self.stop.unwrap_or(run_end).max(self.start)
    }
}

/// The history digested once for every part of the page.
pub(crate) struct Model<'a> {
    pub events: &'a [Event],
    /// Client operations in invocation order.
    pub ops: Vec<Operation>,
    /// The last time anything was recorded (ns), at least 1 so scales never divide by zero.
    pub end: u64,
    pub windows: Vec<Window>,
    /// The node each process talked to (the most frequent one), `None` when never recorded.
    pub node_of: HashMap<u64, Option<usize>>,
    /// Event index -> position in `events` (indexes are dense in practice, but not trusted to be).
    pos_of_index: HashMap<usize, usize>,
    /// Event index -> position in `ops`, for invocations and completions.
    op_of_index: HashMap<usize, usize>,
    /// Ops any anomaly names (positions in `ops`).
    pub named_ops: Vec<usize>,
}

impl<'a> Model<'a> {
    pub fn new(events: &'a [Event], watches: &[WatchRecord], results: &[CheckResult]) -> Self {
        let ops = pair(events);
        let end = events
            .iter()
            .map(|e| e.time)
            .chain(watches.iter().map(|w| w.time))
            .max()
            .unwrap_or(0)
            .max(1);
        let pos_of_index = events.iter().enumerate().map(|(p, e)| (e.index, p)).collect();
        let mut op_of_index = HashMap::with_capacity(events.len());
        for (i, op) in ops.iter().enumerate() {
            op_of_index.insert(op.invoke.index, i);
            if let Some(c) = &op.complete {
                op_of_index.insert(c.index, i);
            }
        }
        let mut counts: HashMap<u64, HashMap<usize, usize>> = HashMap::new();
        let mut node_of: HashMap<u64, Option<usize>> = HashMap::new();
        for e in events.iter().filter(|e| e.process != NEMESIS_PROCESS) {
            node_of.entry(e.process).or_insert(None);
            if let Some(n) = e.node {
                *counts.entry(e.process).or_default().entry(n).or_default() += 1;
            }
        }
        for (p, c) in counts {
            // Ties go to the lower node so the grouping is deterministic.
            let best = c
                .into_iter()
                .max_by_key(|&(n, k)| (k, std::cmp::Reverse(n)))
                .map(|(n, _)| n);
            node_of.insert(p, best);
        }
        let mut named_ops: Vec<usize> = results
            .iter()
            .flat_map(|r| r.anomalies.iter())
            .flat_map(|a| a.events.iter())
            .filter_map(|i| op_of_index.get(i).copied())
            .collect();
        named_ops.sort_unstable();
        named_ops.dedup();
        let windows = fault_windows(events);
        Model {
            events,
            ops,
            end,
            windows,
            node_of,
            pos_of_index,
            op_of_index,
            named_ops,
        }
    }

    pub fn event(&self, index: usize) -> Option<&'a Event> {
        self.pos_of_index.get(&index).map(|&p| &self.events[p])
    }

    pub fn op_of_event(&self, index: usize) -> Option<usize> {
        self.op_of_index.get(&index).copied()
    }

    /// When an op stops occupying its lane: its completion, or the end of the run if it never completed.
    pub fn op_end(&self, op: &Operation) -> u64 {
        op.complete.as_ref().map_or(self.end, |c| c.time).max(op.invoke.time)
    }

    /// Invocation-to-completion time in ns, for ops that completed (including `info` completions).
    pub fn latency(op: &Operation) -> Option<u64> {
        op.complete.as_ref().map(|c| c.time.saturating_sub(op.invoke.time))
    }
}

/// Pairs each nemesis start with the next stop of the same fault name. Starts never stopped last until
/// the end; stops without a start are dropped (they carry no window).
fn fault_windows(events: &[Event]) -> Vec<Window> {
    let mut windows: Vec<Window> = Vec::new();
    let mut open: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut colors: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.process == NEMESIS_PROCESS) {
        let Op::Nemesis { fault, phase, detail } = &e.op else {
            continue;
        };
        let next = colors.len();
        let color = *colors.entry(fault.as_str()).or_insert(next);
        match phase {
            NemesisPhase::Start => {
                open.entry(fault.as_str()).or_default().push(windows.len());
                windows.push(Window {
                    fault: fault.clone(),
                    start: e.time,
                    stop: None,
                    detail: detail.clone(),
                    color,
                });
            }
            NemesisPhase::Stop => {
                let Some(queue) = open.get_mut(fault.as_str()) else {
                    continue;
                };
                if queue.is_empty() {
                    continue;
                }
                let w = &mut windows[queue.remove(0)];
                w.stop = Some(e.time);
                if !detail.is_empty() && detail != &w.detail {
                    w.detail = format!("{} / stop: {detail}", w.detail);
                }
            }
        }
    }
    windows
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Cuts text to about `max` characters, marking the cut, so one huge read cannot bloat the page.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}… ({} chars)", &s[..i], s.chars().count()),
        None => s.to_string(),
    }
}

pub(crate) fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

pub(crate) fn millis(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

pub(crate) fn node_label(node: Option<usize>) -> String {
    node.map_or_else(|| "node ?".to_string(), |n| format!("node {n}"))
}

pub(crate) fn verdict_word(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Unknown => "unknown",
        Validity::Invalid => "invalid",
    }
}

pub(crate) fn outcome_word(t: EventType) -> &'static str {
    match t {
        EventType::Invoke => "invoke",
        EventType::Ok => "ok",
        EventType::Fail => "fail",
        EventType::Info => "info",
    }
}

/// A short human form of an op, e.g. `cas k3 1→2` or `read k3 = 7`; long lists are elided.
pub(crate) fn op_text(op: &Op) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = match op {
        Op::Read { key, value } => write!(s, "read k{key}{}", opt(value.as_ref())),
        Op::Write { key, value } => write!(s, "write k{key} ← {value}"),
        Op::Cas { key, from, to } => write!(s, "cas k{key} {from}→{to}"),
        Op::Add { element } => write!(s, "add {element}"),
        Op::ReadSet { elements } => write!(s, "read-set{}", opt_list(elements.as_deref())),
        Op::Txn { mops } => {
            let parts: Vec<String> = mops
                .iter()
                .map(|m| match m {
                    Mop::Append { key, value } => format!("append k{key} {value}"),
                    Mop::Read { key, value } => format!("r k{key}{}", opt_list(value.as_deref())),
                })
                .collect();
            write!(s, "txn [{}]", parts.join(", "))
        }
        Op::LeaseGrant { ttl, lease } => write!(s, "lease-grant ttl {ttl}{}", opt(lease.as_ref())),
        Op::LeasePut { key, lease } => write!(s, "lease-put k{key} lease {lease}"),
        Op::LeaseKeepAlive { lease, ttl } => write!(s, "keep-alive {lease}{}", opt(ttl.as_ref())),
        Op::LeaseRevoke { lease } => write!(s, "lease-revoke {lease}"),
        Op::LeaseRead { key, present } => write!(s, "lease-read k{key}{}", opt(present.as_ref())),
        Op::KCreate { key, value } => write!(s, "k-create k{key} {value}"),
        Op::KUpdate {
            key,
            from_revision,
            value,
        } => write!(s, "k-update k{key} @{from_revision} {value}"),
        Op::KList { items } => match items {
            None => write!(s, "k-list"),
            Some(items) => {
                let shown: Vec<String> = items
                    .iter()
                    .take(8)
                    .map(|i| format!("k{}={}@{}", i.key, i.value, i.mod_revision))
                    .collect();
                let more = if items.len() > 8 {
                    format!(" …{} more", items.len() - 8)
                } else {
                    String::new()
                };
                write!(s, "k-list = [{}{more}]", shown.join(", "))
            }
        },
        Op::Nemesis { fault, phase, detail } => {
            let phase = match phase {
                NemesisPhase::Start => "start",
                NemesisPhase::Stop => "stop",
            };
            write!(s, "nemesis {fault} {phase} {detail}")
        }
    };
    truncate(&s, 400)
}

fn opt<T: std::fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(String::new, |v| format!(" = {v}"))
}

fn opt_list(v: Option<&[u64]>) -> String {
    match v {
        None => String::new(),
        Some(l) if l.len() <= 12 => {
            format!(" = [{}]", l.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
        }
        Some(l) => {
            let head: Vec<String> = l.iter().take(5).map(u64::to_string).collect();
            let tail: Vec<String> = l[l.len() - 3..].iter().map(u64::to_string).collect();
            format!(" = [{},…,{}] ({} elements)", head.join(","), tail.join(","), l.len())
        }
    }
}
