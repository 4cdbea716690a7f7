//! The consumer-group conformance suite: the same cases, run against every [`Broker`].
//!
//! Each case takes a broker and a prefix, creates streams and keys only under that prefix, and
//! panics with a message naming the stream and what differed when the broker does not behave
//! like Redis 7. [`run_all`] gives every case a prefix of its own that is unique to the run, so
//! the suite can run again and again against the same Redis without cleaning up.
//!
//! A broker's test module runs the whole suite with
//! `conformance::run_all(&broker).await` in a `#[tokio::test]`; a failing case can be run alone
//! by calling its function with any prefix not used before.
//!
//! Timing: sleeps and block times stay at or under 200 ms, and every wait is bounded, so a broker
//! that never wakes a blocked reader fails within seconds instead of hanging.

mod values;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    Broker, BrokerError, Commit, Delivered, EntryId, Fields, GroupInfo, GroupReader, GroupStart,
    Op, ReadFrom, Settlement, StreamEntry,
};

/// Upper bound for any single case step that waits: a broken wake-up fails instead of hanging.
const GUARD: Duration = Duration::from_secs(2);
/// Block time of reads that are expected to be woken up early.
const WAKE_BLOCK: Duration = Duration::from_millis(200);
/// Delay before the entry that wakes a blocked reader is added.
const WAKE_DELAY: Duration = Duration::from_millis(50);
/// Block time of reads that are expected to time out empty.
const EMPTY_BLOCK: Duration = Duration::from_millis(150);
/// How much earlier than its block time a timed-out read may return (clock granularity).
const EMPTY_SLACK: Duration = Duration::from_millis(30);
/// Idle time required by claims in [`claim`].
const CLAIM_IDLE: Duration = Duration::from_millis(50);

/// Runs every case, each under a fresh prefix unique to this run.
pub async fn run_all(broker: &dyn Broker) {
    let run = run_prefix();
    let prefix = |case: &str| format!("{run}:{case}:");
    group_creation(broker, &prefix("group_creation")).await;
    read_new_once(broker, &prefix("read_new_once")).await;
    backlog_read(broker, &prefix("backlog_read")).await;
    fan_out(broker, &prefix("fan_out")).await;
    load_sharing(broker, &prefix("load_sharing")).await;
    ack(broker, &prefix("ack")).await;
    redelivery(broker, &prefix("redelivery")).await;
    blocking_read(broker, &prefix("blocking_read")).await;
    commit_atomicity(broker, &prefix("commit_atomicity")).await;
    no_group(broker, &prefix("no_group")).await;
    claim(broker, &prefix("claim")).await;
    range_and_len(broker, &prefix("range_and_len")).await;
    streams_by_prefix(broker, &prefix("streams_by_prefix")).await;
    keys(broker, &prefix("keys")).await;
    settlements(broker, &prefix("settlements")).await;
    claim_by_id(broker, &prefix("claim_by_id")).await;
    follow(broker, &prefix("follow")).await;
    values::read_checks(broker, &prefix("read_checks")).await;
    values::counters(broker, &prefix("counters")).await;
    values::get_many(broker, &prefix("get_many")).await;
    values::once_only(broker, &prefix("once_only")).await;
    values::leases(broker, &prefix("leases")).await;
    values::members(broker, &prefix("members")).await;
    trim(broker, &prefix("trim")).await;
}

/// `trim_before` deletes the entries before an id and counts them; a missing stream trims
/// nothing; new entries still get larger ids.
pub async fn trim(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 5).await;
    assert_eq!(ok("trim_before", broker.trim_before(&s, ids[3]).await), 3);
    let left = ok(
        "range",
        broker.range(&s, EntryId::ZERO, EntryId::MAX, 10).await,
    );
    assert_eq!(
        entry_ids(&left),
        ids[3..],
        "{s}: the entries from the id on are kept"
    );
    assert_eq!(ok("trim_before", broker.trim_before(&s, ids[3]).await), 0);
    let missing = format!("{prefix}missing");
    assert_eq!(
        ok("trim_before", broker.trim_before(&missing, ids[3]).await),
        0
    );
    let newer = ok("add", broker.add(&s, &numbered(9)).await);
    assert!(newer > ids[4], "{s}: ids keep increasing");
}

/// A follower reads the entries after the given ids of each stream, waits for new ones when
/// there are none, and comes back empty when its block time runs out.
pub async fn follow(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let other = format!("{prefix}other");
    let missing = format!("{prefix}missing");
    let ids = add_n(broker, &s, 3).await;
    let mut follower = broker.follower();
    let after = |id: EntryId| {
        vec![
            (s.clone(), id),
            (other.clone(), EntryId::ZERO),
            (missing.clone(), EntryId::ZERO),
        ]
    };
    let read = tokio::time::timeout(GUARD, follower.read(&after(ids[0]), 10, WAKE_BLOCK))
        .await
        .unwrap_or_else(|_| panic!("{s}: a follower read with entries must not hang"));
    let read = ok("follow", read);
    let seen: Vec<(&str, EntryId)> = read
        .iter()
        .map(|(stream, entry)| (stream.as_str(), entry.id))
        .collect();
    assert_eq!(
        seen,
        [(s.as_str(), ids[1]), (s.as_str(), ids[2])],
        "{s}: the entries after the given id"
    );
    assert_eq!(read[0].1.fields, numbered(1), "{s}: fields must round-trip");

    let started = Instant::now();
    let empty = ok(
        "follow",
        follower.read(&after(ids[2]), 10, EMPTY_BLOCK).await,
    );
    assert!(empty.is_empty(), "{s}: nothing new: {empty:?}");
    assert!(
        started.elapsed() + EMPTY_SLACK >= EMPTY_BLOCK,
        "{s}: an empty follower read waits its block time"
    );

    let wake = {
        let other = other.clone();
        async move {
            tokio::time::sleep(WAKE_DELAY).await;
            ok("add", broker.add(&other, &numbered(9)).await)
        }
    };
    let newest = after(ids[2]);
    let (woken, added) = tokio::join!(
        tokio::time::timeout(GUARD, follower.read(&newest, 10, WAKE_BLOCK)),
        wake
    );
    let woken = ok(
        "follow",
        woken.unwrap_or_else(|_| panic!("{other}: a woken follower read must not hang")),
    );
    let woken: Vec<(&str, EntryId)> = woken
        .iter()
        .map(|(stream, entry)| (stream.as_str(), entry.id))
        .collect();
    assert_eq!(
        woken,
        [(other.as_str(), added)],
        "{other}: an entry added while the follower waits"
    );
}

