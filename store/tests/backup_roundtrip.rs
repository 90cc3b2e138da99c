//! The bbolt writer and reader against each other (round trips over arbitrary buckets, including values
//! that need overflow pages and enough keys for several branch levels), the reader against damaged
//! files (errors, never panics), and, when Debian's etcdctl is installed, our files against
//! `etcdctl snapshot status` (bbolt's own `tx.Check()` and etcd's hash, revision and key count).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::process::Command;

use proptest::prelude::*;
use rudder_store::backup::bbolt::{BoltReader, BoltWriter, PAGE_SIZE};
use rudder_store::backup::status::status_of;
use rudder_store::backup::BackupError;

type Bucket = BTreeMap<Vec<u8>, Vec<u8>>;
type Db = BTreeMap<Vec<u8>, Bucket>;

fn write(db: &Db) -> Vec<u8> {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).expect("writer");
    // Buckets in reverse order: the writer sorts the root itself.
    for (name, items) in db.iter().rev() {
        w.put_bucket(name, items.iter()).expect("bucket");
    }
    let (out, summary) = w.finish(7).expect("finish");
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, summary.size);
    assert_eq!(summary.size % PAGE_SIZE as u64, 0);
    bytes
}

fn read(bytes: &[u8]) -> Result<Db, BackupError> {
    let r = BoltReader::open(bytes)?;
    let mut db = Db::new();
    for b in r.buckets()? {
        let mut items = Bucket::new();
        r.for_each(&b, |e| -> Result<(), BackupError> {
            items.insert(e.key.to_vec(), e.value.to_vec());
            Ok(())
        })?;
        db.insert(b.name.clone(), items);
    }
    Ok(db)
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..48),
        1 => proptest::collection::vec(any::<u8>(), 900..1100),
        1 => (1usize..40_000).prop_map(|n| vec![0xAB; n]),
    ]
}

fn bucket_strategy() -> impl Strategy<Value = Bucket> {
    prop_oneof![
        3 => proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..24), value_strategy(), 0..12),
        2 => proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..40), value_strategy(), 0..800),
        // Long keys: branch elements that fill (or overflow) a page on their own.
        1 => proptest::collection::btree_map(
            (1usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
            proptest::collection::vec(any::<u8>(), 0..8),
            0..40,
        ),
    ]
}

