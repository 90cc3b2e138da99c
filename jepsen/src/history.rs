//! The history of a test run: every client operation as an invocation and a completion, plus what each
//! watcher saw. This is the contract between workloads (which record), checkers (which judge) and the
//! report (which draws). On disk it is JSON lines: `history.jsonl` and `watches.jsonl`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended, as Jepsen names it. `Info` means the outcome is unknown (timeout, connection
/// lost after sending): it may have happened at any point after its invocation, or never.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One micro-operation of an append transaction: append `value` to the list at `key`, or read that list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Mop {
    Append {
        key: u64,
        value: u64,
    },
    /// `value` is `None` in the invocation; in an `ok` completion it is the list read (empty if absent).
    Read {
        key: u64,
        value: Option<Vec<u64>>,
    },
}

/// One object seen by the kubernetes workload's list: key, value, mod_revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    pub key: u64,
    pub value: u64,
    pub mod_revision: i64,
}

/// What an operation does, with its arguments; a completion repeats it with results filled in.
/// Values written are unique per run, which lets checkers tell writes apart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Op {
    // register: one etcd key per `key`, holding a decimal value.
    /// `value` is `None` in the invocation; in an `ok` completion it is the value read, `None` if absent.
    Read {
        key: u64,
        value: Option<u64>,
    },
    Write {
        key: u64,
        value: u64,
    },
    /// A txn: if value(key) == from then put(key, to). `ok` = swapped, `fail` = compare was false.
    Cas {
        key: u64,
        from: u64,
        to: u64,
    },

    // set: each element is its own key under the set prefix.
    Add {
        element: u64,
    },
    /// `elements` is `None` in the invocation; sorted in an `ok` completion.
    ReadSet {
        elements: Option<Vec<u64>>,
    },

    // append: multi-key transactions over lists stored as comma-separated values.
    Txn {
        mops: Vec<Mop>,
    },

    // lease: keys attached to leases. `lease` ids are etcd's; `ttl` in seconds.
    LeaseGrant {
        ttl: i64,
        lease: Option<i64>,
    },
    LeasePut {
        key: u64,
        lease: i64,
    },
    LeaseKeepAlive {
        lease: i64,
        ttl: Option<i64>,
    },
    LeaseRevoke {
        lease: i64,
    },
    /// `present` is `None` in the invocation; whether the key exists in an `ok` completion.
    LeaseRead {
        key: u64,
        present: Option<bool>,
    },

    // kubernetes: optimistic concurrency on mod_revision, as kube-apiserver does.
    /// Create if absent (txn on create_revision == 0). `fail` = it already existed.
    KCreate {
        key: u64,
        value: u64,
    },
    /// Update if mod_revision == `from_revision`. `fail` = conflict.
    KUpdate {
        key: u64,
        from_revision: i64,
        value: u64,
    },
    /// `items` is `None` in the invocation; every object under the prefix in an `ok` completion.
    KList {
        items: Option<Vec<Item>>,
    },

    /// A fault the nemesis started or stopped (process = `NEMESIS_PROCESS`).
    Nemesis {
        fault: String,
        phase: NemesisPhase,
        detail: String,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NemesisPhase {
    Start,
    Stop,
}

/// The process id the nemesis records its events under.
pub const NEMESIS_PROCESS: u64 = u64::MAX;

/// One line of `history.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the history (0-based, dense).
    pub index: usize,
    /// Nanoseconds since the run started (monotonic clock of the harness, not the nodes').
    pub time: u64,
    /// The logical client. A process whose operation ended `info` is never reused: the worker takes a new id.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(flatten)]
    pub op: Op,
    /// Index of the node (0-based) the client talked to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// The store's header revision in the response, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The error for `fail` and `info` completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An invocation paired with its completion. `complete` is `None` when the run ended first (treated as
/// `info`).
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub process: u64,
    pub invoke: Event,
    pub complete: Option<Event>,
}

impl Operation {
    /// The outcome, with a missing completion counted as unknown.
    pub fn outcome(&self) -> EventType {
        self.complete.as_ref().map_or(EventType::Info, |c| c.kind)
    }
    pub fn call_time(&self) -> u64 {
        self.invoke.time
    }
    /// Return time, `None` for unknown outcomes (they may take effect any time after the call).
    pub fn return_time(&self) -> Option<u64> {
        match &self.complete {
            Some(c) if c.kind != EventType::Info => Some(c.time),
            _ => None,
        }
    }
    /// The op with results filled in when it completed `ok`, else the invocation's.
    pub fn op(&self) -> &Op {
        match &self.complete {
            Some(c) if c.kind == EventType::Ok => &c.op,
            _ => &self.invoke.op,
        }
    }
}

/// Pairs each client invocation with the next completion of the same process. Nemesis events and
/// completions without an invocation are skipped.
pub fn pair(events: &[Event]) -> Vec<Operation> {
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    for e in events {
        if e.process == NEMESIS_PROCESS {
            continue;
        }
        match e.kind {
            EventType::Invoke => {
                open.insert(e.process, ops.len());
                ops.push(Operation {
                    process: e.process,
                    invoke: e.clone(),
                    complete: None,
                });
            }
            _ => {
                if let Some(i) = open.remove(&e.process) {
                    ops[i].complete = Some(e.clone());
                }
            }
        }
    }
    ops
}

