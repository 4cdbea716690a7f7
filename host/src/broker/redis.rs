//! The Redis Streams broker.
//!
//! Commands go through a [`ConnectionManager`] (reconnects by itself); every [`GroupReader`]
//! owns a dedicated connection without response timeout so that `XREADGROUP ... BLOCK` is never
//! cut short by the client, guarded instead by a timeout of its own a little longer than the
//! block time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};

use super::{
    Broker, BrokerError, Commit, CommitReport, Delivered, EntryId, Fields, GroupInfo, GroupReader,
    GroupStart, Inspect, Op, PendingEntry, ReadFrom, StreamEntry, StreamFollower,
};

/// How long past its `BLOCK` time a read may take before the connection is presumed dead.
const READ_GRACE: Duration = Duration::from_secs(10);
/// Applies a [`Commit`] atomically; the layout of `KEYS` and `ARGV` is explained in the script.
const COMMIT_SCRIPT: &str = include_str!("commit.lua");
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

/// Keys per `SCAN` page.
const SCAN_PAGE: usize = 500;

/// A broker backed by a Redis server (5.0 or later; 7 recommended).
#[derive(Clone)]
pub struct RedisBroker {
    /// Client used to open dedicated reader connections.
    client: Client,
    /// Shared, self-reconnecting connection for every non-blocking command.
    conn: ConnectionManager,
    /// The atomic commit script (see [`COMMIT_SCRIPT`]).
    commit_script: Arc<Script>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field(
                "server",
                &self.client.get_connection_info().addr().to_string(),
            )
            .finish()
    }
}

impl RedisBroker {
    /// Connects to the Redis server at `url` (`redis://[user:pass@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        // A CA and a client certificate for TLS may be named in the URL (see `tls.rs`).
        let split = super::tls::split(url)?;
        let client = match split.certificates {
            Some(certificates) => Client::build_with_tls(split.url.as_str(), certificates)?,
            None => Client::open(split.url.as_str())?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let broker = RedisBroker {
            client,
            conn,
            commit_script: Arc::new(Script::new(COMMIT_SCRIPT)),
        };
        // A cluster node answers commands on keys of other nodes with MOVED: refuse it with a
        // clear error instead of failing (or retrying) every command. A server that does not
        // let us read INFO is taken as it is.
        if let Ok(info) = broker.info("cluster").await
            && info.lines().any(|line| line.trim() == "cluster_enabled:1")
        {
            return Err(BrokerError::ClusterNotSupported);
        }
        Ok(broker)
    }

