//! etcd-format backups end to end, against Debian's etcd 3.4.23 and etcdctl:
//! * Rudder -> etcd: `etcdctl snapshot save` from `rudder store`, `etcdctl snapshot status` agrees with
//!   `rudder snapshot status`, `etcdctl snapshot restore`, and etcd serves the same keys, values, versions,
//!   revisions (current and old) and leases;
//! * etcd -> Rudder: a 100k-key snapshot saved from etcd (branch and overflow pages),
//!   `rudder snapshot restore`, and `rudder store` serves the same data;
//! * damaged files (a flipped byte, a truncated file) are refused by the hash check, by both tools;
//! * `--bump-revision` with `--mark-compacted`: the revision jumps and watches on old revisions are
//!   told they are compacted;
//! * three members restored from one file form a new cluster: same data on each, writes, and a member
//!   added afterwards receives the restored data;
//! * scheduled snapshots (`--snapshot-interval`): files appear, retention prunes them, and etcdctl
//!   accepts the newest.
//!
//! Skipped (with a note) when /usr/bin/etcd or /usr/bin/etcdctl is missing.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::free_port;
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchOptions};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
const RUDDER: &str = env!("CARGO_BIN_EXE_rudder");

fn have_etcd() -> bool {
    let ok = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    if !ok {
        eprintln!("skipping: Debian's etcd and etcdctl are not installed");
    }
    ok
}

/// A command with no inherited ETCD_* / ETCDCTL_* flags.
fn command(bin: &str) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCD") {
            c.env_remove(k);
        }
    }
    c.env("ETCDCTL_API", "3");
    c
}

fn run(mut c: Command) -> Output {
    let desc = format!("{c:?}");
    let out = c.output().unwrap_or_else(|e| panic!("{desc}: {e}"));
    eprintln!(
        "$ {desc}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 5)
    );
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ok(c: Command) -> String {
    let out = run(c);
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(c: Command) -> String {
    let out = run(c);
    assert!(!out.status.success(), "command unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rudder,
    Etcd,
}

/// One single-member server; killed when dropped.
struct Member {
    name: String,
    client_port: u16,
    child: Child,
    log: PathBuf,
}

impl Member {
    fn peer_url(name: &str, peer_port: u16) -> (String, String) {
        let url = format!("http://127.0.0.1:{peer_port}");
        (url.clone(), format!("{name}={url}"))
    }

    /// Starts a member on `data_dir` (fresh or restored) with flags that match a restore made with
    /// [`restore_flags`] for the same name and peer port. A client port taken in the meantime by
    /// someone else is retried with another one.
    fn start(kind: Kind, name: &str, data_dir: &Path, peer_port: u16) -> Member {
        Member::start_with(kind, name, data_dir, peer_port, &[])
    }

    /// [`Member::start`] with extra flags.
    fn start_with(kind: Kind, name: &str, data_dir: &Path, peer_port: u16, extra: &[&str]) -> Member {
        let (_, cluster) = Member::peer_url(name, peer_port);
        for _ in 0..3 {
            let mut m = Member::spawn(kind, name, data_dir, peer_port, &cluster, extra);
            if m.wait_healthy() {
                return m;
            }
        }
        panic!("{name}: no free client port after 3 tries");
    }

    /// Starts a member of `initial_cluster` without waiting for it (members of a new cluster wait for
    /// each other before they serve).
    fn spawn(kind: Kind, name: &str, data_dir: &Path, peer_port: u16, initial_cluster: &str, extra: &[&str]) -> Member {
        let client_port = free_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let (peer, _) = Member::peer_url(name, peer_port);
        let log = data_dir.with_extension("log");
        let out = File::create(&log).expect("log");
        let mut c = match kind {
            Kind::Rudder => {
                let mut c = command(RUDDER);
                c.arg("store");
                c
            }
            Kind::Etcd => command(ETCD),
        };
        c.args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", initial_cluster])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        let child = c.spawn().expect("spawn server");
        Member {
            name: name.to_string(),
            client_port,
            child,
            log,
        }
    }

    /// Waits for `endpoint health`; false if the server exited because its client port was taken.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if log.contains("address already in use") && log.contains(&self.client_port.to_string()) {
                    return false;
                }
                panic!("{} exited during startup ({st}):\n{}", self.name, tail(&log, 30));
            }
            let mut c = self.ctl();
            c.args(["--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"]);
            if c.output().is_ok_and(|o| o.status.success()) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy; see {}",
                self.name,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn ctl(&self) -> Command {
        let mut c = command(ETCDCTL);
        c.arg(format!("--endpoints={}", self.endpoint()));
        c
    }

    async fn client(&self) -> Client {
        Client::connect([format!("http://{}", self.endpoint())], None)
            .await
            .expect("connect")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The temporary directory goes away with the test: show the server's last words on failure.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- last lines of {} ---\n{}", self.name, tail(&log, 30));
        }
    }
}

