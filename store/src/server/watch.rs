//! etcd's `Watch` gRPC service: one bidirectional stream per call, multiplexing that client's
//! watchers over the shared [`WatchHub`]. The protocol logic lives in `crate::watch`; this adapts it
//! to tonic.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rudder_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use rudder_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::node::StoreNode;
use crate::watch::{watch_session, HeaderSource, SessionConfig, WatchHub};

/// The Watch service. Build with [`WatchService::new`], register with [`WatchService::into_server`].
#[derive(Clone)]
pub struct WatchService {
    hub: WatchHub,
    headers: Arc<dyn HeaderSource>,
    config: SessionConfig,
    /// The member whose leader require-leader streams follow (none in unit tests: never checked).
    leader: Option<Arc<StoreNode>>,
}

impl WatchService {
    pub fn new(hub: WatchHub, headers: Arc<dyn HeaderSource>, config: SessionConfig) -> Self {
        Self {
            hub,
            headers,
            config,
            leader: None,
        }
    }

    /// Ends require-leader streams (`hasleader: true` metadata) when `node` loses its leader.
    pub fn with_leader_monitor(mut self, node: Arc<StoreNode>) -> Self {
        self.leader = Some(node);
        self
    }

    pub fn into_server(self) -> WatchServer<Self> {
        WatchServer::new(self)
    }
}

impl std::fmt::Debug for WatchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let monitor = self
            .leader
            .clone()
            .filter(|_| super::leader::requires_leader_md(request.metadata()));
        // tonic drops the response stream when the client goes away, which removes its watchers.
        let responses = watch_session(
            &self.hub,
            request.into_inner(),
            self.headers.clone(),
            self.config.clone(),
        )
        .map(Ok);
        Ok(Response::new(match monitor {
            Some(node) => Box::pin(super::leader::until_leader_lost(responses, node)),
            None => Box::pin(responses),
        }))
    }
}

#[cfg(all(test, not(rudder_loom)))]
mod tests {
    use std::time::Duration;

    use rudder_proto::etcdserverpb::watch_client::WatchClient;
    use rudder_proto::etcdserverpb::watch_request::RequestUnion;
    use rudder_proto::etcdserverpb::WatchCreateRequest;
    use rudder_proto::mvccpb::{Event, KeyValue};
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

    use super::*;
    use crate::watch::tests::{MemHistory, TestHeaders};
    use crate::watch::RevisionEvents;

    const TIMEOUT: Duration = Duration::from_secs(10);

    async fn next(responses: &mut Streaming<WatchResponse>) -> WatchResponse {
        tokio::time::timeout(TIMEOUT, responses.message())
            .await
            .expect("in time")
            .expect("grpc ok")
            .expect("stream open")
    }

    #[tokio::test]
    async fn watch_over_grpc_and_cleanup_on_disconnect() {
        let history = Arc::new(MemHistory::default());
        let hub = WatchHub::new(history.clone(), 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let service = WatchService::new(hub.clone(), Arc::new(TestHeaders), SessionConfig::default());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let mut client = WatchClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchCreateRequest {
            key: b"a".to_vec(),
            ..Default::default()
        };
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        })
        .await
        .expect("send create");
        let mut responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch call")
            .into_inner();
        let created = next(&mut responses).await;
        assert!(created.created && created.watch_id == 0);

        let batch = Arc::new(RevisionEvents {
            revision: 2,
            events: vec![Event {
                kv: Some(KeyValue {
                    key: b"a".to_vec(),
                    mod_revision: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        });
        history.push(batch.clone());
        hub.publish(batch);
        let resp = next(&mut responses).await;
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.header, Some(TestHeaders.header(2)));

        // The client goes away: the server drops the stream and its watcher.
        drop(responses);
        drop(tx);
        let mut waited = Duration::ZERO;
        while hub.watcher_count() != 0 && waited < TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert_eq!(hub.watcher_count(), 0);
        server.abort();
    }
}
