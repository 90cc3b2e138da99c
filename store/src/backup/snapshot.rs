//! etcd snapshots of the store: the bbolt database etcd's backend would hold for the same state, built
//! from one RocksDB snapshot of the state column families, then streamed as etcd streams its backend
//! (32 KiB chunks with `remaining_bytes`, then one message whose blob is the SHA-256 of all the bytes).
//!
//! Buckets written (etcd 3.5's set): `key` and `lease` verbatim (our column families use etcd's layout);
//! `meta` with `consistent_index` (the Raft applied index), `term`, `confState` (voters and learners, as
//! etcd 3.5 records them) and the compaction revisions; `alarm`; `cluster` (clusterVersion); `members`;
//! empty `members_removed`, `authUsers`, `authRoles`; `auth` with `authEnabled` 0 and `authRevision` 1,
//! as an etcd that never had authentication on.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use rocksdb::{IteratorMode, DB};
use rudder_proto::etcdserverpb::{
    maintenance_client::MaintenanceClient, AlarmResponse, SnapshotRequest, SnapshotResponse,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bbolt::BoltWriter;
use super::{buckets, file_err, has_hash_trailer, BackupError, HASH_SIZE};
use crate::backend;
use crate::mvcc::Revision;
use crate::raft::LogId;
use crate::schema::{
    CF_KV, CF_LEASE, CF_META, META_ALARMS, META_APPLIED, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT,
};

/// etcd's chunk size for snapshot streams.
pub const CHUNK_SIZE: usize = 32 * 1024;
/// What a 3.5 member records as cluster version.
const CLUSTER_VERSION: &[u8] = b"3.5.0";

/// A member as etcd's `members` bucket stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The members of `node`'s cluster as a snapshot records them.
pub fn members_of(node: &crate::node::StoreNode) -> Vec<EtcdMember> {
    node.members()
        .into_iter()
        .map(|(id, n, is_learner)| EtcdMember {
            id,
            name: n.name,
            peer_urls: n.peer_urls,
            client_urls: n.client_urls,
            is_learner,
        })
        .collect()
}

/// etcd's member JSON: RaftAttributes (peerURLs, isLearner) then Attributes (name, clientURLs).
#[derive(Serialize)]
struct MemberJson<'a> {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
    client_urls: &'a [String],
}

/// etcd 3.5's `confState` meta value: raftpb.ConfState as Go's encoding/json writes it (empty lists
/// omitted, `auto_leave` always present). etcd 3.6 reads it to recognise a 3.5 backend.
#[derive(Serialize)]
struct ConfStateJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    voters: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    learners: Vec<u64>,
    auto_leave: bool,
}

fn conf_state_json(members: &[EtcdMember]) -> Result<Vec<u8>, BackupError> {
    let ids = |learner: bool| {
        let mut v: Vec<u64> = members
            .iter()
            .filter(|m| m.is_learner == learner)
            .map(|m| m.id)
            .collect();
        v.sort_unstable();
        v
    };
    serde_json::to_vec(&ConfStateJson {
        voters: ids(false),
        learners: ids(true),
        auto_leave: false,
    })
    .map_err(|e| BackupError::Storage(e.to_string()))
}

/// What a snapshot database holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbInfo {
    /// Size of the bbolt file (without the hash trailer).
    pub size: u64,
    /// Main revision of the newest history record.
    pub revision: i64,
    pub consistent_index: u64,
    /// History records in bucket `key`.
    pub history: u64,
}

