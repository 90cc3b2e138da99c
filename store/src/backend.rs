//! Opening the RocksDB instance that holds both the Raft log and the state machine.
//!
//! One database with several column families shares one WAL, so a synced log append also makes every
//! earlier (unsynced) state-machine write durable: after a crash the state machine is always a prefix of
//! the durable log.

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
    // A single writer thread applies; let concurrent log appends share a WAL write.
    opts.set_enable_pipelined_write(true);
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
