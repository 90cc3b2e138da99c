//! One store member: opens RocksDB, recovers the MVCC state and the lessor, starts the openraft group,
//! and offers the narrow operations the gRPC services need (propose, read barrier, header, status).
//! Background duties (lease expiry, auto-compaction) run here too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{BasicNode, ReadPolicy, ServerState};
use parking_lot::Mutex;
use rudder_proto::etcdserverpb::{CompactionRequest, LeaseRevokeRequest, ResponseHeader};
use sha1::{Digest, Sha1};
use tokio::sync::oneshot;

use crate::apply::{Applier, EventSink};
use crate::command::{ApplyResult, Command, Op};
use crate::config::{AutoCompaction, StoreConfig};
use crate::error::StoreError;
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
use crate::raft::{log_store::LogStore, network::Network, state_machine::StateMachine, Raft};
use crate::watch::{HeaderSource, WatchHub};
use crate::watch_feed::{HubSink, MvccHistory};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the data directory {0}: {1}")]
    DataDir(String, String),
    #[error("recovering state: {0}")]
    Recover(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("--initial-cluster has no entry for member {0:?}")]
    NotInCluster(String),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// etcd's member id: the first 8 bytes of SHA-1 over the sorted peer URLs and the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// etcd's cluster id: the first 8 bytes of SHA-1 over the sorted member ids.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn url_strings(urls: &[url::Url]) -> Vec<String> {
    urls.iter()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .collect()
}

pub struct StoreNode {
    pub config: StoreConfig,
    pub member: Member,
    pub cluster_id: u64,
    pub raft: Raft,
    pub applier: Arc<Applier>,
    pub hub: WatchHub,
    reads: Arc<ReadBatcher>,
    /// Database size, refreshed in the background: the quota check runs on every write and RocksDB's
    /// size properties are too slow to read that often.
    db_size: std::sync::atomic::AtomicU64,
    pub started: Instant,
}

/// Proposal deadline, as etcd's request timeout (5 s plus two election timeouts).
fn request_timeout(config: &StoreConfig) -> Duration {
    Duration::from_secs(5) + config.election_timeout * 2
}

impl StoreNode {
    pub async fn start(config: StoreConfig) -> Result<Arc<Self>, StartError> {
        let db_dir = config.data_dir.join("member").join("rocksdb");
        std::fs::create_dir_all(&db_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e.to_string()))?;
        let db = crate::backend::open(&db_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e.to_string()))?;

        let peer_urls = url_strings(&config.initial_advertise_peer_urls);
        let id = member_id(&peer_urls, &config.initial_cluster_token);
        let mut members = BTreeMap::new();
        for (name, urls) in &config.initial_cluster {
            let urls = url_strings(urls);
            members.insert(member_id(&urls, &config.initial_cluster_token), (name.clone(), urls));
        }
        if !members.contains_key(&id) {
            return Err(StartError::NotInCluster(config.name.clone()));
        }
        let cluster = cluster_id(&members.keys().copied().collect::<Vec<_>>());

        let (mvcc, attachments) = Mvcc::open(db.clone()).map_err(|e| StartError::Recover(e.to_string()))?;
        let mvcc = Arc::new(mvcc);
        let hub = WatchHub::new(Arc::new(MvccHistory(mvcc.clone())), mvcc.current_revision());
        let lessor = Arc::new(Lessor::new(config.min_lease_ttl()));
        let sink: Arc<dyn EventSink> = Arc::new(HubSink(hub.clone()));
        let applier = Arc::new(Applier::new(mvcc, lessor, sink).map_err(|e| StartError::Recover(e.to_string()))?);
        applier
            .restore_leases(attachments)
            .map_err(|e| StartError::Recover(e.to_string()))?;

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: config.election_timeout.as_millis() as u64 * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50_000),
            max_in_snapshot_log_to_keep: 1_000,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let log_store = LogStore::new(db.clone()).map_err(|e| StartError::Recover(e.to_string()))?;
        let sm = StateMachine::new(applier.clone());
        let raft = Raft::new(id, Arc::new(raft_config), Network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
        {
            let nodes: BTreeMap<u64, BasicNode> = members
                .iter()
                .map(|(id, (_, urls))| (*id, BasicNode { addr: urls.join(",") }))
                .collect();
            raft.initialize(nodes)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        let member = Member {
            id,
            name: config.name.clone(),
            peer_urls,
            client_urls: url_strings(&config.advertise_client_urls),
        };
        let node = Arc::new(StoreNode {
            member,
            cluster_id: cluster,
            reads: Arc::new(ReadBatcher::default()),
            db_size: std::sync::atomic::AtomicU64::new(crate::backend::db_size(&db)),
            raft,
            applier,
            hub,
            started: Instant::now(),
            config,
        });
        node.wait_for_leader(Duration::from_secs(30)).await?;
        node.spawn_background();
        Ok(node)
    }

    async fn wait_for_leader(&self, limit: Duration) -> Result<(), StartError> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if metrics.borrow_watched().current_leader.is_some() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StartError::Raft("raft stopped before electing a leader".into())),
                Err(_) => return Err(StartError::Raft("no leader elected in time".into())),
            }
        }
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member.id,
            revision,
            raft_term: self.raft_term(),
        }
    }

    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// (last log index, applied index)
    pub fn raft_indexes(&self) -> (u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (
            m.last_log_index.unwrap_or(0),
            m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        )
    }

    /// Proposes one command through the log and waits for its result.
    pub async fn propose(&self, op: Op) -> Result<ApplyResult, StoreError> {
        let cmd = Command::encode(op);
        if cmd.0.len() > self.config.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        let res = tokio::time::timeout(request_timeout(&self.config), self.raft.client_write(cmd))
            .await
            .map_err(|_| StoreError::Timeout)?;
        match res {
            Ok(resp) => match resp.data {
                ApplyResult::Error(e) => Err(StoreError::Apply(e)),
                other => Ok(other),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(if f.leader_id.is_some() {
                StoreError::LeaderChanged
            } else {
                StoreError::NoLeader
            }),
            Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
            Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
        }
    }

    /// Waits until this member's applied state includes every write committed before the call
    /// (ReadIndex); concurrent callers share one leadership confirmation.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self.reads.state.lock();
            s.waiting.push(tx);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            tokio::spawn(drive_reads(self.reads.clone(), self.raft.clone()));
        }
        tokio::time::timeout(request_timeout(&self.config), rx)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|_| StoreError::Stopped)?
    }

    fn spawn_background(self: &Arc<Self>) {
        tokio::spawn(expire_leases(Arc::downgrade(self)));
        tokio::spawn(track_db_size(Arc::downgrade(self)));
        tokio::spawn(refresh_leases_on_leadership(Arc::downgrade(self)));
        if self.config.auto_compaction != AutoCompaction::Off {
            tokio::spawn(auto_compact(Arc::downgrade(self)));
        }
    }

    /// The database size as of the last refresh (at most a quarter second old).
    pub fn db_size(&self) -> u64 {
        self.db_size.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

impl HeaderSource for StoreNode {
    fn header(&self, revision: i64) -> ResponseHeader {
        StoreNode::header(self, revision)
    }
}

#[derive(Default)]
struct ReadBatcher {
    state: Mutex<ReadState>,
}

#[derive(Default)]
struct ReadState {
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
    running: bool,
}

/// Confirms leadership for everyone who asked before the confirmation started, then for the next group.
async fn drive_reads(reads: Arc<ReadBatcher>, raft: Raft) {
    loop {
        let batch = {
            let mut s = reads.state.lock();
            if s.waiting.is_empty() {
                s.running = false;
                return;
            }
            std::mem::take(&mut s.waiting)
        };
        let res = match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(_))) => {
                Err(StoreError::NoLeader)
            }
            Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
            Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
        };
        for w in batch {
            let _ = w.send(res.clone());
        }
    }
}

