//! `etcdctl` KV surface against `rudder store` (or etcd with RUDDER_E2E_TARGET=etcd):
//! put/get/del with their flags, revisions, `txn -i`, compaction.

mod common;

use common::*;

fn values(v: &Value) -> Vec<(String, String)> {
    kvs(v).into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn put_get_revisions_and_versions() {
    let s = Server::start_default();

    // An empty store is at revision 1 and a miss returns no kvs at all.
    let v = s.ctl_json(&["get", "foo"]);
    assert_eq!(header_rev(&v), 1, "empty store must be at revision 1: {v}");
    assert!(kvs(&v).is_empty(), "{v}");
    assert_eq!(v["count"].as_i64().unwrap_or(0), 0, "{v}");
    assert!(
        v["header"]["member_id"].as_u64().unwrap_or(0) != 0,
        "member_id missing: {v}"
    );
    assert!(
        v["header"]["cluster_id"].as_u64().unwrap_or(0) != 0,
        "cluster_id missing: {v}"
    );
    assert!(s.ctl_ok(&["get", "foo"]).is_empty());

    // First put -> revision 2.
    assert_eq!(s.ctl_ok(&["put", "foo", "bar"]), "OK\n");
    let v = s.ctl_json(&["get", "foo"]);
    assert_eq!(header_rev(&v), 2, "{v}");
    let kv = &kvs(&v)[0];
    assert_eq!(
        (
            kv.key.as_str(),
            kv.value.as_str(),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease
        ),
        ("foo", "bar", 2, 2, 1, 0),
        "{v}"
    );
    assert_eq!(v["count"].as_i64(), Some(1), "{v}");
    assert_eq!(s.ctl_ok(&["get", "foo"]), "foo\nbar\n");

    // put -w json reports the new revision in the header.
    let v = s.ctl_json(&["put", "foo", "baz"]);
    assert_eq!(header_rev(&v), 3, "{v}");
    assert!(v.get("prev_kv").is_none(), "prev_kv only with --prev-kv: {v}");

    // --prev-kv: simple output is OK + previous key/value.
    assert_eq!(s.ctl_ok(&["put", "foo", "qux", "--prev-kv"]), "OK\nfoo\nbaz\n");
    let v = s.ctl_json(&["put", "foo", "quux", "--prev-kv"]);
    assert_eq!(header_rev(&v), 5, "{v}");
    let prev = kv_of(&v["prev_kv"]);
    assert_eq!(
        (prev.value.as_str(), prev.mod_revision, prev.version),
        ("qux", 4, 3),
        "{v}"
    );
    // --prev-kv on a new key: no prev_kv.
    let v = s.ctl_json(&["put", "fresh", "1", "--prev-kv"]);
    assert!(v.get("prev_kv").is_none(), "{v}");
    assert_eq!(s.ctl_ok(&["put", "fresh2", "1", "--prev-kv"]), "OK\n");

    let kv = &kvs(&s.ctl_json(&["get", "foo"]))[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 5, 4));

    // Past revisions stay readable.
    for (rev, want) in [(2, "bar"), (3, "baz"), (4, "qux"), (5, "quux")] {
        let r = rev.to_string();
        let v = s.ctl_json(&["get", "foo", "--rev", &r]);
        let kv = &kvs(&v)[0];
        assert_eq!(kv.value, want, "get --rev={rev}: {v}");
        assert_eq!(kv.mod_revision, rev, "{v}");
        // The header always carries the current revision, not the requested one.
        assert_eq!(header_rev(&v), 7, "{v}");
        assert_eq!(
            s.ctl_ok(&["get", "foo", &format!("--rev={rev}"), "--print-value-only"]),
            format!("{want}\n")
        );
    }
    // The key did not exist at revision 1.
    assert!(kvs(&s.ctl_json(&["get", "foo", "--rev=1"])).is_empty());

    // Deleting bumps the revision; the old value is still visible at older revisions.
    assert_eq!(s.ctl_ok(&["del", "foo"]), "1\n");
    assert_eq!(s.revision(), 8);
    assert!(s.ctl_ok(&["get", "foo"]).is_empty());
    assert_eq!(s.ctl_ok(&["get", "foo", "--rev=7"]), "foo\nquux\n");
    // Re-creating starts a new generation: version 1, new create_revision.
    s.ctl_ok(&["put", "foo", "again"]);
    let kv = &kvs(&s.ctl_json(&["get", "foo"]))[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (9, 9, 1));

    // A read does not advance the revision.
    s.ctl_ok(&["get", "foo"]);
    assert_eq!(s.revision(), 9);

    // Values with spaces/newlines and binary-ish content round-trip (value read from stdin).
    let out = s.ctl_stdin(&["put", "multi"], b"line one\nline two");
    assert!(out.success(), "{out}");
    let kv = &kvs(&s.ctl_json(&["get", "multi"]))[0];
    assert_eq!(kv.value, "line one\nline two");
    // An empty value is allowed.
    s.ctl_ok(&["put", "empty", ""]);
    let v = s.ctl_json(&["get", "empty"]);
    let kv = &kvs(&v)[0];
    assert_eq!(
        (kv.key.as_str(), kv.value.as_str(), kv.version),
        ("empty", "", 1),
        "{v}"
    );
}

