//! `etcdctl watch`: history replay with --rev, --prefix, --prev-kv, ranges, interactive mode, live
//! events in order, and cancellation on a compacted revision.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = LINE_TIMEOUT;

/// Make sure a freshly started (non --rev) watch on `key` is registered: keep writing unique
/// sentinel values until the watch prints one, then consume output up to that value.
fn sync_watch(s: &Server, w: &mut Running, key: &str) {
    for i in 0..100 {
        let val = format!("sync-{i}");
        s.ctl_ok(&["put", key, &val]);
        if let Some(first) = w.next_line(Duration::from_millis(300)) {
            assert_eq!(first, "PUT", "unexpected output while syncing: {}", w.transcript_text());
            // Skip the remaining lines of this and any earlier sentinel events (with --prev-kv an
            // event has 5 lines, otherwise 3) up to our value, which is the last line printed.
            w.wait_for_line(&format!("sentinel value {val}"), T, |l| l == val);
            return;
        }
    }
    w.fail("watch never observed the sentinel key");
}

#[test]
fn watch_replays_history_with_prefix_and_prev_kv() {
    let s = Server::start_default();
    s.ctl_ok(&["put", "w/a", "1"]); // 2
    s.ctl_ok(&["put", "other", "x"]); // 3
    s.ctl_ok(&["put", "w/b", "2"]); // 4
    s.ctl_ok(&["put", "w/a", "11"]); // 5
    s.ctl_ok(&["del", "w/a"]); // 6
    s.ctl_ok(&["put", "w/c", ""]); // 7

    // Replay from revision 3 with prev-kv: every event under w/ since then, in revision order.
    let mut w = s.ctl_spawn(&["watch", "--prefix", "w/", "--rev=3", "--prev-kv"]);
    w.expect_lines(
        &[
            "PUT", "w/b", "2", // no prev kv: created at 4
            "PUT", "w/a", "1", "w/a", "11", // prev kv then kv
            "DELETE", "w/a", "11", "w/a", "", // prev kv then the tombstone (empty value)
            "PUT", "w/c", "",
        ],
        T,
    );
    // Then it continues live.
    s.ctl_ok(&["put", "w/b", "22"]);
    s.ctl_ok(&["put", "not-w", "ignored"]);
    s.ctl_ok(&["put", "w/d", "4"]);
    w.expect_lines(&["PUT", "w/b", "2", "w/b", "22", "PUT", "w/d", "4"], T);
    // A live prefix delete that did not ask for previous values: the watcher still gets them, one
    // event per key in key order, all in the delete's revision.
    assert_eq!(s.ctl_ok(&["del", "--prefix", "w/"]), "3\n");
    w.expect_lines(
        &[
            "DELETE", "w/b", "22", "w/b", "", "DELETE", "w/c", "", "w/c", "", "DELETE", "w/d", "4", "w/d", "",
        ],
        T,
    );
    w.expect_silence(Duration::from_millis(300));
    drop(w);

    // Without --prev-kv, from the very first revision, a single key.
    let mut w = s.ctl_spawn(&["watch", "w/a", "--rev=1"]);
    w.expect_lines(&["PUT", "w/a", "1", "PUT", "w/a", "11", "DELETE", "w/a", ""], T);
    w.expect_silence(Duration::from_millis(300));
    drop(w);

    // JSON output: revisions and event types as etcdctl prints the clientv3 WatchResponse.
    let mut w = s.ctl_spawn(&["watch", "--prefix", "w/", "--rev=5", "-w", "json"]);
    let line = w.expect_next(T);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let events = v["Events"].as_array().unwrap_or_else(|| panic!("no Events: {v}"));
    let mut summary: Vec<(i64, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_i64().unwrap_or(0),
                kv_of(&e["kv"]).key,
                kv_of(&e["kv"]).mod_revision,
            )
        })
        .collect();
    // Replayed history may be split over several responses; collect until the prefix delete (11).
    while summary.last().map(|e| e.2) != Some(11) {
        let line = w.expect_next(T);
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for e in v["Events"].as_array().into_iter().flatten() {
            summary.push((
                e["type"].as_i64().unwrap_or(0),
                kv_of(&e["kv"]).key,
                kv_of(&e["kv"]).mod_revision,
            ));
        }
    }
    assert_eq!(
        summary,
        vec![
            (0, "w/a".to_string(), 5),
            (1, "w/a".to_string(), 6),
            (0, "w/c".to_string(), 7),
            (0, "w/b".to_string(), 8),
            (0, "w/d".to_string(), 10),
            (1, "w/b".to_string(), 11),
            (1, "w/c".to_string(), 11),
            (1, "w/d".to_string(), 11),
        ],
        "{v}"
    );
    assert!(v["Header"]["revision"].as_i64().unwrap_or(0) >= 7, "{v}");
}

