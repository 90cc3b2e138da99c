//! Assembles the run page: header, checker table, links, timeline, plots, faults, watchers, anomalies.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::checker::{Anomaly, CheckResult, Validity};
use crate::history::{EventType, WatchRecord, WatchRecordKind, NEMESIS_PROCESS};

use super::{
    esc, millis, op_text, outcome_word, overall_verdict, plots, secs, timeline, truncate, verdict_word, Model,
    ReportError, RunInfo,
};

/// Ops drawn on the whole-run timeline at most.
const TIMELINE_CAP: usize = 4000;
/// Ops drawn in one anomaly's slice at most.
const SLICE_CAP: usize = 300;
/// Anomalies per checker shown with their events; the rest are only counted by kind.
const DETAILED: usize = 40;
/// Of those, how many also get a timeline slice (each is up to ~60 KB).
const WITH_SLICE: usize = 15;
/// Events listed per anomaly.
const EVENTS_PER_ANOMALY: usize = 100;

pub(crate) const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 24px 48px;color:#222;background:#fafafa}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:14px 0 6px}
nav{position:sticky;top:0;background:#fafafa;padding:6px 0;border-bottom:1px solid #ddd;z-index:1}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
section{margin-top:22px}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.v-valid{background:#2e9d4f}.v-unknown{background:#c99700}.v-invalid{background:#c62828}
.big{font-size:17px;padding:3px 14px;vertical-align:middle}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono,td.op,td.err{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
td.err{color:#a02020;max-width:420px;word-break:break-word}
td.op{max-width:520px;word-break:break-word}
.params{display:flex;flex-wrap:wrap;gap:0 24px;align-items:flex-start}
.note{color:#666;font-size:13px;margin:4px 0}
.scroll{overflow-x:auto;border:1px solid #ddd;background:#fff;margin:6px 0}
.plot{margin:8px 0;border:1px solid #ddd;background:#fff;display:inline-block}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
.anomaly{border-left:4px solid #c62828;padding:4px 12px;margin:12px 0;background:#fff}
.anomaly.unknown{border-left-color:#c99700}
svg.timeline text{font:10px sans-serif}
.tick{text-anchor:middle;fill:#555}.grid{stroke:#eee}.gsep{stroke:#ccc}
.gl{font-weight:bold;fill:#333}.ll{text-anchor:end;fill:#777}
.o{fill:#2e9d4f}.f{fill:#d64545}.i{fill:#d9a400}.u{fill:#bbb}
.hl{stroke:#000;stroke-width:1.2}
.fw{fill-opacity:.14}.fl{font-weight:600}
.c0{fill:#7b4fd6}.c1{fill:#1f8fb4}.c2{fill:#c05621}.c3{fill:#5a8a1f}.c4{fill:#b41f8f}.c5{fill:#6b6b6b}
.ws{fill:#1f6fb4}.wd{fill:#e07b00}.wc{fill:#c62828}
"#;

pub(crate) fn badge(v: Validity, extra_class: &str) -> String {
    format!(
        r#"<span class="badge v-{w} {extra_class}">{w}</span>"#,
        w = verdict_word(v)
    )
}

pub(crate) fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{}</title><style>{CSS}</style></head><body>\n",
        esc(title)
    )
}

pub(crate) fn run_page(
    info: &RunInfo,
    model: &Model,
    watches: &[WatchRecord],
    results: &[CheckResult],
    logs: &[String],
) -> Result<String, ReportError> {
    let verdict = info
        .verdict
        .map_or_else(|| overall_verdict(results), |v| v.max(overall_verdict(results)));
    let mut h = page_start(&format!("{} — {}", info.name, verdict_word(verdict)));
    let _ = write!(
        h,
        r##"<nav><a href="#run">run</a><a href="#checkers">checkers</a><a href="#files">files</a><a href="#timeline">timeline</a><a href="#plots">plots</a><a href="#faults">faults</a><a href="#watchers">watchers</a><a href="#anomalies">anomalies</a></nav>
<header id="run"><h1>{name} {badge}</h1><p class="note">{db}, {nodes} nodes, workload {workload}, nemesis {nemesis}, seed {seed}, started {started}</p></header>"##,
        name = esc(&info.name),
        badge = badge(verdict, "big"),
        db = esc(&info.db),
        nodes = info.nodes,
        workload = esc(&info.workload),
        nemesis = esc(&info.nemesis),
        seed = info.seed,
        started = esc(&info.started),
    );
    params(&mut h, info, model, watches);
    checkers(&mut h, results);
    files(&mut h, logs);

    h.push_str(r#"<section id="timeline"><h2>Timeline</h2>"#);
    h.push_str(
        r#"<div class="legend"><span><i style="background:#2e9d4f"></i>ok</span><span><i style="background:#d64545"></i>fail</span><span><i style="background:#d9a400"></i>info (unknown outcome)</span><span><i style="background:#bbb"></i>never completed</span><span><i style="background:#fff;border:1.6px solid #000"></i>named by an anomaly</span><span><i style="background:#7b4fd6;opacity:.3"></i>fault window</span><span class="note">Hover a bar for the op, its result and error. Lanes are grouped by the node the client talked to.</span></div>"#,
    );
    let (slice, note) = timeline::whole_run(model, TIMELINE_CAP);
    if let Some(note) = note {
        let _ = write!(h, r#"<p class="note">{}</p>"#, esc(&note));
    }
    let _ = write!(
        h,
        r#"<div class="scroll">{}</div></section>"#,
        timeline::render(model, &slice, watches)
    );

    let _ = write!(
        h,
        r#"<section id="plots"><h2>Plots</h2><p class="note">Shaded: fault windows.</p><div class="plot">{}</div><br><div class="plot">{}</div><br><div class="plot">{}</div></section>"#,
        plots::latency(model)?,
        plots::throughput(model)?,
        plots::quantiles(model)?,
    );
    faults(&mut h, model);
    watchers(&mut h, watches);
    anomalies(&mut h, model, results);
    h.push_str("</body></html>\n");
    Ok(h)
}

fn kv_table(h: &mut String, rows: &[(String, String)]) {
    h.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>");
}

fn params(h: &mut String, info: &RunInfo, model: &Model, watches: &[WatchRecord]) {
    let count = |t: EventType| {
        model
            .ops
            .iter()
            .filter(|o| o.complete.as_ref().is_some_and(|c| c.kind == t))
            .count()
    };
    let open = model.ops.iter().filter(|o| o.complete.is_none()).count();
    let run = vec![
        ("name".to_string(), info.name.clone()),
        ("db".into(), info.db.clone()),
        ("nodes".into(), info.nodes.to_string()),
        ("workload".into(), info.workload.clone()),
        ("nemesis".into(), info.nemesis.clone()),
        ("seed".into(), info.seed.to_string()),
        ("time limit".into(), format!("{} s", info.time_limit_s)),
        ("started".into(), info.started.clone()),
        ("duration".into(), format!("{:.1} s", info.duration_s)),
        ("exit code".into(), info.exit_code.to_string()),
    ];
    let history = vec![
        ("events".to_string(), model.events.len().to_string()),
        ("operations".into(), model.ops.len().to_string()),
        ("ok".into(), count(EventType::Ok).to_string()),
        ("fail".into(), count(EventType::Fail).to_string()),
        ("info".into(), count(EventType::Info).to_string()),
        ("never completed".into(), open.to_string()),
        ("fault windows".into(), model.windows.len().to_string()),
        ("watch records".into(), watches.len().to_string()),
        ("history span".into(), format!("{} s", secs(model.end))),
    ];
    let extra: Vec<(String, String)> = match &info.extra {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), json_short(v, 200))).collect(),
        v => vec![("extra".into(), json_short(v, 200))],
    };
    h.push_str(r#"<section><div class="params">"#);
    kv_table(h, &run);
    kv_table(h, &history);
    if !extra.is_empty() {
        kv_table(h, &extra);
    }
    h.push_str("</div></section>");
}

/// A JSON value as text: strings bare, the rest compact JSON, cut to `max` characters.
fn json_short(v: &serde_json::Value, max: usize) -> String {
    match v {
        serde_json::Value::String(s) => truncate(s, max),
        v => truncate(&v.to_string(), max),
    }
}

fn figures(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .take(12)
                .map(|(k, v)| format!("{}: {}", esc(k), esc(&json_short(v, 80))))
                .collect();
            if m.len() > 12 {
                parts.push(format!("… {} more in results.json", m.len() - 12));
            }
            parts.join("<br>")
        }
        v => esc(&json_short(v, 300)),
    }
}

fn checkers(h: &mut String, results: &[CheckResult]) {
    h.push_str(r#"<section id="checkers"><h2>Checkers</h2>"#);
    if results.is_empty() {
        h.push_str(r#"<p class="note">No checker results: the run did not get as far as checking.</p></section>"#);
        return;
    }
    h.push_str(
        "<table><tr><th>checker</th><th>verdict</th><th>summary</th><th>key figures</th><th>anomalies</th></tr>",
    );
    for (i, r) in results.iter().enumerate() {
        let anomalies = if r.anomalies.is_empty() {
            "0".to_string()
        } else {
            format!(r##"<a href="#checker-{i}">{}</a>"##, r.anomalies.len())
        };
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="mono">{}</td><td class="n">{anomalies}</td></tr>"#,
            esc(&r.checker),
            badge(r.valid, ""),
            esc(&r.summary),
            figures(&r.figures),
        );
    }
    h.push_str("</table></section>");
}

fn files(h: &mut String, logs: &[String]) {
    h.push_str(r#"<section id="files"><h2>Files</h2><p>"#);
    for (f, what) in [
        ("history.jsonl", "history (one event a line)"),
        ("watches.jsonl", "watch records"),
        ("results.json", "checker results"),
    ] {
        let _ = write!(h, r#"<a href="{f}">{f}</a> <span class="note">{what}</span> &nbsp; "#);
    }
    h.push_str("</p><p>Node logs: ");
    if logs.is_empty() {
        h.push_str(r#"<span class="note">none found under nodes/</span>"#);
    }
    for l in logs {
        let _ = write!(h, r#"<a href="{l}">{l}</a> &nbsp; "#, l = esc(l));
    }
    h.push_str("</p></section>");
}

fn faults(h: &mut String, model: &Model) {
    h.push_str(r#"<section id="faults"><h2>Faults</h2>"#);
    if model.windows.is_empty() {
        h.push_str(r#"<p class="note">No faults were injected.</p></section>"#);
        return;
    }
    h.push_str("<table><tr><th>fault</th><th>start (s)</th><th>stop (s)</th><th>length</th><th>detail</th></tr>");
    for w in model.windows.iter().take(300) {
        let stop = w.stop.map_or_else(|| "never (end of run)".to_string(), secs);
        let _ = write!(
            h,
            r#"<tr><td><svg width="12" height="12"><rect class="c{c}" width="12" height="12" fill-opacity=".5"/></svg> {f}</td><td class="n">{a}</td><td class="n">{b}</td><td class="n">{len}</td><td class="mono">{d}</td></tr>"#,
            c = w.color % 6,
            f = esc(&w.fault),
            a = secs(w.start),
            b = stop,
            len = millis(w.end(model.end) - w.start),
            d = esc(&truncate(&w.detail, 300)),
        );
    }
    h.push_str("</table>");
    if model.windows.len() > 300 {
        let _ = write!(
            h,
            r#"<p class="note">… and {} more windows.</p>"#,
            model.windows.len() - 300
        );
    }
    h.push_str("</section>");
}

#[derive(Default)]
struct WatcherStats {
    nodes: BTreeSet<usize>,
    starts: usize,
    responses: usize,
    events: usize,
    progress: usize,
    disconnects: usize,
    cancels: usize,
    last_revision: i64,
}

fn watchers(h: &mut String, watches: &[WatchRecord]) {
    h.push_str(r#"<section id="watchers"><h2>Watchers</h2>"#);
    if watches.is_empty() {
        h.push_str(r#"<p class="note">No watch records.</p></section>"#);
        return;
    }
    let mut stats: BTreeMap<u64, WatcherStats> = BTreeMap::new();
    for w in watches {
        let s = stats.entry(w.watcher).or_default();
        s.nodes.insert(w.node);
        match &w.kind {
            WatchRecordKind::Start { .. } => s.starts += 1,
            WatchRecordKind::Events { revision, events } => {
                s.responses += 1;
                s.events += events.len();
                s.last_revision = s.last_revision.max(*revision);
            }
            WatchRecordKind::Progress { revision } => {
                s.progress += 1;
                s.last_revision = s.last_revision.max(*revision);
            }
            WatchRecordKind::Canceled { .. } => s.cancels += 1,
            WatchRecordKind::Disconnected { .. } => s.disconnects += 1,
        }
    }
    h.push_str(
        "<table><tr><th>watcher</th><th>nodes</th><th>(re)starts</th><th>responses</th><th>events</th>\
         <th>progress</th><th>disconnects</th><th>canceled</th><th>last revision</th></tr>",
    );
    for (w, s) in &stats {
        let nodes: Vec<String> = s.nodes.iter().map(|n| n.to_string()).collect();
        let _ = write!(
            h,
            r#"<tr><td>w{w}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            nodes.join(", "),
            s.starts,
            s.responses,
            s.events,
            s.progress,
            s.disconnects,
            s.cancels,
            s.last_revision
        );
    }
    h.push_str("</table></section>");
}

fn anomalies(h: &mut String, model: &Model, results: &[CheckResult]) {
    h.push_str(r#"<section id="anomalies"><h2>Anomalies</h2>"#);
    if results.iter().all(|r| r.anomalies.is_empty()) {
        h.push_str(r#"<p class="note">No checker reported an anomaly.</p></section>"#);
        return;
    }
    for (i, r) in results.iter().enumerate().filter(|(_, r)| !r.anomalies.is_empty()) {
        let _ = write!(
            h,
            r#"<h3 id="checker-{i}">{} {} — {} anomalies</h3>"#,
            esc(&r.checker),
            badge(r.valid, ""),
            r.anomalies.len()
        );
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &r.anomalies {
            *kinds.entry(a.kind.as_str()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{} × {n}", esc(k))).collect();
        let _ = write!(h, r#"<p class="note">By kind: {}</p>"#, kinds.join(", "));
        for (j, a) in r.anomalies.iter().take(DETAILED).enumerate() {
            anomaly(h, model, r.valid, i, j, a);
        }
        if r.anomalies.len() > DETAILED {
            let _ = write!(
                h,
                r#"<p class="note">… {} more anomalies from {} are listed in results.json.</p>"#,
                r.anomalies.len() - DETAILED,
                esc(&r.checker)
            );
        }
    }
    h.push_str("</section>");
}

fn anomaly(h: &mut String, model: &Model, valid: Validity, i: usize, j: usize, a: &Anomaly) {
    let class = if valid == Validity::Invalid { "" } else { " unknown" };
    let _ = write!(
        h,
        r#"<div class="anomaly{class}" id="a-{i}-{j}"><h3>{} </h3><p>{}</p>"#,
        esc(&a.kind),
        esc(&a.explanation)
    );
    if a.events.is_empty() {
        h.push_str(r#"<p class="note">This anomaly names no events.</p></div>"#);
        return;
    }
    h.push_str(
        "<table><tr><th>index</th><th>time (s)</th><th>process</th><th>node</th><th>type</th><th>op</th>\
         <th>revision</th><th>error</th></tr>",
    );
    for &idx in a.events.iter().take(EVENTS_PER_ANOMALY) {
        let Some(e) = model.event(idx) else {
            let _ = write!(
                h,
                r#"<tr><td class="n">{idx}</td><td colspan="7" class="note">not in the history</td></tr>"#
            );
            continue;
        };
        let process = if e.process == NEMESIS_PROCESS {
            "nemesis".to_string()
        } else {
            format!("p{}", e.process)
        };
        let node = e.node.map_or_else(String::new, |n| n.to_string());
        let revision = e.revision.map_or_else(String::new, |r| r.to_string());
        let _ = write!(
            h,
            r#"<tr><td class="n">{idx}</td><td class="n">{t}</td><td>{process}</td><td class="n">{node}</td><td>{kind}</td><td class="op">{op}</td><td class="n">{revision}</td><td class="err">{err}</td></tr>"#,
            t = secs(e.time),
            kind = outcome_word(e.kind),
            op = esc(&op_text(&e.op)),
            err = esc(&truncate(e.error.as_deref().unwrap_or(""), 500)),
        );
    }
    h.push_str("</table>");
    if a.events.len() > EVENTS_PER_ANOMALY {
        let _ = write!(
            h,
            r#"<p class="note">… and {} more events.</p>"#,
            a.events.len() - EVENTS_PER_ANOMALY
        );
    }
    if j < WITH_SLICE {
        if let Some(slice) = timeline::around(model, &a.events, SLICE_CAP) {
            let _ = write!(
                h,
                r#"<p class="note">The history from {} s to {} s ({} operations; outlined: the ones named above).</p><div class="scroll">{}</div>"#,
                secs(slice.t0),
                secs(slice.t1),
                slice.ops.len(),
                timeline::render(model, &slice, &[])
            );
        }
    }
    h.push_str("</div>");
}