fn db_strategy() -> impl Strategy<Value = Db> {
    proptest::collection::btree_map("[a-zA-Z_]{1,12}".prop_map(String::into_bytes), bucket_strategy(), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(db in db_strategy()) {
        let bytes = write(&db);
        let back = read(&bytes).expect("read back");
        prop_assert_eq!(&back, &db);
        let r = BoltReader::open(bytes.as_slice()).expect("open");
        let problems = r.check().expect("check");
        prop_assert!(problems.is_empty(), "{:?}", problems);
        let st = status_of(&r).expect("status");
        prop_assert_eq!(st.total_key, db.values().map(|b| b.len() as u64).sum::<u64>());
        prop_assert_eq!(st.total_size, bytes.len() as u64);
    }

    /// Damaged files: whatever the reader returns, it returns (no panic, no hang).
    #[test]
    fn damaged_files_are_errors_not_panics(
        db in db_strategy(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = write(&db);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        if let Some(c) = cut {
            let n = c.index(bytes.len());
            bytes.truncate(n);
        }
        let _ = read(&bytes);
        if let Ok(r) = BoltReader::open(bytes.as_slice()) {
            let _ = r.check();
            let _ = status_of(&r);
        }
    }
}

#[test]
fn many_keys_make_a_three_level_tree() {
    let mut key = Bucket::new();
    for i in 0..100_000u64 {
        key.insert(i.to_be_bytes().to_vec(), format!("value-{i}").into_bytes());
    }
    let db: Db = [(b"key".to_vec(), key)].into_iter().collect();
    let bytes = write(&db);
    assert_eq!(read(&bytes).expect("read"), db);
    let r = BoltReader::open(bytes.as_slice()).expect("open");
    assert!(r.check().expect("check").is_empty());
}

#[test]
fn writer_rejects_what_bbolt_cannot_hold() {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).expect("writer");
    {
        let mut b = w.bucket(b"x").expect("bucket");
        b.put(b"b", b"1").expect("put");
        assert!(b.put(b"a", b"2").is_err(), "unsorted key accepted");
        assert!(b.put(b"b", b"2").is_err(), "duplicate key accepted");
        assert!(b.put(b"", b"2").is_err(), "empty key accepted");
        b.finish().expect("finish");
    }
    assert!(w.bucket(b"x").is_err(), "bucket written twice");
    assert!(w.bucket(b"").is_err(), "empty bucket name");
    w.finish(1).expect("finish");
}

#[test]
fn empty_and_tiny_files_are_refused() {
    for len in [0usize, 10, 4096, 8192] {
        let bytes = vec![0u8; len];
        assert!(BoltReader::open(bytes.as_slice()).is_err(), "{len} zero bytes accepted");
    }
    let mut bytes = write(&[(b"a".to_vec(), Bucket::new())].into_iter().collect());
    bytes.truncate(bytes.len() - PAGE_SIZE);
    assert!(BoltReader::open(bytes.as_slice()).is_err(), "truncated file accepted");
}

/// `etcdctl snapshot status -w json` on a file: (hash, revision, totalKey, totalSize).
fn etcdctl_status(path: &std::path::Path) -> (u64, i64, u64, u64) {
    let out = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot status refused our file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    let field = |name: &str| {
        v[name]
            .as_u64()
            .unwrap_or_else(|| panic!("etcdctl json without {name}: {v}"))
    };
    (
        field("hash"),
        field("revision") as i64,
        field("totalKey"),
        field("totalSize"),
    )
}

fn revision_key(main: u64, sub: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// bbolt itself (in Debian's etcdctl) accepts our files and agrees on etcd's status figures.
    #[test]
    fn etcdctl_agrees_on_status(mut db in db_strategy(), revs in 0u64..3000, big in 0usize..3) {
        if !std::path::Path::new("/usr/bin/etcdctl").exists() {
            return Ok(());
        }
        let mut key = Bucket::new();
        for r in 0..revs {
            key.insert(revision_key(r + 2, 0), vec![b'v'; if r % 97 == 0 { big * 9000 } else { 30 }]);
        }
        db.insert(b"key".to_vec(), key);
        let bytes = write(&db);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, &bytes).expect("write");
        let (hash, revision, total_key, total_size) = etcdctl_status(&path);
        let ours = status_of(&BoltReader::open(bytes.as_slice()).expect("open")).expect("status");
        prop_assert_eq!(u64::from(ours.hash), hash);
        prop_assert_eq!(ours.revision, revision);
        prop_assert_eq!(ours.total_key, total_key);
        prop_assert_eq!(ours.total_size, total_size);
    }
}

mod store_round_trip {
    use prost::Message;
    use rudder_proto::etcdserverpb::{AlarmMember, AlarmResponse};
    use rudder_proto::leasepb;
    use rudder_proto::mvccpb::KeyValue;
    use rudder_store::backend;
    use rudder_store::backup::restore::{restore, RestoreConfig};
    use rudder_store::backup::snapshot::write_file;
    use rudder_store::backup::status::status;
    use rudder_store::backup::BackupError;
    use rudder_store::mvcc::{Mvcc, Revision};
    use rudder_store::schema::{CF_KV, CF_LEASE, CF_META, META_ALARMS, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};

    fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64, lease: i64) -> Vec<u8> {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease,
        }
        .encode_to_vec()
    }

    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    fn rows(db: &rocksdb::DB, cf: &'static str) -> Rows {
        db.iterator_cf(backend::cf(db, cf).expect("cf"), rocksdb::IteratorMode::Start)
            .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("row"))
            .collect()
    }

    fn config(snapshot: &std::path::Path, data_dir: std::path::PathBuf) -> RestoreConfig {
        RestoreConfig {
            snapshot: snapshot.to_path_buf(),
            data_dir,
            name: "m1".into(),
            initial_cluster: vec![("m1".into(), vec!["http://127.0.0.1:2380".into()])],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            ..Default::default()
        }
    }

    /// A store's state through a snapshot file and back, plus the hash-check failures.
    #[test]
    fn state_survives_snapshot_and_restore() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = backend::open(&tmp.path().join("src")).expect("open");
        let kv_cf = backend::cf(&db, CF_KV).expect("cf");
        let put = |rev: Revision, tomb: bool, v: Vec<u8>| db.put_cf(kv_cf, rev.to_key(tomb), v).expect("put");
        put(Revision::new(2, 0), false, kv("a", "1", 2, 2, 1, 0));
        put(Revision::new(3, 0), false, kv("a", "2", 2, 3, 2, 7));
        put(Revision::new(3, 1), false, kv("b", &"x".repeat(50_000), 3, 3, 1, 0));
        put(Revision::new(4, 0), true, kv("a", "", 0, 0, 0, 0));
        for i in 0..3000 {
            put(
                Revision::new(5 + i, 0),
                false,
                kv(&format!("k{i:05}"), "v", 5 + i, 5 + i, 1, 7),
            );
        }
        let lease = leasepb::Lease {
            id: 7,
            ttl: 60,
            remaining_ttl: 0,
        };
        db.put_cf(
            backend::cf(&db, CF_LEASE).expect("cf"),
            7i64.to_be_bytes(),
            lease.encode_to_vec(),
        )
        .expect("lease");
        let meta = backend::cf(&db, CF_META).expect("cf");
        db.put_cf(meta, META_FINISHED_COMPACT, Revision::new(3, 0).to_key(false))
            .expect("meta");
        db.put_cf(meta, META_SCHEDULED_COMPACT, Revision::new(3, 0).to_key(false))
            .expect("meta");
        let alarms = AlarmResponse {
            header: None,
            alarms: vec![AlarmMember { member_id: 9, alarm: 1 }],
        };
        db.put_cf(meta, META_ALARMS, alarms.encode_to_vec()).expect("meta");

        let file = tmp.path().join("snap.db");
        let info = write_file(&db, &[], &file).expect("snapshot");
        assert_eq!(info.revision, 3004);
        assert_eq!(info.history, 3004);
        let st = status(&file).expect("status");
        assert_eq!(st.revision, 3004);
        assert_eq!(st.total_size, info.size);

        let dir = tmp.path().join("restored");
        let summary = restore(&config(&file, dir.clone())).expect("restore");
        assert_eq!(
            (summary.revision, summary.compacted, summary.history, summary.leases),
            (3004, 3, 3004, 1)
        );
        let back = backend::open(&dir.join("member").join("rocksdb")).expect("open restored");
        for cf in [CF_KV, CF_LEASE] {
            assert!(rows(&db, cf) == rows(&back, cf), "{cf} differs after restore");
        }
        let restored_alarms = back
            .get_cf(backend::cf(&back, CF_META).expect("cf"), META_ALARMS)
            .expect("get");
        assert_eq!(restored_alarms, Some(alarms.encode_to_vec()));
        let (mvcc, attachments) = Mvcc::open(back.clone()).expect("mvcc");
        assert_eq!((mvcc.current_revision(), mvcc.compacted_revision()), (3004, 3));
        assert_eq!(attachments.len(), 3000);
        drop(mvcc);
        drop(back);

        // Bumped and compacted.
        let bumped = tmp.path().join("bumped");
        let mut cfg = config(&file, bumped.clone());
        cfg.bump_revision = 100;
        cfg.mark_compacted = true;
        let s = restore(&cfg).expect("bumped restore");
        assert_eq!((s.revision, s.compacted), (3104, 3104));
        let (mvcc, _) = Mvcc::open(backend::open(&bumped.join("member").join("rocksdb")).expect("open")).expect("mvcc");
        assert_eq!((mvcc.current_revision(), mvcc.compacted_revision()), (3104, 3104));
        drop(mvcc);
        cfg.mark_compacted = false;
        cfg.data_dir = tmp.path().join("unused");
        assert!(matches!(restore(&cfg), Err(BackupError::Config(_))));

        // A restore never writes into a non-empty data dir.
        assert!(matches!(
            restore(&config(&file, dir)),
            Err(BackupError::DataDirNotEmpty(_))
        ));

        // Damaged files.
        let mut bytes = std::fs::read(&file).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let flipped = tmp.path().join("flipped.db");
        std::fs::write(&flipped, &bytes).expect("write");
        let err = restore(&config(&flipped, tmp.path().join("r1")))
            .expect_err("flipped byte")
            .to_string();
        assert!(err.starts_with("expected sha256 ["), "{err}");
        let truncated = tmp.path().join("truncated.db");
        std::fs::write(&truncated, &bytes[..bytes.len() - 1]).expect("write");
        let err = restore(&config(&truncated, tmp.path().join("r2")))
            .expect_err("truncated")
            .to_string();
        assert_eq!(err, "snapshot missing hash but --skip-hash-check=false");
        let mut cfg = config(&truncated, tmp.path().join("r3"));
        cfg.skip_hash_check = true;
        assert!(
            restore(&cfg).is_err(),
            "a truncated file restored with --skip-hash-check"
        );
        assert!(!tmp.path().join("r3").join("member").exists());
        // Without its trailer, a good file restores with --skip-hash-check (a db copied from a data dir).
        let plain = tmp.path().join("plain.db");
        std::fs::write(&plain, &std::fs::read(&file).expect("read")[..info.size as usize]).expect("write");
        let mut cfg = config(&plain, tmp.path().join("r4"));
        cfg.skip_hash_check = true;
        assert_eq!(restore(&cfg).expect("plain restore").revision, 3004);
    }
}

