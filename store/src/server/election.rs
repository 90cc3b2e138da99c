//! etcd's `v3electionpb.Election` service: leader election as a recipe over the key space, like etcd's.
//!
//! A candidate puts `name/<lease in hex>` holding its value; the key under `name/` with the smallest
//! create revision is the leader. A leadership is identified by its key and that key's create revision,
//! so a proclaim or resign from a leadership that has since ended (its key deleted, or re-created) does
//! nothing. The waiting and key helpers are shared with the lock service (`super::lock`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rudder_proto::etcdserverpb::TxnRequest;
use rudder_proto::mvccpb::event::EventType;
use rudder_proto::mvccpb::KeyValue;
use rudder_proto::v3electionpb::election_server::Election;
use rudder_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::lock::{
    child_prefix, contender_key, create_revision_is, delete_op, first_created_op, first_kv, get_op, header_revision,
    put_op, range_kvs, read, session_lease, txn, wait_deletes, watch_keys, Cleanup, RecipeError,
};
use crate::node::StoreNode;

pub struct ElectionService {
    pub node: Arc<StoreNode>,
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

impl ElectionService {
    /// Puts `value` on the leader key if the leadership still holds (etcd's Proclaim).
    async fn proclaim_on(&self, leader: &LeaderKey, lease: i64, value: Vec<u8>) -> Result<i64, RecipeError> {
        let resp = txn(
            &self.node,
            TxnRequest {
                compare: vec![create_revision_is(&leader.key, leader.rev)],
                success: vec![put_op(&leader.key, value, lease)],
                failure: Vec::new(),
            },
        )
        .await?;
        if !resp.succeeded {
            return Err(RecipeError::NotLeader);
        }
        Ok(header_revision(&resp.header))
    }

    /// Deletes the leader key if the leadership still holds (etcd's Resign); not holding it is no error.
    async fn resign_on(&self, leader: &LeaderKey) -> Result<i64, RecipeError> {
        let resp = txn(
            &self.node,
            TxnRequest {
                compare: vec![create_revision_is(&leader.key, leader.rev)],
                success: vec![delete_op(&leader.key)],
                failure: Vec::new(),
            },
        )
        .await?;
        Ok(header_revision(&resp.header))
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        let lease = session_lease(node, req.lease).await?;
        let prefix = child_prefix(&req.name);
        let key = contender_key(&prefix, lease);
        let resp = txn(
            node,
            TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, req.value.clone(), lease)],
                failure: vec![get_op(&key)],
            },
        )
        .await?;
        // etcd answers with the header of this first txn, however long the wait below takes.
        let header = node.header(header_revision(&resp.header));
        let mut leader = LeaderKey {
            name: req.name,
            key,
            rev: header_revision(&resp.header),
            lease,
        };
        if !resp.succeeded {
            // Campaigning again with the same lease resumes that candidacy, with the new value.
            let kv = first_kv(&resp.responses, 0)?;
            leader.rev = kv.create_revision;
            if kv.value != req.value {
                if let Err(e) = self.proclaim_on(&leader, lease, req.value).await {
                    if let Err(re) = self.resign_on(&leader).await {
                        tracing::warn!(error = %re, "resigning after a failed campaign");
                    }
                    return Err(e.into());
                }
            }
        }
        // A client that goes away while waiting withdraws its candidacy, as etcd's does.
        let cleanup = Cleanup::new(node.clone(), leader.key.clone(), Some(leader.rev));
        tracing::debug!(key = %String::from_utf8_lossy(&leader.key), rev = leader.rev, "campaigning");
        let waited = wait_deletes(node, &prefix, leader.rev - 1, None).await;
        // Any other failure leaves the candidacy in place (etcd only resigns on cancellation).
        cleanup.disarm();
        waited?;
        tracing::debug!(key = %String::from_utf8_lossy(&leader.key), "elected");
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(leader),
        }))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.ok_or(RecipeError::MissingLeaderKey)?;
        // As etcd: lease 0 gets a fresh session lease, which then holds the proclaimed value.
        let lease = session_lease(&self.node, leader.lease).await?;
        let revision = self.proclaim_on(&leader, lease, req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.node.header(revision)),
        }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let req = request.into_inner();
        let (revision, kv) = current_leader(&self.node, &child_prefix(&req.name)).await?;
        let kv = kv.ok_or(RecipeError::NoLeader)?;
        Ok(Response::new(LeaderResponse {
            header: Some(self.node.header(revision)),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let req = request.into_inner();
        let node = self.node.clone();
        // Capacity 1: like etcd's unbuffered channel, a slow reader holds the observer back instead of
        // queueing stale leaders.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let prefix = child_prefix(&req.name);
            tokio::select! {
                () = tx.closed() => tracing::debug!("election observer went away"),
                res = observe(&node, &prefix, &tx) => {
                    // As etcd: a failure just ends the stream.
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "election observe ended");
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.ok_or(RecipeError::MissingLeaderKey)?;
        let revision = self.resign_on(&leader).await?;
        Ok(Response::new(ResignResponse {
            header: Some(self.node.header(revision)),
        }))
    }
}

/// The oldest key under `prefix` (the leader), if any, and the revision it was read at.
async fn current_leader(node: &StoreNode, prefix: &[u8]) -> Result<(i64, Option<KeyValue>), RecipeError> {
    let r = read(node, vec![first_created_op(prefix)]).await?;
    let kv = range_kvs(&r.responses, 0)?.first().cloned();
    Ok((header_revision(&r.header), kv))
}

/// etcd's observe loop: send the current leader (waiting for one if there is none), then each new value
/// it proclaims until its key is deleted, then start over. Returns when a send fails (reader gone).
async fn observe(
    node: &Arc<StoreNode>,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), RecipeError> {
    loop {
        let (revision, kv) = current_leader(node, prefix).await?;
        let (revision, kv) = match kv {
            Some(kv) => (revision, kv),
            None => {
                let Some(kv) = first_put(node, prefix, revision + 1).await? else {
                    continue;
                };
                (kv.mod_revision, kv)
            }
        };
        let key = kv.key.clone();
        let first = LeaderResponse {
            header: Some(node.header(revision)),
            kv: Some(kv),
        };
        if tx.send(Ok(first)).await.is_err() {
            return Ok(());
        }
        // Follow this leader's key: every put is a proclamation, a delete ends the leadership.
        let mut events = watch_keys(node, vec![key], revision + 1, false);
        'leader: loop {
            let Some(resp) = events.next().await else {
                return Err(RecipeError::LostWatcher);
            };
            if resp.canceled {
                // Compacted past our start: re-read the leader rather than miss a change.
                break 'leader;
            }
            for ev in resp.events {
                if ev.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                let out = LeaderResponse {
                    header: resp.header,
                    kv: ev.kv,
                };
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The first key put under `prefix` at revision `from` or later; `None` when the watch was canceled
/// (compacted past `from`) and the caller should re-read.
async fn first_put(node: &Arc<StoreNode>, prefix: &[u8], from: i64) -> Result<Option<KeyValue>, RecipeError> {
    let mut events = watch_keys(node, vec![prefix.to_vec()], from, true);
    while let Some(resp) = events.next().await {
        if resp.canceled {
            return Ok(None);
        }
        // Only puts: a delete leaves the election still without a leader.
        if let Some(kv) = resp
            .events
            .into_iter()
            .find(|e| e.r#type == EventType::Put as i32)
            .and_then(|e| e.kv)
        {
            return Ok(Some(kv));
        }
    }
    Err(RecipeError::LostWatcher)
}
