//! The seeded fault schedule: which fault starts when and for how long. Everything random is drawn here
//! from the seed, so a plan is reproducible; only "the leader" is resolved when the fault starts.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{DropVia, Fault, NemesisKind, PartitionScheme, Targets};

/// The shape of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// No fault before this: the workload gets going first.
    pub initial_quiet: Duration,
    pub min_fault: Duration,
    pub max_fault: Duration,
    /// Quiet time between one fault's end and the next one's start.
    pub gap: Duration,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            initial_quiet: Duration::from_secs(5),
            min_fault: Duration::from_secs(5),
            max_fault: Duration::from_secs(10),
            gap: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// From the start of the nemesis.
    pub at: Duration,
    pub duration: Duration,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub seed: u64,
    pub steps: Vec<Step>,
    /// When the final heal starts (the end of the last fault; 0 without faults).
    pub heal_at: Duration,
}

/// A plan with the default shape: 5-10 s faults separated by 5 s of quiet, none in the first 5 s, all
/// over by `time_limit`, the kinds taken in a shuffled round-robin so each appears.
pub fn plan(kinds: &[NemesisKind], nodes: usize, time_limit: Duration, seed: u64) -> Plan {
    plan_with(kinds, nodes, time_limit, seed, &PlanOptions::default())
}

pub fn plan_with(kinds: &[NemesisKind], nodes: usize, time_limit: Duration, seed: u64, opts: &PlanOptions) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds: Vec<NemesisKind> = kinds.iter().copied().filter(|k| *k != NemesisKind::None).collect();
    kinds.sort();
    kinds.dedup();
    let mut steps = Vec::new();
    let mut t = opts.initial_quiet;
    let mut bag: Vec<NemesisKind> = Vec::new();
    let min = opts.min_fault.as_millis() as u64;
    let max = (opts.max_fault.as_millis() as u64).max(min);
    while !kinds.is_empty() {
        let duration = Duration::from_millis(rng.random_range(min..=max));
        if t + duration > time_limit {
            break;
        }
        if bag.is_empty() {
            bag = kinds.clone();
            bag.shuffle(&mut rng);
        }
        let Some(kind) = bag.pop() else { break };
        steps.push(Step {
            at: t,
            duration,
            fault: fault(kind, nodes, &mut rng),
        });
        t += duration + opts.gap;
    }
    // A short run still gets one fault, shortened to fit, rather than silently none.
    let room = time_limit.saturating_sub(opts.initial_quiet);
    if steps.is_empty() && !kinds.is_empty() && room >= Duration::from_secs(2) {
        let kind = kinds[rng.random_range(0..kinds.len())];
        steps.push(Step {
            at: opts.initial_quiet,
            duration: room.min(opts.max_fault),
            fault: fault(kind, nodes, &mut rng),
        });
    }
    let heal_at = steps.last().map_or(Duration::ZERO, |s| s.at + s.duration);
    Plan { seed, steps, heal_at }
}

fn pick(n: usize, k: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    all.truncate(k);
    all.sort();
    all
}

fn targets(n: usize, rng: &mut StdRng) -> Targets {
    let minority = (n.saturating_sub(1)) / 2;
    match rng.random_range(0..4) {
        0 => Targets::One(rng.random_range(0..n.max(1))),
        1 => Targets::Leader,
        2 if minority > 0 => Targets::Minority(pick(n, minority, rng)),
        2 => Targets::One(rng.random_range(0..n.max(1))),
        _ => Targets::All,
    }
}

