//! etcd's Maintenance service: status, alarms, defragmentation, hashes and snapshots (the etcd-format
//! bbolt backup, built by the backup module).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rocksdb::IteratorMode;
use rudder_proto::etcdserverpb::maintenance_server::Maintenance;
use rudder_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::backend;
use crate::command::{ApplyResult, Op};
use crate::error::StoreError;
use crate::mvcc::Revision;
use crate::node::StoreNode;
use crate::schema::{ALL_CFS, CF_KV};

/// The etcd version this store reports; kube-apiserver enables its newer watch features from 3.5.13.
pub const ETCD_VERSION: &str = "3.5.17";

pub struct MaintenanceService {
    pub node: Arc<StoreNode>,
}

fn alarm_name(a: i32) -> &'static str {
    match AlarmType::try_from(a) {
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}

impl MaintenanceService {
    fn header(&self) -> Option<rudder_proto::etcdserverpb::ResponseHeader> {
        Some(self.node.header(self.node.applier.mvcc.current_revision()))
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = request.into_inner();
        if req.action == AlarmAction::Get as i32 {
            let alarms = self.node.applier.alarms.lock().clone();
            return Ok(Response::new(AlarmResponse {
                header: self.header(),
                alarms,
            }));
        }
        match self.node.propose(Op::Alarm(req)).await? {
            ApplyResult::Alarm(mut r) => {
                r.header = self.header();
                Ok(Response::new(r))
            }
            other => Err(Status::unknown(format!(
                "etcdserver: unexpected apply result {other:?}"
            ))),
        }
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let db = self.node.applier.mvcc.db();
        let (raft_index, applied) = self.node.raft_indexes();
        let errors = self
            .node
            .applier
            .alarms
            .lock()
            .iter()
            .map(|a| format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm)))
            .collect();
        Ok(Response::new(StatusResponse {
            header: self.header(),
            version: ETCD_VERSION.to_string(),
            db_size: backend::db_size(db) as i64,
            leader: self.node.leader().unwrap_or(0),
            raft_index,
            raft_term: self.node.raft_term(),
            raft_applied_index: applied,
            errors,
            db_size_in_use: backend::db_size_in_use(db) as i64,
            is_learner: self
                .node
                .members()
                .iter()
                .any(|(id, _, learner)| *id == self.node.member.id && *learner),
        }))
    }

    async fn defragment(&self, _request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        // Apply what is already committed first (best effort: defrag is a local operation and must work
        // without a leader), so "compact, then defrag every member" reclaims on followers too, even when
        // one has not applied the compaction yet.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.node.read_barrier()).await;
        let db = self.node.applier.mvcc.db().clone();
        tokio::task::spawn_blocking(move || -> Result<(), crate::backend::BackendError> {
            db.flush_wal(true)?;
            // One atomic flush of every column family (never one by one: see `backend`).
            crate::backend::persist_state(&db)?;
            for name in ALL_CFS {
                if let Some(cf) = db.cf_handle(name) {
                    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Status::unknown(e.to_string()))?
        .map_err(|e| Status::unknown(format!("etcdserver: defragment: {e}")))?;
        // The quota reads a cached size; refresh it now rather than at the next tick.
        self.node.refresh_db_size();
        Ok(Response::new(DefragmentResponse { header: self.header() }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, _) = self.hash_history(i64::MAX).map_err(Status::from)?;
        Ok(Response::new(HashResponse {
            header: self.header(),
            hash,
        }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let req = request.into_inner();
        let mvcc = &self.node.applier.mvcc;
        let current = mvcc.current_revision();
        let rev = if req.revision <= 0 { current } else { req.revision };
        if rev > current {
            return Err(StoreError::Apply(crate::command::ApplyError::FutureRevision).into());
        }
        let compacted = mvcc.compacted_revision();
        if rev < compacted {
            return Err(StoreError::Apply(crate::command::ApplyError::Compacted).into());
        }
        let (hash, _) = self.hash_history(rev).map_err(Status::from)?;
        Ok(Response::new(HashKvResponse {
            header: self.header(),
            hash,
            compact_revision: compacted,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        // Build the etcd-format database from one consistent RocksDB snapshot into a temporary file, then
        // stream it like etcd streams its backend (chunks, then the SHA-256 blob).
        let db = self.node.applier.mvcc.db().clone();
        let members = crate::backup::snapshot::members_of(&self.node);
        let dir = self.node.config.data_dir.join("member");
        let started = std::time::Instant::now();
        let (file, info) =
            tokio::task::spawn_blocking(move || crate::backup::snapshot::build_temp(&db, &members, &dir))
                .await
                .map_err(|e| Status::unknown(e.to_string()))?
                .map_err(|e| Status::unknown(format!("etcdserver: building snapshot: {e}")))?;
        tracing::info!(
            total_bytes = info.size,
            revision = info.revision,
            consistent_index = info.consistent_index,
            took = ?started.elapsed(),
            "sending database snapshot to client"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let result = crate::backup::snapshot::stream_file(file, info.size, |msg| tx.blocking_send(Ok(msg)).is_ok());
            match result {
                Ok(()) => tracing::info!(total_bytes = info.size, "sent database snapshot to client"),
                Err(e) => {
                    tracing::warn!(error = %e, "streaming snapshot");
                    let _ = tx.blocking_send(Err(Status::unknown(format!("etcdserver: streaming snapshot: {e}"))));
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let req = request.into_inner();
        if !self.node.is_leader() {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        let voters: Vec<u64> = self
            .node
            .members()
            .into_iter()
            .filter(|(_, _, l)| !l)
            .map(|(id, _, _)| id)
            .collect();
        if !voters.contains(&req.target_id) {
            return Err(StoreError::BadLeaderTransferee.into());
        }
        if req.target_id != self.node.member.id {
            self.node
                .raft
                .trigger()
                .transfer_leader(req.target_id)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            // etcd answers once the transfer is done.
            let deadline = tokio::time::Instant::now() + self.node.config.election_timeout * 3;
            while self.node.leader() != Some(req.target_id) {
                if tokio::time::Instant::now() > deadline {
                    return Err(Status::unavailable(
                        "etcdserver: request timed out, leader transfer took too long",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(Response::new(MoveLeaderResponse { header: self.header() }))
    }

    async fn downgrade(&self, _request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: cluster version downgrade is not supported",
        ))
    }
}

impl MaintenanceService {
    /// CRC-32 over every history record (revision key and value) up to `rev`.
    fn hash_history(&self, rev: i64) -> Result<(u32, usize), StoreError> {
        let db = self.node.applier.mvcc.db();
        let cf = backend::cf(db, CF_KV).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut h = crc32fast::Hasher::new();
        let mut n = 0;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| StoreError::Internal(e.to_string()))?;
            if let Some((r, _)) = Revision::from_key(&k) {
                if r.main > rev {
                    break;
                }
            }
            h.update(&k);
            h.update(&v);
            n += 1;
        }
        Ok((h.finalize(), n))
    }
}
