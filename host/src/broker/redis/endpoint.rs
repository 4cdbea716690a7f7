//! Where the broker's Redis is (one server, or a Redis Cluster found from seeds) and the
//! connections to it.
//!
//! The rest of the broker sends commands through a [`Connection`], which is a redis-rs
//! connection of either kind, so the same code serves both. On a cluster redis-rs routes each
//! command by its first key, follows `MOVED` and `ASK`, waits out `TRYAGAIN`, `CLUSTERDOWN` and
//! `LOADING`, and reloads a script after `NOSCRIPT`; what it cannot route by key (`SCAN`, which
//! is per node; `CLIENT` commands meant for the node of one slot) goes through the helpers here.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value};

use crate::broker::BrokerError;

/// How long opening a connection may take. redis-rs's cluster client can hang while it
/// connects (its issue #1953), so every open is bounded by this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command (not a blocking read) may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis the broker talks to (cheap to clone: readers and wake-up shards each keep one).
#[derive(Clone)]
pub(super) enum Endpoint {
    /// One server (a primary, perhaps with replicas).
    Node(Arc<Client>),
    /// A Redis Cluster, reached through its seeds.
    Cluster(Arc<ClusterClient>),
}

impl Endpoint {
    /// Whether this is a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Endpoint::Cluster(_))
    }

    /// The self-reconnecting connection for every short command.
    pub(super) async fn commands(&self) -> Result<Connection, BrokerError> {
        match self {
            Endpoint::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                let conn =
                    ConnectionManager::new_with_config(Client::clone(client), config).await?;
                Ok(Connection::Managed(conn))
            }
            Endpoint::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                open_cluster(client, config).await
            }
        }
    }

    /// A connection without response timeout, for reads that may block (each guarded by a
    /// timeout of its own). On a cluster it holds a connection to every primary.
    pub(super) async fn unbounded(&self) -> Result<Connection, BrokerError> {
        match self {
            Endpoint::Node(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Multiplexed(conn))
            }
            Endpoint::Cluster(client) => {
                let config = ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
                open_cluster(client, config).await
            }
        }
    }

    /// Where the server is, for logs and `Debug` (no credentials).
    pub(super) fn describe(&self) -> String {
        match self {
            Endpoint::Node(client) => client.get_connection_info().addr().to_string(),
            Endpoint::Cluster(_) => "a Redis Cluster".to_string(),
        }
    }
}

/// A cluster connection, opened within [`CONNECT_TIMEOUT`].
async fn open_cluster(
    client: &ClusterClient,
    config: ClusterConfig,
) -> Result<Connection, BrokerError> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        client.get_async_connection_with_config(config),
    )
    .await
    {
        Ok(conn) => Ok(Connection::Cluster(conn?)),
        Err(_) => Err(BrokerError::NoAnswer(CONNECT_TIMEOUT * 2)),
    }
}

