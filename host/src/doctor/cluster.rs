//! The server checks on every node of a Redis Cluster, primaries and replicas (a replica
//! becomes the primary after a failover, with its own settings), and whether every primary
//! has a replica to fail over to.

use super::{Finding, Level, server};
use crate::broker::redis::{ClusterNode, RedisBroker};

/// Runs the server checks on each node, each finding naming its node, then the replica check.
pub async fn check(broker: &RedisBroker) -> Vec<Finding> {
    let nodes = match broker.cluster_nodes().await {
        Ok(nodes) => nodes,
        Err(err) => {
            return vec![Finding::at(
                "cluster",
                Level::Unknown,
                format!("CLUSTER NODES failed: {err}"),
                "the nodes of the cluster could not be listed, so none was checked",
                "check that the user may run CLUSTER NODES, and each node's settings yourself",
            )];
        }
    };
    let mut findings = Vec::new();
    for node in &nodes {
        let role = if node.primary_of.is_some() {
            "replica"
        } else {
            "primary"
        };
        let name = format!("{} ({role})", node.address());
        match broker.connect_to_node(node).await {
            Ok(alone) => {
                for mut finding in server::check(&alone).await {
                    finding.found = format!("{name}: {}", finding.found);
                    findings.push(finding);
                }
            }
            Err(err) => findings.push(Finding::at(
                "node",
                Level::Unknown,
                format!("{name}: unreachable: {err}"),
                "this node's settings could not be read",
                "check that the node is up and reachable from here with the same credentials",
            )),
        }
    }
    findings.push(replicas(&nodes));
    findings
}

/// Every primary that serves slots has a replica, or a crash of it stops its partitions until
/// it is back (and loses what its disk did not keep).
fn replicas(nodes: &[ClusterNode]) -> Finding {
    const CHECK: &str = "replicas";
    let alone: Vec<String> = nodes
        .iter()
        .filter(|node| node.primary_of.is_none() && !node.slots.is_empty())
        .filter(|primary| {
            !nodes
                .iter()
                .any(|other| other.primary_of.as_deref() == Some(primary.id.as_str()))
        })
        .map(ClusterNode::address)
        .collect();
    if alone.is_empty() {
        return Finding::ok(CHECK, "every primary has a replica");
    }
    Finding::at(
        CHECK,
        Level::Warning,
        format!("primaries without a replica: {}", alone.join(", ")),
        "when such a primary fails, its slots (and the partitions in them) stop until it is back, and --wait-replicas cannot be met there",
        "add a replica to each: `redis-cli --cluster add-node <new-host:port> <any-node> --cluster-slave`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, port: u16, primary_of: Option<&str>, slots: Vec<(u16, u16)>) -> ClusterNode {
        ClusterNode {
            id: id.into(),
            host: "127.0.0.1".into(),
            port,
            primary_of: primary_of.map(str::to_string),
            slots,
        }
    }

    /// A primary without a replica is a warning naming it; slot-less primaries do not count.
    #[test]
    fn primaries_need_replicas() {
        let nodes = vec![
            node("a", 7000, None, vec![(0, 8191)]),
            node("b", 7001, None, vec![(8192, 16383)]),
            node("c", 7002, Some("a"), Vec::new()),
            node("d", 7003, None, Vec::new()),
        ];
        let finding = replicas(&nodes);
        assert_eq!(finding.level, Level::Warning);
        assert!(
            finding.found.contains("127.0.0.1:7001"),
            "{}",
            finding.found
        );
        assert!(!finding.found.contains("7000") && !finding.found.contains("7003"));
        let mut covered = nodes;
        covered.push(node("e", 7004, Some("b"), Vec::new()));
        assert_eq!(replicas(&covered).level, Level::Ok);
    }
}
