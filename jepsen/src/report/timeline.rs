//! The timeline: a hand-written SVG (plotters has no notion of lanes or hover text) with one lane per
//! client process, grouped by node, each op a bar from invocation to completion, and fault windows shaded.
//!
//! Processes that never overlap in time share a lane (a worker takes a new process id after every `info`,
//! so one lane per id would mostly be empty); a lane's hover text lists its processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::history::{EventType, WatchRecord, WatchRecordKind};

use super::{esc, millis, node_label, op_text, outcome_word, secs, Model};

pub(crate) const WIDTH: f64 = 1320.0;
const LEFT: f64 = 118.0;
const RIGHT: f64 = 16.0;
const AXIS_H: f64 = 20.0;
const LABEL_ROW_H: f64 = 13.0;
const LANE_H: f64 = 14.0;
const BAR_H: f64 = 10.0;
const GROUP_GAP: f64 = 5.0;
/// Ops drawn on each side of an op an anomaly names, so its context survives sampling.
const NEIGHBOURS: usize = 6;

/// What to draw: a time range, the ops in it, and which of them to outline.
pub(crate) struct Slice {
    pub t0: u64,
    pub t1: u64,
    /// Positions in `Model::ops`, sorted.
    pub ops: Vec<usize>,
    pub highlight: HashSet<usize>,
    /// Lanes per node group before lanes start to be shared by overlapping processes.
    pub max_lanes: usize,
}

/// The whole run, capped at `cap` ops. Returns the slice and a sentence saying what was left out, if
/// anything: ops named by anomalies and their neighbours are always kept, then half the remaining budget
/// goes to failed/unknown ops and the rest to successful ones, each an even sample over time.
pub(crate) fn whole_run(model: &Model, cap: usize) -> (Slice, Option<String>) {
    let n = model.ops.len();
    let highlight: HashSet<usize> = model.named_ops.iter().copied().collect();
    let mut slice = Slice {
        t0: 0,
        t1: model.end,
        ops: (0..n).collect(),
        highlight,
        max_lanes: 40,
    };
    if n <= cap {
        return (slice, None);
    }
    let mut keep: Vec<usize> = Vec::new();
    for &p in &model.named_ops {
        keep.extend(p.saturating_sub(NEIGHBOURS)..(p + NEIGHBOURS + 1).min(n));
    }
    keep.sort_unstable();
    keep.dedup();
    keep.truncate(cap);
    let named = keep.len();
    let kept: HashSet<usize> = keep.iter().copied().collect();
    let (bad, good): (Vec<usize>, Vec<usize>) = (0..n)
        .filter(|p| !kept.contains(p))
        .partition(|&p| model.ops[p].outcome() != EventType::Ok);
    let budget = cap - named;
    let bad_take = bad.len().min(budget / 2);
    let good_take = good.len().min(budget - bad_take);
    let bad_take = bad.len().min(budget - good_take);
    keep.extend(even_sample(&bad, bad_take));
    keep.extend(even_sample(&good, good_take));
    keep.sort_unstable();
    let note = format!(
        "Showing {} of {} operations: the {} named by anomalies and their neighbours, {} of {} failed or unknown, \
         and {} of {} successful, each an even sample over time. The plots below use every operation.",
        keep.len(),
        n,
        named,
        bad_take,
        bad.len(),
        good_take,
        good.len()
    );
    slice.ops = keep;
    (slice, Some(note))
}

/// The part of the run around the events an anomaly names, or `None` if it names no event we have.
pub(crate) fn around(model: &Model, indexes: &[usize], cap: usize) -> Option<Slice> {
    let mut named: Vec<usize> = indexes.iter().filter_map(|&i| model.op_of_event(i)).collect();
    named.sort_unstable();
    named.dedup();
    let mut times: Vec<u64> = indexes.iter().filter_map(|&i| model.event(i)).map(|e| e.time).collect();
    for &p in &named {
        let op = &model.ops[p];
        times.push(op.invoke.time);
        // An op that never completed would stretch the slice to the end of the run; its bar runs off the
        // edge instead.
        if let Some(c) = &op.complete {
            times.push(c.time);
        }
    }
    let lo = *times.iter().min()?;
    let hi = *times.iter().max()?;
    let pad = ((hi - lo) / 8).max(20_000_000);
    let t0 = lo.saturating_sub(pad);
    let t1 = (hi + pad).min(model.end.max(hi + 1));
    let mut others: Vec<usize> = Vec::new();
    let named_set: HashSet<usize> = named.iter().copied().collect();
    for (p, op) in model.ops.iter().enumerate() {
        if op.invoke.time <= t1 && model.op_end(op) >= t0 && !named_set.contains(&p) {
            others.push(p);
        }
    }
    let room = cap.saturating_sub(named.len());
    let mut ops = named.clone();
    ops.extend(even_sample(&others, room.min(others.len())));
    ops.sort_unstable();
    Some(Slice {
        t0,
        t1,
        ops,
        highlight: named_set,
        max_lanes: 12,
    })
}

