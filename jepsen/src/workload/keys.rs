//! Independent keys: each key takes a bounded number of operations and is then retired for a fresh one,
//! so every key's history stays short enough for the linearizability search (as Jepsen's independent
//! generator does).

use std::sync::Mutex;

use rand::Rng;

pub struct KeyPool {
    inner: Mutex<Inner>,
    ops_per_key: u64,
}

struct Inner {
    /// (key, operations left, last value known to be stored).
    active: Vec<(u64, u64, Option<u64>)>,
    next: u64,
}

impl KeyPool {
    pub fn new(active: usize, ops_per_key: u64) -> Self {
        let active = (0..active.max(1) as u64)
            .map(|k| (k, ops_per_key, None))
            .collect::<Vec<_>>();
        let next = active.len() as u64;
        KeyPool {
            inner: Mutex::new(Inner { active, next }),
            ops_per_key,
        }
    }

    /// Picks an active key for one operation, with the last value known for it.
    pub fn take(&self, rng: &mut impl Rng) -> (u64, Option<u64>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let i = rng.random_range(0..inner.active.len());
        let (key, left, last) = inner.active[i];
        if left <= 1 {
            let fresh = inner.next;
            inner.next += 1;
            inner.active[i] = (fresh, self.ops_per_key, None);
        } else {
            inner.active[i].1 = left - 1;
        }
        (key, last)
    }

    /// Remembers a value seen stored at `key` (for CAS arguments that can succeed).
    pub fn observe(&self, key: u64, value: Option<u64>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = inner.active.iter_mut().find(|(k, _, _)| *k == key) {
            slot.2 = value;
        }
    }

    /// Several distinct active keys (for multi-key transactions).
    pub fn take_many(&self, rng: &mut impl Rng, n: usize) -> Vec<u64> {
        let mut keys = Vec::new();
        for _ in 0..n * 3 {
            if keys.len() == n {
                break;
            }
            let (k, _) = self.take(rng);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_retire_after_their_budget() {
        let pool = KeyPool::new(2, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..60 {
            let (k, _) = pool.take(&mut rng);
            *counts.entry(k).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&c| c <= 3), "{counts:?}");
        assert!(counts.len() >= 20);
    }
}