/// Writes the bbolt database for the current state of `db` (one consistent RocksDB snapshot).
pub fn write_db<W: Write + Seek>(db: &DB, members: &[EtcdMember], out: W) -> Result<(W, DbInfo), BackupError> {
    let snap = db.snapshot();
    let meta_cf = backend::cf(db, CF_META)?;
    let mut info = DbInfo::default();

    let mut meta: Vec<(&[u8], Vec<u8>)> = Vec::new();
    let mut term = 0;
    if let Some(raw) = snap.get_cf(meta_cf, META_APPLIED)? {
        let applied: LogId =
            crate::raft::decode(&raw).map_err(|e| BackupError::Storage(format!("decoding the applied log id: {e}")))?;
        info.consistent_index = applied.index;
        term = applied.leader_id.term;
    }
    meta.push((buckets::CONSISTENT_INDEX, info.consistent_index.to_be_bytes().to_vec()));
    meta.push((buckets::TERM, term.to_be_bytes().to_vec()));
    meta.push((buckets::CONF_STATE, conf_state_json(members)?));
    for (ours, theirs) in [
        (META_SCHEDULED_COMPACT, buckets::SCHEDULED_COMPACT),
        (META_FINISHED_COMPACT, buckets::FINISHED_COMPACT),
    ] {
        if let Some(raw) = snap.get_cf(meta_cf, ours)? {
            meta.push((theirs, raw));
        }
    }
    meta.sort();

    let mut alarms: Vec<Vec<u8>> = match snap.get_cf(meta_cf, META_ALARMS)? {
        Some(raw) => AlarmResponse::decode(raw.as_slice())
            .map_err(|e| BackupError::Storage(format!("decoding alarms: {e}")))?
            .alarms
            .iter()
            .map(Message::encode_to_vec)
            .collect(),
        None => Vec::new(),
    };
    alarms.sort();
    alarms.dedup();

    let mut member_rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for m in members {
        let json = serde_json::to_vec(&MemberJson {
            id: m.id,
            peer_urls: &m.peer_urls,
            is_learner: m.is_learner,
            name: &m.name,
            client_urls: &m.client_urls,
        })
        .map_err(|e| BackupError::Storage(e.to_string()))?;
        member_rows.push((format!("{:x}", m.id).into_bytes(), json));
    }
    member_rows.sort();

    let mut w = BoltWriter::new(out)?;
    w.put_bucket(buckets::ALARM, alarms.iter().map(|a| (a.as_slice(), &[][..])))?;
    // As a never-enabled etcd 3.4 has it after start-up, plus the "disabled" flag `auth disable` writes.
    w.put_bucket(
        buckets::AUTH,
        [
            (buckets::AUTH_ENABLED, &[0u8][..]),
            (buckets::AUTH_REVISION, &1u64.to_be_bytes()[..]),
        ],
    )?;
    w.put_bucket(buckets::AUTH_ROLES, std::iter::empty::<(&[u8], &[u8])>())?;
    w.put_bucket(buckets::AUTH_USERS, std::iter::empty::<(&[u8], &[u8])>())?;
    w.put_bucket(buckets::CLUSTER, [(buckets::CLUSTER_VERSION, CLUSTER_VERSION)])?;
    w.put_bucket(buckets::MEMBERS, member_rows)?;
    w.put_bucket(buckets::MEMBERS_REMOVED, std::iter::empty::<(&[u8], &[u8])>())?;
    w.put_bucket(buckets::META, meta)?;
    for (name, cf) in [(buckets::KEY, CF_KV), (buckets::LEASE, CF_LEASE)] {
        let mut b = w.bucket(name)?;
        for item in snap.iterator_cf(backend::cf(db, cf)?, IteratorMode::Start) {
            let (k, v) = item?;
            if cf == CF_KV {
                if let Some((rev, _)) = Revision::from_key(&k) {
                    info.revision = rev.main;
                }
                info.history += 1;
            }
            b.put(&k, &v)?;
        }
        b.finish()?;
    }
    let txid = info.consistent_index.max(2);
    let (out, summary) = w.finish(txid)?;
    info.size = summary.size;
    Ok((out, info))
}

/// Builds the snapshot database in an anonymous temporary file in `dir` (next to the data, so a large
/// snapshot does not fill a small /tmp). The file is gone once the returned handle is dropped.
pub fn build_temp(db: &DB, members: &[EtcdMember], dir: &Path) -> Result<(File, DbInfo), BackupError> {
    let file = tempfile::tempfile_in(dir).map_err(file_err(dir))?;
    let (out, info) = write_db(db, members, BufWriter::with_capacity(1 << 20, file))?;
    let file = out.into_inner().map_err(|e| BackupError::Io(e.into_error()))?;
    Ok((file, info))
}

/// Streams `size` bytes of `file` in etcd's snapshot messages, then the SHA-256 message. `send`
/// returns false once the receiver is gone, which ends the stream early.
pub fn stream_file(
    mut file: File,
    size: u64,
    mut send: impl FnMut(SnapshotResponse) -> bool,
) -> Result<(), BackupError> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    while sent < size {
        let n = CHUNK_SIZE.min((size - sent) as usize);
        let mut blob = vec![0u8; n];
        file.read_exact(&mut blob)?;
        hasher.update(&blob);
        sent += n as u64;
        let msg = SnapshotResponse {
            header: None,
            remaining_bytes: size - sent,
            blob,
        };
        if !send(msg) {
            return Ok(());
        }
    }
    send(SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: hasher.finalize().to_vec(),
    });
    Ok(())
}

/// Writes a whole snapshot file (database plus SHA-256 trailer), for tests and tools.
pub fn write_file(db: &DB, members: &[EtcdMember], path: &Path) -> Result<DbInfo, BackupError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(file_err(path))?;
    let (out, info) = write_db(db, members, BufWriter::with_capacity(1 << 20, file))?;
    let mut file = out.into_inner().map_err(|e| BackupError::Io(e.into_error()))?;
    let hash = sha256_prefix(&mut file, info.size)?;
    file.seek(SeekFrom::Start(info.size))?;
    file.write_all(&hash)?;
    file.sync_all()?;
    Ok(info)
}

