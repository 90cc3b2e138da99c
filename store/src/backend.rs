//! Opening the RocksDB instance that holds both the Raft log and the state machine.
//!
//! The Raft log goes through the WAL (synced by group commit); the state machine is written without it.
//! Every committed entry is in the durable log, so the state need not be durable on its own: after a
//! crash it comes back as of its last flush and the entries after its recorded position are applied
//! again. That saves a WAL write per entry on the path of every write. Two rules keep it correct:
//! flushes are atomic across column families (the data, leases and the applied position always come
//! back from the same point), and the state is flushed (see [`persist_state`]) before the log it was
//! built from may be purged.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::schema::{ALL_CFS, CF_KV, CF_LEASE, CF_META};

/// The state machine's column families (everything but the Raft log and its metadata).
const STATE_CFS: &[&str] = &[CF_KV, CF_META, CF_LEASE];

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("missing column family {0}")]
    MissingCf(&'static str),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl From<BackendError> for std::io::Error {
    fn from(e: BackendError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

pub fn open(dir: &Path) -> Result<Arc<DB>, BackendError> {
    open_with(dir, false)
}

/// `unsafe_buffered_wal`: UNSAFE test-only bug injection (`ack-before-fsync`). The WAL stays in this
/// process's buffer until something syncs it, so a kill -9 acts like a power loss: the database comes
/// back as a consistent prefix of the writes, without the unsynced tail.
pub fn open_with(dir: &Path, unsafe_buffered_wal: bool) -> Result<Arc<DB>, BackendError> {
    let mut opts = Options::default();
    if unsafe_buffered_wal {
        opts.set_manual_wal_flush(true);
        // Large enough that the buffer never spills to the file on its own in a test.
        opts.set_writable_file_max_buffer_size(64 << 20);
    }
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Debian's librocksdb logs at DEBUG by default: a line (a gettid and a write to LOG) on every WAL
    // sync, i.e. on every write, and a LOG growing by ~400 MiB an hour under load. INFO keeps flushes,
    // compactions and stalls; the files are capped as etcd caps its own logs.
    opts.set_log_level(rocksdb::LogLevel::Info);
    opts.set_max_log_file_size(16 << 20);
    opts.set_keep_log_file_num(4);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    // The state machine's writes skip the WAL: its column families must reach disk together. (RocksDB
    // refuses this with pipelined writes, which overlapped one write group's WAL write with the next
    // group's memtable inserts; with a single WAL writer there is little to overlap.)
    opts.set_atomic_flush(true);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut cf = Options::default();
        // The meta column family holds a handful of keys, but the applied position is rewritten on every
        // entry and each rewrite stays in the memtable until a flush: a small buffer keeps that garbage
        // (27 MiB of 32 after a put benchmark) from counting against the store's memory.
        let buffer = if *name == CF_META { 4 << 20 } else { 32 << 20 };
        cf.set_write_buffer_size(buffer);
        // The database size (and so the quota) counts live memtables, and a memtable reports the arena
        // blocks it has taken: with RocksDB's default 1 MiB blocks, one 100 KiB put looked like 1 MiB.
        // Small blocks (values over a quarter of one get an exact block of their own) keep the count
        // close to the data.
        cf.set_arena_block_size(64 << 10);
        ColumnFamilyDescriptor::new(*name, cf)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Makes everything applied so far durable: flushes every column family's memtable in one atomic flush.
/// Call it before the log the state came from can be purged (after building or installing a snapshot).
///
/// RocksDB 7.8's C API has no multi-family flush, and a single-family `Flush` under `atomic_flush` flushes
/// only that family. A manual compaction does flush all of them atomically before it runs, so compact
/// the meta family: a handful of keys, cheap, and (not exclusive) it does not wait for other compactions.
/// Never flush one state column family on its own: that breaks the common point they come back from.
pub fn persist_state(db: &DB) -> Result<(), BackendError> {
    let meta = cf(db, CF_META)?;
    let mut opts = rocksdb::CompactOptions::default();
    opts.set_exclusive_manual_compaction(false);
    // This API reports no error; a failed flush is a RocksDB background error, which stops writes
    // and surfaces on the next one.
    db.compact_range_cf_opt(meta, None::<&[u8]>, None::<&[u8]>, &opts);
    Ok(())
}

pub fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, BackendError> {
    db.cf_handle(name).ok_or(BackendError::MissingCf(name))
}

/// Bytes on disk (SST files) plus live memtables of the state machine: what etcd reports as the database
/// size. The Raft log is left out, as etcd's WAL is not part of its bbolt file; counting it made the quota
/// depend on when the log was last purged (a restart replays it into memtables).
pub fn db_size(db: &DB) -> u64 {
    let mut total = 0;
    for name in STATE_CFS {
        if let Some(h) = db.cf_handle(name) {
            for prop in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                total += db.property_int_value_cf(h, prop).ok().flatten().unwrap_or(0);
            }
        }
    }
    total
}

/// An estimate of the bytes holding live data (etcd's "in use" size).
pub fn db_size_in_use(db: &DB) -> u64 {
    let mut total = 0;
    for name in STATE_CFS {
        if let Some(h) = db.cf_handle(name) {
            for prop in ["rocksdb.estimate-live-data-size", "rocksdb.cur-size-all-mem-tables"] {
                total += db.property_int_value_cf(h, prop).ok().flatten().unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CF_RAFT_LOG;
    use rocksdb::{WriteBatch, WriteOptions};

    const CRASH_DIR: &str = "RUDDER_TEST_CRASH_DIR";

    fn active_entries(db: &DB, name: &'static str) -> u64 {
        let h = cf(db, name).expect("cf");
        db.property_int_value_cf(h, "rocksdb.num-entries-active-mem-table")
            .expect("property")
            .unwrap_or(0)
    }

    /// One batch as the applier writes it: data in every state family plus the applied position.
    fn apply(db: &DB, n: u8) {
        let mut b = WriteBatch::default();
        b.put_cf(cf(db, CF_KV).expect("cf"), [b'k', n], [n]);
        b.put_cf(cf(db, CF_LEASE).expect("cf"), [b'l', n], [n]);
        b.put_cf(cf(db, CF_META).expect("cf"), b"applied", [n]);
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        db.write_opt(b, &opts).expect("write");
    }

    #[test]
    fn persist_state_flushes_every_state_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path()).expect("open");
        apply(&db, 1);
        for name in STATE_CFS {
            assert!(active_entries(&db, name) > 0, "{name} has no memtable entries");
        }
        persist_state(&db).expect("persist");
        for name in STATE_CFS {
            assert_eq!(active_entries(&db, name), 0, "{name} was not flushed");
        }
    }

    /// Child half of the next test: applies, persists, applies more, syncs a log entry, and dies.
    #[test]
    #[ignore = "run as a child process by state_comes_back_from_its_last_flush_after_a_crash"]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR) else { return };
        let db = open(Path::new(&dir)).expect("open");
        apply(&db, 1);
        persist_state(&db).expect("persist");
        apply(&db, 2);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut b = WriteBatch::default();
        b.put_cf(cf(&db, CF_RAFT_LOG).expect("cf"), b"entry", b"2");
        db.write_opt(b, &opts).expect("log write");
        // No destructor: a kill -9 would not run one either (closing would flush the memtables).
        std::process::abort();
    }

    #[test]
    fn state_comes_back_from_its_last_flush_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "backend::tests::crash_child", "--ignored", "--nocapture"])
            .env(CRASH_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("child");
        assert!(!status.success(), "the child must die, not exit");
        let db = open(dir.path()).expect("reopen");
        let get = |name, key: &[u8]| db.get_cf(cf(&db, name).expect("cf"), key).expect("get");
        // The synced log entry survives; the state is as of the flush, consistently in every family.
        assert_eq!(get(CF_RAFT_LOG, b"entry"), Some(b"2".to_vec()));
        assert_eq!(get(CF_META, b"applied"), Some(vec![1]));
        assert_eq!(get(CF_KV, &[b'k', 1]), Some(vec![1]));
        assert_eq!(get(CF_LEASE, &[b'l', 1]), Some(vec![1]));
        assert_eq!(get(CF_KV, &[b'k', 2]), None);
        assert_eq!(get(CF_LEASE, &[b'l', 2]), None);
    }
}
