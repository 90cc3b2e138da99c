//! etcd-compatible backups: snapshots in etcd's own format (a bbolt database followed by the SHA-256 of
//! its bytes), so that `etcdctl snapshot save/status/restore` and Rudder's `rudder snapshot` interoperate
//! in both directions.
//!
//! * [`bbolt`]: reading and writing the bbolt file format;
//! * [`snapshot`]: building a snapshot from the store's RocksDB state, streaming it
//!   (Maintenance.Snapshot) and fetching it as a client (`rudder snapshot save`);
//! * [`status`]: what `etcdctl snapshot status` reports about a file;
//! * [`restore`]: turning a snapshot (ours or a real etcd's) into a fresh Rudder data directory;
//! * [`schedule`]: periodic snapshots into a directory, verified and pruned (`--snapshot-interval`).

pub mod bbolt;
pub mod restore;
pub mod schedule;
pub mod snapshot;
pub mod status;

/// etcd's backend buckets (etcd 3.5 `server/mvcc/buckets`).
pub mod buckets {
    pub const KEY: &[u8] = b"key";
    pub const META: &[u8] = b"meta";
    pub const LEASE: &[u8] = b"lease";
    pub const ALARM: &[u8] = b"alarm";
    pub const CLUSTER: &[u8] = b"cluster";
    pub const MEMBERS: &[u8] = b"members";
    pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
    pub const AUTH: &[u8] = b"auth";
    pub const AUTH_USERS: &[u8] = b"authUsers";
    pub const AUTH_ROLES: &[u8] = b"authRoles";

    /// meta bucket keys.
    pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
    pub const TERM: &[u8] = b"term";
    /// etcd 3.5+: the Raft ConfState as JSON.
    pub const CONF_STATE: &[u8] = b"confState";
    pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
    pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
    /// cluster bucket key.
    pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";
    /// auth bucket keys.
    pub const AUTH_ENABLED: &[u8] = b"authEnabled";
    pub const AUTH_REVISION: &[u8] = b"authRevision";
}

/// Size of the SHA-256 trailer of a snapshot file.
pub const HASH_SIZE: usize = 32;

/// etcd's test for a trailing hash: a bbolt file is a whole number of pages (a multiple of 512 bytes),
/// so a file 32 bytes past such a multiple carries one.
pub fn has_hash_trailer(len: u64) -> bool {
    len % 512 == HASH_SIZE as u64
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Bolt(#[from] bbolt::BoltError),
    /// The words etcd uses, so scripts and people recognise the failed hash check.
    #[error("expected sha256 {}, got {}", go_bytes(.expected), go_bytes(.actual))]
    HashMismatch { expected: Vec<u8>, actual: Vec<u8> },
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("snapshot file integrity check failed. {} errors found.\n{}", .0.len(), .0.join("\n"))]
    Integrity(Vec<String>),
    /// The bbolt file is sound but its content is not etcd's (bad revision key, undecodable record).
    #[error("snapshot content: {0}")]
    Content(String),
    #[error("data-dir {0:?} not empty or could not be read")]
    DataDirNotEmpty(String),
    #[error("{0}")]
    Config(String),
    #[error("rocksdb: {0}")]
    Storage(String),
    #[error("{0}")]
    Client(String),
}

impl From<rocksdb::Error> for BackupError {
    fn from(e: rocksdb::Error) -> Self {
        BackupError::Storage(e.to_string())
    }
}

impl From<crate::backend::BackendError> for BackupError {
    fn from(e: crate::backend::BackendError) -> Self {
        BackupError::Storage(e.to_string())
    }
}

/// Formats bytes as Go prints a `[]byte` with `%v` (`[1 2 3]`), as etcd's hash error does.
fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", parts.join(" "))
}

pub(crate) fn file_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::File {
        path: path.display().to_string(),
        source,
    }
}
