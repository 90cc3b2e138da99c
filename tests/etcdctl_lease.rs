//! `etcdctl lease`: grant, keep-alive (--once and streaming), timetolive --keys, revoke, list, and
//! expiry of attached keys.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Parse "lease <16 hex digits> granted with TTL(<n>s)".
fn grant(s: &Server, ttl: u64) -> (String, i64) {
    let out = s.ctl_ok(&["lease", "grant", &ttl.to_string()]);
    let line = out.trim_end();
    let rest = line
        .strip_prefix("lease ")
        .unwrap_or_else(|| panic!("unexpected grant output {out:?}"));
    let (hex, tail) = rest
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected grant output {out:?}"));
    assert_eq!(tail, format!("granted with TTL({ttl}s)"), "grant output {out:?}");
    assert_eq!(hex.len(), 16, "etcdctl prints lease IDs as %016x: {out:?}");
    let id = i64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("lease id {hex:?}: {e}"));
    assert!(id > 0, "lease IDs are positive: {out:?}");
    (hex.to_string(), id)
}

#[test]
fn grant_timetolive_list_revoke() {
    let s = Server::start_default();
    let rev0 = s.revision();
    let (a_hex, a) = grant(&s, 120);
    let (b_hex, b) = grant(&s, 300);
    assert_ne!(a, b);

    // JSON grant output.
    let v = s.ctl_json(&["lease", "grant", "60"]);
    let c = v["ID"].as_i64().unwrap_or_else(|| panic!("no ID: {v}"));
    assert_eq!(v["TTL"].as_i64(), Some(60), "{v}");
    assert_eq!(v["Error"].as_str(), Some(""), "{v}");
    assert!(c != a && c != b && c > 0);
    let c_hex = format!("{c:016x}");
    // Granting leases does not create store revisions.
    assert_eq!(s.revision(), rev0);

    // Attach keys.
    s.ctl_ok(&["put", "la/1", "x", &format!("--lease={a_hex}")]);
    s.ctl_ok(&["put", "la/2", "y", &format!("--lease={a_hex}")]);
    s.ctl_ok(&["put", "lb/1", "z", &format!("--lease={b_hex}")]);
    s.ctl_ok(&["put", "plain", "p"]);

    // timetolive without and with --keys (simple output).
    let out = s.ctl_ok(&["lease", "timetolive", &a_hex]);
    let prefix = format!("lease {a_hex} granted with TTL(120s), remaining(");
    assert!(out.starts_with(&prefix) && out.ends_with("s)\n"), "{out:?}");
    let remaining: i64 = out[prefix.len()..out.len() - 3]
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(
        (100..=120).contains(&remaining),
        "remaining TTL {remaining} out of range: {out:?}"
    );
    let out = s.ctl_ok(&["lease", "timetolive", &a_hex, "--keys"]);
    // Key order is unspecified (etcd keeps them in a Go map).
    let list = out
        .trim_end()
        .strip_suffix("])")
        .and_then(|o| o.rsplit_once("attached keys(["))
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("{out:?}"));
    let mut attached: Vec<&str> = list.split(' ').collect();
    attached.sort();
    assert_eq!(attached, ["la/1", "la/2"], "{out:?}");

    let v = s.ctl_json(&["lease", "timetolive", &a_hex, "--keys"]);
    assert_eq!(v["id"].as_i64(), Some(a), "{v}");
    assert_eq!(v["granted-ttl"].as_i64(), Some(120), "{v}");
    let ttl = v["ttl"].as_i64().unwrap_or(-100);
    assert!((100..=120).contains(&ttl), "{v}");
    let mut keys: Vec<String> = v["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| b64s(k.as_str().unwrap_or("")))
        .collect();
    keys.sort();
    assert_eq!(keys, ["la/1", "la/2"], "{v}");
    // A lease without keys.
    let out = s.ctl_ok(&["lease", "timetolive", &c_hex, "--keys"]);
    assert!(out.ends_with("attached keys([])\n"), "{out:?}");

    // list
    let out = s.ctl_ok(&["lease", "list"]);
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("found 3 leases"), "{out:?}");
    lines.remove(0);
    lines.sort();
    let mut want = vec![a_hex.clone(), b_hex.clone(), c_hex.clone()];
    want.sort();
    assert_eq!(lines, want, "{out:?}");
    let v = s.ctl_json(&["lease", "list"]);
    let mut ids: Vec<i64> = v["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["id"].as_i64())
        .collect();
    ids.sort();
    let mut want_ids = vec![a, b, c];
    want_ids.sort();
    assert_eq!(ids, want_ids, "{v}");

    // revoke deletes the attached keys (in one revision) and only those.
    let before = s.revision();
    assert_eq!(
        s.ctl_ok(&["lease", "revoke", &a_hex]),
        format!("lease {a_hex} revoked\n")
    );
    assert!(s.ctl_ok(&["get", "la/", "--prefix"]).is_empty());
    assert_eq!(s.ctl_ok(&["get", "lb/1"]), "lb/1\nz\n");
    assert_eq!(s.ctl_ok(&["get", "plain"]), "plain\np\n");
    assert_eq!(
        s.revision(),
        before + 1,
        "revoking a lease with keys deletes them in one revision"
    );
    // History still has them.
    assert_eq!(
        kvs(&s.ctl_json(&["get", "la/", "--prefix", "--rev", &before.to_string()])).len(),
        2
    );

    // After revoke.
    assert_eq!(
        s.ctl_ok(&["lease", "timetolive", &a_hex]),
        format!("lease {a_hex} already expired\n")
    );
    let v = s.ctl_json(&["lease", "timetolive", &a_hex]);
    assert_eq!(v["ttl"].as_i64(), Some(-1), "{v}");
    assert_eq!(
        s.ctl_err(&["lease", "revoke", &a_hex]),
        "failed to revoke lease (etcdserver: requested lease not found)"
    );
    let out = s.ctl_ok(&["lease", "list"]);
    assert!(out.starts_with("found 2 leases\n") && !out.contains(&a_hex), "{out:?}");
    assert_eq!(
        s.ctl_err(&["put", "k", "v", &format!("--lease={a_hex}")]),
        "etcdserver: requested lease not found"
    );

    // Revoking a lease with no keys does not create a revision.
    let before = s.revision();
    s.ctl_ok(&["lease", "revoke", &c_hex]);
    assert_eq!(s.revision(), before);
}

