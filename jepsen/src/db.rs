//! The store under test: one process per node, started in the node's namespace with etcd's flags, for
//! Rudder (`rudder store ...`) or etcd. Each node's peers reach it through a peer proxy (see
//! [`crate::nemesis::proxy`]) when proxying is on; libfaketime is preloaded when clock faults are on.
//!
//! `Cluster` is shared (`&self` everywhere, state behind a mutex) so the nemesis and the workload can use
//! it at once. It owns the [`Topology`]; processes never outlive it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::nemesis::proxy::{self, ProxyControl};
use crate::net::{NetError, Topology};

pub const CLIENT_PORT: u16 = 2379;
/// The advertised peer port: the proxy when proxying, else the node itself.
pub const PEER_PORT: u16 = 2380;
/// Where the node really listens for peers when a proxy fronts it.
pub const PEER_BACKEND_PORT: u16 = 2381;

pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// `<binary> store <etcd flags>`.
    Rudder { binary: PathBuf },
    /// `<binary> <etcd flags>`.
    Etcd { binary: PathBuf },
}

impl DbKind {
    pub fn name(&self) -> &'static str {
        match self {
            DbKind::Rudder { .. } => "rudder",
            DbKind::Etcd { .. } => "etcd",
        }
    }

    /// Whether a libfaketime offset reaches the store's clock: Go reads time through the vDSO, not libc.
    pub fn clock_faults_apply(&self) -> bool {
        matches!(self, DbKind::Rudder { .. })
    }
}

/// How the peer proxy is started inside a node's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyLaunch {
    /// `<program> proxy --listen A --upstream B --control F`: the rudder-jepsen binary.
    Subcommand(PathBuf),
    /// `<program> <args>` with `RUDDER_JEPSEN_PROXY_{LISTEN,UPSTREAM,CONTROL}` set: a test binary
    /// re-running itself (see [`proxy::proxy_args_from_env`]).
    Env { program: PathBuf, args: Vec<String> },
}

/// Which clocks libfaketime shifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faketime {
    /// Wall clock only, as a skewed NTP clock would be. Costs a file read per wall-clock read.
    Realtime,
    /// Wall and monotonic clocks (timers, leases, elections feel it too; offsets may move the monotonic
    /// clock backwards, which no real machine does). Costs a file read per clock read.
    RealtimeAndMonotonic,
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Logs, data dirs, proxy and clock control files go under `<run_dir>/nodes/`.
    pub run_dir: PathBuf,
    /// Appended to every node's flags (`--quota-backend-bytes ...`, bug injection, ...).
    pub extra_args: Vec<String>,
    /// `None`: no proxies, peers dial the nodes directly (delay and proxy drop faults do nothing).
    pub proxy: Option<ProxyLaunch>,
    /// `None`: no libfaketime (clock faults do nothing).
    pub faketime: Option<Faketime>,
    pub cluster_token: String,
}

impl ClusterOptions {
    /// Proxies through this very binary (`current_exe() proxy ...`), wall-clock faking on.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            run_dir: run_dir.into(),
            extra_args: Vec::new(),
            proxy: std::env::current_exe().ok().map(ProxyLaunch::Subcommand),
            faketime: Some(Faketime::Realtime),
            cluster_token: "rudder-jepsen".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node index {0} out of range")]
    NoSuchNode(usize),
    #[error("n{node}: {msg}")]
    Node { node: usize, msg: String },
    #[error("n{node} exited ({status}); log tail:\n{log}")]
    Exited { node: usize, status: String, log: String },
    #[error("n{node}: {source}")]
    Client {
        node: usize,
        #[source]
        source: etcd_client::Error,
    },
    #[error("cluster not ready after {timeout:?}: {detail}")]
    NotReady { timeout: Duration, detail: String },
    #[error("{0}")]
    Membership(String),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

/// What a node is doing, from the harness's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Running,
    Paused,
    /// Killed or never started; still a member.
    Stopped,
    /// Removed from the membership (data wiped).
    Removed,
}

struct Node {
    child: Option<Child>,
    proxy: Option<Child>,
    paused: bool,
    removed: bool,
    /// `--initial-cluster` and `--initial-cluster-state` of the last start (a restart reuses them).
    initial_cluster: String,
    state: &'static str,
    starts: u32,
    /// Set when the process exited without being killed by us (cleared by the next start).
    died: Option<String>,
}