/// A settlement applies its effects and acks its entry only while the entry is pending for
/// the settling consumer: after another consumer claimed it, or once acked, it is skipped and
/// none of its effects happen; unconditional ops of the same commit still apply.
pub async fn settlements(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let out = format!("{prefix}out");
    let ids = add_n(broker, &s, 2).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c1", 10).await.len(), 2);
    // c2 takes the second entry over (c1 was presumed dead).
    let taken = ok(
        "claim_entries",
        broker
            .claim_entries(&s, "g", "c2", Duration::ZERO, &ids[1..])
            .await,
    );
    assert_eq!(ids_of(&taken), ids[1..], "{s}: claimed by id");
    let settle = |id: EntryId, key: &str| Settlement {
        stream: s.clone(),
        group: "g".into(),
        consumer: "c1".into(),
        id,
        ops: vec![add_op(&out, 7), set_op(key, b"v")],
        expects: Vec::new(),
    };
    let first_key = format!("{prefix}k1");
    let second_key = format!("{prefix}k2");
    let report = ok(
        "commit",
        broker
            .commit(&Commit {
                ops: vec![set_op(&format!("{prefix}always"), b"1")],
                settlements: vec![settle(ids[0], &first_key), settle(ids[1], &second_key)],
            })
            .await,
    );
    assert_eq!(
        report.skipped,
        ids[1..],
        "{s}: the entry owned by c2 is skipped"
    );
    assert_eq!(
        ok("len", broker.len(&out).await),
        1,
        "{out}: only the owned entry's add"
    );
    assert!(
        ok("get", broker.get(&first_key).await).is_some(),
        "{first_key}: set"
    );
    assert!(
        ok("get", broker.get(&second_key).await).is_none(),
        "{second_key}: not set"
    );
    assert!(ok("get", broker.get(&format!("{prefix}always")).await).is_some());
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids[1..],
        "{s}: first acked"
    );
    // Settling an entry that is already acknowledged does nothing.
    let again = ok(
        "commit",
        broker
            .commit(&Commit {
                ops: Vec::new(),
                settlements: vec![settle(ids[0], &second_key)],
            })
            .await,
    );
    assert_eq!(again.skipped, ids[..1]);
    assert_eq!(ok("len", broker.len(&out).await), 1, "{out}: no second add");
    // A settlement without ops is a plain acknowledgement: it acks the entry c2 holds, and
    // c2's own settlement of it, with effects, is then the skipped one.
    let ack_only = ok(
        "commit",
        broker
            .commit(&Commit {
                ops: Vec::new(),
                settlements: vec![Settlement {
                    ops: Vec::new(),
                    ..settle(ids[1], &second_key)
                }],
            })
            .await,
    );
    assert!(ack_only.skipped.is_empty(), "{s}: an ack is never skipped");
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    assert!(
        pending.is_empty(),
        "{s}: the ack-only settlement acked c2's entry"
    );
    let ack_only = |group: &str| Commit {
        ops: Vec::new(),
        settlements: vec![Settlement {
            group: group.into(),
            ops: Vec::new(),
            ..settle(ids[1], &second_key)
        }],
    };
    let repeated = ok("commit", broker.commit(&ack_only("g")).await);
    assert!(
        repeated.skipped.is_empty(),
        "{s}: acknowledging an acknowledged entry again is harmless"
    );
    let no_group = broker.commit(&ack_only("nope")).await;
    assert!(
        matches!(&no_group, Err(BrokerError::NoGroup { group, .. }) if group == "nope"),
        "{s}: an ack-only commit for a missing group fails with NoGroup: {no_group:?}"
    );
    let late = ok(
        "commit",
        broker
            .commit(&Commit {
                ops: Vec::new(),
                settlements: vec![Settlement {
                    consumer: "c2".into(),
                    ..settle(ids[1], &second_key)
                }],
            })
            .await,
    );
    assert_eq!(
        late.skipped,
        ids[1..],
        "{s}: c2's settlement comes too late"
    );
    assert_eq!(
        ok("len", broker.len(&out).await),
        1,
        "{out}: c2's add not applied"
    );
    // A settlement for a missing group fails the whole commit.
    let missing = broker
        .commit(&Commit {
            ops: vec![set_op(&format!("{prefix}never"), b"1")],
            settlements: vec![Settlement {
                group: "nope".into(),
                ..settle(ids[1], &second_key)
            }],
        })
        .await;
    assert!(
        matches!(missing, Err(BrokerError::NoGroup { .. })),
        "{s}: {missing:?}"
    );
    assert!(
        ok("get", broker.get(&format!("{prefix}never")).await).is_none(),
        "nothing applied"
    );
    // Remove deletes a stream entry.
    let removed = ok(
        "range",
        broker.range(&out, EntryId::ZERO, EntryId::MAX, 10).await,
    );
    ok(
        "commit",
        broker
            .commit(&Commit {
                ops: vec![Op::Remove {
                    stream: out.clone(),
                    id: removed[0].id,
                }],
                settlements: Vec::new(),
            })
            .await,
    );
    assert_eq!(ok("len", broker.len(&out).await), 0, "{out}: entry removed");
}

