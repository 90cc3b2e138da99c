//! set: every add is its own key under the prefix; occasional reads during the run and a final read on
//! every node after the heal. Nothing acknowledged may be lost, nothing unattempted may appear.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::GetOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::client::{pace, record, revision_of, Outcome, Process};
use super::Ctx;
use crate::history::Op;

const PREFIX: &str = "/jepsen/set/";

pub fn start(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let id = ctx.id_base + p as u64;
            tokio::spawn(async move { run_process(ctx, id).await })
        })
        .collect()
}

async fn run_process(ctx: Arc<Ctx>, first_id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ first_id.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut process = Process::new(first_id, ctx.concurrency);
    while pace(&ctx, &mut rng).await {
        let Some(client) = process.client(&ctx).await else {
            continue;
        };
        let outcome = if rng.random::<f64>() < 0.03 {
            read_set(&ctx, process.id, client).await
        } else {
            let element = ctx.unique();
            let mut client = client;
            let op = Op::Add { element };
            let done = op.clone();
            record(&ctx, process.id, op, false, || async move {
                let resp = client.put(format!("{PREFIX}{element}"), "1", None).await?;
                Ok(Ok((done, revision_of(resp.header()))))
            })
            .await
        };
        process.after(&outcome);
    }
}

async fn read_set(ctx: &Ctx, process: u64, mut client: etcd_client::Client) -> Outcome<(Op, i64)> {
    record(ctx, process, Op::ReadSet { elements: None }, true, || async move {
        let resp = client
            .get(PREFIX, Some(GetOptions::new().with_prefix().with_keys_only()))
            .await?;
        let mut elements = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let name = String::from_utf8_lossy(kv.key());
            match name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) {
                Some(e) => elements.push(e),
                None => return Ok(Err(format!("unexpected key {name}"))),
            }
        }
        elements.sort_unstable();
        Ok(Ok((
            Op::ReadSet {
                elements: Some(elements),
            },
            revision_of(resp.header()),
        )))
    })
    .await
}

/// A linearizable read of the whole set from every node, retried until it succeeds (the cluster has
/// been healed) or half a minute passes.
pub async fn final_reads(ctx: &Arc<Ctx>) {
    // Final reads use process ids past every generator's, chosen to land on `node` (ids map to nodes
    // modulo n).
    let n = ctx.endpoints.len() as u64;
    for node in 0..ctx.endpoints.len() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut attempt = 0u64;
        loop {
            let id = (1_000_000 + attempt) * n + node as u64;
            let mut process = Process::new(id, ctx.endpoints.len());
            let ok = match process.client(ctx).await {
                Some(client) => matches!(read_set(ctx, id, client).await, Outcome::Ok(_)),
                None => false,
            };
            if ok || tokio::time::Instant::now() > deadline {
                break;
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
