//! `rudder store`: an etcd member. Flag names, defaults and ETCD_* environment variables follow etcd's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rudder_store::backup::schedule::ScheduleConfig;
use rudder_store::config::{AutoCompaction, InjectedBugs, StoreConfig};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: "${name}.etcd").
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    listen_client_urls: String,
    /// Client URLs of this member to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peerURL,...).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to the 2 GiB quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Interpret 'auto-compaction-retention' as one of: 'periodic', 'revision'.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Auto compaction retention for mvcc key value store. 0 means disable auto compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Duration of periodic watch progress notifications.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    experimental_watch_progress_notify_interval: String,
    /// Currently only supports 'debug', 'info', 'warn', 'error', 'panic', or 'fatal'.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Save an etcd-format snapshot this often (e.g. 30m, 10s; bare numbers are seconds); 0 disables.
    #[arg(long, default_value = "0")]
    snapshot_interval: String,
    /// How many scheduled snapshots to keep (the newest); 0 keeps them all.
    #[arg(long, default_value_t = 5)]
    snapshot_retention: usize,
    /// Directory for scheduled snapshots (default: <data-dir>/snapshots).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    /// UNSAFE, tests only: inject a known bug (stale-read, ack-before-fsync, drop-watch-event);
    /// repeatable or comma-separated. Refused without --unsafe-allow-bug-injection. See README (Tests).
    #[arg(long, hide = true, value_name = "NAME")]
    unsafe_inject_bug: Vec<String>,
    /// Confirms --unsafe-inject-bug.
    #[arg(long, hide = true)]
    unsafe_allow_bug_injection: bool,
}

fn parse_urls(flag: &str, v: &str) -> anyhow::Result<Vec<url::Url>> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| url::Url::parse(s.trim()).with_context(|| format!("--{flag}: invalid URL {s:?}")))
        .collect()
}

/// The scheduled-snapshot settings shared by `rudder store` and `rudder server`.
pub fn snapshot_schedule(
    interval: &str,
    retention: usize,
    dir: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<ScheduleConfig> {
    Ok(ScheduleConfig {
        interval: parse_duration(interval, Duration::from_secs(1)).context("--snapshot-interval")?,
        retention,
        dir: dir.map(Path::to_path_buf).unwrap_or_else(|| data_dir.join("snapshots")),
    })
}

/// etcd durations: "10m", "1h30m", "500ms", "5s"; a bare number means `bare_unit`.
pub fn parse_duration(v: &str, bare_unit: Duration) -> anyhow::Result<Duration> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(bare_unit * n as u32);
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num.parse().with_context(|| format!("invalid duration {v:?}"))?;
        num.clear();
        let secs = match unit.as_str() {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => bail!("invalid duration {v:?}"),
        };
        total += Duration::from_secs_f64(secs);
    }
    if !num.is_empty() {
        bail!("invalid duration {v:?}: missing unit");
    }
    Ok(total)
}

