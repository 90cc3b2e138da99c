//! A run's network: one namespace per node, all plugged into a bridge that lives in a switch namespace
//! (so the root namespace's firewall stays out of the path), plus a veth from the root namespace into the
//! bridge so the harness reaches every node as a client. Partitions are iptables rules inside the node
//! namespaces and only ever name peer addresses, so client traffic from the root is never cut.
//!
//! Everything a run creates is listed in a registry file under [`REGISTRY_DIR`] before it is created, so
//! [`cleanup_all`] can remove what an interrupted run left behind (processes included).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where run registries live (tmpfs: a reboot clears them together with the namespaces).
pub const REGISTRY_DIR: &str = "/run/rudder-jepsen";

/// Node `i` drops packets from every node in `grudge[i]`.
pub type Grudge = BTreeMap<usize, BTreeSet<usize>>;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` could not be run: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {path}: {source}")]
    Registry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {path}: {source}")]
    RegistryFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no free 10.77.x.0/24 subnet for a new run")]
    NoSubnet,
    #[error("invalid topology request: {0}")]
    Invalid(String),
    #[error("signal handler: {0}")]
    Signal(String),
}

/// Runs a command to completion; a non-zero exit becomes [`NetError::Command`] with its stderr.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

type RegistryEntry = (PathBuf, Result<Registry, NetError>);

/// What a run created (or is about to create): enough to undo it from another process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Registry {
    pub run_id: String,
    /// The harness process; a registry whose owner is gone is a leftover.
    pub owner_pid: u32,
    /// The owner's start time (clock ticks since boot, /proc/<pid>/stat field 22), against pid reuse.
    pub owner_start: u64,
    /// The third octet of 10.77.<subnet>.0/24.
    pub subnet: u8,
    pub switch_ns: String,
    pub node_ns: Vec<String>,
    /// The root namespace's end of the harness veth.
    pub host_veth: String,
}

impl Registry {
    fn path_of(run_id: &str) -> PathBuf {
        Path::new(REGISTRY_DIR).join(format!("{run_id}.json"))
    }

    /// Written to a temporary file and renamed, so a reader never sees half a registry.
    fn write(&self) -> Result<(), NetError> {
        let path = Self::path_of(&self.run_id);
        let tmp = path.with_extension("json.tmp");
        let io = |source| NetError::Registry {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|source| NetError::RegistryFormat {
            path: path.clone(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    fn read(path: &Path) -> Result<Registry, NetError> {
        let text = std::fs::read(path).map_err(|source| NetError::Registry {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| NetError::RegistryFormat {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Every registry file, parsed or not.
    fn all() -> Result<Vec<RegistryEntry>, NetError> {
        let dir = Path::new(REGISTRY_DIR);
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetError::Registry {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                let reg = Registry::read(&path);
                out.push((path, reg));
            }
        }
        Ok(out)
    }

    fn owner_alive(&self) -> bool {
        process_start_time(self.owner_pid) == Some(self.owner_start)
    }
}

/// Field 22 of /proc/<pid>/stat; `None` when the process is gone.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Serialises registry updates and subnet choice between concurrent harness processes.
fn registry_lock() -> Result<nix::fcntl::Flock<File>, NetError> {
    let dir = Path::new(REGISTRY_DIR);
    std::fs::create_dir_all(dir).map_err(|source| NetError::Registry {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| NetError::Registry {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| NetError::Registry {
        path,
        source: std::io::Error::from(e),
    })
}

fn netns_list() -> Result<BTreeSet<String>, NetError> {
    let out = run_cmd("ip", &["netns", "list"])?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn netns_pids(ns: &str) -> Vec<u32> {
    run_cmd("ip", &["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process in the namespaces and waits (briefly) until they are gone, since `ip netns
