//! lease: each process grants a short lease, attaches a key, then either keeps the lease alive for a
//! while and revokes it, revokes it at once, or lets it expire, reading its key along the way. Keys must
//! vanish only after expiry or revoke, and stay while kept alive.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::client::{pace, record, revision_of, Outcome, Process};
use super::Ctx;
use crate::history::Op;

const PREFIX: &str = "/jepsen/lease/";
const TTL: i64 = 3;

pub fn start(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    (0..ctx.concurrency)
        .map(|p| {
            let ctx = ctx.clone();
            let id = ctx.id_base + p as u64;
            tokio::spawn(async move { run_process(ctx, id).await })
        })
        .collect()
}

async fn sleep_or_deadline(ctx: &Ctx, d: Duration) -> bool {
    let wake = tokio::time::Instant::now() + d;
    if wake >= ctx.deadline {
        tokio::time::sleep_until(ctx.deadline).await;
        return false;
    }
    tokio::time::sleep_until(wake).await;
    true
}

async fn run_process(ctx: Arc<Ctx>, first_id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ first_id.wrapping_mul(0x6c07_8965_14f3_9c1b));
    let mut process = Process::new(first_id, ctx.concurrency);
    while pace(&ctx, &mut rng).await {
        let Some(mut client) = process.client(&ctx).await else {
            continue;
        };
        // Grant.
        let grant = record(
            &ctx,
            process.id,
            Op::LeaseGrant { ttl: TTL, lease: None },
            false,
            || async move {
                let resp = client.lease_grant(TTL, None).await?;
                Ok(Ok((
                    Op::LeaseGrant {
                        ttl: resp.ttl(),
                        lease: Some(resp.id()),
                    },
                    revision_of(resp.header()),
                )))
            },
        )
        .await;
        process.after(&grant);
        let Outcome::Ok((Op::LeaseGrant { lease: Some(lease), .. }, _)) = grant else {
            continue;
        };
        // Attach a fresh key.
        let key = ctx.unique();
        let Some(mut client) = process.client(&ctx).await else {
            continue;
        };
        let op = Op::LeasePut { key, lease };
        let done = op.clone();
        let put = record(&ctx, process.id, op, false, || async move {
            let resp = client
                .put(format!("{PREFIX}{key}"), "1", Some(PutOptions::new().with_lease(lease)))
                .await?;
            Ok(Ok((done, revision_of(resp.header()))))
        })
        .await;
        process.after(&put);
        if !matches!(put, Outcome::Ok(_)) {
            continue;
        }
        let mode: f64 = rng.random();
        if mode < 0.4 {
            // Keep alive past the TTL, reading, then revoke.
            for _ in 0..4 {
                if !sleep_or_deadline(&ctx, Duration::from_millis(900)).await {
                    break;
                }
                let ka = keep_alive(&ctx, &mut process, lease).await;
                process.after(&ka);
                let r = read(&ctx, &mut process, key).await;
                process.after(&r);
            }
            let rv = revoke(&ctx, &mut process, lease).await;
            process.after(&rv);
            let r = read(&ctx, &mut process, key).await;
            process.after(&r);
        } else if mode < 0.7 {
            let rv = revoke(&ctx, &mut process, lease).await;
            process.after(&rv);
            let r = read(&ctx, &mut process, key).await;
            process.after(&r);
        } else {
            // Let it expire: read now, and a few times until well after the TTL.
            for _ in 0..5 {
                let r = read(&ctx, &mut process, key).await;
                process.after(&r);
                if !sleep_or_deadline(&ctx, Duration::from_millis(1500)).await {
                    break;
                }
            }
        }
    }
}

async fn keep_alive(ctx: &Ctx, process: &mut Process, lease: i64) -> Outcome<(Op, i64)> {
    let Some(mut client) = process.client(ctx).await else {
        return Outcome::Fail("no client".into());
    };
    record(
        ctx,
        process.id,
        Op::LeaseKeepAlive { lease, ttl: None },
        false,
        || async move {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(resp) if resp.ttl() > 0 => Ok(Ok((
                    Op::LeaseKeepAlive {
                        lease,
                        ttl: Some(resp.ttl()),
                    },
                    revision_of(resp.header()),
                ))),
                Some(_) => Ok(Err("lease not found".into())),
                None => Err(etcd_client::Error::LeaseKeepAliveError("stream ended".into())),
            }
        },
    )
    .await
}

async fn revoke(ctx: &Ctx, process: &mut Process, lease: i64) -> Outcome<(Op, i64)> {
    let Some(mut client) = process.client(ctx).await else {
        return Outcome::Fail("no client".into());
    };
    let op = Op::LeaseRevoke { lease };
    let done = op.clone();
    record(ctx, process.id, op, false, || async move {
        let resp = client.lease_revoke(lease).await?;
        Ok(Ok((done, revision_of(resp.header()))))
    })
    .await
}

async fn read(ctx: &Ctx, process: &mut Process, key: u64) -> Outcome<(Op, i64)> {
    let Some(mut client) = process.client(ctx).await else {
        return Outcome::Fail("no client".into());
    };
    record(
        ctx,
        process.id,
        Op::LeaseRead { key, present: None },
        true,
        || async move {
            let resp = client.get(format!("{PREFIX}{key}"), None).await?;
            Ok(Ok((
                Op::LeaseRead {
                    key,
                    present: Some(!resp.kvs().is_empty()),
                },
                revision_of(resp.header()),
            )))
        },
    )
    .await
}
