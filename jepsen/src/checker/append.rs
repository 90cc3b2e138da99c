//! List-append transactions, judged as Elle does. Every read of a key must be a prefix of the longest
//! read of that key, which gives the key's version order; from it we derive write-write, write-read and
//! read-write dependencies between committed transactions, add real-time edges (etcd claims strict
//! serializability), and look for cycles. Cycles are named by the edges they need: G0 (ww only), G1c
//! (ww+wr), G-single (one rw), G2 (more rw), with `-realtime` when a real-time edge is needed.
//! Aborted reads (G1a), intermediate reads (G1b), duplicates and incompatible orders are found directly.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::json;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{pair, Event, EventType, Mop, Op, Operation};

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
/// Anomalies of one kind reported individually before the rest are only counted.
const MAX_PER_KIND: usize = 20;

struct Txn<'a> {
    op: &'a Operation,
    mops: &'a [Mop],
    outcome: EventType,
}

impl Txn<'_> {
    fn events(&self) -> Vec<usize> {
        std::iter::once(self.op.invoke.index)
            .chain(self.op.complete.as_ref().map(|c| c.index))
            .collect()
    }
    fn name(&self, id: usize) -> String {
        let events: Vec<String> = self.events().iter().map(|e| e.to_string()).collect();
        let outcome = format!("{:?}", self.outcome).to_lowercase();
        format!("T{id} [events {}, {outcome}]", events.join("->"))
    }
}

/// A read of a key as the store saw it, before the transaction's own appends.
struct ExtRead {
    txn: usize,
    key: u64,
    list: Vec<u64>,
}

struct Anomalies {
    list: Vec<Anomaly>,
    counts: BTreeMap<String, usize>,
}

impl Anomalies {
    fn add(&mut self, kind: &str, explanation: String, events: Vec<usize>) {
        let n = self.counts.entry(kind.to_string()).or_default();
        *n += 1;
        if *n <= MAX_PER_KIND {
            self.list.push(Anomaly {
                kind: kind.into(),
                explanation,
                events,
            });
        }
    }
}

/// The kinds of edge between two transactions (a bit mask), with a reason per kind.
type Edge = (u8, Vec<(u8, String)>);

/// The dependency graph, per (from, to).
#[derive(Default)]
struct Graph {
    edges: HashMap<(usize, usize), Edge>,
}

impl Graph {
    fn add(&mut self, from: usize, to: usize, kind: u8, why: impl FnOnce() -> String) {
        if from == to {
            return;
        }
        let e = self.edges.entry((from, to)).or_insert((0, Vec::new()));
        if e.0 & kind == 0 {
            e.0 |= kind;
            e.1.push((kind, why()));
        }
    }
    fn adjacency(&self, n: usize) -> Vec<Vec<(usize, u8)>> {
        let mut adj = vec![Vec::new(); n];
        for (&(a, b), &(mask, _)) in &self.edges {
            adj[a].push((b, mask));
        }
        for list in &mut adj {
            list.sort_unstable();
        }
        adj
    }
}

