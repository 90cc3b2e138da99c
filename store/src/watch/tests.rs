//! Watch hub and session tests against an in-memory event history.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use rudder_proto::etcdserverpb::watch_create_request::FilterType;
use rudder_proto::etcdserverpb::watch_request::RequestUnion;
use rudder_proto::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use rudder_proto::mvccpb::event::EventType;
use rudder_proto::mvccpb::{Event, KeyValue};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::range::KeyRange;
use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Test double: every revision kept in memory, optional compaction point.
#[derive(Default)]
pub(crate) struct MemHistory {
    inner: Mutex<MemInner>,
}

#[derive(Default)]
struct MemInner {
    revisions: Vec<Arc<RevisionEvents>>,
    compacted: i64,
}

impl MemHistory {
    /// Appends a revision (call before publishing it).
    pub(crate) fn push(&self, batch: Arc<RevisionEvents>) {
        self.inner.lock().revisions.push(batch);
    }
}

impl EventHistory for MemHistory {
    fn events(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        range_end: &[u8],
        max_revisions: usize,
    ) -> Result<HistoryBatch, HistoryError> {
        let inner = self.inner.lock();
        if from <= inner.compacted {
            return Err(HistoryError::Compacted(inner.compacted));
        }
        let range =
            KeyRange::from_request(key, range_end).ok_or_else(|| HistoryError::Storage("empty range".into()))?;
        let mut batch = HistoryBatch {
            events: Vec::new(),
            through: to,
        };
        let mut scanned = 0;
        for rev in inner
            .revisions
            .iter()
            .filter(|r| r.revision >= from && r.revision <= to)
        {
            let matching = rev
                .events
                .iter()
                .filter(|ev| ev.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)));
            batch.events.extend(matching.cloned());
            scanned += 1;
            if scanned == max_revisions {
                batch.through = rev.revision;
                break;
            }
        }
        Ok(batch)
    }
}

pub(crate) struct TestHeaders;

impl HeaderSource for TestHeaders {
    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision,
            raft_term: 3,
        }
    }
}

/// A tiny key-value "store": writes go to the history first, then to the hub, like the apply path.
struct Store {
    hub: WatchHub,
    history: Arc<MemHistory>,
    rev: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
}

impl Store {
    fn new(config: HubConfig) -> Self {
        let history = Arc::new(MemHistory::default());
        Self {
            hub: WatchHub::with_config(history.clone(), 1, config),
            history,
            rev: 1,
            kvs: BTreeMap::new(),
        }
    }

    fn event(&mut self, kind: EventType, key: &[u8], value: &[u8]) -> Event {
        let prev = self.kvs.get(key).cloned();
        let kv = match kind {
            EventType::Put => KeyValue {
                key: key.to_vec(),
                create_revision: prev.as_ref().map_or(self.rev, |p| p.create_revision),
                mod_revision: self.rev,
                version: prev.as_ref().map_or(1, |p| p.version + 1),
                value: value.to_vec(),
                lease: 0,
            },
            EventType::Delete => KeyValue {
                key: key.to_vec(),
                mod_revision: self.rev,
                ..Default::default()
            },
        };
        match kind {
            EventType::Put => self.kvs.insert(key.to_vec(), kv.clone()),
            EventType::Delete => self.kvs.remove(key),
        };
        Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: prev,
        }
    }

    /// One revision holding all of `ops`.
    fn txn(&mut self, ops: &[(EventType, &[u8], &[u8])]) -> i64 {
        self.rev += 1;
        let events = ops
            .iter()
            .map(|(kind, key, value)| self.event(*kind, key, value))
            .collect();
        let batch = Arc::new(RevisionEvents {
            revision: self.rev,
            events,
        });
        self.history.push(batch.clone());
        self.hub.publish(batch);
        self.rev
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> i64 {
        self.txn(&[(EventType::Put, key, value)])
    }

    fn delete(&mut self, key: &[u8]) -> i64 {
        self.txn(&[(EventType::Delete, key, b"")])
    }

    fn client(&self, config: SessionConfig) -> Client {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let responses = watch_session(
            &self.hub,
            UnboundedReceiverStream::new(rx),
            Arc::new(TestHeaders),
            config,
        );
        Client {
            tx,
            responses: Box::pin(responses),
        }
    }
}

