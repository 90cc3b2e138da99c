//! Scheduled backups (`--snapshot-interval`): every tick writes the same etcd-format snapshot that
//! `etcdctl snapshot save` would fetch into `snapshot-<UTC time>-rev<revision>.db` in the snapshot
//! directory, and keeps only the newest `--snapshot-retention` of them.
//!
//! A file only ever appears under its final name complete and checked: it is written as a `.part`
//! file, synced, verified by reading it back (SHA-256 trailer, bbolt structure, revision: what
//! `snapshot status` and `snapshot restore` check), renamed, and the directory synced. A file that
//! fails verification is deleted and the failure logged and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::DB;

use super::snapshot::{write_file, EtcdMember};
use super::status::{status_of, SnapshotStatus};
use super::{file_err, BackupError};
use crate::node::StoreNode;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".db";
const PART: &str = ".part";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Time between snapshots (the first one is taken one interval after start).
    pub interval: Duration,
    /// How many snapshot files to keep, newest first; 0 keeps them all (as etcd's `--max-snapshots`).
    pub retention: usize,
    pub dir: PathBuf,
}

/// What one scheduled snapshot produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub path: PathBuf,
    /// File size including the SHA-256 trailer.
    pub size: u64,
    pub status: SnapshotStatus,
    /// Older files deleted to honour the retention.
    pub pruned: Vec<PathBuf>,
}

/// Process-wide figures for `/metrics` (one store runs per process).
#[derive(Debug, Default)]
pub struct ScheduleStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Unix seconds of the last successful snapshot (0: none yet).
    pub last_success: AtomicI64,
    pub last_revision: AtomicI64,
    /// Snapshot files in the directory after the last run.
    pub files: AtomicI64,
}

pub static STATS: ScheduleStats = ScheduleStats {
    succeeded: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    last_success: AtomicI64::new(0),
    last_revision: AtomicI64::new(0),
    files: AtomicI64::new(0),
};

/// Starts the schedule for `node`; `None` when the interval is 0 (disabled). The task ends with the node.
pub fn spawn(node: &Arc<StoreNode>, config: ScheduleConfig) -> Option<tokio::task::JoinHandle<()>> {
    if config.interval.is_zero() {
        return None;
    }
    tracing::info!(
        interval = ?config.interval,
        retention = config.retention,
        dir = %config.dir.display(),
        "scheduled snapshots enabled"
    );
    Some(tokio::spawn(run(Arc::downgrade(node), config)))
}

async fn run(node: Weak<StoreNode>, config: ScheduleConfig) {
    let dir = config.dir.clone();
    // Leftovers of a run cut short (crash, kill) are never complete: drop them.
    match tokio::task::spawn_blocking(move || remove_parts(&dir)).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "cleaning unfinished snapshot files"),
        Err(e) => tracing::warn!(error = %e, "cleaning unfinished snapshot files"),
        Ok(Ok(())) => {}
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + config.interval, config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        let db = n.applier.mvcc.db().clone();
        let members = super::snapshot::members_of(&n);
        drop(n);
        let cfg = config.clone();
        let started = std::time::Instant::now();
        let result =
            tokio::task::spawn_blocking(move || take(&db, &members, &cfg.dir, cfg.retention, SystemTime::now()))
                .await
                .unwrap_or_else(|e| Err(BackupError::Storage(format!("snapshot task: {e}"))));
        match result {
            Ok(t) => {
                STATS.succeeded.fetch_add(1, Ordering::Relaxed);
                STATS.last_revision.store(t.status.revision, Ordering::Relaxed);
                STATS
                    .last_success
                    .store(unix_seconds(SystemTime::now()), Ordering::Relaxed);
                tracing::info!(
                    path = %t.path.display(),
                    size = t.size,
                    revision = t.status.revision,
                    total_keys = t.status.total_key,
                    pruned = t.pruned.len(),
                    took = ?started.elapsed(),
                    "scheduled snapshot saved and verified"
                );
            }
            Err(e) => {
                STATS.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %config.dir.display(), error = %e, "scheduled snapshot failed");
            }
        }
        let dir = config.dir.clone();
        if let Ok(Ok(files)) = tokio::task::spawn_blocking(move || list(&dir)).await {
            STATS.files.store(files.len() as i64, Ordering::Relaxed);
        }
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `20260102T030405.678Z`: fixed width, so names sort in time order.
pub fn utc_stamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The revision in a snapshot file name, if the name is one of ours.
pub fn revision_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (_, rev) = rest.rsplit_once("-rev")?;
    rev.parse().ok()
}

/// The snapshot files in `dir`, oldest first (a missing directory has none).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(file_err(dir))?.file_name();
        if let Some(name) = name.to_str() {
            if revision_of(name).is_some() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn remove_parts(dir: &Path) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(file_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(file_err(dir))?.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(PART));
        if ours {
            tracing::warn!(path = %path.display(), "removing an unfinished snapshot file");
            std::fs::remove_file(&path).map_err(file_err(&path))?;
        }
    }
    Ok(())
}