pub fn check(events: &[Event]) -> CheckResult {
    let ops = pair(events);
    let txns: Vec<Txn> = ops
        .iter()
        .filter_map(|o| match o.op() {
            Op::Txn { mops } => Some(Txn {
                op: o,
                mops,
                outcome: o.outcome(),
            }),
            _ => None,
        })
        .collect();
    if txns.is_empty() {
        return CheckResult {
            checker: "append".into(),
            valid: Validity::Unknown,
            summary: "no transactions".into(),
            figures: json!({ "txns": 0 }),
            anomalies: Vec::new(),
        };
    }
    let mut found = Anomalies {
        list: Vec::new(),
        counts: BTreeMap::new(),
    };

    // Who appended what, and each transaction's own appends per key in program order.
    let mut appender: HashMap<(u64, u64), usize> = HashMap::new();
    let mut own: Vec<BTreeMap<u64, Vec<u64>>> = vec![BTreeMap::new(); txns.len()];
    for (t, txn) in txns.iter().enumerate() {
        for m in txn.mops {
            if let Mop::Append { key, value } = m {
                appender.insert((*key, *value), t);
                own[t].entry(*key).or_default().push(*value);
            }
        }
    }

    // Reads of ok transactions: external views, and every list seen (for the version order).
    let mut ext_reads: Vec<ExtRead> = Vec::new();
    let mut seen_lists: BTreeMap<u64, Vec<(usize, Vec<u64>)>> = BTreeMap::new();
    for (t, txn) in txns.iter().enumerate().filter(|(_, x)| x.outcome == EventType::Ok) {
        let mut known: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut pending: HashMap<u64, Vec<u64>> = HashMap::new();
        for m in txn.mops {
            match m {
                Mop::Append { key, value } => match known.get_mut(key) {
                    Some(list) => list.push(*value),
                    None => pending.entry(*key).or_default().push(*value),
                },
                Mop::Read { key, value: Some(list) } => {
                    let mut set = HashSet::new();
                    let dups: Vec<u64> = list.iter().filter(|v| !set.insert(**v)).copied().collect();
                    if !dups.is_empty() {
                        found.add(
                            "duplicate-elements",
                            format!("{} read key {key} as {list:?}, listing {dups:?} twice", txn.name(t)),
                            txn.events(),
                        );
                    }
                    if let Some(expected) = known.get(key) {
                        if expected != list {
                            found.add(
                                "internal",
                                format!("{} read key {key} as {list:?} after it saw {expected:?}", txn.name(t)),
                                txn.events(),
                            );
                        }
                    } else {
                        let mine = pending.get(key).map_or(&[][..], |v| v.as_slice());
                        if list.ends_with(mine) {
                            let external = list[..list.len() - mine.len()].to_vec();
                            ext_reads.push(ExtRead {
                                txn: t,
                                key: *key,
                                list: external,
                            });
                        } else {
                            found.add(
                                "internal",
                                format!(
                                    "{} read key {key} as {list:?} without its own appends {mine:?}",
                                    txn.name(t)
                                ),
                                txn.events(),
                            );
                        }
                    }
                    known.insert(*key, list.clone());
                    seen_lists.entry(*key).or_default().push((t, list.clone()));
                }
                Mop::Read { value: None, .. } => {}
            }
        }
    }

    // Version order per key: the longest read; every read must be a prefix of it.
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (key, lists) in &seen_lists {
        let Some((lt, longest)) = lists.iter().max_by_key(|(_, l)| l.len()) else {
            continue;
        };
        for (t, l) in lists {
            if !longest.starts_with(l) {
                found.add(
                    "incompatible-order",
                    format!(
                        "key {key}: {} read {l:?}, which is not a prefix of {:?} read by {}",
                        txns[*t].name(*t),
                        longest,
                        txns[*lt].name(*lt)
                    ),
                    [txns[*t].events(), txns[*lt].events()].concat(),
                );
            }
        }
        // A transaction's appends to a key must land in its program order.
        let pos: HashMap<u64, usize> = longest.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        for (t, mine) in own.iter().enumerate() {
            let Some(vals) = mine.get(key) else { continue };
            let at: Vec<usize> = vals.iter().filter_map(|v| pos.get(v).copied()).collect();
            if at.windows(2).any(|w| w[0] > w[1]) {
                found.add(
                    "incompatible-order",
                    format!(
                        "key {key}: {} appended {vals:?} but they were read in another order",
                        txns[t].name(t)
                    ),
                    txns[t].events(),
                );
            }
        }
        order.insert(*key, longest.clone());
    }

    // Elements read: from aborted transactions (G1a), from nowhere, or intermediate states (G1b).
    let mut observed: HashSet<(u64, u64)> = HashSet::new();
    for (key, lists) in &seen_lists {
        for (t, l) in lists {
            for v in l {
                observed.insert((*key, *v));
                match appender.get(&(*key, *v)) {
                    None => found.add(
                        "unexpected-element",
                        format!(
                            "{} read {v} in key {key}, which no transaction appended",
                            txns[*t].name(*t)
                        ),
                        txns[*t].events(),
                    ),
                    Some(&w) if txns[w].outcome == EventType::Fail => found.add(
                        "G1a",
                        format!(
                            "{} read {v} in key {key}, appended by failed {}",
                            txns[*t].name(*t),
                            txns[w].name(w)
                        ),
                        [txns[*t].events(), txns[w].events()].concat(),
                    ),
                    _ => {}
                }
            }
        }
    }
    for r in &ext_reads {
        let Some(last) = r.list.last() else { continue };
        let Some(&w) = appender.get(&(r.key, *last)) else {
            continue;
        };
        if w == r.txn {
            continue;
        }
        if own[w]
            .get(&r.key)
            .and_then(|v| v.last())
            .is_some_and(|final_value| final_value != last)
        {
            found.add(
                "G1b",
                format!(
                    "{} read key {} ending at {last}, an intermediate append of {} (which appended {:?})",
                    txns[r.txn].name(r.txn),
                    r.key,
                    txns[w].name(w),
                    own[w].get(&r.key).cloned().unwrap_or_default()
                ),
                [txns[r.txn].events(), txns[w].events()].concat(),
            );
        }
    }

    // Committed: ok transactions, and unknown ones whose appends someone read.
    let committed: Vec<bool> = txns
        .iter()
        .enumerate()
        .map(|(t, x)| {
            x.outcome == EventType::Ok
                || (x.outcome == EventType::Info
                    && own[t]
                        .iter()
                        .any(|(k, vs)| vs.iter().any(|v| observed.contains(&(*k, *v)))))
        })
        .collect();

    let mut graph = Graph::default();
    for (key, list) in &order {
        for w in list.windows(2) {
            if let (Some(&a), Some(&b)) = (appender.get(&(*key, w[0])), appender.get(&(*key, w[1]))) {
                if committed[a] && committed[b] {
                    graph.add(a, b, WW, || format!("key {key}: {} then {}", w[0], w[1]));
                }
            }
        }
    }
    for r in &ext_reads {
        if let Some(&a) = r.list.last().and_then(|v| appender.get(&(r.key, *v))) {
            if committed[a] {
                graph.add(a, r.txn, WR, || format!("key {}: read {:?}", r.key, r.list));
            }
        }
        let Some(full) = order.get(&r.key) else { continue };
        if full.starts_with(&r.list) {
            if let Some(next) = full.get(r.list.len()) {
                if let Some(&b) = appender.get(&(r.key, *next)).filter(|b| committed[**b]) {
                    graph.add(r.txn, b, RW, || {
                        format!("key {}: read {:?}, missing {next}", r.key, r.list)
                    });
                }
            }
        }
    }
    add_realtime_edges(&txns, &committed, &mut graph);
    lost_appends(&txns, &own, &order, &seen_lists, &mut found);

    let adj = graph.adjacency(txns.len());
    let sccs = tarjan(&adj, |_| true);
    let mut cycles = 0usize;
    for scc in sccs.iter().filter(|c| c.len() > 1) {
        cycles += 1;
        if let Some((name, cycle)) = classify(&adj, scc) {
            let (text, evs) = describe_cycle(&txns, &graph, &cycle);
            found.add(name, text, evs);
        }
    }

    let count = |kind: u8| graph.edges.values().filter(|(m, _)| m & kind != 0).count();
    let outcome_count = |k: EventType| txns.iter().filter(|t| t.outcome == k).count();
    let valid = if found.counts.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = if found.counts.is_empty() {
        format!("{} txns, {} keys: no anomalies", txns.len(), order.len())
    } else {
        let parts: Vec<String> = found.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!("{} txns: {}", txns.len(), parts.join(", "))
    };
    let figures = json!({
        "txns": txns.len(),
        "ok": outcome_count(EventType::Ok),
        "info": outcome_count(EventType::Info),
        "fail": outcome_count(EventType::Fail),
        "committed": committed.iter().filter(|c| **c).count(),
        "keys": order.len(),
        "edges": { "ww": count(WW), "wr": count(WR), "rw": count(RW), "realtime": count(RT) },
        "cyclic_components": cycles,
        "anomalies": found.counts,
    });
    CheckResult {
        checker: "append".into(),
        valid,
        summary,
        figures,
        anomalies: found.list,
    }
}

