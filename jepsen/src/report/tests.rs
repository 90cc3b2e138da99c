use std::time::Instant;

use super::*;
use crate::checker::Anomaly;
use crate::history::{WatchRecordKind, NEMESIS_PROCESS};

const MS: u64 = 1_000_000;

fn event(time_ms: u64, process: u64, kind: EventType, op: Op, node: Option<usize>) -> Event {
    Event {
        index: 0,
        time: time_ms * MS,
        process,
        kind,
        op,
        node,
        revision: None,
        error: None,
    }
}

fn nemesis(time_ms: u64, fault: &str, phase: NemesisPhase, detail: &str) -> Event {
    let op = Op::Nemesis {
        fault: fault.into(),
        phase,
        detail: detail.into(),
    };
    event(time_ms, NEMESIS_PROCESS, EventType::Info, op, None)
}

/// Sorts by time (stable, so an op's invoke stays before its completion) and numbers the events.
fn finish(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| e.time);
    for (i, e) in events.iter_mut().enumerate() {
        e.index = i;
    }
    events
}

/// A register workload as a cluster under faults would produce it: `conc` workers spread over 3 nodes,
/// node 0 partitioned away for 5 s of every 20 (its clients time out with `info` and take new process
/// ids), node 2 killed for 3 s of every 20 (its clients fail fast). Deterministic for a seed.
fn simulate(seconds: u64, conc: u64, seed: u64) -> Vec<Event> {
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |n: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % n.max(1)
    };
    let end = seconds * 1000;
    let partitioned = |t: u64| (5_000..10_000).contains(&(t % 20_000));
    let killed = |t: u64| (13_000..16_000).contains(&(t % 20_000));
    let mut events = Vec::new();
    let mut value = 0u64;
    let mut next_process = conc;
    for w in 0..conc {
        let node = (w % 3) as usize;
        let mut process = w;
        let mut t = next(20);
        while t < end {
            value += 1;
            let key = next(5);
            let (inv, done) = match next(3) {
                0 => (
                    Op::Read { key, value: None },
                    Op::Read {
                        key,
                        value: Some(value / 2),
                    },
                ),
                1 => (Op::Write { key, value }, Op::Write { key, value }),
                _ => (
                    Op::Cas {
                        key,
                        from: value / 3,
                        to: value,
                    },
                    Op::Cas {
                        key,
                        from: value / 3,
                        to: value,
                    },
                ),
            };
            let is_cas = matches!(inv, Op::Cas { .. });
            events.push(event(t, process, EventType::Invoke, inv.clone(), Some(node)));
            if t + 1500 >= end && w == 0 {
                // The run ends with this one in flight: no completion at all.
                break;
            }
            let c = if node == 0 && partitioned(t) {
                let mut c = event(t + 1000, process, EventType::Info, inv, Some(node));
                c.error = Some("deadline exceeded".into());
                c
            } else if node == 2 && killed(t) {
                let mut c = event(t + 1 + next(3), process, EventType::Fail, inv, Some(node));
                c.error = Some("transport error: connection refused".into());
                c
            } else if is_cas && next(4) == 0 {
                event(t + 2 + next(15), process, EventType::Fail, inv, Some(node))
            } else {
                let slow = if next(50) == 0 { 80 + next(200) } else { 0 };
                let mut c = event(t + 2 + next(12) + slow, process, EventType::Ok, done, Some(node));
                c.revision = Some(value as i64);
                c
            };
            let kind = c.kind;
            t = c.time / MS + 5 + next(30);
            events.push(c);
            if kind == EventType::Info {
                process = next_process;
                next_process += 1;
            }
        }
    }
    let mut s = 0;
    while s * 1000 < end {
        events.push(nemesis(
            s * 1000 + 5_000,
            "partition",
            NemesisPhase::Start,
            "node 0 isolated from 1, 2",
        ));
        events.push(nemesis(s * 1000 + 10_000, "partition", NemesisPhase::Stop, "healed"));
        events.push(nemesis(
            s * 1000 + 13_000,
            "kill",
            NemesisPhase::Start,
            "SIGKILL node 2",
        ));
        events.push(nemesis(
            s * 1000 + 16_000,
            "kill",
            NemesisPhase::Stop,
            "node 2 restarted",
        ));
        s += 20;
    }
    events.retain(|e| e.time < end * MS + 2000 * MS);
    finish(events)
}

fn info(name: &str) -> RunInfo {
    RunInfo {
        name: name.into(),
        db: "rudder".into(),
        nodes: 3,
        workload: "register".into(),
        nemesis: "partition,kill".into(),
        seed: 7,
        time_limit_s: 20,
        started: "2025-01-01T12:00:00Z".into(),
        duration_s: 23.4,
        exit_code: 1,
        verdict: None,
        extra: serde_json::json!({"concurrency": 6, "rate": 150.0, "bug": "stale-read <b>"}),
    }
}

