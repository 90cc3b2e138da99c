//! Watch: fans committed MVCC events out to etcd watchers.
//!
//! - [`WatchHub`] (hub.rs) holds every watcher of every stream. The apply path calls
//!   [`WatchHub::publish`] once per revision; synced watchers get the events pushed into their stream's
//!   bounded queue (queue.rs). A watcher whose queue is full, or which starts in the past, becomes
//!   *unsynced* and is fed from [`EventHistory`] by its stream's catch-up (catch_up.rs) until it reaches
//!   the hub's revision, then rejoins the synced set under the hub lock (no gap, no duplicate).
//! - [`WatchStream`] (stream.rs) is one client stream: create/cancel/progress requests in, responses out.
//! - session.rs drives a stream asynchronously (request reader task, catch-up on the blocking pool,
//!   progress ticker, fragmenting, headers); the gRPC service in `server::watch` is a thin layer on it.
//!
//! Shared state uses only `crate::sync` so the loom model (loom_tests.rs) explores the real code.

mod catch_up;
mod fragment;
mod hub;
mod queue;
mod range;
mod session;
mod stream;

#[cfg(all(test, rudder_loom))]
mod loom_tests;
#[cfg(all(test, not(rudder_loom)))]
pub(crate) mod tests;

use rudder_proto::etcdserverpb::ResponseHeader;
use rudder_proto::mvccpb::Event;

pub use fragment::fragment_response;
pub use hub::{HubConfig, WatchHub};
pub use queue::Outgoing;
pub use session::{watch_session, SessionConfig};
pub use stream::WatchStream;

/// All events of one revision, in sub-revision order. `prev_kv` is filled when a previous version
/// existed and a watcher may need it (the hub strips it for watchers that did not ask for it; see
/// [`WatchHub::publish_filling`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// One bounded read from [`EventHistory::events`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryBatch {
    /// Matching events with `from <= mod_revision <= through`, in revision (then sub-revision) order,
    /// `prev_kv` filled.
    pub events: Vec<Event>,
    /// Every matching event of revisions `from..=through` is in `events`; `from <= through <= to`.
    /// Equal to `to` unless the read stopped early at a revision boundary.
    pub through: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The requested revisions are gone. The value is copied verbatim into the client's
    /// `WatchResponse.compact_revision`, which etcd clients treat as "the oldest revision you may
    /// watch from" and often re-watch from.
    #[error("required revision has been compacted (compact revision {0})")]
    Compacted(i64),
    /// Any other failure; the affected watcher is canceled with this text as `cancel_reason`.
    #[error("event history read failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Read access to past events, implemented by the MVCC store.
pub trait EventHistory: Send + Sync + 'static {
    /// Events with `from <= mod_revision <= to` whose key is in `[key, range_end)` (etcd range rules:
    /// empty `range_end` = exactly `key`, `"\0"` = every key `>= key`), in revision order, `prev_kv`
    /// filled. May stop early at a revision boundary after roughly `max_revisions` revisions (scanned
    /// or matched, the implementation's choice) and says how far it got in [`HistoryBatch::through`].
    /// `Err(Compacted(..))` when `from` is at or below the compacted revision.
    fn events(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        range_end: &[u8],
        max_revisions: usize,
    ) -> Result<HistoryBatch, HistoryError>;
}

/// Fills response headers; `cluster_id`, `member_id` and `raft_term` come from the server.
pub trait HeaderSource: Send + Sync + 'static {
    fn header(&self, revision: i64) -> ResponseHeader;
}
