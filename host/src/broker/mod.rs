//! The message broker abstraction: streams, consumer groups, pending entries and atomic commits.
//!
//! Two contracts: [`Broker`], what a running host needs (group reads, pending entries, claims,
//! atomic commits, keys), and [`Inspect`], looking at streams (ranges, lengths, groups,
//! following). Two implementations share both: [`redis::RedisBroker`] (the real thing) and
//! [`memory::MemoryBroker`] (an embedded, in-process broker with the same semantics, used by
//! `evhost demo` and by tests that do not need Redis). [`connect`] picks one from a URL. The
//! conformance tests run the same cases against both.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod connect;
pub mod entry_id;
pub mod expect;
pub mod memory;
pub mod redis;
pub mod tls;

use std::time::Duration;

use async_trait::async_trait;

pub use connect::{connect, connect_waiting};
pub use entry_id::EntryId;
pub use expect::{Expect, ValueDigest};

/// Field/value pairs of one stream entry, in the order they were written.
pub type Fields = Vec<(String, Vec<u8>)>;

/// One entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry's id, e.g. `1700000000000-0`.
    pub id: EntryId,
    /// The entry's fields.
    pub fields: Fields,
}

/// An entry handed to a consumer, with how often it has been delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The entry itself.
    pub entry: StreamEntry,
    /// How many times the group delivered this entry, this delivery included (1 = first time).
    pub deliveries: u32,
}

/// Where a consumer reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The consumer's own pending entries after `after` (`XREADGROUP ... <after>`): delivered
    /// before, not acked. Use [`EntryId::ZERO`] to start. Never blocks.
    Pending {
        /// Entries after this id.
        after: EntryId,
    },
    /// Entries never delivered to the group (`XREADGROUP ... >`).
    New {
        /// How long to wait for new entries when there are none (`None`: do not wait).
        block: Option<Duration>,
    },
}

/// Where a newly created consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum GroupStart {
    /// From the first entry of the stream (`0`).
    #[serde(rename = "0", alias = "beginning")]
    Beginning,
    /// Only entries added after the group was created (`$`).
    #[default]
    #[serde(rename = "$", alias = "end")]
    End,
    /// Only entries with ids above this one: what `$` means for a stream of a partitioned
    /// keyspace that appeared before this plugin's group did (its entries since the plugin
    /// first ran). Not a setting.
    #[serde(skip)]
    After(EntryId),
}

/// One write of an atomic [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Append an entry to a stream (`XADD stream * fields...`).
    Add {
        /// Target stream.
        stream: String,
        /// Entry fields.
        fields: Fields,
    },
    /// Set a key to a value (`SET`).
    Set {
        /// The full key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a key (`DEL`).
    Delete {
        /// The full key.
        key: String,
    },
    /// Add `delta` to the counter a key holds (`INCRBY`; see [`expect::counter_value`]). If
    /// the key holds no counter at commit time, its settlement is not applied (a conflict).
    Increment {
        /// The full key.
        key: String,
        /// What to add.
        delta: u64,
    },
    /// Delete one entry of a stream (`XDEL`).
    Remove {
        /// The stream.
        stream: String,
        /// The entry.
        id: EntryId,
    },
    /// Not a write but a condition of the whole commit (fencing): `key` (a partition's lease)
    /// holds `owner`. When it does not, nothing of the commit is applied and it fails with
    /// [`BrokerError::Fenced`], so that a host that lost its partition commits nothing.
    Fence {
        /// The lease key.
        key: String,
        /// Who must hold it.
        owner: String,
    },
}

impl Op {
    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Add { stream, .. } | Op::Remove { stream, .. } => stream,
            Op::Set { key, .. }
            | Op::Delete { key }
            | Op::Increment { key, .. }
            | Op::Fence { key, .. } => key,
        }
    }

    /// Whether the op writes a key-value entry (rather than a stream).
    pub fn writes_value(&self) -> bool {
        matches!(
            self,
            Op::Set { .. } | Op::Delete { .. } | Op::Increment { .. }
        )
    }
}

