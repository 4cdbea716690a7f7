//! Cases for key-value state in commits: read checks (no lost update), counters, batch reads.

use std::time::Duration;

use super::{add_n, add_op, commit_ok, ok, open_reader, read_new, set_op};
use crate::broker::{Broker, Commit, EntryId, Expect, Op, Settlement, ValueDigest};

/// A settlement by consumer `c` of group `g` on `stream`.
fn settlement(stream: &str, id: EntryId, ops: Vec<Op>, expects: Vec<Expect>) -> Settlement {
    Settlement {
        stream: stream.to_string(),
        group: "g".into(),
        consumer: "c".into(),
        id,
        ops,
        expects,
    }
}

fn expect(key: &str, value: Option<&[u8]>) -> Expect {
    Expect {
        key: key.to_string(),
        digest: ValueDigest::of(value),
    }
}

fn increment(key: &str, delta: u64) -> Op {
    Op::Increment {
        key: key.to_string(),
        delta,
    }
}

/// Reads `count` entries of a new stream into group `g` for consumer `c`.
async fn delivered(broker: &dyn Broker, stream: &str, count: usize) -> Vec<EntryId> {
    let ids = add_n(broker, stream, count).await;
    ok(
        "create_group",
        broker
            .create_group(stream, "g", crate::broker::GroupStart::Beginning)
            .await,
    );
    let mut reader = open_reader(broker).await;
    assert_eq!(
        read_new(&mut *reader, stream, "g", "c", count).await.len(),
        count
    );
    ids
}

