//! Faults: a seeded schedule ([`plan()`]) and the [`Nemesis`] that carries it out against a [`Cluster`],
//! recording each fault's start and stop in the history, then heals everything at the end.
//!
//! One file per family: `process` (kill, pause), `partition`, `proxy` (the peer proxy behind delay and
//! drop), `clock`, `membership`, `storage` (compaction, quota).

mod clock;
mod membership;
mod partition;
mod plan;
mod process;
pub mod proxy;
mod storage;

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::db::{Cluster, DbError, NodeStatus};
use crate::history::{NemesisPhase, Recorder};
use crate::net::{Grudge, NetError};

pub use plan::{plan, plan_with, Plan, PlanOptions, Step};
pub use proxy::{run_proxy, run_proxy_blocking, ProxyControl};
pub use storage::QUOTA_PREFIX;

/// A nemesis name as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    None,
    Kill,
    Pause,
    Partition,
    Delay,
    Drop,
    Clock,
    Membership,
    Compaction,
    Quota,
}

impl NemesisKind {
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Delay => "delay",
            NemesisKind::Drop => "drop",
            NemesisKind::Clock => "clock",
            NemesisKind::Membership => "membership",
            NemesisKind::Compaction => "compaction",
            NemesisKind::Quota => "quota",
        }
    }

    /// What `all` means.
    pub fn all_faults() -> [NemesisKind; 9] {
        use NemesisKind::*;
        [
            Kill, Pause, Partition, Delay, Drop, Clock, Membership, Compaction, Quota,
        ]
    }

    /// Store flags the fault needs: quota only fills a small backend.
    pub fn extra_args(self) -> Vec<String> {
        match self {
            NemesisKind::Quota => vec![
                "--quota-backend-bytes".into(),
                storage::SUGGESTED_QUOTA_BYTES.to_string(),
            ],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = NemesisError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        std::iter::once(NemesisKind::None)
            .chain(NemesisKind::all_faults())
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| NemesisError::Parse(format!("unknown nemesis {s:?}")))
    }
}

/// Parses `kill,partition`, `all` (every fault) or `none`.
pub fn parse_nemeses(spec: &str) -> Result<Vec<NemesisKind>, NemesisError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            out.extend(NemesisKind::all_faults());
        } else {
            out.push(part.parse()?);
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(NemesisError::Parse(format!("no nemesis in {spec:?}")));
    }
    Ok(out)
}

/// Which nodes a process or clock fault hits. Nodes are 0-based indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    One(usize),
    /// Whoever leads when the fault starts.
    Leader,
    Minority(Vec<usize>),
    All,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionScheme {
    /// One node cut off from all others.
    IsolateOne(usize),
    /// The listed minority on one side, the rest on the other.
    MajorityMinority { minority: Vec<usize> },
    /// 5+ nodes in `order` around a ring; each sees itself and its two neighbours on either side within
    /// a majority, so every node sees a majority and no two see the same one.
    MajoritiesRing { order: Vec<usize> },
    /// `order` split in two halves, the middle node talking to both.
    Bridge { order: Vec<usize> },
    /// Whoever leads when the fault starts, cut off from all others.
    IsolateLeader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropVia {
    /// The peer proxies reset connections (per chunk and per new connection).
    Proxy,
    /// iptables drops peer packets at random (TCP retransmits what is lost).
    Packets,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    /// SIGKILL, then restart at the end.
    Kill(Targets),
    /// SIGSTOP, then SIGCONT at the end.
    Pause(Targets),
    Partition(PartitionScheme),
    /// Peer proxies delay every chunk by `delay_ms` +- `jitter_ms`.
    Delay {
        delay_ms: u64,
        jitter_ms: u64,
    },
    Drop {
        probability: f64,
        via: DropVia,
    },
    /// The targets' clocks jump by `offset_ms` for the fault's duration.
    ClockBump {
        targets: Targets,
        offset_ms: i64,
    },
    /// The targets' clocks alternate between +`delta_ms` and real time every `period_ms`.
    ClockStrobe {
        targets: Targets,
        delta_ms: i64,
        period_ms: u64,
    },
    /// Remove a member, re-add it at the end.
    Membership(Targets),
    /// Compact at the current revision at the start, defragment every member at the end.
    Compaction,
    /// Fill the store until NOSPACE, then recover (delete, compact, defragment, disarm).
    Quota,
}

impl Fault {
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Kill(_) => NemesisKind::Kill,
            Fault::Pause(_) => NemesisKind::Pause,
            Fault::Partition(_) => NemesisKind::Partition,
            Fault::Delay { .. } => NemesisKind::Delay,
            Fault::Drop { .. } => NemesisKind::Drop,
            Fault::ClockBump { .. } | Fault::ClockStrobe { .. } => NemesisKind::Clock,
            Fault::Membership(_) => NemesisKind::Membership,
            Fault::Compaction => NemesisKind::Compaction,
            Fault::Quota => NemesisKind::Quota,
        }
    }

    /// The `fault` name recorded in the history.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The `fault` name of the final heal's events.