/// The outcome of handling one entry: its effects and its acknowledgement, applied only if the
/// entry is still pending for `consumer`.
///
/// If another consumer claimed the entry in the meantime (this one was presumed dead), or it
/// was acknowledged already, nothing of the settlement is applied: the effects of an event are
/// committed at most once even when two consumers handled it.
///
/// A settlement without `ops` is a plain acknowledgement and is applied without that check:
/// it commits no effects, and the other consumer's later settlement of the entry is then the
/// skipped one, so exactly one handling is committed either way (and the check, the costly part
/// of a commit on Redis, is saved for the common case).
///
/// # No lost updates
///
/// `expects` names the keys the handler read, with what they held; if one holds something
/// else when the settlement is applied, or a key it increments holds no counter, nothing of
/// it is applied and it is reported [conflicted](CommitReport::conflicted): the entry stays
/// pending, to be handled again with fresh reads. Every later settlement of the commit that
/// has ops is then conflicted too, so that the effects of a consumer's entries keep their
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The entry's stream.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// The consumer that must still hold the entry.
    pub consumer: String,
    /// The entry.
    pub id: EntryId,
    /// Writes caused by handling it.
    pub ops: Vec<Op>,
    /// Keys that must still hold what the handler read (empty when it wrote no key-value
    /// entry: only a read-modify-write is checked).
    pub expects: Vec<Expect>,
}

/// Writes applied all together or not at all: first `ops`, then each settlement in order.
///
/// On Redis this is one Lua script (`commit.lua`), which (unlike `MULTI`/`EXEC`) can check
/// that consumer groups exist and that entries are still owned before writing anything; a
/// commit of only settlements without ops, of one stream and group, is one `XACK`.
///
/// # One hash slot
///
/// Every key a commit touches ([`Commit::keys`]) must lie in one Redis Cluster hash slot: a
/// script may only touch keys of one slot there. A keyspace layout that is meant for a cluster
/// ([`Keyspace::one_slot_per_partition`]) gives all keys of one partition one hash tag, and
/// each commit stays within one partition; [`Commit::in_one_slot`] checks it. The single layout
/// ([`Keyspace::single`], P = 1, today's names) does not: only its key-value entries carry a
/// tag, so a commit usually spans several slots and that layout is for a single Redis node.
///
/// [`Keyspace::one_slot_per_partition`]: crate::keyspace::Keyspace::one_slot_per_partition
/// [`Keyspace::single`]: crate::keyspace::Keyspace::single
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Unconditional writes, applied in order.
    pub ops: Vec<Op>,
    /// Per-entry effects and acknowledgements, applied in order.
    pub settlements: Vec<Settlement>,
}

impl Commit {
    /// True when the commit has nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.settlements.is_empty()
    }

    /// Every key the commit touches, in order, repeats included: the keys of `ops`, then of
    /// each settlement its stream, the keys it expects and the keys of its ops.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.ops
            .iter()
            .map(Op::key)
            .chain(self.settlements.iter().flat_map(|settlement| {
                std::iter::once(settlement.stream.as_str())
                    .chain(settlement.expects.iter().map(|expect| expect.key.as_str()))
                    .chain(settlement.ops.iter().map(Op::key))
            }))
    }

    /// Whether every key of the commit certainly lies in one hash slot, as Redis Cluster
    /// requires (see [`keyspace::one_slot`](crate::keyspace::one_slot)).
    pub fn in_one_slot(&self) -> bool {
        crate::keyspace::one_slot(self.keys())
    }
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Settlements not applied because their entry was no longer pending for the consumer.
    pub skipped: Vec<EntryId>,
    /// Settlements not applied because a key changed since their handler read it (or an
    /// earlier settlement of the commit conflicted): their entries stay pending for the
    /// consumer, to be handled again.
    pub conflicted: Vec<EntryId>,
}

