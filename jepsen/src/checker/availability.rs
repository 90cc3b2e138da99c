//! Availability around faults (informational): the run is cut into windows at every nemesis event —
//! before the first fault, during faults, after each — with per-window counts, success rate and
//! latency of successful operations, and the recovery time after each fault stopped (until the first
//! operation invoked after the stop succeeded). Only a cluster that never served a request after the
//! last fault stopped is a failure.

use std::collections::BTreeSet;

use hdrhistogram::Histogram;
use serde_json::json;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{nemesis_events, pair, Event, EventType, NemesisPhase, Op};

struct Window {
    label: String,
    start: u64,
    end: u64,
    ops: usize,
    ok: usize,
    fail: usize,
    info: usize,
    /// Microseconds, of `ok` operations.
    latency: Option<Histogram<u64>>,
}

fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

fn ms(us: u64) -> f64 {
    (us as f64 / 100.0).round() / 10.0
}

pub fn check(events: &[Event]) -> CheckResult {
    let ops = pair(events);
    let nemesis = nemesis_events(events);
    let end = events.iter().map(|e| e.time).max().unwrap_or(0);
    let begin = events.iter().map(|e| e.time).min().unwrap_or(0);

    // Cut at every nemesis event.
    let mut windows: Vec<Window> = Vec::new();
    let mut active: BTreeSet<String> = BTreeSet::new();
    let mut label = "before faults".to_string();
    let mut start = begin;
    let mut stops: Vec<(String, u64)> = Vec::new();
    let new_window = |label: &str, start: u64, end: u64| Window {
        label: label.to_string(),
        start,
        end,
        ops: 0,
        ok: 0,
        fail: 0,
        info: 0,
        // Microseconds, from 1 µs to an hour.
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
    };
    for n in &nemesis {
        let Op::Nemesis { fault, phase, .. } = &n.op else {
            continue;
        };
        if n.time > start {
            windows.push(new_window(&label, start, n.time));
            start = n.time;
        }
        match phase {
            NemesisPhase::Start => {
                active.insert(fault.clone());
            }
            NemesisPhase::Stop => {
                active.remove(fault);
                stops.push((fault.clone(), n.time));
            }
        }
        label = if active.is_empty() {
            format!("after {fault}")
        } else {
            format!("during {}", active.iter().cloned().collect::<Vec<_>>().join("+"))
        };
    }
    windows.push(new_window(&label, start, end.max(start)));

    for o in &ops {
        let at = o.call_time();
        // The last window starting at or before the call.
        let i = windows.partition_point(|w| w.start <= at).saturating_sub(1);
        let Some(w) = windows.get_mut(i) else { continue };
        w.ops += 1;
        match o.outcome() {
            EventType::Ok => {
                w.ok += 1;
                if let (Some(h), Some(done)) = (w.latency.as_mut(), o.return_time()) {
                    h.saturating_record((done.saturating_sub(at) / 1000).max(1));
                }
            }
            EventType::Fail => w.fail += 1,
            _ => w.info += 1,
        }
    }

    // Recovery: from each stop to the completion of the first ok op invoked after it.
    let recoveries: Vec<(String, u64, Option<u64>)> = stops
        .iter()
        .map(|(fault, t)| {
            let first = ops
                .iter()
                .filter(|o| o.outcome() == EventType::Ok && o.call_time() >= *t)
                .filter_map(|o| o.return_time())
                .min();
            (fault.clone(), *t, first.map(|d| d - t))
        })
        .collect();

    let ok_total: usize = windows.iter().map(|w| w.ok).sum();
    let mut anomalies = Vec::new();
    let valid = if ops.is_empty() {
        Validity::Unknown
    } else if let Some((fault, t, None)) = recoveries
        .last()
        .filter(|(_, t, _)| ops.iter().any(|o| o.call_time() >= *t))
    {
        // Only judged when the workload ran after the last heal (a run may end right at it).
        anomalies.push(Anomaly {
            kind: "unavailable-after-heal".into(),
            explanation: format!(
                "no operation invoked after {fault} stopped at {:.1} s succeeded",
                secs(*t)
            ),
            events: nemesis.iter().filter(|n| n.time == *t).map(|n| n.index).collect(),
        });
        Validity::Invalid
    } else {
        Validity::Valid
    };

    let windows_json: Vec<serde_json::Value> = windows
        .iter()
        .filter(|w| w.ops > 0 || w.end > w.start)
        .map(|w| {
            let rate = if w.ops > 0 { w.ok as f64 / w.ops as f64 } else { 0.0 };
            let lat = w.latency.as_ref().filter(|h| !h.is_empty()).map(|h| {
                json!({
                    "p50": ms(h.value_at_quantile(0.5)),
                    "p99": ms(h.value_at_quantile(0.99)),
                    "max": ms(h.max()),
                })
            });
            json!({
                "label": w.label,
                "start_s": secs(w.start),
                "end_s": secs(w.end),
                "ops": w.ops, "ok": w.ok, "fail": w.fail, "info": w.info,
                "success_rate": (rate * 1000.0).round() / 1000.0,
                "latency_ms": lat,
            })
        })
        .collect();
    let recoveries_json: Vec<serde_json::Value> = recoveries
        .iter()
        .map(|(fault, t, r)| json!({ "fault": fault, "stop_s": secs(*t), "recovery_ms": r.map(|r| ms(r / 1000)) }))
        .collect();
    let worst_recovery = recoveries.iter().filter_map(|r| r.2).max();
    let summary = format!(
        "{} ops, {:.1}% ok, {} faults stopped{}",
        ops.len(),
        if ops.is_empty() {
            0.0
        } else {
            100.0 * ok_total as f64 / ops.len() as f64
        },
        stops.len(),
        worst_recovery.map_or(String::new(), |r| format!(", slowest recovery {:.0} ms", ms(r / 1000)))
    );
    let figures = json!({
        "ops": ops.len(),
        "ok": ok_total,
        "windows": windows_json,
        "recoveries": recoveries_json,
    });
    CheckResult {
        checker: "availability".into(),
        valid,
        summary,
        figures,
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::History;
    use EventType::{Fail, Info, Ok as OK};

    fn write(h: &mut History, p: u64, t: u64, d: u64, kind: EventType) {
        let op = Op::Write { key: 1, value: t };
        h.op(p, t, t + d, op.clone(), kind, op, None);
    }

    #[test]
    fn windows_latency_and_recovery() {
        let mut h = History::new();
        write(&mut h, 1, 0, 10, OK);
        write(&mut h, 1, 20, 30, OK);
        h.nemesis(100, "partition", NemesisPhase::Start);
        write(&mut h, 1, 110, 50, Fail);
        write(&mut h, 2, 120, 1000, Info);
        h.nemesis(200, "partition", NemesisPhase::Stop);
        write(&mut h, 1, 250, 5, Fail);
        write(&mut h, 1, 300, 40, OK);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        let w = res.figures["windows"].as_array().unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0]["label"], "before faults");
        assert_eq!(w[0]["ok"], 2);
        assert_eq!(w[0]["latency_ms"]["max"], 30.0);
        assert_eq!(w[1]["label"], "during partition");
        assert_eq!(w[1]["success_rate"], 0.0);
        assert_eq!(w[1]["info"], 1);
        assert_eq!(w[2]["label"], "after partition");
        // Stop at 200 ms, first ok op invoked after it completed at 340 ms.
        assert_eq!(res.figures["recoveries"][0]["recovery_ms"], 140.0);
    }

    #[test]
    fn no_success_after_heal_is_invalid() {
        let mut h = History::new();
        write(&mut h, 1, 0, 10, OK);
        h.nemesis(100, "kill", NemesisPhase::Start);
        h.nemesis(200, "kill", NemesisPhase::Stop);
        write(&mut h, 1, 250, 5, Fail);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.anomalies[0].kind, "unavailable-after-heal");
        assert_eq!(res.anomalies[0].events, vec![3]);
    }

    #[test]
    fn a_run_ending_at_the_heal_is_not_judged() {
        let mut h = History::new();
        write(&mut h, 1, 0, 10, OK);
        h.nemesis(100, "kill", NemesisPhase::Start);
        write(&mut h, 1, 150, 5, Fail);
        h.nemesis(200, "kill", NemesisPhase::Stop);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
    }
}
