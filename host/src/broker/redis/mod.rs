//! The Redis Streams broker, on one Redis server or a Redis Cluster (`endpoint.rs`).
//!
//! Commands go through one shared connection that reconnects by itself (on a cluster, one per
//! primary, routed by each command's first key). Group reads share a
//! few connections of their own (`reader.rs`) and never block them: a reader waiting for new
//! entries waits for a wake-up, rung by one task per broker that blocks in a single `XREAD`
//! over every stream waited on (`wakeups.rs`). So a host holds a handful of connections
//! whatever the number of plugins, streams and partitions. `reply.rs` turns Redis replies
//! into the broker's types; `server.rs` connects and asks a server about itself;
//! `inspect.rs` is what the CLI reads.

mod commit_call;
mod endpoint;
mod inspect;
mod reader;
mod replication;
mod reply;
mod scripts;
mod server;
mod wakeups;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use commit_call::CommitCall;
pub use endpoint::ClusterNode;
use endpoint::{Connection, Endpoint};
use reader::{ReadPool, RedisReader, with_delivery_counts};
use replication::Confirmations;
pub use replication::WaitReplicas;
use reply::*;
use scripts::Scripts;
use wakeups::Wakeups;

use super::{
    Broker, BrokerError, Commit, CommitReport, Delivered, EntryId, Fields, GroupInfo, GroupReader,
    GroupStart, Inspect, PendingEntry, StreamEntry, StreamFollower,
};

/// The stream, group and entry ids of a commit made only of settlements without effects, all
/// of one stream and group (the common batch); `None` for any other commit.
fn plain_acks(commit: &Commit) -> Option<(&str, &str, Vec<String>)> {
    let first = commit.settlements.first()?;
    let plain = commit.ops.is_empty()
        && commit.settlements.iter().all(|settlement| {
            settlement.ops.is_empty()
                && settlement.stream == first.stream
                && settlement.group == first.group
        });
    plain.then(|| {
        let ids = commit
            .settlements
            .iter()
            .map(|settlement| settlement.id.to_string())
            .collect();
        (first.stream.as_str(), first.group.as_str(), ids)
    })
}

/// The first key a commit writes: every key of a commit lies in its slot, so this routes a
/// `WAIT` to the node the commit ran on.
fn first_key(commit: &Commit) -> Option<&str> {
    commit.ops.first().map(super::Op::key).or_else(|| {
        commit
            .settlements
            .first()
            .map(|settlement| settlement.stream.as_str())
    })
}

/// Keys per `SCAN` page.
const SCAN_PAGE: usize = 500;

/// `SCAN cursor MATCH prefix* COUNT n [TYPE kind]`.
fn scan_command(cursor: u64, prefix: &str, kind: Option<&str>) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(format!("{}*", escape_glob(prefix)))
        .arg("COUNT")
        .arg(SCAN_PAGE);
    if let Some(kind) = kind {
        cmd.arg("TYPE").arg(kind);
    }
    cmd
}

/// A broker backed by a Redis server (5.0 or later; 7 recommended) or a Redis Cluster.
#[derive(Clone)]
pub struct RedisBroker {
    /// Where Redis is; opens the readers' connections.
    endpoint: Endpoint,
    /// Shared, self-reconnecting connection for every non-blocking command.
    conn: Connection,
    /// The Lua scripts of commits, moves and leases.
    scripts: Arc<Scripts>,
    /// The connections every group reader shares.
    read_pool: Arc<ReadPool>,
    /// Wakes readers waiting for new entries.
    wakeups: Wakeups,
    /// `WAIT`s for replicas after writes that must survive a failover (`--wait-replicas`).
    confirmations: Option<Arc<Confirmations>>,
    /// The URL connected to (the first seed of a cluster): the credentials and TLS files to
    /// reach one node of the cluster with.
    url: Arc<str>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("server", &self.endpoint.describe())
            .finish()
    }
}

impl RedisBroker {
    /// The same broker, waiting after each commit with effects and each relay move until
    /// `wait.replicas` replicas confirmed it (see `replication.rs`).
    pub fn with_wait_replicas(mut self, wait: WaitReplicas) -> Self {
        self.confirmations = Some(Arc::new(Confirmations::new(wait)));
        self
    }

