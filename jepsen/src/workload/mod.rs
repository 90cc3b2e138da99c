//! Client workloads: each drives the cluster through the etcd v3 API with a few logical processes and
//! records every operation in the history. A workload runs its generators until the deadline, then, after
//! the nemesis has healed the cluster, `finish` does its final reads.
//!
//! Clients are pinned to one node each (process p talks to node p mod n), as Jepsen's are, so a fault on
//! a node shows up in that node's clients' operations.

mod append;
mod client;
mod keys;
mod kubernetes;
mod lease;
mod register;
mod set;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as signal;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::Recorder;

pub use client::{classify, connect, Outcome};

/// The workloads the suite knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Register,
    Set,
    Append,
    Watch,
    Lease,
    Kubernetes,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::Append => "append",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Lease => "lease",
            WorkloadKind::Kubernetes => "kubernetes",
        }
    }

    /// The key prefix the workload writes under (the watch checker is told it).
    pub fn prefix(self) -> String {
        format!("/jepsen/{}/", self.name())
    }

    pub fn all() -> [WorkloadKind; 6] {
        use WorkloadKind::*;
        [Register, Set, Append, Watch, Lease, Kubernetes]
    }
}

/// What every workload needs.
pub struct Ctx {
    pub recorder: Arc<Recorder>,
    /// Client URLs, one per node.
    pub endpoints: Vec<String>,
    /// Logical client processes (their count stays fixed; ids change after `info`).
    pub concurrency: usize,
    /// Target operations per second over all processes.
    pub rate: f64,
    /// Per-request timeout; a write that times out is recorded `info`.
    pub timeout: Duration,
    /// Generators stop issuing operations at this instant.
    pub deadline: Instant,
    pub seed: u64,
    /// Added to process ids, so two workloads in one run keep apart.
    pub id_base: u64,
    /// Unique values across the run.
    next_value: AtomicU64,
}

impl Ctx {
    pub fn new(
        recorder: Arc<Recorder>,
        endpoints: Vec<String>,
        concurrency: usize,
        rate: f64,
        timeout: Duration,
        deadline: Instant,
        seed: u64,
    ) -> Self {
        Ctx {
            recorder,
            endpoints,
            concurrency,
            rate,
            timeout,
            deadline,
            seed,
            id_base: 0,
            next_value: AtomicU64::new(1),
        }
    }

    /// Moves process ids and unique values to start at `base`, for a second workload in the same run.
    pub fn offset(mut self, base: u64) -> Self {
        self.id_base = base;
        self.next_value = AtomicU64::new(base + 1);
        self
    }

    /// A value never written before in this run.
    pub fn unique(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// The node a process talks to.
    pub fn node_of(&self, process: u64) -> usize {
        (process % self.endpoints.len().max(1) as u64) as usize
    }

    /// Pause between one process's operations so that all together make `rate`.
    pub fn pace(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.concurrency as f64 / self.rate)
    }
}

/// A started workload: generator tasks (end at the deadline) and background tasks (watchers, which the
/// final phase stops).
pub struct Running {
    kind: WorkloadKind,
    generators: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    stop_background: signal::Sender<bool>,
    state: Arc<watch::WatchState>,
}

/// Starts a workload's processes.
pub fn start(kind: WorkloadKind, ctx: Arc<Ctx>) -> Running {
    let (stop_tx, stop_rx) = signal::channel(false);
    let state = Arc::new(watch::WatchState::default());
    let mut generators = Vec::new();
    let mut background = Vec::new();
    match kind {
        WorkloadKind::Register => generators.extend(register::start(&ctx)),
        WorkloadKind::Set => generators.extend(set::start(&ctx)),
        WorkloadKind::Append => generators.extend(append::start(&ctx)),
        WorkloadKind::Lease => generators.extend(lease::start(&ctx)),
        WorkloadKind::Watch => {
            background.extend(watch::start_watchers(&ctx, &kind.prefix(), state.clone(), stop_rx));
            generators.extend(watch::start_writers(&ctx, &kind.prefix()));
        }
        WorkloadKind::Kubernetes => {
            background.extend(watch::start_watchers(&ctx, &kind.prefix(), state.clone(), stop_rx));
            generators.extend(kubernetes::start(&ctx));
        }
    }
    Running {
        kind,
        generators,
        background,
        stop_background: stop_tx,
        state,
    }
}

impl Running {
    /// Waits for the generators (they stop at the deadline by themselves).
    pub async fn wait_generators(&mut self) {
        for g in self.generators.drain(..) {
            let _ = g.await;
        }
    }

    /// The final phase, on a healed cluster: final reads, and for watch workloads a last write every
    /// watcher must see before it stops (or `settle` runs out).
    pub async fn finish(mut self, ctx: Arc<Ctx>, settle: Duration) {
        self.wait_generators().await;
        match self.kind {
            WorkloadKind::Set => set::final_reads(&ctx).await,
            WorkloadKind::Register | WorkloadKind::Append | WorkloadKind::Lease => {}
            WorkloadKind::Kubernetes => kubernetes::final_list(&ctx).await,
            WorkloadKind::Watch => {}
        }
        if !self.background.is_empty() {
            let prefix = self.kind.prefix();
            if let Some(rev) = watch::final_write(&ctx, &prefix).await {
                watch::wait_caught_up(&self.state, rev, settle).await;
            }
            let _ = self.stop_background.send(true);
            for b in self.background.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(5), b).await;
            }
        }
    }
}