impl StoreArgs {
    fn config(&self) -> anyhow::Result<StoreConfig> {
        let mut c = StoreConfig::new(&self.name);
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        c.listen_client_urls = parse_urls("listen-client-urls", &self.listen_client_urls)?;
        c.advertise_client_urls = parse_urls("advertise-client-urls", &self.advertise_client_urls)?;
        c.listen_peer_urls = parse_urls("listen-peer-urls", &self.listen_peer_urls)?;
        c.initial_advertise_peer_urls = parse_urls("initial-advertise-peer-urls", &self.initial_advertise_peer_urls)?;
        c.initial_cluster = match &self.initial_cluster {
            None => vec![(self.name.clone(), c.initial_advertise_peer_urls.clone())],
            Some(spec) => {
                let mut members: Vec<(String, Vec<url::Url>)> = Vec::new();
                for part in spec.split(',').filter(|s| !s.is_empty()) {
                    let (name, u) = part
                        .split_once('=')
                        .with_context(|| format!("--initial-cluster: expected name=URL, got {part:?}"))?;
                    let u = url::Url::parse(u).with_context(|| format!("--initial-cluster: invalid URL {u:?}"))?;
                    match members.iter_mut().find(|(n, _)| n == name) {
                        Some((_, urls)) => urls.push(u),
                        None => members.push((name.to_string(), vec![u])),
                    }
                }
                members
            }
        };
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            bail!(
                "--initial-cluster-state: expected 'new' or 'existing', got {:?}",
                self.initial_cluster_state
            );
        }
        c.initial_cluster_token = self.initial_cluster_token.clone();
        c.initial_cluster_state_new = self.initial_cluster_state == "new";
        if self.quota_backend_bytes > 0 {
            c.quota_backend_bytes = self.quota_backend_bytes;
        }
        c.max_request_bytes = self.max_request_bytes;
        c.max_txn_ops = self.max_txn_ops;
        c.snapshot_count = self.snapshot_count;
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        c.election_timeout = Duration::from_millis(self.election_timeout);
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        c.watch_progress_notify_interval = parse_duration(
            &self.experimental_watch_progress_notify_interval,
            Duration::from_secs(1),
        )?;
        c.auto_compaction = match (
            self.auto_compaction_mode.as_str(),
            self.auto_compaction_retention.as_str(),
        ) {
            (_, "0") | (_, "") => AutoCompaction::Off,
            ("periodic", r) => AutoCompaction::Periodic(parse_duration(r, Duration::from_secs(3600))?),
            ("revision", r) => AutoCompaction::Revision(
                r.parse()
                    .with_context(|| format!("--auto-compaction-retention: expected a revision count, got {r:?}"))?,
            ),
            (m, _) => bail!("unknown auto-compaction-mode {m:?}"),
        };
        c.injected_bugs = InjectedBugs::parse(&self.unsafe_inject_bug, self.unsafe_allow_bug_injection)?;
        Ok(c)
    }
}

pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    let level = match args.log_level.as_str() {
        "panic" | "fatal" => "error",
        l => l,
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(format!("{level},openraft=warn")).unwrap_or_default())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = args.config()?;
    let schedule = snapshot_schedule(
        &args.snapshot_interval,
        args.snapshot_retention,
        args.snapshot_dir.as_deref(),
        &config.data_dir,
    )?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // An explicit TOKIO_WORKER_THREADS wins; tokio reads it only when no count is set here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(store_worker_threads());
    }
    let rt = runtime.enable_all().build()?;
    rt.block_on(serve(config, schedule))
}

/// One worker per two cores. A store's request path is short (decode, propose, wait for the group
/// commit, answer), so spreading it over every core costs a cross-thread wake-up per request (measured:
/// 1.6 futex calls and 1.8 extra writes per 1-client put on two workers, none on one) without adding
/// throughput; RocksDB's flush and compaction threads and the fsync use the other cores.
fn store_worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

async fn serve(config: StoreConfig, schedule: ScheduleConfig) -> anyhow::Result<()> {
    let listeners = rudder_store::server::bind(&config.listen_client_urls)
        .await
        .context("binding --listen-client-urls")?;
    let node = rudder_store::node::StoreNode::start(config.clone())
        .await
        .context("starting the store")?;
    let router = rudder_store::server::router(node.clone());
    tracing::info!(
        name = %node.member.name,
        member_id = %format!("{:x}", node.member.id),
        cluster_id = %format!("{:x}", node.cluster_id),
        data_dir = %config.data_dir.display(),
        clients = %config.listen_client_urls.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(","),
        "ready to serve client requests"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        tasks.spawn(rudder_store::server::serve(l, router.clone()));
    }
    rudder_store::backup::schedule::spawn(&node, schedule);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received interrupt, shutting down"),
        _ = terminate() => tracing::info!("received SIGTERM, shutting down"),
        _ = node.removed() => {
            node.shutdown().await;
            anyhow::bail!("the member has been permanently removed from the cluster");
        }
        r = tasks.join_next() => if let Some(Ok(Err(e))) = r { return Err(e).context("client server") },
    }
    node.shutdown().await;
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
