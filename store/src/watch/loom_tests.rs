//! loom models of the hub: publish racing a consumer whose one-slot queue overflows, with catch-up
//! from history (inline and on another thread). Every revision must arrive exactly once, in order.
//!
//! The cfg is `rudder_loom`, not `loom`: `--cfg loom` also reaches tokio, which then drops `tokio::net`
//! and breaks hyper-util/tonic. Run:
//! `RUSTFLAGS="--cfg rudder_loom" CARGO_TARGET_DIR=/var/tmp/rudder-target-loom cargo test --release -p rudder-store --lib watch`
//! Preemption bound 3 unless `LOOM_MAX_PREEMPTIONS` is set (3: <1 s, 4: ~8 s, 5: ~1 min).

use std::future::Future;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Wake, Waker};

use rudder_proto::etcdserverpb::WatchCreateRequest;
use rudder_proto::mvccpb::{Event, KeyValue};

use super::range::KeyRange;
use super::{EventHistory, HistoryBatch, HistoryError, HubConfig, RevisionEvents, WatchHub};
use crate::sync::{thread, Arc, Mutex};

/// History whose appends are modelled, so "readable before publish" is part of the model.
#[derive(Default)]
struct LoomHistory {
    revisions: Mutex<Vec<StdArc<RevisionEvents>>>,
}

impl EventHistory for LoomHistory {
    fn events(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        range_end: &[u8],
        max_revisions: usize,
    ) -> Result<HistoryBatch, HistoryError> {
        let range =
            KeyRange::from_request(key, range_end).ok_or_else(|| HistoryError::Storage("empty range".into()))?;
        let revisions = self.revisions.lock();
        let mut batch = HistoryBatch {
            events: Vec::new(),
            through: to,
        };
        let wanted = revisions.iter().filter(|r| (from..=to).contains(&r.revision));
        for (n, rev) in wanted.enumerate() {
            let matching = rev
                .events
                .iter()
                .filter(|ev| ev.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)));
            batch.events.extend(matching.cloned());
            if n + 1 == max_revisions {
                batch.through = rev.revision;
                break;
            }
        }
        Ok(batch)
    }
}

fn revision(rev: i64) -> StdArc<RevisionEvents> {
    StdArc::new(RevisionEvents {
        revision: rev,
        events: vec![Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }],
    })
}

/// The apply path: history first, then the hub.
fn commit(history: &LoomHistory, hub: &WatchHub, rev: i64) {
    let batch = revision(rev);
    history.revisions.lock().push(batch.clone());
    hub.publish(batch);
}

/// Minimal executor for one future on a loom thread (loom's own needs its `futures` feature).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: StdArc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(StdArc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn setup(start: i64, current: i64) -> (StdArc<LoomHistory>, WatchHub, super::WatchStream) {
    let history = StdArc::new(LoomHistory::default());
    for rev in 2..=current {
        history.revisions.lock().push(revision(rev));
    }
    let hub = WatchHub::with_config(
        history.clone(),
        current,
        HubConfig {
            stream_buffer: 1,
            catch_up_revisions: 1,
        },
    );
    let stream = hub.open_stream();
    stream.create(&WatchCreateRequest {
        key: b"k".to_vec(),
        start_revision: start,
        ..Default::default()
    });
    let created = stream.pop();
    assert!(created.is_some_and(|c| c.response.created));
    (history, hub, stream)
}

/// Drains the stream (running catch-up inline, like the session does) until `last` is seen.
fn consume(stream: &super::WatchStream, last: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    block_on(async {
        while seen.last().is_none_or(|r| *r < last) {
            if stream.catch_up_due() {
                stream.catch_up();
                continue;
            }
            if let Some(out) = stream.pop() {
                assert!(!out.response.canceled, "unexpected cancel");
                seen.extend(
                    out.response
                        .events
                        .iter()
                        .filter_map(|ev| ev.kv.as_ref().map(|kv| kv.mod_revision)),
                );
                continue;
            }
            stream.changed().await;
        }
    });
    seen
}

#[test]
fn overflow_and_catch_up_deliver_each_revision_once() {
    model(|| {
        let (history, hub, stream) = setup(0, 1);
        let publisher = thread::spawn(move || {
            for rev in 2..=4 {
                commit(&history, &hub, rev);
            }
        });
        let seen = consume(&stream, 4);
        assert_eq!(seen, vec![2, 3, 4]);
        publisher.join().expect("publisher");
    });
}

#[test]
fn replay_switches_to_live_with_concurrent_catch_up_rounds() {
    model(|| {
        let (history, hub, stream) = setup(2, 2);
        let stream = Arc::new(stream);
        let publisher = thread::spawn(move || {
            for rev in 3..=4 {
                commit(&history, &hub, rev);
            }
        });
        // A second catch-up runner racing the consumer's own rounds.
        let racer = {
            let stream = stream.clone();
            thread::spawn(move || stream.catch_up())
        };
        let seen = consume(&stream, 4);
        assert_eq!(seen, vec![2, 3, 4]);
        publisher.join().expect("publisher");
        racer.join().expect("racer");
    });
}