/// `k` items spread evenly over `items` (all of them when `k >= len`).
fn even_sample(items: &[usize], k: usize) -> Vec<usize> {
    if k >= items.len() {
        return items.to_vec();
    }
    (0..k).map(|i| items[i * items.len() / k]).collect()
}

/// A process's first invocation, last completion and id.
type Extent = (u64, u64, u64);

struct Lane {
    free_at: u64,
    processes: Vec<u64>,
}

/// Renders a slice as an SVG element. `watches` adds a lane per watcher with its (re)starts, disconnects
/// and cancellations; pass an empty slice to leave them out.
pub(crate) fn render(model: &Model, slice: &Slice, watches: &[WatchRecord]) -> String {
    let span = slice.t1.saturating_sub(slice.t0).max(1) as f64;
    let pw = WIDTH - LEFT - RIGHT;
    let x = |t: u64| LEFT + (t.clamp(slice.t0, slice.t1) - slice.t0) as f64 / span * pw;

    // Each process's extent within the slice, from the ops drawn.
    let mut extent: HashMap<u64, (u64, u64)> = HashMap::new();
    for &p in &slice.ops {
        let op = &model.ops[p];
        let (a, b) = (op.invoke.time, model.op_end(op));
        let e = extent.entry(op.process).or_insert((a, b));
        e.0 = e.0.min(a);
        e.1 = e.1.max(b);
    }
    // (unknown node?, node) -> (first call, last end, process); unknown nodes sort last.
    let mut by_node: BTreeMap<(bool, usize), Vec<Extent>> = BTreeMap::new();
    for (&proc_id, &(a, b)) in &extent {
        let node = model.node_of.get(&proc_id).copied().flatten();
        let key = (node.is_none(), node.unwrap_or(0));
        by_node.entry(key).or_default().push((a, b, proc_id));
    }
    let mut lane_of: HashMap<u64, usize> = HashMap::new();
    let mut lanes: Vec<Lane> = Vec::new();
    let mut groups: Vec<(String, usize, usize)> = Vec::new(); // label, first lane, lane count
    let mut shared = false;
    for ((unknown, node), mut procs) in by_node {
        procs.sort_unstable();
        let first = lanes.len();
        for (a, b, proc_id) in procs {
            let mine = &mut lanes[first..];
            let lane = match mine.iter().position(|l| l.free_at < a) {
                Some(i) => i,
                None if mine.len() < slice.max_lanes => {
                    lanes.push(Lane {
                        free_at: 0,
                        processes: Vec::new(),
                    });
                    lanes.len() - 1 - first
                }
                None => {
                    shared = true;
                    mine.iter()
                        .enumerate()
                        .min_by_key(|(_, l)| l.free_at)
                        .map_or(0, |(i, _)| i)
                }
            };
            let l = &mut lanes[first + lane];
            l.free_at = l.free_at.max(b);
            l.processes.push(proc_id);
            lane_of.insert(proc_id, first + lane);
        }
        groups.push((
            node_label(if unknown { None } else { Some(node) }),
            first,
            lanes.len() - first,
        ));
    }

    // Fault labels go in rows above the lanes so overlapping windows stay readable.
    let windows: Vec<_> = model
        .windows
        .iter()
        .filter(|w| w.start <= slice.t1 && w.end(model.end) >= slice.t0)
        .collect();
    let mut row_free: Vec<f64> = Vec::new();
    let mut label_row: Vec<usize> = Vec::new();
    for w in &windows {
        let x0 = x(w.start);
        let width = (x(w.end(model.end)) - x0).max(w.fault.chars().count() as f64 * 6.5 + 6.0);
        let row = row_free.iter().position(|&f| f <= x0).unwrap_or(row_free.len());
        if row == row_free.len() {
            row_free.push(0.0);
        }
        row_free[row] = x0 + width;
        label_row.push(row);
    }
    let band_top = AXIS_H;
    let lanes_top = band_top + row_free.len() as f64 * LABEL_ROW_H + 2.0;
    let mut lane_y = Vec::with_capacity(lanes.len());
    let mut y = lanes_top;
    for (_, _, count) in &groups {
        for _ in 0..*count {
            lane_y.push(y);
            y += LANE_H;
        }
        y += GROUP_GAP;
    }
    let watchers: BTreeMap<u64, Vec<&WatchRecord>> = watches.iter().fold(BTreeMap::new(), |mut m, w| {
        if !matches!(
            w.kind,
            WatchRecordKind::Events { .. } | WatchRecordKind::Progress { .. }
        ) {
            m.entry(w.watcher).or_insert_with(Vec::new).push(w);
        }
        m
    });
    let watch_top = y;
    let shown_watchers = watchers.len().min(16);
    y += shown_watchers as f64 * LANE_H + if shown_watchers > 0 { GROUP_GAP } else { 0.0 };
    let height = y.max(lanes_top + 10.0) + 4.0;

    let mut s = String::with_capacity(200 * slice.ops.len() + 4096);
    let _ = write!(
        s,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}">"#
    );
    axis(&mut s, slice.t0, slice.t1, &x, height);
    for (w, row) in windows.iter().zip(&label_row) {
        let (x0, x1) = (x(w.start), x(w.end(model.end)));
        let stop = w.stop.map_or_else(
            || "end of run (never stopped)".to_string(),
            |t| format!("{} s", secs(t)),
        );
        let title = format!("{} from {} s to {}: {}", w.fault, secs(w.start), stop, w.detail);
        let _ = write!(
            s,
            r#"<rect class="fw c{c}" x="{x0:.1}" y="{band_top}" width="{w:.1}" height="{h:.1}"><title>{t}</title></rect><text class="fl c{c}" x="{tx:.1}" y="{ty:.1}">{label}</text>"#,
            c = w.color % 6,
            w = (x1 - x0).max(1.0),
            h = height - band_top,
            t = esc(&title),
            // A window starting near the right edge keeps its label inside the picture.
            tx = (x0 + 2.0).min(WIDTH - 4.0 - w.fault.chars().count() as f64 * 6.5),
            ty = band_top + (*row as f64 + 1.0) * LABEL_ROW_H - 3.0,
            label = esc(&w.fault),
        );
    }
    for (label, first, count) in &groups {
        let gy = lane_y.get(*first).copied().unwrap_or(lanes_top);
        let _ = write!(
            s,
            r#"<line class="gsep" x1="0" x2="{WIDTH}" y1="{y1:.1}" y2="{y1:.1}"/><text class="gl" x="3" y="{ty:.1}">{label}</text>"#,
            y1 = gy - GROUP_GAP / 2.0,
            ty = gy + 10.0,
            label = esc(label),
        );
        for lane in *first..first + count {
            let procs = &lanes[lane].processes;
            let more = if procs.len() > 1 {
                format!(" +{}", procs.len() - 1)
            } else {
                String::new()
            };
            let list: Vec<String> = procs.iter().take(50).map(|p| format!("p{p}")).collect();
            let _ = write!(
                s,
                r#"<text class="ll" x="{lx:.1}" y="{ly:.1}">p{p}{more}<title>{n}: {list}</title></text>"#,
                lx = LEFT - 4.0,
                ly = lane_y[lane] + 10.0,
                p = procs.first().copied().unwrap_or(0),
                n = esc(label),
                list = esc(&list.join(" ")),
            );
        }
    }
    // Outlined ops last, so they sit on top of their neighbours.
    let (plain, marked): (Vec<usize>, Vec<usize>) = slice.ops.iter().partition(|p| !slice.highlight.contains(p));
    for p in plain.into_iter().chain(marked) {
        let op = &model.ops[p];
        let Some(&lane) = lane_of.get(&op.process) else {
            continue;
        };
        let (x0, x1) = (x(op.invoke.time), x(model.op_end(op)));
        let class = match (op.outcome(), op.complete.is_some()) {
            (EventType::Ok, _) => "o",
            (EventType::Fail, _) => "f",
            (_, true) => "i",
            (_, false) => "u",
        };
        // Named ops get the full lane height and a minimum width, so they stand out among thin bars.
        let (hl, bar_h, min_w) = if slice.highlight.contains(&p) {
            (" hl", LANE_H - 1.0, 3.0)
        } else {
            ("", BAR_H, 1.5)
        };
        let _ = write!(
            s,
            r#"<rect class="{class}{hl}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{bar_h}"><title>{t}</title></rect>"#,
            y = lane_y[lane] + (LANE_H - bar_h) / 2.0,
            w = (x1 - x0).max(min_w),
            t = esc(&op_title(model, p)),
        );
    }
    if shown_watchers > 0 {
        let _ = write!(
            s,
            r#"<line class="gsep" x1="0" x2="{WIDTH}" y1="{y1:.1}" y2="{y1:.1}"/><text class="gl" x="3" y="{ty:.1}">watchers</text>"#,
            y1 = watch_top - GROUP_GAP / 2.0,
            ty = watch_top + 10.0,
        );
        let mut marks = 0usize;
        for (i, (watcher, records)) in watchers.iter().take(shown_watchers).enumerate() {
            let ly = watch_top + i as f64 * LANE_H;
            let _ = write!(
                s,
                r#"<text class="ll" x="{lx:.1}" y="{ty:.1}">w{watcher}</text>"#,
                lx = LEFT - 4.0,
                ty = ly + 10.0
            );
            for r in records.iter().filter(|r| r.time >= slice.t0 && r.time <= slice.t1) {
                if marks >= 3000 {
                    break;
                }
                marks += 1;
                let (class, what) = match &r.kind {
                    WatchRecordKind::Start { start_revision } => {
                        ("ws", format!("watch from revision {start_revision}"))
                    }
                    WatchRecordKind::Disconnected { error } => ("wd", format!("disconnected: {error}")),
                    WatchRecordKind::Canceled {
                        compact_revision,
                        reason,
                    } => (
                        "wc",
                        format!("canceled (compact revision {compact_revision}): {reason}"),
                    ),
                    WatchRecordKind::Events { .. } | WatchRecordKind::Progress { .. } => continue,
                };
                let title = format!(
                    "w{watcher} on {} at {} s: {what}",
                    node_label(Some(r.node)),
                    secs(r.time)
                );
                let _ = write!(
                    s,
                    r#"<rect class="{class}" x="{x0:.1}" y="{ly:.1}" width="3" height="{BAR_H}"><title>{t}</title></rect>"#,
                    x0 = x(r.time) - 1.5,
                    ly = ly + (LANE_H - BAR_H) / 2.0,
                    t = esc(&truncate_title(&title)),
                );
            }
        }
    }
    if shared {
        let _ = write!(
            s,
            r#"<text class="ll" x="{WIDTH}" y="{ty:.1}" text-anchor="end">(too many processes: some lanes overlap)</text>"#,
            ty = height - 2.0
        );
    }
    s.push_str("</svg>");
    s
}

