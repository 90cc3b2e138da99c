//! The three-member part of the report (`--members 3`): its metrics, summary rows and markdown
//! section. Kept apart from `report.rs` so the single-member report stays exactly as it was.

use std::fmt::Write as _;

use crate::cluster::{FailoverRun, MEMBERS};
use crate::load::PHASES_THREE;
use crate::report::{
    escape, fmt_num, median, memory_metric, phase_metric, raw_value, results_table, tally, truncate, Better, MetricDef,
    Report, Role, Sample, SummaryRow, TargetRun,
};

/// Median recovery time over one run's failover repeats. A repeat that could not be measured
/// attaches a warning (which fails rudder's target), so a median over the survivors never hides it.
fn failover_sample(run: &TargetRun, value: fn(&FailoverRun) -> Option<f64>) -> Sample {
    if run.start_error.is_some() {
        return Sample::Failed("cluster did not start".into());
    }
    if run.failover.is_empty() {
        return Sample::NotRun;
    }
    let values: Vec<f64> = run.failover.iter().filter_map(value).collect();
    let failed: Vec<String> = run
        .failover
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("repeat {}: {e}", f.repeat)))
        .collect();
    match median(&values) {
        None => Sample::Failed(failed.join("; ")),
        Some(m) => Sample::Value(
            m,
            (!failed.is_empty()).then(|| format!("{} of {} failovers failed", failed.len(), run.failover.len())),
        ),
    }
}

fn metrics() -> Vec<MetricDef> {
    let mut defs = Vec::new();
    for p in &PHASES_THREE {
        defs.push(phase_metric(
            p.id,
            p.title,
            "throughput",
            "ops/s",
            Better::Higher,
            |s| s.ops_per_sec,
        ));
        // The targets for three members are throughput and failover; latency and memory
        // are shown for context.
        let mut p99 = phase_metric(p.id, p.title, "p99", "ms", Better::Lower, |s| s.p99_ms);
        p99.role = Role::Info;
        defs.push(p99);
    }
    defs.push(memory_metric(
        "memory.rss",
        "RSS summed over the 3 members after the load phases (VmRSS)",
        Role::Info,
        |m| m.rss_mib,
    ));
    defs.push(MetricDef {
        id: "failover.recovery".into(),
        label: "failover: leader SIGKILLed to first successful write (median of repeats)".into(),
        unit: "ms",
        better: Better::Lower,
        role: Role::Target,
        sample: Box::new(|run: &TargetRun| failover_sample(run, |f| f.recovery_ms)),
    });
    defs.push(MetricDef {
        id: "failover.errors".into(),
        label: "failover: failed writes between kill and recovery (median of repeats)".into(),
        unit: "writes",
        better: Better::Lower,
        role: Role::Info,
        sample: Box::new(|run: &TargetRun| {
            failover_sample(run, |f| f.recovery_ms.is_some().then_some(f.errors as f64))
        }),
    });
    defs
}

/// Summary rows of the three-member runs (empty when none ran).
pub fn summarize(runs: &[TargetRun]) -> Vec<SummaryRow> {
    crate::report::summarize_defs(metrics(), runs, MEMBERS)
}

