//! Storage faults: compaction + defragmentation under load, and running out of quota (NOSPACE) and
//! recovering the way an operator would.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, DeleteOptions};
use rand::RngCore;
use tokio::time::Instant;

use super::{names, NemesisError, NemesisOptions};
use crate::db::{self, Cluster, NodeStatus};

/// Where the quota fault writes its filler (outside every workload's prefix).
pub const QUOTA_PREFIX: &str = "/jepsen-nemesis/quota/";

/// A backend small enough to fill in seconds: what the runner should pass as --quota-backend-bytes
/// when the quota nemesis is on.
pub const SUGGESTED_QUOTA_BYTES: u64 = 32 * 1024 * 1024;

/// Defragmenting copies the whole backend: give it time.
const SLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// A client to the first running node that answers, with its index.
async fn any_client(cluster: &Cluster, timeout: Duration) -> Result<(usize, Client), NemesisError> {
    let endpoints = cluster.client_endpoints();
    for (i, ep) in endpoints.iter().enumerate() {
        if cluster.status(i) != NodeStatus::Running {
            continue;
        }
        let Ok(mut c) = db::connect(ep, timeout).await else {
            continue;
        };
        if c.status().await.is_ok() {
            return Ok((i, c));
        }
    }
    Err(NemesisError::Fault("no running node answers".into()))
}

fn is_nospace(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("space exceeded") || text.contains("NOSPACE")
}

/// Compacts at the current revision (physically: waits until the backend dropped the old versions).
pub(super) async fn compact(cluster: &Cluster) -> Result<String, NemesisError> {
    let (via, mut c) = any_client(cluster, SLOW_TIMEOUT).await?;
    let resp = c
        .get("/jepsen-nemesis/revision", None)
        .await
        .map_err(NemesisError::client("get revision"))?;
    let rev = resp.header().map_or(0, |h| h.revision());
    match c.compact(rev, Some(CompactionOptions::new().with_physical())).await {
        Ok(_) => Ok(format!("compacted at revision {rev} via {}", names(&[via]))),
        // Someone compacted further already: nothing left to do.
        Err(e) if e.to_string().contains("compacted") => Ok(format!("revision {rev} already compacted")),
        Err(e) => Err(NemesisError::Client {
            what: format!("compact at {rev}"),
            source: e,
        }),
    }
}

/// Defragments every running member, one at a time as etcd advises.
pub(super) async fn defragment_all(cluster: &Cluster) -> Result<String, NemesisError> {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (i, ep) in cluster.client_endpoints().iter().enumerate() {
        if cluster.status(i) != NodeStatus::Running {
            continue;
        }
        let res = match db::connect(ep, SLOW_TIMEOUT).await {
            Ok(mut c) => c.defragment().await.map(drop),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => done.push(i),
            Err(e) => failed.push(format!("{}: {e}", names(&[i]))),
        }
    }
    let mut d = format!("defragmented {}", names(&done));
    if !failed.is_empty() {
        d = format!("{d}; defragment failed on {}", failed.join(", "));
    }
    Ok(d)
}

/// Writes random (incompressible) values under [`QUOTA_PREFIX`] until the store refuses with NOSPACE,
/// or the byte or time limit is reached.
pub(super) async fn fill(cluster: &Cluster, opts: &NemesisOptions) -> Result<String, NemesisError> {
    let deadline = Instant::now() + opts.quota_fill_timeout;
    let mut value = vec![0u8; opts.quota_value_bytes.max(1)];
    let mut written: u64 = 0;
    let mut puts: u64 = 0;
    let mut errors = 0u32;
    let (mut via, mut c) = any_client(cluster, SLOW_TIMEOUT).await?;
    loop {
        if written >= opts.quota_fill_limit_bytes || Instant::now() >= deadline {
            return Ok(format!(
                "no NOSPACE after {} in {puts} puts (is --quota-backend-bytes small?)",
                mib(written)
            ));
        }
        rand::rng().fill_bytes(&mut value);
        let key = format!("{QUOTA_PREFIX}{puts:08}");
        match c.put(key, value.clone(), None).await {
            Ok(_) => {
                written += value.len() as u64;
                puts += 1;
                errors = 0;
            }
            Err(e) if is_nospace(&e) => {
                return Ok(format!(
                    "NOSPACE after {} in {puts} puts (via {})",
                    mib(written),
                    names(&[via])
                ));
            }
            Err(e) => {
                errors += 1;
                tracing::debug!(error = %e, "quota fill put failed");
                if errors > 20 {
                    return Err(NemesisError::Client {
                        what: "quota fill".into(),
                        source: e,
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                (via, c) = any_client(cluster, SLOW_TIMEOUT).await?;
            }
        }
    }
}

/// Deletes the filler, compacts, defragments every member, disarms the alarms and checks that a write
/// goes through again (retrying for a while: the disarm is replicated through the log).
pub(super) async fn recover(cluster: &Cluster) -> Result<String, NemesisError> {
    let (_, mut c) = any_client(cluster, SLOW_TIMEOUT).await?;
    let del = c
        .delete(QUOTA_PREFIX, Some(DeleteOptions::new().with_prefix()))
        .await
        .map_err(NemesisError::client("delete the filler"))?;
    let deleted = del.deleted();
    let compacted = compact(cluster).await?;
    let defrag = defragment_all(cluster).await?;
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(NemesisError::client("list alarms"))?;
    let mut disarmed = 0;
    for a in alarms.alarms() {
        let mut opts = AlarmOptions::new();
        opts.with_member(a.member_id());
        c.alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await
            .map_err(NemesisError::client("disarm alarm"))?;
        disarmed += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let check = format!("{QUOTA_PREFIX}check");
    loop {
        match c.put(check.as_str(), "ok", None).await {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(NemesisError::Client {
                    what: "write after recovery".into(),
                    source: e,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let _ = c.delete(check.as_str(), None).await;
    Ok(format!(
        "deleted {deleted} filler keys; {compacted}; {defrag}; disarmed {disarmed} alarms; write ok"
    ))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
