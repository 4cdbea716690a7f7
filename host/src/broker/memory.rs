//! The embedded, in-process broker: Redis Streams semantics without a Redis server.
//!
//! [`MemoryBroker`] keeps streams, consumer groups and string keys in memory behind one mutex, so
//! every operation, a whole [`Commit`] included, is atomic. It follows Redis 7 wherever the
//! [`Broker`] trait exposes Redis behaviour:
//!
//! - Entry ids are `<unix ms>-<seq>` and strictly increase per stream, even when the clock goes
//!   back (the sequence number then counts up from the last id, as `XADD *` does).
//! - `create_group` creates a missing stream (`MKSTREAM`) and answers `false` for a group that
//!   already exists (`BUSYGROUP`).
//! - Reading new entries (`>`) moves the group's last-delivered id and records each entry in the
//!   group's pending entries list (PEL) under the reading consumer, delivered once. Reading the
//!   consumer's history ([`ReadFrom::Pending`]) counts as another delivery: the delivery count goes
//!   up and the idle time restarts.
//! - Claiming ([`Broker::claim_entries`], `XCLAIM`) takes over only entries idle long enough
//!   and counts a delivery.
//! - A [`Commit`] is validated before anything is written: a settlement for a missing group
//!   fails with [`BrokerError::NoGroup`] and leaves everything untouched.
//!
//! Where it differs from Redis: string keys ([`Broker::get`], [`Op::Set`], [`Op::Delete`]) and
//! streams live in separate maps, so [`Broker::scan_keys`] lists string keys only and a key may
//! share its name with a stream; nothing is persisted.
//!
//! Blocked readers wait on a [`Notify`] that every append signals; a woken reader checks again
//! and goes back to waiting when its stream got nothing new, until its block time runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::expect::{counter_add, counter_value};
use super::{
    Broker, BrokerError, Commit, CommitReport, Delivered, EntryId, Fields, GroupInfo, GroupReader,
    GroupStart, Inspect, Op, PendingEntry, ReadFrom, Settlement, StreamEntry, StreamFollower,
};

/// Keys per [`Broker::scan_keys`] page.
const SCAN_PAGE: usize = 100;

/// An in-process broker with the semantics of Redis Streams.
///
/// Cloning is cheap and every clone shares the same streams, groups and keys.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    /// The state and the wake-up signal, shared by every clone and every reader.
    shared: Arc<Shared>,
}

/// What the clones of one [`MemoryBroker`] share.
#[derive(Debug, Default)]
struct Shared {
    /// Everything the broker stores. Never held across an `.await`.
    state: Mutex<State>,
    /// Signalled after entries are appended, to wake blocked readers.
    added: Notify,
}

/// Streams and string keys.
#[derive(Debug, Default)]
struct State {
    /// Streams by name; sorted so that listing by prefix is a range scan.
    streams: BTreeMap<String, Stream>,
    /// String keys (`GET`/`SET`/`DEL`); sorted so that `scan_keys` pages are stable.
    keys: BTreeMap<String, Vec<u8>>,
}

/// One stream with its consumer groups.
#[derive(Debug, Default)]
struct Stream {
    /// The entries, oldest first.
    entries: BTreeMap<EntryId, Fields>,
    /// The last id ever generated, so new ids keep increasing even if entries disappear.
    last_id: EntryId,
    /// Consumer groups by name.
    groups: BTreeMap<String, Group>,
}

/// A consumer group of one stream.
#[derive(Debug)]
struct Group {
    /// Id of the last entry delivered to the group; `>` reads start after it.
    last_delivered: EntryId,
    /// Delivered but unacknowledged entries, by id.
    pel: BTreeMap<EntryId, Pending>,
    /// Consumers that were handed entries or read their history (counted by `groups`).
    consumers: BTreeSet<String>,
}

/// A pending entry: who holds it and how often it was delivered.
#[derive(Debug)]
struct Pending {
    /// The consumer that owns the entry.
    consumer: String,
    /// Deliveries so far, the last one included.
    deliveries: u32,
    /// When it was last delivered, to compute its idle time.
    delivered_at: Instant,
}

