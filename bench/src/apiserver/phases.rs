//! The load phases, all through kube-rs as a controller would drive the API: closed-loop creates and
//! gets at a fixed concurrency, open-loop creates at a fixed rate (latency counted from each request's
//! scheduled start, so a slow server cannot hide its queueing), full lists of 10,000 pods, and watch
//! delivery to 100 watchers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use rand::Rng;
use serde::Serialize;

/// What one phase measured. Latencies in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseStats {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, up to 120 s, 3 significant digits: constant bounds hdrhistogram accepts.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, 120_000_000);
    let _ = h.record(us);
}

fn stats(h: &Histogram<u64>, errors: u64, elapsed: Duration) -> PhaseStats {
    let ms = |us: u64| us as f64 / 1000.0;
    let seconds = elapsed.as_secs_f64();
    PhaseStats {
        ops: h.len(),
        errors,
        seconds,
        per_sec: if seconds > 0.0 { h.len() as f64 / seconds } else { 0.0 },
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// A small but realistic pod: one container, labels, requests; the server defaults the rest.
pub fn pod(name: &str) -> Result<Pod> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "bench", "tier": "load" } },
        "spec": {
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sleep", "3600"],
                "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } }
            }]
        }
    }))
    .context("building the pod")
}

pub async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// `clients` tasks each create pods back to back for `duration`.
pub async fn create_closed(client: &kube::Client, ns: &str, clients: usize, duration: Duration) -> PhaseStats {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let deadline = start + duration;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (api, next) = (api.clone(), next.clone());
            tokio::spawn(async move {
                let (mut h, mut errors) = (new_hist(), 0u64);
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Ok(p) = pod(&format!("c{n}")) else { break };
                    let t = Instant::now();
                    match api.create(&PostParams::default(), &p).await {
                        Ok(_) => record(&mut h, t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (h, errors)
            })
        })
        .collect();
    merge(tasks, start).await
}

async fn merge(tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>, start: Instant) -> PhaseStats {
    let (mut all, mut errors) = (new_hist(), 0);
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = all.add(&h);
            errors += e;
        }
    }
    stats(&all, errors, start.elapsed())
}

/// Creates `count` pods named `p0..` at `rate` per second, whatever the server's latency (up to
/// `max_in_flight` outstanding; beyond that a request counts as an error).
pub async fn create_open(client: &kube::Client, ns: &str, rate: f64, count: u64, max_in_flight: u64) -> PhaseStats {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let hist = Arc::new(Mutex::new(new_hist()));
    let errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (api, hist, errors, in_flight) = (api.clone(), hist.clone(), errors.clone(), in_flight.clone());
        handles.push(tokio::spawn(async move {
            let ok = match pod(&format!("p{i}")) {
                Ok(p) => api.create(&PostParams::default(), &p).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                if let Ok(mut h) = hist.lock() {
                    record(&mut h, scheduled.elapsed());
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = start.elapsed();
    let h = hist.lock().map(|h| h.clone()).unwrap_or_else(|_| new_hist());
    stats(&h, errors.load(Ordering::Relaxed), elapsed)
}

/// `clients` tasks each get random pods among `p0..p<count>` back to back for `duration`.
pub async fn get_closed(client: &kube::Client, ns: &str, count: u64, clients: usize, duration: Duration) -> PhaseStats {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let (mut h, mut errors) = (new_hist(), 0u64);
                while Instant::now() < deadline {
                    let n = rand::rng().random_range(0..count.max(1));
                    let t = Instant::now();
                    match api.get(&format!("p{n}")).await {
                        Ok(_) => record(&mut h, t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (h, errors)
            })
        })
        .collect();
    merge(tasks, start).await
}

/// Lists every pod of `ns` `times` times, one after the other, reading the whole body; `rv0` asks for
/// resourceVersion=0 (served from the watch cache) instead of a consistent read from the store.
/// Returns the stats and the number of items the last list returned.
pub async fn list(client: &kube::Client, ns: &str, times: usize, rv0: bool) -> (PhaseStats, usize) {
    let mut uri = format!("/api/v1/namespaces/{ns}/pods");
    if rv0 {
        uri.push_str("?resourceVersion=0");
    }
    let (mut h, mut errors, mut items) = (new_hist(), 0, 0);
    let start = Instant::now();
    for _ in 0..times {
        let Ok(req) = http::Request::get(&uri).body(Vec::new()) else {
            break;
        };
        let t = Instant::now();
        match client.request_text(req).await {
            Ok(body) => {
                record(&mut h, t.elapsed());
                items = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["items"].as_array().map(Vec::len))
                    .unwrap_or(0);
            }
            Err(_) => errors += 1,
        }
    }
    (stats(&h, errors, start.elapsed()), items)
}

/// What the watch phase measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStats {
    pub watchers: usize,
    pub objects: u64,
    /// ADDED events received for the measured objects (ideally watchers x objects).
    pub delivered: u64,
    pub expected: u64,
    /// From just before the create was sent to the event's arrival at a watcher.
    pub latency: PhaseStats,
}

/// Opens `watchers` watches on the configmaps of `ns`, then creates `objects` configmaps at `rate` per
/// second and measures, for every watcher and object, create-sent-to-event-received.
pub async fn watch_fanout(
    client: &kube::Client,
    ns: &str,
    watchers: usize,
    objects: u64,
    rate: f64,
) -> Result<WatchStats> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(new_hist()));
    let ready = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let stream = api
            .watch(&WatchParams::default().timeout(290), "0")
            .await
            .with_context(|| format!("opening watch {w}"))?;
        let (sent, hist, ready, delivered) = (sent.clone(), hist.clone(), ready.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut got = 0u64;
            while let Ok(Some(ev)) = stream.try_next().await {
                let WatchEvent::Added(cm) = ev else { continue };
                let name = cm.metadata.name.unwrap_or_default();
                if name == "ready" {
                    ready.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let at = sent.lock().ok().and_then(|m| m.get(&name).copied());
                if let Some(at) = at {
                    if let Ok(mut h) = hist.lock() {
                        record(&mut h, at.elapsed());
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                    got += 1;
                    if got == objects {
                        break;
                    }
                }
            }
        }));
    }
    // Every watcher sees a sentinel before the measured objects, so none is still connecting.
    let cm = |name: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm("ready"))
        .await
        .context("creating the sentinel")?;
    let wait_until = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < watchers as u64 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    for i in 0..objects {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let name = format!("w{i}");
        if let Ok(mut m) = sent.lock() {
            m.insert(name.clone(), Instant::now());
        }
        let _ = api.create(&PostParams::default(), &cm(&name)).await;
    }
    let drain_until = Instant::now() + Duration::from_secs(20);
    while delivered.load(Ordering::Relaxed) < objects * watchers as u64 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    for t in &tasks {
        t.abort();
    }
    let h = hist.lock().map(|h| h.clone()).unwrap_or_else(|_| new_hist());
    let got = delivered.load(Ordering::Relaxed);
    let expected = objects * watchers as u64;
    Ok(WatchStats {
        watchers,
        objects,
        delivered: got,
        expected,
        latency: stats(&h, expected.saturating_sub(got), elapsed),
    })
}
