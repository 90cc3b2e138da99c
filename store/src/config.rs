//! The store's settings, named after etcd's flags.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep this much history by time.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<url::Url>,
    pub advertise_client_urls: Vec<url::Url>,
    pub listen_peer_urls: Vec<url::Url>,
    pub initial_advertise_peer_urls: Vec<url::Url>,
    /// name -> peer URLs
    pub initial_cluster: Vec<(String, Vec<url::Url>)>,
    pub initial_cluster_token: String,
    /// `--initial-cluster-state new` (bootstrap) rather than `existing` (join).
    pub initial_cluster_state_new: bool,
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// Applied entries between Raft snapshots (after which older log entries are purged).
    pub snapshot_count: u64,
    pub auto_compaction: AutoCompaction,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// etcd's default --progress-notify interval for watches.
    pub watch_progress_notify_interval: Duration,
}

/// etcd's default backend quota: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's default --max-request-bytes: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// gRPC accepts this much more than --max-request-bytes, as etcd does.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl StoreConfig {
    /// Defaults as etcd's: member "default" in "default.etcd", clients on localhost:2379.
    pub fn new(name: &str) -> Self {
        let u = |s: &str| url::Url::parse(s).expect("static URL parses");
        StoreConfig {
            name: name.to_string(),
            data_dir: PathBuf::from(format!("{name}.etcd")),
            listen_client_urls: vec![u("http://localhost:2379")],
            advertise_client_urls: vec![u("http://localhost:2379")],
            listen_peer_urls: vec![u("http://localhost:2380")],
            initial_advertise_peer_urls: vec![u("http://localhost:2380")],
            initial_cluster: vec![(name.to_string(), vec![u("http://localhost:2380")])],
            initial_cluster_token: "etcd-cluster".to_string(),
            initial_cluster_state_new: true,
            quota_backend_bytes: DEFAULT_QUOTA_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            snapshot_count: 100_000,
            auto_compaction: AutoCompaction::Off,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            watch_progress_notify_interval: Duration::from_secs(600),
        }
    }

    /// The smallest lease TTL etcd grants: 1.5 election timeouts, rounded up to seconds.
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64 * 3 / 2;
        (ms + 999) / 1000
    }
}
