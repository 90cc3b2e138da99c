//! One stream's outgoing responses, shared between producers (publish, catch-up, request handling)
//! and the single consumer that sends them.
//!
//! Only live event responses are bounded: when they would exceed the capacity the producer gets the
//! response back and unsyncs the watcher instead of waiting. Control responses (created, canceled,
//! progress) always fit; catch-up responses are only produced while the queue is at most half full.

use std::collections::VecDeque;

use rudder_proto::etcdserverpb::WatchResponse;

use crate::sync::{Mutex, Notify};

/// A response waiting to be sent. The header is filled in at send time from `header_revision`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The response, without `header`.
    pub response: WatchResponse,
    /// Revision to report in the response header.
    pub header_revision: i64,
    /// The watcher asked for fragmenting (`WatchCreateRequest.fragment`).
    pub fragment: bool,
}

impl Outgoing {
    pub(crate) fn control(response: WatchResponse, header_revision: i64) -> Self {
        Self {
            response,
            header_revision,
            fragment: false,
        }
    }
}

#[derive(Debug)]
struct Item {
    out: Outgoing,
    /// Counts against the event capacity.
    counted: bool,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    counted: usize,
    /// Some watcher of this stream is unsynced; set and cleared under the hub lock.
    catch_up: bool,
    closed: bool,
}

#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Bounded push of a live event response; `false` (response dropped) when full or closed.
    pub(crate) fn try_push_event(&self, out: Outgoing) -> bool {
        let mut state = self.state.lock();
        if state.closed || state.counted >= self.capacity {
            return false;
        }
        state.counted += 1;
        state.items.push_back(Item { out, counted: true });
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Push of a catch-up event response: counted, but never refused (its producer checks
    /// [`Self::has_room_for_catch_up`] first, which bounds the overshoot).
    pub(crate) fn push_catch_up(&self, out: Outgoing) {
        self.push(out, true);
    }

    /// Push of a control response (created, canceled, progress, compacted).
    pub(crate) fn push_control(&self, out: Outgoing) {
        self.push(out, false);
    }

    fn push(&self, out: Outgoing, counted: bool) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        if counted {
            state.counted += 1;
        }
        state.items.push_back(Item { out, counted });
        drop(state);
        self.notify.notify_one();
    }

    pub(crate) fn pop(&self) -> Option<Outgoing> {
        let mut state = self.state.lock();
        let item = state.items.pop_front()?;
        if item.counted {
            state.counted -= 1;
        }
        Some(item.out)
    }

    /// Catch-up runs only while live events have room, so a stuck consumer stops history reads too.
    pub(crate) fn has_room_for_catch_up(&self) -> bool {
        let state = self.state.lock();
        !state.closed && state.counted <= self.capacity / 2
    }

    /// Caller holds the hub lock (the flag mirrors the hub's "stream has unsynced watchers").
    pub(crate) fn set_catch_up(&self, pending: bool) {
        let mut state = self.state.lock();
        let raised = pending && !state.catch_up;
        state.catch_up = pending;
        drop(state);
        if raised {
            self.notify.notify_one();
        }
    }

    /// Catch-up is pending and there is room for its output.
    pub(crate) fn catch_up_due(&self) -> bool {
        let state = self.state.lock();
        state.catch_up && !state.closed && state.counted <= self.capacity / 2
    }

    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.items.clear();
        state.counted = 0;
        drop(state);
        self.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Waits until something was pushed, catch-up was requested, or the queue was closed since the
    /// last wait (permit semantics: a signal sent before this call is not lost).
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }
}