fn truncate_title(t: &str) -> String {
    super::truncate(t, 600)
}

/// The hover text of an op's bar.
fn op_title(model: &Model, p: usize) -> String {
    let op = &model.ops[p];
    let node = node_label(op.complete.as_ref().and_then(|c| c.node).or(op.invoke.node));
    let mut t = format!("p{} {} — {} — ", op.process, node, op_text(op.op()));
    match &op.complete {
        Some(c) => {
            let _ = write!(
                t,
                "{} after {} (invoked {} s, #{}; completed {} s, #{})",
                outcome_word(c.kind),
                millis(c.time.saturating_sub(op.invoke.time)),
                secs(op.invoke.time),
                op.invoke.index,
                secs(c.time),
                c.index
            );
            if let Some(r) = c.revision {
                let _ = write!(t, " revision {r}");
            }
            if let Some(e) = &c.error {
                let _ = write!(t, " error: {e}");
            }
        }
        None => {
            let _ = write!(
                t,
                "never completed (invoked {} s, #{})",
                secs(op.invoke.time),
                op.invoke.index
            );
        }
    }
    truncate_title(&t)
}

/// Time ticks and vertical grid lines across the whole height.
fn axis(s: &mut String, t0: u64, t1: u64, x: &impl Fn(u64) -> f64, height: f64) {
    let span_s = t1.saturating_sub(t0) as f64 / 1e9;
    let step = nice_step(span_s / 12.0);
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else if step >= 0.01 {
        2
    } else {
        3
    };
    let first = ((t0 as f64 / 1e9) / step).ceil() as u64;
    let mut k = first;
    loop {
        let t = k as f64 * step;
        let ns = (t * 1e9).round() as u64;
        if ns > t1 {
            break;
        }
        let xx = x(ns);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{xx:.1}" x2="{xx:.1}" y1="{y1}" y2="{height:.0}"/><text class="tick" x="{xx:.1}" y="12">{t:.decimals$} s</text>"#,
            y1 = AXIS_H - 4.0,
        );
        k += 1;
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
pub(crate) fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 { raw } else { 1.0 };
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&v| v >= raw)
        .unwrap_or(10.0 * mag)
}
