//! `rudder server`: the Kubernetes API server, on an embedded single-member store unless `--etcd-servers`
//! names an external etcd v3 cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rudder_store::config::StoreConfig;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Data directory: the embedded store under <data-dir>/store, certificates under <data-dir>/pki.
    #[arg(long, default_value = "./rudder-data")]
    data_dir: PathBuf,
    /// External etcd v3 endpoints (comma-separated URLs); without it an embedded store member runs.
    #[arg(long)]
    etcd_servers: Option<String>,
    /// Client URL of the embedded store.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    store_client_url: String,
    /// Peer URL of the embedded store.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    store_peer_url: String,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Where to write the admin kubeconfig (default: <data-dir>/kubeconfig.yaml).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// How often to compact the store (e.g. 5m, 30s); 0 disables compaction.
    #[arg(long, default_value = "5m")]
    etcd_compaction_interval: String,
    /// Log level filter (tracing syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Save an etcd-format snapshot of the embedded store this often (e.g. 30m, 10s); 0 disables.
    #[arg(long, default_value = "1h")]
    snapshot_interval: String,
    /// How many scheduled snapshots to keep (the newest); 0 keeps them all.
    #[arg(long, default_value_t = 5)]
    snapshot_retention: usize,
    /// Directory for scheduled snapshots (default: <data-dir>/snapshots).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(format!("{},openraft=warn", args.log_level)).unwrap_or_default(),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let schedule = super::store::snapshot_schedule(
        &args.snapshot_interval,
        args.snapshot_retention,
        args.snapshot_dir.as_deref(),
        &args.data_dir,
    )?;
    if args.etcd_servers.is_some() && !schedule.interval.is_zero() {
        tracing::info!("--etcd-servers: no embedded store, so no scheduled snapshots");
    }
    let mut store_tasks = tokio::task::JoinSet::new();
    let mut node = None;
    let etcd_servers = match &args.etcd_servers {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => {
            let client = url::Url::parse(&args.store_client_url).context("--store-client-url")?;
            let peer = url::Url::parse(&args.store_peer_url).context("--store-peer-url")?;
            let mut c = StoreConfig::new("default");
            c.data_dir = args.data_dir.join("store");
            c.listen_client_urls = vec![client.clone()];
            c.advertise_client_urls = vec![client.clone()];
            c.listen_peer_urls = vec![peer.clone()];
            c.initial_advertise_peer_urls = vec![peer.clone()];
            c.initial_cluster = vec![("default".into(), vec![peer])];
            let listeners = rudder_store::server::bind(&c.listen_client_urls)
                .await
                .context("binding the store's client URL")?;
            let n = rudder_store::node::StoreNode::start(c)
                .await
                .context("starting the store")?;
            let router = rudder_store::server::router(n.clone());
            for l in listeners {
                store_tasks.spawn(rudder_store::server::serve(l, router.clone()));
            }
            rudder_store::backup::schedule::spawn(&n, schedule);
            node = Some(n);
            vec![client.as_str().trim_end_matches('/').to_string()]
        }
    };
    let kubeconfig = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
    let host = if args.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        args.bind_address.to_string()
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let config = rudder_apiserver::Config {
        etcd_servers,
        bind: SocketAddr::new(args.bind_address, args.secure_port),
        pki_dir: args.data_dir.join("pki"),
        kubeconfig: kubeconfig.clone(),
        advertise_url: format!("https://{host}:{}", args.secure_port),
        compaction_interval: super::store::parse_duration(&args.etcd_compaction_interval, Duration::from_secs(1))
            .context("--etcd-compaction-interval")?,
    };
    println!("kubeconfig: {0}\nexport KUBECONFIG={0}", kubeconfig.display());
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
        }
        tracing::info!("shutting down");
    };
    let result = tokio::select! {
        r = rudder_apiserver::run(config, shutdown) => r.context("API server"),
        Some(Ok(Err(e))) = store_tasks.join_next() => Err(e).context("store client server"),
    };
    if let Some(n) = node {
        n.shutdown().await;
    }
    result
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
