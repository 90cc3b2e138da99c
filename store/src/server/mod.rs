//! The client-facing servers: etcd's gRPC services and the `/health` and `/metrics` HTTP endpoints, all
//! on each `--listen-client-urls` address (HTTP/2 for gRPC, HTTP/1.1 for the rest), as etcd serves them.

pub mod auth;
pub mod authority;
pub mod cluster;
pub mod election;
pub mod http;
pub mod kv;
pub mod leader;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod quota;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rudder_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer,
};
use rudder_proto::v3electionpb::election_server::ElectionServer;
use rudder_proto::v3lockpb::lock_server::LockServer;
use tokio::net::TcpListener;

use crate::config::GRPC_OVERHEAD_BYTES;
use crate::node::StoreNode;

/// All client routes: every etcd gRPC service, gRPC health, `/health` and `/metrics`.
pub fn router(node: Arc<StoreNode>) -> axum::Router {
    let limit = node.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    });
    let watch = watch::WatchService::new(
        node.hub.clone(),
        node.clone(),
        crate::watch::SessionConfig {
            progress_notify_interval: node.config.watch_progress_notify_interval,
            max_response_bytes: limit,
        },
    )
    .with_leader_monitor(node.clone());
    let routes = tonic::service::Routes::new(watch.into_server().max_decoding_message_size(limit))
        .add_service(KvServer::new(kv::KvService { node: node.clone() }).max_decoding_message_size(limit))
        .add_service(LeaseServer::new(lease::LeaseService { node: node.clone() }).max_decoding_message_size(limit))
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService { node: node.clone() })
                .max_decoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(cluster::ClusterService { node: node.clone() }).max_decoding_message_size(limit),
        )
        .add_service(AuthServer::new(auth::AuthService { node: node.clone() }).max_decoding_message_size(limit))
        .add_service(LockServer::new(lock::LockService { node: node.clone() }).max_decoding_message_size(limit))
        .add_service(
            ElectionServer::new(election::ElectionService { node: node.clone() }).max_decoding_message_size(limit),
        )
        .add_service(health_service);
    let http = axum::Router::new()
        .route("/health", axum::routing::get(http::health))
        .route("/metrics", axum::routing::get(http::metrics))
        .route("/version", axum::routing::get(http::version))
        .with_state(node.clone());
    routes
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            leader::require_leader,
        ))
        .merge(http)
        .layer(axum::middleware::map_response(http::grpc_size_limit_status))
}

/// Binds every listen URL (host:port; "localhost" binds loopback).
pub async fn bind(urls: &[url::Url]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for u in urls {
        let host = u.host_str().unwrap_or("127.0.0.1");
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host.trim_start_matches('[').trim_end_matches(']')
        };
        let port = u.port_or_known_default().unwrap_or(2379);
        let addr: SocketAddr = format!(
            "{}:{port}",
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            }
        )
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("listen URL {u}: {e}")))?;
        out.push(TcpListener::bind(addr).await?);
    }
    Ok(out)
}

/// Serves connections until the listener fails. Each connection speaks HTTP/1.1 or prior-knowledge
/// HTTP/2 (how gRPC clients connect without TLS).
pub async fn serve(listener: TcpListener, router: axum::Router) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response messages: don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(None).adaptive_window(true);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(authority::AuthorityFix::new(stream)), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "client connection ended");
            }
        });
    }
}
