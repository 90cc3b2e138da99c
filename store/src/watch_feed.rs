//! Connects the MVCC store and the watch hub: the hub reads history from the store, and the apply path
//! publishes each revision's events to the hub.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rudder_proto::mvccpb::Event;

use crate::apply::EventSink;
use crate::config::DROP_WATCH_EVENT_EVERY;
use crate::mvcc::{KeyRange, Mvcc, MvccError};
use crate::watch::{EventHistory, HistoryBatch, HistoryError, RevisionEvents, WatchHub};

pub struct MvccHistory(pub Arc<Mvcc>);

impl EventHistory for MvccHistory {
    fn events(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        range_end: &[u8],
        max_revisions: usize,
    ) -> Result<HistoryBatch, HistoryError> {
        match self.0.events(from, to, &KeyRange::new(key, range_end), max_revisions) {
            Ok((events, through)) => Ok(HistoryBatch { events, through }),
            Err(MvccError::Compacted { compact_revision }) => Err(HistoryError::Compacted(compact_revision)),
            Err(e) => Err(HistoryError::Storage(Box::new(e))),
        }
    }
}

pub struct HubSink(pub WatchHub);

impl EventSink for HubSink {
    fn publish(&self, revision: i64, events: Vec<Event>) {
        self.0.publish(Arc::new(RevisionEvents { revision, events }));
    }
}

/// UNSAFE test-only bug injection (`drop-watch-event`): the hub sink, except that the events of every
/// [`DROP_WATCH_EVENT_EVERY`]-th published revision never reach any watcher of this member. Chosen once
/// at start-up instead of [`HubSink`], so the normal sink pays nothing for it.
pub struct LossyHubSink {
    hub: WatchHub,
    published: AtomicU64,
}

impl LossyHubSink {
    pub fn new(hub: WatchHub) -> Self {
        LossyHubSink {
            hub,
            published: AtomicU64::new(0),
        }
    }
}

impl EventSink for LossyHubSink {
    fn publish(&self, revision: i64, events: Vec<Event>) {
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        // UNSAFE test-only bug injection (drop-watch-event): the revision is still published (empty), so
        // the hub's revision moves on and watchers see a silent gap, not a stall.
        let events = if n.is_multiple_of(DROP_WATCH_EVENT_EVERY) {
            Vec::new()
        } else {
            events
        };
        self.hub.publish(Arc::new(RevisionEvents { revision, events }));
    }
}
