//! One store member: opens RocksDB, recovers the MVCC state and the lessor, starts the openraft group,
//! and offers the narrow operations the gRPC services need (propose, read barrier, header, status).
//! Background duties (lease expiry, auto-compaction) run here too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ReadPolicy, ServerState};
use parking_lot::Mutex;
use rudder_proto::etcdserverpb::{CompactionRequest, LeaseRevokeRequest, ResponseHeader};
use tokio::sync::oneshot;

use crate::apply::{Applier, EventSink};
use crate::command::{ApplyResult, Command, Op};
use crate::config::{AutoCompaction, StoreConfig};
use crate::error::StoreError;
use crate::identity;
use crate::lease::Lessor;
use crate::mvcc::Mvcc;
use crate::raft::network::{Network, Peers};
use crate::raft::peer::{change_membership_local, propose_local, PeerService, ProposeResult};
use crate::raft::{log_store::LogStore, state_machine::StateMachine, MemberNode, MembershipChange, Raft};
use crate::watch::{HeaderSource, WatchHub};
use crate::watch_feed::{HubSink, LossyHubSink, MvccHistory};
use rudder_proto::raftpb::raft_peer_client::RaftPeerClient;
use rudder_proto::raftpb::raft_peer_server::RaftPeerServer;
use rudder_proto::raftpb::Payload;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the data directory {0}: {1}")]
    DataDir(String, String),
    #[error("recovering state: {0}")]
    Recover(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("--initial-cluster has no entry for member {0:?} with its --initial-advertise-peer-urls")]
    NotInCluster(String),
    #[error("peer listener: {0}")]
    Peer(String),
    #[error("joining an existing cluster: {0}")]
    Join(String),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

pub struct StoreNode {
    pub config: StoreConfig,
    pub member: Member,
    pub cluster_id: u64,
    pub raft: Raft,
    pub applier: Arc<Applier>,
    pub hub: WatchHub,
    peers: Peers,
    reads: Arc<ReadBatcher>,
    /// Fires when the cluster removed this member: it must stop serving.
    removed: tokio::sync::watch::Sender<bool>,
    /// Database size, refreshed in the background: the quota check runs on every write and RocksDB's
    /// size properties are too slow to read that often.
    db_size: std::sync::atomic::AtomicU64,
    /// Bytes of writes the quota let through since the last measurement: between two measurements the
    /// quota counts them on top of the cached size, so a burst cannot overshoot it by a tick's worth.
    admitted: std::sync::atomic::AtomicU64,
    pub started: Instant,
}

/// Proposal deadline, as etcd's request timeout (5 s plus two election timeouts).
fn request_timeout(config: &StoreConfig) -> Duration {
    Duration::from_secs(5) + config.election_timeout * 2
}

