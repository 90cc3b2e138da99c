//! The Raft layer: openraft's type configuration, the RocksDB log store, the state machine adapter and
//! the peer network.

pub mod log_store;
pub mod network;
pub mod state_machine;

use crate::command::{ApplyResult, Command};

openraft::declare_raft_types!(
    /// Rudder's Raft types: etcd commands in, etcd responses out, members named by etcd member id.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    postcard::to_allocvec(v).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
