//! What a watcher selects: its key range (etcd range rules) and its event filters.

use rudder_proto::etcdserverpb::watch_create_request::FilterType;
use rudder_proto::mvccpb::event::EventType;
use rudder_proto::mvccpb::Event;

/// etcd's error text for a range with `key >= range_end`.
pub(crate) const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// A watched key range, normalised the way etcd's watch server does (empty key = `"\0"`, the
/// smallest key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRange {
    Single(Vec<u8>),
    /// Every key `>= .0` (`range_end == "\0"`).
    FromKey(Vec<u8>),
    /// `[start, end)`, `start < end`.
    Range(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// `None` when the range is empty (`key >= range_end`), which etcd rejects.
    pub(crate) fn from_request(key: &[u8], range_end: &[u8]) -> Option<Self> {
        let key = if key.is_empty() { vec![0] } else { key.to_vec() };
        match range_end {
            [] => Some(Self::Single(key)),
            [0] => Some(Self::FromKey(key)),
            end if key.as_slice() < end => Some(Self::Range(key, end.to_vec())),
            _ => None,
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match self {
            Self::Single(key) => k == key.as_slice(),
            Self::FromKey(key) => k >= key.as_slice(),
            Self::Range(start, end) => k >= start.as_slice() && k < end.as_slice(),
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Self::Single(key) | Self::FromKey(key) | Self::Range(key, _) => key,
        }
    }

    /// `range_end` in etcd's encoding, for [`super::EventHistory::events`].
    pub(crate) fn range_end(&self) -> &[u8] {
        match self {
            Self::Single(_) => &[],
            Self::FromKey(_) => &[0],
            Self::Range(_, end) => end,
        }
    }
}

/// Per-watcher event selection: key range, NOPUT/NODELETE, and whether `prev_kv` is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Selector {
    /// `filters` are raw `WatchCreateRequest.filters` values; unknown ones are ignored like etcd does.
    pub(crate) fn new(range: KeyRange, filters: &[i32], prev_kv: bool) -> Self {
        let mut selector = Self {
            range,
            no_put: false,
            no_delete: false,
            prev_kv,
        };
        for filter in filters {
            match FilterType::try_from(*filter) {
                Ok(FilterType::Noput) => selector.no_put = true,
                Ok(FilterType::Nodelete) => selector.no_delete = true,
                Err(_) => {}
            }
        }
        selector
    }

    pub(crate) fn wants_prev_kv(&self) -> bool {
        self.prev_kv
    }

    /// The copy of `ev` this watcher should receive, if any.
    pub(crate) fn select(&self, ev: &Event) -> Option<Event> {
        let kv = ev.kv.as_ref()?;
        if !self.range.contains(&kv.key) {
            return None;
        }
        let is_put = ev.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return None;
        }
        Some(Event {
            r#type: ev.r#type,
            kv: Some(kv.clone()),
            prev_kv: if self.prev_kv { ev.prev_kv.clone() } else { None },
        })
    }

    /// The events of `events` this watcher should receive (empty when none match).
    pub(crate) fn select_all<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> Vec<Event> {
        events.into_iter().filter_map(|ev| self.select(ev)).collect()
    }
}

#[cfg(all(test, not(rudder_loom)))]
mod tests {
    use super::*;
    use rudder_proto::mvccpb::KeyValue;

    fn ev(kind: EventType, key: &[u8]) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                ..Default::default()
            }),
            prev_kv: Some(KeyValue::default()),
        }
    }

    #[test]
    fn etcd_range_rules() {
        let single = KeyRange::from_request(b"a", b"").expect("single");
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let prefix = KeyRange::from_request(b"a", b"b").expect("range");
        assert!(prefix.contains(b"a") && prefix.contains(b"azz") && !prefix.contains(b"b"));
        let from = KeyRange::from_request(b"m", b"\0").expect("from key");
        assert!(from.contains(b"m") && from.contains(b"zz") && !from.contains(b"a"));
        let all = KeyRange::from_request(b"", b"\0").expect("all keys");
        assert!(all.contains(b"\0") && all.contains(b"a"));
        assert_eq!(all.key(), b"\0");
        assert_eq!(KeyRange::from_request(b"b", b"a"), None);
        assert_eq!(KeyRange::from_request(b"a", b"a"), None);
    }

    #[test]
    fn filters_and_prev_kv() {
        let range = KeyRange::from_request(b"", b"\0").expect("all");
        let no_put = Selector::new(range.clone(), &[FilterType::Noput as i32], false);
        assert!(no_put.select(&ev(EventType::Put, b"a")).is_none());
        let del = no_put.select(&ev(EventType::Delete, b"a")).expect("delete passes");
        assert!(del.prev_kv.is_none(), "prev_kv stripped when not requested");
        let no_delete = Selector::new(range, &[FilterType::Nodelete as i32, 99], true);
        assert!(no_delete.select(&ev(EventType::Delete, b"a")).is_none());
        let put = no_delete.select(&ev(EventType::Put, b"a")).expect("put passes");
        assert!(put.prev_kv.is_some(), "prev_kv kept when requested");
    }
}
