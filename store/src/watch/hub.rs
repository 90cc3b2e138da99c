//! The watch hub: every watcher of every stream, the hub's view of the current revision, and the
//! fan-out of published revisions to synced watchers.
//!
//! One mutex guards all of it, so publishing a revision, moving a watcher back to synced and answering
//! a progress request all see one consistent revision. Lock order: hub state, then a stream's queue.
//! Publishing never waits on a consumer: a full queue turns the watcher unsynced instead.

use std::collections::BTreeMap;

use rudder_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use tracing::{debug, warn};

use super::queue::{Outgoing, Queue};
use super::range::{KeyRange, Selector, ERR_EMPTY_RANGE};
use super::stream::WatchStream;
use super::{EventHistory, RevisionEvents};
use crate::sync::{Arc, Mutex};

/// etcd's watch id meaning "none" (rejected creates, stream-wide progress).
pub(crate) const INVALID_WATCH_ID: i64 = -1;
/// `WatchCreateRequest.watch_id` value asking the server to pick the id.
const AUTO_WATCH_ID: i64 = 0;
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// What etcd answers a negative start revision with.
const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Hub tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Live event responses buffered per stream before its watchers fall back to catch-up
    /// (etcd's per-stream channel holds 128).
    pub stream_buffer: usize,
    /// `max_revisions` passed to each [`EventHistory::events`] call (etcd reads 1000 revisions per
    /// catch-up round).
    pub catch_up_revisions: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            stream_buffer: 128,
            catch_up_revisions: 1000,
        }
    }
}

pub(crate) type StreamId = u64;

pub(crate) struct Shared {
    pub(crate) history: std::sync::Arc<dyn EventHistory>,
    pub(crate) config: HubConfig,
    pub(crate) state: Mutex<HubState>,
}

pub(crate) struct HubState {
    pub(crate) current: i64,
    next_stream: StreamId,
    next_serial: u64,
    // BTreeMaps rather than HashMaps: deterministic iteration, which loom needs.
    pub(crate) streams: BTreeMap<StreamId, StreamEntry>,
}

pub(crate) struct StreamEntry {
    pub(crate) queue: Arc<Queue>,
    pub(crate) watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// A RequestProgress arrived while some watcher was not synced; answer once all are.
    progress_deferred: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncState {
    /// Receives published revisions `>= min_rev` directly.
    Synced { min_rev: i64 },
    /// Fed by catch-up from history, starting at `next_rev`.
    Unsynced { next_rev: i64 },
}

pub(crate) struct Watcher {
    /// Unique over the hub's lifetime: tells a re-created watch id apart from the old watcher.
    pub(crate) serial: u64,
    pub(crate) selector: Selector,
    pub(crate) fragment: bool,
    progress_notify: bool,
    /// The client's start_revision (0 = "from now").
    start_revision: i64,
    pub(crate) state: SyncState,
    /// Events were queued since the last progress tick (etcd then skips that tick's notification).
    pub(crate) sent_since_tick: bool,
}

impl Watcher {
    /// etcd only reports progress for a watcher that is synced and not waiting for a future start.
    fn progress_ready(&self, current: i64) -> bool {
        matches!(self.state, SyncState::Synced { .. }) && current >= self.start_revision
    }
}

pub(crate) fn events_response(watch_id: i64, events: Vec<rudder_proto::mvccpb::Event>) -> WatchResponse {
    WatchResponse {
        watch_id,
        events,
        ..Default::default()
    }
}

fn progress_response(watch_id: i64) -> WatchResponse {
    WatchResponse {
        watch_id,
        ..Default::default()
    }
}

fn rejected_create(reason: &str) -> WatchResponse {
    WatchResponse {
        watch_id: INVALID_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: reason.to_owned(),
        ..Default::default()
    }
}

impl StreamEntry {
    fn all_progress_ready(&self, current: i64) -> bool {
        self.watchers.values().all(|w| w.progress_ready(current))
    }

    /// Sends the deferred stream-wide progress response once every watcher is synced.
    pub(crate) fn flush_deferred_progress(&mut self, current: i64) {
        if self.progress_deferred && self.all_progress_ready(current) {
            self.progress_deferred = false;
            self.send_stream_progress(current);
        }
    }

    fn send_stream_progress(&self, current: i64) {
        // Like etcd: the response goes out through one of the stream's watchers, so a stream
        // without watchers gets none.
        if !self.watchers.is_empty() {
            self.queue
                .push_control(Outgoing::control(progress_response(INVALID_WATCH_ID), current));
        }
    }

