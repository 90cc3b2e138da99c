//! etcd's Auth service. Authentication is never enabled on this store yet: status says so, `Authenticate`
//! gets etcd's "not enabled" error, and user / role management answers Unimplemented cleanly.

use std::sync::Arc;

use rudder_proto::etcdserverpb::auth_server::Auth;
use rudder_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse, AuthRoleAddRequest,
    AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::node::StoreNode;

pub struct AuthService {
    pub node: Arc<StoreNode>,
}

fn unsupported() -> Status {
    Status::unimplemented("etcdserver: user and role management is not supported by this store yet")
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_status(&self, _r: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.node.header(self.node.applier.mvcc.current_revision())),
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn authenticate(&self, _r: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        Err(StoreError::AuthNotEnabled.into())
    }

    async fn auth_enable(&self, _r: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        Err(unsupported())
    }

    async fn auth_disable(&self, _r: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        Err(unsupported())
    }

    async fn user_add(&self, _r: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        Err(unsupported())
    }

    async fn user_get(&self, _r: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        Err(unsupported())
    }

    async fn user_list(&self, _r: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        Err(unsupported())
    }

    async fn user_delete(
        &self,
        _r: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        Err(unsupported())
    }

    async fn user_change_password(
        &self,
        _r: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        Err(unsupported())
    }

    async fn user_grant_role(
        &self,
        _r: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        Err(unsupported())
    }

    async fn user_revoke_role(
        &self,
        _r: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        Err(unsupported())
    }

    async fn role_add(&self, _r: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        Err(unsupported())
    }

    async fn role_get(&self, _r: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        Err(unsupported())
    }

    async fn role_list(&self, _r: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        Err(unsupported())
    }

    async fn role_delete(
        &self,
        _r: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        Err(unsupported())
    }

    async fn role_grant_permission(
        &self,
        _r: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        Err(unsupported())
    }

    async fn role_revoke_permission(
        &self,
        _r: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        Err(unsupported())
    }
}
