//! The MVCC store: the key index, the current and compacted revisions, and reads from RocksDB.

use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use rocksdb::{IteratorMode, DB};
use rudder_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::index::{Change, KeyIndex, KeyRange, Live};
use super::revision::Revision;
use crate::backend::{self, BackendError};
use crate::schema::{CF_KV, CF_META, META_FINISHED_COMPACT, META_REVISION};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("storage: {0}")]
    Storage(String),
}

impl From<BackendError> for MvccError {
    fn from(e: BackendError) -> Self {
        MvccError::Storage(e.to_string())
    }
}

impl From<rocksdb::Error> for MvccError {
    fn from(e: rocksdb::Error) -> Self {
        MvccError::Storage(e.to_string())
    }
}

/// (lease id, key) for every live key attached to a lease.
pub type LeaseAttachments = Vec<(i64, Vec<u8>)>;
/// A live key and the revision of its visible version.
pub type KeyAt = (Vec<u8>, Revision);

pub(super) struct State {
    pub index: KeyIndex,
    /// The newest revision readers may see.
    pub current: i64,
    /// Reads below this revision are refused.
    pub compacted: i64,
}

pub struct Mvcc {
    pub(super) db: Arc<DB>,
    pub(super) state: RwLock<State>,
}

/// A consistent read position: the revision and a RocksDB snapshot that holds every value the index
/// pointed to when it was taken.
pub struct ReadView<'a> {
    pub revision: i64,
    pub compacted: i64,
    snapshot: rocksdb::Snapshot<'a>,
    db: &'a DB,
}

impl ReadView<'_> {
    pub fn value(&self, rev: Revision) -> Result<KeyValue, MvccError> {
        let cf = backend::cf(self.db, CF_KV)?;
        let raw = self
            .snapshot
            .get_cf(cf, rev.to_key(false))?
            .ok_or_else(|| MvccError::Storage(format!("revision {}_{} missing from history", rev.main, rev.sub)))?;
        KeyValue::decode(raw.as_slice()).map_err(|e| MvccError::Storage(format!("decoding key value: {e}")))
    }
}