fn fault(kind: NemesisKind, n: usize, rng: &mut StdRng) -> Fault {
    match kind {
        NemesisKind::None | NemesisKind::Kill => Fault::Kill(targets(n, rng)),
        NemesisKind::Pause => Fault::Pause(targets(n, rng)),
        NemesisKind::Partition => Fault::Partition(partition(n, rng)),
        NemesisKind::Delay => {
            let delay_ms = rng.random_range(50..=200);
            Fault::Delay {
                delay_ms,
                jitter_ms: delay_ms / 4,
            }
        }
        NemesisKind::Drop => {
            let via = if rng.random_bool(0.5) {
                DropVia::Proxy
            } else {
                DropVia::Packets
            };
            Fault::Drop { probability: 0.2, via }
        }
        NemesisKind::Clock => {
            // Clock faults on "all" nodes shift everyone alike and prove little: one node or a minority.
            let targets = match targets(n, rng) {
                Targets::All => Targets::One(rng.random_range(0..n.max(1))),
                t => t,
            };
            let sign = if rng.random_bool(0.5) { 1 } else { -1 };
            if rng.random_bool(0.5) {
                Fault::ClockBump {
                    targets,
                    offset_ms: sign * rng.random_range(1_000..=60_000),
                }
            } else {
                Fault::ClockStrobe {
                    targets,
                    delta_ms: sign * rng.random_range(200..=5_000),
                    period_ms: rng.random_range(50..=500),
                }
            }
        }
        NemesisKind::Membership => Fault::Membership(if rng.random_bool(0.5) {
            Targets::Leader
        } else {
            Targets::One(rng.random_range(0..n.max(1)))
        }),
        NemesisKind::Compaction => Fault::Compaction,
        NemesisKind::Quota => Fault::Quota,
    }
}

fn partition(n: usize, rng: &mut StdRng) -> PartitionScheme {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    match rng.random_range(0..5) {
        0 => PartitionScheme::IsolateOne(order.first().copied().unwrap_or(0)),
        1 => {
            let mut minority = order[..n.saturating_sub(1) / 2].to_vec();
            minority.sort();
            PartitionScheme::MajorityMinority { minority }
        }
        // A ring of 3 is the full graph: with fewer than 5 nodes, a bridge instead.
        2 if n >= 5 => PartitionScheme::MajoritiesRing { order },
        2 | 3 => PartitionScheme::Bridge { order },
        _ => PartitionScheme::IsolateLeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_still_gets_a_fault() {
        let p = plan(&[NemesisKind::Kill], 3, Duration::from_secs(12), 1);
        assert_eq!(p.steps.len(), 1);
        let s = &p.steps[0];
        assert!(s.at + s.duration <= Duration::from_secs(12), "{s:?}");
        assert!(plan(&[NemesisKind::Kill], 3, Duration::from_secs(6), 1)
            .steps
            .is_empty());
    }

    #[test]
    fn plans_are_deterministic_and_fit_the_time_limit() {
        let kinds = NemesisKind::all_faults();
        let limit = Duration::from_secs(300);
        let a = plan(&kinds, 5, limit, 42);
        assert_eq!(a, plan(&kinds, 5, limit, 42));
        assert_ne!(a, plan(&kinds, 5, limit, 43));
        assert!(a.steps.len() >= 15, "{}", a.steps.len());
        let mut end = Duration::ZERO;
        for s in &a.steps {
            assert!(s.at >= end + Duration::from_secs(5), "gap before {s:?}");
            assert!(s.duration >= Duration::from_secs(5) && s.duration <= Duration::from_secs(10));
            end = s.at + s.duration;
        }
        assert!(end <= limit);
        assert_eq!(a.heal_at, end);
        // Every kind shows up in a long enough plan.
        for k in kinds {
            assert!(a.steps.iter().any(|s| s.fault.kind() == k), "{k:?} missing");
        }
        assert!(plan(&[NemesisKind::None], 3, limit, 1).steps.is_empty());
    }

    #[test]
    fn three_nodes_never_get_a_ring() {
        let p = plan(&[NemesisKind::Partition], 3, Duration::from_secs(2000), 7);
        assert!(p
            .steps
            .iter()
            .all(|s| !matches!(s.fault, Fault::Partition(PartitionScheme::MajoritiesRing { .. }))));
        assert!(p
            .steps
            .iter()
            .any(|s| matches!(s.fault, Fault::Partition(PartitionScheme::Bridge { .. }))));
    }
}
