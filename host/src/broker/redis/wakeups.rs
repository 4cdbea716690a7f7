//! Wake-ups for every reader of a broker over one connection.
//!
//! A reader waiting for new entries does not block a connection of its own: it reads without
//! blocking, and when that gives nothing it waits for its stream's bell. One task per broker
//! rings the bells: it blocks in a single `XREAD` over every stream some reader follows, from
//! the newest entry it knows of each, and rings the bell of each stream that got a new entry.
//! So a host holds one blocked connection however many plugins, streams and partitions it
//! consumes, instead of one per consumer.
//!
//! On a Redis Cluster one `XREAD` may only name streams of one slot, so there is one such task
//! (a *shard*) per slot followed: per partition the host consumes, since every stream of a
//! partition shares its hash tag, and per ingress stream.
//!
//! # Why no wake-up is lost
//!
//! A reader registers its stream before its first read, marks its bell as heard, reads, and
//! only then waits. A stream is registered at the id of its newest entry, read at
//! registration, so every entry added later has a greater id and makes the `XREAD` return.
//! An entry added after the read therefore rings the bell after it was added, and the reader,
//! who marked the bell before reading, hears it. The waiting reader also gives up after its
//! block time, as a blocking read would, so a task that is down or a stream that was deleted
//! and recreated (ids starting over) costs latency, never an entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::Value;
use redis::cluster_routing::Slot;
use tokio::sync::{Notify, watch};

use super::endpoint::{Connection, Endpoint};
use super::reply::*;
use crate::broker::{BrokerError, EntryId};

/// How long one `XREAD` blocks; the task re-reads which streams to follow at least this often.
const BLOCK: Duration = Duration::from_secs(2);
/// How long past [`BLOCK`] the `XREAD` may take before its connection is presumed dead.
const GRACE: Duration = Duration::from_secs(10);

/// The bell of one stream: it rings (its value changes) when the stream got new entries.
pub(super) type Bell = watch::Receiver<u64>;

/// The streams followed and where.
#[derive(Default)]
struct Followed {
    streams: HashMap<String, FollowedStream>,
    /// Changes whenever a stream is added, so that the task knows its `XREAD` is stale.
    generation: u64,
}

/// One followed stream.
struct FollowedStream {
    /// The newest entry id known: the `XREAD` returns when a greater one is added.
    newest: EntryId,
    /// Rung on new entries; its receivers are the readers following the stream.
    ring: watch::Sender<u64>,
}

/// The wake-up task's shared state; the task holds it weakly, and ends when the broker is gone.
struct Shared {
    endpoint: Endpoint,
    /// For registrations (`XREVRANGE`) and `CLIENT UNBLOCK`.
    control: Connection,
    /// A key of the shard's slot (its first stream): routes `CLIENT ID` and `CLIENT UNBLOCK`
    /// to the node that serves the slot, where the task's read blocks.
    route_key: String,
    followed: Mutex<Followed>,
    /// The generation of the stream set in the `XREAD` the task sent last.
    issued: AtomicU64,
    /// The client id of the task's connection (0 while it has none).
    blocked_client: AtomicI64,
    /// Wakes the task while it follows nothing (a permit is kept if it is not waiting).
    first_stream: Arc<Notify>,
}

/// Hands out bells: each from the shard of its stream's slot (the one shard on a single
/// server), started with its first stream.
#[derive(Clone)]
pub(super) struct Wakeups {
    endpoint: Endpoint,
    control: Connection,
    /// The shards by slot (`None`: the one shard of a single server).
    shards: Arc<Mutex<HashMap<Option<Slot>, Shard>>>,
}

