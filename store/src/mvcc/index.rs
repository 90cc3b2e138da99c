//! The in-memory key index: for every user key, the revisions at which it changed. Rebuilt from the
//! history column family at start-up, as etcd rebuilds its tree index from bbolt.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::revision::Revision;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub rev: Revision,
    pub tombstone: bool,
}

/// A live key's current life, what a put needs of the previous version (etcd's keyIndex generation
/// keeps the same): kept here so a plain put never reads the previous value from storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub created: i64,
    pub version: i64,
    pub lease: i64,
}

#[derive(Default, Debug, Clone)]
struct KeyLife {
    changes: Vec<Change>,
    /// The newest change's life; `None` after a delete.
    live: Option<Live>,
}

#[derive(Default, Debug, Clone)]
pub struct KeyIndex {
    keys: BTreeMap<Vec<u8>, KeyLife>,
}

type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A key range as etcd defines it: empty end = the single key; end "\0" = from key to the end.
#[derive(Clone, Debug)]
pub struct KeyRange<'a> {
    pub start: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub fn new(start: &'a [u8], end: &'a [u8]) -> Self {
        Self { start, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            return key == self.start;
        }
        key >= self.start && (self.end == [0] || key < self.end)
    }

    fn bounds(&self) -> Option<Bounds<'a>> {
        if self.end.is_empty() {
            return Some((Bound::Included(self.start), Bound::Included(self.start)));
        }
        if self.end == [0] {
            return Some((Bound::Included(self.start), Bound::Unbounded));
        }
        if self.end <= self.start {
            return None;
        }
        Some((Bound::Included(self.start), Bound::Excluded(self.end)))
    }
}

/// The live revision of a key at `at`, given its change list.
fn live_at(changes: &[Change], at: i64) -> Option<Revision> {
    let idx = changes.partition_point(|c| c.rev.main <= at);
    if idx == 0 {
        return None;
    }
    let c = changes[idx - 1];
    (!c.tombstone).then_some(c.rev)
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records a change, in revision order; `live` is the key's life after it (`None` for a delete).
    pub fn record(&mut self, key: &[u8], rev: Revision, tombstone: bool, live: Option<Live>) {
        let life = match self.keys.get_mut(key) {
            Some(c) => c,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        life.changes.push(Change { rev, tombstone });
        life.live = if tombstone { None } else { live };
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        self.keys.get(key).and_then(|c| live_at(&c.changes, at))
    }

    /// The key's current life, if it is live now.
    pub fn live(&self, key: &[u8]) -> Option<Live> {
        self.keys.get(key).and_then(|c| c.live)
    }

    /// Keys live at `at` inside the range, in key order, with their revision.
    pub fn range<'s>(&'s self, range: &KeyRange<'_>, at: i64) -> Box<dyn Iterator<Item = (&'s [u8], Revision)> + 's> {
        let Some((lo, hi)) = range.bounds() else {
            return Box::new(std::iter::empty());
        };
        Box::new(
            self.keys
                .range::<[u8], _>((lo, hi))
                .filter_map(move |(k, c)| live_at(&c.changes, at).map(|r| (k.as_slice(), r))),
        )
    }

    /// The newest live revision of `key` strictly before `rev` inside the same life of the key
    /// (none if the key was deleted or did not exist just before `rev`): the event's `prev_kv`.
    pub fn previous(&self, key: &[u8], rev: Revision) -> Option<Revision> {
        let changes = &self.keys.get(key)?.changes;
        let idx = changes.partition_point(|c| c.rev < rev);
        if idx == 0 {
            return None;
        }
        let c = changes[idx - 1];
        (!c.tombstone).then_some(c.rev)
    }

    /// Drops every change a read at or after `at` can no longer see and returns them, so the caller
    /// deletes the same revisions from storage.
    pub fn compact(&mut self, at: i64) -> Vec<Change> {
        let mut removed = Vec::new();
        self.keys.retain(|_, life| {
            let changes = &mut life.changes;
            let idx = changes.partition_point(|c| c.rev.main <= at);
            if idx == 0 {
                return true;
            }
            // Keep the newest change at or before `at` unless it is a tombstone.
            let keep_from = if changes[idx - 1].tombstone { idx } else { idx - 1 };
            removed.extend(changes.drain(..keep_from));
            !changes.is_empty()
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn get_and_range_at_revisions() {
        let mut ix = KeyIndex::default();
        ix.record(b"a", r(2), false, None);
        ix.record(b"b", r(3), false, None);
        ix.record(b"a", r(4), true, None);
        ix.record(b"a", r(5), false, None);
        assert_eq!(ix.get(b"a", 1), None);
        assert_eq!(ix.get(b"a", 3), Some(r(2)));
        assert_eq!(ix.get(b"a", 4), None);
        assert_eq!(ix.get(b"a", 9), Some(r(5)));
        let all: Vec<_> = ix
            .range(&KeyRange::new(b"\0", b"\0"), 4)
            .map(|(k, _)| k.to_vec())
            .collect();
        assert_eq!(all, vec![b"b".to_vec()]);
        assert_eq!(ix.previous(b"a", r(5)), None);
        assert_eq!(ix.previous(b"a", r(4)), Some(r(2)));
    }

    #[test]
    fn compaction_keeps_what_reads_can_see() {
        let mut ix = KeyIndex::default();
        ix.record(b"a", r(2), false, None);
        ix.record(b"a", r(3), false, None);
        ix.record(b"b", r(4), false, None);
        ix.record(b"b", r(5), true, None);
        let removed = ix.compact(5);
        assert_eq!(removed.len(), 3);
        assert_eq!(ix.get(b"a", 5), Some(r(3)));
        assert_eq!(ix.get(b"b", 5), None);
        assert_eq!(ix.len(), 1);
    }
}
