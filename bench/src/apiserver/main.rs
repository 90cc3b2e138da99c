//! `rudder-bench-apiserver`: the API server half of `make bench`. It runs `rudder server` twice, on its
//! embedded store and on Debian's etcd 3.4.23 (`--etcd-servers`), drives both with the same kube-rs load
//! (creates closed-loop and at a fixed rate, gets, lists of 10,000 pods, watch fan-out to 100 watchers),
//! and writes the figures into their own section of `docs/benchmarks.md` (and a JSON file beside it).

mod phases;
mod procs;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::phases::{PhaseStats, WatchStats};
use crate::procs::{Store, Target};
use rudder_bench::sections;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Benchmark `rudder server` on Rudder's store and on etcd, through kube-rs"
)]
struct Args {
    /// The rudder binary [default: `rudder` next to this executable].
    #[arg(long)]
    rudder: Option<PathBuf>,
    /// The etcd binary for the anchor run.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Where data dirs go.
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
    /// Seconds of each closed-loop phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent clients of the closed-loop phases (besides the single-client one).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rate of the open-loop create phase, per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Pods created by the open-loop phase; the list phases list them.
    #[arg(long, default_value_t = 10_000)]
    pods: u64,
    /// Full lists per list phase.
    #[arg(long, default_value_t = 10)]
    lists: usize,
    /// Watchers of the watch phase.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Objects created (at 20/s) while the watchers watch.
    #[arg(long, default_value_t = 200)]
    watch_objects: u64,
    /// Small, fast settings (2 s phases, 1,000 pods, 10 watchers) to check the harness itself.
    #[arg(long)]
    quick: bool,
    /// Markdown report (its API server section is replaced); the JSON goes to `<stem>-apiserver.json`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md"))]
    out: PathBuf,
}

/// Everything measured on one store.
#[derive(Debug, Default, Serialize)]
struct Run {
    store: String,
    create_1: PhaseStats,
    create_n: PhaseStats,
    create_rate: PhaseStats,
    get_n: PhaseStats,
    list_consistent: PhaseStats,
    list_rv0: PhaseStats,
    list_items: usize,
    watch: WatchStats,
    server_rss_mib: Option<f64>,
    server_hwm_mib: Option<f64>,
    etcd_rss_mib: Option<f64>,
    error: Option<String>,
}

async fn run_one(args: &Args, store: Store, rudder: &std::path::Path) -> Result<Run> {
    let t = Target::start(store, rudder, &args.etcd, &args.tmp_dir).await?;
    let c = &t.client;
    let d = Duration::from_secs_f64(args.duration);
    for ns in ["bench-c1", "bench-cn", "bench-list", "bench-watch"] {
        phases::namespace(c, ns).await?;
    }
    let mut run = Run {
        store: store.label().into(),
        ..Default::default()
    };
    println!("[{}] creates, 1 client", store.label());
    run.create_1 = phases::create_closed(c, "bench-c1", 1, d).await;
    println!("[{}] creates, {} clients", store.label(), args.clients);
    run.create_n = phases::create_closed(c, "bench-cn", args.clients, d).await;
    println!("[{}] {} creates at {}/s", store.label(), args.pods, args.rate);
    run.create_rate = phases::create_open(c, "bench-list", args.rate, args.pods, 5_000).await;
    println!("[{}] gets, {} clients", store.label(), args.clients);
    run.get_n = phases::get_closed(c, "bench-list", args.pods, args.clients, d).await;
    println!("[{}] lists of {} pods", store.label(), args.pods);
    (run.list_consistent, run.list_items) = phases::list(c, "bench-list", args.lists, false).await;
    (run.list_rv0, _) = phases::list(c, "bench-list", args.lists, true).await;
    println!("[{}] watch fan-out to {} watchers", store.label(), args.watchers);
    run.watch = phases::watch_fanout(c, "bench-watch", args.watchers, args.watch_objects, 20.0).await?;
    let (server, etcd) = t.memory();
    run.server_rss_mib = server.map(|m| m.0);
    run.server_hwm_mib = server.map(|m| m.1);
    run.etcd_rss_mib = etcd.map(|m| m.0);
    Ok(run)
}