/// `pending` filters by idle time; `claim_entries` (XCLAIM) moves only entries idle long
/// enough, counts a delivery, and ignores ids that are not pending.
pub async fn claim_by_id(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 3).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c1", 10).await.len(), 3);
    let idle = ok(
        "pending",
        broker.pending(&s, "g", Duration::from_secs(60), 10).await,
    );
    assert!(idle.is_empty(), "{s}: nothing idle for a minute: {idle:?}");
    let early = ok(
        "claim_entries",
        broker
            .claim_entries(&s, "g", "c2", Duration::from_secs(60), &ids)
            .await,
    );
    assert!(early.is_empty(), "{s}: not idle long enough: {early:?}");
    tokio::time::sleep(CLAIM_IDLE + Duration::from_millis(20)).await;
    let idle = ok("pending", broker.pending(&s, "g", CLAIM_IDLE, 10).await);
    assert_eq!(idle.len(), 3, "{s}: all idle now");
    assert!(idle.iter().all(|p| p.deliveries == 1 && p.consumer == "c1"));
    ack_ok(broker, &s, "g", &ids[..1]).await;
    let claimed = ok(
        "claim_entries",
        broker.claim_entries(&s, "g", "c2", CLAIM_IDLE, &ids).await,
    );
    assert_eq!(
        ids_of(&claimed),
        ids[1..],
        "{s}: the acked entry is not claimed"
    );
    assert_eq!(
        deliveries_of(&claimed),
        [2, 2],
        "{s}: a claim counts a delivery"
    );
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    assert!(
        pending.iter().all(|p| p.consumer == "c2"),
        "{s}: now held by c2: {pending:?}"
    );
}

/// `create_group` creates a missing stream (MKSTREAM) and answers `false` for an existing group
/// (BUSYGROUP); a group starting at the end skips the entries already there, one starting at the
/// beginning sees them.
pub async fn group_creation(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    assert!(
        ok(
            "create_group",
            broker.create_group(&s, "g", GroupStart::End).await
        ),
        "{s}: create_group of a new group must answer true"
    );
    assert_eq!(
        ok("streams", broker.streams(prefix).await),
        vec![s.clone()],
        "{s}: MKSTREAM"
    );
    assert_eq!(
        ok("len", broker.len(&s).await),
        0,
        "{s}: a new stream is empty"
    );
    for start in [GroupStart::End, GroupStart::Beginning] {
        assert!(
            !ok("create_group", broker.create_group(&s, "g", start).await),
            "{s}: creating an existing group must answer false (BUSYGROUP)"
        );
    }
    let groups = ok("groups", broker.groups(&s).await);
    assert_eq!(groups.len(), 1, "{s}: groups {groups:?}");
    let info = &groups[0];
    assert_eq!(info.name, "g", "{s}: {info:?}");
    assert_eq!((info.consumers, info.pending), (0, 0), "{s}: {info:?}");
    assert_eq!(info.last_delivered, EntryId::ZERO, "{s}: {info:?}");
    assert!(matches!(info.lag, None | Some(0)), "{s}: {info:?}");

    let ids = add_n(broker, &s, 2).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "end", GroupStart::End).await
    ));
    assert!(ok(
        "create_group",
        broker
            .create_group(&s, "begin", GroupStart::Beginning)
            .await
    ));
    let end = group_info(broker, &s, "end").await;
    assert_eq!(
        end.last_delivered, ids[1],
        "{s}: `End` starts at the last id: {end:?}"
    );
    assert!(matches!(end.lag, None | Some(0)), "{s}: {end:?}");
    let begin = group_info(broker, &s, "begin").await;
    assert_eq!(begin.last_delivered, EntryId::ZERO, "{s}: {begin:?}");
    assert!(matches!(begin.lag, None | Some(2)), "{s}: {begin:?}");

    let mut reader = open_reader(broker).await;
    let skipped = read_new(&mut *reader, &s, "end", "c", 10).await;
    assert!(
        skipped.is_empty(),
        "{s}: `End` must skip existing entries, got {skipped:?}"
    );
    let seen = read_new(&mut *reader, &s, "begin", "c", 10).await;
    assert_eq!(
        ids_of(&seen),
        ids,
        "{s}: `Beginning` must see existing entries in order"
    );
    let later = read_new(&mut *reader, &s, "g", "c", 10).await;
    assert_eq!(
        ids_of(&later),
        ids,
        "{s}: entries added after the group was created"
    );
    assert!(ok(
        "create_group",
        broker
            .create_group(&s, "after", GroupStart::After(ids[0]))
            .await
    ));
    let after = read_new(&mut *reader, &s, "after", "c", 10).await;
    assert_eq!(
        ids_of(&after),
        ids[1..],
        "{s}: `After(id)` sees the entries after that id"
    );
}

