//! Watch guarantees, as etcd's robustness tests state them, over what every watcher received:
//! ordered, unique, atomic, reliable (no gaps in a watcher's covered window), resumable, bookmarkable,
//! prev_kv, compaction cancels only when due, and agreement between watchers and with the writes the
//! history acknowledged.
//!
//! A watcher's covered window grows from its start revision to the last revision it received (events,
//! or progress notifications, which promise everything up to their revision). A resumption continues
//! the window; a cancel because of compaction excuses what was compacted. Every revision known to
//! exist (seen by any watcher, or acknowledged to a writer) inside a window must have been delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::json;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{pair, Event, EventType, Op, WatchEventType, WatchRecord, WatchRecordKind};

const MAX_PER_KIND: usize = 20;
/// Revisions listed per anomaly.
const SHOW: usize = 10;

/// What one revision carried, as one watcher saw it: (key, type, value), sorted.
type RevEvents<'a> = Vec<(&'a str, WatchEventType, Option<&'a str>)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cover {
    /// Up to a received event.
    Event,
    /// Up to the first event after a resumption.
    Resume,
    /// Up to a progress notification.
    Progress,
}

struct Found {
    list: Vec<Anomaly>,
    counts: BTreeMap<&'static str, usize>,
}

impl Found {
    fn add(&mut self, kind: &'static str, explanation: String, events: Vec<usize>) {
        let n = self.counts.entry(kind).or_default();
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

/// One watcher's view after the scan.
#[derive(Default)]
struct Scan<'a> {
    seen_revs: BTreeSet<i64>,
    per_rev: BTreeMap<i64, RevEvents<'a>>,
    /// (after, up to and including, how) — revisions the watcher promised to have delivered.
    covered: Vec<(i64, i64, Cover)>,
    events: usize,
    resumptions: usize,
}

/// An acknowledged write: its key and value when the op says them.
struct Ack {
    key: Option<String>,
    value: Option<String>,
    events: Vec<usize>,
}

fn acknowledged(events: &[Event], prefix: &str) -> BTreeMap<i64, Vec<Ack>> {
    let mut out: BTreeMap<i64, Vec<Ack>> = BTreeMap::new();
    for o in pair(events) {
        let Some(c) = o.complete.as_ref().filter(|c| c.kind == EventType::Ok) else {
            continue;
        };
        let Some(rev) = c.revision.filter(|r| *r > 0) else {
            continue;
        };
        let (key, value) = match &c.op {
            Op::Write { key, value } | Op::KCreate { key, value } | Op::KUpdate { key, value, .. } => {
                (Some(key.to_string()), Some(value.to_string()))
            }
            Op::Cas { key, to, .. } => (Some(key.to_string()), Some(to.to_string())),
            Op::Add { element } => (Some(element.to_string()), Some("1".to_string())),
            Op::LeasePut { key, .. } => (Some(key.to_string()), Some("1".to_string())),
            // Only transactions that wrote something moved the revision.
            Op::Txn { mops } if mops.iter().any(|m| matches!(m, crate::history::Mop::Append { .. })) => (None, None),
            _ => continue,
        };
        out.entry(rev).or_default().push(Ack {
            key: key.map(|k| format!("{prefix}{k}")),
            value,
            events: vec![o.invoke.index, c.index],
        });
    }
    out
}

fn scan_watcher<'a>(watcher: u64, records: &[&'a WatchRecord], found: &mut Found) -> Scan<'a> {
    let mut s = Scan::default();
    let mut seen: HashSet<(&str, i64)> = HashSet::new();
    let mut response_of: HashMap<i64, usize> = HashMap::new();
    let mut last_value: HashMap<&str, Option<&str>> = HashMap::new();
    let mut last_rev: Option<i64> = None;
    let mut last_progress = i64::MIN;
    let mut cursor: Option<i64> = None;
    let mut started = false;
    let mut resuming = false;
    let mut next_start = 0i64;
    let mut session_start = 0i64;
    let mut session_last: Option<i64> = None;
    let mut compacted_to: Option<i64> = None;
    let mut response = 0usize;
    for r in records {
        match &r.kind {
            WatchRecordKind::Start { start_revision } => {
                let start = *start_revision;
                if !started {
                    started = true;
                    cursor = (start > 0).then(|| start - 1);
                    next_start = start;
                } else {
                    s.resumptions += 1;
                    resuming = true;
                    if start != next_start {
                        found.add(
                            "bad-resume",
                            format!("watcher {watcher} resumed from revision {start}, expected {next_start}"),
                            Vec::new(),
                        );
                    }
                    if compacted_to.take().is_some() || start > next_start {
                        // Compacted revisions are excused; a skip was just reported.
                        cursor = Some(start - 1);
                    }
                    next_start = next_start.max(start);
                }
                session_start = start;
                session_last = None;
            }
            WatchRecordKind::Events { events, .. } => {
                response += 1;
                for e in events {
                    let rev = e.mod_revision;
                    s.events += 1;
                    if !seen.insert((e.key.as_str(), rev)) {
                        found.add(
                            "duplicate",
                            format!("watcher {watcher} received {} at revision {rev} twice", e.key),
                            Vec::new(),
                        );
                        continue;
                    }
                    match last_rev {
                        Some(last) if rev < last => found.add(
                            "out-of-order",
                            format!("watcher {watcher} received revision {rev} after revision {last}"),
                            Vec::new(),
                        ),
                        Some(last) if rev == last && response_of.get(&rev) != Some(&response) => found.add(
                            "non-atomic",
                            format!("watcher {watcher} received the events of revision {rev} in several responses"),
                            Vec::new(),
                        ),
                        _ => {}
                    }
                    if rev <= last_progress {
                        found.add(
                            "bad-bookmark",
                            format!(
                                "watcher {watcher} received revision {rev} after a progress notification at {last_progress}"
                            ),
                            Vec::new(),
                        );
                    }
                    let value = e.value.as_deref();
                    if let (Some(prev), Some(Some(before))) = (e.prev_value.as_deref(), last_value.get(e.key.as_str()))
                    {
                        if prev != *before {
                            found.add(
                                "bad-prev-kv",
                                format!(
                                    "watcher {watcher}: {} at revision {rev} has prev value {prev:?}, but the previous \
                                     event on that key had {before:?}",
                                    e.key
                                ),
                                Vec::new(),
                            );
                        }
                    } else if let (Some(prev), Some(None)) = (e.prev_value.as_deref(), last_value.get(e.key.as_str())) {
                        found.add(
                            "bad-prev-kv",
                            format!(
                                "watcher {watcher}: {} at revision {rev} has prev value {prev:?} after a delete",
                                e.key
                            ),
                            Vec::new(),
                        );
                    }
                    last_value.insert(e.key.as_str(), if e.kind == WatchEventType::Put { value } else { None });
                    s.per_rev.entry(rev).or_default().push((e.key.as_str(), e.kind, value));
                    response_of.entry(rev).or_insert(response);
                    s.seen_revs.insert(rev);
                    let from = cursor.unwrap_or(rev - 1);
                    if rev > from {
                        s.covered
                            .push((from, rev, if resuming { Cover::Resume } else { Cover::Event }));
                        cursor = Some(rev);
                    }
                    resuming = false;
                    last_rev = Some(last_rev.map_or(rev, |l| l.max(rev)));
                    session_last = Some(session_last.map_or(rev, |l| l.max(rev)));
                    next_start = next_start.max(rev + 1);
                }
            }
            WatchRecordKind::Progress { revision } => {
                let rev = *revision;
                match cursor {
                    Some(c) if rev > c => {
                        s.covered.push((c, rev, Cover::Progress));
                        cursor = Some(rev);
                    }
                    Some(_) => {}
                    // With no known start, a bookmark only says where the window begins.
                    None => cursor = Some(rev),
                }
                last_progress = last_progress.max(rev);
            }
            WatchRecordKind::Canceled {
                compact_revision,
                reason,
            } => {
                let compact = *compact_revision;
                if compact > 0 {
                    let position = session_last.map_or(session_start, |l| (l + 1).max(session_start));
                    if position > compact {
                        found.add(
                            "bad-compaction-cancel",
                            format!(
                                "watcher {watcher} was canceled for compaction at {compact} ({reason}) although it was \
                                 at revision {position}"
                            ),
                            Vec::new(),
                        );
                    }
                    compacted_to = Some(compact);
                    next_start = next_start.max(compact);
                    // What came before the compaction may be gone: prev values restart.
                    last_value.clear();
                }
            }
            WatchRecordKind::Disconnected { .. } => {}
        }
    }
    for list in s.per_rev.values_mut() {
        list.sort_by_key(|(k, kind, v)| (*k, *kind == WatchEventType::Put, *v));
    }
    s
}

