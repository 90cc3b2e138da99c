//! etcd's Cluster service. A single member answers MemberList with itself; membership changes arrive
//! with the three-member store.

use std::sync::Arc;

use rudder_proto::etcdserverpb::cluster_server::Cluster;
use rudder_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::node::StoreNode;

pub struct ClusterService {
    pub node: Arc<StoreNode>,
}

fn not_yet() -> Status {
    Status::unimplemented("etcdserver: membership changes are not supported by a single-member store yet")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _r: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet())
    }

    async fn member_remove(&self, _r: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet())
    }

    async fn member_update(&self, _r: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet())
    }

    async fn member_list(&self, _r: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let m = &self.node.member;
        let member = Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: false,
        };
        Ok(Response::new(MemberListResponse {
            header: Some(self.node.header(self.node.applier.mvcc.current_revision())),
            members: vec![member],
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