/// A backlog read returns what a plain read of new entries would: up to `count` entries, in
/// stream order, each once, as first deliveries; with nothing new it returns at once.
pub async fn backlog_read(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 7).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    let mut seen = Vec::new();
    for (count, expected) in [(4, 4), (1, 1), (5, 2), (5, 0)] {
        // The last read finds nothing new and returns: a backlog read never blocks.
        let batch = ok(
            "read_backlog",
            reader.read_backlog(&s, "g", "c", count).await,
        );
        assert_eq!(batch.len(), expected, "{s}: count {count}: {batch:?}");
        assert!(
            batch.iter().all(|d| d.deliveries == 1),
            "{s}: first deliveries: {batch:?}"
        );
        seen.extend(ids_of(&batch));
    }
    assert_eq!(seen, ids, "{s}: every entry once, in stream order");
    let pending = ok(
        "pending",
        broker.pending(&s, "g", Duration::ZERO, 100).await,
    );
    assert_eq!(pending.len(), ids.len(), "{s}: all pending for c");
}

/// Reading new entries delivers each entry once per group, oldest first, `count` at a time,
/// with a delivery count of 1, and moves the group's last-delivered id.
pub async fn read_new_once(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 3).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    let first = read_new(&mut *reader, &s, "g", "c", 2).await;
    assert_eq!(ids_of(&first), ids[..2], "{s}: first read, count 2");
    assert_eq!(
        first[0].entry.fields,
        numbered(0),
        "{s}: fields must round-trip"
    );
    assert!(
        first.iter().all(|d| d.deliveries == 1),
        "{s}: first deliveries: {first:?}"
    );
    let info = group_info(broker, &s, "g").await;
    assert_eq!(info.last_delivered, ids[1], "{s}: {info:?}");
    let rest = read_new(&mut *reader, &s, "g", "c", 10).await;
    assert_eq!(ids_of(&rest), ids[2..], "{s}: second read");
    let none = read_new(&mut *reader, &s, "g", "c", 10).await;
    assert!(none.is_empty(), "{s}: nothing is delivered twice: {none:?}");
    let other = read_new(&mut *reader, &s, "g", "other", 10).await;
    assert!(
        other.is_empty(),
        "{s}: another consumer of the group gets nothing: {other:?}"
    );
    let info = group_info(broker, &s, "g").await;
    assert_eq!(info.last_delivered, ids[2], "{s}: {info:?}");
    // A consumer whose reads found nothing may or may not be counted, depending on the version.
    assert_eq!(info.pending, 3, "{s}: {info:?}");
    assert!(matches!(info.consumers, 1 | 2), "{s}: {info:?}");
    assert!(matches!(info.lag, None | Some(0)), "{s}: {info:?}");
}

/// Two groups of one stream each receive every entry (fan-out).
pub async fn fan_out(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    for group in ["one", "two"] {
        assert!(ok(
            "create_group",
            broker.create_group(&s, group, GroupStart::End).await
        ));
    }
    let ids = add_n(broker, &s, 3).await;
    let mut reader = open_reader(broker).await;
    for group in ["one", "two"] {
        let got = read_new(&mut *reader, &s, group, "c", 10).await;
        assert_eq!(ids_of(&got), ids, "{s}: group {group} must get every entry");
    }
    let again = read_new(&mut *reader, &s, "one", "c", 10).await;
    assert!(again.is_empty(), "{s}: {again:?}");
}

/// Two consumers of one group split the entries: together they get all of them, no entry
/// twice, and the PEL records who holds which.
pub async fn load_sharing(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 4).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    let mut held: Vec<(EntryId, &str)> = Vec::new();
    for round in 0..4 {
        for consumer in ["c1", "c2"] {
            let got = read_new(&mut *reader, &s, "g", consumer, 1).await;
            held.extend(got.iter().map(|d| (d.entry.id, consumer)));
            if round >= 2 {
                assert!(
                    got.is_empty(),
                    "{s}: all entries already delivered: {got:?}"
                );
            }
        }
    }
    let mut all: Vec<EntryId> = held.iter().map(|(id, _)| *id).collect();
    all.sort();
    assert_eq!(
        all, ids,
        "{s}: the consumers together get every entry exactly once"
    );
    for consumer in ["c1", "c2"] {
        let count = held.iter().filter(|(_, c)| *c == consumer).count();
        assert_eq!(count, 2, "{s}: {consumer} gets its share: {held:?}");
    }
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    let owners: Vec<(EntryId, &str)> = pending
        .iter()
        .map(|p| (p.id, p.consumer.as_str()))
        .collect();
    held.sort();
    assert_eq!(owners, held, "{s}: the PEL records each entry's consumer");
    let info = group_info(broker, &s, "g").await;
    assert_eq!((info.consumers, info.pending), (2, 4), "{s}: {info:?}");
}

/// Acknowledged entries (settlements without ops) leave the PEL (and the pending count of
/// `groups`); acknowledging entries that are not pending is not an error.
pub async fn ack(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 3).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c", 10).await.len(), 3);
    assert_eq!(
        group_info(broker, &s, "g").await.pending,
        3,
        "{s}: all delivered"
    );
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids,
        "{s}: oldest first"
    );
    assert!(
        pending
            .iter()
            .all(|p| p.consumer == "c" && p.deliveries == 1),
        "{s}: {pending:?}"
    );

    ack_ok(broker, &s, "g", &ids[..2]).await;
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids[2..],
        "{s}: after ack"
    );
    assert_eq!(
        group_info(broker, &s, "g").await.pending,
        1,
        "{s}: pending count after ack"
    );

    let never_delivered = EntryId::new(1, 1);
    ack_ok(broker, &s, "g", &[ids[0], ids[2], never_delivered]).await;
    assert!(
        ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await).is_empty(),
        "{s}: all acked"
    );
    assert_eq!(
        group_info(broker, &s, "g").await.pending,
        0,
        "{s}: pending count"
    );
    let history = read_pending(&mut *reader, &s, "g", "c", EntryId::ZERO, 10).await;
    assert!(
        history.is_empty(),
        "{s}: acked entries are not re-delivered: {history:?}"
    );
}

