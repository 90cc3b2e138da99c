//! Membership: remove a member (MemberRemove, stop, wipe) and re-add it empty (MemberAdd, start with
//! `--initial-cluster-state existing`), under load.

use std::time::Duration;

use super::{names, NemesisError};
use crate::db::Cluster;

pub(super) async fn remove(cluster: &Cluster, i: usize) -> Result<String, NemesisError> {
    cluster.remove_member(i).await?;
    Ok(String::new())
}

/// Re-adds the member and waits (up to `timeout`) until it serves linearizable reads.
pub(super) async fn readd(cluster: &Cluster, i: usize, timeout: Duration) -> Result<String, NemesisError> {
    let start = tokio::time::Instant::now();
    cluster.readd_member(i, timeout).await?;
    let deadline = start + timeout;
    loop {
        if cluster.health(i).await.is_ok() {
            return Ok(format!(
                "re-added {} (serving after {:.1} s)",
                names(&[i]),
                start.elapsed().as_secs_f64()
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(format!("re-added {} (not serving yet after {timeout:?})", names(&[i])));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
