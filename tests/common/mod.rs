//! Shared end-to-end harness for `rudder store`.
//!
//! Every test starts its own single-member server on private ports with a private temporary data
//! directory. By default the server is this crate's binary (`rudder store ...`); with
//! `RUDDER_E2E_TARGET=etcd` the very same flags are given to `/usr/bin/etcd` instead, so the whole suite
//! can be calibrated against a real etcd (Debian ships 3.4.23). The clients are Debian's `etcdctl`
//! (API v3) and, in some files, the `etcd-client` crate.
//!
//! Running (always `export CARGO_TARGET_DIR=/var/tmp/rudder-target`):
//! * against rudder: `cargo test --release --tests` (or `--test etcdctl_kv`, ...)
//! * calibration against etcd: `RUDDER_E2E_TARGET=etcd cargo test --release --tests`
//! * `--no-fail-fast` to see every failing file; `-- --skip check_perf` to leave out the 60 s
//!   `etcdctl check perf` test.
//!
//! Each server's stdout+stderr go to `server.log` in its temp dir, next to the data dir
//! (`<tmp>/data`); failure messages include the tail of it, and the dir is kept on panic.
//!
//! Environment knobs:
//! * `RUDDER_E2E_TARGET`  — `rudder` (default) or `etcd`.
//! * `RUDDER_E2E_ETCD`    — etcd binary for the etcd target (default `/usr/bin/etcd`).
//! * `RUDDER_E2E_ETCDCTL` — etcdctl binary (default `/usr/bin/etcdctl`).
//! * `RUDDER_E2E_KEEP=1`  — never delete server temp dirs (they are always kept when a test panics).
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

pub mod cluster;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// How long a server may take to become healthy.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one short etcdctl invocation (etcdctl's own --command-timeout is set lower).
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait for a line from a long-running etcdctl command.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Target selection
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Rudder,
    Etcd,
}

pub fn target() -> Target {
    match std::env::var("RUDDER_E2E_TARGET").as_deref() {
        Ok("etcd") => Target::Etcd,
        Ok("") | Ok("rudder") | Err(_) => Target::Rudder,
        Ok(other) => panic!("RUDDER_E2E_TARGET must be `rudder` or `etcd`, got {other:?}"),
    }
}

pub fn etcdctl_bin() -> String {
    std::env::var("RUDDER_E2E_ETCDCTL").unwrap_or_else(|_| "/usr/bin/etcdctl".to_string())
}

fn etcd_bin() -> String {
    std::env::var("RUDDER_E2E_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".to_string())
}

fn keep_dirs() -> bool {
    std::env::var("RUDDER_E2E_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Remove inherited `ETCD_*` / `ETCDCTL_*` variables: etcd treats `ETCD_*` as flags and etcdctl
/// `ETCDCTL_*` as flags, so a developer's shell must not leak into the tests.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("ETCD_") || k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

// Ports are taken from 10000..32000, below Linux's default ephemeral range (32768..60999), so an
// outgoing connection of some client can never be sitting on a port we are about to hand out.
const PORT_LO: u32 = 10_000;
const PORT_SPAN: u32 = 22_000;

fn port_registry() -> &'static Mutex<HashSet<u16>> {
    static R: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port that is currently free and has never been handed out by this process.
/// Different test binaries start at different offsets (derived from the pid and the clock).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static OFFSET: OnceLock<u32> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % PORT_SPAN
    });
    for _ in 0..PORT_SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_LO + (offset + n) % PORT_SPAN) as u16;
        let mut used = port_registry().lock().unwrap_or_else(|e| e.into_inner());
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free TCP port found in {}..{}", PORT_LO, PORT_LO + PORT_SPAN);
}

// ---------------------------------------------------------------------------------------------
// Watchdog: kills a child if this test process dies without running destructors (SIGKILL,
// abort, ...). `sh` blocks reading a pipe whose only writer is us; EOF means we are gone.
// ---------------------------------------------------------------------------------------------

struct Watchdog(Option<Child>);

impl Watchdog {
    fn guard(pid: u32) -> Watchdog {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _x; kill -9 {pid} 2>/dev/null"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Watchdog(child)
    }

