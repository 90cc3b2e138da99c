//! etcd's `Watch` gRPC service: one bidirectional stream per call, multiplexing that client's
//! watchers over the shared [`WatchHub`]. The protocol logic lives in `crate::watch`; this adapts it
//! to tonic.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rudder_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use rudder_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::watch::{watch_session, HeaderSource, SessionConfig, WatchHub};

/// The Watch service. Build with [`WatchService::new`], register with [`WatchService::into_server`].
#[derive(Clone)]
pub struct WatchService {
    hub: WatchHub,
    headers: Arc<dyn HeaderSource>,
    config: SessionConfig,
}

impl WatchService {
    pub fn new(hub: WatchHub, headers: Arc<dyn HeaderSource>, config: SessionConfig) -> Self {
        Self {
            hub,
            headers,
            config,
        }
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

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // tonic drops the response stream when the client goes away, which removes its watchers.
        let responses = watch_session(
            &self.hub,
            request.into_inner(),
            self.headers.clone(),
            self.config.clone(),
        )
        .map(Ok);
        Ok(Response::new(Box::pin(responses)))
    }
}