    /// `INFO <section>`, as text.
    ///
    /// # Errors
    ///
    /// When the server refuses or fails.
    pub async fn info(&self, section: &str) -> Result<String, BrokerError> {
        match self.query(redis::cmd("INFO").arg(section)).await? {
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
        match self
            .query(redis::cmd("CONFIG").arg("GET").arg(name))
            .await?
        {
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

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, BrokerError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async::<Value>(&mut conn).await?)
    }
}

/// A [`StreamFollower`] with plain `XREAD BLOCK` on a connection of its own.
struct RedisFollower {
    /// Opens the connection.
    client: Client,
    /// The connection, `None` before the first read and after a failure.
    conn: Option<MultiplexedConnection>,
}

#[async_trait]
impl StreamFollower for RedisFollower {
    async fn read(
        &mut self,
        after: &[(String, EntryId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, StreamEntry)>, BrokerError> {
        if after.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let mut conn = blocking_connection(&self.client, &mut self.conn).await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(millis(block).max(1))
            .arg("STREAMS");
        for (stream, _) in after {
            cmd.arg(stream);
        }
        for (_, id) in after {
            cmd.arg(id.to_string());
        }
        let limit = block + READ_GRACE;
        let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                self.conn = None;
                return Err(BrokerError::Redis(err));
            }
            Err(_) => {
                self.conn = None;
                return Err(BrokerError::Protocol(format!(
                    "XREAD got no answer within {limit:?}; reconnecting"
                )));
            }
        };
        parse_multi_read(reply)
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
            GroupStart::Beginning => "0",
            GroupStart::End => "$",
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

    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError> {
        Ok(Box::new(RedisReader {
            client: self.client.clone(),
            conn: None,
            second: None,
        }))
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
        // One script: it checks groups and ownership before writing anything, which
        // MULTI/EXEC cannot do (XACK on a missing group answers 0, and EXEC never rolls back).
        // `Script` sends EVALSHA and falls back to EVAL once if the server lacks the script.
        let mut invocation = self.commit_script.prepare_invoke();
        // (stream, group) of every key index that names a group, to explain a NOGROUP.
        let mut groups_by_key: Vec<Option<(String, String)>> = Vec::new();
        let encode = |invocation: &mut redis::ScriptInvocation<'_>,
                      groups_by_key: &mut Vec<Option<(String, String)>>,
                      op: &Op| {
            match op {
                Op::Add { stream, fields } => {
                    invocation.key(stream).arg("A").arg(fields.len());
                    for (name, value) in fields {
                        invocation.arg(name).arg(value);
                    }
                    groups_by_key.push(None);
                }
                Op::Set { key, value } => {
                    invocation.key(key).arg("S").arg(value);
                    groups_by_key.push(None);
                }
                Op::Delete { key } => {
                    invocation.key(key).arg("D");
                    groups_by_key.push(None);
                }
                Op::Increment { key, delta } => {
                    invocation.key(key).arg("I").arg(*delta);
                    groups_by_key.push(None);
                }
                Op::Remove { stream, id } => {
                    invocation.key(stream).arg("R").arg(id.to_string());
                    groups_by_key.push(None);
                }
            }
        };
        for op in &commit.ops {
            encode(&mut invocation, &mut groups_by_key, op);
        }
        // One ownership lookup per (stream, group, consumer) instead of one per entry; only
        // settlements with ops are checked (see `COMMIT_SCRIPT`).
        let mut ranges: Vec<(&str, &str, &str, EntryId, EntryId, usize)> = Vec::new();
        for settlement in commit.settlements.iter().filter(|s| !s.ops.is_empty()) {
            let found = ranges.iter_mut().find(|(stream, group, consumer, ..)| {
                *stream == settlement.stream
                    && *group == settlement.group
                    && *consumer == settlement.consumer
            });
            match found {
                Some((_, _, _, min, max, count)) => {
                    *min = (*min).min(settlement.id);
                    *max = (*max).max(settlement.id);
                    *count += 1;
                }
                None => ranges.push((
                    &settlement.stream,
                    &settlement.group,
                    &settlement.consumer,
                    settlement.id,
                    settlement.id,
                    1,
                )),
            }
        }
        for (stream, group, consumer, min, max, _) in &ranges {
            invocation
                .key(*stream)
                .arg("O")
                .arg(*group)
                .arg(*consumer)
                .arg(min.to_string())
                .arg(max.to_string())
                // Every pending entry of the consumer in the range (others may lie between).
                .arg(1_000_000);
            groups_by_key.push(Some((stream.to_string(), group.to_string())));
        }
        let settlements = &commit.settlements;
        let mut index = 0;
        while index < settlements.len() {
            let settlement = &settlements[index];
            // A run of settlements without ops on the same stream, group and consumer is one
            // `U` op: most batches are only acknowledgements.
            let run = settlements[index..]
                .iter()
                .take_while(|other| {
                    other.ops.is_empty()
                        && other.stream == settlement.stream
                        && other.group == settlement.group
                        && other.consumer == settlement.consumer
                })
                .count();
            if run > 0 {
                invocation
                    .key(&settlement.stream)
                    .arg("U")
                    .arg(&settlement.group)
                    .arg(&settlement.consumer)
                    .arg(run);
                for other in &settlements[index..index + run] {
                    invocation.arg(other.id.to_string());
                }
                groups_by_key.push(Some((settlement.stream.clone(), settlement.group.clone())));
                index += run;
                continue;
            }
            index += 1;
            invocation
                .key(&settlement.stream)
                .arg("T")
                .arg(&settlement.group)
                .arg(&settlement.consumer)
                .arg(settlement.id.to_string())
                .arg(settlement.expects.len() + settlement.ops.len());
            groups_by_key.push(Some((settlement.stream.clone(), settlement.group.clone())));
            for expect in &settlement.expects {
                invocation
                    .key(&expect.key)
                    .arg("E")
                    .arg(expect.digest.to_hex());
                groups_by_key.push(None);
            }
            for op in &settlement.ops {
                encode(&mut invocation, &mut groups_by_key, op);
            }
        }
        let mut conn = self.conn.clone();
        match invocation
            .invoke_async::<Value>(&mut conn)
            .await
            .map_err(BrokerError::from)
        {
            Ok(Value::Array(lists)) => {
                let ids = |list: Option<&Value>| match list {
                    Some(Value::Array(ids)) => ids.iter().map(parse_id).collect(),
                    Some(other) => Err(unexpected("commit script", other)),
                    None => Ok(Vec::new()),
                };
                Ok(CommitReport {
                    skipped: ids(lists.first())?,
                    conflicted: ids(lists.get(1))?,
                })
            }
            Ok(Value::Nil) => Ok(CommitReport::default()),
            Ok(other) => Err(unexpected("commit script", &other)),
            Err(BrokerError::Redis(err)) if err.code() == Some("NOGROUP") => {
                // The script names the failing key (1-based).
                let failed = err
                    .detail()
                    .and_then(|detail| detail.split_whitespace().next()?.parse::<usize>().ok())
                    .and_then(|position| {
                        groups_by_key
                            .get(position.checked_sub(1)?)
                            .cloned()
                            .flatten()
                    });
                match failed {
                    Some((stream, group)) => Err(BrokerError::NoGroup { stream, group }),
                    None => Err(BrokerError::Redis(err)),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        match self.query(redis::cmd("GET").arg(key)).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::SimpleString(text) => Ok(Some(text.into_bytes())),
            other => Err(unexpected("GET", &other)),
        }
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

    async fn scan_keys(
        &self,
        prefix: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, u64), BrokerError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", escape_glob(prefix)))
            .arg("COUNT")
            .arg(SCAN_PAGE);
        parse_scan(&self.query(&cmd).await?)
    }

    async fn streams(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        let mut streams = Vec::new();
        let mut cursor = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", escape_glob(prefix)))
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .arg("TYPE")
                .arg("stream");
            let (keys, next) = parse_scan(&self.query(&cmd).await?)?;
            streams.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
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

#[async_trait]
impl Inspect for RedisBroker {
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        self.range_command("XRANGE", stream, start, end, count)
            .await
    }

    async fn rev_range(
        &self,
        stream: &str,
        end: EntryId,
        start: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        self.range_command("XREVRANGE", stream, end, start, count)
            .await
    }

    async fn len(&self, stream: &str) -> Result<u64, BrokerError> {
        match self.query(redis::cmd("XLEN").arg(stream)).await? {
            Value::Int(len) => Ok(u64::try_from(len).unwrap_or(0)),
            other => Err(unexpected("XLEN", &other)),
        }
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, BrokerError> {
        let reply = match self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
            .await
        {
            Ok(reply) => reply,
            Err(BrokerError::Redis(err)) if is_no_such_key(&err) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let Value::Array(groups) = reply else {
            return Err(unexpected("XINFO GROUPS", &reply));
        };
        groups.iter().map(parse_group_info).collect()
    }

    fn follower(&self) -> Box<dyn StreamFollower> {
        Box::new(RedisFollower {
            client: self.client.clone(),
            conn: None,
        })
    }
}

/// A dedicated connection for blocking group reads; reconnects after a failure.
struct RedisReader {
    /// Opens the connection.
    client: Client,
    /// The connection, `None` before the first read and after a failure.
    conn: Option<MultiplexedConnection>,
    /// A second connection for [`GroupReader::read_backlog`], opened on its first use.
    second: Option<MultiplexedConnection>,
}

impl RedisReader {
    async fn connection(&mut self) -> Result<MultiplexedConnection, BrokerError> {
        blocking_connection(&self.client, &mut self.conn).await
    }
}

/// The connection in `slot`, or a new one without response timeout (for `BLOCK`ed reads,
/// guarded by their own timeout) stored there.
async fn blocking_connection(
    client: &Client,
    slot: &mut Option<MultiplexedConnection>,
) -> Result<MultiplexedConnection, BrokerError> {
    if let Some(conn) = slot {
        return Ok(conn.clone());
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(None);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    *slot = Some(conn.clone());
    Ok(conn)
}

/// A failed `XREADGROUP`: the error, and whether the connection must be replaced.
struct ReadFailure {
    error: BrokerError,
    reconnect: bool,
}

/// Who reads where: a consumer of a group on a stream.
struct Seat<'a> {
    stream: &'a str,
    group: &'a str,
    consumer: &'a str,
}

/// `XREADGROUP` for `seat`, from where `from` says, on `conn`.
async fn xreadgroup(
    conn: &mut MultiplexedConnection,
    seat: &Seat<'_>,
    from: ReadFrom,
    count: usize,
) -> Result<Vec<StreamEntry>, ReadFailure> {
    let Seat {
        stream,
        group,
        consumer,
    } = *seat;
    let (position, block) = match from {
        ReadFrom::New { block } => (">".to_string(), block),
        ReadFrom::Pending { after } => (after.to_string(), None),
    };
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1));
    }
    cmd.arg("STREAMS").arg(stream).arg(position);
    let limit = block.unwrap_or_default() + READ_GRACE;
    let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(conn)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) => {
            let reconnect = err.is_unrecoverable_error() || err.code().is_none();
            let error = if reconnect {
                BrokerError::Redis(err)
            } else {
                no_group(BrokerError::Redis(err), stream, group)
            };
            return Err(ReadFailure { error, reconnect });
        }
        Err(_) => {
            return Err(ReadFailure {
                error: BrokerError::Protocol(format!(
                    "XREADGROUP on {stream} got no answer within {limit:?}; reconnecting"
                )),
                reconnect: true,
            });
        }
    };
    parse_read_reply(reply).map_err(|error| ReadFailure {
        error,
        reconnect: false,
    })
}

/// New entries, delivered for the first time.
fn first_deliveries(entries: Vec<StreamEntry>) -> Vec<Delivered> {
    entries
        .into_iter()
        .map(|entry| Delivered {
            entry,
            deliveries: 1,
        })
        .collect()
}

/// The error of a failed read; forgets the connection in `slot` when it must be replaced.
fn failed_read(slot: &mut Option<MultiplexedConnection>, failure: ReadFailure) -> BrokerError {
    if failure.reconnect {
        *slot = None;
    }
    failure.error
}

#[async_trait]
impl GroupReader for RedisReader {
    async fn read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let mut conn = self.connection().await?;
        let seat = Seat {
            stream,
            group,
            consumer,
        };
        let entries = xreadgroup(&mut conn, &seat, from, count)
            .await
            .map_err(|failure| failed_read(&mut self.conn, failure))?;
        match from {
            ReadFrom::New { .. } => Ok(first_deliveries(entries)),
            ReadFrom::Pending { .. } => {
                with_delivery_counts(&mut conn, stream, group, consumer, entries).await
            }
        }
    }

