//! One client watch stream: the requests it can make and the responses it drains.

use rudder_proto::etcdserverpb::WatchCreateRequest;

use super::catch_up::catch_up_round;
use super::hub::{Shared, StreamId};
use super::queue::{Outgoing, Queue};
use crate::sync::Arc;

/// A registered stream. All methods are synchronous and short except [`Self::catch_up`], which reads
/// history (run it on a blocking thread). Dropping the stream removes its watchers.
pub struct WatchStream {
    shared: Arc<Shared>,
    id: StreamId,
    queue: Arc<Queue>,
}

impl WatchStream {
    pub(crate) fn new(shared: Arc<Shared>, id: StreamId, queue: Arc<Queue>) -> Self {
        Self { shared, id, queue }
    }

    /// Handles a WatchCreateRequest; the answer (created, or created+canceled on error) is queued.
    pub fn create(&self, req: &WatchCreateRequest) {
        self.shared.state.lock().create(self.id, req);
    }

    /// Handles a WatchCancelRequest (unknown ids are ignored, as etcd does).
    pub fn cancel(&self, watch_id: i64) {
        self.shared.state.lock().cancel(self.id, watch_id);
    }

    /// Handles a WatchProgressRequest.
    pub fn request_progress(&self) {
        self.shared.state.lock().request_progress(self.id);
    }

    /// One tick of the periodic progress notification.
    pub fn progress_tick(&self) {
        self.shared.state.lock().progress_tick(self.id);
    }

    /// The next response to send, in order.
    pub fn pop(&self) -> Option<Outgoing> {
        self.queue.pop()
    }

    /// Some watcher is unsynced and the queue has room for catch-up output.
    pub fn catch_up_due(&self) -> bool {
        self.queue.catch_up_due()
    }

    /// One bounded catch-up round (blocking history reads). Safe to run concurrently with everything
    /// else, including another round.
    pub fn catch_up(&self) {
        catch_up_round(&self.shared, self.id, &self.queue);
    }

    /// Resolves when something may have changed (response queued, catch-up needed, closed) since the
    /// previous call returned. One waiter at a time.
    pub async fn changed(&self) {
        self.queue.changed().await;
    }

    /// Removes the stream's watchers and drops queued responses. Idempotent.
    pub fn close(&self) {
        // Hub first: once the entry is gone nothing can push to the queue any more.
        let removed = self.shared.state.lock().streams.remove(&self.id);
        if let Some(entry) = removed {
            tracing::debug!(stream = self.id, watchers = entry.watchers.len(), "watch stream closed");
        }
        self.queue.close();
    }

    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
