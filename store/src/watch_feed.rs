//! Connects the MVCC store and the watch hub: the hub reads history from the store, and the apply path
//! publishes each revision's events to the hub.

use std::sync::Arc;

use rudder_proto::mvccpb::Event;

use crate::apply::EventSink;
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
