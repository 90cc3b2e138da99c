//! Set: adds of unique elements and reads of the whole set. The last `ok` read is the final one: an
//! acknowledged add missing from it is lost, an element never attempted is unexpected, an add of
//! unknown outcome that shows up is recovered. Earlier reads that miss an element acknowledged before
//! they began are stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{pair, EventType, Op, Operation};

/// How many element ids figures and explanations list.
const SHOW: usize = 20;

struct Add {
    outcome: EventType,
    events: Vec<usize>,
    /// Completion time of an `ok` add.
    acked_at: Option<u64>,
}

struct Read<'a> {
    op: &'a Operation,
    elements: &'a [u64],
}

fn events_of(o: &Operation) -> Vec<usize> {
    std::iter::once(o.invoke.index)
        .chain(o.complete.as_ref().map(|c| c.index))
        .collect()
}

fn first_ids(ids: &BTreeSet<u64>) -> Vec<u64> {
    ids.iter().take(SHOW).copied().collect()
}

fn ids_text(ids: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = ids.iter().take(SHOW).map(|v| v.to_string()).collect();
    let more = if ids.len() > SHOW {
        format!(" and {} more", ids.len() - SHOW)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

pub fn check(events: &[crate::history::Event]) -> CheckResult {
    let ops = pair(events);
    let mut adds: BTreeMap<u64, Add> = BTreeMap::new();
    let mut reads: Vec<Read> = Vec::new();
    for o in &ops {
        match o.op() {
            Op::Add { element } => {
                let acked_at = (o.outcome() == EventType::Ok)
                    .then(|| o.complete.as_ref().map(|c| c.time))
                    .flatten();
                adds.insert(
                    *element,
                    Add {
                        outcome: o.outcome(),
                        events: events_of(o),
                        acked_at,
                    },
                );
            }
            Op::ReadSet {
                elements: Some(elements),
            } if o.outcome() == EventType::Ok => {
                reads.push(Read { op: o, elements });
            }
            _ => {}
        }
    }
    // The final read is the one that completed last.
    reads.sort_by_key(|r| r.op.complete.as_ref().map_or(0, |c| c.index));
    let mut anomalies = Vec::new();

    // Duplicates, unexpected elements and failed adds that show up, in any read.
    let mut unexpected: BTreeSet<u64> = BTreeSet::new();
    let mut failed_present: BTreeSet<u64> = BTreeSet::new();
    let mut duplicated: BTreeSet<u64> = BTreeSet::new();
    let mut unexpected_reads: Vec<usize> = Vec::new();
    for r in &reads {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for e in r.elements {
            *counts.entry(*e).or_default() += 1;
        }
        let dups: BTreeSet<u64> = counts.iter().filter(|(_, c)| **c > 1).map(|(e, _)| *e).collect();
        if !dups.is_empty() {
            anomalies.push(Anomaly {
                kind: "duplicate".into(),
                explanation: format!("a read listed elements more than once: {}", ids_text(&dups)),
                events: events_of(r.op),
            });
            duplicated.extend(dups);
        }
        let mut bad = false;
        for e in counts.keys() {
            match adds.get(e) {
                None => {
                    unexpected.insert(*e);
                    bad = true;
                }
                Some(a) if a.outcome == EventType::Fail => {
                    failed_present.insert(*e);
                    bad = true;
                }
                _ => {}
            }
        }
        if bad {
            unexpected_reads.extend(events_of(r.op));
        }
    }
    if !unexpected.is_empty() {
        anomalies.push(Anomaly {
            kind: "unexpected".into(),
            explanation: format!(
                "{} elements read were never added: {}",
                unexpected.len(),
                ids_text(&unexpected)
            ),
            events: unexpected_reads.clone(),
        });
    }
    if !failed_present.is_empty() {
        let mut evs = unexpected_reads.clone();
        evs.extend(
            failed_present
                .iter()
                .take(SHOW)
                .filter_map(|e| adds.get(e))
                .flat_map(|a| a.events.clone()),
        );
        anomalies.push(Anomaly {
            kind: "failed-add-present".into(),
            explanation: format!(
                "{} elements whose add failed (definitely not applied) were read: {}",
                failed_present.len(),
                ids_text(&failed_present)
            ),
            events: evs,
        });
    }

    // Stale reads: each read but the last against what was acknowledged before it began.
    let mut stale_total = 0usize;
    let earlier = reads.len().saturating_sub(1);
    for r in &reads[..earlier] {
        let present: BTreeSet<u64> = r.elements.iter().copied().collect();
        let missing: BTreeSet<u64> = adds
            .iter()
            .filter(|(e, a)| a.acked_at.is_some_and(|t| t < r.op.call_time()) && !present.contains(e))
            .map(|(e, _)| *e)
            .collect();
        if !missing.is_empty() {
            stale_total += missing.len();
            let mut evs = events_of(r.op);
            evs.extend(
                missing
                    .iter()
                    .take(SHOW)
                    .filter_map(|e| adds.get(e))
                    .flat_map(|a| a.events.clone()),
            );
            anomalies.push(Anomaly {
                kind: "stale-read".into(),
                explanation: format!(
                    "a read missed {} elements acknowledged before it began: {}",
                    missing.len(),
                    ids_text(&missing)
                ),
                events: evs,
            });
        }
    }

    let attempted = adds.len();
    let acknowledged = adds.values().filter(|a| a.outcome == EventType::Ok).count();
    let Some(last) = reads.last() else {
        let valid = if anomalies.is_empty() {
            Validity::Unknown
        } else {
            Validity::Invalid
        };
        return CheckResult {
            checker: "set".into(),
            valid,
            summary: format!("no successful final read ({attempted} adds attempted, {acknowledged} acknowledged)"),
            figures: json!({ "attempted": attempted, "acknowledged": acknowledged, "reads": 0 }),
            anomalies,
        };
    };

    let final_set: BTreeSet<u64> = last.elements.iter().copied().collect();
    let final_call = last.op.call_time();
    // Lost: acknowledged before the final read began, or seen by a read that ended before it began.
    let seen_before: BTreeSet<u64> = reads[..earlier]
        .iter()
        .filter(|r| r.op.return_time().is_some_and(|t| t < final_call))
        .flat_map(|r| r.elements.iter().copied())
        .collect();
    let lost: BTreeSet<u64> = adds
        .iter()
        .filter(|(e, a)| {
            !final_set.contains(e) && (a.acked_at.is_some_and(|t| t < final_call) || seen_before.contains(e))
        })
        .map(|(e, _)| *e)
        .collect();
    let recovered: BTreeSet<u64> = adds
        .iter()
        .filter(|(e, a)| a.outcome == EventType::Info && final_set.contains(e))
        .map(|(e, _)| *e)
        .collect();
    if !lost.is_empty() {
        let mut evs = events_of(last.op);
        evs.extend(
            lost.iter()
                .take(SHOW)
                .filter_map(|e| adds.get(e))
                .flat_map(|a| a.events.clone()),
        );
        anomalies.push(Anomaly {
            kind: "lost".into(),
            explanation: format!(
                "{} acknowledged (or previously read) elements are missing from the final read: {}",
                lost.len(),
                ids_text(&lost)
            ),
            events: evs,
        });
    }

    let valid = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = format!(
        "{attempted} attempted, {acknowledged} acknowledged, {} lost, {} unexpected, {} recovered{}",
        lost.len(),
        unexpected.len(),
        recovered.len(),
        if stale_total > 0 {
            format!(", {stale_total} stale")
        } else {
            String::new()
        }
    );
    let figures = json!({
        "attempted": attempted,
        "acknowledged": acknowledged,
        "lost": lost.len(),
        "unexpected": unexpected.len(),
        "recovered": recovered.len(),
        "stale": stale_total,
        "duplicated": duplicated.len(),
        "failed_present": failed_present.len(),
        "reads": reads.len(),
        "final_read_size": final_set.len(),
        "lost_ids": first_ids(&lost),
        "unexpected_ids": first_ids(&unexpected),
        "recovered_ids": first_ids(&recovered),
    });
    CheckResult {
        checker: "set".into(),
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

    fn add(h: &mut History, p: u64, t: u64, e: u64, kind: EventType) {
        h.op(p, t, t + 1, Op::Add { element: e }, kind, Op::Add { element: e }, None);
    }
    fn read(h: &mut History, p: u64, t: u64, elements: Vec<u64>) -> (usize, usize) {
        h.op(
            p,
            t,
            t + 2,
            Op::ReadSet { elements: None },
            OK,
            Op::ReadSet {
                elements: Some(elements),
            },
            None,
        )
    }

    #[test]
    fn all_present_is_valid_and_recovers_info() {
        let mut h = History::new();
        add(&mut h, 1, 0, 1, OK);
        add(&mut h, 2, 0, 2, Info);
        add(&mut h, 3, 0, 3, Fail);
        add(&mut h, 4, 5, 4, Info);
        read(&mut h, 5, 10, vec![1, 2]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        assert_eq!(res.figures["recovered"], 1);
        assert_eq!(res.figures["attempted"], 4);
        assert_eq!(res.figures["acknowledged"], 1);
    }

    #[test]
    fn lost_write_is_invalid() {
        let mut h = History::new();
        add(&mut h, 1, 0, 1, OK);
        add(&mut h, 1, 2, 2, OK);
        let (ri, _) = read(&mut h, 5, 10, vec![2]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Invalid);
        let a = res.anomalies.iter().find(|a| a.kind == "lost").unwrap();
        assert!(a.events.contains(&0) && a.events.contains(&ri), "{a:#?}");
        assert_eq!(res.figures["lost_ids"], json!([1]));
    }

    #[test]
    fn duplicate_and_unexpected_elements() {
        let mut h = History::new();
        add(&mut h, 1, 0, 1, OK);
        read(&mut h, 5, 10, vec![1, 1, 9]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Invalid);
        let kinds: Vec<&str> = res.anomalies.iter().map(|a| a.kind.as_str()).collect();
        assert!(
            kinds.contains(&"duplicate") && kinds.contains(&"unexpected"),
            "{kinds:?}"
        );
        assert_eq!(res.figures["unexpected_ids"], json!([9]));
    }

    #[test]
    fn stale_earlier_read() {
        let mut h = History::new();
        add(&mut h, 1, 0, 1, OK);
        read(&mut h, 2, 5, vec![]);
        // Concurrent with the add: not stale.
        add(&mut h, 1, 20, 2, OK);
        read(&mut h, 3, 20, vec![1]);
        read(&mut h, 5, 30, vec![1, 2]);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.figures["stale"], 1);
        assert_eq!(res.anomalies.len(), 1);
        assert_eq!(res.anomalies[0].kind, "stale-read");
    }

    #[test]
    fn no_final_read_is_unknown() {
        let mut h = History::new();
        add(&mut h, 1, 0, 1, OK);
        h.op(
            2,
            5,
            6,
            Op::ReadSet { elements: None },
            Fail,
            Op::ReadSet { elements: None },
            None,
        );
        assert_eq!(check(&h.events).valid, Validity::Unknown);
    }
}