impl MemoryBroker {
    /// Creates an empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the state under the lock. A poisoned lock is recovered: every mutation
    /// validates before it writes, so a panic elsewhere leaves no half-applied change behind.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Wakes every blocked reader so that it looks for new entries.
    fn wake_readers(&self) {
        self.shared.added.notify_waiters();
    }
}

/// The id `XADD *` gives the entry after `last` at wall-clock time `now_ms`, or `None` when
/// `last` is the largest possible id.
fn next_id(last: EntryId, now_ms: u64) -> Option<EntryId> {
    if now_ms > last.ms {
        Some(EntryId::new(now_ms, 0))
    } else if last.seq < u64::MAX {
        Some(EntryId::new(last.ms, last.seq + 1))
    } else if last.ms < u64::MAX {
        Some(EntryId::new(last.ms + 1, 0))
    } else {
        None
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The error for a stream whose ids ran out.
fn ids_exhausted(stream: &str) -> BrokerError {
    BrokerError::Protocol(format!(
        "stream {stream:?} has exhausted the last possible entry id"
    ))
}

/// `count` as a limit, where 0 means no limit (as `XREADGROUP COUNT 0`).
fn read_limit(count: usize) -> usize {
    if count == 0 { usize::MAX } else { count }
}

impl State {
    /// The entries of `stream` and its group `group`, or [`BrokerError::NoGroup`].
    fn group_mut<'a>(
        &'a mut self,
        stream: &str,
        group: &str,
    ) -> Result<(&'a BTreeMap<EntryId, Fields>, &'a mut Group), BrokerError> {
        let no_group = || BrokerError::NoGroup {
            stream: stream.to_string(),
            group: group.to_string(),
        };
        let found = self.streams.get_mut(stream).ok_or_else(no_group)?;
        let group = found.groups.get_mut(group).ok_or_else(no_group)?;
        Ok((&found.entries, group))
    }

    fn create_group(&mut self, stream: &str, group: &str, start: GroupStart) -> bool {
        let found = self.streams.entry(stream.to_string()).or_default();
        if found.groups.contains_key(group) {
            return false;
        }
        let last_delivered = match start {
            GroupStart::Beginning => EntryId::ZERO,
            GroupStart::End => found.last_id,
        };
        found.groups.insert(
            group.to_string(),
            Group {
                last_delivered,
                pel: BTreeMap::new(),
                consumers: BTreeSet::new(),
            },
        );
        true
    }

    /// Appends one entry, creating the stream if needed.
    fn add(&mut self, stream: &str, fields: &Fields, now_ms: u64) -> Result<EntryId, BrokerError> {
        let last = self
            .streams
            .get(stream)
            .map_or(EntryId::ZERO, |s| s.last_id);
        let id = next_id(last, now_ms).ok_or_else(|| ids_exhausted(stream))?;
        self.append(stream, id, fields.clone());
        Ok(id)
    }

    /// Appends an entry whose id is known to be larger than the stream's last id.
    fn append(&mut self, stream: &str, id: EntryId, fields: Fields) {
        let found = self.streams.entry(stream.to_string()).or_default();
        found.entries.insert(id, fields);
        found.last_id = id;
    }

    /// `XREADGROUP ... >`: entries never delivered to the group.
    fn read_new(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        now: Instant,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let (entries, group) = self.group_mut(stream, group)?;
        let mut delivered = Vec::new();
        for (id, fields) in entries
            .range((Excluded(group.last_delivered), Unbounded))
            .take(read_limit(count))
        {
            // An id already pending (only possible after the group's id was moved back) changes
            // owner and starts over, as in Redis.
            group.pel.insert(
                *id,
                Pending {
                    consumer: consumer.to_string(),
                    deliveries: 1,
                    delivered_at: now,
                },
            );
            delivered.push(Delivered {
                entry: StreamEntry {
                    id: *id,
                    fields: fields.clone(),
                },
                deliveries: 1,
            });
        }
        if let Some(last) = delivered.last() {
            group.last_delivered = last.entry.id;
            // Like Redis 7, a `>` read that finds nothing does not create the consumer.
            remember_consumer(group, consumer);
        }
        Ok(delivered)
    }

    /// `XREADGROUP ... <after>`: the consumer's own pending entries, each delivered once more.
    fn read_pending(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
        now: Instant,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let (entries, group) = self.group_mut(stream, group)?;
        remember_consumer(group, consumer);
        let limit = read_limit(count);
        let mut delivered = Vec::new();
        for (id, pending) in group.pel.range_mut((Excluded(after), Unbounded)) {
            if delivered.len() >= limit {
                break;
            }
            if pending.consumer != consumer {
                continue;
            }
            // Deleted from the stream since it was delivered: nothing left to hand out.
            let Some(fields) = entries.get(id) else {
                continue;
            };
            pending.deliveries = pending.deliveries.saturating_add(1);
            pending.delivered_at = now;
            delivered.push(Delivered {
                entry: StreamEntry {
                    id: *id,
                    fields: fields.clone(),
                },
                deliveries: pending.deliveries,
            });
        }
        Ok(delivered)
    }

    /// Applies every op or none; returns the report and whether entries were appended.
    fn commit(
        &mut self,
        commit: &Commit,
        now_ms: u64,
    ) -> Result<(CommitReport, bool), BrokerError> {
        // Validate everything and choose the new entries' ids before writing anything.
        let mut last_ids: HashMap<&str, EntryId> = HashMap::new();
        let mut new_ids = Vec::new();
        let settlement_ops = commit
            .settlements
            .iter()
            .flat_map(|settlement| settlement.ops.iter());
        for op in commit.ops.iter().chain(settlement_ops) {
            match op {
                Op::Add { stream, .. } => {
                    let last = match last_ids.get(stream.as_str()) {
                        Some(last) => *last,
                        None => self
                            .streams
                            .get(stream)
                            .map_or(EntryId::ZERO, |s| s.last_id),
                    };
                    let id = next_id(last, now_ms).ok_or_else(|| ids_exhausted(stream))?;
                    last_ids.insert(stream, id);
                    new_ids.push(id);
                }
                Op::Set { .. } | Op::Delete { .. } | Op::Increment { .. } | Op::Remove { .. } => {}
            }
        }
        for settlement in &commit.settlements {
            self.check_group(&settlement.stream, &settlement.group)?;
        }
        // Ids are drawn in op order; a skipped settlement's adds leave a gap, as on Redis
        // where they would simply not be generated (ids stay strictly increasing either way).
        let mut new_ids = new_ids.into_iter();
        for op in &commit.ops {
            self.apply(op, &mut new_ids);
        }
        let mut report = CommitReport::default();
        // After a conflict, later settlements with ops wait too (see `Settlement`).
        let mut conflict_seen = false;
        for settlement in &commit.settlements {
            let owned = self
                .group_mut(&settlement.stream, &settlement.group)
                .ok()
                .and_then(|(_, group)| group.pel.get(&settlement.id))
                .is_some_and(|pending| pending.consumer == settlement.consumer);
            // Without ops, a plain acknowledgement: no ownership check (see `Settlement`).
            if settlement.ops.is_empty() {
                if let Ok((_, group)) = self.group_mut(&settlement.stream, &settlement.group) {
                    group.pel.remove(&settlement.id);
                }
                continue;
            }
            let holds = owned && !conflict_seen && self.preconditions_hold(settlement);
            if holds {
                for op in &settlement.ops {
                    self.apply(op, &mut new_ids);
                }
                if let Ok((_, group)) = self.group_mut(&settlement.stream, &settlement.group) {
                    group.pel.remove(&settlement.id);
                }
                continue;
            }
            for op in &settlement.ops {
                if matches!(op, Op::Add { .. }) {
                    new_ids.next();
                }
            }
            if owned {
                conflict_seen = true;
                report.conflicted.push(settlement.id);
            } else {
                report.skipped.push(settlement.id);
            }
        }
        Ok((report, !last_ids.is_empty()))
    }

    /// Whether every key the settlement expects still holds what was read, and every key it
    /// increments (and has not written before in it) holds a counter.
    fn preconditions_hold(&self, settlement: &Settlement) -> bool {
        let value = |key: &str| self.keys.get(key).map(Vec::as_slice);
        let unchanged = settlement
            .expects
            .iter()
            .all(|expect| expect.digest.matches(value(&expect.key)));
        let mut written = HashSet::new();
        unchanged
            && settlement.ops.iter().all(|op| match op {
                Op::Increment { key, delta } if !written.contains(key.as_str()) => {
                    written.insert(key.as_str());
                    counter_value(value(key))
                        .and_then(|current| counter_add(current, *delta))
                        .is_ok()
                }
                other => {
                    written.insert(other.key());
                    true
                }
            })
    }

    fn check_group(&self, stream: &str, group: &str) -> Result<(), BrokerError> {
        let exists = self
            .streams
            .get(stream)
            .is_some_and(|found| found.groups.contains_key(group));
        if exists {
            Ok(())
        } else {
            Err(BrokerError::NoGroup {
                stream: stream.to_string(),
                group: group.to_string(),
            })
        }
    }

    /// Applies one validated op; `new_ids` supplies the ids of appended entries.
    fn apply(&mut self, op: &Op, new_ids: &mut impl Iterator<Item = EntryId>) {
        match op {
            Op::Add { stream, fields } => {
                if let Some(id) = new_ids.next() {
                    self.append(stream, id, fields.clone());
                }
            }
            Op::Set { key, value } => {
                self.keys.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                self.keys.remove(key);
            }
            Op::Increment { key, delta } => {
                // Checked before (see `preconditions_hold`); a later op of the settlement that
                // made the value a non-counter was checked by the host when it was buffered.
                let current = counter_value(self.keys.get(key).map(Vec::as_slice)).unwrap_or(0);
                let sum = counter_add(current, *delta).unwrap_or(current);
                self.keys.insert(key.clone(), sum.to_string().into_bytes());
            }
            Op::Remove { stream, id } => {
                if let Some(found) = self.streams.get_mut(stream) {
                    found.entries.remove(id);
                }
            }
        }
    }

    fn scan_keys(&self, prefix: &str, cursor: u64) -> (Vec<String>, u64) {
        let skip = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut page: Vec<String> = with_prefix(&self.keys, prefix)
            .skip(skip)
            .take(SCAN_PAGE + 1)
            .cloned()
            .collect();
        if page.len() > SCAN_PAGE {
            page.truncate(SCAN_PAGE);
            let next = skip.saturating_add(SCAN_PAGE);
            (page, u64::try_from(next).unwrap_or(0))
        } else {
            (page, 0)
        }
    }

    /// Entries with ids in `start..=end`, at most `count`, oldest first or (`newest_first`)
    /// newest first.
    fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
        newest_first: bool,
    ) -> Vec<StreamEntry> {
        if start > end || count == 0 {
            return Vec::new();
        }
        let Some(found) = self.streams.get(stream) else {
            return Vec::new();
        };
        let entries = found.entries.range(start..=end);
        let entries: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(entries.rev())
        } else {
            Box::new(entries)
        };
        entries
            .take(count)
            .map(|(id, fields)| StreamEntry {
                id: *id,
                fields: fields.clone(),
            })
            .collect()
    }

    /// Up to `count` entries of each stream with ids after the given one (`XREAD`).
    fn entries_after(
        &self,
        after: &[(String, EntryId)],
        count: usize,
    ) -> Vec<(String, StreamEntry)> {
        let mut found = Vec::new();
        for (stream, id) in after {
            let Some(entries) = self.streams.get(stream) else {
                continue;
            };
            let newer = entries
                .entries
                .range((Excluded(*id), Unbounded))
                .take(count);
            found.extend(newer.map(|(id, fields)| {
                (
                    stream.clone(),
                    StreamEntry {
                        id: *id,
                        fields: fields.clone(),
                    },
                )
            }));
        }
        found
    }

    fn groups(&self, stream: &str) -> Vec<GroupInfo> {
        let Some(found) = self.streams.get(stream) else {
            return Vec::new();
        };
        found
            .groups
            .iter()
            .map(|(name, group)| GroupInfo {
                name: name.clone(),
                consumers: count_u64(group.consumers.len()),
                pending: count_u64(group.pel.len()),
                last_delivered: group.last_delivered,
                lag: Some(count_u64(
                    found
                        .entries
                        .range((Excluded(group.last_delivered), Unbounded))
                        .count(),
                )),
            })
            .collect()
    }

    fn pending(
        &mut self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
        now: Instant,
    ) -> Result<Vec<PendingEntry>, BrokerError> {
        let (_, group) = self.group_mut(stream, group)?;
        Ok(group
            .pel
            .iter()
            .filter(|(_, pending)| now.saturating_duration_since(pending.delivered_at) >= min_idle)
            .take(count)
            .map(|(id, pending)| PendingEntry {
                id: *id,
                consumer: pending.consumer.clone(),
                idle: now.saturating_duration_since(pending.delivered_at),
                deliveries: pending.deliveries,
            })
            .collect())
    }

    /// `XCLAIM stream group consumer min_idle ids...`: entries deleted from the stream are
    /// dropped from the pending list, as Redis 7 does.
    fn claim_entries(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
        now: Instant,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let (entries, group) = self.group_mut(stream, group)?;
        let mut claimed = Vec::new();
        for id in ids {
            let Some(pending) = group.pel.get_mut(id) else {
                continue;
            };
            if now.saturating_duration_since(pending.delivered_at) < min_idle {
                continue;
            }
            let Some(fields) = entries.get(id) else {
                group.pel.remove(id);
                continue;
            };
            pending.consumer = consumer.to_string();
            pending.deliveries = pending.deliveries.saturating_add(1);
            pending.delivered_at = now;
            claimed.push(Delivered {
                entry: StreamEntry {
                    id: *id,
                    fields: fields.clone(),
                },
                deliveries: pending.deliveries,
            });
        }
        if !claimed.is_empty() {
            remember_consumer(group, consumer);
        }
        Ok(claimed)
    }
}

