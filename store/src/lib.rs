//! The etcd-compatible store: an MVCC key-value state machine on RocksDB, replicated through an openraft
//! log (a one-member group by default), served over etcd's v3 gRPC API.
//!
//! Owns: the Raft log and state machine, MVCC revisions and compaction, leases, the watch hub, and the gRPC
//! services. Wire types come from `rudder-proto`; flags and process wiring live in the `rudder` binary.

pub mod apply;
pub mod backend;
pub mod backup;
pub mod command;
pub mod config;
pub mod error;
pub mod identity;
pub mod lease;
pub mod mvcc;
pub mod node;
pub mod raft;
pub mod schema;
pub mod server;
pub mod sync;
pub mod watch;
pub mod watch_feed;
