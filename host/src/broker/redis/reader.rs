//! Connections for blocking reads: a consumer's [`GroupReader`] (`XREADGROUP`) and a
//! [`StreamFollower`] (`XREAD`, for `evhost tail`), each on a connection of its own.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::reply::*;
use crate::broker::{
    BrokerError, Delivered, EntryId, GroupReader, ReadFrom, StreamEntry, StreamFollower,
};

/// How long past its `BLOCK` time a read may take before the connection is presumed dead.
const READ_GRACE: Duration = Duration::from_secs(10);

/// A [`StreamFollower`] with plain `XREAD BLOCK` on a connection of its own.
pub(super) struct RedisFollower {
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

impl RedisFollower {
    /// A follower that connects on its first read.
    pub(super) fn new(client: Client) -> Self {
        RedisFollower { client, conn: None }
    }
}

/// A dedicated connection for blocking group reads; reconnects after a failure.
pub(super) struct RedisReader {
    /// Opens the connection.
    client: Client,
    /// The connection, `None` before the first read and after a failure.
    conn: Option<MultiplexedConnection>,
    /// A second connection for [`GroupReader::read_backlog`], opened on its first use.
    second: Option<MultiplexedConnection>,
}

impl RedisReader {
    /// A reader that connects on its first read.
    pub(super) fn new(client: Client) -> Self {
        RedisReader {
            client,
            conn: None,
            second: None,
        }
    }

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
pub(super) async fn with_delivery_counts<C: redis::aio::ConnectionLike + Send>(
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