/// Registers `consumer` in `group`. As in Redis 7.0, a consumer exists once it was handed
/// entries (by a read or a claim) or read its own history, even an empty one.
fn remember_consumer(group: &mut Group, consumer: &str) {
    if !group.consumers.contains(consumer) {
        group.consumers.insert(consumer.to_string());
    }
}

/// The keys of `map` that start with `prefix`, in order.
fn with_prefix<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    map.range::<str, _>((Included(prefix), Unbounded))
        .map(|(key, _)| key)
        .take_while(move |key| key.starts_with(prefix))
}

/// A collection size as `u64`.
fn count_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
    ) -> Result<bool, BrokerError> {
        Ok(self.with_state(|state| state.create_group(stream, group, start)))
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn reader(&self) -> Result<Box<dyn GroupReader>, BrokerError> {
        Ok(Box::new(MemoryReader {
            broker: self.clone(),
        }))
    }

    async fn add(&self, stream: &str, fields: &Fields) -> Result<EntryId, BrokerError> {
        let id = self.with_state(|state| state.add(stream, fields, unix_ms()))?;
        self.wake_readers();
        Ok(id)
    }

    async fn commit(&self, commit: &Commit) -> Result<CommitReport, BrokerError> {
        if commit.is_empty() {
            return Ok(CommitReport::default());
        }
        let (report, appended) = self.with_state(|state| state.commit(commit, unix_ms()))?;
        if appended {
            self.wake_readers();
        }
        Ok(report)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        Ok(self.with_state(|state| state.keys.get(key).cloned()))
    }

    async fn trim_before(&self, stream: &str, first_kept: EntryId) -> Result<u64, BrokerError> {
        Ok(self.with_state(|state| {
            let Some(found) = state.streams.get_mut(stream) else {
                return 0;
            };
            let kept = found.entries.split_off(&first_kept);
            let removed = found.entries.len();
            found.entries = kept;
            u64::try_from(removed).unwrap_or(u64::MAX)
        }))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        Ok(self.with_state(|state| {
            keys.iter()
                .map(|key| state.keys.get(key).cloned())
                .collect()
        }))
    }

    /// Lists string keys only (streams are not keys here). The cursor is the position of the
    /// page's first key among the matching keys, in sorted order.
    async fn scan_keys(
        &self,
        prefix: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, u64), BrokerError> {
        Ok(self.with_state(|state| state.scan_keys(prefix, cursor)))
    }

    async fn streams(&self, prefix: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.with_state(|state| with_prefix(&state.streams, prefix).cloned().collect()))
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<PendingEntry>, BrokerError> {
        let now = Instant::now();
        self.with_state(|state| state.pending(stream, group, min_idle, count, now))
    }

    async fn claim_entries(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
    ) -> Result<Vec<Delivered>, BrokerError> {
        let now = Instant::now();
        self.with_state(|state| state.claim_entries(stream, group, consumer, min_idle, ids, now))
    }
}