    /// Keeps the queue's catch-up flag equal to "some watcher is unsynced".
    pub(crate) fn refresh_catch_up(&self) {
        let pending = self
            .watchers
            .values()
            .any(|w| matches!(w.state, SyncState::Unsynced { .. }));
        self.queue.set_catch_up(pending);
    }
}

impl HubState {
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    pub(crate) fn create(&mut self, stream: StreamId, req: &WatchCreateRequest) {
        let current = self.current;
        let serial = self.next_serial();
        let Some(entry) = self.streams.get_mut(&stream) else {
            return; // stream closed
        };
        let reject = |reason: &str| {
            debug!(stream, reason, "watch create rejected");
            entry
                .queue
                .push_control(Outgoing::control(rejected_create(reason), current));
        };
        if req.start_revision < 0 {
            return reject(ERR_COMPACTED);
        }
        let Some(range) = KeyRange::from_request(&req.key, &req.range_end) else {
            return reject(ERR_EMPTY_RANGE);
        };
        let id = if req.watch_id == AUTO_WATCH_ID {
            while entry.watchers.contains_key(&entry.next_id) {
                entry.next_id = entry.next_id.wrapping_add(1);
            }
            let id = entry.next_id;
            entry.next_id = entry.next_id.wrapping_add(1);
            id
        } else if entry.watchers.contains_key(&req.watch_id) {
            return reject(ERR_DUPLICATE_ID);
        } else {
            req.watch_id
        };

        let start = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        // A past start is served from history first; revision 0 does not exist.
        let state = if start > current {
            SyncState::Synced { min_rev: start }
        } else {
            SyncState::Unsynced { next_rev: start.max(1) }
        };
        // Queued before the watcher exists, so nothing for `id` can overtake it.
        entry.queue.push_control(Outgoing::control(
            WatchResponse {
                watch_id: id,
                created: true,
                ..Default::default()
            },
            current,
        ));
        entry.watchers.insert(
            id,
            Watcher {
                serial,
                selector: Selector::new(range, &req.filters, req.prev_kv),
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                start_revision: req.start_revision,
                state,
                sent_since_tick: false,
            },
        );
        debug!(stream, watch_id = id, start, ?state, "watch created");
        if matches!(state, SyncState::Unsynced { .. }) {
            entry.queue.set_catch_up(true);
        }
    }

    pub(crate) fn cancel(&mut self, stream: StreamId, watch_id: i64) {
        let current = self.current;
        let Some(entry) = self.streams.get_mut(&stream) else {
            return;
        };
        // etcd sends nothing for an unknown id.
        if entry.watchers.remove(&watch_id).is_none() {
            return;
        }
        debug!(stream, watch_id, "watch canceled");
        entry.queue.push_control(Outgoing::control(
            WatchResponse {
                watch_id,
                canceled: true,
                ..Default::default()
            },
            current,
        ));
        entry.refresh_catch_up();
        entry.flush_deferred_progress(current);
    }

    /// RequestProgress: one response with watch id -1 at the current revision, as soon as every
    /// watcher of the stream is synced (now, or later when catch-up finishes).
    pub(crate) fn request_progress(&mut self, stream: StreamId) {
        let current = self.current;
        let Some(entry) = self.streams.get_mut(&stream) else {
            return;
        };
        if entry.all_progress_ready(current) {
            entry.send_stream_progress(current);
        } else {
            entry.progress_deferred = true;
        }
    }

    /// Periodic progress notification for watchers created with `progress_notify`, skipped for a
    /// watcher that got events since the previous tick or is not synced.
    pub(crate) fn progress_tick(&mut self, stream: StreamId) {
        let current = self.current;
        let Some(entry) = self.streams.get_mut(&stream) else {
            return;
        };
        for (id, w) in entry.watchers.iter_mut() {
            if !w.progress_notify {
                continue;
            }
            if !w.sent_since_tick && w.progress_ready(current) {
                entry
                    .queue
                    .push_control(Outgoing::control(progress_response(*id), current));
            }
            w.sent_since_tick = false;
        }
    }

    fn publish(&mut self, batch: &RevisionEvents) {
        let rev = batch.revision;
        self.current = rev;
        for (stream, entry) in self.streams.iter_mut() {
            let mut overflowed = false;
            // Linear scan over all watchers; an interval index over key ranges would make this
            // proportional to the matching watchers only.
            for (id, w) in entry.watchers.iter_mut() {
                let SyncState::Synced { min_rev } = w.state else {
                    continue;
                };
                if rev < min_rev {
                    continue;
                }
                let events = w.selector.select_all(&batch.events);
                if events.is_empty() {
                    continue;
                }
                let out = Outgoing {
                    response: events_response(*id, events),
                    header_revision: rev,
                    fragment: w.fragment,
                };
                if entry.queue.try_push_event(out) {
                    w.sent_since_tick = true;
                } else {
                    debug!(stream, watch_id = id, rev, "watch stream full, watcher unsynced");
                    w.state = SyncState::Unsynced { next_rev: rev };
                    overflowed = true;
                }
            }
            if overflowed {
                entry.queue.set_catch_up(true);
            }
            entry.flush_deferred_progress(rev);
        }
    }