/// Nemesis events of a history, in order.
pub fn nemesis_events(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| e.process == NEMESIS_PROCESS).collect()
}

/// What one watcher saw, one line of `watches.jsonl` per record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WatchRecord {
    /// The watcher (stable across its reconnects).
    pub watcher: u64,
    /// Node it was connected to when this was received.
    pub node: usize,
    pub time: u64,
    #[serde(flatten)]
    pub kind: WatchRecordKind,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WatchRecordKind {
    /// A watch was (re)created from `start_revision` (0 = now) on `prefix`.
    Start { start_revision: i64 },
    /// One response's events, in the order received; `revision` is the header revision.
    Events { revision: i64, events: Vec<WatchEvent> },
    /// A progress notification (empty response) at header `revision`.
    Progress { revision: i64 },
    /// Canceled by the server; `compact_revision` > 0 when because of compaction.
    Canceled { compact_revision: i64, reason: String },
    /// The stream broke (the watcher will resume from its last revision + 1).
    Disconnected { error: String },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    pub value: Option<String>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    /// The previous value when the watch asked for prev_kv (`None` when absent or not asked).
    pub prev_value: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    Put,
    Delete,
}

/// Appends events to a history, thread-safe, assigning indexes and times; also kept in memory.
pub struct Recorder {
    start: Instant,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    events: Vec<Event>,
    watches: Vec<WatchRecord>,
    counts: Counts,
}

/// Running totals for the live progress display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub watch_records: u64,
    /// Faults started and not yet stopped, by name.
    pub active_faults: Vec<String>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(RecorderInner {
                events: Vec::new(),
                watches: Vec::new(),
                counts: Counts::default(),
            }),
        }
    }

    /// Nanoseconds since the recorder was created.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records an event (its `index` and `time` are assigned here) and returns it.
    pub fn record(&self, mut event: Event) -> Event {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        event.index = inner.events.len();
        event.time = self.now();
        match (&event.op, event.kind) {
            (Op::Nemesis { fault, phase, .. }, _) => match phase {
                NemesisPhase::Start => inner.counts.active_faults.push(fault.clone()),
                NemesisPhase::Stop => {
                    if let Some(i) = inner.counts.active_faults.iter().position(|f| f == fault) {
                        inner.counts.active_faults.remove(i);
                    }
                }
            },
            (_, EventType::Ok) => inner.counts.ok += 1,
            (_, EventType::Fail) => inner.counts.fail += 1,
            (_, EventType::Info) => inner.counts.info += 1,
            (_, EventType::Invoke) => {}
        }
        inner.events.push(event.clone());
        event
    }

    pub fn invoke(&self, process: u64, op: Op, node: Option<usize>) -> Event {
        self.record(Event {
            index: 0,
            time: 0,
            process,
            kind: EventType::Invoke,
            op,
            node,
            revision: None,
            error: None,
        })
    }

    pub fn complete(
        &self,
        process: u64,
        kind: EventType,
        op: Op,
        node: Option<usize>,
        revision: Option<i64>,
        error: Option<String>,
    ) -> Event {
        self.record(Event {
            index: 0,
            time: 0,
            process,
            kind,
            op,
            node,
            revision,
            error,
        })
    }

    pub fn nemesis(&self, fault: &str, phase: NemesisPhase, detail: String) -> Event {
        let op = Op::Nemesis {
            fault: fault.to_string(),
            phase,
            detail,
        };
        self.record(Event {
            index: 0,
            time: 0,
            process: NEMESIS_PROCESS,
            kind: EventType::Info,
            op,
            node: None,
            revision: None,
            error: None,
        })
    }

    pub fn watch(&self, watcher: u64, node: usize, kind: WatchRecordKind) {
        let time = self.now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.watches.push(WatchRecord {
            watcher,
            node,
            time,
            kind,
        });
        inner.counts.watch_records += 1;
    }

    pub fn counts(&self) -> Counts {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).counts.clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).events.clone()
    }

    pub fn watches(&self) -> Vec<WatchRecord> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).watches.clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes records as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads JSON lines written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Vec<T>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for line in file.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_lines() {
        let r = Recorder::new();
        let a = r.invoke(1, Op::Read { key: 3, value: None }, Some(0));
        r.complete(
            1,
            EventType::Ok,
            Op::Read { key: 3, value: Some(7) },
            Some(0),
            Some(12),
            None,
        );
        r.nemesis("partition", NemesisPhase::Start, "n1 isolated".into());
        r.invoke(
            2,
            Op::Txn {
                mops: vec![Mop::Append { key: 1, value: 4 }, Mop::Read { key: 2, value: None }],
            },
            None,
        );
        assert_eq!(a.index, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        write_jsonl(&path, &r.events()).unwrap();
        let back: Vec<Event> = read_jsonl(&path).unwrap();
        assert_eq!(back, r.events());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"f\":\"read\""), "{text}");
        let ops = pair(&back);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].outcome(), EventType::Ok);
        assert_eq!(ops[0].op(), &Op::Read { key: 3, value: Some(7) });
        assert_eq!(ops[1].outcome(), EventType::Info);
        assert_eq!(ops[1].return_time(), None);
    }
}