impl StoreNode {
    pub async fn start(config: StoreConfig) -> Result<Arc<Self>, StartError> {
        let bugs = config.injected_bugs;
        if bugs.any() {
            tracing::warn!(
                bugs = %bugs.names().join(","),
                "UNSAFE TEST-ONLY BUG INJECTION IS ACTIVE: this member breaks the store's guarantees on purpose; \
                 never use it for real data"
            );
        }
        let data_dir = config.data_dir.display().to_string();
        let db_dir = config.data_dir.join("member").join("rocksdb");
        std::fs::create_dir_all(&db_dir).map_err(|e| StartError::DataDir(data_dir.clone(), e.to_string()))?;
        let db = crate::backend::open_with(&db_dir, bugs.ack_before_fsync)
            .map_err(|e| StartError::DataDir(data_dir.clone(), e.to_string()))?;

        let peers = Peers::default();
        let peer_urls = identity::url_strings(&config.initial_advertise_peer_urls);
        let identity = identity::resolve(&db, &config, &peer_urls, &peers).await?;

        let (mvcc, attachments) = Mvcc::open(db.clone()).map_err(|e| StartError::Recover(e.to_string()))?;
        let mvcc = Arc::new(mvcc);
        let hub = WatchHub::new(Arc::new(MvccHistory(mvcc.clone())), mvcc.current_revision());
        let lessor = Arc::new(Lessor::new(config.min_lease_ttl()));
        let sink: Arc<dyn EventSink> = if bugs.drop_watch_event {
            // UNSAFE test-only bug injection (drop-watch-event).
            Arc::new(LossyHubSink::new(hub.clone(), mvcc.clone()))
        } else {
            Arc::new(HubSink {
                hub: hub.clone(),
                mvcc: mvcc.clone(),
            })
        };
        let applier = Arc::new(Applier::new(mvcc, lessor, sink).map_err(|e| StartError::Recover(e.to_string()))?);
        applier
            .restore_leases(attachments)
            .map_err(|e| StartError::Recover(e.to_string()))?;

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            // openraft starts an election once `lease + timer` has passed since the leader was last heard,
            // with lease = election_timeout_max and timer drawn from [min, max), and voters refuse until
            // their own lease (max) has run out. [T/4, 3T/4) therefore puts the first election at
            // [T, 1.5T) after the leader went quiet and it succeeds; etcd's first election lands in
            // [T, 2T). The 500 ms spread is far wider than a loopback or LAN round trip, so split votes
            // stay rare. (`--election-timeout` >= 5 heartbeats, so min > heartbeat as openraft requires.)
            election_timeout_min: config.election_timeout.as_millis() as u64 / 4,
            election_timeout_max: config.election_timeout.as_millis() as u64 * 3 / 4,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count.max(1)),
            // etcd keeps 5,000 entries after a snapshot for slow followers to catch up from.
            max_in_snapshot_log_to_keep: config.snapshot_count.min(5_000),
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let log_store =
            LogStore::new(db.clone(), bugs.ack_before_fsync).map_err(|e| StartError::Recover(e.to_string()))?;
        let inline_sync = log_store.inline_sync_switch();
        let snap_dir = config.data_dir.join("member").join("snap");
        std::fs::create_dir_all(&snap_dir).map_err(|e| StartError::DataDir(data_dir.clone(), e.to_string()))?;
        let sm = StateMachine::new(applier.clone(), snap_dir.join("raft.snapshot"));
        let network = Network { peers: peers.clone() };
        let raft = Raft::new(identity.member_id, Arc::new(raft_config), network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        tokio::spawn(track_inline_sync(raft.server_metrics(), inline_sync));
        let removed = tokio::sync::watch::channel(false).0;
        // Peers must reach this member before it can take part in an election.
        let peer_listeners = crate::server::bind(&config.listen_peer_urls)
            .await
            .map_err(|e| StartError::Peer(e.to_string()))?;
        let peer_service = RaftPeerServer::new(PeerService {
            raft: raft.clone(),
            cluster_id: identity.cluster_id,
            lessor: applier.lessor.clone(),
            peers: peers.clone(),
            removed: removed.clone(),
        })
        .max_decoding_message_size(usize::MAX);
        let peer_router = tonic::service::Routes::new(peer_service).into_axum_router();
        for l in peer_listeners {
            tokio::spawn(crate::server::serve(l, peer_router.clone()));
        }

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && identity.bootstrap {
            let nodes: BTreeMap<u64, MemberNode> = identity
                .initial_members
                .iter()
                // Every member must propose the same initial membership; client URLs are published later.
                .map(|(id, (name, urls))| {
                    (
                        *id,
                        MemberNode {
                            name: name.clone(),
                            peer_urls: urls.clone(),
                            client_urls: Vec::new(),
                        },
                    )
                })
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => {}
                // The peer listener is already serving: a member that bootstrapped first may have
                // reached us since the check above (its vote request or its first entries), and then
                // we already belong to its cluster, whose first membership is the same as ours.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(state = %e, "a peer initialized the cluster first");
                }
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        let member = Member {
            id: identity.member_id,
            name: config.name.clone(),
            peer_urls,
            client_urls: identity::url_strings(&config.advertise_client_urls),
        };
        let node = Arc::new(StoreNode {
            member,
            cluster_id: identity.cluster_id,
            reads: Arc::new(ReadBatcher::default()),
            db_size: std::sync::atomic::AtomicU64::new(crate::backend::db_size(&db)),
            admitted: std::sync::atomic::AtomicU64::new(0),
            peers,
            removed,
            raft,
            applier,
            hub,
            started: Instant::now(),
            config,
        });
        node.wait_for_leader(Duration::from_secs(60)).await?;
        // The committed position is not persisted (saving it was a RocksDB write in openraft's core on
        // every commit). The state machine is in RocksDB and survives a crash, but after a power loss it
        // may be behind the durable log: wait until what the cluster committed is applied again.
        if let Err(e) = node.raft.wait_for_recovery(Some(Duration::from_secs(10))).await {
            tracing::warn!(error = %e, "state machine not yet caught up with the cluster's commit; serving anyway");
        }
        // Like etcd, publish this member's name and client URLs before serving clients, so member list
        // shows them; a joining member that cannot yet reach the leader keeps trying in the background.
        if tokio::time::timeout(Duration::from_secs(10), publish_self(Arc::downgrade(&node)))
            .await
            .is_err()
        {
            tokio::spawn(publish_self(Arc::downgrade(&node)));
        }
        node.spawn_background();
        Ok(node)
    }

