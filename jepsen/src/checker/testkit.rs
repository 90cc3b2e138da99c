//! Hand-built histories for the checkers' unit tests. Times are given in milliseconds.

use crate::history::{
    Event, EventType, NemesisPhase, Op, WatchEvent, WatchEventType, WatchRecord, WatchRecordKind, NEMESIS_PROCESS,
};

pub const MS: u64 = 1_000_000;

#[derive(Default)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event and returns its index.
    pub fn push(&mut self, t_ms: u64, process: u64, kind: EventType, op: Op, revision: Option<i64>) -> usize {
        let index = self.events.len();
        let error = matches!(kind, EventType::Fail | EventType::Info).then(|| "test".to_string());
        self.events.push(Event {
            index,
            time: t_ms * MS,
            process,
            kind,
            op,
            node: Some(0),
            revision,
            error,
        });
        index
    }

    pub fn invoke(&mut self, t: u64, p: u64, op: Op) -> usize {
        self.push(t, p, EventType::Invoke, op, None)
    }
    pub fn ok(&mut self, t: u64, p: u64, op: Op) -> usize {
        self.push(t, p, EventType::Ok, op, None)
    }
    pub fn nemesis(&mut self, t: u64, fault: &str, phase: NemesisPhase) -> usize {
        let op = Op::Nemesis {
            fault: fault.into(),
            phase,
            detail: String::new(),
        };
        self.push(t, NEMESIS_PROCESS, EventType::Info, op, None)
    }

    /// A whole operation whose invocation and completion are adjacent in the history: `done` is the
    /// completed op (results filled in). Returns (invoke index, complete index).
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &mut self,
        p: u64,
        t0: u64,
        t1: u64,
        invoke: Op,
        kind: EventType,
        done: Op,
        rev: Option<i64>,
    ) -> (usize, usize) {
        let a = self.invoke(t0, p, invoke);
        let b = self.push(t1, p, kind, done, rev);
        (a, b)
    }
}

pub fn wrec(watcher: u64, t_ms: u64, kind: WatchRecordKind) -> WatchRecord {
    WatchRecord {
        watcher,
        node: 0,
        time: t_ms * MS,
        kind,
    }
}

/// A put event of `key` (full key name) with `value` at `rev`.
pub fn put(key: &str, value: &str, rev: i64, prev: Option<&str>) -> WatchEvent {
    WatchEvent {
        key: key.into(),
        kind: WatchEventType::Put,
        value: Some(value.into()),
        mod_revision: rev,
        create_revision: rev,
        version: 1,
        prev_value: prev.map(str::to_string),
    }
}

pub fn events(rev: i64, evs: Vec<WatchEvent>) -> WatchRecordKind {
    WatchRecordKind::Events {
        revision: rev,
        events: evs,
    }
}