async fn track_db_size(node: std::sync::Weak<StoreNode>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let size = crate::backend::db_size(node.applier.mvcc.db());
        node.db_size.store(size, std::sync::atomic::Ordering::Relaxed);
    }
}

/// On the leader, proposes a revoke for every expired lease (through the log, so every member agrees).
async fn expire_leases(node: std::sync::Weak<StoreNode>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if !node.is_leader() {
            continue;
        }
        for id in node.applier.lessor.expired(Instant::now()) {
            match node.propose(Op::LeaseRevoke(LeaseRevokeRequest { id })).await {
                Ok(_) | Err(StoreError::Apply(crate::command::ApplyError::LeaseNotFound)) => {}
                Err(e) => tracing::warn!(lease = id, error = %e, "revoking expired lease"),
            }
        }
    }
}

/// A member that becomes leader restarts every lease's clock, so leases survive leader changes.
async fn refresh_leases_on_leadership(node: std::sync::Weak<StoreNode>) {
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    let mut was_leader = false;
    loop {
        let is_leader = metrics.borrow_watched().state == ServerState::Leader;
        if is_leader && !was_leader {
            if let Some(n) = node.upgrade() {
                n.applier.lessor.refresh_all();
            }
        }
        was_leader = is_leader;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// etcd's auto-compaction: `periodic` keeps the given span of history (sampling revisions every tenth of
/// it), `revision` keeps the given number of revisions (checked every 5 minutes).
async fn auto_compact(node: std::sync::Weak<StoreNode>) {
    let Some(mode) = node.upgrade().map(|n| n.config.auto_compaction.clone()) else {
        return;
    };
    let (every, keep_samples) = match &mode {
        AutoCompaction::Periodic(d) => ((*d / 10).max(Duration::from_millis(100)), 10usize),
        AutoCompaction::Revision(_) => (Duration::from_secs(300), 0),
        AutoCompaction::Off => return,
    };
    let mut samples: std::collections::VecDeque<i64> = Default::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let current = node.applier.mvcc.current_revision();
        let target = match &mode {
            AutoCompaction::Periodic(_) => {
                samples.push_back(current);
                if samples.len() <= keep_samples {
                    continue;
                }
                samples.pop_front().unwrap_or(0)
            }
            AutoCompaction::Revision(keep) => current - keep,
            AutoCompaction::Off => return,
        };
        if !node.is_leader() || target <= node.applier.mvcc.compacted_revision() || target <= 1 {
            continue;
        }
        match node
            .propose(Op::Compaction(CompactionRequest {
                revision: target,
                physical: false,
            }))
            .await
        {
            Ok(_) => tracing::info!(revision = target, "auto-compacted"),
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction"),
        }
    }
}
