//! The load generator: closed-loop clients (tokio tasks) issuing puts or gets over a fixed number of
//! gRPC connections (separate `etcd_client::Client` instances), with latencies in an HDR histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs up to this bound (larger values are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;
/// Per-request deadline; a request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A phase stops early once this many requests have failed: the numbers would be meaningless anyway.
const MAX_ERRORS: u64 = 1_000;
/// Pause after a failed request so a dead server does not turn the clients into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What the clients of a phase do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    GetLinearizable,
    GetSerializable,
}

/// One load phase: a fixed operation mix at a fixed concurrency.
#[derive(Debug, Clone, Copy)]
pub struct PhaseSpec {
    /// Stable identifier used in the JSON output.
    pub id: &'static str,
    /// Human-readable description used in the report.
    pub title: &'static str,
    pub op: OpKind,
    pub clients: usize,
    pub connections: usize,
}

/// The load phases, in the order they run against one server instance.
pub const PHASES: [PhaseSpec; 4] = [
    PhaseSpec {
        id: "put_1c",
        title: "put, 1 client / 1 conn",
        op: OpKind::Put,
        clients: 1,
        connections: 1,
    },
    PhaseSpec {
        id: "put_256c",
        title: "put, 256 clients / 16 conns",
        op: OpKind::Put,
        clients: 256,
        connections: 16,
    },
    PhaseSpec {
        id: "get_lin_64c",
        title: "linearizable get, 64 clients / 16 conns",
        op: OpKind::GetLinearizable,
        clients: 64,
        connections: 16,
    },
    PhaseSpec {
        id: "get_ser_64c",
        title: "serializable get, 64 clients / 16 conns",
        op: OpKind::GetSerializable,
        clients: 64,
        connections: 16,
    },
];

/// The phases of three-member mode: the puts and linearizable gets (serializable gets are served by
/// whichever member is asked without consensus, so they say nothing about the cluster).
pub const PHASES_THREE: [PhaseSpec; 3] = [PHASES[0], PHASES[1], PHASES[2]];

/// Parameters shared by all phases.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub duration: Duration,
    pub value_size: usize,
    pub keyspace: u32,
}

/// The outcome of one phase that managed to issue requests.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    /// Successful requests.
    pub ops: u64,
    /// Failed requests (gRPC errors or timeouts); any error marks the phase's targets as not met.
    pub errors: u64,
    /// First error message seen, if any.
    pub first_error: Option<String>,
    /// Gets that found no value for a key that had been written before (should be 0).
    pub misses: u64,
    pub elapsed_s: f64,
    pub ops_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Which keys of the keyspace have been written successfully, so gets only ask for existing keys.
#[derive(Debug, Clone)]
pub struct WrittenKeys {
    present: Vec<bool>,
}

impl WrittenKeys {
    pub fn new(keyspace: u32) -> Self {
        Self {
            present: vec![false; keyspace as usize],
        }
    }

    fn mark(&mut self, idx: u32) {
        if let Some(slot) = self.present.get_mut(idx as usize) {
            *slot = true;
        }
    }

    fn indices(&self) -> Vec<u32> {
        (0u32..)
            .zip(&self.present)
            .filter(|(_, &p)| p)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }
}

/// The key for slot `idx` of the keyspace: 8 ASCII digits (like etcd's benchmark `--key-size=8`).
pub fn key(idx: u32) -> String {
    format!("{idx:08}")
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Opens one gRPC connection and makes sure it is established (so connection set-up is not timed).
pub async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(REQUEST_TIMEOUT);
    let mut client = Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    client
        .get("rudder-bench/warmup", Some(GetOptions::new().with_serializable()))
        .await
        .with_context(|| format!("first request to {endpoint}"))?;
    Ok(client)
}

#[derive(Default)]
struct WorkerOutput {
    ops: u64,
    errors: u64,
    misses: u64,
    first_error: Option<String>,
    written: Vec<u32>,
}

struct Worker {
    kv: KvClient,
    op: OpKind,
    value: Arc<Vec<u8>>,
    keyspace: u32,
    read_keys: Arc<Vec<u32>>,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    total_errors: Arc<AtomicU64>,
    rng: StdRng,
}