    /// Applies `commit` at most once for `id`: sent again with the same `id` (within a minute),
    /// it writes nothing and answers what the first run did. On a Redis Cluster every commit
    /// goes this way, because the cluster client resends a command whose reply was lost.
    ///
    /// # Errors
    ///
    /// As [`Broker::commit`].
    pub async fn commit_once(
        &self,
        commit: &Commit,
        id: &str,
    ) -> Result<CommitReport, BrokerError> {
        let mark = first_key(commit).and_then(|key| crate::keyspace::commit_mark(key, id));
        self.run_commit(commit, mark.as_deref()).await
    }

    /// The commit script for `commit` (under `mark`, if any), then the `WAIT` for replicas.
    async fn run_commit(
        &self,
        commit: &Commit,
        mark: Option<&str>,
    ) -> Result<CommitReport, BrokerError> {
        let call = CommitCall::encode(&self.scripts.commit, commit, mark);
        let mut conn = self.conn.clone();
        let report = call.invoke(&mut conn, commit).await?;
        if let Some(key) = first_key(commit) {
            self.confirm(key).await;
        }
        Ok(report)
    }

    /// Waits for the replicas asked for (if any) to confirm the writes sent so far to the
    /// node of `key`.
    async fn confirm(&self, key: &str) {
        if let Some(confirmations) = &self.confirmations {
            confirmations.confirm(&self.conn, key).await;
        }
    }

    /// `XRANGE` or `XREVRANGE` (`command`) of `stream` from `first` to `last`, at most `count`.
    async fn range_command(
        &self,
        command: &str,
        stream: &str,
        first: EntryId,
        last: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        let mut cmd = redis::cmd(command);
        cmd.arg(stream)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg("COUNT")
            .arg(count);
        parse_entries(self.query(&cmd).await?)
    }