/// One row of the table: a label, a value per run, and whether higher is better.
fn rows(runs: &[Run]) -> Vec<(String, Vec<Option<f64>>, bool)> {
    let col = |f: &dyn Fn(&Run) -> Option<f64>| {
        runs.iter()
            .map(|r| if r.error.is_some() { None } else { f(r) })
            .collect::<Vec<_>>()
    };
    let some = |v: f64| Some(v);
    let n = runs.first().map_or(0, |r| r.watch.watchers);
    vec![
        ("creates/s, 1 client".into(), col(&|r| some(r.create_1.per_sec)), true),
        (
            "create p99 ms, 1 client".into(),
            col(&|r| some(r.create_1.p99_ms)),
            false,
        ),
        ("creates/s, N clients".into(), col(&|r| some(r.create_n.per_sec)), true),
        (
            "create p99 ms, N clients".into(),
            col(&|r| some(r.create_n.p99_ms)),
            false,
        ),
        (
            "achieved creates/s at the fixed rate".into(),
            col(&|r| some(r.create_rate.per_sec)),
            true,
        ),
        (
            "create p50 ms at the fixed rate".into(),
            col(&|r| some(r.create_rate.p50_ms)),
            false,
        ),
        (
            "create p99 ms at the fixed rate".into(),
            col(&|r| some(r.create_rate.p99_ms)),
            false,
        ),
        ("gets/s, N clients".into(), col(&|r| some(r.get_n.per_sec)), true),
        ("get p99 ms, N clients".into(), col(&|r| some(r.get_n.p99_ms)), false),
        (
            "list all pods p99 ms (consistent read)".into(),
            col(&|r| some(r.list_consistent.p99_ms)),
            false,
        ),
        (
            "list all pods p99 ms (resourceVersion=0, watch cache)".into(),
            col(&|r| some(r.list_rv0.p99_ms)),
            false,
        ),
        (
            format!("watch delivery p50 ms, {n} watchers"),
            col(&|r| some(r.watch.latency.p50_ms)),
            false,
        ),
        (
            format!("watch delivery p99 ms, {n} watchers"),
            col(&|r| some(r.watch.latency.p99_ms)),
            false,
        ),
        // The embedded store lives in the API server's process; etcd in its own, so it is added.
        (
            "RSS MiB at end, API server + store".into(),
            col(&|r| r.server_rss_mib.map(|m| m + r.etcd_rss_mib.unwrap_or(0.0))),
            false,
        ),
        (
            "peak RSS MiB, API server process".into(),
            col(&|r| r.server_hwm_mib),
            false,
        ),
    ]
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn markdown(args: &Args, runs: &[Run], when: &str, rudder_version: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", sections::APISERVER_BEGIN);
    let _ = writeln!(s, "## API server (`rudder server`), through kube-rs\n");
    let _ = writeln!(
        s,
        "Generated by `rudder-bench-apiserver` (`make bench`) on {when} ({rudder_version}). The same API server \
         binary ran twice on this machine, once on its embedded store and once with `--etcd-servers` on Debian's \
         etcd 3.4.23 (the anchor), under the same load from kube-rs clients over HTTPS. Ratio = Rudder's store \
         ÷ etcd; for latencies and memory lower is better.\n"
    );
    let _ = writeln!(
        s,
        "Load: pods created back to back by 1 and by {} clients ({} s each); {} pods created open-loop at {}/s \
         (latency from each request's scheduled start); gets of random pods by {} clients ({} s); {} full lists of \
         those pods, consistent and with resourceVersion=0; {} configmaps created at 20/s while {} watchers watch \
         their namespace (latency from the create being sent to the event arriving).\n",
        args.clients,
        args.duration,
        args.pods,
        args.rate,
        args.clients,
        args.duration,
        args.lists,
        args.watch_objects,
        args.watchers
    );
    let _ = writeln!(
        s,
        "| metric | {} | ratio |",
        runs.iter().map(|r| r.store.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|", "---|".repeat(runs.len()));
    for (label, vals, _) in rows(runs) {
        let ratio = match (vals.first().copied().flatten(), vals.get(1).copied().flatten()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "—".into(),
        };
        let cells = vals.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(" | ");
        let _ = writeln!(s, "| {label} | {cells} | {ratio} |");
    }
    let _ = writeln!(s);
    if let Some(r) = runs.first().filter(|r| r.error.is_none()) {
        let met = r.create_rate.p99_ms < 100.0 && r.create_rate.errors == 0;
        let _ = writeln!(
            s,
            "Target: mutating p99 under 100 ms at {}/s on Rudder's store: **{}** (p99 {:.1} ms, {} of {} creates \
             failed or were shed).\n",
            args.rate,
            if met { "met" } else { "not met" },
            r.create_rate.p99_ms,
            r.create_rate.errors,
            args.pods
        );
    }
    for r in runs {
        if let Some(e) = &r.error {
            let _ = writeln!(s, "- {}: failed: {}", r.store, e.lines().next().unwrap_or(""));
        } else {
            let _ = writeln!(
                s,
                "- {}: lists returned {} items; watch events delivered {} of {}; errors: creates {}+{}+{}, gets {}, \
                 lists {}+{}.",
                r.store,
                r.list_items,
                r.watch.delivered,
                r.watch.expected,
                r.create_1.errors,
                r.create_n.errors,
                r.create_rate.errors,
                r.get_n.errors,
                r.list_consistent.errors,
                r.list_rv0.errors
            );
        }
    }
    let _ = writeln!(s, "\n{}", sections::APISERVER_END);
    s
}

async fn real_main(mut args: Args) -> Result<()> {
    if args.quick {
        args.duration = 2.0;
        args.pods = 1_000;
        args.lists = 3;
        args.watchers = 10;
        args.watch_objects = 20;
    }
    let rudder = match &args.rudder {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("rudder"),
    };
    fs::create_dir_all(&args.tmp_dir)?;
    let mut runs = Vec::new();
    for store in [Store::Rudder, Store::Etcd] {
        let run = match run_one(&args, store, &rudder).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("[{}] failed: {e:#}", store.label());
                Run {
                    store: store.label().into(),
                    error: Some(format!("{e:#}")),
                    ..Default::default()
                }
            }
        };
        runs.push(run);
    }
    let when = chrono_free_now();
    let version = std::process::Command::new(&rudder)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let section = markdown(&args, &runs, &when, &version);
    print!("{section}");
    let old = fs::read_to_string(&args.out).unwrap_or_default();
    fs::write(&args.out, sections::replace(&old, &section))
        .with_context(|| format!("writing {}", args.out.display()))?;
    let stem = args.out.file_stem().and_then(|s| s.to_str()).unwrap_or("benchmarks");
    let json = args.out.with_file_name(format!("{stem}-apiserver.json"));
    fs::write(&json, serde_json::to_string_pretty(&runs)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("wrote {} and {}", args.out.display(), json.display());
    if runs.iter().any(|r| r.error.is_some()) {
        anyhow::bail!("a run failed");
    }
    Ok(())
}

/// UTC now as `YYYY-MM-DD HH:MM:SS UTC`, from `date` (the harness has no calendar crate).
fn chrono_free_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rudder-bench-apiserver: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = real_main(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rudder-bench-apiserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
