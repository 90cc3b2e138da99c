//! Several `rudder store` members on loopback, as separate processes with etcd's static bootstrap
//! flags, and Debian's etcdctl pointed at them. Shared by the cluster and bug-injection tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{etcdctl_bin, free_port};

pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Flags given to every start of this member.
    pub extra: Vec<String>,
}

impl Member {
    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    /// Another handle on the same member (ports, data dir, flags), not running.
    pub fn stopped_copy(&self) -> Member {
        Member {
            name: self.name.clone(),
            client: self.client,
            peer: self.peer,
            dir: self.dir.clone(),
            child: None,
            extra: self.extra.clone(),
        }
    }

    pub fn start(&mut self, initial_cluster: &str, state: &str) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rudder"))
            .args(["store", "--name", &self.name, "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &Self::url(self.client),
                "--advertise-client-urls",
                &Self::url(self.client),
            ])
            .args([
                "--listen-peer-urls",
                &Self::url(self.peer),
                "--initial-advertise-peer-urls",
                &Self::url(self.peer),
            ])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", state])
            .args(&self.extra)
            // Keep start-up errors readable in the log tail (no backtrace after them).
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rudder store");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// The member's whole log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    /// Flags every member (also one added later) starts with.
    pub extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

/// etcdctl (API v3) against `endpoints` (comma separated), 3 s per command.
pub fn ctl(endpoints: &str, args: &[&str]) -> Result<String, String> {
    ctl_with_timeout(endpoints, "3s", args)
}

pub fn ctl_with_timeout(endpoints: &str, timeout: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=2s")
        .arg(format!("--command-timeout={timeout}"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Cluster {
    /// `n` members bootstrapped together, each healthy before this returns.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                dir: tmp.path().join(format!("m{i}")),
                child: None,
                extra: extra.clone(),
            })
            .collect();
        let ic = Self::initial_cluster(&members);
        for m in &mut members {
            m.start(&ic, "new");
        }
        let c = Cluster {
            members,
            extra,
            _tmp: tmp,
        };
        c.wait_healthy();
        c
    }

    /// A data dir for a member added later, inside the cluster's temp dir.
    pub fn dir_for(&self, name: &str) -> PathBuf {
        self._tmp.path().join(name)
    }

    pub fn initial_cluster(members: &[Member]) -> String {
        members
            .iter()
            .map(|m| format!("{}={}", m.name, Member::url(m.peer)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            while ctl(&m.endpoint(), &["endpoint", "health"]).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{} never became healthy:\n{}",
                    m.name,
                    m.log_tail()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Index of the running member that reports itself leader.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.child.is_some()
                && ctl(&m.endpoint(), &["endpoint", "status", "-w", "json"])
                    .ok()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .is_some_and(|v| v[0]["Status"]["leader"] == v[0]["Status"]["header"]["member_id"])
        })
    }

    pub fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Member `i`'s id, in hex as etcdctl prints it.
    pub fn member_id(&self, i: usize) -> String {
        let out = ctl(&self.members[i].endpoint(), &["endpoint", "status", "-w", "json"]).expect("status");
        let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
        format!(
            "{:x}",
            v[0]["Status"]["header"]["member_id"].as_u64().expect("member id")
        )
    }
}
