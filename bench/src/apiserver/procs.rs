//! The processes under test: `rudder server` on its embedded store, or on Debian's etcd started here.
//! Every child is killed when its guard drops, on every exit path.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

/// Which store the API server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `rudder server` with its embedded single-member store.
    Rudder,
    /// `rudder server --etcd-servers` pointing at Debian's etcd.
    Etcd,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Rudder => "on Rudder's store",
            Store::Etcd => "on etcd 3.4.23",
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// A child process, killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Guard> {
    let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let g = f.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(g)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(Guard(child))
}

/// A running API server (and the etcd under it, if any) with a kube-rs client.
pub struct Target {
    pub client: kube::Client,
    server: Guard,
    etcd: Option<Guard>,
    dir: PathBuf,
}

impl Target {
    pub async fn start(store: Store, rudder: &Path, etcd_bin: &Path, work: &Path) -> Result<Target> {
        let dir = work.join(match store {
            Store::Rudder => "apiserver-rudder",
            Store::Etcd => "apiserver-etcd",
        });
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(rudder);
        cmd.arg("server").arg("--data-dir").arg(dir.join("data")).args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &free_port()?.to_string(),
        ]);
        let etcd = match store {
            Store::Rudder => {
                cmd.args(["--store-client-url", &format!("http://127.0.0.1:{}", free_port()?)]);
                cmd.args(["--store-peer-url", &format!("http://127.0.0.1:{}", free_port()?)]);
                None
            }
            Store::Etcd => {
                let client = format!("http://127.0.0.1:{}", free_port()?);
                let peer = format!("http://127.0.0.1:{}", free_port()?);
                let mut e = Command::new(etcd_bin);
                e.args(["--name", "bench", "--data-dir"])
                    .arg(dir.join("etcd"))
                    .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("bench={peer}")]);
                let guard = spawn(&mut e, &dir.join("etcd.log"))?;
                cmd.args(["--etcd-servers", &client]);
                Some(guard)
            }
        };
        let server = spawn(&mut cmd, &dir.join("server.log"))?;
        let kubeconfig = dir.join("data").join("kubeconfig.yaml");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(client) = ready_client(&kubeconfig).await {
                return Ok(Target {
                    client,
                    server,
                    etcd,
                    dir,
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "rudder server {} not ready within 60 s; see {}",
                    store.label(),
                    dir.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Resident memory (VmRSS, VmHWM) in MiB of the API server process and of etcd (if any).
    pub fn memory(&self) -> (Option<Rss>, Option<Rss>) {
        (rss(self.server.0.id()), self.etcd.as_ref().and_then(|g| rss(g.0.id())))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The guards kill the processes; the data goes with them.
        let _ = fs::remove_dir_all(self.dir.join("data"));
        let _ = fs::remove_dir_all(self.dir.join("etcd"));
    }
}

async fn ready_client(kubeconfig: &Path) -> Option<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .ok()?;
    let client = kube::Client::try_from(config).ok()?;
    // The bootstrap namespaces exist once the server is serving.
    Api::<Namespace>::all(client.clone()).get("default").await.ok()?;
    Some(client)
}

/// (VmRSS, VmHWM) in MiB.
pub type Rss = (f64, f64);

fn rss(pid: u32) -> Option<Rss> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