/// A pending entry of a consumer group (`XPENDING` extended form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: EntryId,
    /// The consumer that holds it.
    pub consumer: String,
    /// Time since it was last delivered.
    pub idle: Duration,
    /// How many times it was delivered.
    pub deliveries: u32,
}

/// Summary of a consumer group on one stream (`XINFO GROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Number of consumers in the group.
    pub consumers: u64,
    /// Number of delivered but unacknowledged entries.
    pub pending: u64,
    /// Id of the last entry delivered to the group.
    pub last_delivered: EntryId,
    /// Entries not yet delivered to the group, when the broker can tell.
    pub lag: Option<u64>,
}

/// Errors from a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The consumer group does not exist (e.g. after a `FLUSHALL`).
    #[error("no consumer group {group:?} on stream {stream:?}")]
    NoGroup {
        /// The stream.
        stream: String,
        /// The missing group.
        group: String,
    },
    /// The broker did not answer in time (a Redis node away, a network cut).
    #[error("no answer from Redis within {0:?}")]
    NoAnswer(Duration),
    /// The broker answered something this code cannot interpret.
    #[error("unexpected reply from broker: {0}")]
    Protocol(String),
    /// A commit's lease is not held by its committer (any more): nothing was applied.
    #[error(
        "commit refused: the lease {key} is not held by {owner} (another host took the partition over); nothing was applied"
    )]
    Fenced {
        /// The lease key.
        key: String,
        /// The committer.
        owner: String,
    },
    /// Several seeds were given, but the server is not a Redis Cluster node.
    #[error(
        "several Redis URLs were given (seeds of a Redis Cluster), but the server that answered is not a cluster node (cluster_enabled:0): give one URL for a standalone Redis"
    )]
    SeedsOfNoCluster,
    /// The TLS files named in a `rediss://` URL cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// No backend serves URLs of this scheme.
    #[error(
        "unsupported broker URL scheme {scheme:?}: expected redis://, rediss://, redis+unix:// or unix:// (or their valkey forms)"
    )]
    UnsupportedScheme {
        /// The URL's scheme (the text before `:`, never the credentials).
        scheme: String,
    },
}

/// A broker of streams with consumer groups: what a running host needs.
///
/// The consumer loop reads ([`Broker::reader`]), looks at and takes over pending entries
/// ([`Broker::pending`], [`Broker::claim_entries`]) and commits ([`Broker::commit`]); the
/// plugins' capabilities read keys, list them and publish ([`Broker::get`],
/// [`Broker::scan_keys`], [`Broker::add`]); the host finds the streams it consumes
/// ([`Broker::streams`]). Looking at streams without consuming them is [`Inspect`], which
/// every broker also implements: a `&dyn Broker` is a `&dyn Inspect`.
///
/// Every method is safe to call concurrently. Group reads go through a [`GroupReader`], whose
/// waiting for new entries never delays other commands.
#[async_trait]
pub trait Broker: Inspect {
    /// Creates `group` on `stream` (creating the stream if needed).
    ///
    /// Returns `false` when the group already existed (not an error).
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<bool, BrokerError>;

    /// Checks that the broker answers.
    async fn ping(&self) -> Result<(), BrokerError>;

    /// Whether the broker is a Redis Cluster, where every commit, read and move must stay in
    /// one slot: only a partitioned keyspace can run there.
    fn is_cluster(&self) -> bool {
        false
    }

    /// The address of the Redis Cluster primary that serves `key` now; `None` when the broker
    /// is not a cluster.
    async fn node_of(&self, key: &str) -> Result<Option<String>, BrokerError> {
        let _ = key;
        Ok(None)
    }

    /// Writes that fewer replicas confirmed than the broker was told to wait for
    /// (`--wait-replicas`), since it was made; 0 for a broker that does not wait.
    fn replication_shortfalls(&self) -> u64 {
        0
    }

    /// Opens a reader for group reads. Readers are cheap: however many a host opens, a broker
    /// keeps its connections few (the Redis broker shares a handful among all of them).
    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError>;

