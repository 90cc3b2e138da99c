//! The Raft log in RocksDB, with group commit.
//!
//! `append` writes entries into the WAL and returns at once (they are readable); a single flusher thread
//! fsyncs the WAL and then completes every append that was waiting, so many writes share one fsync. An
//! entry is reported durable, and therefore can be acknowledged, only after the fsync that covers it.
//!
//! When the log is idle (no fsync in flight and nothing appended for a while) `append` syncs inline
//! instead: a lone write then skips two thread hand-offs (to the flusher and back to openraft's core),
//! and under load appends arrive back to back and still share the flusher's fsyncs. A leader with
//! followers never syncs inline: openraft replicates an entry only after `append` returns, and the
//! leader's fsync should overlap the followers' rather than precede them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::{decode, encode, Entry, LogId, TypeConfig, Vote};
use crate::backend;
use crate::schema::{CF_RAFT_LOG, CF_RAFT_META, META_LAST_PURGED, META_VOTE};

/// An append this long after the previous one returned, with no fsync in flight, syncs inline. Appends
/// queued behind a sync arrive within microseconds of it, so they take the flusher and group.
const IDLE_GAP: Duration = Duration::from_micros(100);

/// How many of the latest entries (and bytes of them) stay in memory for the reads that follow an append.
const RECENT_ENTRIES: usize = 4096;
const RECENT_BYTES: usize = 16 << 20;

