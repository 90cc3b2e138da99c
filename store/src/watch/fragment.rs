//! Splitting one large watch response into fragments, for watchers created with `fragment=true`.
//!
//! Same rule as etcd: a response that is at least `max_bytes` and has two or more events is cut into
//! consecutive pieces flagged `fragment=true`, except the last; a piece is closed before the event that
//! would make it reach `max_bytes`, but always carries at least one event.

use prost::Message;
use rudder_proto::etcdserverpb::WatchResponse;

/// Protobuf tag of `WatchResponse.events` (field 11, length-delimited): one byte.
const EVENTS_TAG_LEN: usize = 1;

/// `resp` as the sequence of messages to send (just `[resp]` when it is small enough).
pub fn fragment_response(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < max_bytes {
        return vec![resp];
    }
    let mut template = resp;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();

    let mut pieces = Vec::new();
    let mut cur = template.clone();
    let mut size = base;
    for ev in events {
        let len = ev.encoded_len();
        let ev_size = EVENTS_TAG_LEN + prost::length_delimiter_len(len) + len;
        if !cur.events.is_empty() && size + ev_size >= max_bytes {
            pieces.push(std::mem::replace(&mut cur, template.clone()));
            size = base;
        }
        size += ev_size;
        cur.events.push(ev);
    }
    cur.fragment = false;
    pieces.push(cur);
    pieces
}

#[cfg(all(test, not(rudder_loom)))]
mod tests {
    use super::*;
    use rudder_proto::mvccpb::{Event, KeyValue};

    fn event(i: usize, value_len: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; value_len],
                mod_revision: 5,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn response(n: usize, value_len: usize) -> WatchResponse {
        WatchResponse {
            watch_id: 3,
            events: (0..n).map(|i| event(i, value_len)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn small_or_single_event_responses_are_untouched() {
        assert_eq!(fragment_response(response(3, 10), 1 << 20).len(), 1);
        let one = fragment_response(response(1, 10_000), 100);
        assert_eq!(one.len(), 1);
        assert!(!one[0].fragment);
    }

    #[test]
    fn splits_in_order_with_flags_and_size_bound() {
        let original = response(50, 1000);
        let max = 4096;
        let pieces = fragment_response(original.clone(), max);
        assert!(pieces.len() > 1);
        let (last, init) = pieces.split_last().expect("pieces");
        assert!(init.iter().all(|p| p.fragment) && !last.fragment);
        for p in &pieces {
            assert!(!p.events.is_empty());
            assert_eq!(p.watch_id, 3);
            assert!(p.events.len() == 1 || p.encoded_len() < max, "piece too large");
        }
        let rejoined: Vec<Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(rejoined, original.events);
    }

    #[test]
    fn oversized_events_travel_alone() {
        let pieces = fragment_response(response(3, 10_000), 1000);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.events.len() == 1));
    }
}