    /// Appends an entry to a stream and returns its id.
    async fn add(&self, stream: &str, fields: &Fields) -> Result<EntryId, BrokerError>;

    /// Applies every write of `commit` atomically, in order, and reports the settlements it
    /// skipped.
    ///
    /// Fails without writing anything when a group named by a settlement is missing.
    async fn commit(&self, commit: &Commit) -> Result<CommitReport, BrokerError>;

    /// Reads a key.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError>;

    /// Sets `key` to `value` unless it exists (`SET NX`); returns whether it was set. Records
    /// a keyspace's settings once, whichever host comes first.
    async fn set_if_absent(&self, key: &str, value: &[u8]) -> Result<bool, BrokerError>;

    /// Takes or renews the lease `key` for `owner` for `ttl`: sets it when nobody holds it,
    /// extends it when `owner` does; returns whether `owner` holds it now.
    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BrokerError>;

    /// Gives the lease `key` up if `owner` holds it; returns whether it did.
    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, BrokerError>;

    /// Appends an entry to `stream` unless `mark` exists, and creates `mark` (kept for
    /// `mark_ttl`), both atomically; returns whether it appended. Moving an entry between
    /// partitions with a mark named after it happens once however often it is repeated within
    /// `mark_ttl`. `stream` and `mark` must lie in one slot.
    async fn append_once(
        &self,
        stream: &str,
        fields: &Fields,
        mark: &str,
        mark_ttl: Duration,
    ) -> Result<bool, BrokerError>;

    /// Adds `members` to the set `key` (`SADD`). The registry of a partitioned keyspace's
    /// streams is such a set: hosts find the streams to consume in it instead of walking the
    /// keyspace.
    async fn add_members(&self, key: &str, members: &[String]) -> Result<(), BrokerError>;

    /// The members of the set `key` (`SMEMBERS`), sorted; empty when there is no such set.
    async fn members(&self, key: &str) -> Result<Vec<String>, BrokerError>;

    /// Records that `member` is alive for `ttl` in the roll call `key` (a sorted set scored by
    /// expiry, on the server's clock), forgets the members whose time ran out, and returns how
    /// many are alive, `member` included. Hosts count each other with it.
    async fn heartbeat(&self, key: &str, member: &str, ttl: Duration) -> Result<u32, BrokerError>;

    /// Takes `member` off the roll call `key` at once.
    async fn leave(&self, key: &str, member: &str) -> Result<(), BrokerError>;

    /// Reads several keys in one round trip (`MGET`), values in the order of `keys`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BrokerError>;

    /// Lists keys starting with `prefix`, one page at a time: returns the keys and the cursor of
    /// the next page (`0` when done). Start with cursor `0`.
    ///
    /// Part of the running contract, not of [`Inspect`]: a plugin lists its key-value entries
    /// with it while it handles events.
    async fn scan_keys(&self, prefix: &str, cursor: u64)
    -> Result<(Vec<String>, u64), BrokerError>;

    /// Names of all streams whose key starts with `prefix`, sorted.
    ///
    /// Part of the running contract, not of [`Inspect`]: the host discovers with it which
    /// streams to consume (event streams appear when their first event is published), and
    /// a backend that cannot list streams cannot run a host.
    async fn streams(&self, prefix: &str) -> Result<Vec<String>, BrokerError>;

    /// Deletes the entries of `stream` with ids below `first_kept` (`XTRIM MINID`); returns
    /// how many. Streams only grow otherwise: the host's retention trims what every group has
    /// acknowledged.
    async fn trim_before(&self, stream: &str, first_kept: EntryId) -> Result<u64, BrokerError>;

