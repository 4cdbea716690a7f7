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
//!
//! `state.rs` holds the streams, groups and keys and every operation on them; this file shares
//! them behind the mutex and implements the broker traits.

mod members;
mod state;

use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Broker, BrokerError, Commit, CommitReport, Delivered, EntryId, Fields, GroupInfo, GroupReader,
    GroupStart, Inspect, PendingEntry, ReadFrom, StreamEntry, StreamFollower,
};
use state::{State, count_u64, unix_ms, with_prefix};

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

    async fn set_if_absent(&self, key: &str, value: &[u8]) -> Result<bool, BrokerError> {
        Ok(self.with_state(|state| {
            if state.keys.contains_key(key) {
                return false;
            }
            state.keys.insert(key.to_string(), value.to_vec());
            true
        }))
    }

    async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        Ok(self.with_state(|state| state.acquire_lease(key, owner, ttl, now)))
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<bool, BrokerError> {
        let now = Instant::now();
        Ok(self.with_state(|state| state.release_lease(key, owner, now)))
    }

    async fn add_members(&self, key: &str, members: &[String]) -> Result<(), BrokerError> {
        self.with_state(|state| state.members.add(key, members));
        Ok(())
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.with_state(|state| state.members.of(key)))
    }

    async fn heartbeat(&self, key: &str, member: &str, ttl: Duration) -> Result<u32, BrokerError> {
        let now = Instant::now();
        Ok(self.with_state(|state| state.members.heartbeat(key, member, ttl, now)))
    }

    async fn leave(&self, key: &str, member: &str) -> Result<(), BrokerError> {
        self.with_state(|state| state.members.leave(key, member));
        Ok(())
    }

    async fn append_once(
        &self,
        stream: &str,
        fields: &Fields,
        mark: &str,
        mark_ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let appended = self.with_state(|state| {
            state.marks.retain(|_, expires| *expires > now);
            if state.marks.contains_key(mark) {
                return Ok(false);
            }
            state.add(stream, fields, unix_ms())?;
            state.marks.insert(mark.to_string(), now + mark_ttl);
            Ok::<_, BrokerError>(true)
        })?;
        if appended {
            self.wake_readers();
        }
        Ok(appended)
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
    use super::state::next_id;
    use super::*;
    use crate::broker::Op;
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
