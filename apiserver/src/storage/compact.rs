//! Periodic compaction with kube-apiserver's protocol (`k8s.io/apiserver/pkg/storage/etcd3/compact.go`):
//! several API servers share one etcd, so they agree through the version of `compact_rev_key`. Each
//! interval, whoever bumps the key's version from the value last seen compacts the store to the revision
//! observed one interval earlier; the others just learn the new version.

use std::time::Duration;

use rudder_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use rudder_proto::etcdserverpb::request_op::Request;
use rudder_proto::etcdserverpb::response_op::Response;
use rudder_proto::etcdserverpb::{CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

use super::Store;

const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

impl Store {
    /// One round: returns the key's version and the current revision for the next round.
    async fn compact_round(&self, version: i64, rev: i64) -> Result<(i64, i64), tonic::Status> {
        let resp = self
            .kv
            .clone()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: COMPACT_REV_KEY.to_vec(),
                    target_union: Some(TargetUnion::Version(version)),
                    range_end: vec![],
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: COMPACT_REV_KEY.to_vec(),
                        value: rev.to_string().into_bytes(),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: COMPACT_REV_KEY.to_vec(),
                        ..Default::default()
                    })),
                }],
            })
            .await?
            .into_inner();
        let cur_rev = resp.header.map(|h| h.revision).unwrap_or_default();
        if !resp.succeeded {
            let seen = resp
                .responses
                .into_iter()
                .find_map(|r| match r.response {
                    Some(Response::ResponseRange(rr)) => rr.kvs.into_iter().next().map(|kv| kv.version),
                    _ => None,
                })
                .unwrap_or_default();
            return Ok((seen, cur_rev));
        }
        if rev > 0 {
            self.kv
                .clone()
                .compact(CompactionRequest {
                    revision: rev,
                    physical: false,
                })
                .await?;
            tracing::info!(revision = rev, "compacted the store");
        }
        Ok((version + 1, cur_rev))
    }

    /// Runs forever, one round per `interval`.
    pub async fn compact_periodically(self, interval: Duration) {
        let (mut version, mut rev) = (0, 0);
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            match self.compact_round(version, rev).await {
                Ok((v, r)) => (version, rev) = (v, r),
                // A compaction below an etcd-side one fails harmlessly; keep going from the new revision.
                Err(e) => {
                    tracing::warn!(error = %e, "compaction round failed");
                    rev = 0;
                }
            }
        }
    }
}
