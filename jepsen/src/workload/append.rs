//! append: multi-key list-append transactions (Elle's workload). etcd has no append, so a transaction
//! reads its keys in one txn, then commits all appends in a second txn guarded by each key's
//! mod_revision; a changed key makes the commit fail, which definitely did not happen.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::client::{pace, record, revision_of, Process};
use super::keys::KeyPool;
use super::Ctx;
use crate::history::{Mop, Op};

const PREFIX: &str = "/jepsen/append/";

fn key_name(key: u64) -> String {
    format!("{PREFIX}{key}")
}

pub fn start(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let pool = Arc::new(KeyPool::new(8, 200));
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let id = ctx.id_base + p as u64;
            let pool = pool.clone();
            tokio::spawn(async move { run_process(ctx, pool, id).await })
        })
        .collect()
}

fn parse_list(bytes: &[u8]) -> Result<Vec<u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "list is not UTF-8".to_string())?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| s.parse::<u64>().map_err(|_| format!("bad list element {s:?}")))
        .collect()
}

fn render_list(list: &[u64]) -> String {
    list.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

async fn run_process(ctx: Arc<Ctx>, pool: Arc<KeyPool>, first_id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ first_id.wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut process = Process::new(first_id, ctx.concurrency);
    while pace(&ctx, &mut rng).await {
        let Some(client) = process.client(&ctx).await else {
            continue;
        };
        let n = rng.random_range(1..=4);
        let keys = pool.take_many(&mut rng, n.min(3));
        let mut mops = Vec::new();
        for _ in 0..n {
            let key = keys[rng.random_range(0..keys.len())];
            if rng.random::<bool>() {
                mops.push(Mop::Append {
                    key,
                    value: ctx.unique(),
                });
            } else {
                mops.push(Mop::Read { key, value: None });
            }
        }
        let op = Op::Txn { mops: mops.clone() };
        let outcome = record(&ctx, process.id, op, false, || run_txn(client, mops)).await;
        process.after(&outcome);
    }
}

/// Reads the keys, then commits the appends if none of them changed. The reads in the result are the
/// lists as the transaction saw them, with its own earlier appends applied.
async fn run_txn(
    mut client: etcd_client::Client,
    mops: Vec<Mop>,
) -> Result<Result<(Op, i64), String>, etcd_client::Error> {
    let keys: Vec<u64> = {
        let mut ks: Vec<u64> = mops
            .iter()
            .map(|m| match m {
                Mop::Append { key, .. } | Mop::Read { key, .. } => *key,
            })
            .collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    };
    let reads = Txn::new().and_then(keys.iter().map(|k| TxnOp::get(key_name(*k), None)).collect::<Vec<_>>());
    let resp = client.txn(reads).await?;
    let mut state: BTreeMap<u64, (Vec<u64>, i64)> = BTreeMap::new();
    for (key, r) in keys.iter().zip(resp.op_responses()) {
        let TxnOpResponse::Get(get) = r else {
            return Ok(Err("unexpected txn response".into()));
        };
        let entry = match get.kvs().first() {
            Some(kv) => match parse_list(kv.value()) {
                Ok(list) => (list, kv.mod_revision()),
                Err(e) => return Ok(Err(e)),
            },
            None => (Vec::new(), 0),
        };
        state.insert(*key, entry);
    }
    let guards: Vec<Compare> = state
        .iter()
        .map(|(k, (_, rev))| Compare::mod_revision(key_name(*k), CompareOp::Equal, *rev))
        .collect();
    let mut done = Vec::with_capacity(mops.len());
    let mut written: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for m in &mops {
        match m {
            Mop::Append { key, value } => {
                let list = written
                    .entry(*key)
                    .or_insert_with(|| state.get(key).map(|s| s.0.clone()).unwrap_or_default());
                list.push(*value);
                done.push(m.clone());
            }
            Mop::Read { key, .. } => {
                let list = written
                    .get(key)
                    .cloned()
                    .or_else(|| state.get(key).map(|s| s.0.clone()))
                    .unwrap_or_default();
                done.push(Mop::Read {
                    key: *key,
                    value: Some(list),
                });
            }
        }
    }
    if written.is_empty() {
        // A read-only transaction: the read txn was one atomic snapshot.
        return Ok(Ok((Op::Txn { mops: done }, revision_of(resp.header()))));
    }
    let puts: Vec<TxnOp> = written
        .iter()
        .map(|(k, list)| TxnOp::put(key_name(*k), render_list(list), None))
        .collect();
    let commit = client.txn(Txn::new().when(guards).and_then(puts)).await?;
    if commit.succeeded() {
        Ok(Ok((Op::Txn { mops: done }, revision_of(commit.header()))))
    } else {
        Ok(Err("conflict: a key changed since it was read".into()))
    }
}