    /// Commits settlements without effects of one stream and group with a plain `XACK`: the
    /// script would only add its group check, a third of a batch's Redis time for the trivial
    /// plugin. `XACK` writes nothing for a missing group and counts only what it acknowledged,
    /// so the group is looked up only when the count falls short, to report `NoGroup` as the
    /// script would.
    async fn ack_only(
        &self,
        stream: &str,
        group: &str,
        ids: &[String],
    ) -> Result<CommitReport, BrokerError> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(stream).arg(group).arg(ids);
        let acked = match self.query(&cmd).await? {
            Value::Int(acked) => acked,
            other => return Err(unexpected("XACK", &other)),
        };
        if usize::try_from(acked).is_ok_and(|acked| acked >= ids.len()) {
            return Ok(CommitReport::default());
        }
        // Already acknowledged (e.g. by a consumer that took the entry over) or no group.
        if self
            .groups(stream)
            .await?
            .iter()
            .any(|info| info.name == group)
        {
            Ok(CommitReport::default())
        } else {
            Err(BrokerError::NoGroup {
                stream: stream.to_string(),
                group: group.to_string(),
            })
        }
    }

    /// Every key that starts with `prefix` (of `kind`, e.g. `stream`), scanned to the end on
    /// the server or on every primary of the cluster.
    async fn scan_all(&self, prefix: &str, kind: Option<&str>) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn.clone();
        let mut keys = Vec::new();
        for primary in conn.primaries().await? {
            let mut cursor = 0;
            loop {
                let cmd = scan_command(cursor, prefix, kind);
                let (page, next) = parse_scan(&conn.query_on(&primary, cmd).await?)?;
                keys.extend(page);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, BrokerError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async::<Value>(&mut conn).await?)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<bool, BrokerError> {
        let start = match start {
            GroupStart::Beginning => "0".to_string(),
            GroupStart::End => "$".to_string(),
            GroupStart::After(id) => id.to_string(),
        };
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(start)
            .arg("MKSTREAM");
        match self.query(&cmd).await {
            Ok(_) => Ok(true),
            Err(BrokerError::Redis(err)) if err.code() == Some("BUSYGROUP") => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        RedisBroker::ping(self).await
    }

    fn is_cluster(&self) -> bool {
        self.endpoint.is_cluster()
    }

    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError> {
        Ok(Box::new(RedisReader::new(
            self.read_pool.clone(),
            self.wakeups.clone(),
        )))
    }

    async fn add(&self, stream: &str, fields: &Fields) -> Result<EntryId, BrokerError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        parse_id(&self.query(&cmd).await?)
    }

    async fn commit(&self, commit: &Commit) -> Result<CommitReport, BrokerError> {
        if commit.is_empty() {
            return Ok(CommitReport::default());
        }
        if let Some((stream, group, ids)) = plain_acks(commit) {
            return self.ack_only(stream, group, &ids).await;
        }
        // The cluster client sends a command again when its connection fails before the reply:
        // a commit then runs at most once, under a mark of its own.
        if self.endpoint.is_cluster() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            return self.commit_once(commit, &id).await;
        }
        self.run_commit(commit, None).await
    }

    async fn node_of(&self, key: &str) -> Result<Option<String>, BrokerError> {
        if !self.endpoint.is_cluster() {
            return Ok(None);
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("KEYSLOT").arg(key);
        let mut conn = self.conn.clone();
        let Value::Int(slot) = conn.query_any_primary(cmd).await? else {
            return Err(BrokerError::Protocol(
                "CLUSTER KEYSLOT answered no number".into(),
            ));
        };
        let slot = u16::try_from(slot)
            .map_err(|_| BrokerError::Protocol(format!("CLUSTER KEYSLOT answered slot {slot}")))?;
        Ok(conn
            .primaries()
            .await?
            .into_iter()
            .find(|primary| primary.serves(slot))
            .map(|primary| format!("{}:{}", primary.host, primary.port)))
    }

    fn replication_shortfalls(&self) -> u64 {
        self.confirmations
            .as_ref()
            .map_or(0, |confirmations| confirmations.shortfalls())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        match self.query(redis::cmd("GET").arg(key)).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::SimpleString(text) => Ok(Some(text.into_bytes())),
            other => Err(unexpected("GET", &other)),
        }
    }

    async fn set_if_absent(&self, key: &str, value: &[u8]) -> Result<bool, BrokerError> {
        match self
            .query(redis::cmd("SET").arg(key).arg(value).arg("NX"))
            .await?
        {
            Value::Nil => Ok(false),
            Value::Okay => Ok(true),
            Value::SimpleString(text) if text == "OK" => Ok(true),
            other => Err(unexpected("SET NX", &other)),
        }
    }

    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let mut invocation = self.scripts.acquire_lease.prepare_invoke();
        invocation
            .key(key)
            .arg(owner)
            .arg(u64::try_from(ttl.as_millis().max(1)).unwrap_or(u64::MAX));
        let mut conn = self.conn.clone();
        match invocation.invoke_async::<Value>(&mut conn).await? {
            Value::Int(held) => Ok(held == 1),
            other => Err(unexpected("lease script", &other)),
        }
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, BrokerError> {
        let mut invocation = self.scripts.release_lease.prepare_invoke();
        invocation.key(key).arg(owner);
        let mut conn = self.conn.clone();
        match invocation.invoke_async::<Value>(&mut conn).await? {
            Value::Int(released) => Ok(released == 1),
            other => Err(unexpected("lease script", &other)),
        }
    }

    async fn add_members(&self, key: &str, members: &[String]) -> Result<(), BrokerError> {
        if members.is_empty() {
            return Ok(());
        }
        self.query(redis::cmd("SADD").arg(key).arg(members)).await?;
        Ok(())
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, BrokerError> {
        let values = match self.query(redis::cmd("SMEMBERS").arg(key)).await? {
            // RESP2 answers an array, RESP3 a set.
            Value::Array(values) | Value::Set(values) => values,
            other => return Err(unexpected("SMEMBERS", &other)),
        };
        let mut members: Vec<String> = values
            .iter()
            .filter_map(|value| match value {
                Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Value::SimpleString(text) => Some(text.clone()),
                _ => None,
            })
            .collect();
        members.sort();
        Ok(members)
    }

    async fn heartbeat(&self, key: &str, member: &str, ttl: Duration) -> Result<u32, BrokerError> {
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .key(key)
            .arg(member)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut conn = self.conn.clone();
        match invocation.invoke_async::<Value>(&mut conn).await? {
            Value::Int(alive) => Ok(u32::try_from(alive).unwrap_or(u32::MAX)),
            other => Err(unexpected("heartbeat script", &other)),
        }
    }

    async fn leave(&self, key: &str, member: &str) -> Result<(), BrokerError> {
        self.query(redis::cmd("ZREM").arg(key).arg(member)).await?;
        Ok(())
    }

    async fn append_once(
        &self,
        stream: &str,
        fields: &Fields,
        mark: &str,
        mark_ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let mut invocation = self.scripts.append_once.prepare_invoke();
        invocation
            .key(stream)
            .key(mark)
            .arg(u64::try_from(mark_ttl.as_millis().max(1)).unwrap_or(u64::MAX));
        for (name, value) in fields {
            invocation.arg(name).arg(value);
        }
        let mut conn = self.conn.clone();
        let appended = match invocation.invoke_async::<Value>(&mut conn).await? {
            Value::Int(appended) => appended == 1,
            other => return Err(unexpected("append-once script", &other)),
        };
        // Also when the mark said "already there": the earlier move may not be replicated yet.
        self.confirm(stream).await;
        Ok(appended)
    }

    async fn trim_before(&self, stream: &str, first_kept: EntryId) -> Result<u64, BrokerError> {
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(stream).arg("MINID").arg(first_kept.to_string());
        match self.query(&cmd).await? {
            Value::Int(removed) => Ok(u64::try_from(removed).unwrap_or(0)),
            other => Err(unexpected("XTRIM", &other)),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let Value::Array(values) = self.query(redis::cmd("MGET").arg(keys)).await? else {
            return Err(BrokerError::Protocol("MGET did not answer a list".into()));
        };
        if values.len() != keys.len() {
            return Err(BrokerError::Protocol(format!(
                "MGET of {} keys answered {} values",
                keys.len(),
                values.len()
            )));
        }
        values
            .into_iter()
            .map(|value| match value {
                Value::Nil => Ok(None),
                Value::BulkString(bytes) => Ok(Some(bytes)),
                Value::SimpleString(text) => Ok(Some(text.into_bytes())),
                other => Err(unexpected("MGET", &other)),
            })
            .collect()
    }

    /// On a cluster a prefix with a hash tag (every prefix evhost's partitioned keyspace hands
    /// out) is scanned on the one primary of its slot, with that node's cursor; a prefix
    /// without one is scanned on every primary in one call.
    async fn scan_keys(
        &self,
        prefix: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, u64), BrokerError> {
        if !self.endpoint.is_cluster() || crate::keyspace::hash_tag(prefix).is_some() {
            let cmd = scan_command(cursor, prefix, None);
            return parse_scan(&self.conn.clone().query_at(prefix, cmd).await?);
        }
        let mut keys = self.scan_all(prefix, None).await?;
        keys.sort();
        Ok((keys, 0))
    }

    async fn streams(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let mut streams = self.scan_all(prefix, Some("stream")).await?;
        streams.sort();
        streams.dedup();
        Ok(streams)
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<PendingEntry>, BrokerError> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group);
        if !min_idle.is_zero() {
            cmd.arg("IDLE").arg(millis(min_idle));
        }
        cmd.arg("-").arg("+").arg(count);
        let reply = self
            .query(&cmd)
            .await
            .map_err(|err| no_group(err, stream, group))?;
        parse_pending(&reply)
    }

    async fn claim_entries(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
    ) -> Result<Vec<Delivered>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle));
        for id in ids {
            cmd.arg(id.to_string());
        }
        let reply = self
            .query(&cmd)
            .await
            .map_err(|err| no_group(err, stream, group))?;
        let entries = parse_entries(reply)?;
        let mut conn = self.conn.clone();
        with_delivery_counts(&mut conn, stream, group, consumer, entries).await
    }
}
