//! `snapshot restore`: a snapshot file (ours or one saved from a real etcd) into a fresh Rudder data
//! directory, following etcdutl's rules:
//! * the SHA-256 trailer is checked unless `skip_hash_check` (a file without one needs that flag);
//! * membership is not restored: the restored member starts a new cluster from its own
//!   `--initial-cluster` flags (new member and cluster ids), as every member of a restored etcd does;
//! * `bump_revision` + `mark_compacted` (etcdutl 3.5): the revision jumps by the given amount and
//!   everything before the new revision counts as compacted, so clients holding old revisions (watches,
//!   caches) are told to start over instead of missing the difference.
//!
//! The result is the three state column families (`key`, `lease`, `meta`) and no Raft log: `meta` also
//! records the new cluster's membership at a Raft position shared by every member restored from the
//! same file with the same flags (see [`restored_raft_position`]), so they form the cluster together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use openraft::impls::leader_id_adv::LeaderId;
use openraft::Membership;

use prost::Message;
use rocksdb::{WriteBatch, DB};
use rudder_proto::etcdserverpb::{AlarmMember, AlarmResponse};
use rudder_proto::leasepb;
use rudder_proto::mvccpb::KeyValue;

use super::bbolt::{BoltReader, FileSource};
use super::{buckets, file_err, has_hash_trailer, snapshot::sha256_prefix, BackupError, HASH_SIZE};
use crate::mvcc::Revision;
use crate::raft::{LogId, MemberNode, StoredMembership};
use crate::schema::{
    CF_KV, CF_LEASE, CF_META, META_ALARMS, META_APPLIED, META_FINISHED_COMPACT, META_MEMBERSHIP, META_REVISION,
    META_SCHEDULED_COMPACT,
};
use crate::{backend, identity};

/// Bytes per RocksDB write batch while importing.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct RestoreConfig {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    /// This member's name, which must appear in `initial_cluster` with `initial_advertise_peer_urls`.
    pub name: String,
    /// (name, peer URLs) of every member of the new cluster.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    /// With the peer URLs, gives the member ids (as etcd derives them); the member must start with the
    /// same `--initial-cluster-token`.
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
    pub skip_hash_check: bool,
    pub bump_revision: u64,
    pub mark_compacted: bool,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            snapshot: PathBuf::new(),
            data_dir: PathBuf::new(),
            name: String::new(),
            initial_cluster: Vec::new(),
            initial_cluster_token: "etcd-cluster".to_string(),
            initial_advertise_peer_urls: Vec::new(),
            skip_hash_check: false,
            bump_revision: 0,
            mark_compacted: false,
        }
    }
}

/// What was restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The store's revision after restore (bump included).
    pub revision: i64,
    /// The revision reads below which are refused (0 = none).
    pub compacted: i64,
    pub history: u64,
    pub leases: u64,
    pub alarms: u64,
}

fn same_urls(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

/// etcd's `VerifyBootstrap` for the restored member's flags.
fn verify_flags(cfg: &RestoreConfig) -> Result<(), BackupError> {
    if cfg.bump_revision > 0 && !cfg.mark_compacted || cfg.bump_revision == 0 && cfg.mark_compacted {
        return Err(BackupError::Config(
            "--mark-compacted required if --revision-bump > 0".into(),
        ));
    }
    let Some((_, urls)) = cfg.initial_cluster.iter().find(|(n, _)| *n == cfg.name) else {
        return Err(BackupError::Config(format!(
            "member {:?} has no entry in --initial-cluster",
            cfg.name
        )));
    };
    if !same_urls(urls, &cfg.initial_advertise_peer_urls) {
        return Err(BackupError::Config(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            cfg.name,
            urls.join(","),
            cfg.initial_advertise_peer_urls.join(",")
        )));
    }
    Ok(())
}

/// Opens a snapshot file after its hash check; returns the reader over the database part.
pub fn open_verified(path: &Path, skip_hash_check: bool) -> Result<BoltReader<FileSource>, BackupError> {
    let mut file = File::open(path).map_err(file_err(path))?;
    let len = file.metadata().map_err(file_err(path))?.len();
    let has_hash = has_hash_trailer(len);
    if !has_hash && !skip_hash_check {
        return Err(BackupError::MissingHash);
    }
    let db_len = if has_hash { len - HASH_SIZE as u64 } else { len };
    if has_hash && !skip_hash_check {
        let actual = sha256_prefix(&mut file, db_len).map_err(|e| match e {
            BackupError::Io(io) => file_err(path)(io),
            other => other,
        })?;
        let mut expected = vec![0u8; HASH_SIZE];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut expected, db_len).map_err(file_err(path))?;
        if actual != expected {
            return Err(BackupError::HashMismatch { expected, actual });
        }
    }
    Ok(BoltReader::open(FileSource::new(file, db_len))?)
}