    /// Disarm: kill the watchdog itself (never let it fire at a pid that may be reused).
    fn disarm(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}

fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Server options
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub name: Option<String>,
    pub quota_backend_bytes: Option<u64>,
    pub max_request_bytes: Option<u64>,
    pub max_txn_ops: Option<u64>,
    /// (mode, retention), e.g. ("revision", "1000") or ("periodic", "1h").
    pub auto_compaction: Option<(String, String)>,
    pub log_level: Option<String>,
    pub extra_args: Vec<String>,
}

impl Opts {
    pub fn new() -> Opts {
        Opts::default()
    }
    pub fn name(mut self, n: &str) -> Opts {
        self.name = Some(n.to_string());
        self
    }
    pub fn quota_backend_bytes(mut self, b: u64) -> Opts {
        self.quota_backend_bytes = Some(b);
        self
    }
    pub fn max_request_bytes(mut self, b: u64) -> Opts {
        self.max_request_bytes = Some(b);
        self
    }
    pub fn max_txn_ops(mut self, n: u64) -> Opts {
        self.max_txn_ops = Some(n);
        self
    }
    pub fn auto_compaction(mut self, mode: &str, retention: &str) -> Opts {
        self.auto_compaction = Some((mode.to_string(), retention.to_string()));
        self
    }
    pub fn log_level(mut self, l: &str) -> Opts {
        self.log_level = Some(l.to_string());
        self
    }
    pub fn arg(mut self, a: &str) -> Opts {
        self.extra_args.push(a.to_string());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

pub struct Server {
    pub target: Target,
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    opts: Opts,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    starts: u32,
}

enum StartError {
    /// The server exited before becoming healthy; `true` if it looks like a port clash.
    Exited(ExitStatus, bool),
    Timeout,
}

impl Server {
    /// Start a fresh single-member server with default options.
    pub fn start_default() -> Server {
        Server::start(Opts::new())
    }

    /// Start a fresh single-member server and wait until `etcdctl endpoint health` succeeds.
    pub fn start(opts: Opts) -> Server {
        let target = target();
        let name = opts.name.clone().unwrap_or_else(|| "e2e".to_string());
        let tmp = tempfile::Builder::new()
            .prefix("rudder-e2e-")
            .tempdir_in(std::env::temp_dir())
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let data_dir = root.join("data");
        let log_path = root.join("server.log");
        let mut srv = Server {
            target,
            name,
            client_port: 0,
            peer_port: 0,
            opts,
            tmp: Some(tmp),
            root,
            data_dir,
            log_path,
            child: None,
            watchdog: None,
            starts: 0,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            srv.client_port = free_port();
            srv.peer_port = free_port();
            let _ = std::fs::remove_dir_all(&srv.data_dir);
            srv.spawn();
            match srv.wait_ready(STARTUP_TIMEOUT) {
                Ok(()) => return srv,
                Err(StartError::Exited(_, true)) if attempt < 5 => {
                    srv.note(&format!(
                        "port clash on {}/{}, retrying with new ports",
                        srv.client_port, srv.peer_port
                    ));
                    srv.child = None;
                    continue;
                }
                Err(StartError::Exited(st, _)) => srv.fail(&format!("server exited during startup with {st}")),
                Err(StartError::Timeout) => {
                    srv.fail(&format!("server did not become healthy within {STARTUP_TIMEOUT:?}"))
                }
            }
        }
    }

    fn args(&self) -> Vec<String> {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut a: Vec<String> = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("{}={}", self.name, peer),
        ];
        if let Some(b) = self.opts.quota_backend_bytes {
            a.extend(["--quota-backend-bytes".into(), b.to_string()]);
        }
        if let Some(b) = self.opts.max_request_bytes {
            a.extend(["--max-request-bytes".into(), b.to_string()]);
        }
        if let Some(n) = self.opts.max_txn_ops {
            a.extend(["--max-txn-ops".into(), n.to_string()]);
        }
        if let Some((mode, ret)) = &self.opts.auto_compaction {
            a.extend([
                "--auto-compaction-mode".into(),
                mode.clone(),
                "--auto-compaction-retention".into(),
                ret.clone(),
            ]);
        }
        if let Some(l) = &self.opts.log_level {
            a.extend(["--log-level".into(), l.clone()]);
        }
        a.extend(self.opts.extra_args.iter().cloned());
        a
    }

    fn command(&self) -> Command {
        let mut cmd = match self.target {
            Target::Rudder => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_rudder"));
                c.arg("store");
                c
            }
            Target::Etcd => Command::new(etcd_bin()),
        };
        scrub_env(&mut cmd);
        cmd.args(self.args());
        cmd
    }