/// The latest appended entries, contiguous and ending at the last entry in the log. openraft reads each
/// entry back right after appending it (to apply it, and on a leader to replicate it); from RocksDB every
/// such read built and positioned an iterator, a few percent of a write's CPU.
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| entry.log_id.index == last.log_id.index + 1);
        if !follows {
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES || (self.bytes > RECENT_BYTES && self.entries.len() > 1) {
            if let Some((_, n)) = self.entries.pop_front() {
                self.bytes -= n;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the entries after `index` (None: all of them).
    fn truncate_after(&mut self, index: Option<u64>) {
        while let Some((e, n)) = self.entries.back() {
            if index.is_some_and(|i| e.log_id.index <= i) {
                break;
            }
            self.bytes -= *n;
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while let Some((e, n)) = self.entries.front() {
            if e.log_id.index > index {
                break;
            }
            self.bytes -= *n;
            self.entries.pop_front();
        }
    }

    /// The entries in `[start, end)` (end None: to the last one), if all of them are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let take = match end {
            Some(end) => {
                let want = usize::try_from(end.saturating_sub(start)).ok()?;
                if skip.checked_add(want)? > self.entries.len() {
                    return None; // asks past the last entry: let the log answer
                }
                want
            }
            None => self.entries.len().saturating_sub(skip),
        };
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    recent: Arc<parking_lot::Mutex<Recent>>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
    /// Appends handed to the flusher and not yet completed.
    in_flight: Arc<AtomicUsize>,
    /// When the previous `append` returned (per handle: only openraft's core appends).
    last_append: Option<Instant>,
    /// Whether an idle append may sync inline (see the module docs); kept current by the node.
    inline_sync: Arc<AtomicBool>,
    /// UNSAFE test-only bug injection (`ack-before-fsync`): appends are reported durable at once.
    unsafe_ack_before_fsync: bool,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    /// `unsafe_ack_before_fsync`: UNSAFE test-only bug injection; see [`LogStore::append`].
    pub fn new(db: Arc<DB>, unsafe_ack_before_fsync: bool) -> io::Result<Self> {
        backend::cf(&db, CF_RAFT_LOG)?;
        backend::cf(&db, CF_RAFT_META)?;
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let flush_db = db.clone();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let flushing = in_flight.clone();
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || {
                // Each pass drains everything queued while the previous fsync ran: that is the group commit.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        waiting.push(more);
                    }
                    let res = flush_db.flush_wal(true).map_err(io_err);
                    let n = waiting.len();
                    for cb in waiting {
                        cb.io_completed(res.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.to_string())));
                    }
                    flushing.fetch_sub(n, Ordering::AcqRel);
                }
            })?;
        Ok(LogStore {
            db,
            recent: Arc::default(),
            flusher: tx,
            in_flight,
            last_append: None,
            inline_sync: Arc::new(AtomicBool::new(false)),
            unsafe_ack_before_fsync,
        })
    }

    /// The switch for inline syncs of idle appends, for the node to set while it is a single member or
    /// a follower (and to clear while it leads other members).
    pub fn inline_sync_switch(&self) -> Arc<AtomicBool> {
        self.inline_sync.clone()
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let cf = backend::cf(&self.db, CF_RAFT_META)?;
        match self.db.get_cf(cf, key).map_err(io_err)? {
            Some(raw) => decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T, sync: bool) -> io::Result<()> {
        let cf = backend::cf(&self.db, CF_RAFT_META)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, encode(v)?);
        self.db.write_opt(batch, &opts).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(hit) = self.recent.lock().get(start, end) {
            return Ok(hit);
        }
        let cf = backend::cf(&self.db, CF_RAFT_LOG)?;
        let mut out = Vec::new();
        let from = index_key(start);
        for item in self.db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(io_err)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&index) {
                break;
            }
            out.push(decode::<Entry>(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.meta(META_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let cf = backend::cf(&self.db, CF_RAFT_LOG)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(io_err)?;
                Some(decode::<Entry>(&v)?.log_id)
            }
            None => None,
        };
        let last_purged_log_id: Option<LogId> = self.meta(META_LAST_PURGED)?;
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        // A vote must be on disk before it is acted on.
        self.put_meta(META_VOTE, vote, true)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let cf = backend::cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let raw = encode(&entry)?;
            batch.put_cf(cf, index_key(entry.log_id.index), &raw);
            appended.push((entry, raw.len()));
        }
        self.db.write(batch).map_err(io_err)?;
        {
            let mut recent = self.recent.lock();
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }
        if self.unsafe_ack_before_fsync {
            // UNSAFE test-only bug injection (ack-before-fsync): durable as far as openraft knows, while
            // the entries are still in the process's WAL buffer (the database was opened with
            // `backend::open_with(.., true)`), so a kill -9 loses them.
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let now = Instant::now();
        let idle = self.inline_sync.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.last_append.is_none_or(|t| now.duration_since(t) >= IDLE_GAP);
        let res = if idle {
            callback.io_completed(self.db.flush_wal(true).map_err(io_err));
            Ok(())
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            self.flusher.send(callback).map_err(|_| {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                io::Error::other("log flusher stopped")
            })
        };
        self.last_append = Some(Instant::now());
        res
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.recent.lock().truncate_after(last_log_id.map(|l| l.index));
        let cf = backend::cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(from), index_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Record the purge point first: entries at or before it are ignored even if still present.
        self.put_meta(META_LAST_PURGED, &log_id, true)?;
        self.recent.lock().purge(log_id.index);
        let cf = backend::cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(0), index_key(log_id.index + 1));
        self.db.write(batch).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::blank_ent;

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    async fn append(store: &mut LogStore, term: u64, range: std::ops::RangeInclusive<u64>) {
        let entries: Vec<Entry> = range.map(|i| blank_ent::<TypeConfig>(term, 1, i)).collect();
        store.append(entries, IOFlushed::noop()).await.expect("append");
    }

    /// The in-memory tail answers exactly what the log on disk answers, through truncation and purge.
    #[tokio::test]
    async fn recent_entries_agree_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = backend::open(dir.path()).expect("open");
        let mut store = LogStore::new(db.clone(), false).expect("store");
        append(&mut store, 1, 1..=10).await;
        store
            .truncate_after(Some(blank_ent::<TypeConfig>(1, 1, 6).log_id))
            .await
            .expect("truncate");
        append(&mut store, 2, 7..=9).await;
        store
            .purge(blank_ent::<TypeConfig>(1, 1, 3).log_id)
            .await
            .expect("purge");
        // A second handle on the same database starts with nothing in memory: it reads RocksDB.
        let mut disk = LogStore::new(db, false).expect("store");
        let ranges: Vec<(Bound<u64>, Bound<u64>)> = vec![
            (Bound::Included(4), Bound::Unbounded),
            (Bound::Included(4), Bound::Excluded(8)),
            (Bound::Included(6), Bound::Included(9)),
            (Bound::Included(8), Bound::Included(20)),
            (Bound::Included(1), Bound::Excluded(5)),
            (Bound::Included(10), Bound::Unbounded),
        ];
        for r in ranges {
            let cached = store.try_get_log_entries(r).await.expect("cached");
            let stored = disk.try_get_log_entries(r).await.expect("stored");
            assert_eq!(indexes(&cached), indexes(&stored), "{r:?}");
        }
        let all = store.try_get_log_entries(4..).await.expect("all");
        assert_eq!(indexes(&all), vec![(1, 4), (1, 5), (1, 6), (2, 7), (2, 8), (2, 9)]);
    }

    #[test]
    fn recent_entries_are_bounded_and_contiguous() {
        let mut r = Recent::default();
        for i in 1..=(RECENT_ENTRIES as u64 + 10) {
            r.push(blank_ent::<TypeConfig>(1, 1, i), 10);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(r.first(), Some(11));
        assert!(r.get(5, Some(20)).is_none(), "evicted entries come from the log");
        // An entry that does not follow the last one (a snapshot install skipped ahead) starts over.
        r.push(blank_ent::<TypeConfig>(2, 1, 10_000), 10);
        assert_eq!((r.entries.len(), r.bytes, r.first()), (1, 10, Some(10_000)));
        r.truncate_after(None);
        assert_eq!((r.entries.len(), r.bytes), (0, 0));
    }
}
