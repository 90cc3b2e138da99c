//! etcd's `v3lockpb.Lock` service, plus the building blocks it shares with the election service.
//!
//! Like etcd, locks are a recipe over the key space rather than server state: a contender puts
//! `name/<lease in hex>` (bound to its lease) and holds the lock once no key under `name/` has a smaller
//! create revision. Waiting watches the newest older key for deletion and re-checks, so one unlock wakes
//! one waiter. Everything goes through the log and the watch hub, so any member can serve these calls.

use std::convert::Infallible;
use std::sync::Arc;

use futures::StreamExt;
use rudder_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use rudder_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use rudder_proto::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use rudder_proto::mvccpb::event::EventType;
use rudder_proto::mvccpb::KeyValue;
use rudder_proto::v3lockpb::lock_server::Lock;
use rudder_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::command::{ApplyResult, Op};
use crate::error::StoreError;
use crate::node::StoreNode;
use crate::watch::{watch_session, HeaderSource, SessionConfig};

/// TTL of the lease etcd grants when a Lock or Campaign names no lease (its client session default).
const DEFAULT_SESSION_TTL: i64 = 60;

/// Errors of the lock and election recipes, with etcd's messages. All of them reach the client with code
/// Unknown, as from etcd: its recipes run on an embedded client that turns the store's own gRPC errors
/// into plain Go errors (e.g. a missing lease is `Unknown`, not `NotFound`; checked against etcd 3.4).
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("mutex: session is expired")]
    SessionExpired,
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    #[error("etcdserver: unexpected apply result {0}")]
    Unexpected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RecipeError> for Status {
    fn from(e: RecipeError) -> Status {
        Status::unknown(e.to_string())
    }
}

pub struct LockService {
    pub node: Arc<StoreNode>,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        let lease = session_lease(node, req.lease).await?;
        let prefix = child_prefix(&req.name);
        let key = contender_key(&prefix, lease);
        // Enqueue (or find our earlier entry, so locking twice with one lease is one acquisition) and
        // read the oldest contender in the same revision.
        let resp = txn(
            node,
            TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, Vec::new(), lease), first_created_op(&prefix)],
                failure: vec![get_op(&key), first_created_op(&prefix)],
            },
        )
        .await?;
        let revision = header_revision(&resp.header);
        let my_rev = if resp.succeeded {
            revision
        } else {
            first_kv(&resp.responses, 0)?.create_revision
        };
        let owner = range_kvs(&resp.responses, 1)?.first().map(|kv| kv.create_revision);
        if owner.is_none_or(|rev| rev == my_rev) {
            tracing::debug!(key = %String::from_utf8_lossy(&key), "lock acquired uncontended");
            return Ok(Response::new(LockResponse {
                header: Some(node.header(revision)),
                key,
            }));
        }
        // From here on a failed or abandoned wait removes our entry, as etcd's mutex does, so it cannot
        // block later contenders until the lease ends.
        let cleanup = Cleanup::new(node.clone(), key.clone(), None);
        tracing::debug!(key = %String::from_utf8_lossy(&key), my_rev, "lock contended, waiting");
        match wait_deletes(node, &prefix, my_rev - 1, Some(&key)).await {
            Ok(header) => {
                cleanup.disarm();
                tracing::debug!(key = %String::from_utf8_lossy(&key), "lock acquired");
                Ok(Response::new(LockResponse {
                    header: Some(header),
                    key,
                }))
            }
            Err(RecipeError::SessionExpired) => {
                // Our key is already gone: nothing to clean up.
                cleanup.disarm();
                Err(RecipeError::SessionExpired.into())
            }
            // `cleanup` is still armed and removes our key as it drops.
            Err(e) => Err(e.into()),
        }
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(RecipeError::from(StoreError::EmptyKey).into());
        }
        let deleted = self.node.propose(Op::DeleteRange(delete_request(req.key))).await;
        match deleted.map_err(RecipeError::from)? {
            ApplyResult::DeleteRange(r) => Ok(Response::new(UnlockResponse {
                header: Some(self.node.header(revision_or_current(&self.node, &r.header))),
            })),
            other => Err(RecipeError::Unexpected(format!("{other:?}")).into()),
        }
    }
}

