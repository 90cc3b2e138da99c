//! etcd's KV service: validates requests, proposes writes through the log, serves reads from the applied
//! state (after a ReadIndex barrier unless the read is serializable), and maps errors to etcd's.

use std::collections::BTreeSet;
use std::sync::Arc;

use rudder_proto::etcdserverpb::kv_server::Kv;
use rudder_proto::etcdserverpb::{
    request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::quota;
use crate::command::{ApplyResult, Op};
use crate::error::StoreError;
use crate::node::StoreNode;

pub struct KvService {
    pub node: Arc<StoreNode>,
}

fn unexpected(r: ApplyResult) -> Status {
    Status::unknown(format!("etcdserver: unexpected apply result {r:?}"))
}

impl KvService {
    fn stamp(&self, h: &mut Option<rudder_proto::etcdserverpb::ResponseHeader>) {
        let revision = h
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.node.applier.mvcc.current_revision());
        *h = Some(self.node.header(revision));
    }
}

/// etcd's txn checks: op counts, keys present, and no key written twice in one branch.
pub fn validate_txn(t: &TxnRequest, max_ops: usize) -> Result<(), StoreError> {
    if t.compare.len() > max_ops || t.success.len() > max_ops || t.failure.len() > max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
    }
    for branch in [&t.success, &t.failure] {
        for op in branch.iter() {
            validate_op(op, max_ops)?;
        }
        let mut puts = BTreeSet::new();
        let mut deletes = Vec::new();
        collect_writes(branch, &mut puts, &mut deletes)?;
        for (start, end) in &deletes {
            let range = crate::mvcc::KeyRange::new(start, end);
            if puts.iter().any(|k: &Vec<u8>| range.contains(k)) {
                return Err(StoreError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn validate_op(op: &RequestOp, max_ops: usize) -> Result<(), StoreError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => Err(StoreError::EmptyKey),
        Some(request_op::Request::RequestPut(p)) => validate_put(p),
        Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => Err(StoreError::EmptyKey),
        Some(request_op::Request::RequestTxn(t)) => validate_txn(t, max_ops),
        None => Err(StoreError::EmptyKey),
        _ => Ok(()),
    }
}

/// Puts of one branch (nested txns included, each of their branches on its own) must not repeat a key.
fn collect_writes(
    ops: &[RequestOp],
    puts: &mut BTreeSet<Vec<u8>>,
    deletes: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), StoreError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(StoreError::DuplicateKey);
            }
            Some(request_op::Request::RequestDeleteRange(d)) => deletes.push((d.key.clone(), d.range_end.clone())),
            Some(request_op::Request::RequestTxn(t)) => {
                let mut branch_puts = BTreeSet::new();
                for branch in [&t.success, &t.failure] {
                    let mut p = puts.clone();
                    collect_writes(branch, &mut p, deletes)?;
                    branch_puts.extend(p.difference(puts).cloned().collect::<Vec<_>>());
                }
                puts.extend(branch_puts);
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_put(p: &PutRequest) -> Result<(), StoreError> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(t.failure.iter()).all(|op| match &op.request {
        Some(request_op::Request::RequestRange(_)) => true,
        Some(request_op::Request::RequestTxn(inner)) => is_read_only(inner),
        _ => false,
    })
}

/// Only a txn whose every op is a serializable range skips the read barrier. A txn without ops (compares
/// only) is linearizable: its answer is the compare result, which must not come from a stale member.
fn is_serializable(t: &TxnRequest) -> bool {
    let mut ops = t.success.iter().chain(t.failure.iter()).peekable();
    ops.peek().is_some()
        && ops.all(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => r.serializable,
            Some(request_op::Request::RequestTxn(inner)) => is_serializable(inner),
            _ => false,
        })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey.into());
        }
        if !req.serializable {
            self.node.read_barrier().await?;
        }
        let (out, revision) = self.node.applier.range(&req).map_err(StoreError::from)?;
        Ok(Response::new(RangeResponse {
            header: Some(self.node.header(revision)),
            kvs: out.kvs,
            more: out.more,
            count: out.count,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate_put(&req)?;
        quota::check(&self.node, (req.key.len() + req.value.len()) as u64).await?;
        match self.node.propose(Op::Put(req)).await? {
            ApplyResult::Put(mut r) => {
                self.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey.into());
        }
        match self.node.propose(Op::DeleteRange(req)).await? {
            ApplyResult::DeleteRange(mut r) => {
                self.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate_txn(&req, self.node.config.max_txn_ops)?;
        if is_read_only(&req) {
            if !is_serializable(&req) {
                self.node.read_barrier().await?;
            }
            let mut r = self.node.applier.read_txn(req).map_err(StoreError::from)?;
            self.stamp(&mut r.header);
            return Ok(Response::new(r));
        }
        quota::check(&self.node, prost::Message::encoded_len(&req) as u64).await?;
        match self.node.propose(Op::Txn(req)).await? {
            ApplyResult::Txn(mut r) => {
                self.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        match self.node.propose(Op::Compaction(req)).await? {
            ApplyResult::Compaction(mut r) => {
                self.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }
}
