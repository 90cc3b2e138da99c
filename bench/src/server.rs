//! Lifecycle of one server under test: fresh data dir, start with etcd's flags, wait until it serves
//! a linearizable read, sample its memory, stop it. The child is killed when the handle is dropped,
//! so every exit path (errors, panics, Ctrl-C dropping the main future) cleans up.

use std::fmt;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::load;

/// The two kinds of server the harness knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Rudder,
    Etcd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rudder => "rudder",
            Target::Etcd => "etcd",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to launch a target: the binary and the arguments that precede etcd's flags.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub target: Target,
    pub binary: PathBuf,
}

impl Launcher {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        if self.target == Target::Rudder {
            cmd.arg("store");
        }
        cmd
    }
}

/// Resident memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// VmRSS in MiB.
    pub rss_mib: f64,
    /// VmHWM (peak resident set) in MiB.
    pub hwm_mib: f64,
}

/// A running server. Dropping it kills the process and removes its data dir.
pub struct Server {
    target: Target,
    child: Child,
    endpoint: String,
    /// Instance directory: the data dir and the server's log.
    dir: PathBuf,
    log_path: PathBuf,
}

/// Picks a free loopback port by binding to port 0 and releasing it.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `n` lines of a log file, for error messages: `"; last log lines:\n..."`, or a note that
/// the log is empty or unreadable.
pub fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if tail.trim().is_empty() {
                " (its log is empty)".to_string()
            } else {
                format!("; last log lines:\n{tail}")
            }
        }
        Err(e) => format!(" (cannot read {}: {e})", path.display()),
    }
}

impl Server {
    /// Starts `launcher`'s binary with a fresh data dir under `work_dir/instance` and waits up to
    /// `timeout` for it to answer a linearizable get.
    pub async fn start(launcher: &Launcher, work_dir: &Path, instance: &str, timeout: Duration) -> Result<Server> {
        if !launcher.binary.is_file() {
            bail!("{} binary not found at {}", launcher.target, launcher.binary.display());
        }
        let dir = work_dir.join(instance);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing old {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let data_dir = dir.join("data");
        let log_path = dir.join("server.log");
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let name = "bench";
        let mut cmd = launcher.command();
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} ({})", launcher.target, launcher.binary.display()))?;
        let mut server = Server {
            target: launcher.target,
            child,
            endpoint,
            dir,
            log_path,
        };
        server.wait_healthy(timeout).await?;
        Ok(server)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_err = anyhow!("no attempt made");
        loop {
            self.ensure_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer a linearizable get within {timeout:?} (last error: {last_err:#}){}",
                    self.target,
                    log_tail(&self.log_path, 15)
                );
            }
            let attempt = async {
                let mut client = load::connect(&self.endpoint).await?;
                client.get("rudder-bench/health", None).await?; // linearizable: needs a leader
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = anyhow!("health probe timed out"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails (with the log tail) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}){}", self.target, log_tail(&self.log_path, 15));
        }
        Ok(())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// VmRSS and VmHWM of the server process.
    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_memory(&status).with_context(|| format!("parsing {path}"))
    }

    /// Kills the process, waits for it and deletes its data dir and log.
    pub fn stop(mut self) -> Result<()> {
        self.kill();
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    fn kill(&mut self) {
        // SIGKILL: the data is thrown away, so there is nothing for a graceful shutdown to protect.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn parse_memory(status: &str) -> Result<Memory> {
    let rss = parse_kib(status, "VmRSS").context("no VmRSS line")?;
    let hwm = parse_kib(status, "VmHWM").context("no VmHWM line")?;
    Ok(Memory {
        rss_mib: rss as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
    })
}

/// `BINARY --version` (or `etcdctl version`), trimmed and joined on one line; `None` if it does not
/// answer within a few seconds with a zero exit status and some output.
pub async fn version_of(binary: &Path, arg: &str) -> Option<String> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg(arg).stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(5), cmd.output())
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    (out.status.success() && !joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tetcd\nVmPeak:\t  999 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        let m = parse_memory(status).expect("parses");
        assert_eq!(m.rss_mib, 20.0);
        assert_eq!(m.hwm_mib, 40.0);
        assert!(parse_memory("Name: x\n").is_err());
    }
}
