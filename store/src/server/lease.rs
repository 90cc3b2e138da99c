//! etcd's Lease service. Grants and revokes go through the log; keep-alives renew the leader's clock only
//! (as in etcd, deadlines are not replicated).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rudder_proto::etcdserverpb::lease_server::Lease;
use rudder_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::command::{ApplyResult, Op};
use crate::error::StoreError;
use crate::lease::MAX_LEASE_TTL;
use crate::node::StoreNode;

pub struct LeaseService {
    pub node: Arc<StoreNode>,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

impl LeaseService {
    fn fresh_id(&self) -> i64 {
        loop {
            // Positive, non-zero, unused: ids are chosen before proposing so applying stays deterministic.
            let id = (rand::random::<u64>() >> 1) as i64;
            if id != 0 && !self.node.applier.lessor.exists(id) {
                return id;
            }
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge.into());
        }
        if req.id == 0 {
            req.id = self.fresh_id();
        }
        super::quota::check(&self.node, 16).await?;
        match self.node.propose(Op::LeaseGrant(req)).await? {
            ApplyResult::LeaseGrant(mut r) => {
                r.header = Some(self.node.header(self.node.applier.mvcc.current_revision()));
                Ok(Response::new(r))
            }
            other => Err(Status::unknown(format!(
                "etcdserver: unexpected apply result {other:?}"
            ))),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        match self.node.propose(Op::LeaseRevoke(req)).await? {
            ApplyResult::LeaseRevoke(mut r) => {
                let revision = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
                r.header = Some(self.node.header(revision));
                Ok(Response::new(r))
            }
            other => Err(Status::unknown(format!(
                "etcdserver: unexpected apply result {other:?}"
            ))),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let require_leader = super::leader::requires_leader_md(request.metadata());
        let mut incoming = request.into_inner();
        let node = self.node.clone();
        let out = async_stream_keepalive(move |tx| async move {
            while let Some(msg) = incoming.next().await {
                let req = match msg {
                    Ok(r) => r,
                    Err(_) => break,
                };
                // An unknown lease answers TTL 0, not an error, as etcd does.
                let ttl = match node.lease_renew(req.id).await {
                    Ok(ttl) => ttl,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(node.header(node.applier.mvcc.current_revision())),
                    id: req.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        if require_leader {
            return Ok(Response::new(Box::pin(super::leader::until_leader_lost(
                out,
                self.node.clone(),
            ))));
        }
        Ok(Response::new(out))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = Some(self.node.header(self.node.applier.mvcc.current_revision()));
        let resp = match self.node.lease_info(req.id, req.keys).await? {
            Some(info) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: info.remaining_ttl,
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            },
            // etcd answers an unknown lease with TTL -1 rather than an error.
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .applier
            .lessor
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.node.header(self.node.applier.mvcc.current_revision())),
            leases,
        }))
    }
}

/// Runs `body` with the sending half of a channel and returns the receiving half as a response stream.
fn async_stream_keepalive<F, Fut>(body: F) -> KeepAliveStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