/// The lease a recipe binds its key to. Lease 0 means "none given": etcd's session then grants a fresh
/// 60-second lease, which nobody keeps alive, and uses that.
pub(super) async fn session_lease(node: &StoreNode, lease: i64) -> Result<i64, RecipeError> {
    if lease != 0 {
        return Ok(lease);
    }
    super::quota::check(node, 16).await?;
    let id = loop {
        // Chosen before proposing so applying stays deterministic (as the Lease service does).
        let id = (rand::random::<u64>() >> 1) as i64;
        if id != 0 && !node.applier.lessor.exists(id) {
            break id;
        }
    };
    let grant = LeaseGrantRequest {
        ttl: DEFAULT_SESSION_TTL,
        id,
    };
    match node.propose(Op::LeaseGrant(grant)).await? {
        ApplyResult::LeaseGrant(r) => Ok(r.id),
        other => Err(RecipeError::Unexpected(format!("{other:?}"))),
    }
}

/// `name/`: where the contenders of one lock or election live.
pub(super) fn child_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `prefix<lease in hex>`, spelled as Go's `%x` spells an int64 (lower case, sign in front).
pub(super) fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

/// etcd's prefix range end: the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(super) fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub(super) fn put_op(key: &[u8], value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub(super) fn get_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

pub(super) fn delete_request(key: Vec<u8>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key,
        ..Default::default()
    }
}

pub(super) fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(delete_request(key.to_vec()))),
    }
}

/// The key under `prefix` with the smallest (`Ascend`) or largest create revision, at most
/// `max_create_rev` when that is non-zero.
fn by_create_op(prefix: &[u8], order: SortOrder, max_create_rev: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: order as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: max_create_rev,
            ..Default::default()
        })),
    }
}

/// The oldest contender under `prefix`: the lock holder or election leader.
pub(super) fn first_created_op(prefix: &[u8]) -> RequestOp {
    by_create_op(prefix, SortOrder::Ascend, 0)
}

pub(super) fn header_revision(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map(|h| h.revision).unwrap_or(0)
}

/// The revision an applied write reports, as the KV service stamps it.
fn revision_or_current(node: &StoreNode, h: &Option<ResponseHeader>) -> i64 {
    h.as_ref()
        .map(|h| h.revision)
        .unwrap_or_else(|| node.applier.mvcc.current_revision())
}

/// The key-values of the `i`th response of a txn, which must be a range.
pub(super) fn range_kvs(responses: &[ResponseOp], i: usize) -> Result<&[KeyValue], RecipeError> {
    match responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => Ok(&r.kvs),
        other => Err(RecipeError::Unexpected(format!("txn response {i}: {other:?}"))),
    }
}

/// The first key-value of the `i`th response of a txn (a range known to match).
pub(super) fn first_kv(responses: &[ResponseOp], i: usize) -> Result<&KeyValue, RecipeError> {
    range_kvs(responses, i)?
        .first()
        .ok_or_else(|| RecipeError::Unexpected(format!("txn response {i}: no key")))
}

/// Proposes a txn that writes; its header is filled like the KV service's.
pub(super) async fn txn(node: &StoreNode, t: TxnRequest) -> Result<TxnResponse, RecipeError> {
    super::quota::check(node, prost::Message::encoded_len(&t) as u64).await?;
    match node.propose(Op::Txn(t)).await? {
        ApplyResult::Txn(mut r) => {
            r.header = Some(node.header(revision_or_current(node, &r.header)));
            Ok(r)
        }
        other => Err(RecipeError::Unexpected(format!("{other:?}"))),
    }
}

/// A linearizable read-only txn (all `ops` are ranges), answered from this member's applied state.
pub(super) async fn read(node: &StoreNode, ops: Vec<RequestOp>) -> Result<TxnResponse, RecipeError> {
    node.read_barrier().await?;
    let r = node
        .applier
        .read_txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
        .map_err(StoreError::from)?;
    Ok(r)
}

