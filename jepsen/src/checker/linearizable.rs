//! Linearizability, Porcupine-style: the history is split by key (P-compositionality: a history is
//! linearizable iff every key's sub-history is), each key's operations are searched against a per-key
//! model ([`super::models`]) in parallel, all within one time budget. A partition that runs out of time
//! or memory makes the verdict `Unknown`, never `Valid`.
//!
//! `fail` operations definitely did not happen and are dropped. Unknown (`info` or unfinished) ones may
//! take effect any time after their call, or never; since written values are unique, those whose value
//! nobody observed are dropped and those observed are pinned before their first observer returned
//! ([`super::search::resolve_unknown`]), which keeps the search small without changing the answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::models::{kube_partitions, register_partitions, KubeOp, Kubernetes, Register, RegisterOp};
use super::search::{resolve_unknown, search, Failure, Model, SearchOp, Verdict};
use super::{Anomaly, CheckResult, Validity};
use crate::history::{pair, Event, EventType};

/// What became of one partition.
#[derive(Clone, Debug)]
struct PartitionReport {
    model: &'static str,
    key: u64,
    ops: usize,
    dropped_unknown: usize,
    states: usize,
    valid: Validity,
    note: Option<String>,
    anomaly: Option<Anomaly>,
    millis: f64,
}

enum Job {
    Register(u64, Vec<SearchOp<RegisterOp>>),
    Kube(Arc<Kubernetes>, u64, Vec<SearchOp<KubeOp>>),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Register(_, ops) => ops.len(),
            Job::Kube(_, _, ops) => ops.len(),
        }
    }
    fn run(self, deadline: Instant) -> PartitionReport {
        match self {
            Job::Register(key, ops) => check_partition(&Register, key, ops, deadline),
            Job::Kube(model, key, ops) => check_partition(model.as_ref(), key, ops, deadline),
        }
    }
}

/// Checks the register and kubernetes operations of `events` within `budget`.
pub fn check(events: &[Event], budget: Duration) -> CheckResult {
    let started = Instant::now();
    let deadline = started + budget;
    let ops = pair(events);
    let dropped_fail = ops
        .iter()
        .filter(|o| o.outcome() == EventType::Fail && is_model_op(&o.invoke.op))
        .count();
    let mut jobs: Vec<Job> = register_partitions(&ops)
        .into_iter()
        .map(|(k, v)| Job::Register(k, v))
        .collect();
    let (kube, parts) = kube_partitions(&ops);
    let kube = Arc::new(kube);
    jobs.extend(parts.into_iter().map(|(k, v)| Job::Kube(kube.clone(), k, v)));
    if jobs.is_empty() {
        return CheckResult {
            checker: "linearizable".into(),
            valid: Validity::Unknown,
            summary: "no register or kubernetes operations to check".into(),
            figures: json!({ "ops": 0, "partitions": 0 }),
            anomalies: Vec::new(),
        };
    }
    let reports = run_jobs(jobs, deadline);
    summarize(reports, dropped_fail, budget, started.elapsed())
}

fn is_model_op(op: &crate::history::Op) -> bool {
    use crate::history::Op;
    matches!(
        op,
        Op::Read { .. }
            | Op::Write { .. }
            | Op::Cas { .. }
            | Op::KCreate { .. }
            | Op::KUpdate { .. }
            | Op::KList { .. }
    )
}

/// Runs the partitions on at most `available_parallelism` threads, biggest first.
fn run_jobs(mut jobs: Vec<Job>, deadline: Instant) -> Vec<PartitionReport> {
    jobs.sort_by_key(|j| std::cmp::Reverse(j.len()));
    let n = jobs.len();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).clamp(1, n);
    let slots: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<PartitionReport>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let job = slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(job) = job {
                    let report = job.run(deadline);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
                }
            });
        }
    });
    results
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