#[test]
fn plain_watch_sees_live_events_in_order() {
    let s = Server::start_default();
    let mut w = s.ctl_spawn(&["watch", "live"]);
    sync_watch(&s, &mut w, "live");

    for i in 0..20 {
        s.ctl_ok(&["put", "live", &format!("v{i}")]);
        if i % 5 == 4 {
            s.ctl_ok(&["del", "live"]);
        }
        s.ctl_ok(&["put", "live-not-watched", "x"]);
    }
    for i in 0..20 {
        w.expect_lines(&["PUT", "live", &format!("v{i}")], T);
        if i % 5 == 4 {
            w.expect_lines(&["DELETE", "live", ""], T);
        }
    }
    w.expect_silence(Duration::from_millis(300));

    // A txn touching the key produces its events too.
    let out = s.ctl_stdin(&["txn"], b"\nput live fromtxn\nput live-not-watched y\n\n\n");
    assert!(out.success(), "{out}");
    w.expect_lines(&["PUT", "live", "fromtxn"], T);

    // Range watch [r1, r3) with a concurrent writer.
    let mut rw = s.ctl_spawn(&["watch", "r1", "r3"]);
    sync_watch(&s, &mut rw, "r1");
    let writer = {
        let keys = ["r0", "r1", "r2", "r3", "r2", "r1"];
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), format!("{i}")))
            .collect::<Vec<_>>()
    };
    for (k, v) in &writer {
        s.ctl_ok(&["put", k, v]);
    }
    rw.expect_lines(
        &["PUT", "r1", "1", "PUT", "r2", "2", "PUT", "r2", "4", "PUT", "r1", "5"],
        T,
    );
    rw.expect_silence(Duration::from_millis(300));
}

#[test]
fn interactive_watch() {
    let s = Server::start_default();
    s.ctl_ok(&["put", "wi/old", "before"]);
    let rev = s.revision();

    let mut w = s.ctl_spawn(&["watch", "-i"]);
    // Interactive mode takes `watch ...` lines on stdin; several watches share one stream.
    w.write_line(&format!("watch wi/ --prefix --rev={rev}"));
    w.expect_lines(&["PUT", "wi/old", "before"], T);
    w.write_line("watch solo --prev-kv");
    sync_watch(&s, &mut w, "solo");

    s.ctl_ok(&["put", "wi/x", "1"]);
    s.ctl_ok(&["put", "solo", "final"]);
    s.ctl_ok(&["del", "wi/x"]);
    // Events arrive in revision order across both watches.
    let got: Vec<String> = (0..11).map(|_| w.expect_next(T)).collect();
    assert_eq!(&got[..5], ["PUT", "wi/x", "1", "PUT", "solo"], "{got:?}");
    assert!(
        got[5].starts_with("sync-"),
        "prev value of solo should be the last sentinel: {got:?}"
    );
    assert_eq!(&got[6..], ["solo", "final", "DELETE", "wi/x", ""], "{got:?}");
    w.expect_silence(Duration::from_millis(300));

    // Closing stdin ends interactive mode.
    w.close_stdin();
    w.wait(Duration::from_secs(10));
    w.wait_for_stderr("Error reading watch request line: EOF", Duration::from_secs(5));
}

#[test]
fn watch_on_compacted_revision_is_canceled() {
    let s = Server::start_default();
    for i in 0..5 {
        s.ctl_ok(&["put", "cw", &format!("{i}")]); // 2..=6
    }
    s.ctl_ok(&["compact", "5"]);
    let mut w = s.ctl_spawn(&["watch", "cw", "--rev=2"]);
    let st = w.wait(Duration::from_secs(20));
    assert!(
        !st.success(),
        "watch on a compacted revision must fail: {}",
        w.transcript_text()
    );
    let line = w.wait_for_stderr("watch was canceled", T);
    assert_eq!(
        line.trim_end(),
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)",
        "{}",
        w.transcript_text()
    );
    // Watching at the compaction revision itself is fine and replays it.
    let mut w = s.ctl_spawn(&["watch", "cw", "--rev=5"]);
    w.expect_lines(&["PUT", "cw", "3", "PUT", "cw", "4"], T);
}
