//! Group reads of the consumers ([`RedisReader`], `XREADGROUP` over the broker's few shared
//! connections, woken by [`Wakeups`]) and a [`StreamFollower`] (`XREAD BLOCK`, for
//! `evhost tail`, on a connection of its own).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::cluster_routing::Slot;

use super::endpoint::{Connection, Endpoint};
use super::reply::*;
use super::wakeups::{Bell, Wakeups};
use crate::broker::{
    BrokerError, Delivered, EntryId, GroupReader, ReadFrom, StreamEntry, StreamFollower,
};

/// How long past its `BLOCK` time a read may take before the connection is presumed dead.
const READ_GRACE: Duration = Duration::from_secs(10);

/// How often a follower of streams of several cluster slots looks for new entries (one
/// `XREAD` may name the streams of one slot only, so it cannot block for all of them).
const CLUSTER_POLL: Duration = Duration::from_millis(100);

/// A [`StreamFollower`] with plain `XREAD BLOCK` on a connection of its own; on a cluster,
/// streams of several slots are polled slot by slot.
pub(super) struct RedisFollower {
    /// Opens the connection.
    endpoint: Endpoint,
    /// The connection, `None` before the first read and after a failure.
    conn: Option<Connection>,
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
        let mut slots: HashMap<Slot, Vec<(String, EntryId)>> = HashMap::new();
        if self.endpoint.is_cluster() {
            for (stream, id) in after {
                let slot = Slot::for_key(stream.as_bytes());
                slots.entry(slot).or_default().push((stream.clone(), *id));
            }
        }
        if slots.len() <= 1 {
            return self.xread(after, count, block).await;
        }
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let mut found = Vec::new();
            for streams in slots.values() {
                found.extend(self.xread(streams, count, Duration::ZERO).await?);
            }
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(CLUSTER_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }
}

impl RedisFollower {
    /// A follower that connects on its first read.
    pub(super) fn new(endpoint: Endpoint) -> Self {
        RedisFollower {
            endpoint,
            conn: None,
        }
    }

