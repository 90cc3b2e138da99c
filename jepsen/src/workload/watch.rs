//! watch: writers put unique values under a prefix while watchers on every node watch the prefix (with
//! prev_kv and progress notifications) and record what they receive. A watcher whose stream breaks
//! resumes from the revision after the last one it saw; one canceled by compaction restarts from the
//! compacted revision. The kubernetes workload reuses the watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType as EtcdEventType, GetOptions, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use super::client::{connect, pace, record, revision_of, Outcome, Process};
use super::Ctx;
use crate::history::{Op, WatchEvent, WatchEventType, WatchRecordKind};

/// The highest revision each watcher has received (events or progress), for the final catch-up.
#[derive(Default)]
pub struct WatchState {
    seen: Mutex<HashMap<u64, i64>>,
}

impl WatchState {
    fn saw(&self, watcher: u64, revision: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let slot = seen.entry(watcher).or_insert(0);
        *slot = (*slot).max(revision);
    }

    fn min_seen(&self) -> i64 {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values().copied().min().unwrap_or(0)
    }
}

/// Watchers per node.
const WATCHERS_PER_NODE: usize = 2;

pub fn start_watchers(
    ctx: &Arc<Ctx>,
    prefix: &str,
    state: Arc<WatchState>,
    stop: signal::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for node in 0..ctx.endpoints.len() {
        for w in 0..WATCHERS_PER_NODE {
            let watcher = (node * WATCHERS_PER_NODE + w) as u64;
            state.saw(watcher, 0);
            let ctx = ctx.clone();
            let prefix = prefix.to_string();
            let state = state.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                run_watcher(ctx, prefix, watcher, node, state, stop).await
            }));
        }
    }
    tasks
}

fn decode_event(e: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = e.kv()?;
    let kind = match e.event_type() {
        EtcdEventType::Put => WatchEventType::Put,
        EtcdEventType::Delete => WatchEventType::Delete,
    };
    Some(WatchEvent {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        kind,
        value: (kind == WatchEventType::Put).then(|| String::from_utf8_lossy(kv.value()).into_owned()),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
        version: kv.version(),
        prev_value: e.prev_kv().map(|p| String::from_utf8_lossy(p.value()).into_owned()),
    })
}

async fn run_watcher(
    ctx: Arc<Ctx>,
    prefix: String,
    watcher: u64,
    node: usize,
    state: Arc<WatchState>,
    mut stop: signal::Receiver<bool>,
) {
    let Some(endpoint) = ctx.endpoints.get(node).cloned() else {
        return;
    };
    let rec = ctx.recorder.clone();
    // The first watch starts right after the revision current when the watcher came up, so its window
    // has an explicit start.
    let mut next_start: i64 = 0;
    while !*stop.borrow() {
        let client = connect(&endpoint, ctx.timeout).await;
        let Ok(mut client) = client else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if next_start == 0 {
            match tokio::time::timeout(
                ctx.timeout,
                client.get(prefix.as_str(), Some(GetOptions::new().with_count_only())),
            )
            .await
            {
                Ok(Ok(resp)) => next_start = revision_of(resp.header()) + 1,
                _ => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            }
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(next_start);
        let opened = tokio::time::timeout(ctx.timeout, client.watch(prefix.as_str(), Some(options))).await;
        let (mut handle, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                rec.watch(watcher, node, WatchRecordKind::Disconnected { error: e.to_string() });
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        rec.watch(
            watcher,
            node,
            WatchRecordKind::Start {
                start_revision: next_start,
            },
        );
        let mut progress_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = handle.cancel().await;
                    return;
                }
                _ = progress_tick.tick() => {
                    let _ = handle.request_progress().await;
                }
                msg = stream.message() => {
                    match msg {
                        Ok(Some(resp)) => {
                            let revision = revision_of(resp.header());
                            if resp.canceled() {
                                let compact = resp.compact_revision();
                                rec.watch(watcher, node, WatchRecordKind::Canceled {
                                    compact_revision: compact,
                                    reason: resp.cancel_reason().to_string(),
                                });
                                if compact > 0 {
                                    next_start = next_start.max(compact);
                                }
                                break;
                            }
                            if resp.created() && resp.events().is_empty() {
                                continue;
                            }
                            if resp.events().is_empty() {
                                rec.watch(watcher, node, WatchRecordKind::Progress { revision });
                                state.saw(watcher, revision);
                                continue;
                            }
                            let events: Vec<WatchEvent> = resp.events().iter().filter_map(decode_event).collect();
                            let last = events.iter().map(|e| e.mod_revision).max().unwrap_or(0);
                            rec.watch(watcher, node, WatchRecordKind::Events { revision, events });
                            next_start = next_start.max(last + 1);
                            state.saw(watcher, last);
                        }
                        Ok(None) => {
                            rec.watch(watcher, node, WatchRecordKind::Disconnected { error: "stream ended".into() });
                            break;
                        }
                        Err(e) => {
                            rec.watch(watcher, node, WatchRecordKind::Disconnected { error: e.to_string() });
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writers: plain puts of unique values on a few keys under the prefix.
pub fn start_writers(ctx: &Arc<Ctx>, prefix: &str) -> Vec<JoinHandle<()>> {
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let first_id = ctx.id_base + p as u64;
                let mut rng = StdRng::seed_from_u64(ctx.seed ^ first_id.wrapping_mul(0x1405_7b7e_f767_814f));
                let mut process = Process::new(first_id, ctx.concurrency);
                while pace(&ctx, &mut rng).await {
                    let Some(client) = process.client(&ctx).await else {
                        continue;
                    };
                    let key = rng.random_range(0..16u64);
                    let outcome = put(&ctx, process.id, client, &prefix, key).await;
                    process.after(&outcome);
                }
            })
        })
        .collect()
}

async fn put(ctx: &Ctx, process: u64, mut client: etcd_client::Client, prefix: &str, key: u64) -> Outcome<(Op, i64)> {
    let value = ctx.unique();
    let op = Op::Write { key, value };
    let done = op.clone();
    let name = format!("{prefix}{key}");
    record(ctx, process, op, false, || async move {
        let resp = client.put(name, value.to_string(), None).await?;
        Ok(Ok((done, revision_of(resp.header()))))
    })
    .await
}

/// One last write after the heal; its revision is what every watcher must reach.
pub async fn final_write(ctx: &Arc<Ctx>, prefix: &str) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut id = 2_000_000u64;
    while tokio::time::Instant::now() < deadline {
        let mut process = Process::new(id, ctx.endpoints.len());
        if let Some(client) = process.client(ctx).await {
            let outcome = if prefix.contains("kubernetes") {
                super::kubernetes::create(ctx, id, client, u64::from(u32::MAX) + id).await
            } else {
                put(ctx, id, client, prefix, 0).await
            };
            if let Outcome::Ok((_, revision)) = outcome {
                return Some(revision);
            }
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Waits until every watcher has received `revision` (or `settle` passes).
pub async fn wait_caught_up(state: &WatchState, revision: i64, settle: Duration) {
    let deadline = tokio::time::Instant::now() + settle;
    while state.min_seen() < revision && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