pub const HEAL: &str = "heal";

#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("{0}")]
    Parse(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{0}")]
    Fault(String),
    #[error("heal failed: {0}")]
    Heal(String),
}

impl NemesisError {
    fn client(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> NemesisError {
        let what = what.into();
        move |source| NemesisError::Client { what, source }
    }
}

#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// How long the final heal may wait for a healthy cluster.
    pub heal_timeout: Duration,
    /// How long a re-added member may take to be accepted (MemberAdd retries).
    pub member_timeout: Duration,
    /// Size of each filler value of the quota fault (under the default --max-request-bytes).
    pub quota_value_bytes: usize,
    /// The quota fault gives up filling after this many bytes (the store was not started with a small
    /// --quota-backend-bytes).
    pub quota_fill_limit_bytes: u64,
    pub quota_fill_timeout: Duration,
}

impl Default for NemesisOptions {
    fn default() -> Self {
        NemesisOptions {
            heal_timeout: Duration::from_secs(60),
            member_timeout: Duration::from_secs(30),
            quota_value_bytes: 512 * 1024,
            quota_fill_limit_bytes: 4 * storage::SUGGESTED_QUOTA_BYTES,
            quota_fill_timeout: Duration::from_secs(60),
        }
    }
}

/// A fault with its targets resolved, ready to start.
#[derive(Debug)]
enum Action {
    Kill(Vec<usize>),
    Pause(Vec<usize>),
    Partition(Grudge),
    Proxy(ProxyControl),
    PacketDrop(f64),
    Clock {
        nodes: Vec<usize>,
        offset_ms: i64,
        strobe: Option<Duration>,
    },
    Membership(usize),
    Compaction,
    Quota,
}

/// Carries out plans. Random choices at run time (a node when there is no leader) come from the seed.
pub struct Nemesis {
    opts: NemesisOptions,
    rng: Mutex<StdRng>,
    /// The quota fault's filler may still be in the store (a heal must remove it).
    quota_dirty: Mutex<bool>,
}