    /// One `XREAD` of `after`, blocking up to `block` (not at all when it is zero).
    async fn xread(
        &mut self,
        after: &[(String, EntryId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, StreamEntry)>, BrokerError> {
        let mut conn = blocking_connection(&self.endpoint, &mut self.conn).await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(millis(block).max(1));
        }
        cmd.arg("STREAMS");
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

/// How many connections a broker's group reads share. Each connection parses its replies in
/// its own task, so a few let the host parse on every core; more would only cost Redis clients.
const READ_CONNECTIONS: usize = 4;

/// The connections every [`RedisReader`] of a broker shares: a fixed few, whatever the number
/// of plugins, streams and partitions. Reads on them never block (see [`Wakeups`]).
pub(super) struct ReadPool {
    endpoint: Endpoint,
    /// Each connection with a generation, so that only the failure of the connection in place
    /// replaces it (not a late failure of its predecessor).
    slots: Vec<tokio::sync::Mutex<(u64, Option<Connection>)>>,
    /// The slot the next reader starts at.
    next: AtomicUsize,
}

impl ReadPool {
    /// A pool of connections to `endpoint`, opened on first use.
    pub(super) fn new(endpoint: Endpoint) -> Self {
        ReadPool {
            endpoint,
            slots: (0..READ_CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new((0, None)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The slot of a new reader: round robin, so that readers spread over the connections.
    fn assign(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
    }

    /// The connection of slot `index` (opened if needed) and its generation.
    async fn connection(&self, index: usize) -> Result<PooledConnection, BrokerError> {
        let mut slot = self.slots[index % self.slots.len()].lock().await;
        let (generation, conn) = &mut *slot;
        let conn = blocking_connection(&self.endpoint, conn).await?;
        Ok(PooledConnection {
            index,
            generation: *generation,
            conn,
        })
    }

    /// Forgets `used` after it failed beyond repair; the next read opens a new one.
    async fn forget(&self, used: &PooledConnection) {
        let mut slot = self.slots[used.index % self.slots.len()].lock().await;
        if slot.0 == used.generation {
            slot.0 += 1;
            slot.1 = None;
        }
    }
}

/// A connection of the [`ReadPool`] and where it came from.
struct PooledConnection {
    index: usize,
    generation: u64,
    conn: Connection,
}

/// A consumer's group reads over the broker's shared connections; a read that waits for new
/// entries waits for its stream's bell instead of blocking a connection.
pub(super) struct RedisReader {
    pool: Arc<ReadPool>,
    wakeups: Wakeups,
    /// This reader's slot in the pool (the next one serves the second half of a backlog read).
    slot: usize,
    /// The bells of the streams read with a wait.
    bells: HashMap<String, Bell>,
}

impl RedisReader {
    /// A reader over `pool`, woken by `wakeups`.
    pub(super) fn new(pool: Arc<ReadPool>, wakeups: Wakeups) -> Self {
        let slot = pool.assign();
        RedisReader {
            pool,
            wakeups,
            slot,
            bells: HashMap::new(),
        }
    }

    /// One `XREADGROUP` that does not block, on the pool connection at `offset` from this
    /// reader's slot; a connection that failed is replaced.
    async fn read_now(
        &self,
        offset: usize,
        seat: &Seat<'_>,
        from: ReadFrom,
        count: usize,
    ) -> Result<(Vec<StreamEntry>, PooledConnection), BrokerError> {
        let mut pooled = self.pool.connection(self.slot + offset).await?;
        match xreadgroup(&mut pooled.conn, seat, from, count).await {
            Ok(entries) => Ok((entries, pooled)),
            Err(failure) => {
                if failure.reconnect {
                    self.pool.forget(&pooled).await;
                }
                Err(failure.error)
            }
        }
    }

    /// The bell of `stream`, following it on first use.
    async fn bell(&mut self, stream: &str) -> Result<&mut Bell, BrokerError> {
        if !self.bells.contains_key(stream) {
            let bell = self.wakeups.bell(stream).await?;
            self.bells.insert(stream.to_string(), bell);
        }
        self.bells
            .get_mut(stream)
            .ok_or_else(|| BrokerError::Protocol(format!("no bell for {stream}")))
    }

    /// New entries of `seat`, waiting up to `block` for some: read; if there are none, wait for
    /// the stream's bell (marked before the read, so that an entry added meanwhile rings it),
    /// then read once more.
    async fn read_waiting(
        &mut self,
        seat: &Seat<'_>,
        block: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        let now = ReadFrom::New { block: None };
        let bell = self.bell(seat.stream).await?;
        bell.borrow_and_update();
        let mut bell = bell.clone();
        let (entries, _) = self.read_now(0, seat, now, count).await?;
        if !entries.is_empty() {
            return Ok(entries);
        }
        let deadline = tokio::time::Instant::now() + block;
        match tokio::time::timeout_at(deadline, bell.changed()).await {
            Ok(Ok(())) => {}
            // No bell any more: wait out the block time as a blocking read would.
            Ok(Err(_)) => tokio::time::sleep_until(deadline).await,
            Err(_) => {}
        }
        Ok(self.read_now(0, seat, now, count).await?.0)
    }
}

/// The connection in `slot`, or a new one without response timeout (for `BLOCK`ed reads,
/// guarded by their own timeout) stored there.
async fn blocking_connection(
    endpoint: &Endpoint,
    slot: &mut Option<Connection>,
) -> Result<Connection, BrokerError> {
    if let Some(conn) = slot {
        return Ok(conn.clone());
    }
    let conn = endpoint.unbounded().await?;
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
    conn: &mut Connection,
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
        let seat = Seat {
            stream,
            group,
            consumer,
        };
        match from {
            ReadFrom::New { block: Some(block) } => Ok(first_deliveries(
                self.read_waiting(&seat, block, count).await?,
            )),
            ReadFrom::New { block: None } => Ok(first_deliveries(
                self.read_now(0, &seat, from, count).await?.0,
            )),
            ReadFrom::Pending { .. } => {
                let (entries, mut pooled) = self.read_now(0, &seat, from, count).await?;
                with_delivery_counts(&mut pooled.conn, stream, group, consumer, entries).await
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
        let now = ReadFrom::New { block: None };
        let seat = Seat {
            stream,
            group,
            consumer,
        };
        if count < 2 {
            return Ok(first_deliveries(
                self.read_now(0, &seat, now, count).await?.0,
            ));
        }
        let half = count / 2;
        let (one, two) = tokio::join!(
            self.read_now(0, &seat, now, count - half),
            self.read_now(1, &seat, now, half),
        );
        // Entries a failed half leaves behind are pending for this consumer: retried later.
        let mut entries = one?.0;
        entries.extend(two?.0);
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