fn check_partition<M: Model>(model: &M, key: u64, ops: Vec<SearchOp<M::Input>>, deadline: Instant) -> PartitionReport {
    let started = Instant::now();
    let (ops, dropped_unknown) = resolve_unknown(model, ops);
    let outcome = search(model, &ops, deadline);
    let (valid, note, anomaly) = match outcome.verdict {
        Verdict::Linearizable => (Validity::Valid, None, None),
        Verdict::GaveUp(why) => (Validity::Unknown, Some(why.to_string()), None),
        Verdict::Illegal(failure) => (Validity::Invalid, None, Some(explain(model, key, &ops, &failure))),
    };
    PartitionReport {
        model: model.name(),
        key,
        ops: ops.len(),
        dropped_unknown,
        states: outcome.states,
        valid,
        note,
        anomaly,
        millis: started.elapsed().as_secs_f64() * 1e3,
    }
}

fn op_events<I>(o: &SearchOp<I>) -> Vec<usize> {
    std::iter::once(o.invoke_index).chain(o.complete_index).collect()
}

fn show<M: Model>(model: &M, o: &SearchOp<M::Input>) -> String {
    let events = op_events(o)
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("->");
    let unknown = if o.complete_index.is_some() && o.ret.is_some() {
        ""
    } else {
        ", outcome unknown"
    };
    format!("{} [events {events}{unknown}]", model.describe(&o.input))
}

/// A read that returned a value some other write had overwritten before the read began: the writer of
/// the value returned before the overwriting write was called, which returned before the read was.
/// Returns (read, writer of the value read if any, overwriting write).
fn find_stale_read<M: Model>(model: &M, ops: &[SearchOp<M::Input>]) -> Option<(usize, Option<usize>, usize)> {
    let mut writes: Vec<(u64, u64, usize)> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.required && model.writes(&o.input).is_some())
        .filter_map(|(i, o)| o.ret.map(|r| (r, o.call, i)))
        .collect();
    writes.sort_unstable();
    // Latest call among the writes returned so far, with which write it was.
    let mut latest: Vec<(u64, usize)> = Vec::with_capacity(writes.len());
    for &(_, call, i) in &writes {
        let best = match latest.last() {
            Some(&(c, j)) if c >= call => (c, j),
            _ => (call, i),
        };
        latest.push(best);
    }
    let writer_of: HashMap<u64, usize> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| model.writes(&o.input).map(|v| (v, i)))
        .collect();
    for (i, o) in ops.iter().enumerate() {
        if !o.required || !model.read_only(&o.input) {
            continue;
        }
        let Some(seen) = model.reads(&o.input) else { continue };
        let cut = writes.partition_point(|w| w.0 < o.call);
        let Some(&(latest_call, w2)) = cut.checked_sub(1).and_then(|c| latest.get(c)) else {
            continue;
        };
        match seen {
            // Nothing deletes: absent after a completed write is stale.
            None => return Some((i, None, writes[cut - 1].2)),
            Some(v) => {
                let Some(&w1) = writer_of.get(&v) else { continue };
                if ops[w1].ret.is_some_and(|r| latest_call > r) {
                    return Some((i, Some(w1), w2));
                }
            }
        }
    }
    None
}