impl Nemesis {
    pub fn new(seed: u64, opts: NemesisOptions) -> Self {
        Nemesis {
            opts,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321)),
            quota_dirty: Mutex::new(false),
        }
    }

    pub fn options(&self) -> &NemesisOptions {
        &self.opts
    }

    fn random_node(&self, cluster: &Cluster) -> usize {
        let live: Vec<usize> = (0..cluster.len())
            .filter(|&i| cluster.status(i) != NodeStatus::Removed)
            .collect();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        match live.len() {
            0 => 0,
            n => live[rng.random_range(0..n)],
        }
    }

    /// The leader, or a random node when none answers (the detail says which).
    async fn leader_or_random(&self, cluster: &Cluster) -> (usize, String) {
        match cluster.leader().await {
            Some(l) => (l, "leader".to_string()),
            None => {
                let i = self.random_node(cluster);
                (i, "no leader found, random node".to_string())
            }
        }
    }

    async fn resolve(&self, targets: &Targets, cluster: &Cluster) -> (Vec<usize>, String) {
        let n = cluster.len();
        match targets {
            Targets::One(i) => (vec![(*i).min(n.saturating_sub(1))], "one".into()),
            Targets::Leader => {
                let (i, why) = self.leader_or_random(cluster).await;
                (vec![i], why)
            }
            Targets::Minority(v) => (v.iter().copied().filter(|&i| i < n).collect(), "minority".into()),
            Targets::All => ((0..n).collect(), "all".into()),
        }
    }

    /// Resolves a fault's targets and describes what it is about to do.
    async fn prepare(&self, fault: &Fault, cluster: &Cluster) -> (Action, String) {
        match fault {
            Fault::Kill(t) => {
                let (nodes, why) = self.resolve(t, cluster).await;
                let d = format!("kill -9 {} ({why})", names(&nodes));
                (Action::Kill(nodes), d)
            }
            Fault::Pause(t) => {
                let (nodes, why) = self.resolve(t, cluster).await;
                let d = format!("SIGSTOP {} ({why})", names(&nodes));
                (Action::Pause(nodes), d)
            }
            Fault::Partition(scheme) => {
                let leader = match scheme {
                    PartitionScheme::IsolateLeader => Some(self.leader_or_random(cluster).await),
                    _ => None,
                };
                let (grudge, d) = partition::grudge_for(scheme, cluster.len(), leader);
                (Action::Partition(grudge), d)
            }
            Fault::Delay { delay_ms, jitter_ms } => {
                let c = ProxyControl {
                    delay_ms: *delay_ms,
                    jitter_ms: *jitter_ms,
                    ..Default::default()
                };
                (
                    Action::Proxy(c),
                    format!("peer proxies delay {delay_ms}±{jitter_ms} ms each way"),
                )
            }
            Fault::Drop {
                probability,
                via: DropVia::Proxy,
            } => {
                let c = ProxyControl {
                    drop_probability: *probability,
                    ..Default::default()
                };
                let d = format!("peer proxies reset connections with p={probability:.2} per chunk");
                (Action::Proxy(c), d)
            }
            Fault::Drop {
                probability,
                via: DropVia::Packets,
            } => (
                Action::PacketDrop(*probability),
                format!("iptables drops {:.0}% of peer packets", probability * 100.0),
            ),
            Fault::ClockBump { targets, offset_ms } => {
                let (nodes, why) = self.resolve(targets, cluster).await;
                let d = format!(
                    "bump clock of {} ({why}) by {}{}",
                    names(&nodes),
                    secs(*offset_ms),
                    clock::caveat(cluster)
                );
                (
                    Action::Clock {
                        nodes,
                        offset_ms: *offset_ms,
                        strobe: None,
                    },
                    d,
                )
            }
            Fault::ClockStrobe {
                targets,
                delta_ms,
                period_ms,
            } => {
                let (nodes, why) = self.resolve(targets, cluster).await;
                let d = format!(
                    "strobe clock of {} ({why}) between {} and 0 every {period_ms} ms{}",
                    names(&nodes),
                    secs(*delta_ms),
                    clock::caveat(cluster)
                );
                let strobe = Some(Duration::from_millis((*period_ms).max(1)));
                (
                    Action::Clock {
                        nodes,
                        offset_ms: *delta_ms,
                        strobe,
                    },
                    d,
                )
            }
            Fault::Membership(t) => {
                let (nodes, why) = self.resolve(t, cluster).await;
                let i = nodes.first().copied().unwrap_or(0);
                (Action::Membership(i), format!("remove member {} ({why})", names(&[i])))
            }
            Fault::Compaction => (Action::Compaction, "compact at the current revision".into()),
            Fault::Quota => (
                Action::Quota,
                format!(
                    "fill with {} KiB values until NOSPACE",
                    self.opts.quota_value_bytes / 1024
                ),
            ),
        }
    }

    /// Starts the fault; returns notes for the stop record.
    async fn begin(&self, action: &Action, cluster: &Cluster) -> Result<String, NemesisError> {
        match action {
            Action::Kill(nodes) => process::kill(cluster, nodes),
            Action::Pause(nodes) => process::pause(cluster, nodes),
            Action::Partition(g) => partition::apply(cluster, g),
            Action::Proxy(c) => {
                for i in 0..cluster.len() {
                    cluster.set_proxy(i, c)?;
                }
                Ok(if cluster.options().proxy.is_none() {
                    "no peer proxies in this run: no effect".into()
                } else {
                    String::new()
                })
            }
            Action::PacketDrop(p) => {
                cluster
                    .topology()
                    .drop_packets(&(0..cluster.len()).collect::<Vec<_>>(), *p)?;
                Ok(String::new())
            }
            Action::Clock { nodes, offset_ms, .. } => clock::set(cluster, nodes, *offset_ms),
            Action::Membership(i) => membership::remove(cluster, *i).await,
            Action::Compaction => storage::compact(cluster).await,
            Action::Quota => {
                *self.quota_dirty.lock().unwrap_or_else(|p| p.into_inner()) = true;
                storage::fill(cluster, &self.opts).await
            }
        }
    }

    /// Holds the fault for `duration`; false if `stop` fired first.
    async fn hold(
        &self,
        action: &Action,
        cluster: &Cluster,
        duration: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        match action {
            Action::Clock {
                nodes,
                offset_ms,
                strobe: Some(period),
            } => clock::strobe(cluster, nodes, *offset_ms, *period, duration, stop).await,
            _ => sleep_or_stop(duration, stop).await,
        }
    }

    /// Ends the fault; returns what was done.
    async fn end(&self, action: &Action, cluster: &Cluster) -> Result<String, NemesisError> {
        match action {
            Action::Kill(nodes) => process::restart(cluster, nodes),
            Action::Pause(nodes) => process::resume(cluster, nodes),
            Action::Partition(_) | Action::PacketDrop(_) => {
                cluster.topology().heal()?;
                Ok("healed (iptables flushed)".into())
            }
            Action::Proxy(_) => {
                for i in 0..cluster.len() {
                    cluster.set_proxy(i, &ProxyControl::default())?;
                }
                Ok("peer proxies cleared".into())
            }
            Action::Clock { nodes, .. } => clock::reset(cluster, nodes),
            Action::Membership(i) => membership::readd(cluster, *i, self.opts.member_timeout).await,
            Action::Compaction => storage::defragment_all(cluster).await,
            Action::Quota => {
                let d = storage::recover(cluster).await?;
                *self.quota_dirty.lock().unwrap_or_else(|p| p.into_inner()) = false;
                Ok(d)
            }
        }
    }

    /// Runs one fault: start, hold, stop, each recorded. False if `stop` fired.
    pub async fn execute(
        &self,
        fault: &Fault,
        duration: Duration,
        cluster: &Cluster,
        recorder: &Recorder,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let name = fault.name();
        let (action, detail) = self.prepare(fault, cluster).await;
        tracing::info!(fault = name, %detail, "nemesis start");
        recorder.nemesis(name, NemesisPhase::Start, detail);
        let notes = match self.begin(&action, cluster).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(fault = name, error = %e, "fault did not start cleanly");
                format!("start failed: {e}")
            }
        };
        let go_on = self.hold(&action, cluster, duration, stop).await;
        let mut detail = match self.end(&action, cluster).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(fault = name, error = %e, "fault did not stop cleanly");
                format!("stop failed: {e}")
            }
        };
        if !notes.is_empty() {
            detail = format!("{detail}; {notes}");
        }
        tracing::info!(fault = name, %detail, "nemesis stop");
        recorder.nemesis(name, NemesisPhase::Stop, detail);
        go_on
    }

    /// Carries out `plan` from now: each step at its time, then the final heal (also when `stop` turns
    /// true early). Faults that fail are recorded and skipped; only a failed heal is an error.
    pub async fn run(
        &self,
        plan: &Plan,
        cluster: &Cluster,
        recorder: &Recorder,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), NemesisError> {
        let start = Instant::now();
        for step in &plan.steps {
            let wait = (start + step.at).saturating_duration_since(Instant::now());
            if !sleep_or_stop(wait, &mut stop).await {
                break;
            }
            if !self
                .execute(&step.fault, step.duration, cluster, recorder, &mut stop)
                .await
            {
                break;
            }
        }
        recorder.nemesis(HEAL, NemesisPhase::Start, "final heal".into());
        let res = self.heal_all(cluster).await;
        let detail = match &res {
            Ok(d) => d.clone(),
            Err(e) => format!("failed: {e}"),
        };
        recorder.nemesis(HEAL, NemesisPhase::Stop, detail);
        res.map(drop)
    }

    /// Undoes every fault (flush iptables, clear proxies, reset clocks, SIGCONT, restart, re-add, remove
    /// the quota filler) and waits until the cluster is healthy. Returns what it did.
    pub async fn heal_all(&self, cluster: &Cluster) -> Result<String, NemesisError> {
        let mut did: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut note = |r: Result<String, NemesisError>| match r {
            Ok(s) if !s.is_empty() => did.push(s),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        };
        note(
            cluster
                .topology()
                .heal()
                .map(|_| "iptables flushed".into())
                .map_err(Into::into),
        );
        for i in 0..cluster.len() {
            note(
                cluster
                    .set_proxy(i, &ProxyControl::default())
                    .map(|_| String::new())
                    .map_err(Into::into),
            );
            note(
                cluster
                    .set_clock_offset(i, 0)
                    .map(|_| String::new())
                    .map_err(Into::into),
            );
        }
        let statuses = cluster.statuses();
        let paused: Vec<usize> = (0..statuses.len())
            .filter(|&i| statuses[i] == NodeStatus::Paused)
            .collect();
        if !paused.is_empty() {
            note(process::resume(cluster, &paused));
        }
        let stopped: Vec<usize> = (0..statuses.len())
            .filter(|&i| statuses[i] == NodeStatus::Stopped)
            .collect();
        if !stopped.is_empty() {
            note(process::restart(cluster, &stopped));
        }
        for i in (0..statuses.len()).filter(|&i| statuses[i] == NodeStatus::Removed) {
            note(membership::readd(cluster, i, self.opts.member_timeout).await);
        }
        if let Err(e) = cluster.wait_ready(self.opts.heal_timeout).await {
            errors.push(e.to_string());
        } else {
            did.push("cluster healthy".into());
        }
        let dirty = *self.quota_dirty.lock().unwrap_or_else(|p| p.into_inner());
        if dirty && errors.is_empty() {
            match storage::recover(cluster).await {
                Ok(d) => {
                    did.push(format!("quota: {d}"));
                    *self.quota_dirty.lock().unwrap_or_else(|p| p.into_inner()) = false;
                }
                Err(e) => errors.push(format!("quota recovery: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(did.join("; "))
        } else {
            Err(NemesisError::Heal(errors.join("; ")))
        }
    }
}

/// Sleeps `d`; false if `stop` turned true first. A dropped sender never stops us.
pub async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let deadline = Instant::now() + d;
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => true,
        r = stop.wait_for(|s| *s) => {
            if r.is_ok() {
                false
            } else {
                tokio::time::sleep_until(deadline).await;
                true
            }
        }
    }
}

/// "n1 n3".
pub fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&i| crate::db::node_name(i))
        .collect::<Vec<_>>()
        .join(" ")
}

fn secs(ms: i64) -> String {
    format!(
        "{}{:.3} s",
        if ms < 0 { "-" } else { "+" },
        ms.unsigned_abs() as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nemesis_lists() {
        assert_eq!(
            parse_nemeses("kill, partition").unwrap(),
            vec![NemesisKind::Kill, NemesisKind::Partition]
        );
        assert_eq!(parse_nemeses("all").unwrap().len(), 9);
        assert_eq!(parse_nemeses("none").unwrap(), vec![NemesisKind::None]);
        assert!(parse_nemeses("kill,bogus").is_err());
        assert!(parse_nemeses("").is_err());
    }

    #[test]
    fn names_and_seconds() {
        assert_eq!(names(&[0, 2]), "n1 n3");
        assert_eq!(secs(-1500), "-1.500 s");
        assert_eq!(secs(250), "+0.250 s");
    }
}
