//! A local Redis Cluster of private `redis-server` processes (for the tests and
//! `evhost bench`): primaries with replicas on loopback, each node with the append-only file
//! on, all stopped on drop.
//!
//! The nodes are [`RedisServer`]s on ports of at most 55535 whose cluster-bus port (+ 10000) is
//! free; `redis-cli --cluster create` assigns the slots and the replicas. Questions about the
//! cluster's state go through `redis-cli` as well, so this needs no async runtime.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{RedisProcessError, RedisServer};

/// How long forming the cluster or a failover may take.
const SETTLE: Duration = Duration::from_secs(30);

/// A running local Redis Cluster owned by this process.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    /// The node's port.
    pub port: u16,
    /// Whether it is a primary (else a replica).
    pub primary: bool,
    /// Whether the cluster marks it failed.
    pub failed: bool,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each, with the append-only file
    /// and extra configuration `extra` (e.g. `["--appendfsync", "always"]`), and waits until
    /// the cluster is up and every replica is in sync.
    ///
    /// # Errors
    ///
    /// When a node does not come up or the cluster does not form within 30 s (with the
    /// `redis-cli` output).
    pub fn start(
        primaries: usize,
        replicas: usize,
        extra: &[&str],
    ) -> Result<Self, RedisProcessError> {
        let mut config = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--appendonly",
            "yes",
        ];
        config.extend_from_slice(extra);
        let count = primaries * (1 + replicas);
        let nodes = (0..count)
            .map(|_| RedisServer::start_where(&config, true))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let output = create
            .output()
            .map_err(|err| RedisProcessError::Cluster(format!("cannot run redis-cli: {err}")))?;
        if !output.status.success() {
            return Err(RedisProcessError::Cluster(format!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        cluster.wait_settled(primaries)?;
        Ok(cluster)
    }

    /// Seeds of the cluster for `--redis`: every node's URL, separated by commas.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|node| node.port() == port)
    }

    /// Every node's role, as the first node that answers sees it.
    ///
    /// # Errors
    ///
    /// When no node answers.
    pub fn roles(&self) -> Result<Vec<NodeRole>, RedisProcessError> {
        let mut last = String::new();
        for node in &self.nodes {
            match redis_cli(node.port(), &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_roles(&text)),
                Err(err) => last = err,
            }
        }
        Err(RedisProcessError::Cluster(last))
    }

    /// The ports of the primaries that are not failed.
    ///
    /// # Errors
    ///
    /// As [`RedisCluster::roles`].
    pub fn primary_ports(&self) -> Result<Vec<u16>, RedisProcessError> {
        Ok(self
            .roles()?
            .into_iter()
            .filter(|role| role.primary && !role.failed)
            .map(|role| role.port)
            .collect())
    }

    /// The ports of the replicas that are not failed.
    ///
    /// # Errors
    ///
    /// As [`RedisCluster::roles`].
    pub fn replica_ports(&self) -> Result<Vec<u16>, RedisProcessError> {
        Ok(self
            .roles()?
            .into_iter()
            .filter(|role| !role.primary && !role.failed)
            .map(|role| role.port)
            .collect())
    }

    /// `CLUSTER FAILOVER` on the replica at `port` (a handover without loss: its primary
    /// pauses until the replica caught up), waiting until the replica is a primary.
    ///
    /// # Errors
    ///
    /// When the command fails or the roles have not changed within 30 s.
    pub fn failover(&self, port: u16) -> Result<(), RedisProcessError> {
        redis_cli(port, &["CLUSTER", "FAILOVER"]).map_err(RedisProcessError::Cluster)?;
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let role = redis_cli(port, &["ROLE"]).unwrap_or_default();
            if role.lines().next() == Some("master") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(RedisProcessError::Cluster(format!(
            "the replica on {port} did not become a primary within {SETTLE:?}"
        )))
    }

    /// Moves `slots` slots (with their keys) from the primary on `from` to the one on `to`
    /// with `redis-cli --cluster reshard`, as an operator would.
    ///
    /// # Errors
    ///
    /// When `redis-cli` fails (with its output).
    pub fn reshard(&self, from: u16, to: u16, slots: usize) -> Result<(), RedisProcessError> {
        let id = |port: u16| {
            redis_cli(port, &["CLUSTER", "MYID"])
                .map(|text| text.trim().to_string())
                .map_err(RedisProcessError::Cluster)
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{from}"))
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .map_err(|err| RedisProcessError::Cluster(format!("cannot run redis-cli: {err}")))?;
        if !output.status.success() {
            return Err(RedisProcessError::Cluster(format!(
                "redis-cli --cluster reshard failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// The port of the primary that serves the slot of `key` (`CLUSTER KEYSLOT`, then the
    /// slot ranges of `CLUSTER SHARDS`-like `CLUSTER NODES`).
    ///
    /// # Errors
    ///
    /// When no node answers or no primary serves the slot.
    pub fn primary_of_key(&self, key: &str) -> Result<u16, RedisProcessError> {
        let port = self.nodes[0].port();
        let slot: u16 = redis_cli(port, &["CLUSTER", "KEYSLOT", key])
            .map_err(RedisProcessError::Cluster)?
            .trim()
            .parse()
            .map_err(|err| RedisProcessError::Cluster(format!("CLUSTER KEYSLOT: {err}")))?;
        let text = redis_cli(port, &["CLUSTER", "NODES"]).map_err(RedisProcessError::Cluster)?;
        text.lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields.get(8..)?.iter().any(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    matches!((first.parse::<u16>(), last.parse::<u16>()),
                        (Ok(first), Ok(last)) if (first..=last).contains(&slot))
                });
                let address = fields.get(1)?.split(['@', ',']).next()?;
                serves.then(|| address.rsplit_once(':')?.1.parse().ok())?
            })
            .ok_or_else(|| RedisProcessError::Cluster(format!("no primary serves slot {slot}")))
    }

    /// Waits until every node reports `cluster_state:ok`, `primaries` primaries serve slots
    /// and every replica's link to its primary is up.
    ///
    /// # Errors
    ///
    /// When that does not happen within 30 s (with what the nodes said last).
    pub fn wait_settled(&self, primaries: usize) -> Result<(), RedisProcessError> {
        let deadline = Instant::now() + SETTLE;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.settled(primaries) {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(RedisProcessError::Cluster(format!(
            "not settled within {SETTLE:?}: {last}"
        )))
    }

    /// Waits until `primaries` primaries that are not failed serve the slots and every node
    /// that answers reports `cluster_state:ok`: after a primary was killed, until one of its
    /// replicas took over.
    ///
    /// # Errors
    ///
    /// When that does not happen within 30 s.
    pub fn wait_for_primaries(&self, primaries: usize) -> Result<(), RedisProcessError> {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if self.serves_with(primaries) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(RedisProcessError::Cluster(format!(
            "{primaries} primaries did not serve the slots within {SETTLE:?}"
        )))
    }

    /// Whether `primaries` primaries that are not failed serve the slots and every node that
    /// answers reports `cluster_state:ok` (one look; see [`RedisCluster::wait_for_primaries`]).
    pub fn serves_with(&self, primaries: usize) -> bool {
        let live_ok = self.nodes.iter().all(|node| {
            redis_cli(node.port(), &["CLUSTER", "INFO"]).map_or(true, |info| {
                info.lines().any(|line| line.trim() == "cluster_state:ok")
            })
        });
        live_ok
            && self
                .primary_ports()
                .is_ok_and(|ports| ports.len() == primaries)
    }

    /// Why the cluster is not settled, if it is not.
    fn settled(&self, primaries: usize) -> Result<(), String> {
        for node in &self.nodes {
            let info = redis_cli(node.port(), &["CLUSTER", "INFO"])?;
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(format!("node {} is not ok", node.port()));
            }
            let wanted = format!("cluster_known_nodes:{}", self.nodes.len());
            if !info.lines().any(|line| line.trim() == wanted) {
                return Err(format!("node {} does not know every node", node.port()));
            }
            let replication = redis_cli(node.port(), &["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Err(format!("replica {} is not in sync", node.port()));
            }
        }
        let roles = self.roles().map_err(|err| err.to_string())?;
        let serving = roles
            .iter()
            .filter(|role| role.primary && !role.failed)
            .count();
        if serving != primaries {
            return Err(format!("{serving} primaries, not {primaries}"));
        }
        Ok(())
    }
}

/// What `redis-cli -p <port> <args>` prints, or why it failed.
fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map_err(|err| format!("cannot run redis-cli: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.starts_with("ERR") || text.starts_with("Could not") {
        return Err(format!(
            "redis-cli -p {port} {}: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(text)
}

/// Nodes of a `CLUSTER NODES` reply (slot-less primaries count as primaries).
fn parse_roles(text: &str) -> Vec<NodeRole> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?.split(['@', ',']).next()?;
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            Some(NodeRole {
                port,
                primary: flags.contains(&"master"),
                failed: flags.contains(&"fail") || flags.contains(&"fail?"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 myself,master - 0 1426238316232 2 connected 5461-10922
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315228 5 disconnected
";
        assert_eq!(
            parse_roles(text),
            vec![
                NodeRole {
                    port: 30004,
                    primary: false,
                    failed: false
                },
                NodeRole {
                    port: 30002,
                    primary: true,
                    failed: false
                },
                NodeRole {
                    port: 30005,
                    primary: true,
                    failed: true
                },
            ]
        );
    }
}
