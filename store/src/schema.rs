//! Every RocksDB column family and fixed key the store uses, in one place.

/// Raft log entries, keyed by big-endian u64 log index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft metadata: vote, last purged log id, committed log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// MVCC history: etcd's 17-byte revision key (main, '_', sub; plus 't' for a tombstone) to an encoded
/// `mvccpb.KeyValue`, the same layout as etcd's `key` bucket.
pub const CF_KV: &str = "key";
/// State machine metadata: applied log id, membership, compaction revisions, alarms.
pub const CF_META: &str = "meta";
/// Leases: 8-byte big-endian id to an encoded `leasepb.Lease`.
pub const CF_LEASE: &str = "lease";

pub const ALL_CFS: &[&str] = &[CF_RAFT_LOG, CF_RAFT_META, CF_KV, CF_META, CF_LEASE];

pub const META_VOTE: &[u8] = b"vote";
pub const META_LAST_PURGED: &[u8] = b"last_purged_log_id";

pub const META_APPLIED: &[u8] = b"applied_log_id";
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// The revision a compaction was requested at (etcd's `scheduledCompactRev`).
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// The revision the last compaction finished at (etcd's `finishedCompactRev`).
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// The current main revision, kept so that an empty store (all keys compacted away) keeps its revision.
pub const META_REVISION: &[u8] = b"currentRevision";
/// Active alarms, encoded as a list of (member id, alarm type).
pub const META_ALARMS: &[u8] = b"alarms";
