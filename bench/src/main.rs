//! `rudder-bench`: the harness behind `make bench`. It benchmarks `rudder store` against etcd side by
//! side in one run — same machine, same disk, same Rust load generator (put/get phases at fixed
//! concurrency, `etcd-client` over loopback), server memory from /proc, and `etcdctl check perf` —
//! over several rounds with alternating order, then writes a markdown report (medians, ratio
//! rudder/etcd, targets met or not, raw per-round numbers) and the same data as JSON.
//!
//! A target that fails to start or errors is reported as failed; child processes are killed on every
//! exit path (drop guards, and SIGINT/SIGTERM/SIGHUP drop the whole run).

mod checkperf;
mod cluster;
mod load;
mod report;
mod report_three;
mod server;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cluster::Cluster;
use crate::load::{PhaseSpec, PhaseStats, Workload, WrittenKeys, PHASES, PHASES_THREE};
use crate::report::{CheckPerfRun, Config, Meta, PhaseRun, Report, TargetRun};
use crate::server::{Launcher, Server, Target};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Benchmark `rudder store` against etcd side by side (the harness behind `make bench`)"
)]
struct Args {
    /// Smoke run (~2 minutes): 1 round, 3 s phases, check perf --load=s only. Explicit flags still win.
    #[arg(long)]
    quick: bool,

    /// Which servers to benchmark, comma-separated, in round-1 order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rudder,etcd")]
    targets: Vec<Target>,

    /// Cluster sizes to benchmark, comma-separated: 1 (single member, with check perf) and/or 3
    /// (three members on loopback: puts, linearizable gets, summed RSS, leader failover).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    members: Vec<usize>,

    /// Leader failovers per target and round in three-member mode; the report shows the median.
    #[arg(long, default_value_t = 3)]
    failovers: usize,

    /// The rudder binary, run as `rudder store ...` [default: `rudder` next to this executable].
    #[arg(long)]
    rudder: Option<PathBuf>,

    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,

    /// The etcdctl binary used for `check perf`.
    #[arg(long, default_value = "/usr/bin/etcdctl")]
    etcdctl: PathBuf,

    /// Rounds; the target order alternates between rounds [default: 2, quick: 1].
    #[arg(long)]
    rounds: Option<usize>,

    /// Length of each load phase, in seconds [default: 10, quick: 3].
    #[arg(long)]
    duration: Option<f64>,

    /// Value size of the put phases, in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,

    /// Number of distinct keys the put phases draw from.
    #[arg(long, default_value_t = 100_000)]
    keyspace: u32,

    /// `etcdctl check perf` loads to run, comma-separated (s, m, l, xl) [default: s,m,l, quick: s].
    #[arg(long, value_delimiter = ',')]
    check_perf_loads: Option<Vec<String>>,

    /// Run the check perf loads in the first N rounds only (each load takes 60 s per target).
    #[arg(long, default_value_t = 1)]
    check_perf_rounds: usize,

    /// Skip `etcdctl check perf` entirely.
    #[arg(long)]
    no_check_perf: bool,

    /// Where data dirs go (a temp dir is created inside; keep it on the disk you want to measure).
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,

    /// Seconds to wait for a server to answer a linearizable get after starting.
    #[arg(long, default_value_t = 30)]
    start_timeout: u64,

    /// Markdown report; the JSON goes next to it with a .json extension. Relative to --root.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,

    /// Workspace root that a relative --out is resolved against.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    root: PathBuf,
}