pub fn check(events: &[Event], watches: &[WatchRecord], prefix: &str) -> CheckResult {
    let mut found = Found {
        list: Vec::new(),
        counts: BTreeMap::new(),
    };
    let mut by_watcher: BTreeMap<u64, Vec<&WatchRecord>> = BTreeMap::new();
    for w in watches {
        by_watcher.entry(w.watcher).or_default().push(w);
    }
    if by_watcher.is_empty() {
        return CheckResult {
            checker: "watch".into(),
            valid: Validity::Unknown,
            summary: "no watch records".into(),
            figures: json!({ "watchers": 0 }),
            anomalies: Vec::new(),
        };
    }
    let scans: BTreeMap<u64, Scan> = by_watcher
        .iter()
        .map(|(w, recs)| (*w, scan_watcher(*w, recs, &mut found)))
        .collect();
    let acks = acknowledged(events, prefix);
    let ack_events = |rev: i64| -> Vec<usize> {
        acks.get(&rev)
            .map(|v| v.iter().flat_map(|a| a.events.clone()).collect())
            .unwrap_or_default()
    };

    // Every revision known to exist.
    let mut known: BTreeSet<i64> = acks.keys().copied().collect();
    for s in scans.values() {
        known.extend(s.seen_revs.iter().copied());
    }

    // Reliable: no known revision missing inside a covered window.
    for (w, s) in &scans {
        let mut missing: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
        for &(after, upto, how) in &s.covered {
            for &rev in known.range(after + 1..=upto) {
                if !s.seen_revs.contains(&rev) {
                    let kind = match how {
                        Cover::Event => "gap",
                        Cover::Resume => "bad-resume",
                        Cover::Progress => "bad-bookmark",
                    };
                    missing.entry(kind).or_default().push(rev);
                }
            }
        }
        for (kind, revs) in missing {
            let shown: Vec<String> = revs.iter().take(SHOW).map(|r| r.to_string()).collect();
            let what = match kind {
                "gap" => "inside the window it received",
                "bad-resume" => "across a resumption",
                _ => "although a progress notification covered them",
            };
            found.add(
                kind,
                format!(
                    "watcher {w} missed {} revisions {what}: {}",
                    revs.len(),
                    shown.join(", ")
                ),
                revs.iter().take(SHOW).flat_map(|r| ack_events(*r)).collect(),
            );
        }
    }

    // Agreement: every watcher that saw a revision saw the same events.
    let mut revisions: BTreeMap<i64, Vec<(u64, &RevEvents)>> = BTreeMap::new();
    for (w, s) in &scans {
        for (rev, evs) in &s.per_rev {
            revisions.entry(*rev).or_default().push((*w, evs));
        }
    }
    for (rev, views) in &revisions {
        let Some(&(w0, reference)) = views.first() else {
            continue;
        };
        let differing: Vec<u64> = views.iter().filter(|(_, v)| *v != reference).map(|(w, _)| *w).collect();
        if !differing.is_empty() {
            found.add(
                "disagreement",
                format!("revision {rev}: watcher {w0} saw {reference:?}, watchers {differing:?} saw otherwise"),
                ack_events(*rev),
            );
        }
    }

    // Acknowledged writes appear at their revision.
    for (rev, list) in &acks {
        let Some(views) = revisions.get(rev) else { continue };
        for a in list {
            let Some(key) = a.key.as_deref() else { continue };
            let wrong: Vec<u64> = views
                .iter()
                .filter(|(_, evs)| {
                    !evs.iter().any(|(k, kind, v)| {
                        *k == key && *kind == WatchEventType::Put && (a.value.is_none() || *v == a.value.as_deref())
                    })
                })
                .map(|(w, _)| *w)
                .collect();
            if !wrong.is_empty() {
                found.add(
                    "inconsistent",
                    format!(
                        "a write of {key}={} acknowledged at revision {rev} is not what watchers {wrong:?} saw there",
                        a.value.as_deref().unwrap_or("?")
                    ),
                    a.events.clone(),
                );
            }
        }
    }

    let total_events: usize = scans.values().map(|s| s.events).sum();
    let resumptions: usize = scans.values().map(|s| s.resumptions).sum();
    let count = |f: fn(&WatchRecordKind) -> bool| watches.iter().filter(|w| f(&w.kind)).count();
    let valid = if found.counts.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = if found.counts.is_empty() {
        format!(
            "{} watchers, {total_events} events over {} revisions, {resumptions} resumptions: no anomalies",
            scans.len(),
            known.len()
        )
    } else {
        let parts: Vec<String> = found.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!("{} watchers: {}", scans.len(), parts.join(", "))
    };
    let figures = json!({
        "watchers": scans.len(),
        "events": total_events,
        "revisions": known.len(),
        "acknowledged_writes": acks.values().map(Vec::len).sum::<usize>(),
        "resumptions": resumptions,
        "progress_notifications": count(|k| matches!(k, WatchRecordKind::Progress { .. })),
        "cancellations": count(|k| matches!(k, WatchRecordKind::Canceled { .. })),
        "anomalies": found.counts,
    });
    CheckResult {
        checker: "watch".into(),
        valid,
        summary,
        figures,
        anomalies: found.list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::{events as evs, put, wrec, History};
    use WatchRecordKind::{Canceled, Disconnected, Progress, Start};

    const P: &str = "/w/";

    /// Writes of key k = value v at revision r, for r in 2..=n, and the watcher records of a watcher
    /// that saw all of them one per response.
    fn writes(n: i64) -> History {
        let mut h = History::new();
        for r in 2..=n {
            let op = Op::Write {
                key: (r % 3) as u64,
                value: r as u64 * 10,
            };
            h.op(
                1,
                r as u64 * 10,
                r as u64 * 10 + 5,
                op.clone(),
                EventType::Ok,
                op,
                Some(r),
            );
        }
        h
    }
    fn ev(r: i64) -> crate::history::WatchEvent {
        put(&format!("{P}{}", r % 3), &(r * 10).to_string(), r, None)
    }
    fn clean(watcher: u64, revs: std::ops::RangeInclusive<i64>) -> Vec<WatchRecord> {
        let mut out = vec![wrec(
            watcher,
            0,
            Start {
                start_revision: *revs.start(),
            },
        )];
        out.extend(revs.map(|r| wrec(watcher, r as u64 * 10 + 6, evs(r, vec![ev(r)]))));
        out
    }
    fn kinds(res: &CheckResult) -> Vec<String> {
        res.anomalies.iter().map(|a| a.kind.clone()).collect()
    }

    #[test]
    fn clean_watchers_are_valid() {
        let h = writes(8);
        let mut w = clean(1, 2..=8);
        w.extend(clean(2, 2..=8));
        // A watcher that disconnects and resumes where it left off, with a progress notification.
        let mut w3 = vec![wrec(3, 0, Start { start_revision: 2 })];
        w3.extend((2..=4).map(|r| wrec(3, 50, evs(r, vec![ev(r)]))));
        w3.push(wrec(3, 51, Progress { revision: 4 }));
        w3.push(wrec(3, 52, Disconnected { error: "reset".into() }));
        w3.push(wrec(3, 53, Start { start_revision: 5 }));
        w3.extend((5..=8).map(|r| wrec(3, 90, evs(r, vec![ev(r)]))));
        w.extend(w3);
        let res = check(&h.events, &w, P);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        assert_eq!(res.figures["resumptions"], 1);
        assert_eq!(res.figures["revisions"], 7);
    }

    #[test]
    fn gap_is_found_even_when_no_watcher_saw_the_revision() {
        let h = writes(6);
        let mut w = clean(1, 2..=3);
        w.extend((5..=6).map(|r| wrec(1, 70, evs(r, vec![ev(r)]))));
        let res = check(&h.events, &w, P);
        assert_eq!(kinds(&res), vec!["gap"], "{res:#?}");
        // The write at revision 4 is named by its events.
        assert_eq!(res.anomalies[0].events, vec![4, 5]);
    }

    #[test]
    fn out_of_order_and_duplicate() {
        let h = writes(4);
        let w = vec![
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![ev(2)])),
            wrec(1, 2, evs(4, vec![ev(4)])),
            wrec(1, 3, evs(3, vec![ev(3)])),
            wrec(1, 4, evs(4, vec![ev(4)])),
        ];
        let res = check(&h.events, &w, P);
        assert_eq!(kinds(&res), vec!["out-of-order", "duplicate"], "{res:#?}");
    }

    #[test]
    fn non_atomic_revision() {
        let mut h = History::new();
        let a = put(&format!("{P}1"), "1", 2, None);
        let b = put(&format!("{P}2"), "2", 2, None);
        h.op(
            1,
            0,
            1,
            Op::Write { key: 9, value: 9 },
            EventType::Fail,
            Op::Write { key: 9, value: 9 },
            None,
        );
        let w = vec![
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![a.clone()])),
            wrec(1, 2, evs(2, vec![b.clone()])),
            wrec(2, 0, Start { start_revision: 2 }),
            wrec(2, 1, evs(2, vec![a, b])),
        ];
        let res = check(&h.events, &w, P);
        assert_eq!(kinds(&res), vec!["non-atomic"], "{res:#?}");
    }

    #[test]
    fn bad_resume_skips_revisions() {
        let h = writes(6);
        let w = vec![
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![ev(2)])),
            wrec(1, 2, Disconnected { error: "x".into() }),
            wrec(1, 3, Start { start_revision: 4 }),
            wrec(1, 4, evs(4, vec![ev(4)])),
        ];
        let res = check(&h.events, &w, P);
        assert_eq!(kinds(&res), vec!["bad-resume"], "{res:#?}");
        // Resuming correctly but then missing the next revision is a resume failure too.
        let w = vec![
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![ev(2)])),
            wrec(1, 2, Disconnected { error: "x".into() }),
            wrec(1, 3, Start { start_revision: 3 }),
            wrec(1, 4, evs(4, vec![ev(4)])),
        ];
        let res = check(&h.events, &w, P);
        assert_eq!(kinds(&res), vec!["bad-resume"], "{res:#?}");
        assert!(res.anomalies[0].explanation.contains("across a resumption"));
    }

    #[test]
    fn compaction_cancel_excuses_compacted_revisions_only_when_due() {
        let h = writes(8);
        let mut w = clean(2, 2..=8);
        w.extend([
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![ev(2)])),
            wrec(
                1,
                2,
                Canceled {
                    compact_revision: 5,
                    reason: "compacted".into(),
                },
            ),
            wrec(1, 3, Start { start_revision: 5 }),
            wrec(1, 4, evs(5, vec![ev(5)])),
        ]);
        w.extend((6..=8).map(|r| wrec(1, 90, evs(r, vec![ev(r)]))));
        let res = check(&h.events, &w, P);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
        // Canceled for a compaction below where it already was.
        let w = vec![
            wrec(1, 0, Start { start_revision: 2 }),
            wrec(1, 1, evs(2, vec![ev(2)])),
            wrec(1, 1, evs(3, vec![ev(3)])),
            wrec(
                1,
                2,
                Canceled {
                    compact_revision: 2,
                    reason: "compacted".into(),
                },
            ),
        ];
        let res = check(&writes(3).events, &w, P);
        assert_eq!(kinds(&res), vec!["bad-compaction-cancel"], "{res:#?}");
    }

    #[test]
    fn bookmark_disagreement_prev_kv_and_inconsistent() {
        let h = writes(5);
        let mut w = clean(1, 2..=5);
        // Watcher 2: a progress at 3 that skipped revision 3, then a different value at 5.
        let mut bad5 = ev(5);
        bad5.value = Some("999".into());
        // Key 2 was last seen at revision 2 with "20", so a prev value of "21" is wrong.
        bad5.prev_value = Some("21".into());
        w.extend([
            wrec(2, 0, Start { start_revision: 2 }),
            wrec(2, 1, evs(2, vec![ev(2)])),
            wrec(2, 2, Progress { revision: 3 }),
            wrec(2, 3, evs(4, vec![ev(4)])),
            wrec(2, 4, evs(5, vec![bad5])),
        ]);
        let res = check(&h.events, &w, P);
        let k = kinds(&res);
        for want in ["bad-bookmark", "disagreement", "bad-prev-kv", "inconsistent"] {
            assert!(k.contains(&want.to_string()), "{want} missing from {k:?}");
        }
        assert!(!k.contains(&"gap".to_string()), "{k:?}");
    }
}
