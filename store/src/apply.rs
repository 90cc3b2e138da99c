//! The deterministic state machine step: one Raft command in, one etcd response out, every change
//! staged in one RocksDB batch together with the applied log position.

use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message;
use rocksdb::WriteBatch;
use rudder_proto::etcdserverpb::{
    alarm_request::AlarmAction, compare, request_op, response_op, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use rudder_proto::leasepb;
use rudder_proto::mvccpb::{Event, KeyValue};

use crate::backend;
use crate::command::{ApplyError, ApplyResult, Op, RaftRequest};
use crate::lease::Lessor;
use crate::mvcc::{KeyRange, Mvcc, MvccError, WriteTxn};
use crate::schema::{CF_LEASE, CF_META, META_ALARMS, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};

/// Receives the events of each applied revision (the watch hub).
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, revision: i64, events: Vec<Event>);
}

impl From<MvccError> for ApplyError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted { .. } => ApplyError::Compacted,
            MvccError::FutureRevision => ApplyError::FutureRevision,
            MvccError::Storage(s) => ApplyError::Storage(s),
        }
    }
}

impl From<backend::BackendError> for ApplyError {
    fn from(e: backend::BackendError) -> Self {
        ApplyError::Storage(e.to_string())
    }
}

pub struct Applier {
    pub mvcc: Arc<Mvcc>,
    pub lessor: Arc<Lessor>,
    pub alarms: Mutex<Vec<AlarmMember>>,
    sink: Arc<dyn EventSink>,
}

/// Lessor updates of one command, run only if it commits.
type AfterCommit = Vec<Box<dyn FnOnce(&Applier)>>;