    /// The leader's peer client, or why there is none to forward to.
    fn leader_client(&self) -> Result<Option<RaftPeerClient<tonic::transport::Channel>>, StoreError> {
        leader_client(&self.raft, &self.peers)
    }

    /// Keep-alive: renews on the leader (forwarding from a follower); 0 for an unknown lease.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, StoreError> {
        match self.leader_client()? {
            None => Ok(self.applier.lessor.renew(id).unwrap_or(0)),
            Some(mut client) => {
                let data = crate::raft::encode(&id).map_err(|e| StoreError::Internal(e.to_string()))?;
                let resp = client
                    .lease_keep_alive(Payload { data })
                    .await
                    .map_err(|_| StoreError::NoLeader)?;
                crate::raft::decode::<Result<i64, StoreError>>(&resp.into_inner().data)
                    .map_err(|e| StoreError::Internal(e.to_string()))?
            }
        }
    }

    /// A lease's TTLs as the leader's clock has them, and its keys.
    pub async fn lease_info(&self, id: i64, keys: bool) -> Result<Option<crate::lease::LeaseInfo>, StoreError> {
        match self.leader_client()? {
            None => Ok(self.applier.lessor.info(id, keys)),
            Some(mut client) => {
                let data = crate::raft::encode(&(id, keys)).map_err(|e| StoreError::Internal(e.to_string()))?;
                let resp = client
                    .lease_time_to_live(Payload { data })
                    .await
                    .map_err(|_| StoreError::NoLeader)?;
                crate::raft::decode(&resp.into_inner().data).map_err(|e| StoreError::Internal(e.to_string()))
            }
        }
    }

    /// The members as the Raft membership has them: (id, node, is_learner).
    pub fn members(&self) -> Vec<(u64, MemberNode, bool)> {
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
    }

    /// Runs a membership change on the leader (forwarding it if this member is not the leader).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), StoreError> {
        let run = async {
            match self.leader_client()? {
                None => change_membership_local(&self.raft, &self.peers, change).await,
                Some(mut client) => {
                    let data = crate::raft::encode(&change).map_err(|e| StoreError::Internal(e.to_string()))?;
                    let resp = client
                        .change_membership(Payload { data })
                        .await
                        .map_err(|_| StoreError::Timeout)?;
                    crate::raft::decode::<Result<(), StoreError>>(&resp.into_inner().data)
                        .map_err(|e| StoreError::Internal(e.to_string()))?
                }
            }
        };
        tokio::time::timeout(request_timeout(&self.config), run)
            .await
            .map_err(|_| StoreError::Timeout)?
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

    /// Proposes one command through the log (on the leader, forwarding if needed) and waits for its result.
    ///
    /// A proposal that provably never reached a log (no leader yet, the leader's address refuses
    /// connections, or the leader answered that it no longer leads) waits for the next leader and goes
    /// there, within the request deadline: a leader election costs the client latency, not an error.
    /// One whose outcome is unknown (the connection broke after sending) fails with a timeout, as etcd's.
    pub async fn propose(&self, op: Op) -> Result<ApplyResult, StoreError> {
        let cmd = Command::encode(op);
        if cmd.0.len() > self.config.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        let run = async {
            loop {
                // No leader, or one this member cannot address yet, counts as not taken.
                let leader = self.leader();
                let attempt = match leader_client(&self.raft, &self.peers) {
                    Err(e) => Err(e),
                    Ok(None) => propose_local(&self.raft, cmd.clone()).await,
                    Ok(Some(mut client)) => match client.propose(Payload { data: cmd.0.clone() }).await {
                        Ok(resp) => crate::raft::decode::<ProposeResult>(&resp.into_inner().data)
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        Err(status) if never_sent(&status) => Err(StoreError::NoLeader),
                        Err(_) => return Err(StoreError::Timeout),
                    },
                };
                match attempt {
                    Err(StoreError::NoLeader | StoreError::LeaderChanged) => {
                        tracing::debug!(?leader, "proposal not taken by the leader; waiting for the next one");
                        self.leader_other_than(leader).await?;
                    }
                    done => return done,
                }
            }
        };
        tokio::time::timeout(request_timeout(&self.config), run)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Waits until this member knows a leader other than `old`. A leader that stays, or is re-elected,
    /// still counts once a heartbeat interval has passed, so a transient refusal is retried too.
    async fn leader_other_than(&self, old: Option<u64>) -> Result<(), StoreError> {
        let mut metrics = self.raft.metrics();
        let settle = tokio::time::sleep(self.config.heartbeat_interval.max(Duration::from_millis(10)));
        tokio::pin!(settle);
        loop {
            let now = metrics.borrow_watched().current_leader;
            if now.is_some() && (now != old || settle.is_elapsed()) {
                return Ok(());
            }
            tokio::select! {
                changed = metrics.changed() => changed.map_err(|_| StoreError::Stopped)?,
                () = &mut settle, if !settle.is_elapsed() => {}
            }
        }
    }

    /// Waits until this member's applied state includes every write committed before the call
    /// (ReadIndex); concurrent callers share one leadership confirmation.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        if self.config.injected_bugs.stale_read {
            // UNSAFE test-only bug injection (stale-read): no ReadIndex, so a lagging or cut-off member
            // answers from whatever it has applied.
            return Ok(());
        }
        // A ReadIndex has no effect, so one that found no leader is simply asked again once there is one.
        let run = async {
            loop {
                let asked = self.leader();
                match self.read_index_once().await {
                    Err(StoreError::NoLeader | StoreError::LeaderChanged) => self.leader_other_than(asked).await?,
                    done => return done,
                }
            }
        };
        tokio::time::timeout(request_timeout(&self.config), run)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Joins the next batched leadership confirmation.
    async fn read_index_once(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self.reads.state.lock();
            s.waiting.push(tx);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            tokio::spawn(drive_reads(self.reads.clone(), self.raft.clone(), self.peers.clone()));
        }
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    fn spawn_background(self: &Arc<Self>) {
        tokio::spawn(expire_leases(Arc::downgrade(self)));
        tokio::spawn(track_db_size(Arc::downgrade(self)));
        tokio::spawn(watch_removal(Arc::downgrade(self)));
        tokio::spawn(refresh_leases_on_leadership(Arc::downgrade(self)));
        if self.config.auto_compaction != AutoCompaction::Off {
            tokio::spawn(auto_compact(Arc::downgrade(self)));
        }
    }

    /// Resolves once the cluster has removed this member.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The database size as of the last refresh (at most a quarter second old), plus the writes admitted
    /// since.
    pub fn db_size(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.db_size.load(Relaxed).saturating_add(self.admitted.load(Relaxed))
    }

    /// Counts `cost` bytes of an admitted write until the next measurement.
    pub fn admit(&self, cost: u64) {
        self.admitted.fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
    }

    /// Measures the database size now (a few RocksDB property reads) and caches it.
    pub fn refresh_db_size(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        // An estimate: a write admitted but not applied before the measurement is missed until the next.
        self.admitted.store(0, Relaxed);
        let size = crate::backend::db_size(self.applier.mvcc.db());
        self.db_size.store(size, Relaxed);
        size
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

async fn remote_read_index(
    mut client: RaftPeerClient<tonic::transport::Channel>,
    raft: &Raft,
    me: u64,
) -> Result<(), StoreError> {
    let resp = client
        .read_index(Payload::default())
        .await
        .map_err(|_| StoreError::NoLeader)?;
    let log_id = crate::raft::decode::<Result<crate::raft::LogId, StoreError>>(&resp.into_inner().data)
        .map_err(|e| StoreError::Internal(e.to_string()))??;
    let linearizer = openraft::raft::linearizable_read::Linearizer::new(
        me,
        openraft::raft::linearizable_read::ReadLogId::from_log_id(log_id),
        None,
    );
    linearizer
        .await_ready(raft)
        .await
        .map(|_| ())
        .map_err(|_| StoreError::Stopped)
}

/// The current leader's peer client (`None` when `raft` leads), or why there is none to forward to.
fn leader_client(raft: &Raft, peers: &Peers) -> Result<Option<RaftPeerClient<tonic::transport::Channel>>, StoreError> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let Some(leader) = m.current_leader else {
        return Err(StoreError::NoLeader);
    };
    if leader == m.id {
        return Ok(None);
    }
    let node = m
        .membership_config
        .get_node(&leader)
        .cloned()
        .ok_or(StoreError::NoLeader)?;
    peers
        .client(&node.peer_urls.join(","))
        .map(Some)
        .map_err(|_| StoreError::NoLeader)
}