/// A settlement applies only if every key it expects still holds what was read (absence
/// included); one that does not is conflicted: nothing of it applies, its entry stays pending,
/// and every later settlement with ops waits too, while plain acknowledgements still apply.
pub async fn read_checks(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let out = format!("{prefix}out");
    let k = format!("{prefix}k");
    let fresh = format!("{prefix}fresh");
    commit_ok(broker, vec![set_op(&k, b"1")]).await;
    let ids = delivered(broker, &s, 5).await;
    let commit = Commit {
        ops: Vec::new(),
        settlements: vec![
            // Read "1" (and `fresh` absent), writes: applies.
            settlement(
                &s,
                ids[0],
                vec![set_op(&k, b"2"), set_op(&fresh, b"new")],
                vec![expect(&k, Some(b"1")), expect(&fresh, None)],
            ),
            // Also read "1", but the first settlement changed it: conflicted.
            settlement(
                &s,
                ids[1],
                vec![set_op(&k, b"lost")],
                vec![expect(&k, Some(b"1"))],
            ),
            // No read of its own, but after a conflict: waits, keeping its order.
            settlement(&s, ids[2], vec![add_op(&out, 1)], Vec::new()),
            // A plain acknowledgement applies whatever came before.
            settlement(&s, ids[3], Vec::new(), Vec::new()),
        ],
    };
    let report = ok("commit", broker.commit(&commit).await);
    assert!(
        report.skipped.is_empty(),
        "{s}: nothing skipped: {report:?}"
    );
    assert_eq!(report.conflicted, ids[1..3], "{s}: conflicted in order");
    assert_eq!(ok("get", broker.get(&k).await).as_deref(), Some(&b"2"[..]));
    assert_eq!(
        ok("get", broker.get(&fresh).await).as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(
        ok("len", broker.len(&out).await),
        0,
        "{out}: the waiting add"
    );
    let pending = ok("pending", broker.pending(&s, "g", Duration::ZERO, 10).await);
    let pending: Vec<EntryId> = pending.iter().map(|entry| entry.id).collect();
    assert_eq!(
        pending,
        [ids[1], ids[2], ids[4]],
        "{s}: conflicted entries stay pending"
    );
    // Handled again with fresh reads, they apply.
    let again = Commit {
        ops: Vec::new(),
        settlements: vec![
            settlement(
                &s,
                ids[1],
                vec![set_op(&k, b"3")],
                vec![expect(&k, Some(b"2"))],
            ),
            settlement(&s, ids[2], vec![add_op(&out, 1)], Vec::new()),
        ],
    };
    let report = ok("commit", broker.commit(&again).await);
    assert!(report.conflicted.is_empty(), "{s}: {report:?}");
    assert_eq!(ok("get", broker.get(&k).await).as_deref(), Some(&b"3"[..]));
    assert_eq!(ok("len", broker.len(&out).await), 1);
    // A key expected absent that now exists conflicts too.
    let absent = Commit {
        ops: Vec::new(),
        settlements: vec![settlement(
            &s,
            ids[4],
            vec![set_op(&fresh, b"again")],
            vec![expect(&fresh, None)],
        )],
    };
    let report = ok("commit", broker.commit(&absent).await);
    assert_eq!(report.conflicted, ids[4..], "{s}: the key appeared");
    assert_eq!(
        ok("get", broker.get(&fresh).await).as_deref(),
        Some(&b"new"[..])
    );
}

/// Increments add up in order, in one commit and across commits, and start from 0; a key that
/// holds no counter, or a sum beyond 2^53 − 1, conflicts the settlement instead of failing
/// the commit half way.
pub async fn counters(broker: &dyn Broker, prefix: &str) {
    let s = format!("{prefix}s");
    let n = format!("{prefix}n");
    let text = format!("{prefix}text");
    let big = format!("{prefix}big");
    commit_ok(
        broker,
        vec![
            set_op(&text, b"abc"),
            set_op(&big, b"9007199254740990"),
            increment(&n, 5),
        ],
    )
    .await;
    assert_eq!(ok("get", broker.get(&n).await).as_deref(), Some(&b"5"[..]));
    let ids = delivered(broker, &s, 4).await;
    let commit = Commit {
        ops: Vec::new(),
        settlements: vec![
            settlement(
                &s,
                ids[0],
                vec![increment(&n, 2), increment(&n, 3)],
                Vec::new(),
            ),
            settlement(&s, ids[1], vec![increment(&big, 1)], Vec::new()),
        ],
    };
    let report = ok("commit", broker.commit(&commit).await);
    assert!(report.conflicted.is_empty(), "{s}: {report:?}");
    assert_eq!(ok("get", broker.get(&n).await).as_deref(), Some(&b"10"[..]));
    assert_eq!(
        ok("get", broker.get(&big).await).as_deref(),
        Some(&b"9007199254740991"[..])
    );
    let not_counters = Commit {
        ops: Vec::new(),
        settlements: vec![
            settlement(&s, ids[2], vec![increment(&text, 1)], Vec::new()),
            settlement(&s, ids[3], vec![increment(&big, 1)], Vec::new()),
        ],
    };
    let report = ok("commit", broker.commit(&not_counters).await);
    assert_eq!(report.conflicted, ids[2..], "{s}: no counter, out of range");
    assert_eq!(
        ok("get", broker.get(&text).await).as_deref(),
        Some(&b"abc"[..])
    );
    let sum = Commit {
        ops: Vec::new(),
        settlements: vec![settlement(&s, ids[3], vec![increment(&big, 0)], Vec::new())],
    };
    assert!(
        ok("commit", broker.commit(&sum).await)
            .conflicted
            .is_empty()
    );
}

/// `get_many` answers one value per key, in order, `None` for absent keys.
pub async fn get_many(broker: &dyn Broker, prefix: &str) {
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");
    let c = format!("{prefix}c");
    commit_ok(broker, vec![set_op(&a, b"1"), set_op(&c, b"")]).await;
    let values = ok("get_many", broker.get_many(&[c.clone(), b, a]).await);
    assert_eq!(values, [Some(Vec::new()), None, Some(b"1".to_vec())]);
    assert!(ok("get_many", broker.get_many(&[]).await).is_empty());
}

/// `set_if_absent` sets a key only the first time; `append_once` appends only while its mark
/// lives, and appends again once the mark expired.
pub async fn once_only(broker: &dyn Broker, prefix: &str) {
    let key = format!("{prefix}setting");
    assert!(ok("set_if_absent", broker.set_if_absent(&key, b"8").await));
    assert!(!ok("set_if_absent", broker.set_if_absent(&key, b"4").await));
    assert_eq!(
        ok("get", broker.get(&key).await).as_deref(),
        Some(&b"8"[..])
    );

    let stream = format!("{prefix}target");
    let mark = format!("{prefix}mark");
    let fields = vec![("n".to_string(), b"1".to_vec())];
    let ttl = Duration::from_millis(300);
    assert!(ok(
        "append_once",
        broker.append_once(&stream, &fields, &mark, ttl).await
    ));
    for _ in 0..3 {
        assert!(!ok(
            "append_once",
            broker.append_once(&stream, &fields, &mark, ttl).await
        ));
    }
    assert_eq!(ok("len", broker.len(&stream).await), 1);
    let entries = ok(
        "range",
        broker.range(&stream, EntryId::ZERO, EntryId::MAX, 10).await,
    );
    assert_eq!(entries[0].fields, fields);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(ok(
        "append_once",
        broker.append_once(&stream, &fields, &mark, ttl).await
    ));
    assert_eq!(ok("len", broker.len(&stream).await), 2);
}

/// Leases are taken when free, renewed by their owner only, given up by their owner only; a
/// commit fenced by a lease its committer does not hold applies nothing.
pub async fn leases(broker: &dyn Broker, prefix: &str) {
    let lease = format!("{prefix}lease");
    let ttl = Duration::from_secs(30);
    assert!(ok("acquire", broker.acquire_lease(&lease, "a", ttl).await));
    assert!(ok("renew", broker.acquire_lease(&lease, "a", ttl).await));
    assert!(!ok("taken", broker.acquire_lease(&lease, "b", ttl).await));
    assert!(!ok("not b's", broker.release_lease(&lease, "b").await));

    let k = format!("{prefix}k");
    let fenced = |owner: &str| Commit {
        ops: vec![
            Op::Fence {
                key: lease.clone(),
                owner: owner.to_string(),
            },
            set_op(&k, owner.as_bytes()),
        ],
        settlements: Vec::new(),
    };
    ok("a's commit", broker.commit(&fenced("a")).await);
    assert_eq!(ok("get", broker.get(&k).await).as_deref(), Some(&b"a"[..]));
    match broker.commit(&fenced("b")).await {
        Err(crate::broker::BrokerError::Fenced { key, owner }) => {
            assert_eq!((key.as_str(), owner.as_str()), (lease.as_str(), "b"));
        }
        other => panic!("b's commit must be fenced: {other:?}"),
    }
    assert_eq!(
        ok("get", broker.get(&k).await).as_deref(),
        Some(&b"a"[..]),
        "nothing applied"
    );
    assert!(ok("release", broker.release_lease(&lease, "a").await));
    assert!(matches!(
        broker.commit(&fenced("a")).await,
        Err(crate::broker::BrokerError::Fenced { .. })
    ));
    assert!(ok(
        "free again",
        broker.acquire_lease(&lease, "b", ttl).await
    ));
}

/// Sets and roll calls: the registry of streams, and how hosts count each other.
pub async fn members(broker: &dyn Broker, prefix: &str) {
    let set = format!("{prefix}set");
    assert!(ok("no set", broker.members(&set).await).is_empty());
    ok(
        "add",
        broker
            .add_members(&set, &["b".to_string(), "a".to_string()])
            .await,
    );
    ok(
        "add again",
        broker.add_members(&set, &["a".to_string()]).await,
    );
    ok("add nothing", broker.add_members(&set, &[]).await);
    assert_eq!(ok("members", broker.members(&set).await), ["a", "b"]);

    let roll_call = format!("{prefix}hosts");
    let long = Duration::from_secs(30);
    assert_eq!(
        ok("first", broker.heartbeat(&roll_call, "h1", long).await),
        1
    );
    assert_eq!(
        ok("second", broker.heartbeat(&roll_call, "h2", long).await),
        2
    );
    assert_eq!(
        ok("renewed", broker.heartbeat(&roll_call, "h1", long).await),
        2
    );
    assert_eq!(
        ok(
            "short",
            broker
                .heartbeat(&roll_call, "h3", Duration::from_millis(50))
                .await
        ),
        3
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        ok("h3 expired", broker.heartbeat(&roll_call, "h1", long).await),
        2
    );
    ok("leave", broker.leave(&roll_call, "h2").await);
    assert_eq!(
        ok("h2 left", broker.heartbeat(&roll_call, "h1", long).await),
        1
    );
}