    /// Up to `count` pending entries of `group` idle for at least `min_idle`, oldest first.
    async fn pending(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<PendingEntry>, BrokerError>;

    /// Transfers the given pending entries to `consumer` if they are idle for at least
    /// `min_idle` (`XCLAIM`), counting a delivery; returns the entries transferred.
    async fn claim_entries(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
    ) -> Result<Vec<Delivered>, BrokerError>;
}

/// Looking at streams without consuming them: the command line (`history`, `tail`, `stats`,
/// `dlq`, `replay`), the admin endpoint and the lag metrics.
#[async_trait]
pub trait Inspect: Send + Sync + 'static {
    /// Entries of `stream` with ids in `start..=end`, at most `count`, oldest first.
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError>;

    /// Entries of `stream` with ids in `start..=end`, at most `count`, newest first
    /// (`XREVRANGE`).
    async fn rev_range(
        &self,
        stream: &str,
        end: EntryId,
        start: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError>;

    /// Number of entries in `stream` (0 when it does not exist).
    async fn len(&self, stream: &str) -> Result<u64, BrokerError>;

    /// Consumer groups of `stream` (empty when the stream does not exist).
    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, BrokerError>;

    /// A follower of streams outside any consumer group (`evhost tail`), with a connection of
    /// its own.
    fn follower(&self) -> Box<dyn StreamFollower>;
}

/// Follows streams with plain reads (`XREAD BLOCK`: no group, no acknowledgement) on a
/// connection of its own, so that a blocked read never delays other commands.
#[async_trait]
pub trait StreamFollower: Send {
    /// Reads up to `count` entries per stream with ids after the given ones, waiting up to
    /// `block` for the first; returns (stream, entry) pairs.
    ///
    /// # Errors
    ///
    /// When the broker fails or does not answer in time (the next read reconnects).
    async fn read(
        &mut self,
        after: &[(String, EntryId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, StreamEntry)>, BrokerError>;
}

/// A connection dedicated to blocking consumer-group reads.
#[async_trait]
pub trait GroupReader: Send {
    /// Reads up to `count` entries of `stream` for `consumer` in `group`, from where `from`
    /// says.
    async fn read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
    ) -> Result<Vec<Delivered>, BrokerError>;

    /// Reads up to `count` new entries without blocking, when a backlog is expected: what
    /// [`GroupReader::read`] of [`ReadFrom::New`] would return, in stream order. A reader may
    /// split the read to make it faster.
    async fn read_backlog(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivered>, BrokerError> {
        self.read(
            stream,
            group,
            consumer,
            ReadFrom::New { block: None },
            count,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Keyspace;

    /// `keys` lists every key in order; the typical commit of a consumer of the single layout
    /// (its dead letters, key-value entries and journal, settled on the event's stream) spans
    /// several slots, which is why that layout is for a single node.
    #[test]
    fn commit_keys_and_the_single_layout_slots() {
        let keyspace = Keyspace::single();
        let add = |stream: String| Op::Add {
            stream,
            fields: Vec::new(),
        };
        let commit = Commit {
            ops: vec![add(keyspace.dead_letters("payment"))],
            settlements: vec![Settlement {
                stream: keyspace.event_stream("AuctionEnded"),
                group: "payment".into(),
                consumer: "c".into(),
                id: EntryId::new(1, 0),
                ops: vec![
                    Op::Set {
                        key: keyspace.kv_key("payment", "total"),
                        value: b"1".to_vec(),
                    },
                    add(keyspace.journal("payment")),
                ],
                expects: Vec::new(),
            }],
        };
        let keys: Vec<&str> = commit.keys().collect();
        assert_eq!(
            keys,
            [
                "evhost:dlq:payment",
                "events:AuctionEnded",
                "evhost:kv:{payment}:total",
                "evhost:journal:payment",
            ]
        );
        assert!(!commit.in_one_slot());
        assert!(!keyspace.one_slot_per_partition());
        let kv_only = Commit {
            ops: vec![
                Op::Set {
                    key: keyspace.kv_key("payment", "a"),
                    value: Vec::new(),
                },
                Op::Delete {
                    key: keyspace.kv_key("payment", "b"),
                },
            ],
            settlements: Vec::new(),
        };
        assert!(kv_only.in_one_slot());
        assert!(Commit::default().in_one_slot());
    }
}