    /// Two `XREADGROUP`s of half the count on two connections at once: redis-rs parses each
    /// connection's replies in that connection's task, so the two halves are parsed on two
    /// threads, which is most of a read's time on the client. Redis runs the two commands one
    /// after the other, so together they hold the entries one read would, and sorting restores
    /// stream order whichever ran first.
    async fn read_backlog(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivered>, BrokerError> {
        if count < 2 {
            return self
                .read(
                    stream,
                    group,
                    consumer,
                    ReadFrom::New { block: None },
                    count,
                )
                .await;
        }
        let mut first = self.connection().await?;
        let mut second = blocking_connection(&self.client, &mut self.second).await?;
        let half = count / 2;
        let seat = Seat {
            stream,
            group,
            consumer,
        };
        let (one, two) = tokio::join!(
            xreadgroup(
                &mut first,
                &seat,
                ReadFrom::New { block: None },
                count - half
            ),
            xreadgroup(&mut second, &seat, ReadFrom::New { block: None }, half),
        );
        // Entries a failed half leaves behind are pending for this consumer: retried later.
        // Both results are looked at, so that each dead connection is replaced.
        let one = one.map_err(|failure| failed_read(&mut self.conn, failure));
        let two = two.map_err(|failure| failed_read(&mut self.second, failure));
        let mut entries = one?;
        entries.extend(two?);
        entries.sort_unstable_by_key(|entry| entry.id);
        Ok(first_deliveries(entries))
    }
}

/// Looks up how often each entry was delivered (`XPENDING` over the entries' id range).
async fn with_delivery_counts<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
    entries: Vec<StreamEntry>,
) -> Result<Vec<Delivered>, BrokerError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(Vec::new());
    };
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream)
        .arg(group)
        .arg(first.id.to_string())
        .arg(last.id.to_string())
        .arg(entries.len().max(10_000))
        .arg(consumer);
    let reply = cmd.query_async::<Value>(conn).await?;
    let counts: HashMap<EntryId, u32> = parse_pending(&reply)?
        .into_iter()
        .map(|pending| (pending.id, pending.deliveries))
        .collect();
    Ok(entries
        .into_iter()
        .map(|entry| {
            let deliveries = counts.get(&entry.id).copied().unwrap_or(1).max(1);
            Delivered { entry, deliveries }
        })
        .collect())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unexpected(command: &str, value: &Value) -> BrokerError {
    BrokerError::Protocol(format!("{command} replied {value:?}"))
}