impl Wakeups {
    /// Wake-ups over connections to `endpoint`; `control` carries the short commands.
    pub(super) fn new(endpoint: Endpoint, control: Connection) -> Self {
        Wakeups {
            endpoint,
            control,
            shards: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The bell of `stream`, following it from its newest entry if no reader did yet. The
    /// stream is followed until the last of its bells is dropped.
    pub(super) async fn bell(&self, stream: &str) -> Result<Bell, BrokerError> {
        let slot = self
            .endpoint
            .is_cluster()
            .then(|| Slot::for_key(stream.as_bytes()));
        let shard = {
            let mut shards = self
                .shards
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shards
                .entry(slot)
                .or_insert_with(|| Shard::new(self.endpoint.clone(), self.control.clone(), stream))
                .clone()
        };
        shard.bell(stream).await
    }
}

/// One wake-up task and the streams it follows, all of one slot on a cluster.
#[derive(Clone)]
struct Shard {
    shared: Arc<Shared>,
    started: Arc<std::sync::Once>,
}

impl Shard {
    /// A shard whose slot is that of `route_key`.
    fn new(endpoint: Endpoint, control: Connection, route_key: &str) -> Self {
        Shard {
            shared: Arc::new(Shared {
                endpoint,
                control,
                route_key: route_key.to_string(),
                followed: Mutex::new(Followed::default()),
                issued: AtomicU64::new(0),
                blocked_client: AtomicI64::new(0),
                first_stream: Arc::new(Notify::new()),
            }),
            started: Arc::new(std::sync::Once::new()),
        }
    }

    /// The bell of `stream`, following it from its newest entry if no reader did yet.
    async fn bell(&self, stream: &str) -> Result<Bell, BrokerError> {
        if let Some(bell) = self.existing_bell(stream) {
            return Ok(bell);
        }
        let newest = newest_entry(&self.shared.control, stream).await?;
        let (bell, generation) = {
            let mut followed = self.shared.lock();
            followed.generation += 1;
            let generation = followed.generation;
            let entry = followed
                .streams
                .entry(stream.to_string())
                .or_insert_with(|| FollowedStream {
                    newest,
                    ring: watch::channel(0).0,
                });
            // Another reader may have registered meanwhile from an older id: keep the older
            // one, whose `XREAD` returns for every entry this one would.
            entry.newest = entry.newest.min(newest);
            (entry.ring.subscribe(), generation)
        };
        let shared = Arc::downgrade(&self.shared);
        self.started
            .call_once(|| drop(tokio::spawn(ring_bells(shared))));
        self.shared.first_stream.notify_one();
        self.shared.cut_stale_read(generation).await;
        Ok(bell)
    }

    fn existing_bell(&self, stream: &str) -> Option<Bell> {
        let followed = self.shared.lock();
        followed
            .streams
            .get(stream)
            .map(|followed| followed.ring.subscribe())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Followed> {
        self.followed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the task send a new `XREAD` if the one it has out predates `generation`: a new
    /// stream then rings as soon as it gets an entry, not only after the old read's timeout.
    /// Best effort (the reader's own timeout covers a failure), a few tries at most.
    async fn cut_stale_read(&self, generation: u64) {
        for _ in 0..20 {
            if self.issued.load(Ordering::Acquire) >= generation {
                return;
            }
            let client = self.blocked_client.load(Ordering::Acquire);
            if client != 0 {
                let mut control = self.control.clone();
                let mut unblock = redis::cmd("CLIENT");
                unblock.arg("UNBLOCK").arg(client);
                match control.query_at(&self.route_key, unblock).await {
                    Ok(Value::Int(1)) => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            // The read is on its way and not blocked yet, or the task is connecting.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The streams to follow and from where, forgetting those no reader follows any more;
    /// `None` when nothing is followed.
    fn snapshot(&self) -> Option<(Vec<(String, EntryId)>, u64)> {
        let mut followed = self.lock();
        followed
            .streams
            .retain(|_, stream| stream.ring.receiver_count() > 0);
        if followed.streams.is_empty() {
            return None;
        }
        let streams = followed
            .streams
            .iter()
            .map(|(name, stream)| (name.clone(), stream.newest))
            .collect();
        Some((streams, followed.generation))
    }

    /// Moves the streams in `newest` forward and rings their bells.
    fn ring(&self, newest: Vec<(String, EntryId)>) {
        let mut followed = self.lock();
        for (name, id) in newest {
            if let Some(stream) = followed.streams.get_mut(&name) {
                stream.newest = stream.newest.max(id);
                stream.ring.send_modify(|rung| *rung = rung.wrapping_add(1));
            }
        }
    }

    /// Rings every bell (after a failure: readers look for themselves).
    fn ring_all(&self) {
        let followed = self.lock();
        for stream in followed.streams.values() {
            stream.ring.send_modify(|rung| *rung = rung.wrapping_add(1));
        }
    }
}

/// The id of the newest entry of `stream` (`0-0` when it is empty or does not exist).
async fn newest_entry(control: &Connection, stream: &str) -> Result<EntryId, BrokerError> {
    let mut control = control.clone();
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut control)
        .await?;
    Ok(parse_entries(reply)?
        .first()
        .map_or(EntryId::ZERO, |entry| entry.id))
}

/// The task: one blocking `XREAD` over every followed stream at a time, ringing the bells of
/// those that got entries, until the broker is dropped.
async fn ring_bells(shared: Weak<Shared>) {
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let Some((streams, generation)) = strong.snapshot() else {
            let first_stream = strong.first_stream.clone();
            drop(strong);
            // Re-checks now and then, so that a dropped broker ends the task.
            let _ = tokio::time::timeout(BLOCK, first_stream.notified()).await;
            continue;
        };
        let connection = match conn.clone() {
            Some(connection) => connection,
            None => match connect(&strong).await {
                Ok(connection) => {
                    conn = Some(connection.clone());
                    connection
                }
                Err(err) => {
                    tracing::debug!(error = %err, "wake-up connection failed; retrying");
                    strong.ring_all();
                    drop(strong);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        strong.issued.store(generation, Ordering::Release);
        drop(strong);
        match follow(connection, &streams).await {
            Ok(newest) => {
                backoff = Duration::from_millis(50);
                if let Some(strong) = shared.upgrade() {
                    strong.ring(newest);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "wake-up read failed; reconnecting");
                conn = None;
                if let Some(strong) = shared.upgrade() {
                    strong.blocked_client.store(0, Ordering::Release);
                    strong.ring_all();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Opens the task's connection (no response timeout: its reads block) and records its client
/// id (on the node of the shard's slot) for `CLIENT UNBLOCK`.
async fn connect(shared: &Shared) -> Result<Connection, BrokerError> {
    let mut conn = shared.endpoint.unbounded().await?;
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("ID");
    let Value::Int(id) = conn.query_at(&shared.route_key, cmd).await? else {
        return Err(BrokerError::Protocol("CLIENT ID answered no number".into()));
    };
    shared.blocked_client.store(id, Ordering::Release);
    Ok(conn)
}

/// One blocking `XREAD` of `streams`; returns the newest id of each stream that got entries
/// (looked up after the read, so that one wake-up covers every entry added so far).
async fn follow(
    mut conn: Connection,
    streams: &[(String, EntryId)],
) -> Result<Vec<(String, EntryId)>, BrokerError> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(u64::MAX))
        .arg("STREAMS");
    for (stream, _) in streams {
        cmd.arg(stream);
    }
    for (_, id) in streams {
        cmd.arg(id.to_string());
    }
    let reply = match tokio::time::timeout(BLOCK + GRACE, cmd.query_async::<Value>(&mut conn)).await
    {
        Ok(reply) => reply?,
        Err(_) => {
            return Err(BrokerError::Protocol(format!(
                "XREAD got no answer within {:?}",
                BLOCK + GRACE
            )));
        }
    };
    let woken: Vec<(String, EntryId)> = parse_multi_read(reply)?
        .into_iter()
        .map(|(stream, entry)| (stream, entry.id))
        .collect();
    if woken.is_empty() {
        return Ok(woken);
    }
    let mut pipe = redis::pipe();
    for (stream, _) in &woken {
        pipe.cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
    let mut newest = Vec::with_capacity(woken.len());
    for ((stream, first_new), reply) in woken.into_iter().zip(replies) {
        let last = parse_entries(reply)?
            .first()
            .map_or(first_new, |entry| entry.id);
        newest.push((stream, last.max(first_new)));
    }
    Ok(newest)
}
