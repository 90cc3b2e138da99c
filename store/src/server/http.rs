//! The plain-HTTP endpoints etcd serves next to gRPC on its client URLs: `/health` and Prometheus
//! `/metrics` (etcd's metric names, so existing dashboards and `etcdctl check datascale` work).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use rudder_proto::etcdserverpb::AlarmType;

use crate::node::StoreNode;

/// etcd's `/version`.
pub async fn version() -> impl IntoResponse {
    let body = format!(
        "{{\"etcdserver\":\"{}\",\"etcdcluster\":\"3.5.0\"}}",
        super::maintenance::ETCD_VERSION
    );
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// tonic refuses an oversized request with OutOfRange; grpc-go (so etcd) answers ResourceExhausted, and
/// clients look at the code. Rewrite that one status on its way out.
pub async fn grpc_size_limit_status(mut resp: axum::response::Response) -> axum::response::Response {
    let headers = resp.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("decoded%20message%20length%20too%20large") || m.contains("decoded message length too large")
            });
    if too_large {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            axum::http::HeaderValue::from_static("grpc: received message larger than max"),
        );
    }
    resp
}

pub async fn health(State(node): State<Arc<StoreNode>>) -> impl IntoResponse {
    let (ok, reason) = if node.leader().is_none() {
        (false, "RAFT NO LEADER".to_string())
    } else if node.applier.has_alarm(AlarmType::Nospace) {
        (false, "ALARM NOSPACE".to_string())
    } else {
        (true, String::new())
    };
    let body = format!("{{\"health\":\"{ok}\",\"reason\":\"{reason}\"}}");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

fn gauge(reg: &Registry, name: &str, help: &str, v: i64) {
    if let Ok(g) = IntGauge::new(name, help) {
        g.set(v);
        let _ = reg.register(Box::new(g));
    }
}

fn counter(reg: &Registry, name: &str, help: &str, v: u64) {
    if let Ok(c) = IntCounter::new(name, help) {
        c.inc_by(v);
        let _ = reg.register(Box::new(c));
    }
}

/// Scheduled snapshots (`--snapshot-interval`); Rudder's own names, etcd has no such feature.
fn snapshot_metrics(reg: &Registry) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &crate::backup::schedule::STATS;
    counter(
        reg,
        "rudder_snapshot_scheduled_total",
        "Scheduled snapshots saved and verified.",
        s.succeeded.load(Relaxed),
    );
    counter(
        reg,
        "rudder_snapshot_scheduled_failures_total",
        "Scheduled snapshots that failed (write or verification).",
        s.failed.load(Relaxed),
    );
    gauge(
        reg,
        "rudder_snapshot_last_success_timestamp_seconds",
        "Unix time of the last successful scheduled snapshot (0: none yet).",
        s.last_success.load(Relaxed),
    );
    gauge(
        reg,
        "rudder_snapshot_last_revision",
        "Revision held by the last successful scheduled snapshot.",
        s.last_revision.load(Relaxed),
    );
    gauge(
        reg,
        "rudder_snapshot_files",
        "Scheduled snapshot files kept in the snapshot directory.",
        s.files.load(Relaxed),
    );
}

pub async fn metrics(State(node): State<Arc<StoreNode>>) -> impl IntoResponse {
    // Values are read at scrape time from the node's own state; nothing to keep in sync.
    let reg = Registry::new();
    let db = node.applier.mvcc.db();
    let (last, applied) = node.raft_indexes();
    let mvcc = &node.applier.mvcc;
    gauge(
        &reg,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        node.leader().is_some() as i64,
    );
    gauge(
        &reg,
        "etcd_server_is_leader",
        "Whether or not this member is a leader.",
        node.is_leader() as i64,
    );
    gauge(
        &reg,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        last as i64,
    );
    gauge(
        &reg,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        applied as i64,
    );
    gauge(
        &reg,
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        last.saturating_sub(applied) as i64,
    );
    gauge(
        &reg,
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        node.config.quota_backend_bytes as i64,
    );
    gauge(
        &reg,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        crate::backend::db_size(db) as i64,
    );
    gauge(
        &reg,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        crate::backend::db_size_in_use(db) as i64,
    );
    gauge(
        &reg,
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        mvcc.key_count() as i64,
    );
    gauge(
        &reg,
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        mvcc.current_revision(),
    );
    gauge(
        &reg,
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        mvcc.compacted_revision(),
    );
    gauge(
        &reg,
        "etcd_debugging_lease_granted_total",
        "The number of leases held.",
        node.applier.lessor.ids().len() as i64,
    );
    gauge(
        &reg,
        "etcd_server_id",
        "Member id of this member (as a gauge value).",
        (node.member.id >> 1) as i64,
    );
    snapshot_metrics(&reg);
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&reg.gather(), &mut buf).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            Vec::new(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        buf,
    )
}