pub fn restore(cfg: &RestoreConfig) -> Result<RestoreSummary, BackupError> {
    verify_flags(cfg)?;
    let dir = &cfg.data_dir;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::DataDirNotEmpty(dir.display().to_string()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return Err(BackupError::DataDirNotEmpty(dir.display().to_string())),
    }
    let reader = open_verified(&cfg.snapshot, cfg.skip_hash_check)?;
    let problems = reader.check()?;
    if !problems.is_empty() {
        return Err(BackupError::Integrity(problems));
    }
    let db_dir = dir.join("member").join("rocksdb");
    std::fs::create_dir_all(&db_dir).map_err(file_err(&db_dir))?;
    let result = backend::open(&db_dir)
        .map_err(BackupError::from)
        .and_then(|db| import(&reader, &db, cfg).map(|s| (db, s)));
    match result {
        Ok((db, summary)) => {
            db.flush_wal(true)?;
            backend::persist_state(&db)?;
            tracing::info!(
                data_dir = %dir.display(),
                revision = summary.revision,
                compacted = summary.compacted,
                history = summary.history,
                leases = summary.leases,
                "restored snapshot"
            );
            Ok(summary)
        }
        Err(e) => {
            // Leave no half-restored directory behind for a member to start from.
            let _ = std::fs::remove_dir_all(dir.join("member"));
            Err(e)
        }
    }
}