/// The resolved settings of one run.
struct Plan {
    targets: Vec<Target>,
    members: Vec<usize>,
    failovers: usize,
    rounds: usize,
    workload: Workload,
    check_perf_loads: Vec<String>,
    check_perf_rounds: usize,
    rudder: PathBuf,
    etcd: PathBuf,
    etcdctl: PathBuf,
    start_timeout: Duration,
    out: PathBuf,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Plan> {
        let mut targets = Vec::new();
        for t in &args.targets {
            if !targets.contains(t) {
                targets.push(*t);
            }
        }
        if targets.is_empty() {
            bail!("--targets is empty");
        }
        let mut members = Vec::new();
        for &m in &args.members {
            if m != 1 && m != cluster::MEMBERS {
                bail!("--members {m} is not supported (1 or {})", cluster::MEMBERS);
            }
            if !members.contains(&m) {
                members.push(m);
            }
        }
        if members.is_empty() {
            bail!("--members is empty");
        }
        let duration = args.duration.unwrap_or(if args.quick { 3.0 } else { 10.0 });
        if !(duration.is_finite() && duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        // check perf needs a single-member run to go with; three-member mode skips it.
        let check_perf_loads = if args.no_check_perf || !args.members.contains(&1) {
            Vec::new()
        } else {
            let default = if args.quick {
                vec!["s".to_string()]
            } else {
                vec!["s".into(), "m".into(), "l".into()]
            };
            args.check_perf_loads.clone().unwrap_or(default)
        };
        if let Some(bad) = check_perf_loads
            .iter()
            .find(|l| !["s", "m", "l", "xl"].contains(&l.as_str()))
        {
            bail!("unknown check perf load {bad:?} (expected s, m, l or xl)");
        }
        if args.keyspace == 0 {
            bail!("--keyspace must be at least 1");
        }
        let rudder = match &args.rudder {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("locating this executable")?
                .parent()
                .context("executable has no parent directory")?
                .join("rudder"),
        };
        let root = args.root.canonicalize().unwrap_or_else(|_| args.root.clone());
        Ok(Plan {
            targets,
            members,
            failovers: args.failovers.max(1),
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 2 }).max(1),
            workload: Workload {
                duration: Duration::from_secs_f64(duration),
                value_size: args.value_size,
                keyspace: args.keyspace,
            },
            check_perf_loads,
            check_perf_rounds: args.check_perf_rounds,
            rudder,
            etcd: args.etcd.clone(),
            etcdctl: args.etcdctl.clone(),
            start_timeout: Duration::from_secs(args.start_timeout),
            out: if args.out.is_absolute() {
                args.out.clone()
            } else {
                root.join(&args.out)
            },
        })
    }

    fn launcher(&self, target: Target) -> Launcher {
        let binary = match target {
            Target::Rudder => self.rudder.clone(),
            Target::Etcd => self.etcd.clone(),
        };
        Launcher { target, binary }
    }

    fn check_perf_in(&self, round: usize) -> bool {
        round <= self.check_perf_rounds && !self.check_perf_loads.is_empty() && self.members.contains(&1)
    }

    /// Rough wall-clock estimate, for the progress output.
    fn estimate(&self) -> Duration {
        let phase = self.workload.duration.as_secs_f64() + 1.0;
        let mut per_target = 0.0;
        if self.members.contains(&1) {
            per_target += PHASES.len() as f64 * phase + 3.0;
        }
        if self.members.contains(&cluster::MEMBERS) {
            // Start, phases, and per failover: warm-up, election, restart and rejoin.
            per_target += PHASES_THREE.len() as f64 * phase + 5.0 + self.failovers as f64 * 6.0;
        }
        let perf_rounds = self.check_perf_rounds.min(self.rounds) as f64;
        let perf = perf_rounds * self.check_perf_loads.len() as f64 * 64.0;
        Duration::from_secs_f64(self.targets.len() as f64 * (self.rounds as f64 * per_target + perf))
    }
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Progress line on stderr, prefixed with the elapsed time.
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[{:6.1}s] {}", STARTED.get_or_init(Instant::now).elapsed().as_secs_f64(), format!($($arg)*))
    };
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Logs one phase's outcome and turns it into its report entry.
fn phase_result(round: usize, target: Target, spec: &PhaseSpec, outcome: Result<PhaseStats>) -> PhaseRun {
    match outcome {
        Ok(stats) => {
            progress!(
                "round {round}: {target} {}: {:.0} ops/s, p50 {} ms, p99 {} ms{}",
                spec.title,
                stats.ops_per_sec,
                report::fmt_num(stats.p50_ms),
                report::fmt_num(stats.p99_ms),
                if stats.errors > 0 {
                    format!(", {} ERRORS", stats.errors)
                } else {
                    String::new()
                }
            );
            PhaseRun {
                id: spec.id,
                title: spec.title,
                stats: Some(stats),
                error: None,
            }
        }
        Err(e) => {
            progress!(
                "round {round}: {target} {}: FAILED: {}",
                spec.title,
                first_line(&format!("{e:#}"))
            );
            PhaseRun {
                id: spec.id,
                title: spec.title,
                stats: None,
                error: Some(format!("{e:#}")),
            }
        }
    }
}