    /// Whether a synced watcher (one fed by `publish`) wants `prev_kv`; watchers catching up read it
    /// from history.
    fn wants_prev_kv(&self) -> bool {
        self.streams.values().any(|entry| {
            entry
                .watchers
                .values()
                .any(|w| matches!(w.state, SyncState::Synced { .. }) && w.selector.wants_prev_kv())
        })
    }

    fn restore(&mut self, revision: i64) {
        if revision < self.current {
            warn!(from = self.current, to = revision, "watch hub revision moved backwards");
        }
        self.current = revision;
        for entry in self.streams.values_mut() {
            for w in entry.watchers.values_mut() {
                // Whatever the old history delivered is still correct; the rest comes from the new one.
                if let SyncState::Synced { min_rev } = w.state {
                    if min_rev <= revision {
                        w.state = SyncState::Unsynced { next_rev: min_rev };
                    }
                }
            }
            entry.refresh_catch_up();
        }
    }
}

/// Fans committed revisions out to watchers. Cheap to clone; all clones share one hub.
#[derive(Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

impl WatchHub {
    /// `current_revision` is the store's revision when the hub starts; the next `publish` must be
    /// for a later revision.
    pub fn new(history: std::sync::Arc<dyn EventHistory>, current_revision: i64) -> Self {
        Self::with_config(history, current_revision, HubConfig::default())
    }

    pub fn with_config(history: std::sync::Arc<dyn EventHistory>, current_revision: i64, config: HubConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                history,
                config,
                state: Mutex::new(HubState {
                    current: current_revision,
                    next_stream: 0,
                    next_serial: 0,
                    streams: BTreeMap::new(),
                }),
            }),
        }
    }

    /// Delivers one revision. Call from the single apply thread for EVERY new revision, in strictly
    /// increasing order, after its data is readable through [`EventHistory`]. Never waits on a
    /// watcher: a watcher whose stream is full is switched to catch-up from history.
    pub fn publish(&self, batch: std::sync::Arc<RevisionEvents>) {
        let mut state = self.shared.state.lock();
        if batch.revision <= state.current {
            warn!(
                revision = batch.revision,
                current = state.current,
                "ignoring watch publish for an old revision"
            );
            return;
        }
        state.publish(&batch);
    }

    /// [`WatchHub::publish`] for a revision whose put events may lack `prev_kv` (the apply path reads
    /// previous values only when a request asks for them): `fill` completes them first if a synced
    /// watcher wants them. Checked under the hub's lock, so a watcher registering concurrently is
    /// either seen here or starts after this revision.
    pub fn publish_filling(&self, mut batch: RevisionEvents, fill: impl FnOnce(&mut [rudder_proto::mvccpb::Event])) {
        let mut state = self.shared.state.lock();
        if batch.revision <= state.current {
            warn!(
                revision = batch.revision,
                current = state.current,
                "ignoring watch publish for an old revision"
            );
            return;
        }
        if state.wants_prev_kv() {
            fill(&mut batch.events);
        }
        state.publish(&batch);
    }

    /// The state jumped to `revision` without per-revision events (e.g. a Raft snapshot was
    /// installed): every watcher behind it catches up from history, which may cancel it as compacted.
    pub fn restore(&self, revision: i64) {
        self.shared.state.lock().restore(revision);
    }

    /// The last published revision.
    pub fn current_revision(&self) -> i64 {
        self.shared.state.lock().current
    }

    /// Number of watchers across all streams.
    pub fn watcher_count(&self) -> usize {
        let state = self.shared.state.lock();
        state.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Registers a new client stream. Dropping (or closing) it removes its watchers.
    pub fn open_stream(&self) -> WatchStream {
        let queue = Arc::new(Queue::new(self.shared.config.stream_buffer));
        let mut state = self.shared.state.lock();
        let id = state.next_stream;
        state.next_stream += 1;
        state.streams.insert(
            id,
            StreamEntry {
                queue: queue.clone(),
                watchers: BTreeMap::new(),
                next_id: 0,
                progress_deferred: false,
            },
        );
        drop(state);
        WatchStream::new(self.shared.clone(), id, queue)
    }
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub").finish_non_exhaustive()
    }
}
