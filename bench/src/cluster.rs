//! Three-member mode (`--members 3`): three processes of one target on loopback, formed with etcd's
//! static-bootstrap flags; the load phases spread over the members, memory summed over them, and a
//! failover measurement (SIGKILL the leader, time until a client that knows every endpoint gets a
//! write through again).

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions};
use rand::Rng;
use serde::Serialize;

use crate::load;
use crate::server::{log_tail, parse_memory, Launcher, Memory, Target};

/// Members per cluster in this mode.
pub const MEMBERS: usize = 3;
/// Ports come from here rather than port 0: the kernel's ephemeral range is where outgoing
/// connections take their source ports, so a port picked there could be taken again before a
/// restarted member rebinds it.
const PORT_RANGE: std::ops::Range<u16> = 10_000..32_000;
/// Per-request deadline of the failover client: short, so a request stuck on the dead leader turns
/// into a retry instead of hiding the moment the cluster recovers.
const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Give up on a failover after this long; reported as failed.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// Steady writes before the kill, so the client's connections are warm and the loop is in its
/// stationary state when the leader dies.
const FAILOVER_WARMUP: Duration = Duration::from_secs(1);

/// One failover repeat.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverRun {
    /// 1-based repeat number.
    pub repeat: usize,
    /// Name (m1..m3) of the member that was leader and got SIGKILLed.
    pub killed: Option<String>,
    /// From SIGKILL to the completion of the first successful put issued after it.
    pub recovery_ms: Option<f64>,
    /// Puts that failed (error or timeout) between the kill and that first success.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Set when the repeat could not be measured.
    pub error: Option<String>,
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    fn ensure_running(&mut self, target: Target) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{target} {} is not running", self.name);
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "{target} {} exited ({status}){}",
                self.name,
                log_tail(&self.log_path, 15)
            );
        }
        Ok(())
    }
}

/// Three running members. Dropping it kills them all and removes their directory.
pub struct Cluster {
    launcher: Launcher,
    dir: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
}

