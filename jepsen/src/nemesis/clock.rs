//! Clock faults through libfaketime: each node's clock offset lives in a file libfaketime re-reads on
//! every clock read (`FAKETIME_NO_CACHE=1`), so writing the file shifts the node's time at once.

use std::time::Duration;

use tokio::sync::watch;

use super::{names, sleep_or_stop, NemesisError};
use crate::db::Cluster;

/// Why a clock fault may do nothing, for the record.
pub(super) fn caveat(cluster: &Cluster) -> &'static str {
    if cluster.options().faketime.is_none() {
        " (libfaketime off in this run: no effect)"
    } else if !cluster.kind().clock_faults_apply() {
        " (no effect on etcd: Go reads time through the vDSO, not libc)"
    } else {
        ""
    }
}

pub(super) fn set(cluster: &Cluster, nodes: &[usize], offset_ms: i64) -> Result<String, NemesisError> {
    for &i in nodes {
        cluster.set_clock_offset(i, offset_ms)?;
    }
    Ok(String::new())
}

pub(super) fn reset(cluster: &Cluster, nodes: &[usize]) -> Result<String, NemesisError> {
    set(cluster, nodes, 0)?;
    Ok(format!("reset clock of {}", names(nodes)))
}

/// Alternates the nodes' offset between `delta_ms` and 0 every `period` for `duration`; false if `stop`
/// fired first.
pub(super) async fn strobe(
    cluster: &Cluster,
    nodes: &[usize],
    delta_ms: i64,
    period: Duration,
    duration: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::Instant::now() + duration;
    let mut shifted = true;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        if !sleep_or_stop(period.min(left), stop).await {
            return false;
        }
        shifted = !shifted;
        if let Err(e) = set(cluster, nodes, if shifted { delta_ms } else { 0 }) {
            tracing::warn!(error = %e, "clock strobe");
        }
    }
}