    fn note(&self, msg: &str) {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&self.log_path) {
            let _ = writeln!(f, "=== [e2e harness] {msg}");
        }
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let cmd = self.command();
        let line = format!("{:?}", cmd);
        self.note(&format!("start #{}: {}", self.starts, line));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = cmd;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn server {line}: {e}"));
        self.watchdog = Some(Watchdog::guard(child.id()));
        self.child = Some(child);
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    if let Some(w) = self.watchdog.as_mut() {
                        w.disarm();
                    }
                    let log = self.log_text().to_lowercase();
                    let clash = log.contains("address already in use");
                    return Err(StartError::Exited(st, clash));
                }
            }
            if TcpStream::connect_timeout(
                &format!("127.0.0.1:{}", self.client_port).parse().expect("addr"),
                Duration::from_millis(500),
            )
            .is_ok()
            {
                let out = self.ctl_with(
                    &["--dial-timeout=2s", "--command-timeout=3s", "endpoint", "health"],
                    None,
                    Duration::from_secs(10),
                );
                if out.success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Timeout);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT` — the client URL (gRPC + HTTP).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:PORT`: what the harness passes to etcdctl `--endpoints` (and what etcdctl echoes
    /// back in `endpoint` / `defrag` output).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }

    /// The last `n` lines of the server's stdout+stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// Panic with `msg`, the server command line and the tail of its log.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- target: {:?}, log {} — last 60 lines ---\n{}\n--- end of server log ---",
            self.target,
            self.log_path.display(),
            self.log_tail(60)
        );
    }

    /// SIGKILL the server (no chance to flush anything) and reap it. The data dir is kept.
    pub fn kill9(&mut self) {
        if let Some(w) = self.watchdog.as_mut() {
            w.disarm();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.note("killed with SIGKILL");
        }
    }

    /// SIGTERM and wait (up to 20 s, then SIGKILL). The data dir is kept.
    pub fn stop(&mut self) {
        if let Some(w) = self.watchdog.as_mut() {
            w.disarm();
        }
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            match wait_timeout(&mut c, Duration::from_secs(20)) {
                Some(st) => self.note(&format!("stopped with SIGTERM: {st}")),
                None => {
                    let _ = c.kill();
                    let _ = c.wait();
                    self.note("did not stop within 20s of SIGTERM; killed with SIGKILL");
                }
            }
        }
    }

    /// Stop (gracefully if still running) and start again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        match self.wait_ready(STARTUP_TIMEOUT) {
            Ok(()) => {}
            Err(StartError::Exited(st, _)) => self.fail(&format!("server exited during restart with {st}")),
            Err(StartError::Timeout) => self.fail(&format!(
                "restarted server did not become healthy within {STARTUP_TIMEOUT:?}"
            )),
        }
    }

    // -----------------------------------------------------------------------------------------
    // etcdctl
    // -----------------------------------------------------------------------------------------

    /// etcdctl with `--endpoints=<endpoint>`. The harness passes `127.0.0.1:PORT` (no scheme):
    /// with `http://127.0.0.1:PORT`, etcdctl 3.4's per-endpoint commands (endpoint status/hashkv,
    /// defrag) dial `passthrough:///http://...` and send `:authority: http://127.0.0.1:PORT`,
    /// which the Rust h2 server rejects (RST_STREAM PROTOCOL_ERROR) while etcd accepts it. That
    /// case has its own test (etcdctl_maint.rs) so it does not mask everything else.
    fn ctl_command_at(&self, endpoint: &str) -> Command {
        let mut cmd = Command::new(etcdctl_bin());
        scrub_env(&mut cmd);
        cmd.env("ETCDCTL_API", "3");
        cmd.arg(format!("--endpoints={endpoint}"));
        cmd
    }

    fn ctl_command(&self) -> Command {
        self.ctl_command_at(&self.endpoint())
    }

    fn ctl_with(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CtlOutput {
        self.ctl_with_at(&self.endpoint(), args, stdin, timeout)
    }

    fn ctl_with_at(&self, endpoint: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CtlOutput {
        let mut cmd = self.ctl_command_at(endpoint);
        // Generous, but well below CTL_TIMEOUT; individual calls may override (later flag wins).
        if !args.iter().any(|a| a.starts_with("--command-timeout")) {
            cmd.arg("--command-timeout=20s");
        }
        if !args.iter().any(|a| a.starts_with("--dial-timeout")) {
            cmd.arg("--dial-timeout=5s");
        }
        cmd.args(args);
        run(cmd, stdin, timeout)
    }

    /// Run `etcdctl --endpoints=<this server> ARGS` (ETCDCTL_API=3) and capture its output.
    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        self.ctl_with(args, None, CTL_TIMEOUT)
    }

    /// Like [`ctl`] but with an explicit `--endpoints` value (e.g. `http://127.0.0.1:PORT`).
    pub fn ctl_at(&self, endpoint: &str, args: &[&str]) -> CtlOutput {
        self.ctl_with_at(endpoint, args, None, CTL_TIMEOUT)
    }

    /// Like [`ctl`] with `input` on stdin (e.g. `txn -i`, or `put KEY` reading the value).
    pub fn ctl_stdin(&self, args: &[&str], input: &[u8]) -> CtlOutput {
        self.ctl_with(args, Some(input), CTL_TIMEOUT)
    }

    /// Like [`ctl`] with an explicit overall timeout (for `check perf`).
    pub fn ctl_timeout(&self, args: &[&str], timeout: Duration) -> CtlOutput {
        self.ctl_with(args, None, timeout)
    }

    /// Run and require success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if !out.success() {
            self.fail(&format!("expected success:\n{out}"));
        }
        out.stdout
    }

    /// Run with `-w json` appended, require success and parse stdout.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a: Vec<&str> = args.to_vec();
        a.push("-w");
        a.push("json");
        let out = self.ctl(&a);
        if !out.success() {
            self.fail(&format!("expected success:\n{out}"));
        }
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| self.fail(&format!("stdout is not JSON ({e}):\n{out}")))
    }

    /// Run, require failure, and return the `Error: ...` line etcdctl printed (without the
    /// `Error: ` prefix).
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if out.success() {
            self.fail(&format!("expected failure:\n{out}"));
        }
        out.error_message()
            .unwrap_or_else(|| self.fail(&format!("no `Error:` line:\n{out}")))
    }

    /// Spawn a long-running etcdctl (watch, lease keep-alive, lock, elect, ...).
    pub fn ctl_spawn(&self, args: &[&str]) -> Running {
        let mut cmd = self.ctl_command();
        cmd.args(args);
        Running::spawn(cmd)
    }

    /// Current store revision (header of a range request).
    pub fn revision(&self) -> i64 {
        let v = self.ctl_json(&["get", "__e2e_revision_probe__"]);
        header_rev(&v)
    }

    // -----------------------------------------------------------------------------------------
    // etcd-client
    // -----------------------------------------------------------------------------------------

    pub async fn client(&self) -> etcd_client::Client {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(10));
        match tokio::time::timeout(
            Duration::from_secs(20),
            etcd_client::Client::connect([self.client_url()], Some(opts)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => self.fail(&format!("etcd-client connect to {} failed: {e}", self.client_url())),
            Err(_) => self.fail(&format!("etcd-client connect to {} timed out", self.client_url())),
        }
    }

    /// Minimal HTTP/1.1 GET against the client URL: (status code, headers, body).
    pub fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.client_port, path).unwrap_or_else(|e| self.fail(&format!("HTTP GET {path}: {e}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if let Some(w) = self.watchdog.as_mut() {
            w.disarm();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if panicking || keep_dirs() {
            if let Some(t) = self.tmp.take() {
                let p = t.keep();
                eprintln!(
                    "[e2e] kept server dir {} (target {:?}); last 40 log lines:\n{}",
                    p.display(),
                    self.target,
                    self.log_tail(40)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a command with a timeout
// ---------------------------------------------------------------------------------------------

pub struct CtlOutput {
    pub cmd: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CtlOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The message of the last `Error: ...` line on stderr, without the prefix.
    pub fn error_message(&self) -> Option<String> {
        self.stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Error: "))
            .map(|s| s.trim_end().to_string())
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl std::fmt::Display for CtlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.cmd)?;
        if self.timed_out {
            writeln!(f, "(timed out and killed)")?;
        }
        writeln!(f, "exit: {:?}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl std::fmt::Debug for CtlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(' ') {
            let _ = write!(s, " {a:?}");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Run `cmd` to completion (killing it after `timeout`), feeding `stdin`, capturing output.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CtlOutput {
    let desc = describe(&cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut wd = Watchdog::guard(child.id());
    let writer = stdin.map(|input| {
        let mut w = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = w.write_all(&input);
        })
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let status = match wait_timeout(&mut child, timeout) {
        Some(st) => Some(st),
        None => {
            timed_out = true;
            let _ = child.kill();
            child.wait().ok()
        }
    };
    wd.disarm();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    CtlOutput {
        cmd: desc,
        status,
        stdout,
        stderr,
        timed_out,
    }
}

// ---------------------------------------------------------------------------------------------
// Long-running etcdctl commands
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Out(String),
    Err(String),
}

pub struct Running {
    pub cmd: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Option<Line>>,
    open_streams: usize,
    /// Every line received so far, in arrival order (for failure messages).
    pub transcript: Vec<Line>,
    /// Stdout lines received but not yet consumed by `next_line`.
    pending: std::collections::VecDeque<String>,
    watchdog: Watchdog,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let desc = describe(&cmd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
        let watchdog = Watchdog::guard(child.id());
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                match l {
                    Ok(l) => {
                        if tx.send(Some(Line::Out(l))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(None);
        });
        thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                match l {
                    Ok(l) => {
                        if tx2.send(Some(Line::Err(l))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx2.send(None);
        });
        let stdin = child.stdin.take();
        Running {
            cmd: desc,
            child,
            stdin,
            rx,
            open_streams: 2,
            transcript: Vec::new(),
            pending: Default::default(),
            watchdog,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Receive one line (stdout or stderr) or `None` on timeout / both streams closed.
    fn recv(&mut self, deadline: Instant) -> Option<Line> {
        loop {
            if self.open_streams == 0 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(Some(l)) => {
                    self.transcript.push(l.clone());
                    return Some(l);
                }
                Ok(None) => self.open_streams -= 1,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.open_streams = 0;
                    return None;
                }
            }
        }
    }

    /// Drain everything that has already arrived without waiting.
    fn pump(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Some(l) => {
                    self.transcript.push(l.clone());
                    if let Line::Out(s) = l {
                        self.pending.push_back(s);
                    }
                }
                None => self.open_streams = self.open_streams.saturating_sub(1),
            }
        }
    }

    /// Next stdout line (stderr lines are recorded in the transcript only).
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        if let Some(l) = self.pending.pop_front() {
            return Some(l);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline)? {
                Line::Out(s) => return Some(s),
                Line::Err(_) => continue,
            }
        }
    }

    /// Next stdout line, panicking (with the transcript) if none arrives in `timeout`.
    pub fn expect_next(&mut self, timeout: Duration) -> String {
        match self.next_line(timeout) {
            Some(l) => l,
            None => self.fail(&format!("no further stdout line within {timeout:?}")),
        }
    }

    /// The next stdout lines must be exactly `expected`.
    pub fn expect_lines(&mut self, expected: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, want) in expected.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(got) if got == *want => {}
                Some(got) => self.fail(&format!(
                    "line {i} of expected block {expected:?}: got {got:?}, want {want:?}"
                )),
                None => self.fail(&format!(
                    "timed out after {timeout:?} waiting for line {i} ({want:?}) of {expected:?}"
                )),
            }
        }
    }

    /// Skip stdout lines until one satisfies `pred`; returns it.
    pub fn wait_for_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if pred(&l) => return l,
                Some(_) => continue,
                None => self.fail(&format!("timed out after {timeout:?} waiting for {what}")),
            }
        }
    }

    /// Wait for a stderr line containing `needle`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(Line::Err(l)) = self
            .transcript
            .iter()
            .find(|l| matches!(l, Line::Err(s) if s.contains(needle)))
        {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline) {
                Some(Line::Err(s)) if s.contains(needle) => return s,
                Some(Line::Out(s)) => self.pending.push_back(s),
                Some(Line::Err(_)) => {}
                None => self.fail(&format!(
                    "timed out after {timeout:?} waiting for stderr containing {needle:?}"
                )),
            }
        }
    }

    /// Assert that no stdout line arrives during `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        if let Some(l) = self.next_line(d) {
            self.fail(&format!("expected no output for {d:?}, got {l:?}"));
        }
    }

    pub fn write_line(&mut self, line: &str) {
        let cmd = self.cmd.clone();
        let w = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("stdin of {cmd} already closed"));
        w.write_all(line.as_bytes()).expect("write to stdin");
        w.write_all(b"\n").expect("write to stdin");
        w.flush().expect("flush stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGINT (like Ctrl-C): etcdctl lock/elect release their session on it.
    pub fn interrupt(&mut self) {
        send_signal(self.child.id(), "INT");
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for exit; collects remaining output into the transcript.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let st = match wait_timeout(&mut self.child, timeout) {
            Some(st) => st,
            None => self.fail(&format!("process did not exit within {timeout:?}")),
        };
        self.watchdog.disarm();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(l) = self.recv(deadline) {
            if let Line::Out(s) = l {
                self.pending.push_back(s);
            }
        }
        st
    }

    pub fn kill(&mut self) {
        self.watchdog.disarm();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn transcript_text(&mut self) -> String {
        self.pump();
        let mut s = String::new();
        for l in &self.transcript {
            match l {
                Line::Out(x) => {
                    let _ = writeln!(s, "out| {x}");
                }
                Line::Err(x) => {
                    let _ = writeln!(s, "err| {x}");
                }
            }
        }
        s
    }

    pub fn fail(&mut self, msg: &str) -> ! {
        let t = self.transcript_text();
        panic!("{}: {msg}\n--- transcript so far ---\n{t}--- end ---", self.cmd);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.watchdog.disarm();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers for `etcdctl -w json` output
// ---------------------------------------------------------------------------------------------

/// Decode standard base64 (as used by etcdctl's JSON for byte fields).
pub fn b64(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = val(c).unwrap_or_else(|| panic!("invalid base64 {s:?}"));
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

pub fn b64s(s: &str) -> String {
    String::from_utf8(b64(s)).expect("utf8")
}

/// `header.revision` of a JSON response.
pub fn header_rev(v: &Value) -> i64 {
    v["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {v}"))
}

/// One key-value from `-w json` output; absent fields (proto3 zero values) read as 0 / "".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

pub fn kv_of(v: &Value) -> Kv {
    Kv {
        key: v["key"].as_str().map(b64s).unwrap_or_default(),
        value: v["value"].as_str().map(b64s).unwrap_or_default(),
        create_revision: v["create_revision"].as_i64().unwrap_or(0),
        mod_revision: v["mod_revision"].as_i64().unwrap_or(0),
        version: v["version"].as_i64().unwrap_or(0),
        lease: v["lease"].as_i64().unwrap_or(0),
    }
}

/// The `kvs` array of a range response (empty if absent).
pub fn kvs(v: &Value) -> Vec<Kv> {
    v["kvs"]
        .as_array()
        .map(|a| a.iter().map(kv_of).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn http_get(port: u16, path: &str) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: rudder-e2e\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk header")?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_str, 16).map_err(|e| format!("chunk size {size_str:?}: {e}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size..];
        if b.starts_with(b"\r\n") {
            b = &b[2..];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------------

/// Poll `f` every 50 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Panics, quoting the head of `log` (where a start-up error is printed), if `child` has already exited:
/// a server that failed to start should fail its test at once, not after the readiness deadline.
pub fn assert_running(child: &mut std::process::Child, log: &Path) {
    if let Ok(Some(status)) = child.try_wait() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let head: Vec<&str> = text.lines().take(30).collect();
        panic!(
            "server exited during start-up ({status}); server.log begins:\n{}",
            head.join("\n")
        );
    }
}