struct Client {
    tx: tokio::sync::mpsc::UnboundedSender<Result<WatchRequest, String>>,
    responses: Pin<Box<dyn Stream<Item = WatchResponse> + Send>>,
}

impl Client {
    fn send(&self, request: RequestUnion) {
        self.tx
            .send(Ok(WatchRequest {
                request_union: Some(request),
            }))
            .expect("reader alive");
    }

    fn create(&self, req: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(req));
    }

    fn cancel(&self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
    }

    fn progress(&self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(TIMEOUT, self.responses.next())
            .await
            .expect("response in time")
            .expect("stream open")
    }

    async fn created(&mut self) -> i64 {
        let resp = self.next().await;
        assert!(resp.created && !resp.canceled, "expected created, got {resp:?}");
        resp.watch_id
    }

    async fn expect_silence(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(100), self.responses.next()).await;
        assert!(got.is_err(), "unexpected response {got:?}");
    }
}

fn watch(key: &[u8], range_end: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        ..Default::default()
    }
}

fn revisions(resp: &WatchResponse) -> Vec<i64> {
    resp.events
        .iter()
        .filter_map(|ev| ev.kv.as_ref().map(|kv| kv.mod_revision))
        .collect()
}

fn keys(resp: &WatchResponse) -> Vec<Vec<u8>> {
    resp.events
        .iter()
        .filter_map(|ev| ev.kv.as_ref().map(|kv| kv.key.clone()))
        .collect()
}

/// Collects event revisions until `last` is reached, checking each revision comes in one response.
async fn collect_until(client: &mut Client, watch_id: i64, last: i64) -> Vec<i64> {
    collect_responses(client, watch_id, last).await.0
}

/// [`collect_until`], also returning how many responses carried them.
async fn collect_responses(client: &mut Client, watch_id: i64, last: i64) -> (Vec<i64>, usize) {
    let mut seen = Vec::new();
    let mut responses = 0;
    while seen.last().is_none_or(|r| *r < last) {
        let resp = client.next().await;
        assert_eq!(resp.watch_id, watch_id);
        assert!(!resp.canceled, "unexpected cancel {resp:?}");
        let mut revs = revisions(&resp);
        revs.dedup();
        if let (Some(prev), Some(first)) = (seen.last(), revs.first()) {
            assert!(first > prev, "revision {first} split or repeated after {prev}");
        }
        let header = resp.header.as_ref().map_or(0, |h| h.revision);
        assert!(revs.last().is_none_or(|r| *r <= header), "header behind events");
        seen.extend(revs);
        responses += 1;
    }
    (seen, responses)
}

#[tokio::test]
async fn created_then_live_events_with_headers() {
    let mut store = Store::new(HubConfig::default());
    store.put(b"a", b"0");
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    let created = client.next().await;
    assert!(created.created);
    assert_eq!(created.watch_id, 0);
    assert_eq!(created.header, Some(TestHeaders.header(2)));

    store.put(b"b", b"x");
    let rev = store.put(b"a", b"1");
    let resp = client.next().await;
    assert_eq!(resp.watch_id, 0);
    assert_eq!(revisions(&resp), vec![rev]);
    assert_eq!(resp.header.map(|h| h.revision), Some(rev));
    assert!(resp.events[0].prev_kv.is_none(), "prev_kv not requested");
    client.expect_silence().await;
}

#[tokio::test]
async fn replay_then_live_without_gap_or_duplicate() {
    let mut store = Store::new(HubConfig {
        stream_buffer: 2,
        catch_up_revisions: 3,
    });
    for i in 0..20 {
        store.put(format!("k{}", i % 5).as_bytes(), b"v");
    }
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"k", b"l", 5));
    let id = client.created().await;

    // Keep publishing while the watcher replays and switches over.
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..200 {
            store.put(format!("k{}", i % 5).as_bytes(), b"w");
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        store
    });
    let seen = collect_until(&mut client, id, 221).await;
    assert_eq!(seen, (5..=221).collect::<Vec<_>>());
    let _store = writer.await.expect("writer");
    client.expect_silence().await;
}

