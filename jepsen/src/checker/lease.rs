//! Leases: a key attached to a lease must stay while the lease is provably alive, and go once it was
//! revoked or has surely expired.
//!
//! Early expiry: a lease is alive at least until `p + ttl`, where `p` is when the leader granted or
//! renewed it — some instant after that request was invoked, so the invoke time is the safe base. A
//! read that *completed* before `invoke + ttl - slack` of some successful grant or keep-alive, after
//! the key's put completed and before any revoke was invoked, must see the key.
//!
//! Late visibility: a read that began after a successful revoke completed must not see the key; nor
//! one that began more than `ttl + election + grace` after the last grant or keep-alive that may have
//! happened (unknown outcomes count), and after any fault (a new leader extends every lease).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{nemesis_events, pair, Event, EventType, NemesisPhase, Op, Operation};

const MAX_PER_KIND: usize = 20;

/// Tolerances, in wall time of the harness.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Subtracted from a lease's guaranteed lifetime (clock rates, scheduling).
    pub slack: Duration,
    /// How long after a leader change a lease may live on (etcd refreshes leases on promotion).
    pub election: Duration,
    /// Extra allowance before a key still present counts as late.
    pub grace: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            slack: Duration::from_secs(1),
            election: Duration::from_secs(3),
            grace: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct Lease<'a> {
    /// Successful grants and keep-alives: (invoke time, ttl seconds, op).
    proofs: Vec<(u64, i64, &'a Operation)>,
    /// Latest invoke of a grant or keep-alive that may have happened (ok or unknown).
    last_extend: Option<u64>,
    ttl: i64,
    /// Revokes that may have happened: (invoke time, op).
    revokes: Vec<(u64, &'a Operation)>,
    /// Earliest completion of a successful revoke.
    revoked: Option<(u64, &'a Operation)>,
}

fn events_of(ops: &[&Operation]) -> Vec<usize> {
    let mut out: Vec<usize> = ops
        .iter()
        .flat_map(|o| std::iter::once(o.invoke.index).chain(o.complete.as_ref().map(|c| c.index)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub fn check(events: &[Event]) -> CheckResult {
    check_with(events, &LeaseConfig::default())
}

pub fn check_with(events: &[Event], config: &LeaseConfig) -> CheckResult {
    let ops = pair(events);
    let mut leases: HashMap<i64, Lease> = HashMap::new();
    // key -> (lease, put op) for puts that may have happened.
    let mut puts: HashMap<u64, Vec<(i64, &Operation)>> = HashMap::new();
    let mut reads: Vec<(&Operation, u64, bool)> = Vec::new();
    for o in &ops {
        let outcome = o.outcome();
        if outcome == EventType::Fail {
            continue;
        }
        let ok = outcome == EventType::Ok;
        match o.op() {
            Op::LeaseGrant { ttl, lease: Some(id) } if ok => {
                let l = leases.entry(*id).or_default();
                l.proofs.push((o.call_time(), *ttl, o));
                l.ttl = l.ttl.max(*ttl);
                l.last_extend = l.last_extend.max(Some(o.call_time()));
            }
            Op::LeaseKeepAlive { lease, ttl } => {
                let l = leases.entry(*lease).or_default();
                if let (true, Some(t)) = (ok, ttl) {
                    l.proofs.push((o.call_time(), *t, o));
                    l.ttl = l.ttl.max(*t);
                }
                l.last_extend = l.last_extend.max(Some(o.call_time()));
            }
            Op::LeaseRevoke { lease } => {
                let l = leases.entry(*lease).or_default();
                l.revokes.push((o.call_time(), o));
                if let (true, Some(done)) = (ok, o.return_time()) {
                    if l.revoked.is_none_or(|(t, _)| done < t) {
                        l.revoked = Some((done, o));
                    }
                }
            }
            Op::LeasePut { key, lease } => puts.entry(*key).or_default().push((*lease, o)),
            Op::LeaseRead {
                key,
                present: Some(present),
            } if ok => reads.push((o, *key, *present)),
            _ => {}
        }
    }
    // Instants at which a fault was starting, stopping or under way: elections may follow.
    let mut faults: Vec<(u64, u64)> = Vec::new();
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let end = events.iter().map(|e| e.time).max().unwrap_or(0);
    for n in nemesis_events(events) {
        if let Op::Nemesis { fault, phase, .. } = &n.op {
            match phase {
                NemesisPhase::Start => {
                    open.entry(fault.clone()).or_insert(n.time);
                }
                NemesisPhase::Stop => faults.push((open.remove(fault).unwrap_or(n.time), n.time)),
            }
        }
    }
    faults.extend(open.into_values().map(|s| (s, end)));

    let mut anomalies: Vec<Anomaly> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut report = |kind: &'static str, explanation: String, evs: Vec<usize>| {
        let n = counts.entry(kind).or_default();
        *n += 1;
        if *n <= MAX_PER_KIND {
            anomalies.push(Anomaly {
                kind: kind.into(),
                explanation,
                events: evs,
            });
        }
    };
    let slack = nanos(config.slack);
    for &(read, key, present) in &reads {
        let (call, done) = (read.call_time(), read.return_time().unwrap_or(u64::MAX));
        let Some(attached) = puts.get(&key) else { continue };
        for &(id, put) in attached {
            let Some(lease) = leases.get(&id) else { continue };
            if !present {
                // Only a put known to have completed before the read began must be visible.
                if put.outcome() != EventType::Ok || put.return_time().is_none_or(|t| t >= call) {
                    continue;
                }
                if lease.revokes.iter().any(|(t, _)| *t < done) {
                    continue;
                }
                let best = lease
                    .proofs
                    .iter()
                    .max_by_key(|(t, ttl, _)| t.saturating_add(nanos(Duration::from_secs((*ttl).max(0) as u64))));
                let Some(&(t, ttl, proof)) = best else { continue };
                let alive_until = t.saturating_add(nanos(Duration::from_secs(ttl.max(0) as u64)));
                if done.saturating_add(slack) < alive_until {
                    report(
                        "early-expiry",
                        format!(
                            "key {key} read absent (read {:.3}-{:.3} s) while lease {id} was alive until at least \
                             {:.3} s (ttl {ttl} s from a grant/keep-alive invoked at {:.3} s), never revoked before",
                            secs(call),
                            secs(done),
                            secs(alive_until),
                            secs(t)
                        ),
                        events_of(&[read, put, proof]),
                    );
                }
            } else {
                if let Some((t, revoke)) = lease.revoked.filter(|(t, _)| *t < call) {
                    report(
                        "late-visibility",
                        format!(
                            "key {key} read present at {:.3} s after lease {id} was revoked (completed {:.3} s)",
                            secs(call),
                            secs(t)
                        ),
                        events_of(&[read, put, revoke]),
                    );
                    continue;
                }
                let Some(last) = lease.last_extend else { continue };
                // A fault under way or recently over may have moved leadership, which extends leases.
                let mut base = last;
                for &(s, e) in &faults {
                    if s <= call {
                        base = base.max(e.min(call));
                    }
                }
                let limit = base
                    .saturating_add(nanos(Duration::from_secs(lease.ttl.max(0) as u64)))
                    .saturating_add(nanos(config.election))
                    .saturating_add(nanos(config.grace));
                if call > limit {
                    report(
                        "late-visibility",
                        format!(
                            "key {key} read present at {:.3} s, lease {id} (ttl {} s) last possibly renewed at {:.3} s: \
                             it should have expired by {:.3} s",
                            secs(call),
                            lease.ttl,
                            secs(base),
                            secs(limit)
                        ),
                        events_of(&[read, put]),
                    );
                }
            }
        }
    }

    let absent = reads.iter().filter(|r| !r.2).count();
    let early = counts.get("early-expiry").copied().unwrap_or(0);
    let late = counts.get("late-visibility").copied().unwrap_or(0);
    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if reads.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let summary = format!(
        "{} leases, {} reads ({absent} absent): {early} early expiries, {late} late visibilities",
        leases.len(),
        reads.len()
    );
    let figures = json!({
        "leases": leases.len(),
        "keys": puts.len(),
        "reads": reads.len(),
        "reads_absent": absent,
        "reads_present": reads.len() - absent,
        "early_expiry": early,
        "late_visibility": late,
        "slack_ms": config.slack.as_millis() as u64,
        "election_ms": config.election.as_millis() as u64,
        "grace_ms": config.grace.as_millis() as u64,
    });
    CheckResult {
        checker: "lease".into(),
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
    use EventType::{Info, Ok as OK};

    fn grant(h: &mut History, p: u64, t: u64, id: i64) {
        h.op(
            p,
            t,
            t + 10,
            Op::LeaseGrant { ttl: 3, lease: None },
            OK,
            Op::LeaseGrant {
                ttl: 3,
                lease: Some(id),
            },
            None,
        );
    }
    fn attach(h: &mut History, p: u64, t: u64, key: u64, id: i64) {
        let op = Op::LeasePut { key, lease: id };
        h.op(p, t, t + 10, op.clone(), OK, op, None);
    }
    fn keep_alive(h: &mut History, p: u64, t: u64, id: i64, kind: EventType) {
        let done = if kind == OK { Some(3) } else { None };
        let inv = Op::LeaseKeepAlive { lease: id, ttl: None };
        h.op(
            p,
            t,
            t + 10,
            inv,
            kind,
            Op::LeaseKeepAlive { lease: id, ttl: done },
            None,
        );
    }
    fn read(h: &mut History, p: u64, t: u64, key: u64, present: bool) -> (usize, usize) {
        let inv = Op::LeaseRead { key, present: None };
        h.op(
            p,
            t,
            t + 10,
            inv,
            OK,
            Op::LeaseRead {
                key,
                present: Some(present),
            },
            None,
        )
    }
    fn kinds(res: &CheckResult) -> Vec<String> {
        res.anomalies.iter().map(|a| a.kind.clone()).collect()
    }

    #[test]
    fn kept_alive_then_expired_is_valid() {
        let mut h = History::new();
        grant(&mut h, 1, 0, 7);
        attach(&mut h, 1, 20, 100, 7);
        read(&mut h, 1, 1000, 100, true);
        keep_alive(&mut h, 1, 2000, 7, OK);
        read(&mut h, 1, 4000, 100, true);
        // Expired on its own: ttl 3 s after the keep-alive at 2 s, read absent at 6 s (after 5 - 1).
        read(&mut h, 1, 6000, 100, false);
        read(&mut h, 1, 9000, 100, false);
        let res = check(&h.events);
        assert_eq!(res.valid, Validity::Valid, "{res:#?}");
    }

    #[test]
    fn early_expiry_is_found() {
        let mut h = History::new();
        grant(&mut h, 1, 0, 7);
        attach(&mut h, 1, 20, 100, 7);
        keep_alive(&mut h, 1, 2000, 7, OK);
        // Alive until >= 5 s; read absent at 3 s.
        let (ri, rc) = read(&mut h, 2, 3000, 100, false);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["early-expiry"], "{res:#?}");
        let a = &res.anomalies[0];
        assert!(a.events.contains(&ri) && a.events.contains(&rc), "{a:#?}");
        // A revoke invoked before the read completed explains it.
        let op = Op::LeaseRevoke { lease: 7 };
        h.op(3, 2990, 3200, op.clone(), Info, op, None);
        assert_eq!(check(&h.events).valid, Validity::Valid);
    }

    #[test]
    fn late_visibility_after_revoke_and_after_expiry() {
        let mut h = History::new();
        grant(&mut h, 1, 0, 7);
        attach(&mut h, 1, 20, 100, 7);
        let op = Op::LeaseRevoke { lease: 7 };
        h.op(1, 100, 110, op.clone(), OK, op, None);
        read(&mut h, 1, 200, 100, true);
        let res = check(&h.events);
        assert_eq!(kinds(&res), vec!["late-visibility"], "{res:#?}");

        let mut h = History::new();
        grant(&mut h, 1, 0, 8);
        attach(&mut h, 1, 20, 101, 8);
        // An unknown keep-alive at 1 s may have renewed it: present is fine until 1 + ttl 3 + election 3 + grace 5.
        keep_alive(&mut h, 2, 1000, 8, Info);
        read(&mut h, 1, 11_000, 101, true);
        assert_eq!(check(&h.events).valid, Validity::Valid);
        read(&mut h, 1, 13_000, 101, true);
        assert_eq!(kinds(&check(&h.events)), vec!["late-visibility"]);
        // A fault that stopped at 12 s may have extended it.
        h.nemesis(10_000, "partition", NemesisPhase::Start);
        h.nemesis(12_000, "partition", NemesisPhase::Stop);
        assert_eq!(check(&h.events).valid, Validity::Valid);
    }

    #[test]
    fn no_reads_is_unknown() {
        let mut h = History::new();
        grant(&mut h, 1, 0, 7);
        assert_eq!(check(&h.events).valid, Validity::Unknown);
    }
}
