//! `rudder-jepsen`: flags and wiring only. Exit codes: 0 every checker valid, 1 an anomaly found,
//! 2 some result unknown, 3 harness error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rudder_jepsen::runner::{self, DbChoice, TestSpec};
use rudder_jepsen::workload::WorkloadKind;

#[derive(Parser)]
#[command(
    name = "rudder-jepsen",
    about = "Jepsen-style fault injection for Rudder or any etcd v3 cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The store under test.
    #[arg(long, value_enum, default_value = "rudder")]
    db: DbChoice,
    /// Nodes (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload (faults run during it; a heal and final reads follow).
    #[arg(long, default_value_t = 30)]
    time_limit: u64,
    /// The `rudder` binary (default: next to this one, else on PATH).
    #[arg(long)]
    rudder_bin: Option<PathBuf>,
    /// The etcd binary for `--db etcd`.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Client processes.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Target operations per second over all processes.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Seconds the linearizability search may take before answering "unknown".
    #[arg(long, default_value_t = 60)]
    checker_budget: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one test and writes DIR/{history.jsonl,watches.jsonl,results.json,index.html,nodes/}.
    Test {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        workload: WorkloadKind,
        /// Faults: none, kill, pause, partition, delay, drop, clock, membership, compaction, quota, all
        /// (comma-separated for a mix).
        #[arg(long, default_value = "none")]
        nemesis: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Start Rudder with a test-only injected bug (stale-read, ack-before-fsync, drop-watch-event); the
        /// run is expected to find an anomaly.
        #[arg(long)]
        bug: Option<String>,
    },
    /// Runs workloads x nemeses x seeds and writes a summary table (DIR/index.html, DIR/summary.md).
    Matrix {
        #[command(flatten)]
        common: Common,
        /// Comma-separated workloads (default: all).
        #[arg(long)]
        workloads: Option<String>,
        /// Comma-separated nemeses (default: each one alone).
        #[arg(long)]
        nemeses: Option<String>,
        #[arg(long, default_value = "1,2,3")]
        seeds: String,
        /// `smoke`: the short set `make test` runs (about 10 minutes on 2 cores).
        #[arg(long)]
        preset: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Also write the summary as a Markdown document (e.g. docs/jepsen.md).
        #[arg(long)]
        doc: Option<PathBuf>,
    },
    /// Backup and restore under load: snapshot while register and set run, restore three members, check.
    Backup {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-runs the checkers on a recorded run directory and rewrites its results and report.
    Check {
        dir: PathBuf,
        #[arg(long, default_value_t = 60)]
        checker_budget: u64,
    },
    /// Removes namespaces, processes and rules left by interrupted runs.
    Cleanup,
    /// (internal) The peer proxy that delays and drops traffic, run inside a node's namespace.
    #[command(hide = true)]
    Proxy {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        control: PathBuf,
    },
}

impl Common {
    fn spec(&self, workload: WorkloadKind, nemesis: &str, seed: u64, out: PathBuf, bug: Option<String>) -> TestSpec {
        TestSpec {
            db: self.db,
            nodes: self.nodes,
            workload,
            nemesis: nemesis.to_string(),
            time_limit: self.time_limit,
            seed,
            out,
            bug,
            rudder_bin: self.rudder_bin.clone(),
            etcd_bin: self.etcd_bin.clone(),
            concurrency: self.concurrency,
            rate: self.rate,
            checker_budget: self.checker_budget,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rudder_jepsen=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rudder-jepsen: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Test {
                common,
                workload,
                nemesis,
                seed,
                out,
                bug,
            } => runner::run_test(common.spec(workload, &nemesis, seed, out, bug)).await,
            Command::Matrix {
                common,
                workloads,
                nemeses,
                seeds,
                preset,
                out,
                doc,
            } => {
                let base = common.spec(WorkloadKind::Register, "none", 1, out.clone(), None);
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                let code = runner::run_matrix(base, workloads, nemeses, &seeds, preset.as_deref(), &out).await;
                if let Some(doc) = doc {
                    if let Err(e) = runner::write_doc(&doc, &out, &command) {
                        eprintln!("rudder-jepsen: writing {}: {e}", doc.display());
                        return 3;
                    }
                }
                code
            }
            Command::Backup { common, seed, out } => {
                runner::run_backup(common.spec(WorkloadKind::Set, "none", seed, out, None)).await
            }
            Command::Check { dir, checker_budget } => runner::recheck(&dir, checker_budget),
            Command::Cleanup => runner::cleanup(),
            Command::Proxy {
                listen,
                upstream,
                control,
            } => runner::proxy(&listen, &upstream, &control).await,
        }
    });
    ExitCode::from(code)
}
