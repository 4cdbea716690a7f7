//! Cases for streams and keys: group creation, ranges and lengths, listing streams and keys,
//! trimming.

use super::*;

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
