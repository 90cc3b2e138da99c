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

/// Fills the `prev_kv` the apply path left empty (see `WriteTxn::put` and `delete_range`). A failed
/// read leaves it empty and is logged: the write itself is already committed.
fn fill_prev_kv(mvcc: &Mvcc, events: &mut [Event]) {
    for ev in events.iter_mut() {
        if ev.prev_kv.is_some() {
            continue;
        }
        let Some(kv) = &ev.kv else { continue };
        match mvcc.previous_value(&kv.key, kv.mod_revision) {
            Ok(prev) => ev.prev_kv = prev,
            Err(e) => tracing::warn!(revision = kv.mod_revision, error = %e, "reading prev_kv for a watch event"),
        }
    }
}

pub struct HubSink {
    pub hub: WatchHub,
    pub mvcc: Arc<Mvcc>,
}

impl EventSink for HubSink {
    fn publish(&self, revision: i64, events: Vec<Event>) {
        self.hub
            .publish_filling(RevisionEvents { revision, events }, |evs| fill_prev_kv(&self.mvcc, evs));
    }
}

/// UNSAFE test-only bug injection (`drop-watch-event`): the hub sink, except that the events of every
/// [`DROP_WATCH_EVENT_EVERY`]-th published revision never reach any watcher of this member. Chosen once
/// at start-up instead of [`HubSink`], so the normal sink pays nothing for it.
pub struct LossyHubSink {
    hub: WatchHub,
    mvcc: Arc<Mvcc>,
    published: AtomicU64,
}

impl LossyHubSink {
    pub fn new(hub: WatchHub, mvcc: Arc<Mvcc>) -> Self {
        LossyHubSink {
            hub,
            mvcc,
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
        self.hub
            .publish_filling(RevisionEvents { revision, events }, |evs| fill_prev_kv(&self.mvcc, evs));
    }
}