#[tokio::test]
async fn filters_drop_puts_or_deletes() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    let mut no_put = watch(b"a", b"", 0);
    no_put.filters = vec![FilterType::Noput as i32];
    client.create(no_put);
    let no_put_id = client.created().await;
    let mut no_delete = watch(b"a", b"", 0);
    no_delete.filters = vec![FilterType::Nodelete as i32];
    client.create(no_delete);
    let no_delete_id = client.created().await;

    let put = store.put(b"a", b"1");
    let del = store.delete(b"a");
    let first = client.next().await;
    assert_eq!((first.watch_id, revisions(&first)), (no_delete_id, vec![put]));
    let second = client.next().await;
    assert_eq!((second.watch_id, revisions(&second)), (no_put_id, vec![del]));
    assert_eq!(second.events[0].r#type, EventType::Delete as i32);
    client.expect_silence().await;
}

#[tokio::test]
async fn prev_kv_kept_only_when_requested() {
    let mut store = Store::new(HubConfig::default());
    store.put(b"a", b"old");
    let mut client = store.client(SessionConfig::default());
    let mut with_prev = watch(b"a", b"", 0);
    with_prev.prev_kv = true;
    client.create(with_prev);
    let with_id = client.created().await;
    client.create(watch(b"a", b"", 0));
    let without_id = client.created().await;

    store.put(b"a", b"new");
    for _ in 0..2 {
        let resp = client.next().await;
        let prev = resp.events[0].prev_kv.as_ref().map(|kv| kv.value.clone());
        if resp.watch_id == with_id {
            assert_eq!(prev, Some(b"old".to_vec()));
        } else {
            assert_eq!(resp.watch_id, without_id);
            assert_eq!(prev, None);
        }
    }
}

#[tokio::test]
async fn key_range_prefix_and_from_key() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"b", b"d", 0));
    let range = client.created().await;
    client.create(watch(b"c", b"\0", 0));
    let from_key = client.created().await;
    client.create(watch(b"", b"\0", 0));
    let all = client.created().await;

    store.txn(&[
        (EventType::Put, b"a", b""),
        (EventType::Put, b"b", b""),
        (EventType::Put, b"c", b""),
        (EventType::Put, b"d", b""),
    ]);
    let mut got = BTreeMap::new();
    for _ in 0..3 {
        let resp = client.next().await;
        got.insert(resp.watch_id, keys(&resp));
    }
    let k = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(got[&range], k(&["b", "c"]));
    assert_eq!(got[&from_key], k(&["c", "d"]));
    assert_eq!(got[&all], k(&["a", "b", "c", "d"]));
}

#[tokio::test]
async fn future_start_revision_skips_earlier_revisions() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 4));
    let id = client.created().await;
    store.put(b"a", b"2");
    store.put(b"a", b"3");
    let rev = store.put(b"a", b"4");
    let resp = client.next().await;
    assert_eq!((resp.watch_id, revisions(&resp)), (id, vec![rev]));
}

#[tokio::test]
async fn compacted_start_is_created_then_canceled() {
    let mut store = Store::new(HubConfig::default());
    for _ in 0..6 {
        store.put(b"a", b"v");
    }
    store.history.inner.lock().compacted = 5;
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 3));
    let id = client.created().await;
    let resp = client.next().await;
    assert_eq!(resp.watch_id, id);
    assert!(resp.canceled && !resp.created);
    assert_eq!(resp.compact_revision, 5);
    assert!(resp.events.is_empty());
    assert_eq!(store.hub.watcher_count(), 0);

    client.create(watch(b"a", b"", 6));
    let id = client.created().await;
    let resp = client.next().await;
    assert_eq!((resp.watch_id, revisions(&resp)), (id, vec![6, 7]));
}

#[tokio::test]
async fn large_responses_are_fragmented_when_asked() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig {
        max_response_bytes: 1024,
        ..SessionConfig::default()
    });
    let mut fragmented = watch(b"k", b"l", 0);
    fragmented.fragment = true;
    client.create(fragmented);
    let frag_id = client.created().await;
    client.create(watch(b"k", b"l", 0));
    let whole_id = client.created().await;

    let value = vec![b'x'; 300];
    let ops: Vec<(EventType, Vec<u8>)> = (0..10)
        .map(|i| (EventType::Put, format!("k{i}").into_bytes()))
        .collect();
    let ops: Vec<(EventType, &[u8], &[u8])> = ops.iter().map(|(t, k)| (*t, k.as_slice(), value.as_slice())).collect();
    let rev = store.txn(&ops);

    let mut pieces = Vec::new();
    loop {
        let resp = client.next().await;
        assert_eq!(resp.watch_id, frag_id);
        assert_eq!(resp.header.as_ref().map(|h| h.revision), Some(rev));
        let last = !resp.fragment;
        pieces.push(resp);
        if last {
            break;
        }
    }
    assert!(pieces.len() > 1, "expected fragments");
    assert_eq!(pieces.iter().map(|p| p.events.len()).sum::<usize>(), 10);
    let whole = client.next().await;
    assert_eq!(whole.watch_id, whole_id);
    assert!(!whole.fragment);
    assert_eq!(whole.events.len(), 10);
}