/// etcd's waitDeletes: returns once no key under `prefix` has a create revision of at most
/// `max_create_rev`. With `own`, also fails with [`RecipeError::SessionExpired`] as soon as that key is
/// gone (its lease ended), instead of waiting for the older keys first. Returns the header of the read
/// that found the way clear.
pub(super) async fn wait_deletes(
    node: &Arc<StoreNode>,
    prefix: &[u8],
    max_create_rev: i64,
    own: Option<&[u8]>,
) -> Result<ResponseHeader, RecipeError> {
    loop {
        let mut ops = vec![by_create_op(prefix, SortOrder::Descend, max_create_rev)];
        if let Some(k) = own {
            ops.push(get_op(k));
        }
        let r = read(node, ops).await?;
        let revision = header_revision(&r.header);
        if own.is_some() && range_kvs(&r.responses, 1)?.is_empty() {
            return Err(RecipeError::SessionExpired);
        }
        let Some(last) = range_kvs(&r.responses, 0)?.first() else {
            return Ok(node.header(revision));
        };
        // Only the newest older contender: when it goes, re-check (it may have had older ones itself).
        let mut keys = vec![last.key.clone()];
        keys.extend(own.map(<[u8]>::to_vec));
        wait_delete(node, keys, revision + 1).await?;
    }
}

/// Waits for a delete of any of `keys` at revision `from` or later. A watch canceled by the server
/// (e.g. its start revision was compacted away meanwhile) also returns, so the caller re-reads.
async fn wait_delete(node: &Arc<StoreNode>, keys: Vec<Vec<u8>>, from: i64) -> Result<(), RecipeError> {
    let mut events = watch_keys(node, keys, from, false);
    while let Some(resp) = events.next().await {
        if resp.canceled {
            tracing::debug!(reason = %resp.cancel_reason, "recipe watch canceled; re-checking");
            return Ok(());
        }
        if resp.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
            return Ok(());
        }
    }
    Err(RecipeError::LostWatcher)
}

/// A server-internal watch stream on the hub: one watcher per key (or one on the prefix of the single
/// key given when `prefix` is set), from revision `from`. Dropping the stream removes the watchers.
pub(super) fn watch_keys(
    node: &Arc<StoreNode>,
    keys: Vec<Vec<u8>>,
    from: i64,
    prefix: bool,
) -> futures::stream::BoxStream<'static, rudder_proto::etcdserverpb::WatchResponse> {
    let creates = keys.into_iter().map(move |key| {
        let range_end = if prefix { prefix_end(&key) } else { Vec::new() };
        Ok::<_, Infallible>(WatchRequest {
            request_union: Some(rudder_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key,
                    range_end,
                    start_revision: from,
                    ..Default::default()
                },
            )),
        })
    });
    let headers: Arc<dyn HeaderSource> = node.clone();
    let config = SessionConfig {
        max_response_bytes: node.config.max_request_bytes + crate::config::GRPC_OVERHEAD_BYTES,
        ..SessionConfig::default()
    };
    // The request stream ends after the creates; the session keeps answering (a client half-close).
    watch_session(&node.hub, futures::stream::iter(creates), headers, config).boxed()
}

/// Removes a contender's key when a wait is abandoned: on drop (the client went away, so tonic dropped
/// the call) or on an error, unless disarmed. With `create_rev`, only while the key still has it (the
/// election's resign), so a newer key of the same lease survives.
pub(super) struct Cleanup {
    armed: Option<(Arc<StoreNode>, Vec<u8>, Option<i64>)>,
}

impl Cleanup {
    pub(super) fn new(node: Arc<StoreNode>, key: Vec<u8>, create_rev: Option<i64>) -> Self {
        Self {
            armed: Some((node, key, create_rev)),
        }
    }

    pub(super) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some((node, key, create_rev)) = self.armed.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %String::from_utf8_lossy(&key), "no runtime to remove an abandoned contender key");
            return;
        };
        rt.spawn(async move {
            let op = match create_rev {
                None => Op::DeleteRange(delete_request(key.clone())),
                Some(rev) => Op::Txn(TxnRequest {
                    compare: vec![create_revision_is(&key, rev)],
                    success: vec![delete_op(&key)],
                    failure: Vec::new(),
                }),
            };
            match node.propose(op).await {
                Ok(_) => tracing::debug!(key = %String::from_utf8_lossy(&key), "removed abandoned contender key"),
                Err(e) => tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e,
                    "removing abandoned contender key; it stays until its lease ends"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_like_go() {
        assert_eq!(
            contender_key(b"l/", 0x694d_7a1f_8b2c_4e05),
            b"l/694d7a1f8b2c4e05".to_vec()
        );
        assert_eq!(contender_key(b"l/", -31), b"l/-1f".to_vec());
        assert_eq!(child_prefix(b"n"), b"n/".to_vec());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
