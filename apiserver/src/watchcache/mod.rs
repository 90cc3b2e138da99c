//! A watch cache per resource, fed by one etcd prefix watch (with previous values): serves
//! `resourceVersion=0` lists and every watch from memory, so N watchers cost one store watch.
//! Events are kept in a bounded window; a watch older than the window gets 410 Expired, as upstream.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rudder_proto::mvccpb::event::EventType;
use rudder_proto::mvccpb::KeyValue;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::storage::{prefix_end, Store};

/// Events kept for watches that start in the past (upstream keeps ~75 s; we bound by count).
const WINDOW: usize = 10_000;
/// Progress bookmarks are broadcast this often so idle watchers learn the current revision.
const BOOKMARK_EVERY: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

#[derive(Debug)]
pub struct Event {
    pub kind: Kind,
    pub key: String,
    pub revision: i64,
    /// The object (for Deleted: its last state, stamped with the deletion revision).
    pub object: Option<Arc<Value>>,
    pub prev: Option<Arc<Value>>,
}

struct State {
    objects: BTreeMap<String, Arc<Value>>,
    events: VecDeque<Arc<Event>>,
    /// Revision the cache reflects.
    revision: i64,
    /// Oldest revision a watch may start from.
    oldest: i64,
    ready: bool,
    tx: broadcast::Sender<Arc<Event>>,
}

pub struct WatchCache {
    prefix: String,
    state: Mutex<State>,
}

/// Parses a stored value and stamps `metadata.resourceVersion` with the revision it was written at.
pub fn decode(value: &[u8], revision: i64) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
    Some(v)
}

pub enum Start {
    /// Past events to send, then the live feed.
    Stream(Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>),
    TooOld(i64),
    NotReady,
}

impl WatchCache {
    pub fn new(prefix: String) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        Arc::new(WatchCache {
            prefix,
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                events: VecDeque::new(),
                revision: 0,
                oldest: 0,
                ready: false,
                tx,
            }),
        })
    }

    pub fn ready(&self) -> bool {
        self.state.lock().ready
    }

    /// Objects under `prefix` and the revision they reflect.
    pub fn list(&self, prefix: &str) -> Option<(Vec<Arc<Value>>, i64)> {
        let st = self.state.lock();
        if !st.ready {
            return None;
        }
        let objs = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Some((objs, st.revision))
    }

    /// Starts a watch delivering every event after `from` (0 = from now, after the current state).
    pub fn watch(&self, from: i64) -> Start {
        let st = self.state.lock();
        if !st.ready {
            return Start::NotReady;
        }
        if from != 0 && from < st.oldest {
            return Start::TooOld(st.oldest);
        }
        let past = if from == 0 {
            Vec::new()
        } else {
            st.events.iter().filter(|e| e.revision > from).cloned().collect()
        };
        // Subscribing under the lock: no event is both missed by `past` and by the receiver.
        Start::Stream(past, st.tx.subscribe())
    }

    /// Keeps the cache in step with the store for as long as the process runs.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            if let Err(e) = self.sync(&store).await {
                tracing::warn!(prefix = %self.prefix, error = %e, "watch cache lost its store watch; relisting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn sync(&self, store: &Store) -> Result<(), tonic::Status> {
        let p = self.prefix.as_bytes();
        let page = store.list(p, &prefix_end(p), 0, 0).await?;
        let rev = page.revision;
        {
            let mut st = self.state.lock();
            st.objects = page
                .kvs
                .iter()
                .filter_map(|kv| {
                    let v = decode(&kv.value, kv.mod_revision)?;
                    Some((String::from_utf8_lossy(&kv.key).into_owned(), Arc::new(v)))
                })
                .collect();
            st.events.clear();
            st.revision = rev;
            st.oldest = rev;
            st.ready = true;
            // Watchers of the previous incarnation may have missed events: end them so they re-watch.
            let (tx, _) = broadcast::channel(4096);
            st.tx = tx;
        }
        let (_keep, mut stream) = store.watch_prefix(&self.prefix, rev + 1).await?;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(resp) = msg? else { return Err(tonic::Status::unavailable("watch stream ended")) };
                    if resp.canceled || resp.compact_revision != 0 {
                        return Err(tonic::Status::aborted(format!("watch canceled: {}", resp.cancel_reason)));
                    }
                    let header_rev = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
                    let mut st = self.state.lock();
                    for ev in resp.events {
                        apply(&mut st, ev.r#type, ev.kv, ev.prev_kv);
                    }
                    if header_rev > st.revision && resp.created {
                        st.revision = header_rev;
                    }
                }
                _ = tick.tick() => {
                    let st = self.state.lock();
                    let _ = st.tx.send(Arc::new(Event {
                        kind: Kind::Bookmark, key: String::new(), revision: st.revision, object: None, prev: None,
                    }));
                }
            }
        }
    }
}

fn apply(st: &mut State, ty: i32, kv: Option<KeyValue>, prev_kv: Option<KeyValue>) {
    let Some(kv) = kv else { return };
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    let prev = st.objects.get(&key).cloned().or_else(|| {
        let p = prev_kv?;
        decode(&p.value, p.mod_revision).map(Arc::new)
    });
    let event = if ty == EventType::Delete as i32 {
        st.objects.remove(&key);
        let Some(p) = prev.clone() else { return };
        let mut last = (*p).clone();
        if let Some(m) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(kv.mod_revision.to_string()));
        }
        Event {
            kind: Kind::Deleted,
            key,
            revision: kv.mod_revision,
            object: Some(Arc::new(last)),
            prev,
        }
    } else {
        let Some(obj) = decode(&kv.value, kv.mod_revision) else {
            tracing::warn!(%key, "undecodable object in the store; skipped");
            return;
        };
        let obj = Arc::new(obj);
        st.objects.insert(key.clone(), obj.clone());
        Event {
            kind: if prev.is_some() { Kind::Modified } else { Kind::Added },
            key,
            revision: kv.mod_revision,
            object: Some(obj),
            prev,
        }
    };
    st.revision = st.revision.max(event.revision);
    let event = Arc::new(event);
    st.events.push_back(event.clone());
    while st.events.len() > WINDOW {
        if let Some(e) = st.events.pop_front() {
            st.oldest = e.revision;
        }
    }
    let _ = st.tx.send(event);
}
