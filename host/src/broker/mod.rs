//! The message broker abstraction: streams, consumer groups, pending entries and atomic commits.
//!
//! Two implementations share the [`Broker`] trait: [`redis::RedisBroker`] (the real thing) and
//! [`memory::MemoryBroker`] (an embedded, in-process broker with the same semantics, used by
//! `evhost demo` and by tests that do not need Redis). The conformance tests run the same cases
//! against both.

pub mod conformance;
pub mod entry_id;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use entry_id::EntryId;

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
    /// The consumer's own pending entries (`XREADGROUP ... 0`): delivered before, not acked.
    Pending,
    /// Entries never delivered to the group (`XREADGROUP ... >`).
    New,
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
    /// Delete one entry of a stream (`XDEL`).
    Remove {
        /// The stream.
        stream: String,
        /// The entry.
        id: EntryId,
    },
    /// Acknowledge entries of a group (`XACK`), whoever holds them.
    Ack {
        /// Stream the entries belong to.
        stream: String,
        /// The consumer group.
        group: String,
        /// Entries to acknowledge.
        ids: Vec<EntryId>,
    },
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
    /// Writes caused by handling it (`Add`, `Set`, `Delete`, `Remove`; no acks).
    pub ops: Vec<Op>,
}

/// Writes applied all together or not at all: first `ops`, then each settlement in order.
///
/// On Redis this is one Lua script, which (unlike `MULTI`/`EXEC`) can check that consumer
/// groups exist and that entries are still owned before writing anything; a commit of only
/// settlements without ops, of one stream and group, is one `XACK`.
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
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Settlements not applied because their entry was no longer pending for the consumer.
    pub skipped: Vec<EntryId>,
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

/// Result of an `XAUTOCLAIM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Where the next scan should start (`0-0` when the scan is complete).
    pub next: EntryId,
    /// Entries now owned by the claiming consumer.
    pub entries: Vec<Delivered>,
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
    /// The broker answered something this code cannot interpret.
    #[error("unexpected reply from broker: {0}")]
    Protocol(String),
}

/// A broker of streams with consumer groups.
///
/// Every method is safe to call concurrently. Blocking reads go through a [`GroupReader`],
/// which owns a dedicated connection so that a `BLOCK`ed read never delays other commands.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
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

    /// Opens a reader with its own connection for blocking group reads.
    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError>;

    /// Appends an entry to a stream and returns its id.
    async fn add(&self, stream: &str, fields: &Fields) -> Result<EntryId, BrokerError>;

    /// Applies every write of `commit` atomically, in order, and reports the settlements it
    /// skipped.
    ///
    /// Fails without writing anything when a group named by an `Ack` or a settlement is missing.
    async fn commit(&self, commit: &Commit) -> Result<CommitReport, BrokerError>;

    /// Reads a key.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError>;

    /// Lists keys starting with `prefix`, one page at a time: returns the keys and the cursor of
    /// the next page (`0` when done). Start with cursor `0`.
    async fn scan_keys(&self, prefix: &str, cursor: u64)
    -> Result<(Vec<String>, u64), BrokerError>;

    /// Names of all streams whose key starts with `prefix`.
    async fn streams(&self, prefix: &str) -> Result<Vec<String>, BrokerError>;

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

    /// Transfers pending entries idle for at least `min_idle` to `consumer` (`XAUTOCLAIM`),
    /// scanning from `start`, at most `count` entries.
    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> Result<Claimed, BrokerError>;
}

/// A connection dedicated to blocking consumer-group reads.
#[async_trait]
pub trait GroupReader: Send {
    /// Reads up to `count` entries of `stream` for `consumer` in `group`.
    ///
    /// With [`ReadFrom::New`] and a `block` duration, waits up to that long for new entries.
    /// With [`ReadFrom::Pending`], returns the consumer's own pending entries after `after`
    /// (use [`EntryId::ZERO`] to start), never blocking.
    #[allow(clippy::too_many_arguments)]
    async fn read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        after: EntryId,
        count: usize,
        block: Option<Duration>,
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
            ReadFrom::New,
            EntryId::ZERO,
            count,
            None,
        )
        .await
    }
}