/// Real-time order, kept sparse: a transaction invoked after others completed gets an edge from each
/// one on the frontier (completed, and not already followed by another completed one), which keeps
/// every real-time precedence reachable without quadratic edges.
fn add_realtime_edges(txns: &[Txn], committed: &[bool], graph: &mut Graph) {
    let mut points: Vec<(usize, bool, usize)> = Vec::new();
    for (t, x) in txns.iter().enumerate().filter(|(t, _)| committed[*t]) {
        points.push((x.op.invoke.index, true, t));
        if let Some(c) = x.op.complete.as_ref().filter(|c| c.kind == EventType::Ok) {
            points.push((c.index, false, t));
        }
    }
    points.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, is_invoke, t) in points {
        if is_invoke {
            for &f in &frontier {
                graph.add(f, t, RT, || "completed before the other began".to_string());
            }
            preds.insert(t, frontier.clone());
        } else {
            let gone: HashSet<usize> = preds.remove(&t).unwrap_or_default().into_iter().collect();
            frontier.retain(|f| !gone.contains(f));
            frontier.push(t);
        }
    }
}

/// An ok append nobody ever read, although a read of its key began after it completed: that read
/// must come before it (rw) yet began after it ended.
fn lost_appends(
    txns: &[Txn],
    own: &[BTreeMap<u64, Vec<u64>>],
    order: &BTreeMap<u64, Vec<u64>>,
    seen_lists: &BTreeMap<u64, Vec<(usize, Vec<u64>)>>,
    found: &mut Anomalies,
) {
    for (t, x) in txns.iter().enumerate().filter(|(_, x)| x.outcome == EventType::Ok) {
        let Some(done) = x.op.return_time() else { continue };
        for (key, vals) in &own[t] {
            let in_order: HashSet<&u64> = order.get(key).map(|o| o.iter().collect()).unwrap_or_default();
            let Some(v) = vals.iter().find(|v| !in_order.contains(v)) else {
                continue;
            };
            let later = seen_lists.get(key).and_then(|ls| {
                ls.iter()
                    .filter(|(r, _)| txns[*r].op.call_time() > done)
                    .min_by_key(|(r, _)| txns[*r].op.call_time())
            });
            if let Some((r, list)) = later {
                found.add(
                    "G-single-realtime",
                    format!(
                        "{} appended {v} to key {key} and completed, then {} began and read {list:?} without it \
                         (and no read ever saw it)",
                        x.name(t),
                        txns[*r].name(*r)
                    ),
                    [x.events(), txns[*r].events()].concat(),
                );
            }
        }
    }
}

