//! A write transaction: every change of one main revision, staged in a RocksDB write batch, with reads
//! that see the transaction's own earlier writes (as etcd's write txns do).

use std::collections::BTreeMap;

use prost::Message;
use rocksdb::WriteBatch;
use rudder_proto::etcdserverpb::RangeRequest;
use rudder_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::index::{Change, KeyRange, Live};
use super::range::{self, Candidate, RangeOutput};
use super::revision::Revision;
use super::store::{Mvcc, MvccError};
use crate::backend;
use crate::schema::{CF_KV, CF_META, META_REVISION};

pub struct WriteTxn<'a> {
    mvcc: &'a Mvcc,
    main: i64,
    sub: i64,
    pub batch: WriteBatch,
    /// Latest state of every key this txn wrote (None = deleted).
    pending: BTreeMap<Vec<u8>, Option<KeyValue>>,
    changes: Vec<(Vec<u8>, Change, Option<Live>)>,
    events: Vec<Event>,
    /// Set for read-only txns served outside the apply path: every read observes this one revision,
    /// so a txn stays atomic while the apply path moves on underneath it.
    pinned: Option<i64>,
}

/// What a finished write txn hands back to the apply path.
pub struct WriteOutcome {
    pub batch: WriteBatch,
    /// The revision after this txn (unchanged if it wrote nothing).
    pub revision: i64,
    pub changes: Vec<(Vec<u8>, Change, Option<Live>)>,
    /// The revision's events; `prev_kv` is filled only for a put that asked for it.
    pub events: Vec<Event>,
}

/// A key a delete range removed.
pub struct Deleted {
    pub key: Vec<u8>,
    pub lease: i64,
    /// Its last value, present when the caller asked for values (or it was written in this txn).
    pub value: Option<KeyValue>,
}

impl<'a> WriteTxn<'a> {
    pub fn new(mvcc: &'a Mvcc) -> Self {
        let main = mvcc.current_revision() + 1;
        WriteTxn {
            mvcc,
            main,
            sub: 0,
            batch: WriteBatch::default(),
            pending: BTreeMap::new(),
            changes: Vec::new(),
            events: Vec::new(),
            pinned: None,
        }
    }

