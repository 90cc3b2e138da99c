//! The peer network, server side: the `rudder.raftpb.RaftPeer` service on `--listen-peer-urls`. It hands
//! Raft RPCs to openraft and, on the leader, runs writes, read indexes and membership changes that
//! followers forward.

use std::io::Cursor;

use openraft::error::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ReadPolicy;
use rudder_proto::raftpb::raft_peer_server::RaftPeer;
use rudder_proto::raftpb::{MembersRequest, MembersResponse, Payload, SnapshotChunk};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{decode, encode, LogId, MemberNode, MembershipChange, Raft, Snapshot, SnapshotMeta, Vote};
use crate::command::{ApplyResult, Command};
use crate::error::StoreError;

pub struct PeerService {
    pub raft: Raft,
    pub cluster_id: u64,
    pub lessor: std::sync::Arc<crate::lease::Lessor>,
    pub peers: super::network::Peers,
    /// Set when the leader says this member was removed.
    pub removed: tokio::sync::watch::Sender<bool>,
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed peer message: {e}"))
}

fn payload<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: encode(v).map_err(|e| Status::internal(e.to_string()))?,
    }))
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

/// The leader's answer to a forwarded write: the apply result, or the error the client should get.
pub type ProposeResult = Result<ApplyResult, StoreError>;

/// Runs a write on this member, which must be the leader.
pub async fn propose_local(raft: &Raft, cmd: Command) -> ProposeResult {
    match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            ApplyResult::Error(e) => Err(StoreError::Apply(e)),
            other => Ok(other),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(if f.leader_id.is_some() {
            StoreError::LeaderChanged
        } else {
            StoreError::NoLeader
        }),
        Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
        Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
    }
}

/// Runs a membership change on this member, which must be the leader.
pub async fn change_membership_local(
    raft: &Raft,
    peers: &super::network::Peers,
    change: MembershipChange,
) -> Result<(), StoreError> {
    use openraft::ChangeMembers;
    let map = |r: Result<_, RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>>| match r {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(StoreError::NoLeader),
        Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
        Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
    };
    let membership = raft.metrics().borrow_watched().membership_config.clone();
    let is_voter = |id: u64| membership.voter_ids().any(|v| v == id);
    let node_of = |id: u64| membership.get_node(&id).cloned();
    match change {
        MembershipChange::Add { id, node, learner } => {
            if node_of(id).is_some() {
                return Err(StoreError::MemberExists);
            }
            map(raft.add_learner(id, node, false).await)?;
            if !learner {
                map(raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await)?;
            }
            Ok(())
        }
        MembershipChange::Remove { id } => {
            if node_of(id).is_none() {
                return Err(StoreError::MemberNotFound);
            }
            let node = node_of(id);
            if is_voter(id) {
                map(raft
                    .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                    .await)?;
            } else {
                map(raft
                    .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                    .await)?;
            }
            if let Some(node) = node {
                tokio::spawn(notify_removed(peers.clone(), id, node));
            }
            Ok(())
        }
        MembershipChange::Promote { id } => {
            if node_of(id).is_none() {
                return Err(StoreError::MemberNotFound);
            }
            if is_voter(id) {
                return Err(StoreError::MemberNotLearner);
            }
            map(raft
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await)
        }
        MembershipChange::UpdatePeers { id, peer_urls } => {
            let Some(mut node) = node_of(id) else {
                return Err(StoreError::MemberNotFound);
            };
            node.peer_urls = peer_urls;
            map(raft
                .change_membership(ChangeMembers::SetNodes([(id, node)].into()), false)
                .await)
        }
        MembershipChange::Publish { id, name, client_urls } => {
            let Some(node) = node_of(id) else {
                return Err(StoreError::MemberNotFound);
            };
            let node = MemberNode {
                name,
                client_urls,
                ..node
            };
            map(raft
                .change_membership(ChangeMembers::SetNodes([(id, node)].into()), false)
                .await)
        }
    }
}

/// Tells a removed member so (best effort: a member that misses it is no longer replicated to anyway).
async fn notify_removed(peers: super::network::Peers, id: u64, node: MemberNode) {
    let Ok(data) = encode(&id) else { return };
    for _ in 0..10 {
        if let Ok(mut client) = peers.client(&node.peer_urls.join(",")) {
            if client.removed(Payload { data: data.clone() }).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Answers of a replication stream, in request order.
type AppendAnswers = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type StreamAppendStream = AppendAnswers;

    async fn stream_append(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // A broken or undecodable message ends the input; the requests before it are still answered
        // and the leader starts a new stream from where the answers stop.
        let input = request.into_inner().map_while(|m| match m {
            Ok(p) => decode(&p.data)
                .map_err(|e| tracing::warn!(error = %e, "malformed AppendEntries in a replication stream"))
                .ok(),
            Err(_) => None,
        });
        let answers = self.raft.stream_append(input).map(|r| match r {
            Ok(res) => encode(&res)
                .map(|data| Payload { data })
                .map_err(|e| Status::internal(e.to_string())),
            Err(fatal) => Err(unavailable(fatal)),
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self.raft.append_entries(rpc).await.map_err(unavailable)?;
        payload(&resp)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self.raft.vote(rpc).await.map_err(unavailable)?;
        payload(&resp)
    }

    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<Payload>, Status> {
        let mut chunks = request.into_inner();
        let mut header: Option<(Vote, SnapshotMeta)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if header.is_none() {
                header = Some(decode(&chunk.header).map_err(bad)?);
            }
            data.extend_from_slice(&chunk.data);
            if chunk.done {
                break;
            }
        }
        let Some((vote, meta)) = header else {
            return Err(bad("empty snapshot stream"));
        };
        let snapshot = Snapshot {
            meta,
            snapshot: Cursor::new(data),
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(unavailable)?;
        payload(&resp)
    }

    async fn transfer_leader(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self.raft.handle_transfer_leader(req).await.map_err(unavailable)?;
        payload(&resp)
    }

    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let cmd = Command(request.into_inner().data);
        payload(&propose_local(&self.raft, cmd).await)
    }

    async fn read_index(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let res: Result<LogId, StoreError> = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(l) => Ok(*l.read_log_id().log_id()),
            Err(RaftError::APIError(_)) => Err(StoreError::NoLeader),
            Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
        };
        payload(&res)
    }

    async fn change_membership(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: MembershipChange = decode(&request.into_inner().data).map_err(bad)?;
        payload(&change_membership_local(&self.raft, &self.peers, change).await)
    }

    async fn lease_keep_alive(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let id: i64 = decode(&request.into_inner().data).map_err(bad)?;
        let ttl: Result<i64, StoreError> =
            if self.raft.metrics().borrow_watched().state == openraft::ServerState::Leader {
                Ok(self.lessor.renew(id).unwrap_or(0))
            } else {
                Err(StoreError::NoLeader)
            };
        payload(&ttl)
    }

    async fn lease_time_to_live(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let (id, keys): (i64, bool) = decode(&request.into_inner().data).map_err(bad)?;
        payload(&self.lessor.info(id, keys))
    }

    async fn removed(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let id: u64 = decode(&request.into_inner().data).map_err(bad)?;
        if id == self.raft.metrics().borrow_watched().id {
            let _ = self.removed.send(true);
        }
        payload(&())
    }

    async fn members(&self, _request: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members: Vec<(u64, MemberNode, bool)> = membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect();
        let members = encode(&members).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MembersResponse {
            cluster_id: self.cluster_id,
            members,
        }))
    }
}