/// Unacknowledged entries come back, to the same consumer only, from a `Pending` read; every
/// such read counts as a delivery.
pub async fn redelivery(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 2).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c1", 10).await.len(), 2);

    let again = read_pending(&mut *reader, &s, "g", "c1", EntryId::ZERO, 10).await;
    assert_eq!(
        ids_of(&again),
        ids,
        "{s}: unacked entries come back in order"
    );
    assert_eq!(deliveries_of(&again), [2, 2], "{s}: second delivery");
    assert_eq!(
        again[1].entry.fields,
        numbered(1),
        "{s}: fields must round-trip"
    );
    let after_first = read_pending(&mut *reader, &s, "g", "c1", ids[0], 10).await;
    assert_eq!(ids_of(&after_first), ids[1..], "{s}: `after` is exclusive");
    assert_eq!(deliveries_of(&after_first), [3], "{s}: third delivery");
    let one = read_pending(&mut *reader, &s, "g", "c1", EntryId::ZERO, 1).await;
    assert_eq!(
        ids_of(&one),
        ids[..1],
        "{s}: count applies to pending reads"
    );
    assert_eq!(
        deliveries_of(&one),
        [3],
        "{s}: third delivery of the first entry"
    );

    let other = read_pending(&mut *reader, &s, "g", "c2", EntryId::ZERO, 10).await;
    assert!(
        other.is_empty(),
        "{s}: other consumers never see c1's entries: {other:?}"
    );
    let new = read_new(&mut *reader, &s, "g", "c2", 10).await;
    assert!(
        new.is_empty(),
        "{s}: delivered entries are not new: {new:?}"
    );
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    let seen: Vec<(EntryId, &str, u32)> = pending
        .iter()
        .map(|p| (p.id, p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(seen, [(ids[0], "c1", 3), (ids[1], "c1", 3)], "{s}: PEL");

    ack_ok(broker, &s, "g", &ids[..1]).await;
    let rest = read_pending(&mut *reader, &s, "g", "c1", EntryId::ZERO, 10).await;
    assert_eq!(
        ids_of(&rest),
        ids[1..],
        "{s}: acked entries do not come back"
    );
    assert_eq!(deliveries_of(&rest), [4], "{s}: fourth delivery");
}

/// A blocked read returns as soon as an entry is added from elsewhere (by `add` or by a
/// commit), ignores entries added to other streams, and returns nothing once its block time is
/// over.
pub async fn blocking_read(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let other = format!("{prefix}other");
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::End).await
    ));
    let mut reader = open_reader(broker).await;
    // Opens the reader's connection and registers the consumer, so timings below measure waits.
    assert!(read_new(&mut *reader, &s, "g", "c", 10).await.is_empty());

    let blocked = spawn_read(reader, &s, WAKE_BLOCK);
    tokio::time::sleep(WAKE_DELAY).await;
    let id = ok("add", broker.add(&s, &numbered(0)).await);
    let (result, waited, reader) = join_read(blocked, &s).await;
    let got = ok("blocking read", result);
    assert_eq!(
        ids_of(&got),
        [id],
        "{s}: the blocked read gets the added entry"
    );
    assert!(
        waited < WAKE_BLOCK,
        "{s}: a blocked read must return as soon as an entry is added, took {waited:?}"
    );

    let blocked = spawn_read(reader, &s, WAKE_BLOCK);
    tokio::time::sleep(WAKE_DELAY).await;
    commit_ok(broker, vec![add_op(&s, 1)]).await;
    let (result, waited, reader) = join_read(blocked, &s).await;
    let got = ok("blocking read", result);
    assert_eq!(
        got.len(),
        1,
        "{s}: the blocked read gets the committed entry: {got:?}"
    );
    assert_eq!(got[0].entry.fields, numbered(1), "{s}: {got:?}");
    assert!(
        waited < WAKE_BLOCK,
        "{s}: a blocked read must return as soon as a commit adds an entry, took {waited:?}"
    );

    let blocked = spawn_read(reader, &s, EMPTY_BLOCK);
    for n in 0..3 {
        tokio::time::sleep(EMPTY_BLOCK / 5).await;
        ok("add", broker.add(&other, &numbered(n)).await);
    }
    let (result, waited, _reader) = join_read(blocked, &s).await;
    let got = ok("blocking read", result);
    assert!(
        got.is_empty(),
        "{s}: nothing was added to this stream: {got:?}"
    );
    assert!(
        waited + EMPTY_SLACK >= EMPTY_BLOCK,
        "{s}: an empty blocking read must wait its block time ({EMPTY_BLOCK:?}), took {waited:?}"
    );
}