/// SHA-256 of the first `len` bytes of a file.
pub fn sha256_prefix(file: &mut File, len: u64) -> Result<Vec<u8>, BackupError> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize().to_vec())
}

/// An endpoint as etcdctl takes it (`host:port` or `http://host:port`) as a URL.
pub fn endpoint_url(endpoints: &str) -> Result<String, BackupError> {
    let list: Vec<&str> = endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let [one] = list.as_slice() else {
        return Err(BackupError::Config(format!(
            "snapshot must be requested to one selected node, not multiple {list:?}"
        )));
    };
    if one.starts_with("https://") || one.starts_with("unixs://") {
        return Err(BackupError::Config(format!("{one}: TLS endpoints are not supported")));
    }
    Ok(if one.contains("://") {
        one.to_string()
    } else {
        format!("http://{one}")
    })
}

/// What `fetch` saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    /// File size including the hash trailer.
    pub size: u64,
}

/// `snapshot save`: streams a member's snapshot into `<path>.part`, checks the SHA-256 trailer against
/// the bytes received, syncs and renames it to `path`. `progress(received, total)` follows the download.
pub async fn fetch(endpoint: &str, path: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Fetched, BackupError> {
    let url = endpoint_url(endpoint)?;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| BackupError::Config(format!("{url}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| BackupError::Client(format!("{url}: {e}")))?;
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|e| BackupError::Client(e.message().to_string()))?
        .into_inner();

    let part = PathBuf::from(format!("{}.part", path.display()));
    let result = async {
        let mut file = File::create(&part).map_err(file_err(&part))?;
        let mut hasher = Sha256::new();
        // The last message is the hash: hold each message back until the next one arrives.
        let mut held: Option<Vec<u8>> = None;
        let mut received = 0u64;
        let mut total = 0u64;
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|e| BackupError::Client(e.message().to_string()))?
        {
            if let Some(prev) = held.take() {
                hasher.update(&prev);
                file.write_all(&prev).map_err(file_err(&part))?;
            }
            received += msg.blob.len() as u64;
            total = total.max(received + msg.remaining_bytes);
            progress(received, total);
            held = Some(msg.blob);
        }
        let trailer = held.unwrap_or_default();
        let size = received;
        if !has_hash_trailer(size) || trailer.len() != HASH_SIZE {
            return Err(BackupError::Client(format!(
                "sha256 checksum not found [bytes: {size}]"
            )));
        }
        let actual = hasher.finalize().to_vec();
        if actual != trailer {
            return Err(BackupError::HashMismatch {
                expected: trailer,
                actual,
            });
        }
        file.write_all(&trailer).map_err(file_err(&part))?;
        file.sync_all().map_err(file_err(&part))?;
        Ok(size)
    }
    .await;
    match result {
        Ok(size) => {
            std::fs::rename(&part, path).map_err(file_err(path))?;
            Ok(Fetched {
                path: path.to_path_buf(),
                size,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::bbolt::BoltReader;

    fn bucket(reader: &BoltReader<&[u8]>, name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let all = reader.buckets().expect("buckets");
        let b = all.iter().find(|b| b.name == name).expect("bucket present");
        let mut out = Vec::new();
        reader
            .for_each(b, |e| -> Result<(), BackupError> {
                out.push((e.key.to_vec(), e.value.to_vec()));
                Ok(())
            })
            .expect("entries");
        out
    }

    #[test]
    fn meta_has_conf_state_and_auth_is_disabled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = crate::backend::open(&tmp.path().join("db")).expect("open");
        let member = |id, is_learner| EtcdMember {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            client_urls: Vec::new(),
            is_learner,
        };
        let members = [member(30, false), member(20, true), member(u64::MAX - 1, false)];
        let (bytes, _) = write_db(&db, &members, std::io::Cursor::new(Vec::new())).expect("write");
        let bytes = bytes.into_inner();
        let reader = BoltReader::open(bytes.as_slice()).expect("open");
        let meta = bucket(&reader, buckets::META);
        let conf = meta
            .iter()
            .find(|(k, _)| k == buckets::CONF_STATE)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(
            conf.as_deref(),
            Some(r#"{"voters":[30,18446744073709551614],"learners":[20],"auto_leave":false}"#)
        );
        let auth = bucket(&reader, buckets::AUTH);
        assert_eq!(
            auth,
            vec![
                (buckets::AUTH_ENABLED.to_vec(), vec![0]),
                (buckets::AUTH_REVISION.to_vec(), 1u64.to_be_bytes().to_vec())
            ]
        );
        assert!(bucket(&reader, buckets::AUTH_USERS).is_empty());
        assert!(bucket(&reader, buckets::AUTH_ROLES).is_empty());
        assert!(
            meta.windows(2).all(|w| w[0].0 < w[1].0),
            "meta keys sorted: {:?}",
            meta.iter().map(|(k, _)| String::from_utf8_lossy(k)).collect::<Vec<_>>()
        );
    }
}
