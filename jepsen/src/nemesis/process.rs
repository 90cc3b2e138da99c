//! Process faults: SIGKILL + restart, SIGSTOP + SIGCONT.

use super::{names, NemesisError};
use crate::db::{Cluster, NodeStatus};

pub(super) fn kill(cluster: &Cluster, nodes: &[usize]) -> Result<String, NemesisError> {
    for &i in nodes {
        cluster.kill(i)?;
    }
    Ok(String::new())
}

/// Restarts the nodes that are stopped (a removed member stays out: the membership fault owns it).
pub(super) fn restart(cluster: &Cluster, nodes: &[usize]) -> Result<String, NemesisError> {
    let mut done = Vec::new();
    for &i in nodes {
        if cluster.status(i) == NodeStatus::Stopped {
            cluster.restart(i)?;
            done.push(i);
        }
    }
    Ok(format!("restart {}", names(&done)))
}

pub(super) fn pause(cluster: &Cluster, nodes: &[usize]) -> Result<String, NemesisError> {
    for &i in nodes {
        cluster.pause(i)?;
    }
    Ok(String::new())
}

pub(super) fn resume(cluster: &Cluster, nodes: &[usize]) -> Result<String, NemesisError> {
    for &i in nodes {
        cluster.resume(i)?;
    }
    Ok(format!("SIGCONT {}", names(nodes)))
}