fn explain<M: Model>(model: &M, key: u64, ops: &[SearchOp<M::Input>], f: &Failure<M::State>) -> Anomaly {
    let mut events: BTreeSet<usize> = BTreeSet::new();
    let mut text = format!("{} key {key}: ", model.name());
    // A value nobody read is kept abstract in the search; name the write that put it there.
    let last_write = f.prefix.iter().rev().find(|&&i| model.writes(&ops[i].input).is_some());
    let state_text = match last_write {
        Some(&w) if ops[w].blind => format!("as {} left it (a value nobody read)", show(model, &ops[w])),
        _ => model.describe_state(&f.state),
    };
    match f.blocked {
        Some(b) => {
            text.push_str(&format!("{} could not be linearized. ", show(model, &ops[b])));
            events.extend(op_events(&ops[b]));
        }
        None => text.push_str("no order of the operations is consistent with the model. "),
    }
    text.push_str(&format!(
        "Longest linearizable prefix: {} of {} ops, leaving state {}",
        f.prefix.len(),
        ops.len(),
        state_text
    ));
    let tail: Vec<String> = f
        .prefix
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|&i| show(model, &ops[i]))
        .collect();
    if !tail.is_empty() {
        text.push_str(&format!(", ending with: {}", tail.join("; ")));
    }
    text.push('.');
    // The write that set the state the blocked op could not follow, and the one it wanted.
    if let Some(&last_write) = f.prefix.iter().rev().find(|&&i| model.writes(&ops[i].input).is_some()) {
        events.extend(op_events(&ops[last_write]));
    }
    if let Some(Some(v)) = f.blocked.and_then(|b| model.reads(&ops[b].input)) {
        match ops.iter().position(|o| model.writes(&o.input) == Some(v)) {
            Some(w) => {
                text.push_str(&format!(" The value it saw was written by {}.", show(model, &ops[w])));
                events.extend(op_events(&ops[w]));
            }
            None => text.push_str(&format!(" No operation wrote the value {v} it saw.")),
        }
    }
    let mut kind = "nonlinearizable";
    if let Some((r, w1, w2)) = find_stale_read(model, ops) {
        kind = "stale-read";
        let source = w1.map_or("the initial (absent) state".to_string(), |w| show(model, &ops[w]));
        text.push_str(&format!(
            " Stale read: {} returned the value of {source}, which {} overwrote before the read began.",
            show(model, &ops[r]),
            show(model, &ops[w2])
        ));
        events.extend(op_events(&ops[r]));
        events.extend(op_events(&ops[w2]));
        if let Some(w) = w1 {
            events.extend(op_events(&ops[w]));
        }
    }
    Anomaly {
        kind: kind.into(),
        explanation: text,
        events: events.into_iter().collect(),
    }
}