/// A commit applies all its writes (add, set, delete, ack) or, when one of its settlements
/// names a missing group, none of them and fails with [`BrokerError::NoGroup`].
pub async fn commit_atomicity(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let key = format!("{prefix}key");
    let doomed = format!("{prefix}doomed");
    let untouched = format!("{prefix}untouched");
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::End).await
    ));
    let id = ok("add", broker.add(&s, &numbered(0)).await);
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c", 10).await.len(), 1);
    commit_ok(broker, vec![set_op(&doomed, b"x")]).await;

    ok(
        "commit",
        broker
            .commit(&Commit {
                ops: vec![
                    add_op(&s, 1),
                    set_op(&key, b"v1"),
                    Op::Delete {
                        key: doomed.clone(),
                    },
                ],
                ..acks(&s, "g", &[id])
            })
            .await,
    );
    assert_eq!(
        ok("len", broker.len(&s).await),
        2,
        "{s}: the commit's add happened"
    );
    let last = ok("range", broker.range(&s, id.next(), EntryId::MAX, 10).await);
    assert_eq!(last.len(), 1, "{s}: {last:?}");
    assert_eq!(last[0].fields, numbered(1), "{s}: the added entry");
    assert_eq!(
        ok("get", broker.get(&key).await),
        Some(b"v1".to_vec()),
        "{key}: set"
    );
    assert_eq!(
        ok("get", broker.get(&doomed).await),
        None,
        "{doomed}: deleted"
    );
    assert!(
        ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await).is_empty(),
        "{s}: acked"
    );

    for (stream, group) in [(s.clone(), "missing"), (format!("{prefix}nostream"), "g")] {
        let failed = broker
            .commit(&Commit {
                ops: vec![add_op(&s, 2), set_op(&key, b"v2"), set_op(&untouched, b"x")],
                ..acks(&stream, group, &[id])
            })
            .await;
        assert!(
            matches!(failed, Err(BrokerError::NoGroup { .. })),
            "{stream}: a commit acking for missing group {group:?} must fail with NoGroup, \
             got {failed:?}"
        );
        assert_eq!(
            ok("len", broker.len(&s).await),
            2,
            "{s}: the failed commit's add happened"
        );
        assert_eq!(
            ok("get", broker.get(&key).await),
            Some(b"v1".to_vec()),
            "{key}: the failed commit's set happened"
        );
        assert_eq!(
            ok("get", broker.get(&untouched).await),
            None,
            "{untouched}: the failed commit's set happened"
        );
    }
}

/// Reading, listing pending entries of and claiming for a group that does not exist fail with
/// [`BrokerError::NoGroup`], whether or not the stream exists.
pub async fn no_group(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let missing = format!("{prefix}missing");
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::End).await
    ));
    let mut reader = open_reader(broker).await;
    for stream in [&s, &missing] {
        for from in [
            ReadFrom::New { block: None },
            ReadFrom::New {
                block: Some(Duration::from_millis(100)),
            },
            ReadFrom::Pending {
                after: EntryId::ZERO,
            },
        ] {
            let started = Instant::now();
            let read = tokio::time::timeout(GUARD, reader.read(stream, "nope", "c", from, 10))
                .await
                .unwrap_or_else(|_| panic!("{stream}: a read of a missing group must not hang"));
            assert_no_group(read.map(|_| ()), stream, &format!("read {from:?}"));
            assert!(
                started.elapsed() < GUARD,
                "{stream}: read of a missing group"
            );
        }
        let pending = broker.pending(stream, "nope", Duration::ZERO, 10).await;
        assert_no_group(pending.map(|_| ()), stream, "pending");
        let claimed = broker
            .claim_entries(stream, "nope", "c", Duration::ZERO, &[EntryId::new(1, 0)])
            .await;
        assert_no_group(claimed.map(|_| ()), stream, "claim");
        // A commit of plain acknowledgements (no effects) checks the group as well.
        let acked = broker
            .commit(&Commit {
                ops: Vec::new(),
                settlements: vec![Settlement {
                    stream: stream.clone(),
                    group: "nope".into(),
                    consumer: "c".into(),
                    id: EntryId::new(1, 0),
                    ops: Vec::new(),
                    expects: Vec::new(),
                }],
            })
            .await;
        assert_no_group(acked.map(|_| ()), stream, "acknowledgement-only commit");
    }
}

/// Claiming by id transfers the entries asked for, if idle long enough, to another consumer,
/// counts a delivery and restarts their idle time; they then belong to that consumer only.
pub async fn claim(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let ids = add_n(broker, &s, 3).await;
    assert!(ok(
        "create_group",
        broker.create_group(&s, "g", GroupStart::Beginning).await
    ));
    let mut reader = open_reader(broker).await;
    assert_eq!(read_new(&mut *reader, &s, "g", "c1", 10).await.len(), 3);

    let early = ok(
        "claim_entries",
        broker
            .claim_entries(&s, "g", "c2", Duration::from_secs(60), &ids)
            .await,
    );
    assert!(
        early.is_empty(),
        "{s}: nothing is idle for a minute: {early:?}"
    );

    tokio::time::sleep(CLAIM_IDLE + Duration::from_millis(20)).await;
    let first = ok(
        "claim_entries",
        broker
            .claim_entries(&s, "g", "c2", CLAIM_IDLE, &ids[..2])
            .await,
    );
    assert_eq!(ids_of(&first), ids[..2], "{s}: claims what was asked");
    assert_eq!(
        deliveries_of(&first),
        [2, 2],
        "{s}: a claim counts a delivery"
    );
    assert_eq!(
        first[0].entry.fields,
        numbered(0),
        "{s}: fields must round-trip"
    );
    let second = ok(
        "claim_entries",
        broker
            .claim_entries(&s, "g", "c2", CLAIM_IDLE, &ids[2..])
            .await,
    );
    assert_eq!(ids_of(&second), ids[2..], "{s}: the rest");

    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    let seen: Vec<(EntryId, &str, u32)> = pending
        .iter()
        .map(|p| (p.id, p.consumer.as_str(), p.deliveries))
        .collect();
    let expected: Vec<(EntryId, &str, u32)> = ids.iter().map(|id| (*id, "c2", 2)).collect();
    assert_eq!(seen, expected, "{s}: the PEL after the claims");
    assert!(
        pending.iter().all(|p| p.idle < CLAIM_IDLE),
        "{s}: a claim restarts the idle time: {pending:?}"
    );
    let again = ok(
        "claim_entries",
        broker.claim_entries(&s, "g", "c1", CLAIM_IDLE, &ids).await,
    );
    assert!(again.is_empty(), "{s}: just claimed, not idle: {again:?}");

    let lost = read_pending(&mut *reader, &s, "g", "c1", EntryId::ZERO, 10).await;
    assert!(lost.is_empty(), "{s}: claimed entries left c1: {lost:?}");
    let owned = read_pending(&mut *reader, &s, "g", "c2", EntryId::ZERO, 10).await;
    assert_eq!(ids_of(&owned), ids, "{s}: claimed entries belong to c2");
    assert_eq!(deliveries_of(&owned), [3, 3, 3], "{s}: {owned:?}");
    let info = group_info(broker, &s, "g").await;
    assert_eq!((info.consumers, info.pending), (2, 3), "{s}: {info:?}");
}

