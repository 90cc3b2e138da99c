//! The peer network, client side: openraft's RPCs to other members over gRPC (`rudder.raftpb.RaftPeer`
//! on their peer URLs), openraft types encoded with postcard. One lazily connected channel per peer,
//! reused by every RPC; snapshots are streamed in chunks.
//!
//! Replication runs over one long-lived bidi stream per follower (`StreamAppend`): the leader sends
//! each batch of entries as soon as it is in its log, without waiting for the answer to the previous
//! one, so a follower's fsync overlaps the next batch's transfer, and a batch costs one HTTP/2 data
//! frame rather than a whole request with headers and trailers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::base::{BoxFuture, BoxStream};
use openraft::raft::StreamAppendResult;
use openraft::OptionalSend;
use tokio_stream::{Stream, StreamExt};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;
use parking_lot::Mutex;
use rudder_proto::raftpb::raft_peer_client::RaftPeerClient;
use rudder_proto::raftpb::{Payload, SnapshotChunk};
use tonic::transport::{Channel, Endpoint};

use super::{decode, encode, MemberNode, Snapshot, TypeConfig, Vote};

/// Largest piece of a snapshot sent in one message.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Peer channels, shared by the Raft network and by request forwarding.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// A client for the first usable URL of a member's (comma separated) peer URLs.
    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, tonic::transport::Error> {
        let url = addr.split(',').next().unwrap_or(addr).trim().to_string();
        let mut channels = self.channels.lock();
        let channel = match channels.get(&url) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy();
                channels.insert(url, c.clone());
                c
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }
}

pub struct Network {
    pub peers: Peers,
}

pub struct PeerClient {
    target: u64,
    client: Result<RaftPeerClient<Channel>, String>,
}

fn unreachable(target: u64, e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&std::io::Error::other(format!("member {target:x}: {e}")))
}

fn rpc_error(target: u64, s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => RPCError::Unreachable(unreachable(target, s.message())),
        _ => RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "member {target:x}: {}",
            s.message()
        )))),
    }
}

fn timed_out(target: u64, ttl: Duration) -> RPCError<TypeConfig> {
    RPCError::Timeout(Timeout {
        action: openraft::network::RPCTypes::AppendEntries,
        id: 0,
        target,
        timeout: ttl,
    })
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, Unreachable<TypeConfig>> {
        self.client.clone().map_err(|e| unreachable(self.target, e))
    }

    async fn call<Req, Resp, F, Fut>(&self, req: &Req, option: &RPCOption, f: F) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, Payload) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = self.client()?;
        let ttl = option.hard_ttl();
        let resp = match tokio::time::timeout(ttl, f(client, Payload { data })).await {
            Err(_) => return Err(timed_out(self.target, ttl)),
            Ok(Err(s)) => return Err(rpc_error(self.target, s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        decode(&resp.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> Self::Network {
        PeerClient {
            target,
            client: self.peers.client(&node.peer_urls.join(",")).map_err(|e| e.to_string()),
        }
    }
}

/// Send times of the requests of a replication stream that have no answer yet, oldest first: a stream
/// fails when its oldest request goes unanswered for too long, and never while it is merely idle.
#[derive(Default)]
struct Unanswered(Mutex<VecDeque<Instant>>);

impl Unanswered {
    fn sent(&self) {
        self.0.lock().push_back(Instant::now());
    }

    fn answered(&self) {
        self.0.lock().pop_front();
    }

    /// How long the oldest unanswered request may still wait, if there is one.
    fn remaining(&self, ttl: Duration) -> Option<Duration> {
        self.0.lock().front().map(|t| ttl.saturating_sub(t.elapsed()))
    }
}

/// Sends `input` down a `StreamAppend` stream; answers come back in request order.
async fn open_stream<S>(
    mut client: RaftPeerClient<Channel>,
    target: u64,
    input: S,
    option: RPCOption,
) -> Result<BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    let ttl = option.hard_ttl();
    let unanswered = Arc::new(Unanswered::default());
    let sent = unanswered.clone();
    // A request that cannot be encoded ends the stream: skipping it would misalign the answers.
    let requests = input.map_while(move |req| match encode(&req) {
        Ok(data) => {
            sent.sent();
            Some(Payload { data })
        }
        Err(e) => {
            tracing::error!(target_member = format!("{target:x}"), error = %e, "cannot encode AppendEntries");
            None
        }
    });
    let answers = match tokio::time::timeout(ttl, client.stream_append(requests)).await {
        Err(_) => return Err(timed_out(target, ttl)),
        Ok(Err(s)) => return Err(rpc_error(target, s)),
        Ok(Ok(r)) => r.into_inner(),
    };
    let out = futures::stream::unfold(Some((answers, unanswered)), move |state| async move {
        let (mut answers, unanswered) = state?;
        loop {
            let wait = unanswered.remaining(ttl).unwrap_or(ttl);
            // `message` is cancel safe: a timeout that fires while idle loses nothing.
            match tokio::time::timeout(wait, answers.message()).await {
                Err(_) if unanswered.remaining(ttl) == Some(Duration::ZERO) => {
                    return Some((Err(timed_out(target, ttl)), None));
                }
                Err(_) => continue,
                Ok(Ok(None)) => return None,
                Ok(Err(s)) => return Some((Err(rpc_error(target, s)), None)),
                Ok(Ok(Some(p))) => {
                    unanswered.answered();
                    return match decode::<StreamAppendResult<TypeConfig>>(&p.data) {
                        Ok(r) => Some((Ok(r), Some((answers, unanswered)))),
                        Err(e) => Some((Err(RPCError::Network(NetworkError::new(&e))), None)),
                    };
                }
            }
        }
    });
    Ok(Box::pin(out))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        let client = self.client();
        Box::pin(async move { open_stream(client.map_err(RPCError::Unreachable)?, target, input, option).await })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, p| async move { c.append_entries(p).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, p| async move { c.vote(p).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, p| async move { c.transfer_leader(p).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header =
            encode(&(vote, snapshot.meta.clone())).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let data = snapshot.snapshot.into_inner();
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK + 1);
        let mut pieces = data.chunks(SNAPSHOT_CHUNK).peekable();
        let mut first = true;
        loop {
            let piece = pieces.next().unwrap_or(&[]);
            let done = pieces.peek().is_none();
            chunks.push(SnapshotChunk {
                header: if first { header.clone() } else { Vec::new() },
                data: piece.to_vec(),
                done,
            });
            first = false;
            if done {
                break;
            }
        }
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let target = self.target;
        let send = async move { client.install_snapshot(tokio_stream::iter(chunks)).await };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = send => match res {
                Ok(r) => decode(&r.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e))),
                Err(s) => Err(match rpc_error(target, s) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    other => StreamingError::Network(NetworkError::new(&std::io::Error::other(other.to_string()))),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unanswered_request_can_time_a_stream_out() {
        let ttl = Duration::from_millis(400);
        let u = Unanswered::default();
        assert_eq!(u.remaining(ttl), None, "an idle stream has no deadline");
        u.sent();
        std::thread::sleep(Duration::from_millis(200));
        u.sent();
        let left = u.remaining(ttl).unwrap_or(Duration::ZERO);
        assert!(left > Duration::ZERO && left <= Duration::from_millis(200), "{left:?}");
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(u.remaining(ttl), Some(Duration::ZERO), "the oldest request is overdue");
        // Its answer arrives: the deadline is now the second request's.
        u.answered();
        assert!(u.remaining(ttl).is_some_and(|d| d > Duration::ZERO));
        u.answered();
        assert_eq!(u.remaining(ttl), None);
    }
}