/// Re-reads a snapshot file as `snapshot restore` and `snapshot status` would: the SHA-256 trailer, the
/// bbolt structure, and (when given) the revision it must hold.
pub fn verify(path: &Path, expected_revision: Option<i64>) -> Result<SnapshotStatus, BackupError> {
    let reader = super::restore::open_verified(path, false)?;
    let status = status_of(&reader)?;
    if let Some(rev) = expected_revision {
        if status.revision != rev {
            return Err(BackupError::Content(format!(
                "{}: revision {} read back, {rev} written",
                path.display(),
                status.revision
            )));
        }
    }
    Ok(status)
}

/// Writes, verifies and publishes one snapshot of `db` into `dir`, then prunes beyond `retention`.
pub fn take(
    db: &DB,
    members: &[EtcdMember],
    dir: &Path,
    retention: usize,
    now: SystemTime,
) -> Result<Taken, BackupError> {
    std::fs::create_dir_all(dir).map_err(file_err(dir))?;
    let stamp = utc_stamp(now);
    let part = dir.join(format!("{PREFIX}{stamp}{SUFFIX}{PART}"));
    let checked = write_file(db, members, &part).and_then(|info| {
        let status = verify(&part, Some(info.revision))?;
        Ok((info, status))
    });
    let (info, status) = match checked {
        Ok(v) => v,
        Err(e) => {
            if let Err(rm) = std::fs::remove_file(&part) {
                if rm.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(path = %part.display(), error = %rm, "removing a failed snapshot file");
                }
            }
            return Err(e);
        }
    };
    let path = dir.join(format!("{PREFIX}{stamp}-rev{}{SUFFIX}", info.revision));
    std::fs::rename(&part, &path).map_err(file_err(&path))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err(dir))?;
    let pruned = prune(dir, retention)?;
    Ok(Taken {
        size: info.size + super::HASH_SIZE as u64,
        path,
        status,
        pruned,
    })
}

/// Deletes all but the newest `retention` snapshot files (0 keeps all); returns what it deleted.
pub fn prune(dir: &Path, retention: usize) -> Result<Vec<PathBuf>, BackupError> {
    if retention == 0 {
        return Ok(Vec::new());
    }
    let files = list(dir)?;
    let excess = files.len().saturating_sub(retention);
    let mut removed = Vec::new();
    for path in files.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(file_err(&path))?;
        tracing::info!(path = %path.display(), "pruned an old scheduled snapshot");
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn stamps_are_utc_and_sortable() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(utc_stamp(t), "20240229T123456.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(utc_stamp(t), "20991231T235959.000Z");
        assert_eq!(revision_of("snapshot-20240229T123456.789Z-rev42.db"), Some(42));
        assert_eq!(revision_of("snapshot-20240229T123456.789Z.db.part"), None);
        assert_eq!(revision_of("other.db"), None);
    }

    #[test]
    fn takes_verifies_and_prunes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = crate::backend::open(&tmp.path().join("db")).expect("open");
        let dir = tmp.path().join("snapshots");
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut taken = Vec::new();
        for i in 0..4 {
            let t = take(&db, &[], &dir, 2, start + Duration::from_secs(i)).expect("take");
            assert!(t.path.exists());
            taken.push(t.path);
        }
        assert_eq!(list(&dir).expect("list"), taken[2..].to_vec());
        for p in &taken[2..] {
            verify(p, None).expect("verifies");
        }
        // A stale .part is not a snapshot, and goes at the next start.
        std::fs::write(dir.join("snapshot-x.db.part"), b"junk").expect("write");
        assert_eq!(list(&dir).expect("list").len(), 2);
        remove_parts(&dir).expect("clean");
        assert!(!dir.join("snapshot-x.db.part").exists());
        // Retention 0 keeps everything.
        take(&db, &[], &dir, 0, start + Duration::from_secs(10)).expect("take");
        assert_eq!(list(&dir).expect("list").len(), 3);
    }

    #[test]
    fn damaged_files_fail_verification() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = crate::backend::open(&tmp.path().join("db")).expect("open");
        let dir = tmp.path().join("snapshots");
        let t = take(&db, &[], &dir, 1, SystemTime::now()).expect("take");
        assert!(verify(&t.path, Some(t.status.revision + 1)).is_err(), "wrong revision");
        let mut f = std::fs::OpenOptions::new().write(true).open(&t.path).expect("open");
        f.seek(SeekFrom::Start(100)).expect("seek");
        f.write_all(b"\xff\xff").expect("write");
        drop(f);
        let err = verify(&t.path, None).expect_err("flipped bytes");
        assert!(err.to_string().contains("expected sha256"), "{err}");
    }
}