/// `range` is inclusive at both ends, oldest first and limited by `count`; `len` counts the
/// entries; a missing stream is empty.
pub async fn range_and_len(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    assert_eq!(ok("len", broker.len(&s).await), 0, "{s}: missing stream");
    let everything = ok(
        "range",
        broker.range(&s, EntryId::ZERO, EntryId::MAX, 10).await,
    );
    assert!(everything.is_empty(), "{s}: missing stream: {everything:?}");

    let ids = add_n(broker, &s, 5).await;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{s}: ids must increase: {ids:?}"
    );
    assert_eq!(ok("len", broker.len(&s).await), 5, "{s}: len");
    let all = ok(
        "range",
        broker.range(&s, EntryId::ZERO, EntryId::MAX, 100).await,
    );
    let expected: Vec<StreamEntry> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| StreamEntry {
            id: *id,
            fields: numbered(n),
        })
        .collect();
    assert_eq!(all, expected, "{s}: the whole stream");
    let middle = ok("range", broker.range(&s, ids[1], ids[3], 100).await);
    assert_eq!(
        entry_ids(&middle),
        ids[1..=3],
        "{s}: both ends are inclusive"
    );
    let two = ok(
        "range",
        broker.range(&s, EntryId::ZERO, EntryId::MAX, 2).await,
    );
    assert_eq!(entry_ids(&two), ids[..2], "{s}: count");
    let newest = ok(
        "rev_range",
        broker.rev_range(&s, EntryId::MAX, EntryId::ZERO, 2).await,
    );
    assert_eq!(
        entry_ids(&newest),
        [ids[4], ids[3]],
        "{s}: rev_range is newest first, limited by count"
    );
    let reversed_middle = ok("rev_range", broker.rev_range(&s, ids[3], ids[1], 100).await);
    assert_eq!(
        entry_ids(&reversed_middle),
        [ids[3], ids[2], ids[1]],
        "{s}: rev_range ends are inclusive"
    );
    let single = ok("range", broker.range(&s, ids[2], ids[2], 10).await);
    assert_eq!(entry_ids(&single), ids[2..3], "{s}: a one-id range");
    let after = ok(
        "range",
        broker.range(&s, ids[4].next(), EntryId::MAX, 10).await,
    );
    assert!(
        after.is_empty(),
        "{s}: nothing after the last entry: {after:?}"
    );
}

/// `streams(prefix)` lists the streams under the prefix, sorted, including streams created by
/// `create_group`, and nothing else: no string keys, no other streams.
pub async fn streams_by_prefix(broker: &dyn Broker, prefix: &str) {
    let inside = format!("{prefix}in:");
    let b = format!("{inside}b");
    let a = format!("{inside}a");
    let c = format!("{inside}c");
    ok("add", broker.add(&b, &numbered(0)).await);
    ok("add", broker.add(&a, &numbered(0)).await);
    assert!(ok(
        "create_group",
        broker.create_group(&c, "g", GroupStart::End).await
    ));
    ok(
        "add",
        broker.add(&format!("{prefix}out:x"), &numbered(0)).await,
    );
    ok(
        "add",
        broker.add(&format!("{prefix}in"), &numbered(0)).await,
    );
    commit_ok(
        broker,
        vec![set_op(&format!("{inside}key"), b"not a stream")],
    )
    .await;
    assert_eq!(
        ok("streams", broker.streams(&inside).await),
        [a, b, c],
        "{inside}: streams under the prefix"
    );
    let nothing = ok("streams", broker.streams(&format!("{prefix}none:")).await);
    assert!(nothing.is_empty(), "{prefix}none: {nothing:?}");
}

/// `get` sees `Set` and `Delete`; `scan_keys` pages through every key under the prefix, and
/// only those.
pub async fn keys(broker: &dyn Broker, prefix: &str) {
    let kv = format!("{prefix}kv:");
    let first = format!("{kv}first");
    assert_eq!(
        ok("get", broker.get(&first).await),
        None,
        "{first}: missing key"
    );
    commit_ok(broker, vec![set_op(&first, b"1")]).await;
    assert_eq!(
        ok("get", broker.get(&first).await),
        Some(b"1".to_vec()),
        "{first}"
    );
    commit_ok(broker, vec![set_op(&first, b"2")]).await;
    assert_eq!(
        ok("get", broker.get(&first).await),
        Some(b"2".to_vec()),
        "{first}"
    );
    commit_ok(broker, vec![Op::Delete { key: first.clone() }]).await;
    assert_eq!(
        ok("get", broker.get(&first).await),
        None,
        "{first}: deleted"
    );

    let mut expected: Vec<String> = (0..150).map(|n| format!("{kv}{n:03}")).collect();
    let mut ops: Vec<Op> = expected.iter().map(|key| set_op(key, b"x")).collect();
    ops.push(set_op(&format!("{prefix}outside"), b"x"));
    commit_ok(broker, ops).await;
    let mut listed = Vec::new();
    let mut cursor = 0;
    for _ in 0..1_000 {
        let (page, next) = ok("scan_keys", broker.scan_keys(&kv, cursor).await);
        listed.extend(page);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "{kv}: scan_keys never finished");
    listed.sort();
    listed.dedup();
    expected.sort();
    assert_eq!(
        listed, expected,
        "{kv}: scan_keys lists exactly the keys under the prefix"
    );
}

