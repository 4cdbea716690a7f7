//! Cases for delivery: acknowledgements, redelivery of pending entries, claims, settlements
//! and atomic commits, and missing groups.

use super::*;

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
