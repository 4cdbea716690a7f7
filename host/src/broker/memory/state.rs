//! The memory broker's state: streams with their consumer groups and pending entries, string
//! keys, and every operation on them, each applied under the broker's one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::broker::expect::{counter_add, counter_value};
use crate::broker::{
    BrokerError, Commit, CommitReport, Delivered, EntryId, Fields, GroupInfo, GroupStart, Op,
    PendingEntry, Settlement, StreamEntry,
};

/// Keys per [`Broker::scan_keys`](crate::broker::Broker::scan_keys) page.
const SCAN_PAGE: usize = 100;

/// Streams and string keys.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Streams by name; sorted so that listing by prefix is a range scan.
    pub(super) streams: BTreeMap<String, Stream>,
    /// String keys (`GET`/`SET`/`DEL`); sorted so that `scan_keys` pages are stable.
    pub(super) keys: BTreeMap<String, Vec<u8>>,
    /// Marks of [`append_once`](crate::broker::Broker::append_once), with when they expire.
    pub(super) marks: HashMap<String, Instant>,
    /// When each lease (a string key) expires.
    pub(super) lease_expiry: HashMap<String, Instant>,
    /// Sets and roll calls.
    pub(super) members: super::members::Members,
}

/// One stream with its consumer groups.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// The entries, oldest first.
    pub(super) entries: BTreeMap<EntryId, Fields>,
    /// The last id ever generated, so new ids keep increasing even if entries disappear.
    pub(super) last_id: EntryId,
    /// Consumer groups by name.
    pub(super) groups: BTreeMap<String, Group>,
}

/// A consumer group of one stream.
#[derive(Debug)]
pub(super) struct Group {
    /// Id of the last entry delivered to the group; `>` reads start after it.
    pub(super) last_delivered: EntryId,
    /// Delivered but unacknowledged entries, by id.
    pub(super) pel: BTreeMap<EntryId, Pending>,
    /// Consumers that were handed entries or read their history (counted by `groups`).
    pub(super) consumers: BTreeSet<String>,
}

/// A pending entry: who holds it and how often it was delivered.
#[derive(Debug)]
pub(super) struct Pending {
    /// The consumer that owns the entry.
    pub(super) consumer: String,
    /// Deliveries so far, the last one included.
    pub(super) deliveries: u32,
    /// When it was last delivered, to compute its idle time.
    pub(super) delivered_at: Instant,
}

/// The id `XADD *` gives the entry after `last` at wall-clock time `now_ms`, or `None` when
/// `last` is the largest possible id.
pub(super) fn next_id(last: EntryId, now_ms: u64) -> Option<EntryId> {
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
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The error for a stream whose ids ran out.
pub(super) fn ids_exhausted(stream: &str) -> BrokerError {
    BrokerError::Protocol(format!(
        "stream {stream:?} has exhausted the last possible entry id"
    ))
}

/// `count` as a limit, where 0 means no limit (as `XREADGROUP COUNT 0`).
pub(super) fn read_limit(count: usize) -> usize {
    if count == 0 { usize::MAX } else { count }
}

impl State {
    /// The entries of `stream` and its group `group`, or [`BrokerError::NoGroup`].
    pub(super) fn group_mut<'a>(
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

    pub(super) fn create_group(&mut self, stream: &str, group: &str, start: GroupStart) -> bool {
        let found = self.streams.entry(stream.to_string()).or_default();
        if found.groups.contains_key(group) {
            return false;
        }
        let last_delivered = match start {
            GroupStart::Beginning => EntryId::ZERO,
            GroupStart::End => found.last_id,
            GroupStart::After(id) => id,
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
    pub(super) fn add(
        &mut self,
        stream: &str,
        fields: &Fields,
        now_ms: u64,
    ) -> Result<EntryId, BrokerError> {
        let last = self
            .streams
            .get(stream)
            .map_or(EntryId::ZERO, |s| s.last_id);
        let id = next_id(last, now_ms).ok_or_else(|| ids_exhausted(stream))?;
        self.append(stream, id, fields.clone());
        Ok(id)
    }

    /// Appends an entry whose id is known to be larger than the stream's last id.
    pub(super) fn append(&mut self, stream: &str, id: EntryId, fields: Fields) {
        let found = self.streams.entry(stream.to_string()).or_default();
        found.entries.insert(id, fields);
        found.last_id = id;
    }

    /// `XREADGROUP ... >`: entries never delivered to the group.
    pub(super) fn read_new(
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
    pub(super) fn read_pending(
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
    pub(super) fn commit(
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
                Op::Fence { key, owner } => {
                    self.expire_leases(Instant::now());
                    if self.keys.get(key).map(Vec::as_slice) != Some(owner.as_bytes()) {
                        return Err(BrokerError::Fenced {
                            key: key.clone(),
                            owner: owner.clone(),
                        });
                    }
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
    pub(super) fn preconditions_hold(&self, settlement: &Settlement) -> bool {
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

    pub(super) fn check_group(&self, stream: &str, group: &str) -> Result<(), BrokerError> {
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
    pub(super) fn apply(&mut self, op: &Op, new_ids: &mut impl Iterator<Item = EntryId>) {
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
            Op::Fence { .. } => {}
        }
    }

    /// Drops the leases that expired by `now`.
    pub(super) fn expire_leases(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .lease_expiry
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.lease_expiry.remove(&key);
            self.keys.remove(&key);
        }
    }

    /// Takes or renews lease `key` for `owner` until `now + ttl`; whether `owner` holds it.
    pub(super) fn acquire_lease(
        &mut self,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        self.expire_leases(now);
        match self.keys.get(key) {
            Some(holder) if holder.as_slice() != owner.as_bytes() => false,
            _ => {
                self.keys.insert(key.to_string(), owner.as_bytes().to_vec());
                self.lease_expiry.insert(key.to_string(), now + ttl);
                true
            }
        }
    }

    /// Gives lease `key` up if `owner` holds it.
    pub(super) fn release_lease(&mut self, key: &str, owner: &str, now: Instant) -> bool {
        self.expire_leases(now);
        if self.keys.get(key).map(Vec::as_slice) != Some(owner.as_bytes()) {
            return false;
        }
        self.keys.remove(key);
        self.lease_expiry.remove(key);
        true
    }

    pub(super) fn scan_keys(&self, prefix: &str, cursor: u64) -> (Vec<String>, u64) {
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
    pub(super) fn range(
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
    pub(super) fn entries_after(
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

    pub(super) fn groups(&self, stream: &str) -> Vec<GroupInfo> {
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

    pub(super) fn pending(
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
    pub(super) fn claim_entries(
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
pub(super) fn remember_consumer(group: &mut Group, consumer: &str) {
    if !group.consumers.contains(consumer) {
        group.consumers.insert(consumer.to_string());
    }
}

/// The keys of `map` that start with `prefix`, in order.
pub(super) fn with_prefix<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    map.range::<str, _>((Included(prefix), Unbounded))
        .map(|(key, _)| key)
        .take_while(move |key| key.starts_with(prefix))
}

/// A collection size as `u64`.
pub(super) fn count_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}