/// Picks events for a fake stale read: an ok read on node 1 and the write before it.
fn named(events: &[Event]) -> Vec<usize> {
    let ok = |e: &&Event| e.kind == EventType::Ok && e.node == Some(1);
    let Some(read) = events
        .iter()
        .filter(ok)
        .find(|e| matches!(e.op, Op::Read { .. }) && e.time > 12_000 * MS)
    else {
        return Vec::new();
    };
    let write = events
        .iter()
        .rev()
        .filter(ok)
        .find(|e| matches!(e.op, Op::Write { .. }) && e.time + 300 * MS < read.time);
    let invoke = events[..read.index].iter().rev().find(|e| e.process == read.process);
    write.into_iter().chain(invoke).chain([read]).map(|e| e.index).collect()
}

fn results(events: &[Event]) -> Vec<CheckResult> {
    vec![
        CheckResult {
            checker: "linearizable".into(),
            valid: Validity::Invalid,
            summary: "1 stale read on key 3".into(),
            figures: serde_json::json!({"ops": 1200, "keys": 5, "search_ms": 12.5, "per_key": {"0": "valid"}}),
            anomalies: vec![Anomaly {
                kind: "stale-read".into(),
                explanation: "read returned a value older than a write that completed before the read began".into(),
                events: named(events),
            }],
        },
        CheckResult {
            checker: "timeline-sanity".into(),
            valid: Validity::Valid,
            summary: "every op completed once".into(),
            figures: serde_json::Value::Null,
            anomalies: vec![],
        },
    ]
}

fn watches() -> Vec<WatchRecord> {
    let rec = |time_ms: u64, node, kind| WatchRecord {
        watcher: 0,
        node,
        time: time_ms * MS,
        kind,
    };
    vec![
        rec(10, 1, WatchRecordKind::Start { start_revision: 0 }),
        rec(
            6_000,
            0,
            WatchRecordKind::Disconnected {
                error: "stream <reset>".into(),
            },
        ),
        rec(6_100, 2, WatchRecordKind::Start { start_revision: 41 }),
        rec(7_000, 2, WatchRecordKind::Progress { revision: 50 }),
    ]
}

/// A small history with every outcome, a fault window and an error that tries to inject markup.
fn tiny() -> (Vec<Event>, Vec<CheckResult>) {
    let mut fail = event(40, 1, EventType::Fail, Op::Write { key: 1, value: 2 }, Some(1));
    fail.error = Some("<script>alert(1)</script>".into());
    let mut ok = event(30, 0, EventType::Ok, Op::Read { key: 1, value: Some(1) }, Some(0));
    ok.revision = Some(9);
    let events = finish(vec![
        event(10, 0, EventType::Invoke, Op::Read { key: 1, value: None }, Some(0)),
        event(12, 1, EventType::Invoke, Op::Write { key: 1, value: 2 }, Some(1)),
        nemesis(20, "partition", NemesisPhase::Start, "n0 | n1 n2"),
        ok,
        fail,
        event(50, 2, EventType::Invoke, Op::Cas { key: 1, from: 1, to: 3 }, Some(2)),
        event(60, 2, EventType::Info, Op::Cas { key: 1, from: 1, to: 3 }, Some(2)),
        nemesis(70, "partition", NemesisPhase::Stop, ""),
        event(80, 3, EventType::Invoke, Op::Add { element: 5 }, None),
    ]);
    let results = vec![CheckResult {
        checker: "linearizable".into(),
        valid: Validity::Invalid,
        summary: "nonlinearizable read".into(),
        figures: serde_json::json!({"ops": 4}),
        anomalies: vec![Anomaly {
            kind: "stale-read".into(),
            explanation: "read saw 1 after 2".into(),
            events: vec![3, 4],
        }],
    }];
    (events, results)
}