pub struct Cluster {
    kind: DbKind,
    opts: ClusterOptions,
    nodes: Mutex<Vec<Node>>,
    // Declared last: dropped after the processes are killed.
    topo: Topology,
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    /// Starts one store process (and proxy) per node of `topo`. Does not wait: call [`Self::wait_ready`].
    pub fn start(topo: Topology, kind: DbKind, opts: ClusterOptions) -> Result<Cluster, DbError> {
        let n = topo.len();
        let nodes_dir = opts.run_dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir).map_err(|source| DbError::Io {
            what: format!("create {}", nodes_dir.display()),
            source,
        })?;
        let initial = (0..n)
            .map(|i| format!("{}={}", node_name(i), peer_url(&topo, i)))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n)
            .map(|_| Node {
                child: None,
                proxy: None,
                paused: false,
                removed: false,
                initial_cluster: initial.clone(),
                state: "new",
                starts: 0,
                died: None,
            })
            .collect();
        let cluster = Cluster {
            kind,
            opts,
            nodes: Mutex::new(nodes),
            topo,
        };
        // A run directory may hold an earlier run's nodes (CI reuses its output dir): their data names
        // another run's members and addresses, so every node starts empty, with a fresh log.
        for i in 0..n {
            cluster.clear_node(i)?;
        }
        for i in 0..n {
            cluster.set_clock_offset(i, 0)?;
            if cluster.opts.proxy.is_some() {
                proxy::write_control(&cluster.proxy_control_path(i), &ProxyControl::default())?;
                cluster.start_proxy(i)?;
            }
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// Removes node `i`'s data dir and logs, if an earlier run left any.
    fn clear_node(&self, i: usize) -> Result<(), DbError> {
        let proxy_log = self
            .opts
            .run_dir
            .join("nodes")
            .join(format!("{}.proxy.log", node_name(i)));
        for path in [self.log_path(i), proxy_log] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(DbError::Io {
                        what: format!("remove {}", path.display()),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        let dir = self.node_dir(i);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DbError::Io {
                what: format!("remove {}", dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    pub fn kind(&self) -> &DbKind {
        &self.kind
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    pub fn len(&self) -> usize {
        self.topo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topo.is_empty()
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// `http://<node ip>:2379` for every node (removed ones included: indexes stay stable).
    pub fn client_endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| client_url(&self.topo, i)).collect()
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.opts.run_dir.join("nodes").join(node_name(i))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("data")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.opts.run_dir.join("nodes").join(format!("{}.log", node_name(i)))
    }

    pub fn proxy_control_path(&self, i: usize) -> PathBuf {
        self.opts
            .run_dir
            .join("nodes")
            .join(format!("{}.proxy.json", node_name(i)))
    }

    pub fn clock_path(&self, i: usize) -> PathBuf {
        self.opts
            .run_dir
            .join("nodes")
            .join(format!("{}.faketime", node_name(i)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, i: usize) -> Result<(), DbError> {
        if i < self.len() {
            Ok(())
        } else {
            Err(DbError::NoSuchNode(i))
        }
    }

    fn note(&self, i: usize, msg: &str) {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(self.log_path(i)) {
            let _ = writeln!(f, "=== [rudder-jepsen] {msg}");
        }
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn args(&self, i: usize, initial_cluster: &str, state: &str) -> Vec<String> {
        let ip = self.topo.node_ip(i);
        let listen_peer = if self.opts.proxy.is_some() {
            PEER_BACKEND_PORT
        } else {
            PEER_PORT
        };
        let mut a: Vec<String> = Vec::new();
        if let DbKind::Rudder { .. } = self.kind {
            a.push("store".into());
        }
        let pairs = [
            ("--name", node_name(i)),
            ("--data-dir", self.data_dir(i).display().to_string()),
            ("--listen-client-urls", client_url(&self.topo, i)),
            ("--advertise-client-urls", client_url(&self.topo, i)),
            ("--listen-peer-urls", format!("http://{ip}:{listen_peer}")),
            ("--initial-advertise-peer-urls", peer_url(&self.topo, i)),
            ("--initial-cluster", initial_cluster.to_string()),
            ("--initial-cluster-state", state.to_string()),
            ("--initial-cluster-token", self.opts.cluster_token.clone()),
        ];
        for (k, v) in pairs {
            a.push(k.into());
            a.push(v);
        }
        a.extend(self.opts.extra_args.iter().cloned());
        a
    }

    fn log_stdio(&self, i: usize) -> Result<(Stdio, Stdio), DbError> {
        let path = self.log_path(i);
        let io = |source| DbError::Io {
            what: format!("open {}", path.display()),
            source,
        };
        let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        let g = f.try_clone().map_err(io)?;
        Ok((Stdio::from(f), Stdio::from(g)))
    }

    fn start_node(&self, i: usize) -> Result<(), DbError> {
        self.check(i)?;
        let mut nodes = self.lock();
        let node = &mut nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let binary = match &self.kind {
            DbKind::Rudder { binary } | DbKind::Etcd { binary } => binary,
        };
        let mut cmd = self.topo.command(i, binary);
        cmd.args(self.args(i, &node.initial_cluster, node.state));
        scrub_env(&mut cmd);
        // Start-up errors stay readable in the log tail.
        cmd.env("RUST_BACKTRACE", "0");
        if let Some(mode) = self.opts.faketime {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_path(i))
                .env("FAKETIME_NO_CACHE", "1");
            if mode == Faketime::Realtime {
                cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        let (out, err) = self.log_stdio(i)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        node.starts += 1;
        self.note(i, &format!("start #{}: {cmd:?}", node.starts));
        let child = cmd.spawn().map_err(|source| DbError::Io {
            what: format!("spawn {cmd:?}"),
            source,
        })?;
        tracing::debug!(node = i, pid = child.id(), "node started");
        node.child = Some(child);
        node.paused = false;
        node.died = None;
        Ok(())
    }

    fn start_proxy(&self, i: usize) -> Result<(), DbError> {
        let Some(launch) = &self.opts.proxy else { return Ok(()) };
        let ip = self.topo.node_ip(i);
        let listen = format!("{ip}:{PEER_PORT}");
        let upstream = format!("{ip}:{PEER_BACKEND_PORT}");
        let control = self.proxy_control_path(i);
        let mut cmd = match launch {
            ProxyLaunch::Subcommand(program) => {
                let mut c = self.topo.command(i, program);
                c.args(["proxy", "--listen", &listen, "--upstream", &upstream, "--control"])
                    .arg(&control);
                c
            }
            ProxyLaunch::Env { program, args } => {
                let mut c = self.topo.command(i, program);
                c.args(args)
                    .env(proxy::ENV_LISTEN, &listen)
                    .env(proxy::ENV_UPSTREAM, &upstream)
                    .env(proxy::ENV_CONTROL, &control);
                c
            }
        };
        let path = self
            .opts
            .run_dir
            .join("nodes")
            .join(format!("{}.proxy.log", node_name(i)));
        let io = |source| DbError::Io {
            what: format!("open {}", path.display()),
            source,
        };
        let log = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        let log2 = log.try_clone().map_err(io)?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(|source| DbError::Io {
            what: format!("spawn {cmd:?}"),
            source,
        })?;
        self.lock()[i].proxy = Some(child);
        Ok(())
    }

    /// Sets node `i`'s proxy behaviour (no-op without proxies).
    pub fn set_proxy(&self, i: usize, control: &ProxyControl) -> Result<(), DbError> {
        self.check(i)?;
        if self.opts.proxy.is_some() {
            proxy::write_control(&self.proxy_control_path(i), control)?;
        }
        Ok(())
    }

    /// Shifts node `i`'s clock by `offset_ms` from real time (libfaketime reads the file on every clock
    /// read). No-op effect without faketime or on etcd; see [`DbKind::clock_faults_apply`].
    pub fn set_clock_offset(&self, i: usize, offset_ms: i64) -> Result<(), DbError> {
        self.check(i)?;
        let path = self.clock_path(i);
        let sign = if offset_ms < 0 { '-' } else { '+' };
        let abs = offset_ms.unsigned_abs();
        let text = format!("{sign}{}.{:03}\n", abs / 1000, abs % 1000);
        let tmp = path.with_extension("tmp");
        let io = |source| DbError::Io {
            what: format!("write {}", path.display()),
            source,
        };
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn status(&self, i: usize) -> NodeStatus {
        let mut nodes = self.lock();
        let Some(node) = nodes.get_mut(i) else {
            return NodeStatus::Removed;
        };
        if node.removed {
            return NodeStatus::Removed;
        }
        // A node that died by itself counts as stopped.
        if let Some(child) = node.child.as_mut() {
            if let Ok(Some(st)) = child.try_wait() {
                tracing::warn!(node = i, status = %st, "node exited on its own");
                self.note(i, &format!("exited on its own: {st}"));
                node.child = None;
                node.paused = false;
                node.died = Some(st.to_string());
            }
        }
        match (&node.child, node.paused) {
            (None, _) => NodeStatus::Stopped,
            (Some(_), true) => NodeStatus::Paused,
            (Some(_), false) => NodeStatus::Running,
        }
    }

    pub fn statuses(&self) -> Vec<NodeStatus> {
        (0..self.len()).map(|i| self.status(i)).collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.lock().get(i).and_then(|n| n.child.as_ref()).map(Child::id)
    }

    /// SIGKILL and reap node `i` (paused or not). No-op if it is not running.
    pub fn kill(&self, i: usize) -> Result<(), DbError> {
        self.check(i)?;
        let child = {
            let mut nodes = self.lock();
            nodes[i].paused = false;
            nodes[i].child.take()
        };
        if let Some(mut child) = child {
            let _ = child.kill();
            let status = child.wait().map_err(|source| DbError::Io {
                what: format!("reap n{}", i + 1),
                source,
            })?;
            self.note(i, &format!("killed (SIGKILL): {status}"));
        }
        Ok(())
    }

    /// Starts node `i` again with the flags of its last start (its data dir is kept). No-op if running.
    pub fn restart(&self, i: usize) -> Result<(), DbError> {
        self.check(i)?;
        if self.lock()[i].removed {
            return Err(DbError::Node {
                node: i + 1,
                msg: "removed from the cluster; re-add it instead".into(),
            });
        }
        self.start_node(i)
    }

    fn signal(&self, i: usize, sig: Signal, paused: bool) -> Result<(), DbError> {
        self.check(i)?;
        let mut nodes = self.lock();
        let node = &mut nodes[i];
        let Some(child) = node.child.as_ref() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        kill(pid, sig).map_err(|e| DbError::Node {
            node: i + 1,
            msg: format!("{sig}: {e}"),
        })?;
        node.paused = paused;
        Ok(())
    }

    /// SIGSTOP node `i`.
    pub fn pause(&self, i: usize) -> Result<(), DbError> {
        self.signal(i, Signal::SIGSTOP, true)
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) -> Result<(), DbError> {
        self.signal(i, Signal::SIGCONT, false)
    }

    /// A client talking to node `i` only.
    pub async fn client(&self, i: usize) -> Result<Client, DbError> {
        self.check(i)?;
        connect(&client_url(&self.topo, i), CLIENT_TIMEOUT)
            .await
            .map_err(|source| DbError::Client { node: i + 1, source })
    }

    /// Node `i`'s member id, as it reports it.
    pub async fn member_id(&self, i: usize) -> Result<u64, DbError> {
        let mut c = self.client(i).await?;
        let st = c
            .status()
            .await
            .map_err(|source| DbError::Client { node: i + 1, source })?;
        st.header().map(|h| h.member_id()).ok_or_else(|| DbError::Node {
            node: i + 1,
            msg: "status without header".into(),
        })
    }

    /// The index of the node that says it is the leader, asking every running node. When several do (a
    /// deposed leader behind a partition may not know yet), the one with the highest term.
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.len() {
            if self.status(i) != NodeStatus::Running {
                continue;
            }
            let Ok(mut c) = self.client(i).await else { continue };
            if let Ok(st) = c.status().await {
                if st
                    .header()
                    .is_some_and(|h| h.member_id() == st.leader() && st.leader() != 0)
                    && best.is_none_or(|(term, _)| st.raft_term() > term)
                {
                    best = Some((st.raft_term(), i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits until every running node serves a linearizable read (what `etcdctl endpoint health` does).
    /// Fails early when a node exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), DbError> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<usize> = (0..self.len()).collect();
        loop {
            let mut still = Vec::new();
            for &i in &pending {
                match self.status(i) {
                    NodeStatus::Running => {}
                    NodeStatus::Stopped => {
                        if let Some(status) = self.lock()[i].died.clone() {
                            return Err(DbError::Exited {
                                node: i + 1,
                                status,
                                log: self.log_tail(i, 30),
                            });
                        }
                        continue;
                    }
                    NodeStatus::Paused | NodeStatus::Removed => continue,
                }
                if self.health(i).await.is_err() {
                    still.push(i);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let detail = still
                    .iter()
                    .map(|&i| format!("n{} not healthy; log tail:\n{}", i + 1, self.log_tail(i, 15)))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(DbError::NotReady { timeout, detail });
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One linearizable read through node `i`.
    pub async fn health(&self, i: usize) -> Result<(), DbError> {
        let mut c = self.client(i).await?;
        c.get("health", None)
            .await
            .map_err(|source| DbError::Client { node: i + 1, source })?;
        Ok(())
    }

    /// A client to some running node other than those in `avoid`.
    async fn healthy_client(&self, avoid: &[usize]) -> Result<(usize, Client), DbError> {
        for j in 0..self.len() {
            if avoid.contains(&j) || self.status(j) != NodeStatus::Running {
                continue;
            }
            if self.health(j).await.is_ok() {
                return Ok((j, self.client(j).await?));
            }
        }
        Err(DbError::Membership("no healthy member to ask".into()))
    }

    /// Removes node `i` from the membership (through another healthy member), stops it and wipes its
    /// data dir, as an operator replacing a member would.
    pub async fn remove_member(&self, i: usize) -> Result<(), DbError> {
        self.check(i)?;
        if self.lock()[i].removed {
            return Ok(());
        }
        let (via, mut c) = self.healthy_client(&[i]).await?;
        let list = c
            .member_list()
            .await
            .map_err(|source| DbError::Client { node: via + 1, source })?;
        let url = peer_url(&self.topo, i);
        let id = list
            .members()
            .iter()
            .find(|m| m.peer_urls().iter().any(|u| u == &url))
            .map(|m| m.id())
            .ok_or_else(|| DbError::Membership(format!("n{} ({url}) is not in the member list", i + 1)))?;
        c.member_remove(id)
            .await
            .map_err(|source| DbError::Client { node: via + 1, source })?;
        self.lock()[i].removed = true;
        self.kill(i)?;
        self.note(i, &format!("removed from the cluster (member {id:x}) via n{}", via + 1));
        let data = self.data_dir(i);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DbError::Io {
                what: format!("wipe {}", data.display()),
                source,
            }),
        }
    }

    /// Adds node `i` back (MemberAdd with its peer URL through a healthy member) and starts it empty with
    /// `--initial-cluster-state existing` and the current membership. Retries while the cluster refuses
    /// (etcd's strict reconfig check wants a healthy quorum), up to `timeout`.
    pub async fn readd_member(&self, i: usize, timeout: Duration) -> Result<(), DbError> {
        self.check(i)?;
        if !self.lock()[i].removed {
            return Ok(());
        }
        let url = peer_url(&self.topo, i);
        let deadline = Instant::now() + timeout;
        let resp = loop {
            let attempt = async {
                let (via, mut c) = self.healthy_client(&[i]).await?;
                c.member_add([url.as_str()], None)
                    .await
                    .map_err(|source| DbError::Client { node: via + 1, source })
            };
            match attempt.await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(node = i, error = %e, "member add refused, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut parts = Vec::new();
        for m in resp.member_list() {
            let Some(peer) = m.peer_urls().first() else { continue };
            // The new member has no name until it starts; every member here is one of ours.
            let name = match (0..self.len()).find(|&j| &peer_url(&self.topo, j) == peer) {
                Some(j) => node_name(j),
                None => m.name().to_string(),
            };
            parts.push(format!("{name}={peer}"));
        }
        {
            let mut nodes = self.lock();
            nodes[i].removed = false;
            nodes[i].initial_cluster = parts.join(",");
            nodes[i].state = "existing";
        }
        let data = self.data_dir(i);
        let _ = std::fs::remove_dir_all(&data);
        self.note(
            i,
            &format!("re-added as member {:x}", resp.member().map_or(0, |m| m.id())),
        );
        self.start_node(i)
    }

    /// SIGCONT and SIGKILL every process (nodes and proxies) and reap them.
    pub fn stop_all(&self) {
        let children: Vec<Child> = {
            let mut nodes = self.lock();
            nodes
                .iter_mut()
                .flat_map(|n| {
                    n.paused = false;
                    [n.child.take(), n.proxy.take()]
                })
                .flatten()
                .collect()
        };
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops every process and removes the network. Idempotent; also runs on drop.
    pub fn teardown(&self) -> Result<(), DbError> {
        self.stop_all();
        self.topo.teardown()?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn client_url(topo: &Topology, i: usize) -> String {
    format!("http://{}:{CLIENT_PORT}", topo.node_ip(i))
}

/// The advertised peer URL (the proxy's address when proxying).
pub fn peer_url(topo: &Topology, i: usize) -> String {
    format!("http://{}:{PEER_PORT}", topo.node_ip(i))
}

/// etcd reads `ETCD_*` variables as flags: a developer's shell must not leak into the nodes.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str()
            .is_some_and(|k| k.starts_with("ETCD_") || k.starts_with("FAKETIME"))
        {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("LD_PRELOAD");
}

/// A client with short timeouts, for the harness's own checks.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Client, etcd_client::Error> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    Client::connect([endpoint], Some(opts)).await
}