pub(crate) fn decode_i64(raw: Option<Vec<u8>>) -> i64 {
    raw.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

impl Mvcc {
    /// Opens the store and rebuilds the key index from the history. Returns the store and, for every live
    /// key attached to a lease, the (lease, key) pair so the lessor can rebuild its attachments.
    pub fn open(db: Arc<DB>) -> Result<(Self, LeaseAttachments), MvccError> {
        let (state, attachments) = Self::load(&db)?;
        Ok((
            Mvcc {
                db,
                state: RwLock::new(state),
            },
            attachments,
        ))
    }

    /// Rebuilds the in-memory state after the column families were replaced (snapshot install).
    pub fn reload(&self) -> Result<LeaseAttachments, MvccError> {
        let (state, attachments) = Self::load(&self.db)?;
        *self.state.write() = state;
        Ok(attachments)
    }

    fn load(db: &DB) -> Result<(State, LeaseAttachments), MvccError> {
        let kv_cf = backend::cf(db, CF_KV)?;
        let meta_cf = backend::cf(db, CF_META)?;
        let mut index = KeyIndex::default();
        let mut leases: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
        let mut current = 1;
        for item in db.iterator_cf(kv_cf, IteratorMode::Start) {
            let (k, v) = item?;
            let Some((rev, tombstone)) = Revision::from_key(&k) else {
                return Err(MvccError::Storage("malformed revision key in history".into()));
            };
            let kv = KeyValue::decode(&*v).map_err(|e| MvccError::Storage(format!("decoding history: {e}")))?;
            let live = Live {
                created: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            };
            index.record(&kv.key, rev, tombstone, Some(live));
            if tombstone || kv.lease == 0 {
                leases.remove(&kv.key);
            } else {
                leases.insert(kv.key.clone(), kv.lease);
            }
            current = current.max(rev.main);
        }
        current = current.max(decode_i64(db.get_cf(meta_cf, META_REVISION)?));
        let compacted = db
            .get_cf(meta_cf, META_FINISHED_COMPACT)?
            .and_then(|raw| Revision::from_key(&raw))
            .map(|(r, _)| r.main)
            .unwrap_or(0);
        let attachments = leases.into_iter().map(|(k, l)| (l, k)).collect();
        Ok((
            State {
                index,
                current,
                compacted,
            },
            attachments,
        ))
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn current_revision(&self) -> i64 {
        self.state.read().current
    }

    pub fn compacted_revision(&self) -> i64 {
        self.state.read().compacted
    }

    pub fn key_count(&self) -> usize {
        self.state.read().index.len()
    }

    /// Checks `rev` (<= 0 means current) against the readable window and returns the effective revision.
    pub(super) fn check_revision(state: &State, rev: i64) -> Result<i64, MvccError> {
        if rev <= 0 {
            return Ok(state.current);
        }
        if rev > state.current {
            return Err(MvccError::FutureRevision);
        }
        if rev < state.compacted {
            return Err(MvccError::Compacted {
                compact_revision: state.compacted,
            });
        }
        Ok(rev)
    }

    /// Resolves the live (key, revision) pairs of a range at `rev` and pins a view to read their values.
    pub fn resolve(&self, range: &KeyRange<'_>, rev: i64) -> Result<(ReadView<'_>, Vec<KeyAt>), MvccError> {
        let state = self.state.read();
        let at = Self::check_revision(&state, rev)?;
        let entries = state.index.range(range, at).map(|(k, r)| (k.to_vec(), r)).collect();
        let view = ReadView {
            revision: state.current,
            compacted: state.compacted,
            snapshot: self.db.snapshot(),
            db: &self.db,
        };
        Ok((view, entries))
    }

    /// A view of the latest state, to read values by revision.
    pub fn view(&self) -> ReadView<'_> {
        let state = self.state.read();
        ReadView {
            revision: state.current,
            compacted: state.compacted,
            snapshot: self.db.snapshot(),
            db: &self.db,
        }
    }

    /// The latest value of one key, for the apply path. No snapshot is pinned: only the apply path
    /// writes or compacts, so a revision the index names stays readable while it runs.
    pub fn get_latest(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        let Some(rev) = self.state.read().index.get(key, i64::MAX) else {
            return Ok(None);
        };
        let cf = backend::cf(&self.db, CF_KV)?;
        let raw = self
            .db
            .get_cf(cf, rev.to_key(false))?
            .ok_or_else(|| MvccError::Storage(format!("revision {}_{} missing from history", rev.main, rev.sub)))?;
        KeyValue::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| MvccError::Storage(format!("decoding key value: {e}")))
    }

    /// The key's current life (create revision, version, lease) if it is live, without reading storage.
    pub fn live(&self, key: &[u8]) -> Option<Live> {
        self.state.read().index.live(key)
    }

    /// The value `key` had just before main revision `main` (its `prev_kv` in an event of `main`), if
    /// it was live then and that version is not compacted away.
    pub fn previous_value(&self, key: &[u8], main: i64) -> Result<Option<KeyValue>, MvccError> {
        let Some(rev) = self.state.read().index.previous(key, Revision::new(main, 0)) else {
            return Ok(None);
        };
        let cf = backend::cf(&self.db, CF_KV)?;
        match self.db.get_cf(cf, rev.to_key(false))? {
            Some(raw) => KeyValue::decode(raw.as_slice())
                .map(Some)
                .map_err(|e| MvccError::Storage(format!("decoding key value: {e}"))),
            None => Ok(None),
        }
    }

    /// Makes a committed write visible to readers. Called by the apply path after the batch is written.
    pub(crate) fn publish(&self, revision: i64, changes: &[(Vec<u8>, Change, Option<Live>)]) {
        let mut state = self.state.write();
        for (key, c, live) in changes {
            state.index.record(key, c.rev, c.tombstone, *live);
        }
        state.current = state.current.max(revision);
    }

    /// Removes from the index every change invisible at `at` and returns the storage keys to delete.
    pub(crate) fn compact_index(&self, at: i64) -> Vec<Vec<u8>> {
        let mut state = self.state.write();
        state.compacted = state.compacted.max(at);
        state
            .index
            .compact(at)
            .into_iter()
            .map(|c| c.rev.to_key(c.tombstone))
            .collect()
    }

    /// Events with main revision in [from, to] for keys in the range, with prev_kv, stopping at a
    /// revision boundary once `max_revisions` revisions were scanned. Also returns the last revision
    /// fully covered (`to` unless it stopped early).
    pub fn events(
        &self,
        from: i64,
        to: i64,
        range: &KeyRange<'_>,
        max_revisions: usize,
    ) -> Result<(Vec<Event>, i64), MvccError> {
        let (compacted, snapshot) = {
            let state = self.state.read();
            (state.compacted, self.db.snapshot())
        };
        if from < compacted {
            return Err(MvccError::Compacted {
                compact_revision: compacted,
            });
        }
        let cf = backend::cf(&self.db, CF_KV)?;
        let start = Revision::new(from, 0).to_key(false);
        let mut out: Vec<Event> = Vec::new();
        let mut revisions = 0usize;
        let mut last_main = 0;
        let mut through = to;
        for item in snapshot.iterator_cf(cf, IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            let Some((rev, tombstone)) = Revision::from_key(&k) else {
                continue;
            };
            if rev.main > to {
                break;
            }
            if rev.main != last_main {
                if revisions >= max_revisions {
                    through = rev.main - 1;
                    break;
                }
                revisions += 1;
                last_main = rev.main;
            }
            let mut kv = KeyValue::decode(&*v).map_err(|e| MvccError::Storage(format!("decoding history: {e}")))?;
            if !range.contains(&kv.key) {
                continue;
            }
            let prev_rev = self.state.read().index.previous(&kv.key, rev);
            let prev_kv = match prev_rev {
                Some(p) => match snapshot.get_cf(cf, p.to_key(false))? {
                    Some(raw) => KeyValue::decode(raw.as_slice()).ok(),
                    None => None,
                },
                None => None,
            };
            let kind = if tombstone {
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            out.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        Ok((out, through))
    }
}
