//! Generic object storage over the etcd v3 gRPC API, with kube-apiserver's protocol
//! (`k8s.io/apiserver/pkg/storage/etcd3`): create is a Txn on mod_revision 0, update and delete are Txns
//! on the expected mod_revision that read the current value back on mismatch, resourceVersion is the
//! key's mod_revision (objects) or the header revision (lists).
//!
//! Objects are stored as JSON; kube-apiserver stores protobuf, so an etcd shared with it is not readable
//! by both (a later step).

mod compact;

use rudder_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use rudder_proto::etcdserverpb::kv_client::KvClient;
use rudder_proto::etcdserverpb::request_op::Request;
use rudder_proto::etcdserverpb::response_op::Response;
use rudder_proto::etcdserverpb::watch_client::WatchClient;
use rudder_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use rudder_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

/// Outcome of a conditional write.
#[derive(Debug)]
pub enum Write {
    /// Written at this revision.
    Done(i64),
    /// The precondition failed; the current value, if any.
    Mismatch(Option<KeyValue>),
}

/// One page of a prefix listing.
pub struct Page {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
    pub more: bool,
    pub count: i64,
}

#[derive(Clone)]
pub struct Store {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
}

/// The end of a prefix range: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// Connects lazily: the first request dials, so the API server can start before its store.
    pub fn connect(endpoints: &[String]) -> Result<Self, tonic::transport::Error> {
        let eps = endpoints
            .iter()
            .map(|e| Endpoint::from_shared(e.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let channel = if eps.len() == 1 {
            eps[0].connect_lazy()
        } else {
            Channel::balance_list(eps.into_iter())
        };
        Ok(Store {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(256 << 20),
            watch: WatchClient::new(channel),
        })
    }

    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), tonic::Status> {
        let r = self
            .kv
            .clone()
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let rev = r.header.map(|h| h.revision).unwrap_or_default();
        Ok((r.kvs.into_iter().next(), rev))
    }

    /// Keys in `[start, end)`, at `revision` (0 = latest), at most `limit` (0 = all).
    pub async fn list(&self, start: &[u8], end: &[u8], revision: i64, limit: i64) -> Result<Page, tonic::Status> {
        let r = self
            .kv
            .clone()
            .range(RangeRequest {
                key: start.to_vec(),
                range_end: end.to_vec(),
                revision,
                limit,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(Page {
            revision: r.header.map(|h| h.revision).unwrap_or_default(),
            more: r.more,
            count: r.count,
            kvs: r.kvs,
        })
    }

    async fn txn(&self, key: &str, mod_revision: i64, then: Request) -> Result<Write, tonic::Status> {
        let k = key.as_bytes().to_vec();
        let resp: TxnResponse = self
            .kv
            .clone()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: k.clone(),
                    target_union: Some(TargetUnion::ModRevision(mod_revision)),
                    range_end: vec![],
                }],
                success: vec![RequestOp { request: Some(then) }],
                failure: vec![RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: k,
                        ..Default::default()
                    })),
                }],
            })
            .await?
            .into_inner();
        if resp.succeeded {
            return Ok(Write::Done(resp.header.map(|h| h.revision).unwrap_or_default()));
        }
        let current = resp.responses.into_iter().find_map(|r| match r.response {
            Some(Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
            _ => None,
        });
        Ok(Write::Mismatch(current))
    }

    /// Writes `value` if the key's mod_revision is `expected` (0 = the key must not exist).
    pub async fn put_if(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<Write, tonic::Status> {
        let put = Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        self.txn(key, expected, put).await
    }

    pub async fn delete_if(&self, key: &str, expected: i64) -> Result<Write, tonic::Status> {
        let del = Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        self.txn(key, expected, del).await
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), tonic::Status> {
        self.kv
            .clone()
            .delete_range(DeleteRangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// A prefix watch from `start_revision`, with previous values and progress notifications.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<(tokio::sync::mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>), tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(rudder_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision,
                    progress_notify: true,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        tx.send(create)
            .await
            .map_err(|_| tonic::Status::internal("watch request channel closed"))?;
        let stream = self
            .watch
            .clone()
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok((tx, stream))
    }
}