/// Files with a stored freelist (bbolt without `NoFreelistSync`): free pages are fine, unreachable pages
/// that are not on the list and reachable pages that are on it are not. etcdctl (bbolt's own check)
/// must agree where it is installed.
#[test]
fn stored_freelists_are_checked() {
    use rudder_store::backup::bbolt::page::{Meta, PageHeader, FLAG_FREELIST, PAGE_HEADER_SIZE};

    let mut db = Db::new();
    db.insert(
        b"a".to_vec(),
        (0..400u32).map(|i| (i.to_be_bytes().to_vec(), vec![1; 40])).collect(),
    );
    let base = write(&db);
    let meta = Meta::decode(&base[PAGE_HEADER_SIZE..]).expect("meta");
    let pages = meta.pgid;

    // Appends a freelist page listing `free` and two spare pages, pointing both metas at it.
    let with_freelist = |free: &[u64]| -> Vec<u8> {
        let mut bytes = base.clone();
        let mut page = vec![0u8; PAGE_SIZE];
        let mut h = [0u8; PAGE_HEADER_SIZE];
        PageHeader {
            id: pages,
            flags: FLAG_FREELIST,
            count: free.len() as u16,
            overflow: 0,
        }
        .encode(&mut h);
        page[..PAGE_HEADER_SIZE].copy_from_slice(&h);
        for (i, id) in free.iter().enumerate() {
            let at = PAGE_HEADER_SIZE + 8 * i;
            page[at..at + 8].copy_from_slice(&id.to_le_bytes());
        }
        bytes.extend_from_slice(&page);
        bytes.extend_from_slice(&vec![0u8; 2 * PAGE_SIZE]);
        for (m, txid) in [(0usize, meta.txid), (1, meta.txid - 1)] {
            let updated = Meta {
                freelist: pages,
                pgid: pages + 3,
                txid,
                ..meta
            };
            let at = m * PAGE_SIZE + PAGE_HEADER_SIZE;
            bytes[at..at + 64].copy_from_slice(&updated.encode());
        }
        bytes
    };
    let cases = [
        (with_freelist(&[pages + 1, pages + 2]), true),
        (with_freelist(&[pages + 1]), false),
        (with_freelist(&[pages + 1, pages + 2, 2]), false),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (bytes, sound)) in cases.iter().enumerate() {
        let r = BoltReader::open(bytes.as_slice()).expect("open");
        let problems = r.check().expect("check");
        assert_eq!(problems.is_empty(), *sound, "case {i}: {problems:?}");
        assert_eq!(read(bytes).expect("read"), db);
        if std::path::Path::new("/usr/bin/etcdctl").exists() {
            let path = dir.path().join(format!("case{i}"));
            std::fs::write(&path, bytes).expect("write");
            let out = Command::new("/usr/bin/etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "status"])
                .arg(&path)
                .output()
                .expect("etcdctl");
            assert_eq!(
                out.status.success(),
                *sound,
                "case {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