#[test]
fn run_report_shows_verdict_faults_anomalies_plots_and_escapes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("nodes")).unwrap();
    std::fs::write(dir.path().join("nodes/n1.log"), "log").unwrap();
    let (events, results) = tiny();
    write_run_report(dir.path(), &info("tiny"), &events, &watches(), &results).unwrap();
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(
        page.contains(r#"<span class="badge v-invalid big">invalid</span>"#),
        "overall verdict"
    );
    assert!(page.contains("nonlinearizable read"), "checker summary");
    assert!(page.contains(r#"<rect class="fw c0""#), "shaded fault window");
    assert!(page.contains(">partition</text>"), "fault label");
    // The anomaly table lists both named events with their op, revision and error.
    assert!(
        page.contains(r#"<td class="n">3</td><td class="n">0.030</td><td>p0</td>"#),
        "named ok read"
    );
    assert!(
        page.contains(r#"<td class="n">4</td><td class="n">0.040</td><td>p1</td>"#),
        "named failed write"
    );
    assert!(page.contains(r#"<td class="op">read k1 = 1</td><td class="n">9</td>"#));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped error");
    assert!(!page.contains("<script>alert"), "raw markup from the history");
    assert!(!page.contains("<b>"), "raw markup from extra");
    assert!(page.contains("Latency by invocation time") && page.contains("Throughput") && page.contains("p99"));
    // Timeline, three plots, one anomaly slice, plus the fault table's swatch.
    assert!(page.matches("<svg").count() >= 5, "{}", page.matches("<svg").count());
    assert!(
        page.contains(r#"class="o hl""#) && page.contains(r#"class="f hl""#),
        "outlined named ops"
    );
    assert!(page.contains(r#"class="u""#), "never-completed op");
    assert!(page.contains(r#"<a href="nodes/n1.log">"#) && page.contains(r#"<a href="history.jsonl">"#));
    assert!(page.contains("stream &lt;reset&gt;"), "watch disconnect hover text");
}

#[test]
fn fault_windows_pair_start_and_stop_per_fault() {
    let events = finish(vec![
        nemesis(1, "kill", NemesisPhase::Start, "n1"),
        nemesis(2, "pause", NemesisPhase::Start, "n2"),
        nemesis(3, "kill", NemesisPhase::Stop, ""),
        nemesis(4, "pause", NemesisPhase::Stop, "resumed"),
        nemesis(5, "clock", NemesisPhase::Stop, "stray"),
        nemesis(6, "kill", NemesisPhase::Start, "n3"),
    ]);
    let w = fault_windows(&events);
    assert_eq!(w.len(), 3);
    assert_eq!((w[0].fault.as_str(), w[0].start, w[0].stop), ("kill", MS, Some(3 * MS)));
    assert_eq!(
        (w[1].fault.as_str(), w[1].stop, w[1].detail.as_str()),
        ("pause", Some(4 * MS), "n2 / stop: resumed")
    );
    assert_eq!((w[2].stop, w[2].color), (None, 0));
    assert_eq!(w[1].color, 1);
}

#[test]
fn escaping_and_text_helpers() {
    assert_eq!(
        esc(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(op_text(&Op::Cas { key: 3, from: 1, to: 2 }), "cas k3 1→2");
    let long = op_text(&Op::ReadSet {
        elements: Some((0..1000).collect()),
    });
    assert!(long.contains("(1000 elements)") && long.len() < 80, "{long}");
    assert_eq!(truncate("abcdef", 3), "abc… (6 chars)");
    assert_eq!(overall_verdict(&[]), Validity::Unknown);
}

#[test]
fn big_history_renders_quickly_and_stays_small() {
    let events = simulate(120, 32, 3);
    assert!(events.len() >= 200_000, "{}", events.len());
    let results = results(&events);
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    write_run_report(dir.path(), &info("big"), &events, &watches(), &results).unwrap();
    let took = start.elapsed();
    let size = std::fs::metadata(dir.path().join("index.html")).unwrap().len();
    assert!(took.as_secs_f64() < 10.0, "took {took:?}");
    assert!(size < 10_000_000, "{size} bytes");
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains("Showing 4"), "cap note");
    // The named ops survive the cap, outlined.
    assert!(page.matches(" hl\"").count() >= 2);
    eprintln!("{} events: {took:?}, {size} bytes", events.len());
}

#[test]
fn matrix_report_writes_html_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let row = |workload: &str, nemesis: &str, verdict| MatrixRow {
        workload: workload.into(),
        nemesis: nemesis.into(),
        seed: 1,
        db: "rudder".into(),
        bug: None,
        expected: Validity::Valid,
        verdict,
        checkers: vec![("linearizable".into(), verdict), ("watch".into(), Validity::Valid)],
        ops: 1234,
        duration_s: 31.5,
        run_dir: format!("{workload}-{nemesis}-1"),
    };
    let rows = vec![
        row("register", "partition", Validity::Valid),
        row("set", "kill|pause", Validity::Invalid),
        row("watch", "<none>", Validity::Unknown),
    ];
    write_matrix_report(dir.path(), &rows).unwrap();
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains(r#"<a href="register-partition-1/index.html">"#));
    assert!(page.contains("&lt;none&gt;") && !page.contains("<none>"));
    assert!(page.contains("3 runs:"));
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.starts_with("3 runs: 1 valid, 1 unknown, 1 invalid."), "{md}");
    assert!(
        md.contains(
            "| set | kill\\|pause | rudder | - | 1 | valid | **invalid** (unexpected) | linearizable invalid, watch valid | 1234 |"
        ),
        "{md}"
    );
    assert_eq!(md.lines().filter(|l| l.starts_with('|')).count(), 5);
}

/// Renders a realistic example into a temp dir, and also into `$RUDDER_REPORT_EXAMPLE` when set (used to
/// look at the page in a browser).
#[test]
fn example_report() {
    let events = simulate(24, 6, 1);
    let results = results(&events);
    let dir = tempfile::tempdir().unwrap();
    write_run_report(
        dir.path(),
        &info("register-partition-kill-7"),
        &events,
        &watches(),
        &results,
    )
    .unwrap();
    if let Ok(out) = std::env::var("RUDDER_REPORT_EXAMPLE") {
        let out = std::path::Path::new(&out);
        std::fs::create_dir_all(out.join("nodes")).unwrap();
        for n in 0..3 {
            std::fs::write(out.join(format!("nodes/n{n}.log")), "…").unwrap();
        }
        write_run_report(out, &info("register-partition-kill-7"), &events, &watches(), &results).unwrap();
    }
}