/// Three-member mode for one target: start a fresh cluster, run the put and linearizable-get phases
/// over all members, sum the members' memory, then measure leader failover `plan.failovers` times.
async fn run_cluster_target(plan: &Plan, work: &Path, round: usize, position: usize, target: Target) -> TargetRun {
    let mut run = TargetRun::new(round, position, target);
    run.members = cluster::MEMBERS;
    let launcher = plan.launcher(target);
    let instance = format!("round{round}-{target}-3m");
    progress!(
        "round {round}: starting three {target} members ({})",
        launcher.binary.display()
    );
    let mut cluster = match Cluster::start(&launcher, work, &instance, plan.start_timeout).await {
        Ok(c) => c,
        Err(e) => {
            progress!(
                "round {round}: {target} cluster FAILED to start: {}",
                first_line(&format!("{e:#}"))
            );
            run.start_error = Some(format!("{e:#}"));
            return run;
        }
    };
    let mut written = WrittenKeys::new(plan.workload.keyspace);
    for spec in &PHASES_THREE {
        let outcome = match cluster.ensure_running() {
            Ok(()) => match cluster.endpoints_leader_first().await {
                Ok(endpoints) => load::run_phase(&endpoints, spec, &plan.workload, &mut written).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let phase = phase_result(round, target, spec, outcome);
        run.phases.push(phase);
    }
    match cluster.ensure_running().and_then(|()| cluster.memory()) {
        Ok(m) => {
            progress!(
                "round {round}: {target} memory (3 members): RSS {:.1} MiB, peak {:.1} MiB",
                m.rss_mib,
                m.hwm_mib
            );
            run.memory = Some(m);
        }
        Err(e) => run.memory_error = Some(format!("{e:#}")),
    }
    for repeat in 1..=plan.failovers {
        let f = cluster.failover(repeat, plan.start_timeout).await;
        match (&f.recovery_ms, &f.error) {
            (Some(ms), None) => progress!(
                "round {round}: {target} failover {repeat} (killed {}): first write after {} ms, {} errors",
                f.killed.as_deref().unwrap_or("?"),
                report::fmt_num(*ms),
                f.errors
            ),
            (_, e) => progress!(
                "round {round}: {target} failover {repeat}: FAILED: {}",
                first_line(e.as_deref().unwrap_or("no value"))
            ),
        }
        let rejoin_failed = f.error.as_deref().is_some_and(|e| e.contains("restarting"));
        run.failover.push(f);
        if rejoin_failed {
            // Without three members the remaining repeats would measure something else.
            break;
        }
    }
    drop(cluster);
    run
}

/// Runs the load phases and the memory sample against one fresh server, then the check perf loads
/// (each against its own fresh server).
async fn run_target(plan: &Plan, work: &Path, round: usize, position: usize, target: Target) -> TargetRun {
    let mut run = TargetRun::new(round, position, target);
    let launcher = plan.launcher(target);
    let instance = format!("round{round}-{target}");
    progress!("round {round}: starting {target} ({})", launcher.binary.display());
    match Server::start(&launcher, work, &instance, plan.start_timeout).await {
        Err(e) => {
            progress!(
                "round {round}: {target} FAILED to start: {}",
                first_line(&format!("{e:#}"))
            );
            run.start_error = Some(format!("{e:#}"));
        }
        Ok(mut server) => {
            let mut written = WrittenKeys::new(plan.workload.keyspace);
            for spec in &PHASES {
                let outcome = match server.ensure_running() {
                    Ok(()) => {
                        load::run_phase(&[server.endpoint().to_string()], spec, &plan.workload, &mut written).await
                    }
                    Err(e) => Err(e),
                };
                let phase = phase_result(round, target, spec, outcome);
                run.phases.push(phase);
            }
            progress!("round {round}: {target}: {} distinct keys written", written.count());
            match server.ensure_running().and_then(|()| server.memory()) {
                Ok(m) => {
                    progress!(
                        "round {round}: {target} memory: RSS {:.1} MiB, peak {:.1} MiB",
                        m.rss_mib,
                        m.hwm_mib
                    );
                    run.memory = Some(m);
                }
                Err(e) => run.memory_error = Some(format!("{e:#}")),
            }
            if let Err(e) = server.stop() {
                progress!("round {round}: warning: stopping {target}: {e:#}");
            }
        }
    }

    if plan.check_perf_in(round) {
        for load in &plan.check_perf_loads {
            let result = if run.start_error.is_some() {
                Err(anyhow::anyhow!("skipped: the server did not start for the load phases"))
            } else {
                check_perf_fresh(plan, &launcher, work, &format!("{instance}-perf-{load}"), load).await
            };
            let entry = match result {
                Ok(r) => {
                    progress!(
                        "round {round}: {target} check perf --load={load}: {}",
                        r.lines.join(" / ")
                    );
                    CheckPerfRun {
                        load: load.clone(),
                        result: Some(r),
                        error: None,
                    }
                }
                Err(e) => {
                    progress!(
                        "round {round}: {target} check perf --load={load}: FAILED: {}",
                        first_line(&format!("{e:#}"))
                    );
                    CheckPerfRun {
                        load: load.clone(),
                        result: None,
                        error: Some(format!("{e:#}")),
                    }
                }
            };
            run.check_perf.push(entry);
        }
    }
    run
}

/// `etcdctl check perf --load=LOAD` against a freshly started server.
async fn check_perf_fresh(
    plan: &Plan,
    launcher: &Launcher,
    work: &Path,
    instance: &str,
    load: &str,
) -> Result<checkperf::CheckPerf> {
    let mut server = Server::start(launcher, work, instance, plan.start_timeout).await?;
    progress!("{}: etcdctl check perf --load={load} (60 s)", launcher.target);
    let result = checkperf::run(&plan.etcdctl, server.endpoint(), load).await;
    // A server that died under check perf is the more useful error.
    server.ensure_running()?;
    server.stop()?;
    result
}

/// The 1/5/15-minute figures of /proc/loadavg.
fn load_average(loadavg: &str) -> String {
    loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn read_first(path: &str, key: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once([':', '='])?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The filesystem a path lives on, from /proc/mounts (longest matching mount point).
fn filesystem_of(path: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
}

async fn gather_meta(plan: &Plan, args: &Args, work: &Path) -> Meta {
    let mut machine = BTreeMap::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    machine.insert("cpus", cpus.to_string());
    if let Some(model) = read_first("/proc/cpuinfo", "model name") {
        machine.insert("cpu model", model);
    }
    if let Some(mem) = read_first("/proc/meminfo", "MemTotal") {
        let kib: f64 = mem.trim_end_matches("kB").trim().parse().unwrap_or(0.0);
        machine.insert("memory", format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    }
    if let Ok(kernel) = fs::read_to_string("/proc/sys/kernel/osrelease") {
        machine.insert("kernel", kernel.trim().to_string());
    }
    if let Some(os) = read_first("/etc/os-release", "PRETTY_NAME") {
        machine.insert("os", os);
    }
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        machine.insert("load average at start", load_average(&load));
    }
    if let Some(fs) = filesystem_of(work) {
        machine.insert("data dir filesystem", fs);
    }

    let mut versions = BTreeMap::new();
    let answer = |binary: &Path, v: Option<String>| {
        v.unwrap_or_else(|| {
            if binary.is_file() {
                format!("{} did not report a version", binary.display())
            } else {
                format!("{} not found", binary.display())
            }
        })
    };
    versions.insert(
        "etcd",
        answer(&plan.etcd, server::version_of(&plan.etcd, "--version").await),
    );
    versions.insert(
        "etcdctl",
        answer(&plan.etcdctl, server::version_of(&plan.etcdctl, "version").await),
    );
    versions.insert(
        "rudder",
        answer(&plan.rudder, server::version_of(&plan.rudder, "--version").await),
    );
    let git = tokio::process::Command::new("git")
        .arg("-C")
        .arg(&args.root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .await;
    if let Ok(out) = git {
        let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !rev.is_empty() {
            versions.insert("rudder source (git)", rev);
        }
    }
    versions.insert("rudder-bench", env!("CARGO_PKG_VERSION").to_string());
    Meta {
        date_utc: report::now_utc(),
        machine,
        versions,
    }
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::from_args(&args)?;
    fs::create_dir_all(&args.tmp_dir).with_context(|| format!("creating {}", args.tmp_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("rudder-bench-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("creating a temp dir in {}", args.tmp_dir.display()))?;
    let mut meta = gather_meta(&plan, &args, work.path()).await;
    progress!(
        "benchmarking {} for {} round(s), {:.0} s phases, check perf {}; about {:.0} min",
        plan.targets.iter().map(|t| t.name()).collect::<Vec<_>>().join(" vs "),
        plan.rounds,
        plan.workload.duration.as_secs_f64(),
        if plan.check_perf_loads.is_empty() {
            "skipped".to_string()
        } else {
            plan.check_perf_loads.join(",")
        },
        plan.estimate().as_secs_f64() / 60.0
    );
    for (k, v) in &meta.versions {
        progress!("{k}: {v}");
    }
    if let Some(busy) = meta
        .machine
        .get("load average at start")
        .and_then(|l| l.split(' ').next()?.parse::<f64>().ok())
    {
        if busy > 0.5 {
            progress!(
                "warning: load average is {busy:.2} before starting; other work on this machine will skew the numbers"
            );
        }
    }

    let mut runs = Vec::new();
    for &members in &plan.members {
        for round in 1..=plan.rounds {
            let mut order = plan.targets.clone();
            if round % 2 == 0 {
                order.reverse();
            }
            for (i, target) in order.into_iter().enumerate() {
                runs.push(if members == 1 {
                    run_target(&plan, work.path(), round, i + 1, target).await
                } else {
                    run_cluster_target(&plan, work.path(), round, i + 1, target).await
                });
            }
        }
    }

    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        meta.machine.insert("load average at end", load_average(&load));
    }
    let summary = report::summarize(&runs, &plan.check_perf_loads);
    let summary_three = report_three::summarize(&runs);
    let report = Report {
        meta,
        config: Config {
            quick: args.quick,
            targets: plan.targets.clone(),
            members: plan.members.clone(),
            failovers: plan.failovers,
            rounds: plan.rounds,
            phase_duration_s: plan.workload.duration.as_secs_f64(),
            value_size: plan.workload.value_size,
            keyspace: plan.workload.keyspace,
            check_perf_loads: plan.check_perf_loads.clone(),
            check_perf_rounds: plan.check_perf_rounds.min(plan.rounds),
            work_dir: args.tmp_dir.display().to_string(),
            rudder_binary: plan.rudder.display().to_string(),
            etcd_binary: plan.etcd.display().to_string(),
            etcdctl_binary: plan.etcdctl.display().to_string(),
        },
        runs,
        summary,
        summary_three,
    };

    if !report.summary.is_empty() {
        let (met, judged) = report::tally(&report.summary);
        println!("\n{}", report::results_table(&report.summary));
        println!("single member: rudder meets {met} of {judged} judged targets.");
    }
    if !report.summary_three.is_empty() {
        let (met, judged) = report::tally(&report.summary_three);
        println!("\n{}", report::results_table(&report.summary_three));
        println!("three members: rudder meets {met} of {judged} judged targets.");
    }
    for f in report::failures(&report.runs) {
        println!("- {}", first_line(&f));
    }

    if let Some(dir) = plan.out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json_path = plan.out.with_extension("json");
    // The API server benchmark's section of the same file survives this rewrite.
    let mut doc = report::markdown(&report);
    if let Some(section) = fs::read_to_string(&plan.out)
        .ok()
        .as_deref()
        .and_then(rudder_bench::sections::extract)
    {
        doc = rudder_bench::sections::replace(&doc, section);
    }
    fs::write(&plan.out, doc).with_context(|| format!("writing {}", plan.out.display()))?;
    let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
    fs::write(&json_path, json + "\n").with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nwrote {} and {}", plan.out.display(), json_path.display());
    Ok(())
}

/// Resolves on SIGINT, SIGTERM or SIGHUP with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    STARTED.get_or_init(Instant::now);
    let args = Args::parse();
    // Dropping the `run` future on a signal drops every `Server` guard (killing the servers), the
    // etcdctl child (kill_on_drop) and the temp dir.
    tokio::select! {
        result = run(args) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rudder-bench: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        sig = shutdown_signal() => {
            eprintln!("rudder-bench: {sig} received, servers stopped, no report written");
            ExitCode::from(130)
        }
    }
}