impl Worker {
    async fn run(mut self) -> (WorkerOutput, Histogram<u64>) {
        let mut hist = new_histogram();
        let mut out = WorkerOutput::default();
        while Instant::now() < self.deadline && !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let result = self.one_request().await;
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            match result {
                Ok(outcome) => {
                    hist.saturating_record(latency_us.max(1));
                    out.ops += 1;
                    match outcome {
                        Outcome::Wrote(idx) => out.written.push(idx),
                        Outcome::Found => {}
                        Outcome::Missing => out.misses += 1,
                    }
                }
                Err(e) => {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(e.to_string());
                    }
                    if self.total_errors.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_ERRORS {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        (out, hist)
    }

    async fn one_request(&mut self) -> Result<Outcome, etcd_client::Error> {
        match self.op {
            OpKind::Put => {
                let idx = self.rng.random_range(0..self.keyspace);
                self.kv.put(key(idx), self.value.as_slice(), None).await?;
                Ok(Outcome::Wrote(idx))
            }
            OpKind::GetLinearizable | OpKind::GetSerializable => {
                let idx = self.read_keys[self.rng.random_range(0..self.read_keys.len())];
                let options = (self.op == OpKind::GetSerializable).then(|| GetOptions::new().with_serializable());
                let resp = self.kv.get(key(idx), options).await?;
                Ok(if resp.kvs().is_empty() {
                    Outcome::Missing
                } else {
                    Outcome::Found
                })
            }
        }
    }
}

enum Outcome {
    Wrote(u32),
    Found,
    Missing,
}

/// Runs one phase for `workload.duration`, connection `i` going to `endpoints[i % len]` (one endpoint
/// for a single server; a cluster's members spread evenly). Puts record the keys they wrote in
/// `written`; gets read uniformly from the keys recorded there.
pub async fn run_phase(
    endpoints: &[String],
    spec: &PhaseSpec,
    workload: &Workload,
    written: &mut WrittenKeys,
) -> Result<PhaseStats> {
    let read_keys = Arc::new(written.indices());
    if spec.op != OpKind::Put && read_keys.is_empty() {
        bail!("no keys were written by the put phases, nothing to read");
    }

    if endpoints.is_empty() {
        bail!("no endpoint to load");
    }
    let mut connections = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        connections.push(connect(&endpoints[i % endpoints.len()]).await?);
    }

    let mut rng = StdRng::from_os_rng();
    let mut value = vec![0u8; workload.value_size];
    rng.fill_bytes(&mut value);
    let value = Arc::new(value);
    let stop = Arc::new(AtomicBool::new(false));
    let total_errors = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let deadline = started + workload.duration;
    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let worker = Worker {
            kv: connections[i % connections.len()].kv_client(),
            op: spec.op,
            value: Arc::clone(&value),
            keyspace: workload.keyspace,
            read_keys: Arc::clone(&read_keys),
            deadline,
            stop: Arc::clone(&stop),
            total_errors: Arc::clone(&total_errors),
            rng: StdRng::seed_from_u64(rng.next_u64()),
        };
        tasks.push(tokio::spawn(worker.run()));
    }

    let mut hist = new_histogram();
    let mut total = WorkerOutput::default();
    for task in tasks {
        let (out, h) = task.await.context("load task panicked")?;
        hist.add(&h).context("merging latency histograms")?;
        total.ops += out.ops;
        total.errors += out.errors;
        total.misses += out.misses;
        if total.first_error.is_none() {
            total.first_error = out.first_error;
        }
        for idx in out.written {
            written.mark(idx);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    if total.ops == 0 {
        bail!(
            "no request succeeded ({} errors; first: {})",
            total.errors,
            total.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(PhaseStats {
        ops: total.ops,
        errors: total.errors,
        first_error: total.first_error,
        misses: total.misses,
        elapsed_s: elapsed,
        ops_per_sec: total.ops as f64 / elapsed,
        mean_ms: hist.mean() / 1000.0,
        p50_ms: us_to_ms(hist.value_at_quantile(0.50)),
        p99_ms: us_to_ms(hist.value_at_quantile(0.99)),
        max_ms: us_to_ms(hist.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_eight_bytes() {
        assert_eq!(key(0), "00000000");
        assert_eq!(key(99_999), "00099999");
        assert_eq!(key(99_999).len(), 8);
    }

    #[test]
    fn written_keys_track_marks() {
        let mut w = WrittenKeys::new(10);
        w.mark(3);
        w.mark(7);
        w.mark(3);
        w.mark(42); // out of range: ignored
        assert_eq!(w.indices(), vec![3, 7]);
        assert_eq!(w.count(), 2);
    }

    #[test]
    fn histogram_quantiles_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).expect("in range");
        }
        let p50 = us_to_ms(h.value_at_quantile(0.5));
        assert!((p50 - 5.0).abs() < 0.01, "p50 = {p50}");
        let p99 = us_to_ms(h.value_at_quantile(0.99));
        assert!((p99 - 9.9).abs() < 0.02, "p99 = {p99}");
    }
}