fn is_no_such_key(err: &redis::RedisError) -> bool {
    err.to_string().to_ascii_lowercase().contains("no such key")
}

fn no_group(err: BrokerError, stream: &str, group: &str) -> BrokerError {
    match err {
        BrokerError::Redis(redis_err) if redis_err.code() == Some("NOGROUP") => {
            BrokerError::NoGroup {
                stream: stream.to_string(),
                group: group.to_string(),
            }
        }
        other => other,
    }
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(number) => u64::try_from(*number).ok(),
        other => as_text(other)?.parse().ok(),
    }
}

fn parse_id(value: &Value) -> Result<EntryId, BrokerError> {
    as_text(value)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| unexpected("stream id", value))
}

fn parse_scan(value: &Value) -> Result<(Vec<String>, u64), BrokerError> {
    let Value::Array(parts) = value else {
        return Err(unexpected("SCAN", value));
    };
    let (Some(cursor), Some(Value::Array(keys))) = (parts.first(), parts.get(1)) else {
        return Err(unexpected("SCAN", value));
    };
    let cursor = as_u64(cursor).ok_or_else(|| unexpected("SCAN cursor", cursor))?;
    Ok((keys.iter().filter_map(as_text).collect(), cursor))
}

/// Parses `[[id, [field, value, ...]], ...]`, moving the values out of the reply; entries
/// deleted since delivery (`[id, nil]`) are skipped.
fn parse_entries(value: Value) -> Result<Vec<StreamEntry>, BrokerError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected("stream entries", &other)),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(unexpected("stream entry", &item));
        };
        let mut parts = parts.into_iter();
        let Some(id) = parts.next() else {
            return Err(BrokerError::Protocol("empty stream entry".into()));
        };
        let id = parse_id(&id)?;
        let fields = match parts.next() {
            Some(Value::Array(flat)) => {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                    if let Some(name) = into_text(name) {
                        fields.push((name, into_bytes(value)));
                    }
                }
                fields
            }
            Some(Value::Map(pairs)) => pairs
                .into_iter()
                .filter_map(|(name, value)| Some((into_text(name)?, into_bytes(value))))
                .collect(),
            _ => continue,
        };
        entries.push(StreamEntry { id, fields });
    }
    Ok(entries)
}