/// The Raft position every member restored from the same file starts at, as etcd's restore writes a
/// Raft snapshot holding the new membership rather than log entries: the state machine has "applied"
/// log index N (the number of members, etcd's choice) with the new cluster's membership, and there is
/// no log. On start openraft marks the log purged up to there and builds its snapshot from the
/// restored state, so the members form the cluster without `initialize`, and a member added later
/// receives the restored data by snapshot instead of replaying a log that does not contain it.
/// Returns the encoded (applied log id, stored membership).
fn restored_raft_position(cfg: &RestoreConfig) -> Result<(Vec<u8>, Vec<u8>), BackupError> {
    let mut nodes = BTreeMap::new();
    for (name, urls) in &cfg.initial_cluster {
        // The member ids must come out as `rudder store` derives them from the same flags.
        let urls = urls
            .iter()
            .map(|u| {
                url::Url::parse(u)
                    .map(|u| u.as_str().trim_end_matches('/').to_string())
                    .map_err(|e| BackupError::Config(format!("--initial-cluster: invalid URL {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = identity::member_id(&urls, &cfg.initial_cluster_token, None);
        let node = MemberNode {
            name: name.clone(),
            peer_urls: urls,
            client_urls: Vec::new(),
        };
        if nodes.insert(id, node).is_some() {
            return Err(BackupError::Config(format!(
                "--initial-cluster: member {name:?} has the peer URLs of another member"
            )));
        }
    }
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    let membership =
        Membership::new(vec![voters], nodes).map_err(|e| BackupError::Config(format!("--initial-cluster: {e}")))?;
    // Every member must compute the same log id, so it names no member as leader.
    let log_id = LogId::new(LeaderId { term: 0, node_id: 0 }, cfg.initial_cluster.len() as u64);
    let stored = StoredMembership::new(Some(log_id), membership);
    let encode = |e: std::io::Error| BackupError::Storage(format!("encoding the Raft position: {e}"));
    Ok((
        crate::raft::encode(&log_id).map_err(encode)?,
        crate::raft::encode(&stored).map_err(encode)?,
    ))
}

fn flush(db: &DB, batch: &mut WriteBatch) -> Result<(), BackupError> {
    if !batch.is_empty() {
        db.write(std::mem::take(batch))?;
    }
    Ok(())
}

fn compact_rev(raw: &[u8], what: &str) -> Result<i64, BackupError> {
    Revision::from_key(raw)
        .map(|(r, _)| r.main)
        .or_else(|| {
            raw.get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes)
        })
        .ok_or_else(|| BackupError::Content(format!("meta {what} is not a revision")))
}

fn import<R: super::bbolt::ReadAt>(
    reader: &BoltReader<R>,
    db: &DB,
    cfg: &RestoreConfig,
) -> Result<RestoreSummary, BackupError> {
    let mut summary = RestoreSummary::default();
    let all = reader.buckets()?;
    let find = |name: &[u8]| all.iter().find(|b| b.name == name);

    let kv_cf = backend::cf(db, CF_KV)?;
    let mut batch = WriteBatch::default();
    let mut revision = 1i64;
    if let Some(bucket) = find(buckets::KEY) {
        reader.for_each(bucket, |e| -> Result<(), BackupError> {
            let (rev, _) = Revision::from_key(e.key)
                .ok_or_else(|| BackupError::Content("bucket key holds a key that is not a revision".into()))?;
            revision = revision.max(rev.main);
            let kv = KeyValue::decode(e.value)
                .map_err(|err| BackupError::Content(format!("revision {}_{}: {err}", rev.main, rev.sub)))?;
            // etcdutl's --bump-revision leaves a record with an empty value: it only carries the revision.
            if kv.key.is_empty() {
                return Ok(());
            }
            batch.put_cf(kv_cf, e.key, e.value);
            summary.history += 1;
            if batch.size_in_bytes() >= BATCH_BYTES {
                flush(db, &mut batch)?;
            }
            Ok(())
        })?;
    }
    flush(db, &mut batch)?;

    let lease_cf = backend::cf(db, CF_LEASE)?;
    if let Some(bucket) = find(buckets::LEASE) {
        reader.for_each(bucket, |e| -> Result<(), BackupError> {
            let lease = leasepb::Lease::decode(e.value).map_err(|err| BackupError::Content(format!("lease: {err}")))?;
            if e.key.len() != 8 || e.key != lease.id.to_be_bytes() {
                return Err(BackupError::Content(format!(
                    "lease {:x} stored under a wrong key",
                    lease.id
                )));
            }
            batch.put_cf(lease_cf, e.key, e.value);
            summary.leases += 1;
            Ok(())
        })?;
    }

    let mut finished = 0i64;
    let mut scheduled = 0i64;
    if let Some(bucket) = find(buckets::META) {
        reader.for_each(bucket, |e| -> Result<(), BackupError> {
            if e.key == buckets::FINISHED_COMPACT {
                finished = compact_rev(e.value, "finishedCompactRev")?;
            } else if e.key == buckets::SCHEDULED_COMPACT {
                scheduled = compact_rev(e.value, "scheduledCompactRev")?;
            }
            Ok(())
        })?;
    }
    let mut alarms = Vec::new();
    if let Some(bucket) = find(buckets::ALARM) {
        reader.for_each(bucket, |e| -> Result<(), BackupError> {
            alarms.push(AlarmMember::decode(e.key).map_err(|err| BackupError::Content(format!("alarm: {err}")))?);
            Ok(())
        })?;
    }
    if let Some(bucket) = find(buckets::AUTH) {
        reader.for_each(bucket, |e| -> Result<(), BackupError> {
            if e.key == buckets::AUTH_ENABLED && e.value == [1] {
                tracing::warn!("the snapshot has authentication enabled; users and roles are not restored");
            }
            Ok(())
        })?;
    }

    // etcd: a compaction that was scheduled but not finished is completed when the store opens; ours
    // applies compaction by revision bound, so the scheduled revision is the compacted one.
    let mut compacted = finished.max(scheduled);
    // etcd: history up to the compaction may be gone entirely; the revision is at least that far.
    revision = revision.max(compacted);
    if cfg.bump_revision > 0 {
        let bump = i64::try_from(cfg.bump_revision)
            .ok()
            .and_then(|b| revision.checked_add(b))
            .ok_or_else(|| BackupError::Config("--bump-revision is too large".into()))?;
        revision = bump;
        if cfg.mark_compacted {
            compacted = revision;
        }
    }
    let meta_cf = backend::cf(db, CF_META)?;
    let (applied, membership) = restored_raft_position(cfg)?;
    batch.put_cf(meta_cf, META_APPLIED, applied);
    batch.put_cf(meta_cf, META_MEMBERSHIP, membership);
    batch.put_cf(meta_cf, META_REVISION, revision.to_be_bytes());
    if compacted > 0 {
        let key = Revision::new(compacted, 0).to_key(false);
        batch.put_cf(meta_cf, META_SCHEDULED_COMPACT, &key);
        batch.put_cf(meta_cf, META_FINISHED_COMPACT, &key);
    }
    if !alarms.is_empty() {
        summary.alarms = alarms.len() as u64;
        let raw = AlarmResponse { header: None, alarms }.encode_to_vec();
        batch.put_cf(meta_cf, META_ALARMS, raw);
    }
    flush(db, &mut batch)?;
    summary.revision = revision;
    summary.compacted = compacted;
    Ok(summary)
}
