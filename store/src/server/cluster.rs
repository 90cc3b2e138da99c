//! etcd's Cluster service over the Raft membership: list, add (also as learner), remove, update peer
//! URLs and promote. Changes run on the leader; any member accepts them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rudder_proto::etcdserverpb::cluster_server::Cluster;
use rudder_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::identity::member_id;
use crate::node::StoreNode;
use crate::raft::{MemberNode, MembershipChange};

pub struct ClusterService {
    pub node: Arc<StoreNode>,
}

impl ClusterService {
    fn header(&self) -> Option<rudder_proto::etcdserverpb::ResponseHeader> {
        Some(self.node.header(self.node.applier.mvcc.current_revision()))
    }

    fn members(&self) -> Vec<Member> {
        self.node
            .members()
            .into_iter()
            .map(|(id, n, is_learner)| Member {
                id,
                name: n.name,
                peer_ur_ls: n.peer_urls,
                client_ur_ls: n.client_urls,
                is_learner,
            })
            .collect()
    }

    fn check_peer_urls(&self, urls: &[String], except: Option<u64>) -> Result<(), StoreError> {
        for (id, n, _) in self.node.members() {
            if Some(id) != except && n.peer_urls.iter().any(|u| urls.contains(u)) {
                return Err(StoreError::PeerUrlExists);
            }
        }
        Ok(())
    }
}

fn normalize(urls: Vec<String>) -> Result<Vec<String>, Status> {
    urls.into_iter()
        .map(|u| {
            url::Url::parse(&u)
                .map(|p| p.as_str().trim_end_matches('/').to_string())
                .map_err(|_| Status::invalid_argument(format!("etcdserver: invalid peer URL {u:?}")))
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, r: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let req = r.into_inner();
        let peer_urls = normalize(req.peer_ur_ls)?;
        if peer_urls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: member peer URLs are required"));
        }
        self.check_peer_urls(&peer_urls, None)?;
        // Members added at run time get an id that also depends on the time, as in etcd.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = member_id(&peer_urls, &self.node.config.initial_cluster_token, Some(now));
        let node = MemberNode {
            name: String::new(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
        };
        self.node
            .change_membership(MembershipChange::Add {
                id,
                node,
                learner: req.is_learner,
            })
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: peer_urls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: self.members(),
        }))
    }

    async fn member_remove(&self, r: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = r.into_inner().id;
        self.node.change_membership(MembershipChange::Remove { id }).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(&self, r: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = r.into_inner();
        let peer_urls = normalize(req.peer_ur_ls)?;
        self.check_peer_urls(&peer_urls, Some(req.id))?;
        self.node
            .change_membership(MembershipChange::UpdatePeers { id: req.id, peer_urls })
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_list(&self, _r: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = r.into_inner().id;
        self.node.change_membership(MembershipChange::Promote { id }).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}
