//! The commands carried by the Raft log and what applying them returns.
//!
//! A command is one etcd mutation, prost-encoded; ids that need randomness (lease ids) are chosen before
//! proposing, so applying is deterministic on every member.

use rudder_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse,
    TxnRequest, TxnResponse,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftRequest {
    #[prost(oneof = "Op", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub op: Option<Op>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    #[prost(message, tag = "1")]
    Put(PutRequest),
    #[prost(message, tag = "2")]
    DeleteRange(DeleteRangeRequest),
    #[prost(message, tag = "3")]
    Txn(TxnRequest),
    #[prost(message, tag = "4")]
    Compaction(CompactionRequest),
    #[prost(message, tag = "5")]
    LeaseGrant(LeaseGrantRequest),
    #[prost(message, tag = "6")]
    LeaseRevoke(LeaseRevokeRequest),
    #[prost(message, tag = "7")]
    Alarm(AlarmRequest),
}

/// The Raft log's application data: an encoded [`RaftRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command({} bytes)", self.0.len())
    }
}

impl Command {
    pub fn encode(op: Op) -> Self {
        Command(prost::Message::encode_to_vec(&RaftRequest { op: Some(op) }))
    }
}

/// Errors decided by the state machine; identical on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: {0}")]
    Storage(String),
    #[error("etcdserver: malformed raft command")]
    Malformed,
}

/// What applying one log entry returns to the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum ApplyResult {
    /// Blank and membership entries.
    #[default]
    None,
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    Error(ApplyError),
}
