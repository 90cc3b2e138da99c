//! register: per-key reads, writes and compare-and-set (a txn on the value), with unique values.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::client::{pace, parse_u64, record, revision_of, Outcome, Process};
use super::keys::KeyPool;
use super::Ctx;
use crate::history::Op;

const PREFIX: &str = "/jepsen/register/";

fn key_name(key: u64) -> String {
    format!("{PREFIX}{key}")
}

pub fn start(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    // Few active keys, each retired after 120 operations: short per-key histories.
    let pool = Arc::new(KeyPool::new(ctx.endpoints.len().max(3), 120));
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let id = ctx.id_base + p as u64;
            let pool = pool.clone();
            tokio::spawn(async move { run_process(ctx, pool, id).await })
        })
        .collect()
}

async fn run_process(ctx: Arc<Ctx>, pool: Arc<KeyPool>, first_id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (first_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut process = Process::new(first_id, ctx.concurrency);
    while pace(&ctx, &mut rng).await {
        let (key, last) = pool.take(&mut rng);
        let Some(mut client) = process.client(&ctx).await else {
            continue;
        };
        let roll: f64 = rng.random();
        let outcome = if roll < 0.5 {
            let op = Op::Read { key, value: None };
            let out = record(&ctx, process.id, op, true, || async move {
                let resp = client.get(key_name(key), Some(GetOptions::new())).await?;
                let value = resp.kvs().first().map(|kv| parse_u64(kv.value()));
                Ok(match value.transpose() {
                    Ok(value) => Ok((Op::Read { key, value }, revision_of(resp.header()))),
                    Err(e) => Err(e),
                })
            })
            .await;
            if let Outcome::Ok((Op::Read { value, .. }, _)) = &out {
                pool.observe(key, *value);
            }
            out
        } else if roll < 0.75 || last.is_none() {
            let value = ctx.unique();
            let op = Op::Write { key, value };
            let done = op.clone();
            let out = record(&ctx, process.id, op, false, || async move {
                let resp = client.put(key_name(key), value.to_string(), None).await?;
                Ok(Ok((done, revision_of(resp.header()))))
            })
            .await;
            if let Outcome::Ok(_) = &out {
                pool.observe(key, Some(value));
            }
            out
        } else {
            let from = last.unwrap_or(0);
            let to = ctx.unique();
            let op = Op::Cas { key, from, to };
            let done = op.clone();
            let out = record(&ctx, process.id, op, false, || async move {
                let txn = Txn::new()
                    .when(vec![Compare::value(key_name(key), CompareOp::Equal, from.to_string())])
                    .and_then(vec![TxnOp::put(key_name(key), to.to_string(), None)]);
                let resp = client.txn(txn).await?;
                if resp.succeeded() {
                    Ok(Ok((done, revision_of(resp.header()))))
                } else {
                    Ok(Err("compare failed".to_string()))
                }
            })
            .await;
            if let Outcome::Ok(_) = &out {
                pool.observe(key, Some(to));
            }
            out
        };
        process.after(&outcome);
    }
}