/// A prefix no earlier run used: process id, wall clock and a counter.
fn run_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("conformance:{}-{nanos}-{run}", std::process::id())
}

/// The value of `result`, or a panic naming `what` failed.
#[track_caller]
fn ok<T>(what: &str, result: Result<T, BrokerError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: unexpected broker error: {err}"),
    }
}

#[track_caller]
fn assert_no_group(result: Result<(), BrokerError>, stream: &str, what: &str) {
    match result {
        Err(BrokerError::NoGroup {
            stream: named,
            group,
        }) => {
            assert_eq!(named, stream, "{what}: NoGroup names the stream");
            assert_eq!(group, "nope", "{what}: NoGroup names the group");
        }
        other => panic!("{stream}: {what} of a missing group must fail with NoGroup: {other:?}"),
    }
}

/// Fields of the `n`th test entry, with a value that is not UTF-8.
fn numbered(n: usize) -> Fields {
    vec![
        ("n".to_string(), n.to_string().into_bytes()),
        ("bytes".to_string(), vec![0, 0xff, 0xfe, 0x80]),
    ]
}

async fn add_n(broker: &dyn Broker, stream: &str, count: usize) -> Vec<EntryId> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(ok("add", broker.add(stream, &numbered(n)).await));
    }
    ids
}

async fn open_reader(broker: &dyn Broker) -> Box<dyn GroupReader> {
    ok("reader", broker.reader().await)
}

async fn commit_ok(broker: &dyn Broker, ops: Vec<Op>) {
    ok(
        "commit",
        broker
            .commit(&Commit {
                ops,
                settlements: Vec::new(),
            })
            .await,
    );
}

async fn group_info(broker: &dyn Broker, stream: &str, group: &str) -> GroupInfo {
    let groups = ok("groups", broker.groups(stream).await);
    match groups.into_iter().find(|info| info.name == group) {
        Some(info) => info,
        None => panic!("{stream}: groups() does not list group {group:?}"),
    }
}

async fn read_new(
    reader: &mut dyn GroupReader,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Vec<Delivered> {
    let read = reader.read(
        stream,
        group,
        consumer,
        ReadFrom::New { block: None },
        count,
    );
    ok(
        &format!("{stream}: read new as {group}/{consumer}"),
        read.await,
    )
}

async fn read_pending(
    reader: &mut dyn GroupReader,
    stream: &str,
    group: &str,
    consumer: &str,
    after: EntryId,
    count: usize,
) -> Vec<Delivered> {
    let read = reader.read(stream, group, consumer, ReadFrom::Pending { after }, count);
    ok(
        &format!("{stream}: read pending as {group}/{consumer}"),
        read.await,
    )
}

/// What a blocking read in another task answers, how long it took, and the reader back.
type ReadOutcome = (
    Result<Vec<Delivered>, BrokerError>,
    Duration,
    Box<dyn GroupReader>,
);

/// Starts a blocking read of new entries (group `g`, consumer `c`) in another task.
fn spawn_read(
    mut reader: Box<dyn GroupReader>,
    stream: &str,
    block: Duration,
) -> tokio::task::JoinHandle<ReadOutcome> {
    let stream = stream.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = reader
            .read(&stream, "g", "c", ReadFrom::New { block: Some(block) }, 10)
            .await;
        (result, started.elapsed(), reader)
    })
}

async fn join_read(read: tokio::task::JoinHandle<ReadOutcome>, stream: &str) -> ReadOutcome {
    match tokio::time::timeout(GUARD, read).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => panic!("{stream}: the blocking read task failed: {err}"),
        Err(_) => panic!("{stream}: a blocking read did not return within {GUARD:?}"),
    }
}

fn add_op(stream: &str, n: usize) -> Op {
    Op::Add {
        stream: stream.to_string(),
        fields: numbered(n),
    }
}

fn set_op(key: &str, value: &[u8]) -> Op {
    Op::Set {
        key: key.to_string(),
        value: value.to_vec(),
    }
}

/// A commit acknowledging `ids` of `group`, whoever holds them: settlements without ops.
fn acks(stream: &str, group: &str, ids: &[EntryId]) -> Commit {
    Commit {
        ops: Vec::new(),
        settlements: ids
            .iter()
            .map(|id| Settlement {
                stream: stream.to_string(),
                group: group.to_string(),
                consumer: "c".to_string(),
                id: *id,
                ops: Vec::new(),
                expects: Vec::new(),
            })
            .collect(),
    }
}

async fn ack_ok(broker: &dyn Broker, stream: &str, group: &str, ids: &[EntryId]) {
    let report = ok("commit", broker.commit(&acks(stream, group, ids)).await);
    assert!(
        report.skipped.is_empty(),
        "{stream}: an acknowledgement is never skipped: {report:?}"
    );
}

fn ids_of(delivered: &[Delivered]) -> Vec<EntryId> {
    delivered.iter().map(|d| d.entry.id).collect()
}

fn entry_ids(entries: &[StreamEntry]) -> Vec<EntryId> {
    entries.iter().map(|entry| entry.id).collect()
}

fn deliveries_of(delivered: &[Delivered]) -> Vec<u32> {
    delivered.iter().map(|d| d.deliveries).collect()
}
