//! The backend quota (`--quota-backend-bytes`): a write that would take the database past it raises the
//! NOSPACE alarm (through the log, so every member agrees) and is refused with etcd's error; from then on
//! writes that add data are refused until compaction, defragmentation and `alarm disarm`.

use rudder_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};

use crate::command::{ApplyError, Op};
use crate::error::StoreError;
use crate::node::StoreNode;

pub async fn check(node: &StoreNode, cost: u64) -> Result<(), StoreError> {
    if node.applier.has_alarm(AlarmType::Nospace) {
        return Err(StoreError::Apply(ApplyError::NoSpace));
    }
    let quota = node.config.quota_backend_bytes;
    if quota == 0 {
        return Ok(());
    }
    if node.db_size().saturating_add(cost) <= quota {
        node.admit(cost);
        return Ok(());
    }
    // The cached size may be up to a tick old (a defragment or compaction may just have shrunk the
    // database): measure again before raising a cluster-wide alarm.
    let size = node.refresh_db_size();
    if size.saturating_add(cost) <= quota {
        node.admit(cost);
        return Ok(());
    }
    tracing::warn!(size, quota, "database space exceeded: raising the NOSPACE alarm");
    let activate = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: node.member.id,
        alarm: AlarmType::Nospace as i32,
    };
    if let Err(e) = node.propose(Op::Alarm(activate)).await {
        tracing::warn!(error = %e, "raising the NOSPACE alarm");
    }
    Err(StoreError::Apply(ApplyError::NoSpace))
}
