//! Network partitions as grudges (node i drops packets from the nodes it holds a grudge against).

use super::{names, NemesisError, PartitionScheme};
use crate::db::Cluster;
use crate::net::{grudge, Grudge};

/// The grudge for a scheme over `n` nodes, and its description. `leader` is the resolved target of
/// [`PartitionScheme::IsolateLeader`] (node, why).
pub(super) fn grudge_for(scheme: &PartitionScheme, n: usize, leader: Option<(usize, String)>) -> (Grudge, String) {
    let rest = |out: &[usize]| (0..n).filter(|i| !out.contains(i)).collect::<Vec<_>>();
    let (g, d) = match scheme {
        PartitionScheme::IsolateOne(i) => {
            let g = grudge::components(n, &[vec![*i], rest(&[*i])]);
            (
                g,
                format!(
                    "isolate {}: [{}] | [{}]",
                    names(&[*i]),
                    names(&[*i]),
                    names(&rest(&[*i]))
                ),
            )
        }
        PartitionScheme::IsolateLeader => {
            let (i, why) = leader.unwrap_or((0, "no leader resolved".into()));
            let g = grudge::components(n, &[vec![i], rest(&[i])]);
            (
                g,
                format!(
                    "isolate {} ({why}): [{}] | [{}]",
                    names(&[i]),
                    names(&[i]),
                    names(&rest(&[i]))
                ),
            )
        }
        PartitionScheme::MajorityMinority { minority } => {
            let g = grudge::components(n, &[minority.clone(), rest(minority)]);
            (
                g,
                format!(
                    "majority/minority: [{}] | [{}]",
                    names(minority),
                    names(&rest(minority))
                ),
            )
        }
        PartitionScheme::MajoritiesRing { order } => {
            let pos = positions(order, n);
            // Each node sees itself and `d` neighbours each way: at least a majority, a different one each.
            let majority = n / 2 + 1;
            let d = majority / 2;
            let g = grudge::from_views(n, |i, j| {
                let dist = pos[i].abs_diff(pos[j]);
                dist.min(n - dist) <= d
            });
            let ring = order
                .iter()
                .map(|&i| crate::db::node_name(i))
                .collect::<Vec<_>>()
                .join("-");
            (
                g,
                format!("majorities ring {ring} (each node sees {d} neighbours each way)"),
            )
        }
        PartitionScheme::Bridge { order } => {
            let half = n / 2;
            let left = &order[..half.min(order.len())];
            let right = order.get(half + 1..).unwrap_or(&[]);
            let g = grudge::from_views(n, |i, j| {
                !(left.contains(&i) && right.contains(&j) || right.contains(&i) && left.contains(&j))
            });
            let bridge = order.get(half).map_or(String::new(), |&b| names(&[b]));
            (g, format!("bridge [{}] <- {bridge} -> [{}]", names(left), names(right)))
        }
    };
    let text = describe(&g);
    (g, format!("{d}; {text}"))
}

fn positions(order: &[usize], n: usize) -> Vec<usize> {
    let mut pos = vec![0; n];
    for (p, &i) in order.iter().enumerate() {
        if i < n {
            pos[i] = p;
        }
    }
    pos
}

/// "grudge: n1 drops n2 n3, n2 drops n1".
pub fn describe(g: &Grudge) -> String {
    let parts: Vec<String> = g
        .iter()
        .map(|(i, from)| {
            format!(
                "{} drops {}",
                names(&[*i]),
                names(&from.iter().copied().collect::<Vec<_>>())
            )
        })
        .collect();
    format!(
        "grudge: {}",
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    )
}

pub(super) fn apply(cluster: &Cluster, g: &Grudge) -> Result<String, NemesisError> {
    cluster.topology().partition(g)?;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn sees(g: &Grudge, n: usize, i: usize) -> BTreeSet<usize> {
        (0..n).filter(|j| !g.get(&i).is_some_and(|d| d.contains(j))).collect()
    }

    #[test]
    fn ring_gives_everyone_a_different_majority() {
        let (g, d) = grudge_for(
            &PartitionScheme::MajoritiesRing {
                order: vec![3, 0, 4, 1, 2],
            },
            5,
            None,
        );
        let views: BTreeSet<BTreeSet<usize>> = (0..5).map(|i| sees(&g, 5, i)).collect();
        assert_eq!(views.len(), 5, "{d}");
        assert!(views.iter().all(|v| v.len() == 3), "{d}");
        // Symmetric: i drops j iff j drops i.
        for (i, from) in &g {
            for j in from {
                assert!(g[j].contains(i));
            }
        }
    }

    #[test]
    fn bridge_and_isolation() {
        let (g, d) = grudge_for(&PartitionScheme::Bridge { order: vec![2, 0, 1] }, 3, None);
        assert_eq!(sees(&g, 3, 0), BTreeSet::from([0, 1, 2]), "{d}");
        assert_eq!(sees(&g, 3, 2), BTreeSet::from([2, 0]), "{d}");
        assert_eq!(sees(&g, 3, 1), BTreeSet::from([1, 0]), "{d}");
        let (g, d) = grudge_for(&PartitionScheme::IsolateLeader, 3, Some((1, "leader".into())));
        assert_eq!(sees(&g, 3, 1), BTreeSet::from([1]));
        assert!(d.starts_with("isolate n2 (leader)"), "{d}");
    }
}
