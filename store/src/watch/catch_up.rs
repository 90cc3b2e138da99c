//! Catch-up: feeds a stream's unsynced watchers from [`EventHistory`] in bounded reads and moves each
//! back to the synced set once it has reached the hub's revision.
//!
//! A round snapshots one watcher's position under the hub lock, reads history without any lock, and
//! commits under the lock again only if the watcher is still exactly where the snapshot saw it (same
//! serial, same next revision). That makes a commit atomic with respect to `publish` (no gap, no
//! duplicate at the switch) and makes concurrent or stale rounds harmless: they are simply dropped.

use rudder_proto::etcdserverpb::WatchResponse;
use rudder_proto::mvccpb::Event;
use tracing::{debug, warn};

use super::hub::{events_response, Shared, StreamId, SyncState};
use super::queue::{Outgoing, Queue};
use super::range::Selector;
use super::{HistoryBatch, HistoryError};

struct Job {
    watch_id: i64,
    serial: u64,
    selector: Selector,
    from: i64,
    /// The hub's revision at snapshot time: history is complete up to here.
    to: i64,
}

enum Outcome {
    /// The watcher's events of `job.from..=through` (possibly none).
    Events { events: Vec<Event>, through: i64 },
    /// Remove the watcher and tell the client why.
    Cancel(Outgoing),
}

/// One round over the stream's unsynced watchers: at most one history read per watcher, stopping
/// early when the queue has no room. Call again while [`Queue::catch_up_due`] says so.
pub(crate) fn catch_up_round(shared: &Shared, stream: StreamId, queue: &Queue) {
    let mut after = None;
    while queue.has_room_for_catch_up() {
        let Some(job) = next_job(shared, stream, after) else {
            return;
        };
        after = Some(job.watch_id);
        let outcome = read(shared, &job);
        commit(shared, stream, &job, outcome);
    }
}

/// The first unsynced watcher with an id after `after`; clears the catch-up flag when there is none.
fn next_job(shared: &Shared, stream: StreamId, after: Option<i64>) -> Option<Job> {
    let state = shared.state.lock();
    let entry = state.streams.get(&stream)?;
    let lower = match after {
        Some(id) => std::ops::Bound::Excluded(id),
        None => std::ops::Bound::Unbounded,
    };
    let found = entry
        .watchers
        .range((lower, std::ops::Bound::Unbounded))
        .find_map(|(id, w)| match w.state {
            SyncState::Unsynced { next_rev } => Some(Job {
                watch_id: *id,
                serial: w.serial,
                selector: w.selector.clone(),
                from: next_rev,
                to: state.current,
            }),
            SyncState::Synced { .. } => None,
        });
    if found.is_none() && after.is_none() {
        entry.refresh_catch_up();
    }
    found
}

fn read(shared: &Shared, job: &Job) -> Outcome {
    if job.from > job.to {
        // Nothing to read (e.g. the hub was restored to an older revision); just resync.
        return Outcome::Events {
            events: Vec::new(),
            through: job.to,
        };
    }
    let range = &job.selector.range;
    let result = shared.history.events(
        job.from,
        job.to,
        range.key(),
        range.range_end(),
        shared.config.catch_up_revisions,
    );
    match result {
        Ok(HistoryBatch { events, through }) if through >= job.from => {
            let through = through.min(job.to);
            // Re-check revision bounds and range so a sloppy history cannot cause duplicates.
            let in_bounds = events.iter().filter(|ev| {
                ev.kv
                    .as_ref()
                    .is_some_and(|kv| (job.from..=through).contains(&kv.mod_revision))
            });
            Outcome::Events {
                events: job.selector.select_all(in_bounds),
                through,
            }
        }
        Ok(batch) => {
            warn!(
                watch_id = job.watch_id,
                from = job.from,
                through = batch.through,
                "event history made no progress; canceling watcher"
            );
            Outcome::Cancel(cancel(job.watch_id, "etcdserver: watch history read made no progress"))
        }
        Err(HistoryError::Compacted(compact_revision)) => {
            debug!(
                watch_id = job.watch_id,
                from = job.from,
                compact_revision,
                "watch compacted"
            );
            // etcd answers this with header revision 0.
            Outcome::Cancel(Outgoing::control(
                WatchResponse {
                    watch_id: job.watch_id,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                },
                0,
            ))
        }
        Err(err @ HistoryError::Storage(_)) => {
            warn!(watch_id = job.watch_id, from = job.from, error = %err, "watch catch-up failed; canceling watcher");
            Outcome::Cancel(cancel(job.watch_id, &err.to_string()))
        }
    }
}

fn cancel(watch_id: i64, reason: &str) -> Outgoing {
    Outgoing::control(
        WatchResponse {
            watch_id,
            canceled: true,
            cancel_reason: reason.to_owned(),
            ..Default::default()
        },
        0,
    )
}

fn commit(shared: &Shared, stream: StreamId, job: &Job, outcome: Outcome) {
    let mut state = shared.state.lock();
    let current = state.current;
    let Some(entry) = state.streams.get_mut(&stream) else {
        return;
    };
    let Some(w) = entry.watchers.get_mut(&job.watch_id) else {
        return;
    };
    if w.serial != job.serial || w.state != (SyncState::Unsynced { next_rev: job.from }) {
        return; // canceled, re-created or already advanced by another round
    }
    match outcome {
        Outcome::Events { events, through } => {
            if !events.is_empty() {
                entry.queue.push_catch_up(Outgoing {
                    response: events_response(job.watch_id, events),
                    header_revision: through,
                    fragment: w.fragment,
                });
                w.sent_since_tick = true;
            }
            let next = through + 1;
            if next > current {
                // Under the hub lock: the next publish is `current + 1 == next`, delivered live.
                w.state = SyncState::Synced { min_rev: next };
                debug!(stream, watch_id = job.watch_id, next, "watcher synced");
                entry.refresh_catch_up();
                entry.flush_deferred_progress(current);
            } else {
                w.state = SyncState::Unsynced { next_rev: next };
            }
        }
        Outcome::Cancel(out) => {
            entry.watchers.remove(&job.watch_id);
            entry.queue.push_control(out);
            entry.refresh_catch_up();
            entry.flush_deferred_progress(current);
        }
    }
}