fn summarize(reports: Vec<PartitionReport>, dropped_fail: usize, budget: Duration, took: Duration) -> CheckResult {
    let count = |v: Validity| reports.iter().filter(|r| r.valid == v).count();
    let (invalid, unknown) = (count(Validity::Invalid), count(Validity::Unknown));
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let valid = reports.iter().map(|r| r.valid).max().unwrap_or(Validity::Unknown);
    let secs = took.as_secs_f64();
    let summary = match valid {
        Validity::Valid => format!("{ops} ops in {} partitions linearizable ({secs:.2} s)", reports.len()),
        Validity::Unknown => {
            format!(
                "{unknown} of {} partitions undecided (budget {:.0} s)",
                reports.len(),
                budget.as_secs_f64()
            )
        }
        Validity::Invalid => {
            let kinds: BTreeSet<&str> = reports
                .iter()
                .filter_map(|r| r.anomaly.as_ref())
                .map(|a| a.kind.as_str())
                .collect();
            let kinds: Vec<&str> = kinds.into_iter().collect();
            format!(
                "{invalid} of {} partitions not linearizable ({})",
                reports.len(),
                kinds.join(", ")
            )
        }
    };
    let mut per_partition: Vec<&PartitionReport> = reports.iter().collect();
    // The interesting partitions first: bad ones, then the most expensive.
    per_partition.sort_by(|a, b| b.valid.cmp(&a.valid).then(b.states.cmp(&a.states)));
    let per_partition: Vec<serde_json::Value> = per_partition
        .iter()
        .take(500)
        .map(|r| {
            json!({
                "model": r.model, "key": r.key, "ops": r.ops, "dropped_unknown": r.dropped_unknown,
                "states": r.states, "valid": r.valid, "note": r.note, "ms": (r.millis * 10.0).round() / 10.0,
            })
        })
        .collect();
    let figures = json!({
        "ops": ops,
        "partitions": reports.len(),
        "invalid_partitions": invalid,
        "unknown_partitions": unknown,
        "dropped_fail": dropped_fail,
        "dropped_unknown": reports.iter().map(|r| r.dropped_unknown).sum::<usize>(),
        "max_states": reports.iter().map(|r| r.states).max().unwrap_or(0),
        "elapsed_ms": (secs * 1e4).round() / 10.0,
        "budget_ms": budget.as_millis() as u64,
        "per_partition": per_partition,
    });
    let anomalies = reports.into_iter().filter_map(|r| r.anomaly).collect();
    CheckResult {
        checker: "linearizable".into(),
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
    use crate::history::{Item, Op};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use EventType::{Fail, Info, Ok as OK};

    const BUDGET: Duration = Duration::from_secs(20);

    fn read(key: u64, value: Option<u64>) -> (Op, Op) {
        (Op::Read { key, value: None }, Op::Read { key, value })
    }
    fn write(key: u64, value: u64) -> Op {
        Op::Write { key, value }
    }

    #[test]
    fn concurrent_register_history_is_linearizable() {
        let mut h = History::new();
        h.invoke(0, 1, write(1, 10));
        h.invoke(1, 2, write(1, 20));
        let (r, d) = read(1, Some(10));
        h.invoke(2, 3, r);
        h.ok(3, 2, write(1, 20));
        h.ok(4, 3, d); // read 10 after write 20 returned: fine, 10 may land after 20
        h.ok(5, 1, write(1, 10));
        let (r, d) = read(1, Some(10));
        h.op(3, 6, 7, r, OK, d, None);
        let cas = Op::Cas {
            key: 1,
            from: 10,
            to: 30,
        };
        h.op(2, 8, 9, cas.clone(), OK, cas, None);
        let cas = Op::Cas {
            key: 1,
            from: 10,
            to: 40,
        };
        h.op(2, 10, 11, cas.clone(), Fail, cas, None);
        let (r, d) = read(2, None);
        h.op(3, 10, 11, r, OK, d, None);
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        assert_eq!(res.figures["partitions"], 2);
        assert_eq!(res.figures["dropped_fail"], 1);
    }

    #[test]
    fn stale_read_is_invalid_and_named() {
        let mut h = History::new();
        h.op(1, 0, 10, write(1, 1), OK, write(1, 1), None);
        h.op(1, 20, 30, write(1, 2), OK, write(1, 2), None);
        let (r, d) = read(1, Some(1));
        let (ri, rc) = h.op(2, 40, 50, r, OK, d, None);
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Invalid);
        let a = &res.anomalies[0];
        assert_eq!(a.kind, "stale-read", "{a:#?}");
        assert!(a.events.contains(&ri) && a.events.contains(&rc), "{a:#?}");
        assert!(a.events.contains(&2) && a.events.contains(&0), "{a:#?}");
        assert!(a.explanation.contains("could not be linearized"), "{}", a.explanation);
    }

    #[test]
    fn read_absent_after_write_is_stale() {
        let mut h = History::new();
        h.op(1, 0, 10, write(1, 1), OK, write(1, 1), None);
        let (r, d) = read(1, None);
        h.op(2, 20, 30, r, OK, d, None);
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.anomalies[0].kind, "stale-read");
    }

    #[test]
    fn nonlinearizable_without_a_completed_overwrite() {
        // Both writes span everything: reads 2, 1, 2 in sequence need 2 written twice.
        let mut h = History::new();
        h.invoke(0, 1, write(1, 1));
        h.invoke(0, 2, write(1, 2));
        for (i, v) in [2, 1, 2].into_iter().enumerate() {
            let (r, d) = read(1, Some(v));
            let t = 10 + 10 * i as u64;
            h.op(3, t, t + 5, r, OK, d, None);
        }
        h.ok(100, 1, write(1, 1));
        h.ok(100, 2, write(1, 2));
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.anomalies[0].kind, "nonlinearizable", "{:#?}", res.anomalies);
    }

    #[test]
    fn unknown_writes_resolve_either_way() {
        // An info write later read: it happened. Another info write never read: it did not.
        let mut h = History::new();
        h.op(1, 0, 10, write(1, 1), OK, write(1, 1), None);
        h.op(2, 20, 30, write(1, 2), Info, write(1, 2), None);
        let (r, d) = read(1, Some(2));
        h.op(3, 40, 50, r, OK, d, None);
        h.op(4, 60, 70, write(1, 3), Info, write(1, 3), None);
        let (r, d) = read(1, Some(2));
        h.op(3, 80, 90, r, OK, d, None);
        // An unfinished write whose value shows up.
        h.invoke(95, 5, write(1, 4));
        let (r, d) = read(1, Some(4));
        h.op(3, 100, 110, r, OK, d, None);
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        assert_eq!(res.figures["dropped_unknown"], 1);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_call() {
        let mut h = History::new();
        h.op(1, 0, 10, write(1, 1), OK, write(1, 1), None);
        let (r, d) = read(1, Some(2));
        h.op(3, 20, 30, r, OK, d, None);
        h.op(2, 40, 50, write(1, 2), Info, write(1, 2), None);
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Invalid);
    }

    #[test]
    fn unknown_cas_chain_resolves() {
        // info cas 1->2 then ok cas 2->3 (needs the info one to have happened), then read 3.
        let mut h = History::new();
        h.op(1, 0, 10, write(1, 1), OK, write(1, 1), None);
        let c1 = Op::Cas { key: 1, from: 1, to: 2 };
        h.op(2, 20, 30, c1.clone(), Info, c1, None);
        let c2 = Op::Cas { key: 1, from: 2, to: 3 };
        h.op(3, 40, 50, c2.clone(), OK, c2, None);
        let (r, d) = read(1, Some(3));
        h.op(3, 60, 70, r, OK, d, None);
        assert_eq!(check(&h.events, BUDGET).valid, Validity::Valid);
    }

    fn klist(items: &[(u64, u64, i64)]) -> (Op, Op) {
        let items = items
            .iter()
            .map(|&(key, value, mod_revision)| Item {
                key,
                value,
                mod_revision,
            })
            .collect();
        (Op::KList { items: None }, Op::KList { items: Some(items) })
    }

    #[test]
    fn kubernetes_history_valid_and_stale() {
        let mut h = History::new();
        let c = Op::KCreate { key: 1, value: 10 };
        h.op(1, 0, 10, c.clone(), OK, c, Some(5));
        let c = Op::KCreate { key: 1, value: 11 };
        h.op(2, 12, 14, c.clone(), Fail, c, None);
        let u = Op::KUpdate {
            key: 1,
            from_revision: 5,
            value: 12,
        };
        h.op(1, 20, 30, u.clone(), OK, u, Some(7));
        // An info create of key 2 that a list shows, with whatever revision it got.
        let c = Op::KCreate { key: 2, value: 20 };
        h.op(3, 20, 30, c.clone(), Info, c, None);
        let (l, d) = klist(&[(1, 12, 7), (2, 20, 9)]);
        h.op(4, 40, 50, l, OK, d, Some(9));
        let u = Op::KUpdate {
            key: 2,
            from_revision: 9,
            value: 21,
        };
        h.op(4, 60, 70, u.clone(), OK, u, Some(12));
        let (l, d) = klist(&[(1, 12, 7), (2, 21, 12)]);
        h.op(5, 80, 90, l, OK, d, Some(12));
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");

        // A list after the update that still shows key 1's first version.
        let (l, d) = klist(&[(1, 10, 5), (2, 21, 12)]);
        h.op(6, 100, 110, l, OK, d, Some(12));
        let res = check(&h.events, BUDGET);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.anomalies[0].kind, "stale-read", "{:#?}", res.anomalies);
        // A list that misses a created key entirely is stale as well.
        let mut h2 = History::new();
        let c = Op::KCreate { key: 3, value: 30 };
        h2.op(1, 0, 10, c.clone(), OK, c, Some(3));
        let (l, d) = klist(&[]);
        h2.op(2, 20, 30, l, OK, d, Some(3));
        assert_eq!(check(&h2.events, BUDGET).anomalies[0].kind, "stale-read");
    }

    /// All writes and reads of the first phase overlap; afterwards reads see 1, 2, 1: invalid, but only
    /// after exploring the orders of the first phase.
    fn hard_history() -> Vec<Event> {
        let mut h = History::new();
        let n = 24u64;
        for p in 0..n {
            h.invoke(0, p, write(1, p));
        }
        for p in 0..n {
            h.invoke(1, 100 + p, Op::Read { key: 1, value: None });
        }
        for p in 0..n {
            h.ok(50, p, write(1, p));
            h.ok(
                50,
                100 + p,
                Op::Read {
                    key: 1,
                    value: Some((p + 1) % n),
                },
            );
        }
        for (i, v) in [1, 2, 1].into_iter().enumerate() {
            let (r, d) = read(1, Some(v));
            let t = 60 + 10 * i as u64;
            h.op(500, t, t + 5, r, OK, d, None);
        }
        h.events
    }

    #[test]
    fn timeout_is_unknown_never_valid() {
        let res = check(&hard_history(), Duration::from_millis(30));
        assert_eq!(res.valid, Validity::Unknown, "{}", res.summary);
        assert_eq!(res.figures["unknown_partitions"], 1);
    }

    /// A simulated store: ops with random overlapping intervals, each taking effect at a random instant
    /// inside its interval (or, for unknown outcomes, maybe never); results computed from that order.
    fn simulated_history(seed: u64, processes: u64, keys: u64, n_ops: usize) -> Vec<Event> {
        struct Sim {
            process: u64,
            call: u64,
            ret: u64,
            at: u64,
            key: u64,
            kind: u8,
            value: u64,
            info: bool,
            applied: bool,
            result: Option<u64>,
            ok: bool,
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut sims: Vec<Sim> = Vec::with_capacity(n_ops);
        let mut clock = vec![0u64; processes as usize];
        let mut ids: Vec<u64> = (0..processes).collect();
        for (i, value) in (1..=n_ops as u64).enumerate() {
            let slot = i % processes as usize;
            let call = clock[slot] + rng.random_range(1..200);
            let ret = call + rng.random_range(50..2000);
            clock[slot] = ret;
            let key = rng.random_range(0..keys);
            let kind = match rng.random_range(0..10) {
                0..=3 => 0u8,
                4..=7 => 1,
                _ => 2,
            };
            let info = kind != 0 && rng.random_bool(0.04);
            sims.push(Sim {
                process: ids[slot],
                call,
                ret,
                at: rng.random_range(call + 1..ret),
                key,
                kind,
                value,
                info,
                applied: !info || rng.random_bool(0.5),
                result: None,
                ok: true,
            });
            if info {
                ids[slot] += processes;
            }
        }
        let mut order: Vec<usize> = (0..sims.len()).collect();
        order.sort_by_key(|&i| sims[i].at);
        let mut store = vec![None::<u64>; keys as usize];
        for i in order {
            let s = &mut sims[i];
            let cell = &mut store[s.key as usize];
            match s.kind {
                0 => s.result = *cell,
                1 => {
                    if s.applied {
                        *cell = Some(s.value);
                    }
                }
                _ => {
                    // Cas from the current value half the time (so some succeed), else from a stale one.
                    let from = if s.value.is_multiple_of(2) {
                        cell.unwrap_or(0)
                    } else {
                        s.value.saturating_sub(7)
                    };
                    s.result = Some(from);
                    s.ok = *cell == Some(from);
                    if s.ok && s.applied {
                        *cell = Some(s.value);
                    }
                }
            }
        }
        let mut h = History::new();
        let mut evs: Vec<(u64, u64, EventType, Op, Op)> = Vec::new();
        for s in &sims {
            let (inv, done) = match s.kind {
                0 => (
                    Op::Read {
                        key: s.key,
                        value: None,
                    },
                    Op::Read {
                        key: s.key,
                        value: s.result,
                    },
                ),
                1 => (write(s.key, s.value), write(s.key, s.value)),
                _ => {
                    let c = Op::Cas {
                        key: s.key,
                        from: s.result.unwrap_or(0),
                        to: s.value,
                    };
                    (c.clone(), c)
                }
            };
            let kind = if s.info {
                Info
            } else if s.ok {
                OK
            } else {
                Fail
            };
            evs.push((s.call, s.process, EventType::Invoke, inv.clone(), inv));
            evs.push((s.ret, s.process, kind, done.clone(), done));
        }
        evs.sort_by_key(|e| (e.0, e.2 != EventType::Invoke));
        for (t, p, kind, op, _) in evs {
            let i = h.push(0, p, kind, op, None);
            h.events[i].time = t * 1000;
        }
        h.events
    }

    #[test]
    fn ten_thousand_ops_check_fast() {
        let events = simulated_history(7, 10, 10, 10_000);
        let infos = events.iter().filter(|e| e.kind == Info).count();
        assert!(infos > 100, "{infos} info ops");
        let started = Instant::now();
        let res = check(&events, Duration::from_secs(60));
        let took = started.elapsed();
        println!(
            "10,000 ops ({infos} info): {took:?}, figures {}",
            res.figures["max_states"]
        );
        assert_eq!(res.valid, Validity::Valid, "{}: {:#?}", res.summary, res.anomalies);
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn one_busy_key_checks_fast() {
        // Ten processes on a single key: every op overlaps several others.
        let events = simulated_history(5, 10, 1, 10_000);
        let started = Instant::now();
        let res = check(&events, Duration::from_secs(60));
        println!(
            "10,000 ops on one key: {:?}, {} states",
            started.elapsed(),
            res.figures["max_states"]
        );
        assert_eq!(res.valid, Validity::Valid, "{}", res.summary);
    }

    #[test]
    fn simulated_histories_with_a_corrupted_read_are_invalid() {
        for seed in 0..5 {
            let mut events = simulated_history(seed, 5, 2, 400);
            assert_eq!(check(&events, BUDGET).valid, Validity::Valid, "seed {seed}");
            // Make the last ok read of a present value return a value nobody wrote.
            let pos = events
                .iter()
                .rposition(|e| e.kind == OK && matches!(e.op, Op::Read { value: Some(v), .. } if v > 100));
            let Some(pos) = pos else { continue };
            if let Op::Read { value: Some(v), .. } = &mut events[pos].op {
                *v = 999_999_999;
            }
            assert_eq!(check(&events, BUDGET).valid, Validity::Invalid, "seed {seed}");
        }
    }

    /// Exhaustive search with the checker's semantics but none of its shortcuts: unknown ops may happen
    /// any time after their call or never; an op may go next if called no later than the earliest
    /// pending return of a required op.
    fn brute<M: Model>(model: &M, ops: &[SearchOp<M::Input>], done: &mut Vec<bool>, state: &M::State) -> bool {
        let pending: Vec<usize> = (0..ops.len()).filter(|i| !done[*i]).collect();
        if pending.iter().all(|i| !ops[*i].required) {
            return true;
        }
        let horizon = pending
            .iter()
            .filter(|i| ops[**i].required)
            .filter_map(|i| ops[*i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for &i in &pending {
            if ops[i].call > horizon {
                continue;
            }
            if let Some(next) = model.step(state, &ops[i].input) {
                done[i] = true;
                let ok = brute(model, ops, done, &next);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }

    fn brute_all(events: &[Event]) -> bool {
        let ops = pair(events);
        let reg = register_partitions(&ops)
            .into_values()
            .all(|p| brute(&Register, &p, &mut vec![false; p.len()], &None));
        let (model, parts) = kube_partitions(&ops);
        let kube = parts
            .into_values()
            .all(|p| brute(&model, &p, &mut vec![false; p.len()], &None));
        reg && kube
    }

    /// Small random histories (random results, so about half are invalid) on one or two keys.
    fn random_history(rng: &mut StdRng, kube: bool) -> Vec<Event> {
        let mut evs: Vec<(u64, u64, EventType, Op)> = Vec::new();
        let n_procs = rng.random_range(2..=4u64);
        let mut next_value = 1u64;
        let mut revs: Vec<i64> = vec![0];
        for p in 0..n_procs {
            let mut t = rng.random_range(0..3u64);
            for _ in 0..rng.random_range(1..=3) {
                let call = t;
                let ret = call + rng.random_range(0..6u64);
                t = ret + rng.random_range(1..3u64);
                let key = rng.random_range(0..2u64);
                let value = next_value;
                next_value += 1;
                let seen =
                    |rng: &mut StdRng| (rng.random_range(0..value + 1) > 0).then(|| rng.random_range(1..value + 1));
                let outcome = match rng.random_range(0..10) {
                    0..=5 => OK,
                    6..=7 => Info,
                    _ => Fail,
                };
                let rev = rng.random_range(1..12i64);
                revs.push(rev);
                let (inv, done) = if kube {
                    match rng.random_range(0..3) {
                        0 => (Op::KCreate { key, value }, Op::KCreate { key, value }),
                        1 => {
                            let from_revision = revs[rng.random_range(0..revs.len())];
                            let op = Op::KUpdate {
                                key,
                                from_revision,
                                value,
                            };
                            (op.clone(), op)
                        }
                        _ => {
                            let mut items = Vec::new();
                            for k in 0..2u64 {
                                if let Some(v) = seen(rng) {
                                    items.push(Item {
                                        key: k,
                                        value: v,
                                        mod_revision: revs[rng.random_range(0..revs.len())],
                                    });
                                }
                            }
                            (Op::KList { items: None }, Op::KList { items: Some(items) })
                        }
                    }
                } else {
                    match rng.random_range(0..3) {
                        0 => (write(key, value), write(key, value)),
                        1 => {
                            let c = Op::Cas {
                                key,
                                from: rng.random_range(1..value + 1),
                                to: value,
                            };
                            (c.clone(), c)
                        }
                        _ => (Op::Read { key, value: None }, Op::Read { key, value: seen(rng) }),
                    }
                };
                evs.push((call, p, EventType::Invoke, inv.clone()));
                let done = if outcome == OK { done } else { inv };
                evs.push((ret, p, outcome, done));
                if outcome == Info {
                    break;
                }
            }
        }
        evs.sort_by_key(|e| (e.0, e.2 != EventType::Invoke));
        let mut h = History::new();
        for (t, p, kind, op) in evs {
            let rev = (kind == OK).then(|| rng.random_range(1..12i64));
            h.push(t, p, kind, op, rev);
        }
        h.events
    }

    #[test]
    fn search_agrees_with_brute_force() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut verdicts = [0usize; 2];
        for i in 0..4000 {
            let kube = i % 2 == 1;
            let events = random_history(&mut rng, kube);
            let want = brute_all(&events);
            let got = check(&events, BUDGET);
            if got.figures["partitions"] == 0 {
                // Everything failed: nothing to check.
                continue;
            }
            assert_ne!(got.valid, Validity::Unknown);
            let compact: Vec<String> = events
                .iter()
                .map(|e| {
                    format!(
                        "t{} p{} {:?} {:?} rev {:?}",
                        e.time / 1_000_000,
                        e.process,
                        e.kind,
                        e.op,
                        e.revision
                    )
                })
                .collect();
            assert_eq!(
                got.valid == Validity::Valid,
                want,
                "case {i}:\n{}\n{:#?}",
                compact.join("\n"),
                got.anomalies
            );
            verdicts[usize::from(want)] += 1;
        }
        // Both answers must be well represented for the comparison to mean something.
        assert!(verdicts[0] > 500 && verdicts[1] > 500, "{verdicts:?}");
    }
}
