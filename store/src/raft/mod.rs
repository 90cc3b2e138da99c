//! The Raft layer: openraft's type configuration, the RocksDB log store, the state machine adapter and
//! the peer network.

pub mod log_store;
pub mod network;
pub mod peer;
pub mod state_machine;

use crate::command::{ApplyResult, Command};

openraft::declare_raft_types!(
    /// Rudder's Raft types: etcd commands in, etcd responses out, members named by etcd member id.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        Node = MemberNode,
);

/// What the Raft membership records about a member: what etcd's member list shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberNode {
    /// Empty until the member has started and published itself (as in etcd).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// A membership change, run by the leader (followers forward it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    Add {
        id: u64,
        node: MemberNode,
        learner: bool,
    },
    Remove {
        id: u64,
    },
    Promote {
        id: u64,
    },
    /// New peer URLs (etcdctl member update).
    UpdatePeers {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// A started member's name and client URLs.
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
}

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
