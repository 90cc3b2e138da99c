//! etcd's require-leader check: a request whose gRPC metadata carries `hasleader: true` (clientv3's
//! `WithRequireLeader`; etcdctl's watch and kube-apiserver's watches set it) fails with Unavailable
//! "etcdserver: no leader" while this member has no leader, instead of being served from a member cut
//! off from the cluster. etcd checks it in its unary and stream interceptors; on streams it also watches
//! the leader and ends require-leader streams once the leader is gone (`monitorLeader`), which
//! [`until_leader_lost`] does for ours.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::Instant as _;
use tonic::Status;

use crate::error::StoreError;
use crate::node::StoreNode;

/// etcd's `rpctypes.MetadataRequireLeaderKey`.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";
/// etcd's `rpctypes.MetadataHasLeader`.
const HAS_LEADER: &str = "true";

/// Whether a request asks to be refused when there is no leader.
pub fn requires_leader(headers: &http::HeaderMap) -> bool {
    headers.get(REQUIRE_LEADER_KEY).is_some_and(|v| v == HAS_LEADER)
}

/// [`requires_leader`] for a call's gRPC metadata, inside a service.
pub fn requires_leader_md(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get(REQUIRE_LEADER_KEY).is_some_and(|v| v == HAS_LEADER)
}

/// Whether this member currently has a leader, as etcd's `s.Leader() != raft.None`.
///
/// A follower loses its leader as soon as its election timer fires (it becomes a candidate). A leader
/// is different: etcd runs Raft with CheckQuorum, so a leader that hears from no quorum for an election
/// timeout steps down; openraft's leader stays, so we look at how long ago a quorum last acknowledged it.
pub fn has_leader(node: &StoreNode) -> bool {
    let metrics = node.raft.metrics();
    let m = metrics.borrow_watched();
    let Some(leader) = m.current_leader else {
        return false;
    };
    if leader != m.id {
        return true;
    }
    let mut voters = m.membership_config.membership().voter_ids();
    let alone = matches!((voters.next(), voters.next()), (Some(v), None) if v == m.id);
    if alone {
        return true;
    }
    match &m.last_quorum_acked {
        Some(at) => at.elapsed() <= node.config.election_timeout,
        // Just elected (by a quorum), not yet acknowledged by heartbeats.
        None => true,
    }
}

/// Middleware in front of every gRPC service: refuses require-leader calls while there is no leader,
/// before the call (unary or stream) starts.
pub async fn require_leader(State(node): State<Arc<StoreNode>>, request: Request, next: Next) -> Response {
    if requires_leader(request.headers()) && !has_leader(&node) {
        return Status::from(StoreError::NoLeader)
            .into_http::<axum::body::Body>()
            .into_response();
    }
    next.run(request).await
}

/// Resolves once `node` has had no leader for longer than an election timeout (a leader election in
/// progress is not a loss). Checked every heartbeat interval.
pub async fn leader_lost(node: Arc<StoreNode>) {
    let every = node.config.heartbeat_interval.max(Duration::from_millis(10));
    let patience = node.config.election_timeout;
    let mut lost_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if has_leader(&node) {
            lost_since = None;
            continue;
        }
        let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() > patience {
            return;
        }
    }
}

/// Passes `inner` through until the member loses its leader (see [`leader_lost`]), then ends the
/// stream with etcd's "no leader" error, as etcd cancels require-leader streams.
pub fn until_leader_lost<T, S>(inner: S, node: Arc<StoreNode>) -> impl Stream<Item = Result<T, Status>> + Send
where
    T: Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    struct St<S> {
        inner: std::pin::Pin<Box<S>>,
        lost: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        done: bool,
    }
    let state = St {
        inner: Box::pin(inner),
        lost: Box::pin(leader_lost(node)),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        tokio::select! {
            biased;
            item = st.inner.next() => item.map(|item| (item, st)),
            () = &mut st.lost => {
                tracing::info!("ending a require-leader stream: the member lost its leader");
                st.done = true;
                Some((Err(Status::from(StoreError::NoLeader)), st))
            }
        }
    })
}
