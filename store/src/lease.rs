//! The lessor: which leases exist, their TTLs, their deadlines and the keys attached to them.
//!
//! Grants, revokes and attachments change only through the apply path (they are in the Raft log);
//! deadlines are local, not replicated: a leader (re)starts every lease's clock when it takes over, and
//! proposes a revoke through the log when a lease expires. The lessor never touches MVCC itself.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// etcd's largest accepted TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

pub struct Lessor {
    min_ttl: i64,
    leases: Mutex<HashMap<i64, Lease>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    pub remaining_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

fn deadline(ttl: i64) -> Instant {
    Instant::now() + Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn new(min_ttl: i64) -> Self {
        Lessor {
            min_ttl,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// The TTL a grant of `ttl` really gets.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    pub fn exists(&self, id: i64) -> bool {
        self.leases.lock().contains_key(&id)
    }

    /// Apply path: records a granted lease (restored ones too).
    pub fn grant(&self, id: i64, ttl: i64) {
        self.leases.lock().insert(
            id,
            Lease {
                ttl,
                deadline: deadline(ttl),
                keys: BTreeSet::new(),
            },
        );
    }

    /// Apply path: forgets a lease and returns the keys that were attached to it.
    pub fn revoke(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.leases.lock().remove(&id).map(|l| l.keys.into_iter().collect())
    }

    pub fn attach(&self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.lock().get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.lock().get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Keep-alive: restarts the lease's clock; `None` if the lease does not exist.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut leases = self.leases.lock();
        let l = leases.get_mut(&id)?;
        l.deadline = deadline(l.ttl);
        Some(l.ttl)
    }

    /// Restarts every lease's clock: on start-up and when this member becomes leader.
    pub fn refresh_all(&self) {
        for l in self.leases.lock().values_mut() {
            l.deadline = deadline(l.ttl);
        }
    }

    pub fn info(&self, id: i64, with_keys: bool) -> Option<LeaseInfo> {
        let leases = self.leases.lock();
        let l = leases.get(&id)?;
        let remaining = l.deadline.saturating_duration_since(Instant::now());
        // etcd rounds the remaining time up to whole seconds.
        let remaining_ttl = (remaining.as_millis() as i64 + 999) / 1000;
        Some(LeaseInfo {
            id,
            granted_ttl: l.ttl,
            remaining_ttl,
            keys: if with_keys {
                l.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        self.leases
            .lock()
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn clear(&self) {
        self.leases.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_attach_revoke() {
        let lessor = Lessor::new(2);
        assert_eq!(lessor.effective_ttl(1), 2);
        lessor.grant(7, 5);
        lessor.attach(7, b"a");
        lessor.attach(7, b"b");
        lessor.detach(7, b"a");
        let info = lessor.info(7, true).expect("lease exists");
        assert_eq!(info.keys, vec![b"b".to_vec()]);
        assert!(info.remaining_ttl <= 5 && info.remaining_ttl >= 4);
        assert_eq!(lessor.revoke(7), Some(vec![b"b".to_vec()]));
        assert!(lessor.renew(7).is_none());
    }
}
