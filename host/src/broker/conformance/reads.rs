//! Cases for reads: new entries once per group, backlogs, fan-out and load sharing, blocking
//! reads woken early, and following streams without a group.

use super::*;

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