#[test]
fn get_flags() {
    let s = Server::start_default();
    // key -> value chosen so that key order, value order and create order all differ.
    for (k, v) in [
        ("k/c", "3"),
        ("k/a", "5"),
        ("k/e", "1"),
        ("k/b", "4"),
        ("k/d", "2"),
        ("l", "x"),
        ("j", "y"),
    ] {
        s.ctl_ok(&["put", k, v]);
    }
    // Give k/d a higher version and the newest mod revision.
    s.ctl_ok(&["put", "k/d", "2"]);
    s.ctl_ok(&["put", "k/d", "2"]);
    let rev = s.revision();
    assert_eq!(rev, 10);

    let all_k = pairs(&[("k/a", "5"), ("k/b", "4"), ("k/c", "3"), ("k/d", "2"), ("k/e", "1")]);

    // --prefix
    let v = s.ctl_json(&["get", "k/", "--prefix"]);
    assert_eq!(values(&v), all_k, "{v}");
    assert_eq!(v["count"].as_i64(), Some(5));
    assert!(!v["more"].as_bool().unwrap_or(false));
    assert_eq!(
        s.ctl_ok(&["get", "k/", "--prefix"]),
        "k/a\n5\nk/b\n4\nk/c\n3\nk/d\n2\nk/e\n1\n"
    );

    // Explicit range [k/b, k/d)
    assert_eq!(
        values(&s.ctl_json(&["get", "k/b", "k/d"])),
        pairs(&[("k/b", "4"), ("k/c", "3")])
    );

    // --from-key: everything >= key in byte order.
    assert_eq!(
        values(&s.ctl_json(&["get", "k/d", "--from-key"])),
        pairs(&[("k/d", "2"), ("k/e", "1"), ("l", "x")])
    );
    // --from-key with an empty key is the whole keyspace.
    assert_eq!(kvs(&s.ctl_json(&["get", "", "--from-key", "--keys-only"])).len(), 7);

    // --limit: truncated kvs, "more" set, count is the full match count.
    let v = s.ctl_json(&["get", "k/", "--prefix", "--limit=2"]);
    assert_eq!(values(&v), pairs(&[("k/a", "5"), ("k/b", "4")]), "{v}");
    assert_eq!(v["more"].as_bool(), Some(true), "{v}");
    assert_eq!(v["count"].as_i64(), Some(5), "{v}");
    assert_eq!(s.ctl_ok(&["get", "k/", "--prefix", "--limit", "1"]), "k/a\n5\n");

    // --order alone sorts by key.
    let v = s.ctl_json(&["get", "k/", "--prefix", "--order=DESCEND"]);
    let mut rev_k = all_k.clone();
    rev_k.reverse();
    assert_eq!(values(&v), rev_k);
    assert_eq!(values(&s.ctl_json(&["get", "k/", "--prefix", "--order=ASCEND"])), all_k);

    // --sort-by without --order means ASCEND for non-KEY targets.
    let v = s.ctl_json(&["get", "k/", "--prefix", "--sort-by=VALUE"]);
    assert_eq!(
        values(&v),
        pairs(&[("k/e", "1"), ("k/d", "2"), ("k/c", "3"), ("k/b", "4"), ("k/a", "5")]),
        "{v}"
    );
    // Sorting happens before the limit is applied.
    let v = s.ctl_json(&[
        "get",
        "k/",
        "--prefix",
        "--sort-by=VALUE",
        "--order=DESCEND",
        "--limit=2",
    ]);
    assert_eq!(values(&v), pairs(&[("k/a", "5"), ("k/b", "4")]), "{v}");
    assert_eq!(v["more"].as_bool(), Some(true), "{v}");
    assert_eq!(v["count"].as_i64(), Some(5), "{v}");
    let v = s.ctl_json(&["get", "k/", "--prefix", "--sort-by=CREATE", "--order=ASCEND"]);
    assert_eq!(
        kvs(&v).iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["k/c", "k/a", "k/e", "k/b", "k/d"],
        "{v}"
    );
    let v = s.ctl_json(&[
        "get",
        "k/",
        "--prefix",
        "--sort-by=MODIFY",
        "--order=DESCEND",
        "--limit=1",
    ]);
    assert_eq!(kvs(&v)[0].key, "k/d", "{v}");
    let v = s.ctl_json(&[
        "get",
        "k/",
        "--prefix",
        "--sort-by=VERSION",
        "--order=DESCEND",
        "--limit=1",
    ]);
    assert_eq!((kvs(&v)[0].key.as_str(), kvs(&v)[0].version), ("k/d", 3), "{v}");
    let v = s.ctl_json(&["get", "k/", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--limit=1"]);
    assert_eq!(kvs(&v)[0].key, "k/e", "{v}");

    // --keys-only: no values in JSON; simple format prints the key then an empty line.
    let v = s.ctl_json(&["get", "k/", "--prefix", "--keys-only", "--limit=2"]);
    assert!(
        v["kvs"][0].get("value").is_none(),
        "keys-only must not return values: {v}"
    );
    assert_eq!(kvs(&v)[0].mod_revision, 3, "keys-only still carries metadata: {v}");
    assert_eq!(
        s.ctl_ok(&["get", "k/", "--prefix", "--keys-only", "--limit=2"]),
        "k/a\n\nk/b\n\n"
    );

    // Count only (etcdctl 3.4 has no --count-only flag; -w json + --limit=1 exposes count).
    let v = s.ctl_json(&["get", "", "--from-key", "--keys-only", "--limit=1"]);
    assert_eq!(v["count"].as_i64(), Some(7), "{v}");

    // --print-value-only
    assert_eq!(
        s.ctl_ok(&["get", "k/", "--prefix", "--print-value-only"]),
        "5\n4\n3\n2\n1\n"
    );

    // --consistency=s (serializable) sees the same data on a single member.
    assert_eq!(
        values(&s.ctl_json(&["get", "k/", "--prefix", "--consistency=s"])),
        all_k
    );
    assert_eq!(s.ctl_ok(&["get", "l", "--consistency=s"]), "l\nx\n");

    // --rev for a past revision applies to range reads too.
    let v = s.ctl_json(&["get", "k/", "--prefix", "--rev=3"]);
    assert_eq!(values(&v), pairs(&[("k/a", "5"), ("k/c", "3")]), "{v}");
    assert_eq!(header_rev(&v), rev, "{v}");
    let v = s.ctl_json(&["get", "k/d", "--rev=9"]);
    assert_eq!(kvs(&v)[0].version, 2, "{v}");

    // -w fields (Go struct field names)
    let f = s.ctl_ok(&["get", "l", "-w", "fields"]);
    for needle in [
        "\"Revision\" : 10",
        "\"Key\" : \"l\"",
        "\"CreateRevision\" : 7",
        "\"ModRevision\" : 7",
        "\"Version\" : 1",
        "\"Value\" : \"x\"",
        "\"Lease\" : 0",
        "\"More\" : false",
        "\"Count\" : 1",
    ] {
        assert!(f.contains(needle), "missing {needle:?} in -w fields output:\n{f}");
    }
}

#[test]
fn put_ignore_value_ignore_lease_and_lease() {
    let s = Server::start_default();
    let lease_out = s.ctl_ok(&["lease", "grant", "300"]);
    let lease_hex = lease_out.split_whitespace().nth(1).expect("lease id").to_string();
    let lease_id = i64::from_str_radix(&lease_hex, 16).expect("hex lease id");

    assert_eq!(s.ctl_ok(&["put", "lk", "v1", &format!("--lease={lease_hex}")]), "OK\n");
    let kv = &kvs(&s.ctl_json(&["get", "lk"]))[0];
    assert_eq!((kv.value.as_str(), kv.lease), ("v1", lease_id));

    // --ignore-lease keeps the lease, updates the value.
    s.ctl_ok(&["put", "lk", "v2", "--ignore-lease"]);
    let kv = &kvs(&s.ctl_json(&["get", "lk"]))[0];
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v2", lease_id, 2));

    // --ignore-value keeps the value; without --ignore-lease the lease is cleared (lease 0).
    s.ctl_ok(&["put", "lk", "--ignore-value"]);
    let kv = &kvs(&s.ctl_json(&["get", "lk"]))[0];
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v2", 0, 3));

    // Both: only the revision/version moves.
    s.ctl_ok(&["put", "lk", "v3", &format!("--lease={lease_hex}")]);
    let v = s.ctl_json(&["put", "lk", "--ignore-value", "--ignore-lease", "--prev-kv"]);
    assert_eq!(kv_of(&v["prev_kv"]).value, "v3", "{v}");
    let kv = &kvs(&s.ctl_json(&["get", "lk"]))[0];
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v3", lease_id, 5));

    // --ignore-value on a missing key is rejected.
    assert_eq!(
        s.ctl_err(&["put", "missing", "--ignore-value"]),
        "etcdserver: key not found"
    );
    // ... and on a key whose lease was revoked (the key is gone).
    s.ctl_ok(&["lease", "revoke", &lease_hex]);
    assert!(s.ctl_ok(&["get", "lk"]).is_empty());
    assert_eq!(s.ctl_err(&["put", "lk", "--ignore-value"]), "etcdserver: key not found");
    // A put with an unknown lease fails.
    assert_eq!(
        s.ctl_err(&["put", "x", "y", "--lease=123456789"]),
        "etcdserver: requested lease not found"
    );
    assert!(s.ctl_ok(&["get", "x"]).is_empty());
}

#[test]
fn del_flags() {
    let s = Server::start_default();
    for k in ["d/a", "d/b", "d/c", "e", "f"] {
        s.ctl_ok(&["put", k, &format!("val-{k}")]);
    }
    // Missing key deletes nothing and does not bump the revision.
    let before = s.revision();
    assert_eq!(s.ctl_ok(&["del", "nope"]), "0\n");
    assert_eq!(s.revision(), before);

    // Single key with --prev-kv.
    assert_eq!(s.ctl_ok(&["del", "d/a", "--prev-kv"]), "1\nd/a\nval-d/a\n");
    assert_eq!(s.revision(), before + 1);

    // Prefix, JSON: deleted count and prev_kvs in key order; one revision for the whole delete.
    let v = s.ctl_json(&["del", "d/", "--prefix", "--prev-kv"]);
    assert_eq!(v["deleted"].as_i64(), Some(2), "{v}");
    assert_eq!(
        values(&serde_json::json!({"kvs": v["prev_kvs"]})),
        pairs(&[("d/b", "val-d/b"), ("d/c", "val-d/c")]),
        "{v}"
    );
    assert_eq!(
        header_rev(&v),
        before + 2,
        "a multi-key delete is a single revision: {v}"
    );
    // Both keys carry the same mod revision in history (read at the delete revision - 1 works).
    assert_eq!(
        kvs(&s.ctl_json(&["get", "d/", "--prefix", "--rev", &(before + 1).to_string()])).len(),
        2
    );

    // --from-key
    s.ctl_ok(&["put", "g", "1"]);
    assert_eq!(s.ctl_ok(&["del", "f", "--from-key"]), "2\n");
    assert_eq!(
        kvs(&s.ctl_json(&["get", "", "--from-key"]))
            .iter()
            .map(|k| k.key.clone())
            .collect::<Vec<_>>(),
        ["e"]
    );
    // Range [a, z) deletes e.
    assert_eq!(s.ctl_ok(&["del", "a", "z"]), "1\n");
    assert!(s.ctl_ok(&["get", "", "--from-key"]).is_empty());
    // Without --prev-kv there are no prev_kvs.
    s.ctl_ok(&["put", "h", "1"]);
    let v = s.ctl_json(&["del", "h"]);
    assert_eq!(v["deleted"].as_i64(), Some(1));
    assert!(v.get("prev_kvs").is_none(), "{v}");
    // Deleting an empty range: deleted absent (0).
    let v = s.ctl_json(&["del", "zz", "--prefix"]);
    assert_eq!(v["deleted"].as_i64().unwrap_or(0), 0, "{v}");
}

const PROMPTS: &str = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

#[test]
fn txn_interactive() {
    let s = Server::start_default();
    s.ctl_ok(&["put", "foo", "bar"]); // rev 2, version 1
    s.ctl_ok(&["put", "foo", "baz"]); // rev 3, version 2

    // Success branch on a value compare: put + get.
    let out = s.ctl_stdin(
        &["txn", "-i"],
        b"value(\"foo\") = \"baz\"\n\nput k1 v1\nget foo\n\nput k2 v2\n\n",
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, format!("{PROMPTS}SUCCESS\n\nOK\n\nfoo\nbaz\n"), "{out}");
    assert_eq!(s.ctl_ok(&["get", "k1"]), "k1\nv1\n");
    assert!(s.ctl_ok(&["get", "k2"]).is_empty());
    assert_eq!(s.revision(), 4, "a txn with one put is one revision");

    // Failure branch: put + del, del prints the deleted count.
    let out = s.ctl_stdin(
        &["txn", "-i"],
        b"value(\"foo\") = \"nope\"\n\nput k1 never\n\nput k2 v2\ndel k1\n\n",
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, format!("{PROMPTS}FAILURE\n\nOK\n\n1\n"), "{out}");
    assert!(s.ctl_ok(&["get", "k1"]).is_empty());
    assert_eq!(s.ctl_ok(&["get", "k2"]), "k2\nv2\n");
    // All writes of one txn share one revision.
    let v = s.ctl_json(&["get", "k2"]);
    assert_eq!(kvs(&v)[0].mod_revision, 5, "{v}");
    assert_eq!(header_rev(&v), 5, "{v}");

    // version / create / mod compares, all true; JSON output.
    let v = {
        let out = s.ctl_stdin(
            &["txn", "-i", "-w", "json"],
            b"version(\"foo\") = \"2\"\ncreate(\"foo\") = \"2\"\nmod(\"foo\") > \"2\"\nmod(\"foo\") < \"4\"\n\nput k3 v3\n\n\n",
        );
        assert!(out.success(), "{out}");
        let json = out
            .stdout
            .strip_prefix(PROMPTS)
            .unwrap_or_else(|| panic!("prompts missing:\n{out}"));
        serde_json::from_str::<Value>(json.trim()).unwrap_or_else(|e| panic!("{e}:\n{out}"))
    };
    assert_eq!(v["succeeded"].as_bool(), Some(true), "{v}");
    assert_eq!(header_rev(&v), 6, "{v}");
    assert_eq!(
        v["responses"][0]["Response"]["ResponsePut"]["header"]["revision"].as_i64(),
        Some(6),
        "{v}"
    );

    // One false compare among several -> failure; empty failure branch.
    let out = s.ctl_stdin(
        &["txn", "-i"],
        b"version(\"foo\") = \"2\"\ncreate(\"foo\") != \"2\"\n\nput k4 v4\n\n\n",
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, format!("{PROMPTS}FAILURE\n"), "{out}");
    assert!(s.ctl_ok(&["get", "k4"]).is_empty());

    // A missing key has version 0 / create 0: the classic "create if absent".
    let create_if_absent = b"create(\"newkey\") = \"0\"\n\nput newkey first\n\nget newkey\n\n";
    let out = s.ctl_stdin(&["txn", "-i"], create_if_absent);
    assert_eq!(out.stdout, format!("{PROMPTS}SUCCESS\n\nOK\n"), "{out}");
    let out = s.ctl_stdin(&["txn", "-i"], create_if_absent);
    assert_eq!(out.stdout, format!("{PROMPTS}FAILURE\n\nnewkey\nfirst\n"), "{out}");
    let out = s.ctl_stdin(
        &["txn", "-i"],
        b"version(\"absent\") = \"0\"\nvalue(\"foo\") > \"bay\"\n\nget foo\n\n\n",
    );
    assert_eq!(out.stdout, format!("{PROMPTS}SUCCESS\n\nfoo\nbaz\n"), "{out}");

    // Non-interactive txn reads the same format from stdin without prompts.
    let out = s.ctl_stdin(
        &["txn"],
        b"mod(\"k3\") = \"6\"\n\ndel k3 --prev-kv\nget k --prefix --keys-only\n\n\n",
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "SUCCESS\n\n1\nk3\nv3\n\nk2\n\n", "{out}");

    // A read-only txn does not create a revision.
    let before = s.revision();
    let out = s.ctl_stdin(&["txn"], b"\nget foo\n\n\n");
    assert_eq!(out.stdout, "SUCCESS\n\nfoo\nbaz\n", "{out}");
    assert_eq!(s.revision(), before);
}

#[test]
fn compaction_and_revision_errors() {
    let s = Server::start_default();
    for i in 1..=5 {
        s.ctl_ok(&["put", "c", &format!("v{i}")]); // revisions 2..=6
    }
    s.ctl_ok(&["put", "other", "x"]); // 7
    assert_eq!(s.revision(), 7);

    // Future revision.
    assert_eq!(
        s.ctl_err(&["get", "c", "--rev=8"]),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        s.ctl_err(&["get", "c", "--rev=1000"]),
        "etcdserver: mvcc: required revision is a future revision"
    );
    // The current revision is fine.
    assert_eq!(s.ctl_ok(&["get", "c", "--rev=7"]), "c\nv5\n");

    assert_eq!(s.ctl_ok(&["compact", "4"]), "compacted revision 4\n");
    // Below the compaction point: error. At it: still readable.
    assert_eq!(
        s.ctl_err(&["get", "c", "--rev=3"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.ctl_err(&["get", "c", "--rev=2"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(s.ctl_ok(&["get", "c", "--rev=4"]), "c\nv3\n");
    assert_eq!(s.ctl_ok(&["get", "c", "--rev=5"]), "c\nv4\n");
    // The key keeps its create_revision and version after compaction.
    let kv = &kvs(&s.ctl_json(&["get", "c"]))[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 6, 5));
    // Compaction does not create a revision.
    assert_eq!(s.revision(), 7);

    // Compacting again at or below the compacted revision fails; above the current fails too.
    assert_eq!(
        s.ctl_err(&["compact", "4"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.ctl_err(&["compact", "3"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        s.ctl_err(&["compact", "8"]),
        "etcdserver: mvcc: required revision is a future revision"
    );

    // --physical waits until the compaction is applied; compacting to the current revision is allowed.
    assert_eq!(s.ctl_ok(&["compact", "7", "--physical"]), "compacted revision 7\n");
    assert_eq!(
        s.ctl_err(&["get", "c", "--rev=6"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(s.ctl_ok(&["get", "c", "--rev=7"]), "c\nv5\n");
    assert_eq!(s.ctl_ok(&["get", "other"]), "other\nx\n");

    // A deleted key whose tombstone is compacted away is gone at every remaining revision.
    s.ctl_ok(&["del", "other"]); // 8
    s.ctl_ok(&["put", "c", "v6"]); // 9
    s.ctl_ok(&["compact", "9"]);
    assert!(s.ctl_ok(&["get", "other", "--rev=9"]).is_empty());
    assert_eq!(s.ctl_ok(&["get", "", "--from-key", "--keys-only"]), "c\n\n");
    // Writes continue from the same revision counter.
    let v = s.ctl_json(&["put", "c", "v7"]);
    assert_eq!(header_rev(&v), 10, "{v}");
}

#[test]
fn periodic_auto_compaction() {
    // --auto-compaction-mode periodic --auto-compaction-retention 2s: old revisions get compacted
    // on their own within a few seconds; the latest data stays.
    let s = Server::start(Opts::new().auto_compaction("periodic", "2s"));
    for i in 1..=10 {
        s.ctl_ok(&["put", "ac", &format!("v{i}")]); // revisions 2..=11
    }
    let err = poll_until(
        "revision 2 to be auto-compacted",
        std::time::Duration::from_secs(30),
        || {
            let out = s.ctl(&["get", "ac", "--rev=2"]);
            (!out.success()).then(|| out.error_message().unwrap_or_default())
        },
    );
    assert_eq!(err, "etcdserver: mvcc: required revision has been compacted");
    assert_eq!(s.ctl_ok(&["get", "ac"]), "ac\nv10\n");
    let v = s.ctl_json(&["put", "ac", "after"]);
    assert_eq!(header_rev(&v), 12, "auto-compaction must not create revisions: {v}");
}