/// The markdown section: method, results table, raw per-round numbers and failover repeats.
pub fn section(report: &Report) -> String {
    let c = &report.config;
    let mut md = String::new();
    md.push_str("\n## Three members\n\n### Method\n\n");
    md.push_str(
        "- Each target runs as three processes (`m1`..`m3`) on loopback, on free ports in 10000-32000, each \
         with its own fresh data dir on the same disk, started with etcd's static bootstrap flags \
         (`--name mN --data-dir D --listen-client-urls/--advertise-client-urls http://127.0.0.1:C \
         --listen-peer-urls/--initial-advertise-peer-urls http://127.0.0.1:P --initial-cluster m1=...,m2=...,m3=... \
         --initial-cluster-state new --initial-cluster-token bench`). The cluster is up once every member \
         answers a linearizable get and one reports itself leader in Maintenance.Status. All six processes \
         of both targets never run at once: one target's cluster is killed before the other's starts.\n",
    );
    let _ = writeln!(
        md,
        "- Phases, {} s each: puts with 1 client / 1 connection, puts with 256 clients / 16 connections, \
         linearizable gets with 64 clients / 16 connections (same keys and values as single-member mode). \
         Connections are spread round-robin over the three members' endpoints, as clients configured with \
         every endpoint would be, starting with the leader: so the 1-connection phase talks to the leader \
         (no forwarding hop that depends on which member won the election) and 16 connections go 6/5/5. \
         Serializable gets and `etcdctl check perf` are not run in this mode.",
        c.phase_duration_s
    );
    md.push_str("- Memory: VmRSS (and VmHWM) summed over the three members right after the get phase.\n");
    let _ = writeln!(
        md,
        "- Failover, {} times per target and round: one client holding all three endpoints (`etcd-client`, \
         500 ms request timeout) puts in a closed loop; after 1 s the leader (the member whose \
         Maintenance.Status leader equals its own member id) gets SIGKILL. Recovery time is from the kill to \
         the completion of the first put *issued after* the kill that succeeds (a put in flight at the \
         kill might have been committed by the old leader, so it does not count); failed puts in between \
         are counted. The killed member is then restarted on its data dir and the cluster waited for \
         before the next repeat. The figure is the median of the repeats; a repeat with no successful \
         write within 30 s counts as failed.",
        c.failovers
    );
    md.push_str(
        "- Targets for rudder: throughput ratio rudder/etcd ≥ 1.0 in each phase, and failover recovery time \
         ≤ etcd's. p99, memory and failed writes are shown for context.\n",
    );

    md.push_str("\n### Results (three members)\n\n");
    let (met, judged) = tally(&report.summary_three);
    let _ = writeln!(md, "rudder meets **{met} of {judged}** judged three-member targets.\n");
    md.push_str(&results_table(&report.summary_three));

    let runs: Vec<&TargetRun> = report.runs.iter().filter(|r| r.members == MEMBERS).collect();
    let defs = metrics();
    let mut rounds: Vec<usize> = runs.iter().map(|r| r.round).collect();
    rounds.dedup();
    for round in rounds {
        let mut these: Vec<&TargetRun> = runs.iter().copied().filter(|r| r.round == round).collect();
        these.sort_by_key(|r| r.position);
        let names: Vec<&str> = these.iter().map(|r| r.target.name()).collect();
        let _ = writeln!(
            md,
            "\n### Round {round}, three members (order: {})\n\n| Metric | Unit | {} |\n|---|---|{}",
            names.join(" → "),
            names.join(" | "),
            "---:|".repeat(these.len())
        );
        for def in &defs {
            let values: Vec<String> = these.iter().map(|r| escape(&raw_value(r, def))).collect();
            let _ = writeln!(md, "| {} | {} | {} |", escape(&def.label), def.unit, values.join(" | "));
        }
        md.push('\n');
        for r in &these {
            for f in &r.failover {
                let line = match (f.recovery_ms, &f.error) {
                    (Some(ms), None) => format!(
                        "{} failover {}: killed leader {}, first write after {} ms, {} failed writes{}",
                        r.target,
                        f.repeat,
                        f.killed.as_deref().unwrap_or("?"),
                        fmt_num(ms),
                        f.errors,
                        f.first_error
                            .as_ref()
                            .map_or_else(String::new, |e| format!(" (first: {})", truncate(e, 160)))
                    ),
                    (_, e) => format!(
                        "{} failover {}: FAILED: {}",
                        r.target,
                        f.repeat,
                        truncate(e.as_deref().unwrap_or("no value"), 300)
                    ),
                };
                let _ = writeln!(md, "- {}", escape(&line));
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Target;

    fn failover(repeat: usize, ms: Option<f64>) -> FailoverRun {
        FailoverRun {
            repeat,
            killed: Some("m1".into()),
            recovery_ms: ms,
            errors: 2,
            first_error: None,
            error: ms.is_none().then(|| "no write succeeded".to_string()),
        }
    }

    fn run(target: Target, members: usize, recoveries: &[Option<f64>]) -> TargetRun {
        let mut r = TargetRun::new(1, 1, target);
        r.members = members;
        r.failover = (1..).zip(recoveries).map(|(i, &ms)| failover(i, ms)).collect();
        r
    }

    fn row<'a>(rows: &'a [SummaryRow], id: &str) -> &'a SummaryRow {
        rows.iter().find(|r| r.id == id).expect("row present")
    }

    #[test]
    fn failover_median_and_target() {
        let runs = vec![
            run(Target::Rudder, MEMBERS, &[Some(900.0), Some(300.0), Some(500.0)]),
            run(Target::Etcd, MEMBERS, &[Some(1000.0), Some(1200.0), Some(1100.0)]),
        ];
        let rows = summarize(&runs);
        let rec = row(&rows, "failover.recovery");
        assert_eq!(rec.cells[&Target::Rudder].median, Some(500.0));
        assert_eq!(rec.met, Some(true));
        assert_eq!(row(&rows, "failover.errors").met, None);
        // Three-member runs stay out of the single-member summary and vice versa.
        assert!(crate::report::summarize(&runs, &[]).is_empty());
        assert!(summarize(&[run(Target::Rudder, 1, &[Some(1.0)])]).is_empty());
    }

    #[test]
    fn a_failed_failover_fails_the_target() {
        let runs = vec![
            run(Target::Rudder, MEMBERS, &[Some(100.0), None, Some(100.0)]),
            run(Target::Etcd, MEMBERS, &[Some(1000.0)]),
        ];
        let rows = summarize(&runs);
        let rec = row(&rows, "failover.recovery");
        assert_eq!(rec.cells[&Target::Rudder].median, Some(100.0));
        assert_eq!(rec.met, Some(false));
        assert!(results_table(&rows).contains("1 of 3 failovers failed"));
        let all_failed = summarize(&[run(Target::Rudder, MEMBERS, &[None])]);
        assert_eq!(
            row(&all_failed, "failover.recovery").cells[&Target::Rudder].median,
            None
        );
    }
}
