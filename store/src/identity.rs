//! Who this member is: its etcd member id and cluster id, derived as etcd derives them when a cluster is
//! bootstrapped, learned from the peers when joining one (`--initial-cluster-state existing`), and kept
//! in the Raft metadata so a restart keeps them.

use std::collections::BTreeMap;

use rocksdb::DB;
use rudder_proto::raftpb::MembersRequest;
use sha1::{Digest, Sha1};

use crate::backend;
use crate::config::StoreConfig;
use crate::node::StartError;
use crate::raft::network::Peers;
use crate::raft::MemberNode;
use crate::schema::CF_RAFT_META;

const META_MEMBER_ID: &[u8] = b"member_id";
const META_CLUSTER_ID: &[u8] = b"cluster_id";

pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    /// This start creates the cluster's first membership (a new cluster, never started before).
    pub bootstrap: bool,
    /// id -> (name, peer URLs), from --initial-cluster.
    pub initial_members: BTreeMap<u64, (String, Vec<String>)>,
}

/// etcd's member id: the first 8 bytes of SHA-1 over the sorted peer URLs and the cluster token
/// (plus, for members added at run time, the time of the addition).
pub fn member_id(peer_urls: &[String], token: &str, time: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    if let Some(t) = time {
        h.update(t.to_string().as_bytes());
    }
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

pub fn url_strings(urls: &[url::Url]) -> Vec<String> {
    urls.iter()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .collect()
}

fn read_u64(db: &DB, key: &[u8]) -> Result<Option<u64>, StartError> {
    let cf = backend::cf(db, CF_RAFT_META).map_err(|e| StartError::Recover(e.to_string()))?;
    let raw = db.get_cf(cf, key).map_err(|e| StartError::Recover(e.to_string()))?;
    Ok(raw
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes))
}

fn persist(db: &DB, member_id: u64, cluster_id: u64) -> Result<(), StartError> {
    let cf = backend::cf(db, CF_RAFT_META).map_err(|e| StartError::Recover(e.to_string()))?;
    let mut batch = rocksdb::WriteBatch::default();
    batch.put_cf(cf, META_MEMBER_ID, member_id.to_be_bytes());
    batch.put_cf(cf, META_CLUSTER_ID, cluster_id.to_be_bytes());
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| StartError::Recover(e.to_string()))
}

fn same_urls(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

pub async fn resolve(
    db: &DB,
    config: &StoreConfig,
    peer_urls: &[String],
    peers: &Peers,
) -> Result<Identity, StartError> {
    let token = &config.initial_cluster_token;
    let initial_members: BTreeMap<u64, (String, Vec<String>)> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            let urls = url_strings(urls);
            (member_id(&urls, token, None), (name.clone(), urls))
        })
        .collect();
    if let (Some(member_id), Some(cluster_id)) = (read_u64(db, META_MEMBER_ID)?, read_u64(db, META_CLUSTER_ID)?) {
        return Ok(Identity {
            member_id,
            cluster_id,
            bootstrap: false,
            initial_members,
        });
    }
    if config.initial_cluster_state_new {
        let me = member_id(peer_urls, token, None);
        if !initial_members.contains_key(&me) {
            return Err(StartError::NotInCluster(config.name.clone()));
        }
        let cluster = cluster_id(&initial_members.keys().copied().collect::<Vec<_>>());
        persist(db, me, cluster)?;
        return Ok(Identity {
            member_id: me,
            cluster_id: cluster,
            bootstrap: true,
            initial_members,
        });
    }
    // Joining: ask the other members which id the cluster gave our peer URLs.
    let mut last_error = String::from("no other member in --initial-cluster");
    for (name, urls) in initial_members.values() {
        if same_urls(urls, peer_urls) {
            continue;
        }
        let mut client = match peers.client(&urls.join(",")) {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{name}: {e}");
                continue;
            }
        };
        let resp = match client.members(MembersRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                last_error = format!("{name}: {}", e.message());
                continue;
            }
        };
        let members: Vec<(u64, MemberNode, bool)> =
            crate::raft::decode(&resp.members).map_err(|e| StartError::Join(e.to_string()))?;
        match members.iter().find(|(_, n, _)| same_urls(&n.peer_urls, peer_urls)) {
            Some((id, _, _)) => {
                persist(db, *id, resp.cluster_id)?;
                return Ok(Identity {
                    member_id: *id,
                    cluster_id: resp.cluster_id,
                    bootstrap: false,
                    initial_members,
                });
            }
            None => {
                return Err(StartError::Join(format!(
                    "member with peer URLs {} has not been added to the cluster (etcdctl member add)",
                    peer_urls.join(",")
                )))
            }
        }
    }
    Err(StartError::Join(last_error))
}