#[tokio::test]
async fn slow_consumer_does_not_block_publish_or_others() {
    let mut store = Store::new(HubConfig {
        stream_buffer: 4,
        catch_up_revisions: 50,
    });
    let mut slow = store.client(SessionConfig::default());
    slow.create(watch(b"k", b"", 0));
    let slow_id = slow.created().await;
    let mut fast = store.client(SessionConfig::default());
    fast.create(watch(b"k", b"", 0));
    let fast_id = fast.created().await;

    // Nobody reads `slow`; publishing must still finish at once.
    let started = std::time::Instant::now();
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..2000 {
            store.put(b"k", format!("{i}").as_bytes());
        }
        store
    });
    let seen = collect_until(&mut fast, fast_id, 2001).await;
    assert_eq!(seen, (2..=2001).collect::<Vec<_>>());
    let store = writer.await.expect("writer");
    assert!(started.elapsed() < TIMEOUT);

    // The slow watcher catches up from history, exactly once and in order, in multi-revision batches.
    let (seen, responses) = collect_responses(&mut slow, slow_id, 2001).await;
    assert_eq!(seen, (2..=2001).collect::<Vec<_>>());
    assert!(
        responses < 2000 / 10,
        "expected catch-up batches, got {responses} responses"
    );
    slow.expect_silence().await;
    drop(store);
}

#[tokio::test]
async fn cancel_stops_events_and_unknown_ids_are_ignored() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    let id = client.created().await;
    client.cancel(id);
    let resp = client.next().await;
    assert!(resp.canceled && !resp.created);
    assert_eq!(resp.watch_id, id);
    assert_eq!(resp.header.map(|h| h.revision), Some(1));
    client.cancel(42);
    store.put(b"a", b"1");
    client.expect_silence().await;
    assert_eq!(store.hub.watcher_count(), 0);
}

#[tokio::test]
async fn request_progress_reports_current_revision() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    // No watchers: etcd sends nothing.
    client.progress();
    client.expect_silence().await;

    client.create(watch(b"a", b"", 0));
    client.created().await;
    store.put(b"other", b"1");
    client.progress();
    let resp = client.next().await;
    assert_eq!(resp.watch_id, -1);
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled);
    assert_eq!(resp.header.map(|h| h.revision), Some(2));
}

#[test]
fn request_progress_waits_for_unsynced_watchers() {
    let mut store = Store::new(HubConfig::default());
    for _ in 0..3 {
        store.put(b"a", b"v");
    }
    let stream = store.hub.open_stream();
    stream.create(&watch(b"a", b"", 2));
    assert!(stream.pop().is_some_and(|o| o.response.created));
    stream.request_progress();
    assert!(stream.pop().is_none(), "deferred while unsynced");
    assert!(stream.catch_up_due());
    stream.catch_up();
    let events = stream.pop().expect("replayed events");
    assert_eq!(revisions(&events.response), vec![2, 3, 4]);
    let progress = stream.pop().expect("deferred progress");
    assert_eq!(progress.response.watch_id, -1);
    assert_eq!(progress.header_revision, 4);
    assert!(!stream.catch_up_due());
}

#[tokio::test]
async fn client_chosen_ids_and_duplicates() {
    let store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    let mut chosen = watch(b"a", b"", 0);
    chosen.watch_id = 1;
    client.create(chosen.clone());
    assert_eq!(client.created().await, 1);
    client.create(chosen);
    let dup = client.next().await;
    assert!(dup.created && dup.canceled);
    assert_eq!(dup.watch_id, -1);
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // Automatic ids skip ids in use.
    client.create(watch(b"a", b"", 0));
    assert_eq!(client.created().await, 0);
    client.create(watch(b"a", b"", 0));
    assert_eq!(client.created().await, 2);
}