#[test]
fn keep_alive_once_and_streaming() {
    let s = Server::start_default();
    let (hex, id) = grant(&s, 100);
    // --once
    assert_eq!(
        s.ctl_ok(&["lease", "keep-alive", "--once", &hex]),
        format!("lease {hex} keepalived with TTL(100)\n")
    );
    let v = s.ctl_json(&["lease", "keep-alive", "--once", &hex]);
    assert_eq!((v["ID"].as_i64(), v["TTL"].as_i64()), (Some(id), Some(100)), "{v}");

    // Streaming keep-alive keeps a short lease (and its key) alive well past its TTL.
    let (short, _) = grant(&s, 3);
    s.ctl_ok(&["put", "kept", "alive", &format!("--lease={short}")]);
    let mut ka = s.ctl_spawn(&["lease", "keep-alive", &short]);
    let want = format!("lease {short} keepalived with TTL(3)");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let l = ka.expect_next(Duration::from_secs(5));
        assert_eq!(l, want, "{}", ka.transcript_text());
        n += 1;
    }
    assert!(n >= 3, "expected a keep-alive roughly every TTL/3, got {n} in 6s");
    assert_eq!(
        s.ctl_ok(&["get", "kept"]),
        "kept\nalive\n",
        "key must survive while kept alive"
    );
    let v = s.ctl_json(&["lease", "timetolive", &short]);
    assert!(v["ttl"].as_i64().unwrap_or(0) >= 1, "{v}");

    // Stop refreshing: the lease now expires and the key disappears.
    ka.kill();
    poll_until(
        "leased key to vanish after keep-alive stopped",
        Duration::from_secs(20),
        || s.ctl_ok(&["get", "kept"]).is_empty().then_some(()),
    );

    // Streaming keep-alive on a revoked lease reports it and exits successfully.
    s.ctl_ok(&["lease", "revoke", &hex]);
    let mut ka = s.ctl_spawn(&["lease", "keep-alive", &hex]);
    let st = ka.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", ka.transcript_text());
    assert_eq!(
        ka.expect_next(Duration::from_secs(1)),
        format!("lease {hex} expired or revoked.")
    );
    // --once on a revoked lease fails.
    assert_eq!(
        s.ctl_err(&["lease", "keep-alive", "--once", &hex]),
        "etcdserver: requested lease not found"
    );
}

#[test]
fn short_lease_expires_with_its_keys() {
    let s = Server::start_default();
    let (hex, _) = grant(&s, 2);
    s.ctl_ok(&["put", "ephemeral/1", "a", &format!("--lease={hex}")]);
    s.ctl_ok(&["put", "ephemeral/2", "b", &format!("--lease={hex}")]);
    s.ctl_ok(&["put", "durable", "c"]);
    let granted_at = Instant::now();
    let rev = s.revision();
    assert_eq!(kvs(&s.ctl_json(&["get", "ephemeral/", "--prefix"])).len(), 2);

    let gone_after = poll_until("keys of a 2s lease to be deleted", Duration::from_secs(20), || {
        s.ctl_ok(&["get", "ephemeral/", "--prefix"])
            .is_empty()
            .then(|| granted_at.elapsed())
    });
    assert!(
        gone_after >= Duration::from_millis(1500),
        "lease expired too early: {gone_after:?}"
    );
    assert_eq!(
        s.ctl_ok(&["lease", "timetolive", &hex]),
        format!("lease {hex} already expired\n")
    );
    assert_eq!(s.ctl_ok(&["lease", "list"]), "found 0 leases\n");
    assert_eq!(s.ctl_ok(&["get", "durable"]), "durable\nc\n");
    // Expiry deletes both keys in one revision, visible as DELETE events in history.
    assert_eq!(s.revision(), rev + 1);
    let mut w = s.ctl_spawn(&["watch", "ephemeral/", "--prefix", "--rev", &(rev + 1).to_string()]);
    w.expect_lines(
        &["DELETE", "ephemeral/1", "", "DELETE", "ephemeral/2", ""],
        LINE_TIMEOUT,
    );
}

#[test]
fn minimum_ttl_is_enforced() {
    // etcd raises TTLs below its minimum (ceil(1.5 * election timeout) = 2s with default
    // settings) to the minimum; a 1s lease must not vanish before ~2s either.
    let s = Server::start_default();
    let v = s.ctl_json(&["lease", "grant", "1"]);
    let ttl = v["TTL"].as_i64().unwrap_or(0);
    assert_eq!(ttl, 2, "granted TTL for a 1s request: {v}");
}