#[async_trait]
impl Inspect for MemoryBroker {
    async fn range(
        &self,
        stream: &str,
        start: EntryId,
        end: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        Ok(self.with_state(|state| state.range(stream, start, end, count, false)))
    }

    async fn rev_range(
        &self,
        stream: &str,
        end: EntryId,
        start: EntryId,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        Ok(self.with_state(|state| state.range(stream, start, end, count, true)))
    }

    async fn len(&self, stream: &str) -> Result<u64, BrokerError> {
        Ok(self.with_state(|state| {
            state
                .streams
                .get(stream)
                .map_or(0, |found| count_u64(found.entries.len()))
        }))
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, BrokerError> {
        Ok(self.with_state(|state| state.groups(stream)))
    }

    fn follower(&self) -> Box<dyn StreamFollower> {
        Box::new(MemoryFollower {
            broker: self.clone(),
        })
    }
}

/// A [`StreamFollower`] of a [`MemoryBroker`]; waits for the broker's wake-up signal.
struct MemoryFollower {
    /// The broker read from.
    broker: MemoryBroker,
}

#[async_trait]
impl StreamFollower for MemoryFollower {
    async fn read(
        &mut self,
        after: &[(String, EntryId)],
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, StreamEntry)>, BrokerError> {
        let deadline = Instant::now().checked_add(block);
        loop {
            // Registered before looking, as in `MemoryReader::read`.
            let mut added = pin!(self.broker.shared.added.notified());
            added.as_mut().enable();
            let found = self
                .broker
                .with_state(|state| state.entries_after(after, count));
            if !found.is_empty() {
                return Ok(found);
            }
            match deadline {
                None => added.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, added).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }
}

/// A [`GroupReader`] of a [`MemoryBroker`]; blocking reads wait for the broker's wake-up signal.
struct MemoryReader {
    /// The broker read from.
    broker: MemoryBroker,
}

#[async_trait]
impl GroupReader for MemoryReader {
    async fn read(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: ReadFrom,
        count: usize,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let block = match from {
            ReadFrom::New { block } => block,
            ReadFrom::Pending { after } => {
                let now = Instant::now();
                return self.broker.with_state(|state| {
                    state.read_pending(stream, group, consumer, after, count, now)
                });
            }
        };
        // `None` inside `Some`: a block time too long to represent, i.e. wait for ever.
        let deadline = block.map(|block| Instant::now().checked_add(block));
        loop {
            // Register for the wake-up before looking, so an append between the look and the
            // wait is not missed.
            let mut added = pin!(self.broker.shared.added.notified());
            added.as_mut().enable();
            let now = Instant::now();
            let delivered = self
                .broker
                .with_state(|state| state.read_new(stream, group, consumer, count, now))?;
            if !delivered.is_empty() {
                return Ok(delivered);
            }
            match deadline {
                None => return Ok(delivered),
                Some(None) => added.await,
                Some(Some(deadline)) => {
                    if now >= deadline || tokio::time::timeout_at(deadline, added).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::conformance;

    fn ids_of(delivered: &[Delivered]) -> Vec<EntryId> {
        delivered
            .iter()
            .map(|delivered| delivered.entry.id)
            .collect()
    }

    fn fields(text: &str) -> Fields {
        vec![("data".to_string(), text.as_bytes().to_vec())]
    }

    /// Ids follow the clock, count up within a millisecond, and keep increasing when the clock
    /// goes back or a sequence overflows.
    #[test]
    fn generates_ids_like_redis() {
        assert_eq!(next_id(EntryId::ZERO, 1_000), Some(EntryId::new(1_000, 0)));
        assert_eq!(
            next_id(EntryId::new(1_000, 0), 1_000),
            Some(EntryId::new(1_000, 1))
        );
        assert_eq!(
            next_id(EntryId::new(1_000, 4), 1_001),
            Some(EntryId::new(1_001, 0))
        );
        assert_eq!(
            next_id(EntryId::new(1_000, 4), 900),
            Some(EntryId::new(1_000, 5)),
            "a clock that went back must not produce a smaller id"
        );
        assert_eq!(
            next_id(EntryId::new(1_000, u64::MAX), 1_000),
            Some(EntryId::new(1_001, 0))
        );
        assert_eq!(next_id(EntryId::MAX, 5), None);
    }

    /// Many appends in a tight loop get strictly increasing ids close to the wall clock.
    #[tokio::test]
    async fn add_ids_strictly_increase() {
        let broker = MemoryBroker::new();
        let before = unix_ms();
        let mut last = EntryId::ZERO;
        for n in 0..2_000 {
            let id = broker.add("s", &fields(&n.to_string())).await.expect("add");
            assert!(id > last, "{id} after {last}");
            last = id;
        }
        assert!(last.ms >= before && last.ms <= unix_ms());
        assert_eq!(broker.len("s").await.expect("len"), 2_000);
    }

    /// A commit's ids continue the stream's sequence and a failed commit uses none of them.
    #[test]
    fn commit_ids_continue_the_stream() {
        let mut state = State::default();
        let first = state.add("s", &fields("a"), 50).expect("add");
        let commit = Commit {
            ops: vec![
                Op::Add {
                    stream: "s".into(),
                    fields: fields("b"),
                },
                Op::Add {
                    stream: "s".into(),
                    fields: fields("c"),
                },
            ],
            settlements: Vec::new(),
        };
        assert!(state.commit(&commit, 40).expect("commit").1);
        let ids: Vec<EntryId> = state
            .range("s", EntryId::ZERO, EntryId::MAX, 10, false)
            .into_iter()
            .map(|entry| entry.id)
            .collect();
        assert_eq!(ids, vec![first, EntryId::new(50, 1), EntryId::new(50, 2)]);
    }

    /// A reader blocked on a stream wakes up as soon as an entry is added by another task,
    /// long before its block time.
    #[tokio::test]
    async fn blocked_read_wakes_on_add() {
        let broker = MemoryBroker::new();
        assert!(
            broker
                .create_group("s", "g", GroupStart::End)
                .await
                .expect("create group")
        );
        let mut reader = broker.reader().await.expect("reader");
        let started = Instant::now();
        let read = tokio::spawn(async move {
            reader
                .read(
                    "s",
                    "g",
                    "c",
                    ReadFrom::New {
                        block: Some(Duration::from_secs(30)),
                    },
                    10,
                )
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = broker.add("s", &fields("x")).await.expect("add");
        let delivered = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("the blocked read must wake up")
            .expect("read task")
            .expect("read");
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].entry.id, id);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Appends to other streams wake a blocked reader, which then goes back to waiting and
    /// returns nothing once its block time is over.
    #[tokio::test]
    async fn blocked_read_ignores_other_streams() {
        let broker = MemoryBroker::new();
        broker
            .create_group("s", "g", GroupStart::End)
            .await
            .expect("create group");
        let mut reader = broker.reader().await.expect("reader");
        let block = Duration::from_millis(100);
        let started = Instant::now();
        let read = tokio::spawn(async move {
            reader
                .read("s", "g", "c", ReadFrom::New { block: Some(block) }, 10)
                .await
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            broker.add("other", &fields("x")).await.expect("add");
        }
        let delivered = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("bounded")
            .expect("read task")
            .expect("read");
        assert!(delivered.is_empty());
        assert!(started.elapsed() >= block);
    }

    /// As in Redis 7, a consumer is counted once it was handed entries or read its history:
    /// `>` reads that find nothing (blocking or not) and claims that get nothing do not count.
    #[tokio::test]
    async fn consumers_are_created_like_redis() {
        let broker = MemoryBroker::new();
        broker
            .create_group("s", "g", GroupStart::End)
            .await
            .expect("create group");
        let consumers = || async { broker.groups("s").await.expect("groups")[0].consumers };
        let mut reader = broker.reader().await.expect("reader");
        for block in [None, Some(Duration::from_millis(10))] {
            let read = reader
                .read("s", "g", "a", ReadFrom::New { block }, 10)
                .await
                .expect("read");
            assert!(read.is_empty());
        }
        let claimed = broker
            .claim_entries("s", "g", "b", Duration::ZERO, &[EntryId::new(1, 0)])
            .await
            .expect("claim");
        assert!(claimed.is_empty());
        assert_eq!(consumers().await, 0);
        let history = reader
            .read(
                "s",
                "g",
                "c",
                ReadFrom::Pending {
                    after: EntryId::ZERO,
                },
                10,
            )
            .await
            .expect("read history");
        assert!(history.is_empty());
        assert_eq!(consumers().await, 1);
        broker.add("s", &fields("x")).await.expect("add");
        let read = reader
            .read("s", "g", "a", ReadFrom::New { block: None }, 10)
            .await
            .expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(consumers().await, 2);
    }

    /// Pending entries whose stream entry was deleted are skipped by history reads and dropped
    /// from the PEL by claims.
    #[tokio::test]
    async fn deleted_entries_are_skipped_and_dropped() {
        let broker = MemoryBroker::new();
        broker
            .create_group("s", "g", GroupStart::Beginning)
            .await
            .expect("create group");
        let a = broker.add("s", &fields("a")).await.expect("add");
        let b = broker.add("s", &fields("b")).await.expect("add");
        let mut reader = broker.reader().await.expect("reader");
        let read = reader
            .read("s", "g", "c", ReadFrom::New { block: None }, 10)
            .await
            .expect("read");
        assert_eq!(read.len(), 2);
        broker.with_state(|state| {
            state
                .streams
                .get_mut("s")
                .expect("stream")
                .entries
                .remove(&a)
        });
        let again = reader
            .read(
                "s",
                "g",
                "c",
                ReadFrom::Pending {
                    after: EntryId::ZERO,
                },
                10,
            )
            .await
            .expect("read pending");
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].entry.id, again[0].deliveries), (b, 2));
        let claimed = broker
            .claim_entries("s", "g", "d", Duration::ZERO, &[a, b])
            .await
            .expect("claim");
        assert_eq!(ids_of(&claimed), [b]);
        let pending = broker
            .pending("s", "g", Duration::ZERO, 10)
            .await
            .expect("pending");
        assert_eq!(pending.len(), 1, "the deleted entry left the PEL");
    }

    /// The shared consumer-group conformance suite passes on the in-memory broker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        conformance::run_all(&MemoryBroker::new()).await;
    }
}