    /// A txn that only reads, all at the revision current now (KV.Txn without writes, served from the
    /// local applied state while writes keep being applied).
    pub fn read_only(mvcc: &'a Mvcc) -> Self {
        let mut txn = Self::new(mvcc);
        txn.pinned = Some(txn.main - 1);
        txn
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The revision reads inside this txn observe.
    pub fn revision(&self) -> i64 {
        if self.has_changes() {
            self.main
        } else {
            self.main - 1
        }
    }

    /// The latest value of `key`, including this txn's writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        if let Some(p) = self.pending.get(key) {
            return Ok(p.clone());
        }
        self.mvcc.get_latest(key)
    }

    /// The key's current life, this txn's own writes included, without reading storage.
    fn live(&self, key: &[u8]) -> Option<Live> {
        match self.pending.get(key) {
            Some(p) => p.as_ref().map(|kv| Live {
                created: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
            }),
            None => self.mvcc.live(key),
        }
    }

    /// Writes `key`. Returns the previous version's life and, if `want_prev`, its value: reading the
    /// value costs a storage read that a plain put skips (the event's `prev_kv` is then left empty and
    /// filled only if a watcher asks for it, see `watch_feed`).
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        want_prev: bool,
    ) -> Result<(Option<Live>, Option<KeyValue>), MvccError> {
        let prev_live = self.live(key);
        let prev = match prev_live {
            Some(_) if want_prev => self.get(key)?,
            _ => None,
        };
        let (create_revision, version) = match prev_live {
            Some(p) => (p.created, p.version + 1),
            None => (self.main, 1),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: self.main,
            version,
            value,
            lease,
        };
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        let cf = backend::cf(self.mvcc.db(), CF_KV)?;
        self.batch.put_cf(cf, rev.to_key(false), kv.encode_to_vec());
        let live = Live {
            created: create_revision,
            version,
            lease,
        };
        self.changes
            .push((key.to_vec(), Change { rev, tombstone: false }, Some(live)));
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv: prev.clone(),
        });
        self.pending.insert(key.to_vec(), Some(kv));
        Ok((prev_live, prev))
    }

    /// Deletes every live key in the range. Each deleted key comes back with its lease and, only when
    /// `want_values` is set (or it was written in this txn), its last value: reading values costs a storage read per key, which a large
    /// prefix delete cannot afford when nobody asked for them. The events' `prev_kv` is filled later,
    /// only if a watcher wants it (see `watch_feed`).
    pub fn delete_range(&mut self, key: &[u8], range_end: &[u8], want_values: bool) -> Result<Vec<Deleted>, MvccError> {
        let range = KeyRange::new(key, range_end);
        let candidates = self.candidates(&range, 0)?;
        let view = self.mvcc.view();
        let mut deleted = Vec::with_capacity(candidates.len());
        for c in candidates {
            deleted.push(match c {
                Candidate::Stored(key, rev) => {
                    let value = if want_values { Some(view.value(rev)?) } else { None };
                    let lease = match &value {
                        Some(kv) => kv.lease,
                        None => self.mvcc.live(&key).map(|l| l.lease).unwrap_or(0),
                    };
                    Deleted { key, lease, value }
                }
                Candidate::Pending(kv) => Deleted {
                    key: kv.key.clone(),
                    lease: kv.lease,
                    value: Some(kv),
                },
            });
        }
        drop(view);
        let cf = backend::cf(self.mvcc.db(), CF_KV)?;
        for d in &deleted {
            let rev = Revision::new(self.main, self.sub);
            self.sub += 1;
            let tomb = KeyValue {
                key: d.key.clone(),
                ..Default::default()
            };
            self.batch.put_cf(cf, rev.to_key(true), tomb.encode_to_vec());
            self.changes
                .push((d.key.clone(), Change { rev, tombstone: true }, None));
            let event_kv = KeyValue {
                key: d.key.clone(),
                mod_revision: self.main,
                ..Default::default()
            };
            // A value read here travels with the event (as a put's asked-for prev_kv does); a value
            // written earlier in this txn is always read, since the index does not hold it yet.
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(event_kv),
                prev_kv: d.value.clone(),
            });
            self.pending.insert(d.key.clone(), None);
        }
        Ok(deleted)
    }

    /// Live keys of the range at the latest revision merged with this txn's writes, in key order.
    fn candidates(&self, range: &KeyRange<'_>, rev: i64) -> Result<Vec<Candidate>, MvccError> {
        let (_view, stored) = self.mvcc.resolve(range, rev)?;
        if self.pending.is_empty() || (rev > 0 && rev < self.main) {
            return Ok(stored.into_iter().map(|(k, r)| Candidate::Stored(k, r)).collect());
        }
        let mut merged: BTreeMap<Vec<u8>, Candidate> = stored
            .into_iter()
            .map(|(k, r)| (k.clone(), Candidate::Stored(k, r)))
            .collect();
        for (k, v) in &self.pending {
            if !range.contains(k) {
                continue;
            }
            match v {
                Some(kv) => merged.insert(k.clone(), Candidate::Pending(kv.clone())),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_values().collect())
    }

    /// A Range inside the txn. A revision equal to this txn's own revision reads its pending writes.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeOutput, MvccError> {
        let own = self.has_changes() && req.revision == self.main;
        let rev = match (own, self.pinned) {
            (true, _) => 0,
            (false, Some(pinned)) if req.revision <= 0 => pinned,
            _ => req.revision,
        };
        let range = KeyRange::new(&req.key, &req.range_end);
        let candidates = self.candidates(&range, rev)?;
        let view = self.mvcc.view();
        range::finish(req, candidates, |r| view.value(r))
    }

    pub fn finish(mut self) -> Result<WriteOutcome, MvccError> {
        let revision = self.revision();
        if self.has_changes() {
            let meta = backend::cf(self.mvcc.db(), CF_META)?;
            self.batch.put_cf(meta, META_REVISION, revision.to_be_bytes());
        }
        Ok(WriteOutcome {
            batch: self.batch,
            revision,
            changes: self.changes,
            events: self.events,
        })
    }
}