/// Restore flags naming a single member `name` whose peer URL is on `peer_port`.
fn restore_flags(c: &mut Command, name: &str, data_dir: &Path, peer_port: u16) {
    let (peer, cluster) = Member::peer_url(name, peer_port);
    c.args(["--name", name, "--data-dir"]).arg(data_dir).args([
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        &peer,
    ]);
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Kv {
    key: Vec<u8>,
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
    lease: i64,
}

/// Every live key at `rev` (0 = current), paged; returns the revision read and the keys.
async fn dump(c: &mut Client, rev: i64) -> (i64, Vec<Kv>) {
    dump_with(c, rev, false).await
}

/// [`dump`], serializable (the member's own state) if asked.
async fn dump_with(c: &mut Client, rev: i64, serializable: bool) -> (i64, Vec<Kv>) {
    let mut out = Vec::new();
    let mut from = vec![0u8];
    let mut at = rev;
    loop {
        let mut opts = GetOptions::new().with_from_key().with_limit(5000);
        if serializable {
            opts = opts.with_serializable();
        }
        if at > 0 {
            opts = opts.with_revision(at);
        }
        let r = c.get(from.clone(), Some(opts)).await.expect("range");
        if at == 0 {
            at = r.header().expect("header").revision();
        }
        for kv in r.kvs() {
            out.push(Kv {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                create: kv.create_revision(),
                modified: kv.mod_revision(),
                version: kv.version(),
                lease: kv.lease(),
            });
        }
        if !r.more() {
            return (at, out);
        }
        from = out.last().map(|k| k.key.clone()).unwrap_or_default();
        from.push(0);
    }
}

/// (lease id, granted TTL, attached keys) of every lease.
async fn leases(c: &mut Client) -> Vec<(i64, i64, BTreeSet<Vec<u8>>)> {
    let mut out = Vec::new();
    for l in c.leases().await.expect("leases").leases() {
        let t = c
            .lease_time_to_live(l.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("ttl");
        out.push((l.id(), t.granted_ttl(), t.keys().iter().cloned().collect()));
    }
    out.sort();
    out
}

/// Puts `n` keys `prefix%07d` with values of `value_len` bytes, 128 per txn, from `tasks` clients.
async fn load(c: &Client, prefix: &str, n: usize, value_len: usize, tasks: usize) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut c = c.clone();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let ids: Vec<usize> = (0..n).filter(|i| i / 128 % tasks == t).collect();
            for chunk in ids.chunks(128) {
                let ops = chunk
                    .iter()
                    .map(|i| {
                        let v = format!("{i:0width$}", width = value_len);
                        TxnOp::put(format!("{prefix}{i:07}"), v, None)
                    })
                    .collect::<Vec<_>>();
                c.txn(Txn::new().and_then(ops)).await.expect("txn");
            }
        }));
    }
    for h in handles {
        h.await.expect("load task");
    }
}