/// del` only drops the name while processes stay inside.
fn kill_namespace_processes(namespaces: &[String]) {
    for _ in 0..50 {
        let mut any = false;
        for ns in namespaces {
            for pid in netns_pids(ns) {
                any = true;
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(?namespaces, "processes still listed in the namespaces after SIGKILL");
}

/// Removes everything a registry lists; missing pieces are fine (it is written before creation).
fn remove_run(reg: &Registry) -> Result<(), NetError> {
    let existing = netns_list()?;
    let mut namespaces: Vec<String> = reg.node_ns.clone();
    namespaces.push(reg.switch_ns.clone());
    namespaces.retain(|ns| existing.contains(ns));
    kill_namespace_processes(&namespaces);
    let mut first_err = None;
    if link_exists(&reg.host_veth) {
        if let Err(e) = run_cmd("ip", &["link", "del", &reg.host_veth]) {
            first_err.get_or_insert(e);
        }
    }
    for ns in &namespaces {
        if let Err(e) = run_cmd("ip", &["netns", "del", ns]) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let path = Registry::path_of(&reg.run_id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Registry { path, source }),
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Removes the leftovers of every run whose harness process is gone; runs still owned by a live process
/// are left alone (another run may be going on). Returns the run ids removed.
pub fn cleanup_all() -> Result<Vec<String>, NetError> {
    let _lock = registry_lock()?;
    let mut removed = Vec::new();
    for (path, reg) in Registry::all()? {
        match reg {
            Ok(reg) if reg.owner_alive() => {}
            Ok(reg) => {
                tracing::info!(run = %reg.run_id, "removing leftovers of an interrupted run");
                remove_run(&reg)?;
                removed.push(reg.run_id);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable registry left alone"),
        }
    }
    Ok(removed)
}

/// Removes one run by id, whoever owns it (what a signal handler or an explicit request does).
pub fn cleanup_run(run_id: &str) -> Result<(), NetError> {
    let _lock = registry_lock()?;
    let path = Registry::path_of(run_id);
    if !path.exists() {
        return Ok(());
    }
    remove_run(&Registry::read(&path)?)
}

/// On the first SIGINT or SIGTERM: kill the run's processes, remove its network and registry, and exit
/// with 128 + the signal number. Needs a tokio runtime; abort the handle once the run is torn down.
pub fn cleanup_on_signal(run_id: &str) -> Result<tokio::task::JoinHandle<()>, NetError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handle = tokio::runtime::Handle::try_current().map_err(|e| NetError::Signal(e.to_string()))?;
    let _guard = handle.enter();
    let mut int = signal(SignalKind::interrupt()).map_err(|e| NetError::Signal(e.to_string()))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| NetError::Signal(e.to_string()))?;
    let run_id = run_id.to_string();
    Ok(handle.spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        tracing::warn!(run = %run_id, "signal received: tearing the run down");
        let id = run_id.clone();
        let res = tokio::task::spawn_blocking(move || cleanup_run(&id)).await;
        if let Ok(Err(e)) = res {
            tracing::error!(run = %run_id, error = %e, "cleanup after signal failed");
        }
        std::process::exit(code);
    }))
}

/// One run's network. Node `i` (0-based) is `10.77.<subnet>.<i+1>` in namespace `<run>-n<i+1>`; the
/// harness is `10.77.<subnet>.254` in the root namespace.
#[derive(Debug)]
pub struct Topology {
    reg: Registry,
    torn_down: AtomicBool,
}

impl Topology {
    /// Creates the switch, `nodes` node namespaces and the harness veth. Cleans up leftovers of dead runs
    /// first, and whatever it created itself if a step fails.
    pub fn create(nodes: usize) -> Result<Topology, NetError> {
        if nodes == 0 || nodes > 250 {
            return Err(NetError::Invalid(format!("{nodes} nodes (1..=250 supported)")));
        }
        if let Err(e) = cleanup_all() {
            tracing::warn!(error = %e, "cleanup of earlier runs failed");
        }
        let reg = {
            let _lock = registry_lock()?;
            let reg = Self::plan(nodes)?;
            reg.write()?;
            reg
        };
        let topo = Topology {
            reg,
            torn_down: AtomicBool::new(false),
        };
        if let Err(e) = topo.build() {
            let _ = topo.teardown();
            return Err(e);
        }
        tracing::info!(run = %topo.reg.run_id, subnet = %topo.subnet(), nodes, "network created");
        Ok(topo)
    }

    /// Picks a run id and subnet no live registry, namespace or root address uses.
    fn plan(nodes: usize) -> Result<Registry, NetError> {
        let namespaces = netns_list()?;
        let mut used: BTreeSet<u8> = Registry::all()?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .map(|r| r.subnet)
            .collect();
        let addrs = run_cmd("ip", &["-4", "-o", "addr", "show"])?;
        for word in addrs.split_whitespace() {
            if let Some(rest) = word.strip_prefix("10.77.") {
                if let Some(Ok(k)) = rest.split('.').next().map(str::parse::<u8>) {
                    used.insert(k);
                }
            }
        }
        let free: Vec<u8> = (1..=250u8).filter(|k| !used.contains(k)).collect();
        if free.is_empty() {
            return Err(NetError::NoSubnet);
        }
        let subnet = free[rand::random_range(0..free.len())];
        let run_id = loop {
            let id = format!("rj{:04x}", rand::random::<u16>());
            let taken = namespaces.iter().any(|ns| ns.starts_with(&id)) || Registry::path_of(&id).exists();
            if !taken && !link_exists(&format!("{id}h")) {
                break id;
            }
        };
        let me = std::process::id();
        Ok(Registry {
            switch_ns: format!("{run_id}sw"),
            node_ns: (1..=nodes).map(|k| format!("{run_id}-n{k}")).collect(),
            host_veth: format!("{run_id}h"),
            owner_pid: me,
            owner_start: process_start_time(me).unwrap_or(0),
            subnet,
            run_id,
        })
    }

    fn build(&self) -> Result<(), NetError> {
        let id = &self.reg.run_id;
        let sw = self.reg.switch_ns.as_str();
        run_cmd("ip", &["netns", "add", sw])?;
        run_cmd("ip", &["-n", sw, "link", "set", "lo", "up"])?;
        run_cmd("ip", &["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        run_cmd("ip", &["-n", sw, "link", "set", "br0", "up"])?;
        for (i, ns) in self.reg.node_ns.iter().enumerate() {
            let veth = format!("{id}v{}", i + 1);
            let addr = format!("{}/24", self.node_ip(i));
            run_cmd("ip", &["netns", "add", ns])?;
            run_cmd(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            run_cmd("ip", &["link", "set", &veth, "netns", sw])?;
            run_cmd("ip", &["-n", sw, "link", "set", &veth, "master", "br0", "up"])?;
            run_cmd("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            run_cmd("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run_cmd("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let host = self.reg.host_veth.as_str();
        let bridge_end = format!("{id}hb");
        let addr = format!("{}/24", self.host_ip());
        run_cmd(
            "ip",
            &["link", "add", host, "type", "veth", "peer", "name", &bridge_end],
        )?;
        run_cmd("ip", &["link", "set", &bridge_end, "netns", sw])?;
        run_cmd("ip", &["-n", sw, "link", "set", &bridge_end, "master", "br0", "up"])?;
        run_cmd("ip", &["addr", "add", &addr, "dev", host])?;
        run_cmd("ip", &["link", "set", host, "up"])?;
        Ok(())
    }

    pub fn run_id(&self) -> &str {
        &self.reg.run_id
    }

    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// The subnet, e.g. `10.77.17.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.77.{}.0/24", self.reg.subnet)
    }

    pub fn len(&self) -> usize {
        self.reg.node_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reg.node_ns.is_empty()
    }

    /// Namespace of node `i` (0-based). Panics never: out-of-range indexes yield an empty name that
    /// every command then rejects.
    pub fn node_ns(&self, i: usize) -> &str {
        self.reg.node_ns.get(i).map_or("", String::as_str)
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.reg.subnet, u8::try_from(i + 1).unwrap_or(u8::MAX))
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.reg.subnet, 254)
    }

    /// `ip netns exec <ns of node i> <program>`: add arguments, environment and stdio, then spawn.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.node_ns(i)]).arg(program);
        cmd
    }

    fn check_node(&self, i: usize) -> Result<(), NetError> {
        if i < self.len() {
            Ok(())
        } else {
            Err(NetError::Invalid(format!(
                "node index {i} (the run has {} nodes)",
                self.len()
            )))
        }
    }

    fn iptables(&self, i: usize, rule: &[&str]) -> Result<(), NetError> {
        self.check_node(i)?;
        let mut args = vec!["netns", "exec", self.node_ns(i), "iptables", "-w"];
        args.extend_from_slice(rule);
        run_cmd("ip", &args).map(drop)
    }

    /// Replaces any partition or drop rules with `grudge`: node `i` drops every packet from the nodes in
    /// `grudge[i]` (one-way; pass a symmetric grudge for a clean split).
    pub fn partition(&self, grudge: &Grudge) -> Result<(), NetError> {
        for (&i, from) in grudge {
            self.check_node(i)?;
            for &j in from {
                self.check_node(j)?;
            }
        }
        self.heal()?;
        for (&i, from) in grudge {
            for &j in from {
                let src = self.node_ip(j).to_string();
                self.iptables(i, &["-A", "INPUT", "-s", &src, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Node `i` drops each packet from every other node with `probability` (xt_statistic), on top of
    /// whatever rules are there.
    pub fn drop_packets(&self, nodes: &[usize], probability: f64) -> Result<(), NetError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(NetError::Invalid(format!("drop probability {probability}")));
        }
        let p = format!("{probability:.4}");
        for &i in nodes {
            self.check_node(i)?;
            for j in (0..self.len()).filter(|&j| j != i) {
                let src = self.node_ip(j).to_string();
                let rule = [
                    "-A",
                    "INPUT",
                    "-s",
                    &src,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                ];
                self.iptables(i, &[&rule[..], &["-j", "DROP"]].concat())?;
            }
        }
        Ok(())
    }

    /// Flushes every node's INPUT rules: the network is whole again.
    pub fn heal(&self) -> Result<(), NetError> {
        let mut first_err = None;
        for i in 0..self.len() {
            if let Err(e) = self.iptables(i, &["-F", "INPUT"]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The INPUT rules of node `i`, as `iptables -S` prints them (for tests and reports).
    pub fn rules(&self, i: usize) -> Result<String, NetError> {
        self.check_node(i)?;
        run_cmd(
            "ip",
            &["netns", "exec", self.node_ns(i), "iptables", "-w", "-S", "INPUT"],
        )
    }

    /// Kills every process in the run's namespaces, deletes them and the harness veth, and removes the
    /// registry. Idempotent; also runs on drop.
    pub fn teardown(&self) -> Result<(), NetError> {
        if self.torn_down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _lock = registry_lock()?;
        remove_run(&self.reg)?;
        self.torn_down.store(true, Ordering::SeqCst);
        tracing::info!(run = %self.reg.run_id, "network removed");
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(run = %self.reg.run_id, error = %e, "teardown failed; `rudder-jepsen cleanup` retries");
        }
    }
}

/// Grudge helpers for the partition schemes.
pub mod grudge {
    use super::Grudge;
    use std::collections::BTreeSet;

    /// Every node drops packets from every node outside its own component (components are disjoint).
    pub fn components(n: usize, parts: &[Vec<usize>]) -> Grudge {
        let mut g = Grudge::new();
        for part in parts {
            for &i in part {
                let others: BTreeSet<usize> = (0..n).filter(|j| !part.contains(j)).collect();
                if !others.is_empty() {
                    g.insert(i, others);
                }
            }
        }
        g
    }

    /// Every node drops packets from every node it does not `sees` (views may overlap: rings, bridges).
    pub fn from_views(n: usize, sees: impl Fn(usize, usize) -> bool) -> Grudge {
        let mut g = Grudge::new();
        for i in 0..n {
            let drops: BTreeSet<usize> = (0..n).filter(|&j| j != i && !sees(i, j)).collect();
            if !drops.is_empty() {
                g.insert(i, drops);
            }
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grudges() {
        let g = grudge::components(3, &[vec![0], vec![1, 2]]);
        assert_eq!(g[&0], BTreeSet::from([1, 2]));
        assert_eq!(g[&1], BTreeSet::from([0]));
        assert_eq!(g[&2], BTreeSet::from([0]));
        // A 5-node ring where each node sees its neighbours.
        let ring = grudge::from_views(5, |i, j| (i + 1) % 5 == j || (j + 1) % 5 == i);
        assert_eq!(ring[&0], BTreeSet::from([2, 3]));
        assert_eq!(ring.len(), 5);
    }

    #[test]
    fn start_time_of_self() {
        assert!(process_start_time(std::process::id()).is_some());
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