/// Reserves `n` distinct free loopback ports in `PORT_RANGE` (held open until all are chosen, so
/// they are distinct).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut rng = rand::rng();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n * 200 {
        if held.len() == n {
            break;
        }
        let port = rng.random_range(PORT_RANGE);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        bail!("could not find {n} free ports in {PORT_RANGE:?}");
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl Cluster {
    /// Starts three members with fresh data dirs under `work_dir/instance` and waits until each
    /// answers a linearizable get and they agree on a leader.
    pub async fn start(launcher: &Launcher, work_dir: &Path, instance: &str, timeout: Duration) -> Result<Cluster> {
        if !launcher.binary.is_file() {
            bail!("{} binary not found at {}", launcher.target, launcher.binary.display());
        }
        let dir = work_dir.join(instance);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing old {}", dir.display()))?;
        }
        let ports = free_ports(2 * MEMBERS)?;
        let mut members = Vec::with_capacity(MEMBERS);
        for i in 0..MEMBERS {
            let name = format!("m{}", i + 1);
            let member_dir = dir.join(&name);
            fs::create_dir_all(&member_dir).with_context(|| format!("creating {}", member_dir.display()))?;
            members.push(Member {
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: member_dir.join("data"),
                log_path: member_dir.join("server.log"),
                name,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            launcher: launcher.clone(),
            dir,
            members,
            initial_cluster,
        };
        for i in 0..MEMBERS {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(timeout).await?;
        Ok(cluster)
    }

    /// Starts member `i` (again). A restarted member keeps its data dir; both etcd and rudder then
    /// ignore the bootstrap flags and rejoin from their log.
    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .with_context(|| format!("opening {}", m.log_path.display()))?;
        let mut cmd = self.launcher.command();
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("bench")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| {
            format!(
                "spawning {} {} ({})",
                self.launcher.target,
                m.name,
                self.launcher.binary.display()
            )
        })?;
        m.child = Some(child);
        Ok(())
    }

    pub fn target(&self) -> Target {
        self.launcher.target
    }

    /// Client URLs of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Client URLs rotated so the leader comes first: the load generator assigns connection `i` to
    /// endpoint `i % 3`, so the single-connection phase always talks to the leader (no forwarding
    /// hop whose presence would depend on which member won the election) and 16 connections still
    /// spread 6/5/5 over the members.
    pub async fn endpoints_leader_first(&self) -> Result<Vec<String>> {
        let leader = self.leader().await?;
        let mut eps = self.endpoints();
        eps.rotate_left(leader);
        Ok(eps)
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        let target = self.target();
        self.members.iter_mut().try_for_each(|m| m.ensure_running(target))
    }

    /// VmRSS and VmHWM summed over the members.
    pub fn memory(&self) -> Result<Memory> {
        let mut total = Memory {
            rss_mib: 0.0,
            hwm_mib: 0.0,
        };
        for m in &self.members {
            let pid = m.child.as_ref().context("member not running")?.id();
            let path = format!("/proc/{pid}/status");
            let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let mem = parse_memory(&status).with_context(|| format!("parsing {path}"))?;
            total.rss_mib += mem.rss_mib;
            total.hwm_mib += mem.hwm_mib;
        }
        Ok(total)
    }

    /// Index of the member that reports itself as leader (Maintenance.Status: leader == own id).
    async fn leader(&self) -> Result<usize> {
        let mut last_err = anyhow!("no member answered");
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let probe = async {
                let mut client = load::connect(&m.client_url).await?;
                let status = client.status().await?;
                let own = status
                    .header()
                    .map(|h| h.member_id())
                    .context("status without header")?;
                anyhow::Ok(status.leader() != 0 && status.leader() == own)
            };
            match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(true)) => return Ok(i),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = anyhow!("status of {} timed out", m.name),
            }
        }
        Err(last_err.context("no member reports itself as leader"))
    }

    /// Waits until every running member answers a linearizable get (which needs a leader) and one
    /// of them reports itself as leader.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_err = anyhow!("no attempt made");
        loop {
            self.ensure_running()?;
            if Instant::now() >= deadline {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| format!("\n{}:{}", m.name, log_tail(&m.log_path, 5)))
                    .collect();
                bail!(
                    "{} cluster not ready within {timeout:?} (last error: {last_err:#}){logs}",
                    self.target()
                );
            }
            let attempt = async {
                for m in &self.members {
                    let mut client = load::connect(&m.client_url).await?;
                    client.get("rudder-bench/health", None).await?;
                }
                self.leader().await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = anyhow!("health probe timed out"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One failover: a single client with all three endpoints puts in a loop; the leader is
    /// SIGKILLed; the result is the time from the kill to the completion of the first put that was
    /// issued after the kill and succeeded. Puts in flight at the kill do not count: one that
    /// completes afterwards may have been committed by the old leader. The killed member is
    /// restarted and the cluster waited for before returning, ready for the next repeat.
    pub async fn failover(&mut self, repeat: usize, timeout: Duration) -> FailoverRun {
        let mut run = FailoverRun {
            repeat,
            killed: None,
            recovery_ms: None,
            errors: 0,
            first_error: None,
            error: None,
        };
        let leader = match self.leader().await {
            Ok(l) => l,
            Err(e) => {
                run.error = Some(format!("finding the leader: {e:#}"));
                return run;
            }
        };
        run.killed = Some(self.members[leader].name.clone());
        match self.measure_failover(leader).await {
            Ok((ms, errors, first_error)) => {
                run.recovery_ms = ms;
                run.errors = errors;
                run.first_error = first_error;
                if ms.is_none() {
                    run.error = Some(format!("no write succeeded within {FAILOVER_LIMIT:?} of the kill"));
                }
            }
            Err(e) => run.error = Some(format!("{e:#}")),
        }
        // Bring the member back (even if the measurement failed) so the next repeat again starts
        // from three members.
        if self.members[leader].child.is_none() {
            let back = match self.spawn(leader) {
                Ok(()) => self.wait_ready(timeout).await,
                Err(e) => Err(e),
            };
            if let Err(e) = back {
                let msg = format!("restarting {}: {e:#}", self.members[leader].name);
                run.error = Some(run.error.map_or(msg.clone(), |prev| format!("{prev}; {msg}")));
            }
        }
        run
    }

    async fn measure_failover(&mut self, leader: usize) -> Result<(Option<f64>, u64, Option<String>)> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(FAILOVER_REQUEST_TIMEOUT);
        let client = Client::connect(self.endpoints(), Some(options))
            .await
            .context("connecting the failover client")?;
        let killed_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let loop_task = tokio::spawn(put_until_recovered(client.kv_client(), Arc::clone(&killed_at)));
        tokio::time::sleep(FAILOVER_WARMUP).await;
        if loop_task.is_finished() {
            bail!("the put loop ended before the kill");
        }
        let member = &mut self.members[leader];
        let Some(mut child) = member.child.take() else {
            bail!("leader {} is not running", member.name);
        };
        // `kill` sends SIGKILL synchronously, so the instant taken right after is the kill time.
        child.kill().context("sending SIGKILL to the leader")?;
        let _ = killed_at.set(Instant::now());
        let _ = child.wait();
        loop_task.await.context("failover put loop panicked")
    }
}

/// The failover client's loop: puts one key after another until a put issued after the kill
/// succeeds (or `FAILOVER_LIMIT` after the kill). Returns (recovery ms, errors after the kill,
/// first such error).
async fn put_until_recovered(
    mut kv: etcd_client::KvClient,
    killed_at: Arc<OnceLock<Instant>>,
) -> (Option<f64>, u64, Option<String>) {
    let mut errors = 0;
    let mut first_error = None;
    let mut seq: u64 = 0;
    loop {
        let issued = Instant::now();
        let kill = killed_at.get().copied();
        if kill.is_some_and(|k| issued.duration_since(k) > FAILOVER_LIMIT) {
            return (None, errors, first_error);
        }
        seq += 1;
        let result = kv.put("rudder-bench/failover", seq.to_string(), None).await;
        match (result, kill) {
            (Ok(_), Some(k)) => return (Some(k.elapsed().as_secs_f64() * 1000.0), errors, first_error),
            (Ok(_), None) => {}
            (Err(e), _) => {
                // Errors before the kill are counted too: they would mean the baseline was not
                // steady, which the report should show.
                errors += 1;
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
                // A short pause so a refused connection does not spin; 1 ms keeps the
                // measurement's resolution well below election timeouts.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports = free_ports(6).expect("free ports");
        assert_eq!(ports.len(), 6);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(ports.iter().all(|p| PORT_RANGE.contains(p)));
    }
}