#[tokio::test]
async fn invalid_creates_are_rejected() {
    let store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"b", b"a", 0));
    let resp = client.next().await;
    assert!(resp.created && resp.canceled);
    assert_eq!(resp.watch_id, -1);
    assert_eq!(resp.cancel_reason, "mvcc: watcher range is empty");
    client.create(watch(b"a", b"", -3));
    let resp = client.next().await;
    assert!(resp.created && resp.canceled && resp.watch_id == -1);
    assert_eq!(store.hub.watcher_count(), 0);
}

#[tokio::test]
async fn periodic_progress_notifications() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig {
        progress_notify_interval: Duration::from_millis(50),
        ..SessionConfig::default()
    });
    let mut req = watch(b"a", b"", 0);
    req.progress_notify = true;
    client.create(req);
    let id = client.created().await;
    store.put(b"x", b"1");
    let resp = client.next().await;
    assert_eq!(resp.watch_id, id);
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled);
    assert_eq!(resp.header.map(|h| h.revision), Some(2));
}

#[tokio::test]
async fn dropping_the_stream_removes_watchers() {
    let store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    client.create(watch(b"b", b"", 0));
    client.created().await;
    client.created().await;
    assert_eq!(store.hub.watcher_count(), 2);
    drop(client);
    assert_eq!(store.hub.watcher_count(), 0);
}

#[tokio::test]
async fn request_stream_error_ends_the_response_stream() {
    let store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    client.created().await;
    client.tx.send(Err("connection reset".into())).expect("reader alive");
    let end = tokio::time::timeout(TIMEOUT, client.responses.next()).await;
    assert_eq!(end.expect("ends in time"), None);
    assert_eq!(store.hub.watcher_count(), 0);
}

#[tokio::test]
async fn restore_replays_from_history() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    let id = client.created().await;
    // Revisions 2..=4 appear in history without being published (snapshot install).
    let hub = std::mem::replace(&mut store.hub, WatchHub::new(Arc::new(MemHistory::default()), 1));
    for _ in 0..3 {
        store.put(b"a", b"v");
    }
    store.hub = hub;
    store.hub.restore(4);
    let seen = collect_until(&mut client, id, 4).await;
    assert_eq!(seen, vec![2, 3, 4]);
    let rev = store.put(b"a", b"live");
    assert_eq!(collect_until(&mut client, id, rev).await, vec![rev]);
}

#[tokio::test]
async fn publish_filling_fills_prev_kv_only_for_prev_kv_watchers() {
    let mut store = Store::new(HubConfig::default());
    let mut client = store.client(SessionConfig::default());
    client.create(watch(b"a", b"", 0));
    let plain = client.created().await;

    // The apply path leaves prev_kv empty; with no watcher asking for it, nothing is read.
    let stripped = |rev: i64, value: &[u8]| RevisionEvents {
        revision: rev,
        events: vec![Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: b"a".to_vec(),
                mod_revision: rev,
                value: value.to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        }],
    };
    store.rev += 1;
    let first = stripped(store.rev, b"1");
    store.history.push(Arc::new(first.clone()));
    let mut called = false;
    store.hub.publish_filling(first, |_| called = true);
    assert!(!called, "fill must not run without a prev_kv watcher");
    assert_eq!(client.next().await.watch_id, plain);

    // A watcher with prev_kv registered before the next revision gets it filled.
    let mut with_prev = watch(b"a", b"", 0);
    with_prev.prev_kv = true;
    client.create(with_prev);
    let wants = client.created().await;
    store.rev += 1;
    let second = stripped(store.rev, b"2");
    store.history.push(Arc::new(second.clone()));
    store.hub.publish_filling(second, |evs| {
        evs[0].prev_kv = Some(KeyValue {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
    });
    for _ in 0..2 {
        let resp = client.next().await;
        let prev = resp.events[0].prev_kv.as_ref().map(|kv| kv.value.clone());
        if resp.watch_id == wants {
            assert_eq!(prev, Some(b"1".to_vec()));
        } else {
            assert_eq!((resp.watch_id, prev), (plain, None));
        }
    }
}
