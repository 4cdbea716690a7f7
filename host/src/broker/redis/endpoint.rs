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
        Err(_) => Err(BrokerError::Protocol(format!(
            "the Redis Cluster did not accept a connection within {:?}",
            CONNECT_TIMEOUT * 2
        ))),
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

    /// The cluster's primaries (`CLUSTER NODES`), in address order; one entry standing for the
    /// server itself when this is not a cluster.
    pub(super) async fn primaries(&mut self) -> Result<Vec<Primary>, BrokerError> {
        if !matches!(self, Connection::Cluster(_)) {
            return Ok(vec![Primary {
                host: String::new(),
                port: 0,
                slots: vec![(0, 16383)],
            }]);
        }
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
        let mut primaries = parse_primaries(&text);
        primaries.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        if primaries.is_empty() {
            return Err(BrokerError::Protocol(
                "CLUSTER NODES lists no primary that serves slots".into(),
            ));
        }
        Ok(primaries)
    }
}

/// The primaries that serve slots in a `CLUSTER NODES` reply: lines of
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
fn parse_primaries(text: &str) -> Vec<Primary> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags.contains(&"fail")
                && !flags.contains(&"noaddr")
                && fields.len() > 8;
            if !serving {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            // Slots being migrated are listed as `[slot->-id]` / `[slot-<-id]`: not served.
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(Primary {
                host: host.to_string(),
                port: port.parse().ok()?,
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Primaries serving slots are found; replicas, failed and slot-less primaries are not.
    #[test]
    fn primaries_of_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003,node-3 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238315228 5 disconnected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461-<-67ed]
aaaa 127.0.0.1:30006@40006 master - 0 0 6 connected
";
        let primaries = parse_primaries(text);
        let ports: Vec<u16> = primaries.iter().map(|primary| primary.port).collect();
        assert_eq!(ports, vec![30002, 30003, 30001]);
        assert!(primaries.iter().all(|primary| primary.host == "127.0.0.1"));
        assert_eq!(primaries[2].slots, vec![(0, 5460)]);
        assert!(primaries[0].serves(5461) && primaries[0].serves(10922));
        assert!(!primaries[0].serves(10923) && primaries[1].serves(16383));
    }
}
