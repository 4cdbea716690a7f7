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
    Broker, BrokerError, Claimed, Commit, Delivered, EntryId, Fields, GroupInfo, GroupReader,
    GroupStart, Op, PendingEntry, ReadFrom, StreamEntry,
};

/// How long past its `BLOCK` time a read may take before the connection is presumed dead.
const READ_GRACE: Duration = Duration::from_secs(10);
/// Applies a [`Commit`] atomically. `KEYS[i]` is the key of op `i`; `ARGV` holds the ops in
/// order: `A <n> <field> <value>...` (XADD), `S <value>` (SET), `D` (DEL),
/// `K <group> <n> <id>...` (XACK). Every acked group is checked first; a missing one fails the
/// whole commit with `NOGROUP <op position>` before anything is written.
const COMMIT_SCRIPT: &str = r"
local function missing(stream, group)
  local ok = redis.pcall('XINFO', 'CONSUMERS', stream, group)
  if type(ok) == 'table' and ok.err then
    if string.find(ok.err, 'NOGROUP', 1, true) == 1 or string.find(ok.err, 'no such key', 1, true) then
      return true
    end
    error(ok.err)
  end
  return false
end
local a = 1
for k = 1, #KEYS do
  local op = ARGV[a]
  if op == 'A' then a = a + 2 + 2 * tonumber(ARGV[a + 1])
  elseif op == 'S' then a = a + 2
  elseif op == 'D' then a = a + 1
  elseif op == 'K' then
    if missing(KEYS[k], ARGV[a + 1]) then
      return redis.error_reply('NOGROUP ' .. k .. ' no consumer group ' .. ARGV[a + 1] .. ' on ' .. KEYS[k])
    end
    a = a + 3 + tonumber(ARGV[a + 2])
  else
    return redis.error_reply('ERR unknown commit op ' .. tostring(op))
  end
end
a = 1
for k = 1, #KEYS do
  local op = ARGV[a]
  if op == 'A' then
    local n = tonumber(ARGV[a + 1])
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, a + 2, a + 1 + 2 * n))
    a = a + 2 + 2 * n
  elseif op == 'S' then
    redis.call('SET', KEYS[k], ARGV[a + 1])
    a = a + 2
  elseif op == 'D' then
    redis.call('DEL', KEYS[k])
    a = a + 1
  else
    local n = tonumber(ARGV[a + 2])
    -- unpack() is bounded by Lua's stack: acknowledge in chunks.
    local first = a + 3
    while first <= a + 2 + n do
      local last = math.min(first + 999, a + 2 + n)
      redis.call('XACK', KEYS[k], ARGV[a + 1], unpack(ARGV, first, last))
      first = last + 1
    end
    a = a + 3 + n
  end