/// A connection of either kind; commands sent through it are routed by their first key on a
/// cluster.
#[derive(Clone)]
pub(super) enum Connection {
    /// One server, reconnecting by itself.
    Managed(ConnectionManager),
    /// One server, one multiplexed connection (replaced by its owner when it fails).
    Multiplexed(MultiplexedConnection),
    /// A cluster: a connection to each primary, following the slot map.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(conn) => conn.req_packed_command(cmd),
            Connection::Multiplexed(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Managed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(conn) => conn.get_db(),
            Connection::Multiplexed(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A primary of a cluster, as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Primary {
    pub(super) host: String,
    pub(super) port: u16,
    /// The slot ranges it serves, first and last slot of each.
    pub(super) slots: Vec<(u16, u16)>,
}

impl Primary {
    /// Whether it serves `slot`.
    pub(super) fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

impl Connection {
    /// Sends `cmd` to the primary that serves the slot of `key` (a cluster), or to the one
    /// server: for commands without keys that concern one slot's node (`CLIENT ID`,
    /// `CLIENT UNBLOCK` of a read on that slot, `SCAN` of a hash-tagged prefix).
    pub(super) async fn query_at(&mut self, key: &str, cmd: Cmd) -> Result<Value, BrokerError> {
        match self {
            Connection::Cluster(conn) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                Ok(conn.route_command(cmd, routing).await?)
            }
            other => Ok(cmd.query_async::<Value>(other).await?),
        }
    }

    /// Sends `cmd` to one primary (any, on a cluster): for server-wide questions such as
    /// `INFO` and `CONFIG GET`, which redis-rs would otherwise send to every node.
    pub(super) async fn query_any_primary(&mut self, cmd: Cmd) -> Result<Value, BrokerError> {
        match self {
            Connection::Cluster(conn) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
                Ok(conn.route_command(cmd, routing).await?)
            }
            other => Ok(cmd.query_async::<Value>(other).await?),
        }
    }

    /// Sends `cmd` to `primary` (cluster only; the one server otherwise).
    pub(super) async fn query_on(
        &mut self,
        primary: &Primary,
        cmd: Cmd,
    ) -> Result<Value, BrokerError> {
        match self {
            Connection::Cluster(conn) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: primary.host.clone(),
                    port: primary.port,
                });
                Ok(conn.route_command(cmd, routing).await?)
            }
            other => Ok(cmd.query_async::<Value>(other).await?),
        }
    }

    /// The cluster's primaries that serve slots (`CLUSTER NODES`), in address order; one
    /// entry standing for the server itself when this is not a cluster.
    pub(super) async fn primaries(&mut self) -> Result<Vec<Primary>, BrokerError> {
        if !matches!(self, Connection::Cluster(_)) {
            return Ok(vec![Primary {
                host: String::new(),
                port: 0,
                slots: vec![(0, 16383)],
            }]);
        }
        let mut primaries: Vec<Primary> = self
            .cluster_nodes()
            .await?
            .into_iter()
            .filter(|node| node.primary_of.is_none() && !node.slots.is_empty())
            .map(|node| Primary {
                host: node.host,
                port: node.port,
                slots: node.slots,
            })
            .collect();
        primaries.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        if primaries.is_empty() {
            return Err(BrokerError::Protocol(
                "CLUSTER NODES lists no primary that serves slots".into(),
            ));
        }
        Ok(primaries)
    }

    /// Every node of the cluster that is not failed (`CLUSTER NODES`), primaries and replicas.
    pub(super) async fn cluster_nodes(&mut self) -> Result<Vec<ClusterNode>, BrokerError> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let text = match self.query_any_primary(cmd).await? {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } | Value::SimpleString(text) => text,
            other => {
                return Err(BrokerError::Protocol(format!(
                    "CLUSTER NODES answered {other:?}"
                )));
            }
        };
        Ok(parse_nodes(&text))
    }
}

/// A node of a Redis Cluster, as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// Its address.
    pub host: String,
    /// Its client port.
    pub port: u16,
    /// The id of its primary, for a replica; `None` for a primary.
    pub primary_of: Option<String>,
    /// The slot ranges it serves (a primary), first and last slot of each.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The nodes of a `CLUSTER NODES` reply that are not failed: lines of
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`.
fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, address, flags) = (fields.first()?, fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            if flags.contains(&"fail") || flags.contains(&"noaddr") || flags.contains(&"handshake")
            {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            let primary_of = (!flags.contains(&"master"))
                .then(|| fields.get(3).map(|id| id.to_string()))
                .flatten();
            // Slots being migrated are listed as `[slot->-id]` / `[slot-<-id]`: not served.
            let slots = fields
                .get(8..)
                .unwrap_or_default()
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(ClusterNode {
                id: id.to_string(),
                host: host.to_string(),
                port: port.parse().ok()?,
                primary_of,
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes that are not failed are found with their role and slots.
    #[test]
    fn nodes_of_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003,node-3 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315228 5 disconnected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461-<-67ed]
aaaa 127.0.0.1:30006@40006 master - 0 0 6 connected
";
        let nodes = parse_nodes(text);
        let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
        assert_eq!(
            ports,
            vec![30004, 30002, 30003, 30001, 30006],
            "failed ones left out"
        );
        assert_eq!(nodes[0].primary_of.as_deref(), Some("e7d1"));
        assert!(nodes[1..].iter().all(|node| node.primary_of.is_none()));
        assert!(nodes.iter().all(|node| node.host == "127.0.0.1"));
        assert_eq!(nodes[3].slots, vec![(0, 5460)]);
        assert!(nodes[4].slots.is_empty());
        let serving = Primary {
            host: nodes[1].host.clone(),
            port: nodes[1].port,
            slots: nodes[1].slots.clone(),
        };
        assert!(serving.serves(5461) && serving.serves(10922) && !serving.serves(10923));
    }
}
