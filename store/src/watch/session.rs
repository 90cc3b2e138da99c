//! Drives one [`WatchStream`] asynchronously: a reader task applies the client's requests, and the
//! returned response stream drains the queue, runs catch-up on the blocking pool when it is due,
//! fires progress ticks, fills headers and fragments large responses.
//!
//! Back-pressure comes from the consumer: nothing is produced beyond the stream's queue while the
//! response stream is not polled, and catch-up only runs when the queue has room.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rudder_proto::etcdserverpb::watch_request::RequestUnion;
use rudder_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error};

use super::fragment::fragment_response;
use super::queue::Outgoing;
use super::{HeaderSource, WatchHub, WatchStream};

/// Per-stream settings of the Watch service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Period of progress notifications for watchers created with `progress_notify` (etcd: 10 min,
    /// never below 100 ms). Each stream adds up to 10% jitter, as etcd does, so streams opened
    /// together do not tick together.
    pub progress_notify_interval: Duration,
    /// Fragment threshold for watchers created with `fragment`. etcd uses --max-request-bytes plus
    /// its 512 KiB gRPC overhead allowance: 1.5 MiB + 512 KiB by default.
    pub max_response_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            progress_notify_interval: Duration::from_secs(10 * 60),
            max_response_bytes: 3 * 512 * 1024 + 512 * 1024,
        }
    }
}

/// Opens a stream on `hub` serving the client requests in `inbound`; yields the responses to send.
/// Dropping the returned stream cancels the reader and removes all of the stream's watchers. When
/// `inbound` fails the response stream ends; when it merely ends (client half-close) responses keep
/// flowing, as in etcd. Must be called inside a tokio runtime.
pub fn watch_session<S, E>(
    hub: &WatchHub,
    inbound: S,
    headers: Arc<dyn HeaderSource>,
    config: SessionConfig,
) -> impl Stream<Item = WatchResponse> + Send + 'static
where
    S: Stream<Item = Result<WatchRequest, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let stream = Arc::new(hub.open_stream());
    let reader = tokio::spawn(read_requests(stream.clone(), inbound));
    // Clamped so the jitter and deadline arithmetic below cannot overflow.
    let base = config
        .progress_notify_interval
        .clamp(Duration::from_millis(1), Duration::from_secs(365 * 24 * 3600));
    let interval = base + base.mul_f64(rand::random::<f64>() / 10.0);
    let session = Session {
        stream,
        reader,
        headers,
        max_response_bytes: config.max_response_bytes,
        pending: VecDeque::new(),
        interval,
        next_tick: Instant::now() + interval,
    };
    futures::stream::unfold(session, |mut session| async move {
        let resp = session.next().await?;
        Some((resp, session))
    })
}

async fn read_requests<S, E>(stream: Arc<WatchStream>, inbound: S)
where
    S: Stream<Item = Result<WatchRequest, E>>,
    E: Display,
{
    let mut inbound = std::pin::pin!(inbound);
    while let Some(msg) = inbound.next().await {
        match msg {
            Ok(WatchRequest {
                request_union: Some(request),
            }) => match request {
                RequestUnion::CreateRequest(create) => stream.create(&create),
                RequestUnion::CancelRequest(cancel) => stream.cancel(cancel.watch_id),
                RequestUnion::ProgressRequest(_) => stream.request_progress(),
            },
            // Like etcd: an unknown request kind does not end the stream.
            Ok(WatchRequest { request_union: None }) => debug!("ignoring empty watch request"),
            Err(err) => {
                debug!(error = %err, "watch request stream failed; closing");
                stream.close();
                return;
            }
        }
    }
    debug!("watch request stream ended by the client; responses continue");
}

struct Session {
    stream: Arc<WatchStream>,
    reader: JoinHandle<()>,
    headers: Arc<dyn HeaderSource>,
    max_response_bytes: usize,
    /// Fragments (or single responses) ready to go out.
    pending: VecDeque<WatchResponse>,
    interval: Duration,
    next_tick: Instant,
}

impl Session {
    async fn next(&mut self) -> Option<WatchResponse> {
        loop {
            if let Some(resp) = self.pending.pop_front() {
                return Some(resp);
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + self.interval;
                self.stream.progress_tick();
            }
            if self.stream.catch_up_due() {
                let stream = self.stream.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || stream.catch_up()).await {
                    error!(error = %err, "watch catch-up panicked; closing stream");
                    self.stream.close();
                    return None;
                }
                continue;
            }
            if let Some(out) = self.stream.pop() {
                self.prepare(out);
                continue;
            }
            if self.stream.is_closed() {
                return None;
            }
            tokio::select! {
                () = self.stream.changed() => {}
                () = tokio::time::sleep_until(self.next_tick) => {}
            }
        }
    }

    fn prepare(&mut self, out: Outgoing) {
        let mut resp = out.response;
        resp.header = Some(self.headers.header(out.header_revision));
        if out.fragment {
            self.pending.extend(fragment_response(resp, self.max_response_bytes));
        } else {
            self.pending.push_back(resp);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.stream.close();
    }
}
