//! kubernetes: what kube-apiserver does with etcd. Creates are txns on create_revision == 0, updates are
//! txns on mod_revision == the revision the client last saw (optimistic concurrency, a conflict fails),
//! lists read the whole prefix with its revision, and watchers (shared with the watch workload) follow
//! the prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::client::{pace, parse_u64, record, revision_of, Outcome, Process};
use super::Ctx;
use crate::history::{Item, Op};

const PREFIX: &str = "/jepsen/kubernetes/";
/// Objects in play; few, so updates conflict now and then as they do on a busy cluster.
const OBJECTS: u64 = 8;

fn key_name(key: u64) -> String {
    format!("{PREFIX}{key}")
}

/// What the clients believe each object's mod_revision is (an informer cache, shared by all processes).
#[derive(Default)]
struct Cache {
    revisions: Mutex<HashMap<u64, i64>>,
}

impl Cache {
    fn get(&self, key: u64) -> Option<i64> {
        self.revisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
    }
    fn set(&self, key: u64, rev: i64) {
        let mut map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(key).or_insert(0);
        *slot = (*slot).max(rev);
    }
}

pub fn start(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let cache = Arc::new(Cache::default());
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let id = ctx.id_base + p as u64;
            let cache = cache.clone();
            tokio::spawn(async move { run_process(ctx, cache, id).await })
        })
        .collect()
}

async fn run_process(ctx: Arc<Ctx>, cache: Arc<Cache>, first_id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ first_id.wrapping_mul(0x3c6e_f372_fe94_f82b));
    let mut process = Process::new(first_id, ctx.concurrency);
    while pace(&ctx, &mut rng).await {
        let Some(client) = process.client(&ctx).await else {
            continue;
        };
        let roll: f64 = rng.random();
        let key = rng.random_range(0..OBJECTS);
        let outcome = if roll < 0.15 {
            let out = list(&ctx, process.id, client).await;
            if let Outcome::Ok((Op::KList { items: Some(items) }, _)) = &out {
                for it in items {
                    cache.set(it.key, it.mod_revision);
                }
            }
            out
        } else if let Some(from_revision) = cache.get(key) {
            let out = update(&ctx, process.id, client, key, from_revision).await;
            if let Outcome::Ok((_, rev)) = &out {
                cache.set(key, *rev);
            }
            out
        } else {
            let out = create(&ctx, process.id, client, key).await;
            if let Outcome::Ok((_, rev)) = &out {
                cache.set(key, *rev);
            }
            out
        };
        process.after(&outcome);
    }
}

/// Create if absent. Also used for the watch workloads' final write.
pub async fn create(ctx: &Ctx, process: u64, mut client: etcd_client::Client, key: u64) -> Outcome<(Op, i64)> {
    let value = ctx.unique();
    let op = Op::KCreate { key, value };
    let done = op.clone();
    record(ctx, process, op, false, || async move {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key_name(key), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key_name(key), value.to_string(), None)]);
        let resp = client.txn(txn).await?;
        if resp.succeeded() {
            Ok(Ok((done, revision_of(resp.header()))))
        } else {
            Ok(Err("already exists".into()))
        }
    })
    .await
}

async fn update(
    ctx: &Ctx,
    process: u64,
    mut client: etcd_client::Client,
    key: u64,
    from_revision: i64,
) -> Outcome<(Op, i64)> {
    let value = ctx.unique();
    let op = Op::KUpdate {
        key,
        from_revision,
        value,
    };
    let done = op.clone();
    record(ctx, process, op, false, || async move {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key_name(key),
                CompareOp::Equal,
                from_revision,
            )])
            .and_then(vec![TxnOp::put(key_name(key), value.to_string(), None)]);
        let resp = client.txn(txn).await?;
        if resp.succeeded() {
            Ok(Ok((done, revision_of(resp.header()))))
        } else {
            Ok(Err("conflict".into()))
        }
    })
    .await
}

async fn list(ctx: &Ctx, process: u64, mut client: etcd_client::Client) -> Outcome<(Op, i64)> {
    record(ctx, process, Op::KList { items: None }, true, || async move {
        let resp = client.get(PREFIX, Some(GetOptions::new().with_prefix())).await?;
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let name = String::from_utf8_lossy(kv.key());
            let Some(key) = name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) else {
                return Ok(Err(format!("unexpected key {name}")));
            };
            let value = match parse_u64(kv.value()) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            items.push(Item {
                key,
                value,
                mod_revision: kv.mod_revision(),
            });
        }
        Ok(Ok((Op::KList { items: Some(items) }, revision_of(resp.header()))))
    })
    .await
}

/// A final list on every node once healed.
pub async fn final_list(ctx: &Arc<Ctx>) {
    for node in 0..ctx.endpoints.len() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let n = ctx.endpoints.len() as u64;
        let mut id = 3_000_000 * n + node as u64;
        loop {
            let mut process = Process::new(id, ctx.endpoints.len());
            let ok = match process.client(ctx).await {
                Some(client) => matches!(list(ctx, id, client).await, Outcome::Ok(_)),
                None => false,
            };
            if ok || tokio::time::Instant::now() > deadline {
                break;
            }
            id += n;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