/// Confirms leadership for everyone who asked before the confirmation started, then for the next group.
/// The leader is looked up for every group: under steady load this loop never ends, and a group must not
/// keep asking a leader that has gone.
async fn drive_reads(reads: Arc<ReadBatcher>, raft: Raft, peers: Peers) {
    loop {
        let batch = {
            let mut s = reads.state.lock();
            if s.waiting.is_empty() {
                s.running = false;
                return;
            }
            std::mem::take(&mut s.waiting)
        };
        let res = match leader_client(&raft, &peers) {
            Err(e) => Err(e),
            Ok(Some(client)) => remote_read_index(client, &raft, raft_id(&raft)).await,
            Ok(None) => local_read_index(&raft).await,
        };
        for w in batch {
            let _ = w.send(res.clone());
        }
    }
}

fn raft_id(raft: &Raft) -> u64 {
    raft.metrics().borrow_watched().id
}

async fn local_read_index(raft: &Raft) -> Result<(), StoreError> {
    match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(_))) => {
            Err(StoreError::NoLeader)
        }
        Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
        Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
    }
}

/// Records this member's name and client URLs in the membership (etcd's "publish"), so every member's
/// member list shows them; members added with `member add` start without them.
async fn publish_self(node: std::sync::Weak<StoreNode>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        // A membership change only starts once the previous one is committed; asking earlier just fails.
        let settled = {
            let m = n.raft.server_metrics();
            let m = m.borrow_watched();
            m.membership_config.log_id() == m.committed_membership_config.log_id()
        };
        if !settled {
            drop(n);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let me = n.member.clone();
        let current = n
            .members()
            .into_iter()
            .find(|(id, _, _)| *id == me.id)
            .map(|(_, node, _)| node);
        match current {
            Some(c) if c.name == me.name && c.client_urls == me.client_urls => return,
            None => return,
            Some(_) => {}
        }
        let change = MembershipChange::Publish {
            id: me.id,
            name: me.name.clone(),
            client_urls: me.client_urls.clone(),
        };
        match n.change_membership(change).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "publishing member attributes; will retry"),
        }
        drop(n);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Lets the log store sync idle appends inline unless this member leads others (see `log_store`).