end
return 'OK'
";
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
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(RedisBroker {
            client,
            conn,
            commit_script: Arc::new(Script::new(COMMIT_SCRIPT)),
        })
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

    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError> {
        Ok(Box::new(RedisReader {
            client: self.client.clone(),
            conn: None,
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

    async fn commit(&self, commit: &Commit) -> Result<(), BrokerError> {
        if commit.is_empty() {
            return Ok(());
        }
        // One script: it checks every acked group exists before writing anything, which
        // MULTI/EXEC cannot do (XACK on a missing group answers 0, and EXEC never rolls back).
        // `Script` sends EVALSHA and falls back to EVAL once if the server lacks the script.
        let mut invocation = self.commit_script.prepare_invoke();
        for op in &commit.ops {
            match op {
                Op::Add { stream: key, .. }
                | Op::Set { key, .. }
                | Op::Delete { key }
                | Op::Ack { stream: key, .. } => invocation.key(key),
            };
        }
        for op in &commit.ops {
            match op {
                Op::Add { fields, .. } => {
                    invocation.arg("A").arg(fields.len());
                    for (name, value) in fields {
                        invocation.arg(name).arg(value);
                    }
                }
                Op::Set { value, .. } => {
                    invocation.arg("S").arg(value);
                }
                Op::Delete { .. } => {
                    invocation.arg("D");
                }
                Op::Ack { group, ids, .. } => {
                    invocation.arg("K").arg(group).arg(ids.len());
                    for id in ids {
                        invocation.arg(id.to_string());
                    }
                }
            }
        }
        let mut conn = self.conn.clone();
        match invocation
            .invoke_async::<Value>(&mut conn)
            .await
            .map_err(BrokerError::from)
        {
            Ok(_) => Ok(()),
            Err(BrokerError::Redis(err)) if err.code() == Some("NOGROUP") => {
                // The script names the failing op's position (1-based).
                let failed = err
                    .detail()
                    .and_then(|detail| detail.split_whitespace().next()?.parse::<usize>().ok())
                    .and_then(|position| commit.ops.get(position.checked_sub(1)?));
                match failed {
                    Some(Op::Ack { stream, group, .. }) => Err(BrokerError::NoGroup {
                        stream: stream.clone(),
                        group: group.clone(),
                    }),
                    _ => Err(BrokerError::Redis(err)),
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

    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream)
            .arg(start.to_string())
            .arg(end.to_string())
            .arg("COUNT")
            .arg(count);
        parse_entries(&self.query(&cmd).await?)
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

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        count: usize,
    ) -> Result<Vec<PendingEntry>, BrokerError> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group).arg("-").arg("+").arg(count);
        let reply = self
            .query(&cmd)
            .await
            .map_err(|err| no_group(err, stream, group))?;
        parse_pending(&reply)
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> Result<Claimed, BrokerError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count);
        let reply = self
            .query(&cmd)
            .await
            .map_err(|err| no_group(err, stream, group))?;
        let Value::Array(parts) = &reply else {
            return Err(unexpected("XAUTOCLAIM", &reply));
        };
        let (Some(next), Some(entries)) = (parts.first(), parts.get(1)) else {
            return Err(unexpected("XAUTOCLAIM", &reply));
        };
        let next = parse_id(next)?;
        let entries = parse_entries(entries)?;
        let mut conn = self.conn.clone();
        let entries = with_delivery_counts(&mut conn, stream, group, consumer, entries).await?;
        Ok(Claimed { next, entries })
    }
}

/// A dedicated connection for blocking group reads; reconnects after a failure.
struct RedisReader {
    /// Opens the connection.
    client: Client,
    /// The connection, `None` before the first read and after a failure.
    conn: Option<MultiplexedConnection>,
}

impl RedisReader {
    async fn connection(&mut self) -> Result<MultiplexedConnection, BrokerError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}

#[async_trait]
impl GroupReader for RedisReader {
    async fn read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        after: EntryId,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        let block = match from {
            ReadFrom::New => block,
            ReadFrom::Pending => None,
        };
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.arg("STREAMS").arg(stream);
        match from {
            ReadFrom::New => cmd.arg(">"),
            ReadFrom::Pending => cmd.arg(after.to_string()),
        };
        let limit = block.unwrap_or_default() + READ_GRACE;
        let reply = match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => {
                if !err.is_unrecoverable_error() && err.code().is_some() {
                    return Err(no_group(BrokerError::Redis(err), stream, group));
                }
                self.conn = None;
                return Err(BrokerError::Redis(err));
            }
            Err(_) => {
                self.conn = None;
                return Err(BrokerError::Protocol(format!(
                    "XREADGROUP on {stream} got no answer within {limit:?}; reconnecting"
                )));
            }
        };
        let entries = parse_read_reply(&reply)?;
        match from {
            ReadFrom::New => Ok(entries
                .into_iter()
                .map(|entry| Delivered {
                    entry,
                    deliveries: 1,
                })
                .collect()),
            ReadFrom::Pending => {
                with_delivery_counts(&mut conn, stream, group, consumer, entries).await
            }
        }
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
        .arg(entries.len())
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

/// Parses `[[id, [field, value, ...]], ...]`; entries deleted since delivery (`[id, nil]`) are
/// skipped.
fn parse_entries(value: &Value) -> Result<Vec<StreamEntry>, BrokerError> {
    let Value::Array(items) = value else {
        if matches!(value, Value::Nil) {
            return Ok(Vec::new());
        }
        return Err(unexpected("stream entries", value));
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(unexpected("stream entry", item));
        };
        let Some(id) = parts.first() else {
            return Err(unexpected("stream entry", item));
        };
        let id = parse_id(id)?;
        let fields = match parts.get(1) {
            Some(Value::Array(flat)) => flat
                .chunks(2)
                .filter_map(|pair| match pair {
                    [name, value] => Some((as_text(name)?, bytes_of(value))),
                    _ => None,
                })
                .collect(),
            Some(Value::Map(pairs)) => pairs
                .iter()
                .filter_map(|(name, value)| Some((as_text(name)?, bytes_of(value))))
                .collect(),
            _ => continue,
        };
        entries.push(StreamEntry { id, fields });
    }
    Ok(entries)
}

fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes.clone(),
        other => as_text(other).unwrap_or_default().into_bytes(),
    }
}

/// Parses an `XREADGROUP` reply for one stream.
fn parse_read_reply(value: &Value) -> Result<Vec<StreamEntry>, BrokerError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.get(1) {
                Some(entries) => parse_entries(entries),
                None => Err(unexpected("XREADGROUP", value)),
            },
            Some(other) => Err(unexpected("XREADGROUP", other)),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        other => Err(unexpected("XREADGROUP", other)),
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
        let entries = parse_read_reply(&reply).expect("parses");
        assert_eq!(entries.len(), 1, "deleted entries are skipped");
        assert_eq!(entries[0].id, EntryId::new(1, 0));
        assert_eq!(
            entries[0].fields,
            vec![("payload".to_string(), b"{}".to_vec())]
        );
        assert!(parse_read_reply(&Value::Nil).expect("nil").is_empty());
    }
}