fn into_text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        other => as_text(&other),
    }
}

fn into_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        other => as_text(&other).unwrap_or_default().into_bytes(),
    }
}

/// Parses an `XREAD` reply over several streams into (stream, entry) pairs.
fn parse_multi_read(value: Value) -> Result<Vec<(String, StreamEntry)>, BrokerError> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|pair| match pair {
                Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(name), Some(entries)) => Ok((name, entries)),
                        _ => Err(BrokerError::Protocol("XREAD reply too short".into())),
                    }
                }
                other => Err(unexpected("XREAD", &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => return Err(unexpected("XREAD", &other)),
    };
    let mut entries = Vec::new();
    for (name, stream_entries) in streams {
        let Some(name) = into_text(name) else {
            return Err(BrokerError::Protocol(
                "XREAD stream name is not text".into(),
            ));
        };
        for entry in parse_entries(stream_entries)? {
            entries.push((name.clone(), entry));
        }
    }
    Ok(entries)
}

/// Parses an `XREADGROUP` reply for one stream.
fn parse_read_reply(value: Value) -> Result<Vec<StreamEntry>, BrokerError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.into_iter().nth(1) {
                Some(entries) => parse_entries(entries),
                None => Err(BrokerError::Protocol(
                    "XREADGROUP reply without entries".into(),
                )),
            },
            Some(other) => Err(unexpected("XREADGROUP", &other)),
        },
        Value::Map(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        other => Err(unexpected("XREADGROUP", &other)),
    }
}

