//! The errors a client can get, with etcd's gRPC codes and exact messages (clients match them byte for
//! byte, e.g. kube-apiserver maps a compacted revision to HTTP 410).

use tonic::{Code, Status};

use crate::command::ApplyError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        let code = match &e {
            StoreError::EmptyKey
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::TooManyOps
            | StoreError::DuplicateKey
            | StoreError::RequestTooLarge => Code::InvalidArgument,
            StoreError::LeaseTtlTooLarge => Code::OutOfRange,
            StoreError::NoLeader | StoreError::LeaderChanged | StoreError::Timeout | StoreError::Stopped => {
                Code::Unavailable
            }
            StoreError::BadLeaderTransferee | StoreError::AuthNotEnabled => Code::FailedPrecondition,
            StoreError::MemberNotFound => Code::NotFound,
            StoreError::MemberExists | StoreError::PeerUrlExists => Code::FailedPrecondition,
            StoreError::MemberNotLearner => Code::FailedPrecondition,
            StoreError::Apply(a) => match a {
                ApplyError::Compacted | ApplyError::FutureRevision => Code::OutOfRange,
                ApplyError::LeaseNotFound => Code::NotFound,
                ApplyError::LeaseExists => Code::FailedPrecondition,
                ApplyError::KeyNotFound => Code::InvalidArgument,
                ApplyError::NoSpace => Code::ResourceExhausted,
                ApplyError::Storage(_) | ApplyError::Malformed => Code::Unknown,
            },
            StoreError::Internal(_) => Code::Unknown,
        };
        Status::new(code, e.to_string())
    }
}

impl From<crate::mvcc::MvccError> for StoreError {
    fn from(e: crate::mvcc::MvccError) -> Self {
        StoreError::Apply(e.into())
    }
}
