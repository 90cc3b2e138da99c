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
    /// UNSAFE test-only bug injection (`--unsafe-inject-bug`); all off unless a test asks for it.
    pub injected_bugs: InjectedBugs,
}

/// Deliberate bugs for the Jepsen suite, which must show that its checkers catch real ones. Each one
/// breaks a guarantee the store otherwise keeps; none is ever on unless explicitly requested together
/// with `--unsafe-allow-bug-injection`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Linearizable reads skip ReadIndex and answer from the local applied state.
    pub stale_read: bool,
    /// The Raft log and the state machine write without the WAL and are acknowledged before any fsync.
    pub ack_before_fsync: bool,
    /// The watch feed drops the events of one revision in [`DROP_WATCH_EVENT_EVERY`].
    pub drop_watch_event: bool,
}

/// `drop-watch-event` drops every this-many-th published revision.
pub const DROP_WATCH_EVENT_EVERY: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BugInjectionError {
    #[error(
        "--unsafe-inject-bug {0} refused: bug injection breaks the store's guarantees and is for tests only; \
         add --unsafe-allow-bug-injection to really do it"
    )]
    NotAllowed(String),
    #[error("--unsafe-inject-bug: unknown bug {0:?} (known: {known})", known = InjectedBugs::NAMES.join(", "))]
    Unknown(String),
}

impl InjectedBugs {
    pub const NAMES: [&'static str; 3] = ["stale-read", "ack-before-fsync", "drop-watch-event"];

    /// Parses the `--unsafe-inject-bug` values (each may be a comma-separated list); refuses any bug
    /// unless `allowed` (`--unsafe-allow-bug-injection`) is set.
    pub fn parse<S: AsRef<str>>(values: &[S], allowed: bool) -> Result<Self, BugInjectionError> {
        let mut bugs = InjectedBugs::default();
        let names: Vec<&str> = values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        for name in &names {
            match *name {
                "stale-read" => bugs.stale_read = true,
                "ack-before-fsync" => bugs.ack_before_fsync = true,
                "drop-watch-event" => bugs.drop_watch_event = true,
                other => return Err(BugInjectionError::Unknown(other.to_string())),
            }
        }
        if bugs.any() && !allowed {
            return Err(BugInjectionError::NotAllowed(names.join(",")));
        }
        Ok(bugs)
    }

    pub fn any(&self) -> bool {
        self.stale_read || self.ack_before_fsync || self.drop_watch_event
    }

    /// The active bugs' names, for the start-up warning.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [self.stale_read, self.ack_before_fsync, self.drop_watch_event];
        Self::NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }
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
            injected_bugs: InjectedBugs::default(),
        }
    }

    /// The smallest lease TTL etcd grants: 1.5 election timeouts, rounded up to seconds.
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64 * 3 / 2;
        (ms + 999) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_injection_needs_the_allow_flag() {
        assert_eq!(InjectedBugs::parse::<&str>(&[], false), Ok(InjectedBugs::default()));
        assert!(matches!(
            InjectedBugs::parse(&["stale-read"], false),
            Err(BugInjectionError::NotAllowed(_))
        ));
        assert!(matches!(
            InjectedBugs::parse(&["no-such-bug"], true),
            Err(BugInjectionError::Unknown(_))
        ));
        let bugs = InjectedBugs::parse(&["stale-read,drop-watch-event", "ack-before-fsync"], true);
        assert_eq!(
            bugs,
            Ok(InjectedBugs {
                stale_read: true,
                ack_before_fsync: true,
                drop_watch_event: true
            })
        );
        assert_eq!(
            InjectedBugs::parse(&["drop-watch-event"], true).map(|b| b.names()),
            Ok(vec!["drop-watch-event"])
        );
    }
}