fn parse_pending(value: &Value) -> Result<Vec<PendingEntry>, BrokerError> {
    let Value::Array(items) = value else {
        return Err(unexpected("XPENDING", value));
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return Err(unexpected("XPENDING entry", item));
            };
            match parts.as_slice() {
                [id, consumer, idle, deliveries] => Ok(PendingEntry {
                    id: parse_id(id)?,
                    consumer: as_text(consumer).unwrap_or_default(),
                    idle: Duration::from_millis(as_u64(idle).unwrap_or(0)),
                    deliveries: as_u64(deliveries)
                        .and_then(|count| u32::try_from(count).ok())
                        .unwrap_or(u32::MAX),
                }),
                _ => Err(unexpected("XPENDING entry", item)),
            }
        })
        .collect()
}

fn parse_group_info(value: &Value) -> Result<GroupInfo, BrokerError> {
    let pairs: Vec<(String, &Value)> = match value {
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [key, value] => Some((as_text(key)?, value)),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(key, value)| Some((as_text(key)?, value)))
            .collect(),
        other => return Err(unexpected("XINFO GROUPS entry", other)),
    };
    let field = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, v)| *v);
    Ok(GroupInfo {
        name: field("name").and_then(as_text).unwrap_or_default(),
        consumers: field("consumers").and_then(as_u64).unwrap_or(0),
        pending: field("pending").and_then(as_u64).unwrap_or(0),
        last_delivered: field("last-delivered-id")
            .map(parse_id)
            .transpose()?
            .unwrap_or_default(),
        lag: field("lag").and_then(as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape_glob("evhost:kv:{a}*?"), "evhost:kv:{a}\\*\\?");
    }

    #[test]
    fn parses_read_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"events:A".to_vec()),
            Value::Array(vec![
                Value::Array(vec![
                    Value::BulkString(b"1-0".to_vec()),
                    Value::Array(vec![
                        Value::BulkString(b"payload".to_vec()),
                        Value::BulkString(b"{}".to_vec()),
                    ]),
                ]),
                Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).expect("parses");
        assert_eq!(entries.len(), 1, "deleted entries are skipped");
        assert_eq!(entries[0].id, EntryId::new(1, 0));
        assert_eq!(
            entries[0].fields,
            vec![("payload".to_string(), b"{}".to_vec())]
        );
        assert!(parse_read_reply(Value::Nil).expect("nil").is_empty());
    }

    #[test]
    fn parses_multi_stream_read_replies() {
        let entry = |id: &[u8]| {
            Value::Array(vec![
                Value::BulkString(id.to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"data".to_vec()),
                    Value::BulkString(b"{}".to_vec()),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"events:A".to_vec()),
                Value::Array(vec![entry(b"1-0")]),
            ]),
            Value::Array(vec![
                Value::BulkString(b"events:B".to_vec()),
                Value::Array(vec![entry(b"2-0"), entry(b"3-0")]),
            ]),
        ]);
        let entries = parse_multi_read(reply).expect("parses");
        let got: Vec<(String, EntryId)> = entries
            .into_iter()
            .map(|(stream, entry)| (stream, entry.id))
            .collect();
        assert_eq!(
            got,
            vec![
                ("events:A".to_string(), EntryId::new(1, 0)),
                ("events:B".to_string(), EntryId::new(2, 0)),
                ("events:B".to_string(), EntryId::new(3, 0)),
            ]
        );
        assert!(parse_multi_read(Value::Nil).expect("nil").is_empty());
    }
}