/// History worth checking: updates (versions > 1), deletes (tombstones), leases, big values.
async fn churn(c: &mut Client) -> i64 {
    for i in 0..300 {
        c.put(format!("upd/{}", i % 30), format!("v{i}"), None)
            .await
            .expect("put");
    }
    for i in 0..20 {
        c.delete(format!("upd/{i}"), None).await.expect("delete");
    }
    let lease = c.lease_grant(3600, None).await.expect("grant").id();
    for i in 0..5 {
        c.put(format!("leased/{i}"), "x", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put leased");
    }
    c.lease_grant(1800, None).await.expect("grant unused lease");
    for i in 0..3 {
        // Values far larger than a page: overflow pages.
        c.put(format!("big/{i}"), vec![b'a' + i as u8; 300_000 + i * 1000], None)
            .await
            .expect("put big");
    }
    c.get("upd/0", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

fn status_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("status json {out:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rudder_snapshot_restores_into_etcd_and_bumps_revision() {
    if !have_etcd() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = Member::start(Kind::Rudder, "src", &tmp.path().join("src"), free_port());
    let mut c = src.client().await;
    load(&c, "k/", 5_000, 40, 2).await;
    let mid = churn(&mut c).await;
    load(&c, "late/", 500, 10, 1).await;
    let (rev, before) = dump(&mut c, 0).await;
    let (_, before_mid) = dump(&mut c, mid).await;
    let before_leases = leases(&mut c).await;
    assert!(before.len() > 5_000 && before_leases.len() == 2);

    // etcdctl saves from Rudder; both status implementations accept the file and agree.
    let file = tmp.path().join("rudder.db");
    let mut save = src.ctl();
    save.args(["snapshot", "save"]).arg(&file);
    ok(save);
    let size = std::fs::metadata(&file).expect("snapshot").len();
    eprintln!("snapshot from rudder: {size} bytes at revision {rev}");
    let mut st = command(ETCDCTL);
    st.args(["snapshot", "status", "-w", "json"]).arg(&file);
    let theirs = status_json(&ok(st));
    let mut st = command(RUDDER);
    st.args(["snapshot", "status", "-w", "json"]).arg(&file);
    let ours = status_json(&ok(st));
    assert_eq!(theirs, ours);
    assert_eq!(theirs["revision"].as_i64(), Some(rev));
    assert_eq!(theirs["totalSize"].as_u64(), Some(size - 32));

    // Our own client saves the same state.
    let file2 = tmp.path().join("rudder-save.db");
    let mut save = command(RUDDER);
    save.args(["snapshot", "save", "--endpoints", &src.endpoint()])
        .arg(&file2);
    assert!(ok(save).contains("Snapshot saved at"));
    let mut st = command(RUDDER);
    st.args(["snapshot", "status", "-w", "json"]).arg(&file2);
    assert_eq!(status_json(&ok(st))["revision"].as_i64(), Some(rev));

    // etcdctl restores it and etcd serves the same data.
    let etcd_dir = tmp.path().join("etcd");
    let etcd_peer = free_port();
    let mut restore = command(ETCDCTL);
    restore.args(["snapshot", "restore"]).arg(&file);
    restore_flags(&mut restore, "restored", &etcd_dir, etcd_peer);
    ok(restore);
    let etcd = Member::start(Kind::Etcd, "restored", &etcd_dir, etcd_peer);
    let mut e = etcd.client().await;
    let (etcd_rev, after) = dump(&mut e, 0).await;
    assert_eq!(etcd_rev, rev);
    assert!(after == before, "etcd serves different keys after restore");
    assert!(
        dump(&mut e, mid).await.1 == before_mid,
        "etcd serves a different history"
    );
    assert_eq!(leases(&mut e).await, before_leases);
    let put = e.put("after-restore", "1", None).await.expect("put on etcd");
    assert_eq!(put.header().expect("header").revision(), rev + 1);
    drop(etcd);

    // --bump-revision with --mark-compacted: old revisions are compacted away for readers and watchers.
    let bumped_dir = tmp.path().join("bumped");
    let bumped_peer = free_port();
    let mut restore = command(RUDDER);
    restore.args(["snapshot", "restore"]).arg(&file);
    restore_flags(&mut restore, "bumped", &bumped_dir, bumped_peer);
    restore.args(["--bump-revision", "1000", "--mark-compacted"]);
    ok(restore);
    let bumped = Member::start(Kind::Rudder, "bumped", &bumped_dir, bumped_peer);
    let mut b = bumped.client().await;
    let (bumped_rev, bumped_kvs) = dump(&mut b, 0).await;
    assert_eq!(bumped_rev, rev + 1000);
    assert!(bumped_kvs == before, "bumped restore changed the keys");
    let old = b.get("k/0000001", Some(GetOptions::new().with_revision(rev))).await;
    let err = old.expect_err("read at an old revision").to_string();
    assert!(err.contains("required revision has been compacted"), "{err}");
    let (_watcher, mut stream) = b
        .watch("k/", Some(WatchOptions::new().with_prefix().with_start_revision(mid)))
        .await
        .expect("watch");
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("watch answer in time")
        .expect("watch stream")
        .expect("watch response");
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.compact_revision(), rev + 1000);
    let put = b.put("after-bump", "1", None).await.expect("put after bump");
    assert_eq!(put.header().expect("header").revision(), rev + 1001);
    assert_eq!(leases(&mut b).await, before_leases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshot_restores_into_rudder() {
    if !have_etcd() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Member::start(Kind::Etcd, "etcd", &tmp.path().join("etcd"), free_port());
    let mut e = etcd.client().await;
    let started = Instant::now();
    load(&e, "k/", 100_000, 100, 4).await;
    eprintln!("100k keys into etcd in {:?}", started.elapsed());
    let mid = churn(&mut e).await;
    load(&e, "late/", 1_000, 10, 1).await;
    let (rev, before) = dump(&mut e, 0).await;
    let (_, before_mid) = dump(&mut e, mid).await;
    let before_leases = leases(&mut e).await;

    let file = tmp.path().join("etcd.db");
    let mut save = etcd.ctl();
    save.args(["snapshot", "save"]).arg(&file);
    ok(save);
    let size = std::fs::metadata(&file).expect("snapshot").len();
    eprintln!("snapshot from etcd: {size} bytes at revision {rev}");
    assert!(size > 10 << 20, "expected a multi-MiB snapshot, got {size} bytes");
    // `rudder snapshot save` works against a real etcd too.
    let file2 = tmp.path().join("etcd-rudder-save.db");
    let mut save = command(RUDDER);
    save.args(["snapshot", "save", "--endpoints", &etcd.endpoint()])
        .arg(&file2);
    ok(save);
    drop(etcd);

    for f in [&file, &file2] {
        let mut st = command(ETCDCTL);
        st.args(["snapshot", "status", "-w", "json"]).arg(f);
        let theirs = status_json(&ok(st));
        let mut st = command(RUDDER);
        st.args(["snapshot", "status", "-w", "json"]).arg(f);
        assert_eq!(status_json(&ok(st)), theirs);
        assert_eq!(theirs["revision"].as_i64(), Some(rev));
    }

    let dir = tmp.path().join("rudder");
    let peer = free_port();
    let mut restore = command(RUDDER);
    restore.args(["snapshot", "restore"]).arg(&file);
    restore_flags(&mut restore, "restored", &dir, peer);
    let started = Instant::now();
    ok(restore);
    eprintln!("rudder snapshot restore of {size} bytes in {:?}", started.elapsed());
    let rudder = Member::start(Kind::Rudder, "restored", &dir, peer);
    let mut r = rudder.client().await;
    let (rudder_rev, after) = dump(&mut r, 0).await;
    assert_eq!(rudder_rev, rev);
    assert_eq!(after.len(), before.len());
    assert!(after == before, "rudder serves different keys after restore");
    assert!(
        dump(&mut r, mid).await.1 == before_mid,
        "rudder serves a different history"
    );
    assert_eq!(leases(&mut r).await, before_leases);
    let put = r.put("after-restore", "1", None).await.expect("put on rudder");
    assert_eq!(put.header().expect("header").revision(), rev + 1);

    // And back: etcdctl saves the 100k-key state from Rudder, and bbolt (etcdctl status) accepts it.
    let again = tmp.path().join("rudder-100k.db");
    let mut save = rudder.ctl();
    save.args(["snapshot", "save"]).arg(&again);
    let started = Instant::now();
    ok(save);
    eprintln!(
        "etcdctl snapshot save of 100k keys from rudder: {} bytes in {:?}",
        std::fs::metadata(&again).expect("snapshot").len(),
        started.elapsed()
    );
    let mut st = command(ETCDCTL);
    st.args(["snapshot", "status", "-w", "json"]).arg(&again);
    assert_eq!(status_json(&ok(st))["revision"].as_i64(), Some(rev + 1));
    drop(rudder);

    damaged_files_are_refused(tmp.path(), &file);
}

/// A flipped byte and a truncated file fail the hash check, with etcd's words, in both tools.
fn damaged_files_are_refused(tmp: &Path, good: &Path) {
    let mut bytes = std::fs::read(good).expect("read snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let flipped = tmp.join("flipped.db");
    std::fs::write(&flipped, &bytes).expect("write");
    let truncated = tmp.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).expect("write");

    let cases = [
        (&flipped, "expected sha256"),
        (&truncated, "snapshot missing hash but --skip-hash-check=false"),
    ];
    for (i, (file, words)) in cases.into_iter().enumerate() {
        for bin in [RUDDER, ETCDCTL] {
            let mut c = command(bin);
            c.args(["snapshot", "restore"]).arg(file);
            let dir = tmp.join(format!("refused-{i}-{}", if bin == RUDDER { "rudder" } else { "etcd" }));
            restore_flags(&mut c, "refused", &dir, 2380);
            let err = fails(c);
            assert!(err.contains(words), "{bin} on {}: {err}", file.display());
            if bin == RUDDER {
                assert!(!dir.join("member").exists(), "a refused restore left a data dir behind");
            }
        }
    }
}

/// The scheduled snapshot files in `dir` (complete ones only), oldest first.
fn scheduled_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".db"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The revision a scheduled snapshot's name carries (`snapshot-<time>-rev<N>.db`).
fn name_revision(p: &Path) -> i64 {
    let name = p.file_name().and_then(|n| n.to_str()).expect("file name");
    let (_, rev) = name
        .strip_suffix(".db")
        .and_then(|n| n.rsplit_once("-rev"))
        .unwrap_or_else(|| panic!("unexpected snapshot name {name}"));
    rev.parse()
        .unwrap_or_else(|_| panic!("unexpected snapshot name {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_snapshots_are_pruned_and_accepted_by_etcdctl() {
    if !have_etcd() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("sched");
    let m = Member::start_with(
        Kind::Rudder,
        "sched",
        &data,
        free_port(),
        &["--snapshot-interval", "1s", "--snapshot-retention", "2"],
    );
    // The default directory: <data-dir>/snapshots.
    let dir = data.join("snapshots");
    let mut c = m.client().await;
    let mut seen = BTreeSet::new();
    let mut last_rev = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let put = c.put("sched/k", format!("v{}", seen.len()), None).await.expect("put");
        last_rev = put.header().expect("header").revision();
        let files = scheduled_files(&dir);
        assert!(files.len() <= 2, "retention 2, found {files:?}");
        seen.extend(files);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A snapshot taken after the last write holds it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let newest = loop {
        let files = scheduled_files(&dir);
        assert!(files.len() <= 2, "retention 2, found {files:?}");
        seen.extend(files.iter().cloned());
        if let Some(f) = files.last().filter(|f| name_revision(f) >= last_rev) {
            break f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot with revision {last_rev} in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen.len() >= 3, "snapshots were taken and pruned: {seen:?}");
    let mut st = command(ETCDCTL);
    st.args(["snapshot", "status", "-w", "json"]).arg(&newest);
    let status = status_json(&ok(st));
    let rev = status["revision"].as_i64().expect("revision");
    assert!(rev >= last_rev, "snapshot revision {rev} < {last_rev}");
    assert_eq!(rev, name_revision(&newest));
    let mut st = command(RUDDER);
    st.args(["snapshot", "status", "-w", "json"]).arg(&newest);
    assert_eq!(status_json(&ok(st)), status);

    let metrics = common::http_get(m.client_port, "/metrics").expect("metrics").body;
    let taken: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rudder_snapshot_scheduled_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rudder_snapshot_scheduled_total in\n{metrics}"));
    assert!(taken >= 3, "{taken} scheduled snapshots counted");
    assert!(
        metrics.contains("rudder_snapshot_scheduled_failures_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_restored_from_one_file_form_a_cluster() {
    if !have_etcd() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = Member::start(Kind::Rudder, "src", &tmp.path().join("src"), free_port());
    let mut c = src.client().await;
    load(&c, "k/", 2_000, 20, 2).await;
    let mid = churn(&mut c).await;
    load(&c, "late/", 200, 10, 1).await;
    c.compact(mid - 100, None).await.expect("compact");
    let (rev, before) = dump(&mut c, 0).await;
    let (_, before_mid) = dump(&mut c, mid).await;
    let before_leases = leases(&mut c).await;
    let file = tmp.path().join("backup.db");
    let mut save = src.ctl();
    save.args(["snapshot", "save"]).arg(&file);
    ok(save);
    drop(src);

    // Every member restores the same file with the same cluster flags, as with etcd.
    let token = "restored-cluster";
    let names = ["m1", "m2", "m3", "m4"];
    let peers: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let cluster = |n: usize| {
        names[..n]
            .iter()
            .zip(&peers)
            .map(|(name, port)| Member::peer_url(name, *port).1)
            .collect::<Vec<_>>()
            .join(",")
    };
    let initial = cluster(3);
    let dirs: Vec<PathBuf> = names.iter().map(|n| tmp.path().join(n)).collect();
    for i in 0..3 {
        let mut r = command(RUDDER);
        r.args(["snapshot", "restore"]).arg(&file);
        r.args(["--name", names[i], "--data-dir"]).arg(&dirs[i]).args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-token",
            token,
            "--initial-advertise-peer-urls",
            &Member::peer_url(names[i], peers[i]).0,
        ]);
        ok(r);
    }
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            Member::spawn(
                Kind::Rudder,
                names[i],
                &dirs[i],
                peers[i],
                &initial,
                &["--initial-cluster-token", token],
            )
        })
        .collect();
    for m in &mut members {
        assert!(m.wait_healthy(), "{} did not start", m.name);
    }

    // Each member serves the restored keys, values, revisions, history and leases by itself.
    for m in &members {
        let mut mc = m.client().await;
        let (r, after) = dump_with(&mut mc, 0, true).await;
        assert_eq!(r, rev, "{}: revision", m.name);
        assert!(after == before, "{} serves different keys after restore", m.name);
        assert!(
            dump_with(&mut mc, mid, true).await.1 == before_mid,
            "{} serves a different history",
            m.name
        );
        let old = mc
            .get("k/0000001", Some(GetOptions::new().with_revision(mid - 101)))
            .await
            .expect_err("compacted before the backup");
        assert!(
            old.to_string().contains("required revision has been compacted"),
            "{old}"
        );
        assert_eq!(leases(&mut mc).await, before_leases, "{}: leases", m.name);
    }
    let mut c1 = members[0].client().await;
    let list = c1.member_list().await.expect("member list");
    let mut listed: Vec<String> = list.members().iter().map(|m| m.name().to_string()).collect();
    listed.sort();
    assert_eq!(listed, ["m1", "m2", "m3"]);

    // A write through any member lands on all of them.
    let mut c2 = members[1].client().await;
    let put = c2.put("after-restore", "1", None).await.expect("put after restore");
    assert_eq!(put.header().expect("header").revision(), rev + 1);
    for m in &members {
        let mut mc = m.client().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = mc
                .get("after-restore", Some(GetOptions::new().with_serializable()))
                .await
                .expect("get");
            if r.kvs().len() == 1 {
                assert_eq!(r.kvs()[0].mod_revision(), rev + 1);
                break;
            }
            assert!(Instant::now() < deadline, "{} never saw the write", m.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A member added afterwards gets the restored data (by snapshot: no log holds it).
    let (peer4, _) = Member::peer_url(names[3], peers[3]);
    c1.member_add([peer4.as_str()], None).await.expect("member add");
    let mut m4 = Member::spawn(
        Kind::Rudder,
        names[3],
        &dirs[3],
        peers[3],
        &cluster(4),
        &["--initial-cluster-token", token, "--initial-cluster-state", "existing"],
    );
    assert!(m4.wait_healthy(), "m4 did not start");
    let mut c4 = m4.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (r4, after4) = loop {
        let (r, kvs) = dump_with(&mut c4, 0, true).await;
        if r > rev {
            break (r, kvs);
        }
        assert!(Instant::now() < deadline, "m4 never caught up (revision {r})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r4, rev + 1);
    let (_, on_m1) = dump_with(&mut c1, 0, true).await;
    assert!(after4 == on_m1, "m4 serves different keys than m1");
    assert_eq!(after4.len(), before.len() + 1);
    assert!(
        dump_with(&mut c4, mid, true).await.1 == before_mid,
        "m4 serves a different history"
    );
    assert_eq!(leases(&mut c4).await, before_leases, "m4: leases");
    members.push(m4);
}