/// Strongly connected components (Tarjan, iterative), over edges `keep` accepts.
fn tarjan(adj: &[Vec<(usize, u8)>], keep: impl Fn(u8) -> bool) -> Vec<Vec<usize>> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize;
    for root in 0..n {
        if index[root] != usize::MAX || adj[root].is_empty() {
            continue;
        }
        // (node, position in its edge list)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = work.last_mut() {
            let (v, i) = *top;
            if let Some(&(w, mask)) = adj[v].get(i) {
                top.1 += 1;
                if !keep(mask) {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(comp);
            }
        }
    }
    out
}

/// Shortest path (BFS) from `from` to `to` inside `nodes` over edges whose kinds intersect `allowed`.
fn bfs(adj: &[Vec<(usize, u8)>], nodes: &HashSet<usize>, from: usize, to: usize, allowed: u8) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    parent.insert(from, from);
    while let Some(v) = queue.pop_front() {
        for &(w, mask) in &adj[v] {
            if mask & allowed == 0 || !nodes.contains(&w) {
                continue;
            }
            if w == to {
                let mut path = vec![w, v];
                let mut cur = v;
                while cur != from {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// A cycle using only `allowed` edges inside `scc`, as a node list whose first and last are equal.
fn cycle_with(adj: &[Vec<(usize, u8)>], scc: &[usize], allowed: u8) -> Option<Vec<usize>> {
    let nodes: HashSet<usize> = scc.iter().copied().collect();
    let sub: Vec<Vec<(usize, u8)>> = adj
        .iter()
        .enumerate()
        .map(|(v, es)| {
            if nodes.contains(&v) {
                es.iter().filter(|(w, _)| nodes.contains(w)).copied().collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    let inner = tarjan(&sub, |m| m & allowed != 0);
    let comp = inner.into_iter().find(|c| c.len() > 1)?;
    let comp_nodes: HashSet<usize> = comp.iter().copied().collect();
    let start = *comp.iter().min()?;
    bfs(&sub, &comp_nodes, start, start, allowed)
}

/// A cycle with exactly one rw edge (the others from `base`), trying at most a few hundred rw edges.
fn single_rw_cycle(adj: &[Vec<(usize, u8)>], scc: &[usize], base: u8) -> Option<Vec<usize>> {
    let nodes: HashSet<usize> = scc.iter().copied().collect();
    let rw_edges = scc.iter().flat_map(|&a| {
        adj[a]
            .iter()
            .filter(|(b, m)| m & RW != 0 && nodes.contains(b))
            .map(move |&(b, _)| (a, b))
    });
    for (a, b) in rw_edges.take(300) {
        if let Some(path) = bfs(adj, &nodes, b, a, base) {
            return Some([vec![a], path].concat());
        }
    }
    None
}

/// The least severe anomaly a cyclic component contains, with one cycle showing it.
fn classify(adj: &[Vec<(usize, u8)>], scc: &[usize]) -> Option<(&'static str, Vec<usize>)> {
    for (rt, suffix) in [(0, ""), (RT, "-realtime")] {
        if let Some(c) = cycle_with(adj, scc, WW | rt) {
            return Some((if rt == 0 { "G0" } else { "G0-realtime" }, c));
        }
        if let Some(c) = cycle_with(adj, scc, WW | WR | rt) {
            return Some((if suffix.is_empty() { "G1c" } else { "G1c-realtime" }, c));
        }
        if let Some(c) = single_rw_cycle(adj, scc, WW | WR | rt) {
            return Some((
                if suffix.is_empty() {
                    "G-single"
                } else {
                    "G-single-realtime"
                },
                c,
            ));
        }
        if let Some(c) = cycle_with(adj, scc, WW | WR | RW | rt) {
            return Some((if suffix.is_empty() { "G2" } else { "G2-realtime" }, c));
        }
    }
    None
}

fn describe_cycle(txns: &[Txn], graph: &Graph, cycle: &[usize]) -> (String, Vec<usize>) {
    let mut text = String::new();
    let mut events = Vec::new();
    for w in cycle.windows(2) {
        let (a, b) = (w[0], w[1]);
        if text.is_empty() {
            text.push_str(&txns[a].name(a));
        }
        events.extend(txns[a].events());
        let label = graph.edges.get(&(a, b)).and_then(|(_, reasons)| {
            // Name the edge by its mildest kind: ww, wr, rw, then real time.
            [WW, WR, RW, RT]
                .iter()
                .find_map(|k| reasons.iter().find(|(kind, _)| kind == k))
        });
        let (kind, why) = label.map_or(("?", String::new()), |(k, why)| (kind_name(*k), why.clone()));
        text.push_str(&format!(" -{kind} ({why})-> {}", txns[b].name(b)));
    }
    events.sort_unstable();
    events.dedup();
    (format!("cycle: {text}"), events)
}

fn kind_name(k: u8) -> &'static str {
    match k {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        _ => "realtime",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::History;
    use EventType::{Fail, Info, Ok as OK};

    fn app(key: u64, value: u64) -> Mop {
        Mop::Append { key, value }
    }
    fn rd(key: u64, list: &[u64]) -> Mop {
        Mop::Read {
            key,
            value: Some(list.to_vec()),
        }
    }
    fn unread(m: &Mop) -> Mop {
        match m {
            Mop::Read { key, .. } => Mop::Read { key: *key, value: None },
            other => other.clone(),
        }
    }
    /// A transaction from t0 to t1 on process p.
    fn txn(h: &mut History, p: u64, t0: u64, t1: u64, kind: EventType, mops: Vec<Mop>) -> (usize, usize) {
        let invoke = Op::Txn {
            mops: mops.iter().map(unread).collect(),
        };
        let done = if kind == OK { Op::Txn { mops } } else { invoke.clone() };
        h.op(p, t0, t1, invoke, kind, done, None)
    }
    fn kinds(res: &CheckResult) -> Vec<String> {
        res.anomalies.iter().map(|a| a.kind.clone()).collect()
    }

    #[test]
    fn serial_history_is_valid() {
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1), app(2, 2)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[1]), app(1, 3), rd(1, &[1, 3])]);
        txn(&mut h, 3, 20, 30, Info, vec![app(2, 4)]);
        txn(&mut h, 4, 40, 50, Fail, vec![app(2, 5)]);
        txn(&mut h, 1, 60, 70, OK, vec![rd(1, &[1, 3]), rd(2, &[2, 4])]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        assert_eq!(res.figures["committed"], 4);
    }

    #[test]
    fn g0_write_cycle() {
        // T1 and T2 append to keys 1 and 2 in opposite orders.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1), app(2, 11)]);
        txn(&mut h, 2, 0, 10, OK, vec![app(1, 2), app(2, 12)]);
        txn(&mut h, 3, 20, 30, OK, vec![rd(1, &[1, 2]), rd(2, &[12, 11])]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Invalid);
        assert!(kinds(&res).contains(&"G0".to_string()), "{res:#?}");
        let a = res.anomalies.iter().find(|a| a.kind == "G0").unwrap();
        assert!(a.explanation.contains("-ww"), "{}", a.explanation);
        assert_eq!(a.events, vec![0, 1, 2, 3]);
    }

    #[test]
    fn g1c_circular_information_flow() {
        // T1 appends x and reads T2's y; T2 appends y and reads T1's x.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1), rd(2, &[2])]);
        txn(&mut h, 2, 0, 10, OK, vec![app(2, 2), rd(1, &[1])]);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["G1c".to_string()], "{res:#?}");
    }

    #[test]
    fn g2_write_skew() {
        // Each reads the other's key empty and appends to its own: two rw edges.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![rd(1, &[]), app(2, 1)]);
        txn(&mut h, 2, 0, 10, OK, vec![rd(2, &[]), app(1, 2)]);
        txn(&mut h, 3, 20, 30, OK, vec![rd(1, &[2]), rd(2, &[1])]);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["G2".to_string()], "{res:#?}");
    }

    #[test]
    fn g_single_and_realtime() {
        // T2 reads T1's append to key 1 but misses T1's append to key 2 (read skew): one rw edge.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1), app(2, 11)]);
        txn(&mut h, 2, 0, 10, OK, vec![rd(1, &[1]), rd(2, &[])]);
        txn(&mut h, 3, 20, 30, OK, vec![rd(2, &[11])]);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["G-single".to_string()], "{res:#?}");

        // A stale read: T2 begins after T1 completed yet misses its append; T3 later sees it.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[])]);
        txn(&mut h, 3, 40, 50, OK, vec![rd(1, &[1])]);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["G-single-realtime".to_string()], "{res:#?}");
        assert!(res.anomalies[0].explanation.contains("realtime"));

        // The same when no read ever sees the append.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[])]);
        assert_eq!(kinds(&check(&h.events)), vec!["G-single-realtime".to_string()]);
    }

    #[test]
    fn aborted_intermediate_duplicate_and_incompatible_reads() {
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, Fail, vec![app(1, 1)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[1])]);
        assert_eq!(kinds(&check(&h.events)), vec!["G1a".to_string()]);

        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1), app(1, 2)]);
        txn(&mut h, 2, 0, 10, OK, vec![rd(1, &[1])]);
        assert!(kinds(&check(&h.events)).contains(&"G1b".to_string()));

        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[1, 1])]);
        assert!(kinds(&check(&h.events)).contains(&"duplicate-elements".to_string()));

        let mut h = History::new();
        txn(&mut h, 1, 0, 10, OK, vec![app(1, 1)]);
        txn(&mut h, 2, 0, 10, OK, vec![app(1, 2)]);
        txn(&mut h, 3, 20, 30, OK, vec![rd(1, &[1, 2])]);
        txn(&mut h, 4, 20, 30, OK, vec![rd(1, &[2])]);
        assert!(kinds(&check(&h.events)).contains(&"incompatible-order".to_string()));
    }

    #[test]
    fn observed_info_txn_counts_as_committed() {
        // An info txn whose append was read takes part in cycles: here T2 read skew over it.
        let mut h = History::new();
        txn(&mut h, 1, 0, 10, Info, vec![app(1, 1), app(2, 11)]);
        txn(&mut h, 2, 20, 30, OK, vec![rd(1, &[1]), rd(2, &[])]);
        txn(&mut h, 3, 40, 50, OK, vec![rd(2, &[11])]);
        let res = check(&h.events);
        assert_eq!(res.figures["committed"], 3);
        assert_eq!(kinds(&res), vec!["G-single".to_string()], "{res:#?}");
    }

    #[test]
    fn many_concurrent_serializable_txns_are_valid() {
        // A serial execution whose real-time intervals overlap: each txn takes effect at t = 10 i.
        let mut h = History::new();
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut evs = Vec::new();
        for i in 0..300u64 {
            let key = i % 4;
            let other = (i + 1) % 4;
            let before = lists.get(&other).cloned().unwrap_or_default();
            lists.entry(key).or_default().push(i);
            let mine = lists[&key].clone();
            let mops = vec![rd(other, &before), app(key, i), rd(key, &mine)];
            evs.push((i * 10 - (i * 10).min(15), i % 7, mops, i * 10 + 15));
        }
        let mut points: Vec<(u64, bool, u64, Vec<Mop>)> = Vec::new();
        for (t0, p, mops, t1) in evs {
            points.push((t0, true, p + 10 * t0, mops.clone()));
            points.push((t1, false, p + 10 * t0, mops));
        }
        points.sort_by_key(|x| (x.0, !x.1));
        for (t, inv, p, mops) in points {
            if inv {
                h.invoke(
                    t,
                    p,
                    Op::Txn {
                        mops: mops.iter().map(unread).collect(),
                    },
                );
            } else {
                h.ok(t, p, Op::Txn { mops });
            }
        }
        let res = check(&h.events);
        assert_eq!(
            res.valid,
            Validity::Valid,
            "{}: {:#?}",
            res.summary,
            res.anomalies.first()
        );
    }
}
