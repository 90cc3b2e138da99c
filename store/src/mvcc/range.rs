//! The Range request as etcd answers it: revision filters, sorting, limit, count and `more`.

use rudder_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use rudder_proto::etcdserverpb::RangeRequest;
use rudder_proto::mvccpb::KeyValue;

use super::revision::Revision;
use super::store::MvccError;

/// One live key found by a range: either stored at a revision or written earlier in the same txn.
pub enum Candidate {
    Stored(Vec<u8>, Revision),
    Pending(KeyValue),
}

impl Candidate {
    fn mod_revision(&self) -> i64 {
        match self {
            Candidate::Stored(_, r) => r.main,
            Candidate::Pending(kv) => kv.mod_revision,
        }
    }
}

pub struct RangeOutput {
    pub kvs: Vec<KeyValue>,
    pub count: i64,
    pub more: bool,
}

/// Applies the request's options to the candidates (which are in key order); `load` fetches stored values.
pub fn finish(
    req: &RangeRequest,
    candidates: Vec<Candidate>,
    load: impl Fn(Revision) -> Result<KeyValue, MvccError>,
) -> Result<RangeOutput, MvccError> {
    let count = candidates.len() as i64;
    if req.count_only {
        return Ok(RangeOutput {
            kvs: Vec::new(),
            count,
            more: false,
        });
    }
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let needs_values_to_filter = req.min_create_revision != 0 || req.max_create_revision != 0;
    let needs_values_to_sort =
        order != SortOrder::None && matches!(target, SortTarget::Version | SortTarget::Create | SortTarget::Value);
    let limit = if req.limit > 0 { req.limit as usize } else { usize::MAX };

    let mod_ok = |m: i64| {
        (req.min_mod_revision == 0 || m >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || m <= req.max_mod_revision)
    };
    let mut cands: Vec<Candidate> = candidates.into_iter().filter(|c| mod_ok(c.mod_revision())).collect();

    let materialize = |c: Candidate| -> Result<KeyValue, MvccError> {
        match c {
            Candidate::Stored(_, rev) => load(rev),
            Candidate::Pending(kv) => Ok(kv),
        }
    };

    let mut kvs: Vec<KeyValue>;
    if needs_values_to_filter || needs_values_to_sort {
        kvs = cands.into_iter().map(materialize).collect::<Result<_, _>>()?;
        kvs.retain(|kv| {
            (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        sort_kvs(&mut kvs, target, order);
    } else {
        match (target, order) {
            (SortTarget::Key, SortOrder::Descend) => cands.reverse(),
            (SortTarget::Mod, SortOrder::Ascend) => cands.sort_by_key(|c| c.mod_revision()),
            (SortTarget::Mod, SortOrder::Descend) => cands.sort_by_key(|c| std::cmp::Reverse(c.mod_revision())),
            _ => {}
        }
        // Load one more than the limit: it only tells `more`.
        let take = limit.saturating_add(1).min(cands.len());
        cands.truncate(take);
        kvs = cands.into_iter().map(materialize).collect::<Result<_, _>>()?;
    }
    let more = kvs.len() > limit;
    kvs.truncate(limit);
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeOutput { kvs, count, more })
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    if order == SortOrder::None {
        return;
    }
    // Stable sorts keep key order among equal targets, as etcd does.
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}
