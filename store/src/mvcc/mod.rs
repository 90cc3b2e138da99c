//! Multi-version concurrency control as etcd defines it: a cluster-wide main revision per write, sub
//! revisions inside it, per-key create/mod revision and version, tombstones, reads at past revisions and
//! compaction. History lives in RocksDB (column family `key`); the key index lives in memory.

pub mod index;
pub mod range;
pub mod revision;
mod store;
mod write;

pub use index::KeyRange;
pub use revision::Revision;
pub use store::{KeyAt, LeaseAttachments, Mvcc, MvccError, ReadView};
pub use write::{Deleted, WriteOutcome, WriteTxn};
