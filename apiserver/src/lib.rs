//! `rudder-apiserver`: the Kubernetes API server. It owns the HTTP surface real clients (kubectl, client-go,
//! kube-rs) talk to: discovery, OpenAPI, the REST verbs with content negotiation and patches, watch streaming,
//! TLS with client-certificate authentication, and a watch cache per resource. It keeps no state of its own:
//! every object lives in an etcd v3 store (Rudder's or a real etcd), reached only through the etcd gRPC API
//! with kube-apiserver's key layout and transaction protocol.

pub mod crd;
pub mod discovery;
pub mod error;
pub mod fieldmanager;
pub mod handlers;
pub mod namespace;
pub mod openapi;
pub mod protobuf;
pub mod registry;
pub mod storage;
pub mod tls;
pub mod watchcache;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower::ServiceExt;

use registry::{Resource, RESOURCES};
use storage::{Store, Write};
use watchcache::WatchCache;

/// Watch caches of custom resources, by (group, plural), with the task feeding each.
type DynamicCaches =
    parking_lot::RwLock<HashMap<(&'static str, &'static str), (Arc<WatchCache>, tokio::task::AbortHandle)>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("connecting to the store: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("store: {0}")]
    Store(#[from] tonic::Status),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// etcd v3 endpoints (`http://host:port`).
    pub etcd_servers: Vec<String>,
    pub bind: SocketAddr,
    /// Where the CA and certificates live (created on first start).
    pub pki_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The server URL written into the kubeconfig.
    pub advertise_url: String,
    /// How often to compact the store (upstream's --etcd-compaction-interval, 5 minutes); zero disables.
    pub compaction_interval: Duration,
}

/// Shared state of a running API server.
pub struct ApiServer {
    pub store: Store,
    caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    /// Started and stopped by `crd::run` as CRDs come and go.
    dynamic_caches: DynamicCaches,
    /// The store revision the dynamic registry reflects (`crd::wait_seen`).
    crd_seen: tokio::sync::watch::Sender<i64>,
    /// Wakes the CRD cleanup finalizer.
    crd_cleanup: tokio::sync::Notify,
}

impl ApiServer {
    pub fn new(store: Store, caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>) -> Self {
        ApiServer {
            store,
            caches,
            dynamic_caches: Default::default(),
            crd_seen: tokio::sync::watch::Sender::new(0),
            crd_cleanup: tokio::sync::Notify::new(),
        }
    }

    pub fn cache(&self, r: &Resource) -> Option<Arc<WatchCache>> {
        if r.custom.is_none() {
            return self.caches.get(&(r.group, r.plural)).cloned();
        }
        self.dynamic_caches
            .read()
            .get(&(r.group, r.plural))
            .map(|(c, _)| c.clone())
    }

    /// Ready once every built-in watch cache has its initial list.
    pub fn ready(&self) -> bool {
        self.caches.values().all(|c| c.ready())
    }
}

const BOOTSTRAP_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing; retried until the store answers.
async fn bootstrap(store: &Store, secure_port: u16) -> Result<(), tonic::Status> {
    let Some(ns) = registry::find("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in BOOTSTRAP_NAMESPACES {
        let key = ns.key(None, name);
        let mut obj = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "labels": {"kubernetes.io/metadata.name": name}},
        });
        ns.default_object(&mut obj);
        let value = serde_json::to_vec(&obj).unwrap_or_default();
        match store.put_if(&key, value, 0).await? {
            Write::Done(_) => tracing::info!(namespace = name, "created system namespace"),
            Write::Mismatch(_) => {}
        }
    }
    // The `kubernetes` service in default, at the first address of the service range.
    if let Some(svc) = registry::find("", "v1", "services") {
        let obj = json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": secure_port}],
                "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {}},
        });
        let value = serde_json::to_vec(&obj).unwrap_or_default();
        store.put_if(&svc.key(Some("default"), "kubernetes"), value, 0).await?;
    }
    Ok(())
}

/// Runs the API server until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let pki = tls::Pki::ensure(&config.pki_dir, &hostname)?;
    pki.write_kubeconfig(&config.kubeconfig, &config.advertise_url)?;
    let tls_config = pki.server_config()?;
    let store = Store::connect(&config.etcd_servers)?;

    let mut attempt = 0;
    while let Err(e) = bootstrap(&store, config.bind.port()).await {
        attempt += 1;
        if attempt > 60 {
            return Err(e.into());
        }
        tracing::info!(error = %e, "waiting for the store");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut caches = HashMap::new();
    for r in RESOURCES {
        let c = WatchCache::new(r.prefix(None));
        tokio::spawn(c.clone().run(store.clone()));
        caches.insert((r.group, r.plural), c);
    }
    if !config.compaction_interval.is_zero() {
        tokio::spawn(store.clone().compact_periodically(config.compaction_interval));
    }
    let server = Arc::new(ApiServer::new(store, caches));
    tokio::spawn(namespace::run(server.clone()));
    tokio::spawn(crd::run(server.clone()));
    tokio::spawn(crd::cleanup(server.clone()));
    let router = handlers::router(server);

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| Error::Bind(config.bind, e))?;
    tracing::info!(addr = %config.bind, kubeconfig = %config.kubeconfig.display(), "API server listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            // rustls already checked any presented chain against our CA.
            let authed = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(handlers::Authenticated(authed));
                router.clone().oneshot(req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