async fn track_inline_sync(
    mut metrics: openraft::type_config::alias::WatchReceiverOf<
        crate::raft::TypeConfig,
        openraft::metrics::RaftServerMetrics<crate::raft::TypeConfig>,
    >,
    inline: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let allowed = {
            let m = metrics.borrow_watched();
            m.state != ServerState::Leader || m.membership_config.nodes().count() <= 1
        };
        inline.store(allowed, std::sync::atomic::Ordering::Relaxed);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A member the cluster removed stops serving, as etcd does.
async fn watch_removal(node: std::sync::Weak<StoreNode>) {
    // Server metrics change with leadership and membership only, not with every write.
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.server_metrics()) else {
        return;
    };
    // A joining member first sees memberships older than its own addition (from a snapshot): only a
    // membership without us after one with us means removal.
    let mut seen_self = false;
    loop {
        let gone = {
            let m = metrics.borrow_watched();
            let me = m.id;
            let in_effective = m.membership_config.nodes().any(|(id, _)| *id == me);
            let in_committed = m.committed_membership_config.nodes().any(|(id, _)| *id == me);
            seen_self |= in_effective || in_committed;
            // Only once the membership without us is committed is the removal final; stopping
            // earlier could leave the change half done.
            seen_self && !in_effective && !in_committed
        };
        if gone {
            // Like etcd, stop a little later so the answer to the request that removed us (possibly
            // served by this member as leader) still gets out.
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(n) = node.upgrade() {
                tracing::error!("the member has been permanently removed from the cluster");
                let _ = n.removed.send(true);
            }
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Whether a forwarded call failed before any byte of it left: the connection to the leader could not
/// be made, so the leader cannot have taken the command.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn track_db_size(node: std::sync::Weak<StoreNode>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        node.refresh_db_size();
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
    // Server metrics change with leadership and membership only, not with every write.
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.server_metrics()) else {
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
