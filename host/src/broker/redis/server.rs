//! Connecting a [`RedisBroker`]: to one server or to the Redis Cluster its URL (or its
//! comma-separated seeds) names, with the TLS files a `rediss://` URL names; a broker of one
//! node of the cluster; and what a server says about itself (`INFO`, `CONFIG GET`, `PING`).

use std::sync::Arc;

use redis::cluster::ClusterClient;
use redis::{Client, Value};

use super::endpoint::{ClusterNode, Endpoint};
use super::reader::ReadPool;
use super::reply::unexpected;
use super::scripts::Scripts;
use super::wakeups::Wakeups;
use super::{BrokerError, RedisBroker};

impl RedisBroker {
    /// Connects to the Redis server at `url` (`redis://[user:pass@]host:port[/db]`), or to
    /// the Redis Cluster it is a node of. `url` may list several seeds of one cluster,
    /// separated by commas; the first that answers tells whether Redis is a cluster.
    ///
    /// # Errors
    ///
    /// When a URL is invalid, no seed can be reached, or several seeds name a server that is
    /// not a cluster node.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        let seeds: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .collect();
        let mut last_error = None;
        for seed in &seeds {
            match Self::connect_node(seed).await {
                Ok(node) if node.reports_cluster().await => {
                    return Self::connect_cluster(&seeds).await;
                }
                Ok(_) if seeds.len() > 1 => return Err(BrokerError::SeedsOfNoCluster),
                Ok(node) => return Ok(node),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| BrokerError::Protocol("no Redis URL given".into())))
    }

    /// The broker of the one server at `url`.
    async fn connect_node(url: &str) -> Result<Self, BrokerError> {
        // A CA and a client certificate for TLS may be named in the URL (see `tls.rs`).
        let split = crate::broker::tls::split(url)?;
        let client = match split.certificates {
            Some(certificates) => Client::build_with_tls(split.url.as_str(), certificates)?,
            None => Client::open(split.url.as_str())?,
        };
        Self::over(Endpoint::Node(Arc::new(client)), url).await
    }

    /// The broker of the cluster that `seeds` are nodes of.
    async fn connect_cluster(seeds: &[&str]) -> Result<Self, BrokerError> {
        let mut urls = Vec::with_capacity(seeds.len());
        let mut certificates = None;
        for seed in seeds {
            let split = crate::broker::tls::split(seed)?;
            urls.push(split.url);
            certificates = certificates.or(split.certificates);
        }
        let mut builder = ClusterClient::builder(urls);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let first = seeds.first().copied().unwrap_or_default();
        Self::over(Endpoint::Cluster(Arc::new(builder.build()?)), first).await
    }

    async fn over(endpoint: Endpoint, url: &str) -> Result<Self, BrokerError> {
        let conn = endpoint.commands().await?;
        Ok(RedisBroker {
            read_pool: Arc::new(ReadPool::new(endpoint.clone())),
            wakeups: Wakeups::new(endpoint.clone(), conn.clone()),
            endpoint,
            conn,
            scripts: Arc::new(Scripts::new()),
            confirmations: None,
            url: Arc::from(url),
        })
    }

    /// The nodes of the Redis Cluster, primaries and replicas that are not failed; empty when
    /// this is not a cluster.
    ///
    /// # Errors
    ///
    /// When `CLUSTER NODES` fails.
    pub async fn cluster_nodes(&self) -> Result<Vec<ClusterNode>, BrokerError> {
        if !self.endpoint.is_cluster() {
            return Ok(Vec::new());
        }
        self.conn.clone().cluster_nodes().await
    }

    /// A broker of the one node `node` of this cluster alone (for its settings: `INFO`,
    /// `CONFIG GET`), reached with the credentials and TLS files of the seed URL.
    ///
    /// # Errors
    ///
    /// When the node cannot be reached.
    pub async fn connect_to_node(&self, node: &ClusterNode) -> Result<RedisBroker, BrokerError> {
        let mut url = url::Url::parse(&self.url)
            .map_err(|err| BrokerError::Protocol(format!("the seed URL does not parse: {err}")))?;
        url.set_host(Some(&node.host))
            .and_then(|()| {
                url.set_port(Some(node.port))
                    .map_err(|()| url::ParseError::InvalidPort)
            })
            .map_err(|err| {
                BrokerError::Protocol(format!("node address {}: {err}", node.address()))
            })?;
        Self::connect_node(url.as_str()).await
    }

    /// Whether the server says it is a Redis Cluster node. A server that does not let us read
    /// `INFO` is taken as a standalone server.
    async fn reports_cluster(&self) -> bool {
        self.info("cluster")
            .await
            .is_ok_and(|info| info.lines().any(|line| line.trim() == "cluster_enabled:1"))
    }

    /// `INFO <section>`, as text.
    ///
    /// # Errors
    ///
    /// When the server refuses or fails.
    pub async fn info(&self, section: &str) -> Result<String, BrokerError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(section);
        match self.conn.clone().query_any_primary(cmd).await? {
            Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Value::VerbatimString { text, .. } | Value::SimpleString(text) => Ok(text),
            other => Err(unexpected("INFO", &other)),
        }
    }

    /// The value of the configuration parameter `name` (`CONFIG GET`), `None` when the server
    /// has no such parameter.
    ///
    /// # Errors
    ///
    /// When the server refuses (managed Redis often renames or forbids `CONFIG`) or fails.
    pub async fn config_get(&self, name: &str) -> Result<Option<String>, BrokerError> {
        let text = |value: &Value| match value {
            Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        };
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        match self.conn.clone().query_any_primary(cmd).await? {
            // RESP2: [name, value]; RESP3: {name: value}.
            Value::Array(pair) => Ok(pair.get(1).and_then(text)),
            Value::Map(pairs) => Ok(pairs.first().and_then(|(_, value)| text(value))),
            other => Err(unexpected("CONFIG GET", &other)),
        }
    }

    /// Sends `PING` and waits for the answer.
    ///
    /// # Errors
    ///
    /// When the server does not answer.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }
}