/// Lease attachment changes of one command, applied to the lessor only if the command commits.
#[derive(Default)]
struct LeaseMoves(Vec<(i64, i64, Vec<u8>)>);

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Applier {
    pub fn new(mvcc: Arc<Mvcc>, lessor: Arc<Lessor>, sink: Arc<dyn EventSink>) -> Result<Self, ApplyError> {
        let meta = backend::cf(mvcc.db(), CF_META)?;
        let alarms = match mvcc.db().get_cf(meta, META_ALARMS).map_err(MvccError::from)? {
            Some(raw) => {
                AlarmResponse::decode(raw.as_slice())
                    .map_err(|_| ApplyError::Malformed)?
                    .alarms
            }
            None => Vec::new(),
        };
        Ok(Applier {
            mvcc,
            lessor,
            alarms: Mutex::new(alarms),
            sink,
        })
    }

    pub fn has_alarm(&self, kind: AlarmType) -> bool {
        self.alarms.lock().iter().any(|a| a.alarm == kind as i32)
    }

    /// Applies one command. `extra` is written in the same batch (the applied log id), so state and
    /// position never disagree after a crash.
    pub fn apply(&self, raw: &[u8], extra: impl FnOnce(&mut WriteBatch)) -> Result<ApplyResult, ApplyError> {
        let op = match RaftRequest::decode(raw) {
            Ok(RaftRequest { op: Some(op) }) => op,
            _ => {
                let mut batch = WriteBatch::default();
                extra(&mut batch);
                self.write(batch)?;
                return Ok(ApplyResult::Error(ApplyError::Malformed));
            }
        };
        let mut txn = WriteTxn::new(&self.mvcc);
        let mut moves = LeaseMoves::default();
        let mut after: AfterCommit = Vec::new();
        let result = self.execute(op, &mut txn, &mut moves, &mut after);
        match result {
            Ok(mut res) => {
                let out = txn.finish()?;
                let mut batch = out.batch;
                extra(&mut batch);
                self.write(batch)?;
                self.mvcc.publish(out.revision, &out.changes);
                for (old, new, key) in moves.0 {
                    if old != 0 && old != new {
                        self.lessor.detach(old, &key);
                    }
                    if new != 0 {
                        self.lessor.attach(new, &key);
                    }
                }
                for f in after {
                    f(self);
                }
                if !out.events.is_empty() {
                    self.sink.publish(out.revision, out.events);
                }
                set_header_revision(&mut res, out.revision);
                Ok(res)
            }
            Err(e) => {
                // Nothing of the failed command is kept but the log position.
                drop(txn);
                let mut batch = WriteBatch::default();
                extra(&mut batch);
                self.write(batch)?;
                Ok(ApplyResult::Error(e))
            }
        }
    }

    /// Records the log position of an entry that carries no command (blank, membership).
    pub fn apply_empty(&self, extra: impl FnOnce(&mut WriteBatch)) -> Result<(), ApplyError> {
        let mut batch = WriteBatch::default();
        extra(&mut batch);
        self.write(batch)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), ApplyError> {
        // Without the WAL: the entry is in the durable log, and a crash re-applies it (see `backend`).
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        self.mvcc
            .db()
            .write_opt(batch, &opts)
            .map_err(|e| ApplyError::Storage(e.to_string()))
    }

    fn execute(
        &self,
        op: Op,
        txn: &mut WriteTxn<'_>,
        moves: &mut LeaseMoves,
        after: &mut AfterCommit,
    ) -> Result<ApplyResult, ApplyError> {
        let writes_data = matches!(op, Op::Put(_) | Op::LeaseGrant(_)) || matches!(&op, Op::Txn(t) if txn_has_put(t));
        if writes_data && self.has_alarm(AlarmType::Nospace) {
            return Err(ApplyError::NoSpace);
        }
        Ok(match op {
            Op::Put(p) => ApplyResult::Put(self.put(txn, p, moves)?),
            Op::DeleteRange(d) => ApplyResult::DeleteRange(self.delete(txn, d, moves)?),
            Op::Txn(t) => ApplyResult::Txn(self.txn(txn, t, moves)?),
            Op::Compaction(c) => ApplyResult::Compaction(self.compact(txn, c)?),
            Op::LeaseGrant(g) => ApplyResult::LeaseGrant(self.lease_grant(txn, g, after)?),
            Op::LeaseRevoke(r) => ApplyResult::LeaseRevoke(self.lease_revoke(txn, r, moves, after)?),
            Op::Alarm(a) => ApplyResult::Alarm(self.alarm(txn, a)?),
        })
    }

    fn put(&self, txn: &mut WriteTxn<'_>, p: PutRequest, moves: &mut LeaseMoves) -> Result<PutResponse, ApplyError> {
        let current = if p.ignore_value || p.ignore_lease {
            txn.get(&p.key)?
        } else {
            None
        };
        if (p.ignore_value || p.ignore_lease) && current.is_none() {
            return Err(ApplyError::KeyNotFound);
        }
        let value = match (&current, p.ignore_value) {
            (Some(c), true) => c.value.clone(),
            _ => p.value,
        };
        let lease = match (&current, p.ignore_lease) {
            (Some(c), true) => c.lease,
            _ => p.lease,
        };
        if lease != 0 && !self.lessor.exists(lease) {
            return Err(ApplyError::LeaseNotFound);
        }
        let (prev_live, prev) = txn.put(&p.key, value, lease, p.prev_kv)?;
        let old_lease = prev_live.map(|l| l.lease).unwrap_or(0);
        if old_lease != 0 || lease != 0 {
            moves.0.push((old_lease, lease, p.key));
        }
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(
        &self,
        txn: &mut WriteTxn<'_>,
        d: DeleteRangeRequest,
        moves: &mut LeaseMoves,
    ) -> Result<DeleteRangeResponse, ApplyError> {
        let deleted = txn.delete_range(&d.key, &d.range_end, d.prev_kv)?;
        let count = deleted.len() as i64;
        let mut prev_kvs = Vec::new();
        for gone in deleted {
            if gone.lease != 0 {
                moves.0.push((gone.lease, 0, gone.key));
            }
            if d.prev_kv {
                prev_kvs.extend(gone.value);
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: count,
            prev_kvs,
        })
    }

    fn txn(&self, txn: &mut WriteTxn<'_>, t: TxnRequest, moves: &mut LeaseMoves) -> Result<TxnResponse, ApplyError> {
        let succeeded = self.compare_all(txn, &t.compare)?;
        let ops = if succeeded { t.success } else { t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for RequestOp { request } in ops {
            let response = match request {
                Some(request_op::Request::RequestRange(r)) => {
                    let out = txn.range(&r)?;
                    response_op::Response::ResponseRange(RangeResponse {
                        header: header(txn.revision()),
                        kvs: out.kvs,
                        more: out.more,
                        count: out.count,
                    })
                }
                Some(request_op::Request::RequestPut(p)) => {
                    let mut r = self.put(txn, p, moves)?;
                    r.header = header(txn.revision());
                    response_op::Response::ResponsePut(r)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    let mut r = self.delete(txn, d, moves)?;
                    r.header = header(txn.revision());
                    response_op::Response::ResponseDeleteRange(r)
                }
                Some(request_op::Request::RequestTxn(inner)) => {
                    let mut r = self.txn(txn, inner, moves)?;
                    r.header = header(txn.revision());
                    response_op::Response::ResponseTxn(r)
                }
                None => return Err(ApplyError::Malformed),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn compare_all(&self, txn: &WriteTxn<'_>, compares: &[Compare]) -> Result<bool, ApplyError> {
        for c in compares {
            if !self.compare(txn, c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare(&self, txn: &WriteTxn<'_>, c: &Compare) -> Result<bool, ApplyError> {
        let req = rudder_proto::etcdserverpb::RangeRequest {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            ..Default::default()
        };
        let kvs = txn.range(&req)?.kvs;
        if kvs.is_empty() {
            // A missing key compares as an all-zero key value, except that comparing a value fails.
            if c.target == compare::CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn compact(&self, txn: &mut WriteTxn<'_>, c: CompactionRequest) -> Result<CompactionResponse, ApplyError> {
        let (current, compacted) = (self.mvcc.current_revision(), self.mvcc.compacted_revision());
        if c.revision <= compacted {
            return Err(ApplyError::Compacted);
        }
        if c.revision > current {
            return Err(ApplyError::FutureRevision);
        }
        let meta = backend::cf(self.mvcc.db(), CF_META)?;
        let rev = rudder_proto_rev(c.revision);
        txn.batch.put_cf(meta, META_SCHEDULED_COMPACT, &rev);
        txn.batch.put_cf(meta, META_FINISHED_COMPACT, &rev);
        let kv_cf = backend::cf(self.mvcc.db(), crate::schema::CF_KV)?;
        for key in self.mvcc.compact_index(c.revision) {
            txn.batch.delete_cf(kv_cf, key);
        }
        Ok(CompactionResponse { header: None })
    }

    fn lease_grant(
        &self,
        txn: &mut WriteTxn<'_>,
        g: LeaseGrantRequest,
        after: &mut AfterCommit,
    ) -> Result<LeaseGrantResponse, ApplyError> {
        if self.lessor.exists(g.id) {
            return Err(ApplyError::LeaseExists);
        }
        let ttl = self.lessor.effective_ttl(g.ttl);
        let cf = backend::cf(self.mvcc.db(), CF_LEASE)?;
        let record = leasepb::Lease {
            id: g.id,
            ttl,
            remaining_ttl: 0,
        };
        txn.batch.put_cf(cf, g.id.to_be_bytes(), record.encode_to_vec());
        let id = g.id;
        after.push(Box::new(move |a: &Self| a.lessor.grant(id, ttl)));
        Ok(LeaseGrantResponse {
            header: None,
            id: g.id,
            ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(
        &self,
        txn: &mut WriteTxn<'_>,
        r: LeaseRevokeRequest,
        moves: &mut LeaseMoves,
        after: &mut AfterCommit,
    ) -> Result<LeaseRevokeResponse, ApplyError> {
        let Some(info) = self.lessor.info(r.id, true) else {
            return Err(ApplyError::LeaseNotFound);
        };
        // All attached keys go in one revision.
        for key in &info.keys {
            for gone in txn.delete_range(key, b"", false)? {
                moves.0.push((gone.lease, 0, gone.key));
            }
        }
        let cf = backend::cf(self.mvcc.db(), CF_LEASE)?;
        txn.batch.delete_cf(cf, r.id.to_be_bytes());
        let id = r.id;
        after.push(Box::new(move |a: &Self| {
            a.lessor.revoke(id);
        }));
        Ok(LeaseRevokeResponse { header: None })
    }

    fn alarm(&self, txn: &mut WriteTxn<'_>, a: AlarmRequest) -> Result<AlarmResponse, ApplyError> {
        let mut alarms = self.alarms.lock();
        let member = AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let action = AlarmAction::try_from(a.action).unwrap_or(AlarmAction::Get);
        let changed = match action {
            AlarmAction::Get => Vec::new(),
            AlarmAction::Activate => {
                if a.alarm == AlarmType::None as i32 || alarms.contains(&member) {
                    Vec::new()
                } else {
                    alarms.push(member);
                    vec![member]
                }
            }
            AlarmAction::Deactivate => {
                let before = alarms.len();
                alarms.retain(|m| !(m.alarm == a.alarm && (a.member_id == 0 || m.member_id == a.member_id)));
                if alarms.len() != before {
                    vec![member]
                } else {
                    Vec::new()
                }
            }
        };
        let meta = backend::cf(self.mvcc.db(), CF_META)?;
        txn.batch.put_cf(
            meta,
            META_ALARMS,
            AlarmResponse {
                header: None,
                alarms: alarms.clone(),
            }
            .encode_to_vec(),
        );
        let alarms = if action == AlarmAction::Get {
            alarms.clone()
        } else {
            changed
        };
        Ok(AlarmResponse { header: None, alarms })
    }

    /// Loads every stored lease into the lessor (clocks restarted) and re-attaches their keys.
    pub fn restore_leases(&self, attachments: crate::mvcc::LeaseAttachments) -> Result<(), ApplyError> {
        let db = self.mvcc.db();
        self.lessor.clear();
        for item in db.iterator_cf(backend::cf(db, CF_LEASE)?, rocksdb::IteratorMode::Start) {
            let (_, v) = item.map_err(|e| ApplyError::Storage(e.to_string()))?;
            let lease = leasepb::Lease::decode(&*v).map_err(|_| ApplyError::Malformed)?;
            self.lessor.grant(lease.id, lease.ttl);
        }
        for (lease, key) in attachments {
            self.lessor.attach(lease, &key);
        }
        Ok(())
    }

    /// A txn with only reads, answered from the applied state without a log entry.
    pub fn read_txn(&self, t: TxnRequest) -> Result<TxnResponse, ApplyError> {
        let mut txn = WriteTxn::read_only(&self.mvcc);
        let mut moves = LeaseMoves::default();
        let mut r = self.txn(&mut txn, t, &mut moves)?;
        r.header = header(txn.revision());
        Ok(r)
    }

    /// The range read behind KV.Range (serializable: the local applied state).
    pub fn range(
        &self,
        req: &rudder_proto::etcdserverpb::RangeRequest,
    ) -> Result<(crate::mvcc::range::RangeOutput, i64), ApplyError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let (view, entries) = self.mvcc.resolve(&range, req.revision)?;
        let candidates = entries
            .into_iter()
            .map(|(k, r)| crate::mvcc::range::Candidate::Stored(k, r))
            .collect();
        let out = crate::mvcc::range::finish(req, candidates, |r| view.value(r))?;
        Ok((out, view.revision))
    }
}

/// etcd stores compaction revisions as 17-byte revision keys.
fn rudder_proto_rev(main: i64) -> Vec<u8> {
    crate::mvcc::Revision::new(main, 0).to_key(false)
}

fn txn_has_put(t: &TxnRequest) -> bool {
    t.success.iter().chain(t.failure.iter()).any(|op| match &op.request {
        Some(request_op::Request::RequestPut(_)) => true,
        Some(request_op::Request::RequestTxn(inner)) => txn_has_put(inner),
        _ => false,
    })
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, TargetUnion};
    let ord = match &c.target_union {
        Some(TargetUnion::Value(v)) => kv.value.as_slice().cmp(v.as_slice()),
        Some(TargetUnion::Version(v)) => kv.version.cmp(v),
        Some(TargetUnion::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(TargetUnion::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(TargetUnion::Lease(v)) => kv.lease.cmp(v),
        None => match compare::CompareTarget::try_from(c.target) {
            Ok(compare::CompareTarget::Value) => kv.value.as_slice().cmp(&[][..]),
            Ok(compare::CompareTarget::Version) => kv.version.cmp(&0),
            Ok(compare::CompareTarget::Create) => kv.create_revision.cmp(&0),
            Ok(compare::CompareTarget::Mod) => kv.mod_revision.cmp(&0),
            Ok(compare::CompareTarget::Lease) => kv.lease.cmp(&0),
            Err(_) => return false,
        },
    };
    use std::cmp::Ordering::*;
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Equal,
        Ok(CompareResult::Greater) => ord == Greater,
        Ok(CompareResult::Less) => ord == Less,
        Ok(CompareResult::NotEqual) => ord != Equal,
        Err(_) => false,
    }
}

fn set_header_revision(res: &mut ApplyResult, revision: i64) {
    let h = header(revision);
    match res {
        ApplyResult::Put(r) => r.header = h,
        ApplyResult::DeleteRange(r) => r.header = h,
        ApplyResult::Txn(r) => r.header = h,
        ApplyResult::Compaction(r) => r.header = h,
        ApplyResult::LeaseGrant(r) => r.header = h,
        ApplyResult::LeaseRevoke(r) => r.header = h,
        ApplyResult::Alarm(r) => r.header = h,
        ApplyResult::None | ApplyResult::Error(_) => {}
    }
}
