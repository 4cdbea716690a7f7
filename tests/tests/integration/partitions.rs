//! Partitioned keyspaces on a real redis-server: the saga across partitions (co-partitioned
//! state, publishes across partitions through the outbox), ingress from producers that know
//! nothing of partitions, and exactly one copy of every moved entry after a relay crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use evhost::broker::{Broker, EntryId, Fields, GroupStart, Inspect as _, ReadFrom};
use evhost::event::{Event, PARTITION_KEY};
use evhost::partition;
use evhost::relay::{GROUP, TARGET_FIELD};
use evhost::{HostOptions, Keyspace};
use evhost_tests::{
    RedisServer, TestHost, example, fast_options, journal_event_id, metric, probe, raw_connection,
    redis_broker, server_info, wait_for, xadd,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every event of `event_type` in every partition, with the partition it lies in.
pub(crate) async fn events_in(
    broker: &dyn Broker,
    layout: Keyspace,
    event_type: &str,
) -> Vec<(u32, Event)> {
    let mut events = Vec::new();
    for keyspace in layout.each_partition() {
        let stream = keyspace.event_stream(event_type);
        for entry in broker
            .range(&stream, EntryId::ZERO, EntryId::MAX, 100_000)
            .await
            .expect("XRANGE")
        {
            let event = Event::from_entry(&stream, entry.id, &entry.fields).expect("an event");
            events.push((keyspace.partition(), event));
        }
    }
    events
}

pub(crate) async fn count_in(broker: &dyn Broker, layout: Keyspace, event_type: &str) -> usize {
    events_in(broker, layout, event_type).await.len()
}

pub(crate) fn data(event: &Event) -> Value {
    serde_json::from_slice(&event.data).expect("JSON data")
}

/// Publishes `data` as `event_type` keyed by `key`, into the stream of its partition.
pub(crate) async fn publish_keyed(
    broker: &dyn Broker,
    layout: Keyspace,
    event_type: &str,
    key: &str,
    data: Value,
) {
    let mut event = Event::new(event_type, "test", data.to_string().into_bytes());
    event.set_extension(PARTITION_KEY, key);
    broker
        .add(&event.stream_in(layout), &event.to_fields())
        .await
        .expect("XADD");
}

pub(crate) fn partitioned(options: HostOptions, layout: Keyspace) -> HostOptions {
    HostOptions {
        keyspace: layout,
        ..options
    }
}

/// The saga with 8 partitions: registrations keyed by bidder, auctions by auction; payment
/// publishes `PaymentProcessed` keyed by bidder (mostly into another partition, through the
/// outbox), so that notification finds the bidder in its partition's state. Exactly one
/// payment per auction and one notification per payment and per registration; every key
/// carries its partition's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_across_eight_partitions_once_per_event() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(8))
        .await
        .expect("8 partitions");
    let plugins = ["payment", "notification", "audit", "metrics"]
        .map(example)
        .to_vec();
    let host = TestHost::start(
        broker.clone(),
        partitioned(fast_options("p-host"), layout),
        plugins,
    )
    .await;

    const BIDDERS: usize = 12;
    const AUCTIONS: usize = 40;
    for bidder in 0..BIDDERS {
        let id = format!("b-{bidder}");
        let registration = json!({"bidder_id": id, "name": format!("Bidder {bidder}"), "email": format!("{id}@example.com")});
        publish_keyed(
            broker.as_ref(),
            layout,
            "BidderRegistered",
            &id,
            registration,
        )
        .await;
    }
    wait_for("the welcome notifications", TIMEOUT, || async {
        count_in(broker.as_ref(), layout, "NotificationSent").await == BIDDERS
    })
    .await;
    for auction in 0..AUCTIONS {
        let id = format!("a-{auction}");
        let bidder = format!("b-{}", auction % BIDDERS);
        let ended =
            json!({"auction_id": id, "winning_bidder_id": bidder, "winning_price": 100 + auction});
        publish_keyed(broker.as_ref(), layout, "AuctionEnded", &id, ended).await;
    }
    wait_for("a notification per payment", TIMEOUT, || async {
        count_in(broker.as_ref(), layout, "NotificationSent").await == BIDDERS + AUCTIONS
    })
    .await;

    let payments = events_in(broker.as_ref(), layout, "PaymentProcessed").await;
    let auctions: HashSet<String> = payments
        .iter()
        .map(|(_, payment)| {
            data(payment)["auction_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(payments.len(), AUCTIONS, "one payment per auction");
    assert_eq!(auctions.len(), AUCTIONS, "no auction paid twice");
    let mut crossed = 0;
    for (partition, payment) in &payments {
        let bidder = data(payment)["bidder_id"]
            .as_str()
            .expect("bidder")
            .to_string();
        assert_eq!(payment.extension(PARTITION_KEY), Some(bidder.as_str()));
        assert_eq!(
            *partition,
            layout.for_key(&bidder).partition(),
            "in its bidder's partition"
        );
        let auction = data(payment)["auction_id"]
            .as_str()
            .expect("id")
            .to_string();
        if layout.for_key(&auction).partition() != *partition {
            crossed += 1;
        }
    }
    assert!(
        crossed > 0,
        "some payments crossed partitions (through the outbox)"
    );
    let notifications = events_in(broker.as_ref(), layout, "NotificationSent").await;
    let recipients: BTreeMap<String, usize> =
        notifications
            .iter()
            .fold(BTreeMap::new(), |mut counts, (_, notification)| {
                let recipient = data(notification)["recipient"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                *counts.entry(recipient).or_default() += 1;
                counts
            });
    for bidder in 0..BIDDERS {
        let email = format!("b-{bidder}@example.com");
        let wins = (0..AUCTIONS)
            .filter(|auction| auction % BIDDERS == bidder)
            .count();
        assert_eq!(
            recipients.get(&email),
            Some(&(1 + wins)),
            "a welcome and one per win, found in the bidder's partition: {recipients:?}"
        );
    }

    // Audit saw every event once, each in its partition's journal.
    let expected = BIDDERS + AUCTIONS + AUCTIONS + BIDDERS + AUCTIONS;
    wait_for("an audit record per event", TIMEOUT, || async {
        let mut records = 0;
        for keyspace in layout.each_partition() {
            records += broker.len(&keyspace.journal("audit")).await.expect("XLEN");
        }
        records == expected as u64
    })
    .await;
    for keyspace in layout.each_partition() {
        let outbox = keyspace.outbox().expect("outbox");
        assert_eq!(
            broker.len(&outbox).await.expect("XLEN"),
            0,
            "{outbox} drained"
        );
    }
    // Notifications are keyed by bidder like the payments that cause them: only payments
    // crossed partitions.
    assert_eq!(
        metric(&host, "evhost_relay_moved_total{from=\"outbox\"}"),
        crossed
    );

    // Every key of the keyspace carries a partition's tag, but the keyspace-wide records: the
    // partition count, plugin starts, the roll call of hosts and the registry of streams.
    let mut conn = raw_connection(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    for key in &keys {
        assert!(
            key == "evhost:partitions"
                || key.starts_with("evhost:started:")
                || key == "evhost:hosts"
                || key == "evhost:streams"
                || key.starts_with("evhost:{p"),
            "a key outside the partitions: {key}"
        );
    }
    host.stop().await;
}

/// The fields the relay writes for an ingress entry keyed by `key`.
fn moved_fields(stream: &str, id: EntryId, fields: &Fields, key: &str) -> Fields {
    let mut event = Event::from_entry(stream, id, fields).expect("an event");
    event.set_extension(PARTITION_KEY, key);
    event.to_fields()
}

/// Producers that know nothing of partitions write `events:AuctionEnded` in the seeds'
/// formats; the relay moves each entry into the partition of its `auction_id` (the
/// `--ingress-key`), once. A relay that died after moving an entry but before acknowledging
/// it (its entries pending, one of them already moved), and an outbox entry it left the same
/// way, are taken over: every entry ends up exactly once in its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_outbox_entries_are_moved_exactly_once_after_a_relay_crash() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(4))
        .await
        .expect("4 partitions");
    let ingress = layout.ingress_stream("AuctionEnded");
    for auction in 0..6 {
        let payload = json!({"auction_id": format!("a-{auction}"), "winning_bidder_id": "b", "winning_price": 1, "action": "ok"}).to_string();
        let fields: &[(&str, &str)] = match auction % 3 {
            0 => &[("payload", &payload)],
            1 => &[(
                "data",
                &format!(r#"{{"type":"AuctionEnded","data":{payload}}}"#),
            )],
            _ => &[
                ("id", &format!("ce-{auction}")),
                ("type", "AuctionEnded"),
                ("specversion", "1.0"),
                ("data", &payload),
            ],
        };
        xadd(broker.as_ref(), &ingress, fields).await;
    }
    // A relay that read the first three entries, moved the first, and died.
    broker
        .create_group(&ingress, GROUP, GroupStart::Beginning)
        .await
        .expect("group");
    let mut reader = broker.reader().await.expect("reader");
    let taken = reader
        .read(
            &ingress,
            GROUP,
            "dead-relay",
            ReadFrom::New { block: None },
            3,
        )
        .await
        .expect("read");
    assert_eq!(taken.len(), 3);
    let first = &taken[0].entry;
    let first_target = layout.for_key("a-0");
    let appended = broker
        .append_once(
            &first_target.event_stream("AuctionEnded"),
            &moved_fields(&ingress, first.id, &first.fields, "a-0"),
            &first_target.moved_mark(&ingress, &first.id.to_string()),
            Duration::from_secs(60),
        )
        .await
        .expect("moved before the crash");
    assert!(appended);
    // The same relay's outbox entry of partition 1, bound for partition 2, moved and not acked.
    let outbox = layout.at(1).outbox().expect("outbox");
    let ping = Event::new("ProbePing", "test", br#"{"action":"ok"}"#.to_vec());
    let target = layout.at(2).event_stream("ProbePing");
    let mut fields: Fields = vec![(TARGET_FIELD.to_string(), target.clone().into_bytes())];
    fields.extend(ping.to_fields());
    let outbox_id = broker.add(&outbox, &fields).await.expect("XADD outbox");
    broker
        .create_group(&outbox, GROUP, GroupStart::Beginning)
        .await
        .expect("group");
    let taken = reader
        .read(
            &outbox,
            GROUP,
            "dead-relay",
            ReadFrom::New { block: None },
            10,
        )
        .await
        .expect("read");
    assert_eq!(taken.len(), 1);
    broker
        .append_once(
            &target,
            &ping.to_fields(),
            &layout.at(2).moved_mark(&outbox, &outbox_id.to_string()),
            Duration::from_secs(60),
        )
        .await
        .expect("moved before the crash");

    let mut options = partitioned(fast_options("p-host"), layout);
    options.consumer.claim_idle = Duration::from_millis(300);
    options.ingress_keys =
        evhost::relay::IngressKeys::parse(&["AuctionEnded=auction_id".into()]).expect("rule");
    // The entries were there before the plugin first ran: it reads from the beginning.
    let mut ingest = probe("ingest", "AuctionEnded,ProbePing");
    ingest.settings.start = GroupStart::Beginning;
    let host = TestHost::start(broker.clone(), options, vec![ingest]).await;
    wait_for("every ingress entry handled", TIMEOUT, || async {
        let mut journal = 0;
        for keyspace in layout.each_partition() {
            journal += broker.len(&keyspace.journal("ingest")).await.expect("XLEN");
        }
        journal == 7
    })
    .await;
    // Settled: nothing left pending for the relay, and nothing handled twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved = events_in(broker.as_ref(), layout, "AuctionEnded").await;
    assert_eq!(moved.len(), 6, "each ingress entry moved once: {moved:?}");
    for (partition, event) in &moved {
        let auction = data(event)["auction_id"].as_str().expect("id").to_string();
        assert_eq!(event.extension(PARTITION_KEY), Some(auction.as_str()));
        assert_eq!(*partition, layout.for_key(&auction).partition());
    }
    let event_ids: HashSet<&str> = moved.iter().map(|(_, event)| event.id.as_str()).collect();
    assert_eq!(event_ids.len(), 6);
    assert!(
        event_ids.contains("ce-2") && event_ids.contains("ce-5"),
        "ids kept"
    );
    assert_eq!(
        broker.len(&target).await.expect("XLEN"),
        1,
        "one copy of the publish"
    );
    assert_eq!(
        broker.len(&outbox).await.expect("XLEN"),
        0,
        "outbox drained"
    );
    for stream in [&ingress, &outbox] {
        let groups = broker.groups(stream).await.expect("groups");
        let relay = groups
            .iter()
            .find(|group| group.name == GROUP)
            .expect("relay group");
        assert_eq!(relay.pending, 0, "{stream}: nothing pending for the relay");
    }
    let journal_entries = {
        let mut all = Vec::new();
        for keyspace in layout.each_partition() {
            all.extend(
                broker
                    .range(
                        &keyspace.journal("ingest"),
                        EntryId::ZERO,
                        EntryId::MAX,
                        100,
                    )
                    .await
                    .expect("XRANGE"),
            );
        }
        all
    };
    let handled: HashSet<String> = journal_entries.iter().map(journal_event_id).collect();
    assert_eq!(handled.len(), 7, "every event handled exactly once");
    assert_eq!(
        metric(&host, "evhost_relay_moved_total{from=\"ingress\"}"),
        5
    );
    assert_eq!(
        metric(&host, "evhost_relay_moved_total{from=\"outbox\"}"),
        0
    );
    host.stop().await;
}

/// The holder of each partition's lease, by partition.
pub(crate) async fn lease_holders(broker: &dyn Broker, layout: Keyspace) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for keyspace in layout.each_partition() {
        let holder = broker.get(&keyspace.lease()).await.expect("GET");
        holders.push(holder.map(|value| String::from_utf8_lossy(&value).into_owned()));
    }
    holders
}

fn leased(consumer: &str, layout: Keyspace) -> HostOptions {
    HostOptions {
        lease_ttl: Duration::from_millis(900),
        ..partitioned(fast_options(consumer), layout)
    }
}

/// Two hosts share the partitions, one lease each; when one stops, the other takes its
/// partitions over. Every event is handled exactly once (committed once), and the events of
/// each key in the order they were published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_partitions_and_keep_each_keys_order_through_a_takeover() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(4))
        .await
        .expect("4 partitions");
    let a = TestHost::start(
        broker.clone(),
        leased("host-a", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;
    let b = TestHost::start(
        broker.clone(),
        leased("host-b", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;
    wait_for("two partitions each", TIMEOUT, || async {
        let holders = lease_holders(broker.as_ref(), layout).await;
        let of = |host: &str| {
            holders
                .iter()
                .filter(|holder| holder.as_deref() == Some(host))
                .count()
        };
        of("host-a") == 2 && of("host-b") == 2
    })
    .await;

    const KEYS: usize = 10;
    let mut published: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut publish_round = |round: usize| {
        let mut events = Vec::new();
        for seq in 0..20 {
            let key = format!("k-{}", seq % KEYS);
            let mut event = Event::new(
                "ProbeOrder",
                "test",
                json!({"action": "ok"}).to_string().into_bytes(),
            );
            event.set_extension(PARTITION_KEY, &key);
            published.insert(event.id.clone(), (key, round * 20 + seq));
            events.push(event);
        }
        events
    };
    for event in publish_round(0) {
        broker
            .add(&event.stream_in(layout), &event.to_fields())
            .await
            .expect("XADD");
    }
    let journal_len = || async {
        let mut records = 0;
        for keyspace in layout.each_partition() {
            records += broker.len(&keyspace.journal("keyed")).await.expect("XLEN");
        }
        records
    };
    wait_for("the first round handled", TIMEOUT, || async {
        journal_len().await == 20
    })
    .await;
    b.stop().await;
    for event in publish_round(1) {
        broker
            .add(&event.stream_in(layout), &event.to_fields())
            .await
            .expect("XADD");
    }
    wait_for("host-a holds every partition", TIMEOUT, || async {
        lease_holders(broker.as_ref(), layout)
            .await
            .iter()
            .all(|holder| holder.as_deref() == Some("host-a"))
    })
    .await;
    wait_for("every event handled", TIMEOUT, || async {
        journal_len().await == 40
    })
    .await;

    let mut handled = HashSet::new();
    let mut last_seq: BTreeMap<String, usize> = BTreeMap::new();
    for keyspace in layout.each_partition() {
        let records = broker
            .range(
                &keyspace.journal("keyed"),
                EntryId::ZERO,
                EntryId::MAX,
                1000,
            )
            .await
            .expect("XRANGE");
        for record in records {
            let event_id = journal_event_id(&record);
            assert!(
                handled.insert(event_id.clone()),
                "{event_id} committed twice"
            );
            let (key, seq) = published.get(&event_id).expect("a published event").clone();
            assert_eq!(layout.for_key(&key), keyspace, "{key} in its partition");
            if let Some(last) = last_seq.insert(key.clone(), seq) {
                assert!(last < seq, "{key}: event {seq} handled after {last}");
            }
        }
    }
    assert_eq!(handled.len(), 40);
    a.stop().await;
    assert_eq!(
        lease_holders(broker.as_ref(), layout).await,
        vec![None; 4],
        "a host that stops gives its leases up"
    );
}

/// A host whose lease was taken while it stalled commits nothing: the partition's lease is
/// given to another owner under its feet; the event it then handles is refused at commit
/// (fenced), and the host gives the partition up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lost_its_lease_commits_nothing() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(2))
        .await
        .expect("2 partitions");
    let options = HostOptions {
        lease_ttl: Duration::from_secs(30),
        ..partitioned(fast_options("stalled"), layout)
    };
    let host = TestHost::start(broker.clone(), options, vec![probe("fenced", "ProbeFence")]).await;
    let first = layout.at(0);
    // Where the stream exists and its consumer runs.
    let mut warmup = Event::new("ProbeFence", "test", br#"{"action":"ok"}"#.to_vec());
    let key = (0..)
        .map(|n| format!("w-{n}"))
        .find(|key| layout.for_key(key) == first)
        .expect("a key");
    warmup.set_extension(PARTITION_KEY, &key);
    broker
        .add(&warmup.stream_in(layout), &warmup.to_fields())
        .await
        .expect("XADD");
    wait_for("the warm-up handled", TIMEOUT, || async {
        broker.len(&first.journal("fenced")).await.expect("XLEN") == 1
    })
    .await;
    // Another host took partition 0 while this one stalled.
    let mut conn = raw_connection(&server).await;
    let _: () = redis::cmd("SET")
        .arg(first.lease())
        .arg("other-host")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let mut late = Event::new("ProbeFence", "test", br#"{"action":"ok"}"#.to_vec());
    late.set_extension(PARTITION_KEY, &key);
    broker
        .add(&late.stream_in(layout), &late.to_fields())
        .await
        .expect("XADD");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        broker.len(&first.journal("fenced")).await.expect("XLEN"),
        1,
        "nothing of the late event was committed"
    );
    let groups = broker
        .groups(&first.event_stream("ProbeFence"))
        .await
        .expect("groups");
    let group = groups
        .iter()
        .find(|group| group.name == "fenced")
        .expect("group");
    assert_eq!(
        group.pending, 1,
        "the late event waits for the partition's owner"
    );
    assert_eq!(
        lease_holders(broker.as_ref(), layout).await,
        vec![Some("other-host".to_string()), Some("stalled".to_string())]
    );
    host.stop().await;
}

/// Ordered retries: an event of key `k1` that fails twice holds back the later events of
/// `k1`, which are handled after it, in order; the events of `k2` flow meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_retries_hold_a_keys_later_events_back() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut plugin = probe("ordered", "ProbeOrdered");
    plugin.settings.ordered_retries = true;
    plugin.settings.retry.base = Duration::from_millis(200);
    plugin.settings.retry.cap = Duration::from_millis(400);
    let host = TestHost::start(broker.clone(), fast_options("ordered-host"), vec![plugin]).await;
    let layout = Keyspace::single();
    let mut ids = BTreeMap::new();
    for (name, key, data) in [
        (
            "first",
            "k1",
            json!({"action": "fail-until", "attempts": 3}),
        ),
        ("second", "k1", json!({"action": "ok"})),
        ("other", "k2", json!({"action": "ok"})),
        ("third", "k1", json!({"action": "ok"})),
    ] {
        let mut event = Event::new("ProbeOrdered", "test", data.to_string().into_bytes());
        event.set_extension(PARTITION_KEY, key);
        broker
            .add(&event.stream_in(layout), &event.to_fields())
            .await
            .expect("XADD");
        ids.insert(event.id.clone(), name);
    }
    let journal = layout.journal("ordered");
    wait_for("every event handled", TIMEOUT, || async {
        broker.len(&journal).await.expect("XLEN") == 4
    })
    .await;
    let order: Vec<&str> = broker
        .range(&journal, EntryId::ZERO, EntryId::MAX, 10)
        .await
        .expect("XRANGE")
        .iter()
        .map(|record| {
            let event_id = journal_event_id(record);
            *ids.get(&event_id).expect("a published event")
        })
        .collect();
    assert_eq!(
        order,
        ["other", "first", "second", "third"],
        "k2 flowed, k1 in order"
    );
    host.stop().await;
}

/// Dead letters are kept in the partition of their event; listing gathers them from every
/// partition, and a redrive puts each back into its own partition, where the plugin handles
/// it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_stay_in_their_partition_and_are_redriven_there() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(4))
        .await
        .expect("4 partitions");
    let host = TestHost::start(
        broker.clone(),
        partitioned(fast_options("dlq-host"), layout),
        vec![probe("picky", "ProbePicky")],
    )
    .await;
    let keys: Vec<String> = {
        let mut keys: Vec<String> = Vec::new();
        for n in 0.. {
            let key = format!("key-{n}");
            if keys
                .iter()
                .all(|other| layout.for_key(other) != layout.for_key(&key))
            {
                keys.push(key);
            }
            if keys.len() == 2 {
                break;
            }
        }
        keys
    };
    for key in &keys {
        publish_keyed(
            broker.as_ref(),
            layout,
            "ProbePicky",
            key,
            json!({"action": "reject"}),
        )
        .await;
    }
    wait_for("two dead letters", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), layout, "picky", 10)
            .await
            .expect("list")
            .len()
            == 2
    })
    .await;
    let letters = evhost::dlq::list(broker.as_ref(), layout, "picky", 10)
        .await
        .expect("list");
    let streams: HashSet<String> = letters
        .iter()
        .map(|letter| letter.dlq_stream.clone())
        .collect();
    let expected: HashSet<String> = keys
        .iter()
        .map(|key| layout.for_key(key).dead_letters("picky"))
        .collect();
    assert_eq!(streams, expected, "each in its event's partition");
    let moved = evhost::dlq::redrive(broker.as_ref(), layout, "picky", &letters)
        .await
        .expect("redrive");
    assert_eq!(moved, 2);
    for key in &keys {
        let redrive = layout.for_key(key).redrive("picky");
        assert_eq!(broker.len(&redrive).await.expect("XLEN"), 1, "{redrive}");
    }
    // Handled again there (and rejected again: back among the dead letters).
    wait_for("the redriven events handled again", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), layout, "picky", 10)
            .await
            .expect("list")
            .len()
            == 2
    })
    .await;
    host.stop().await;
}

/// The calls of `command` the server answered since its statistics were last reset.
async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    server_info(server, "commandstats")
        .await
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A partitioned host finds its streams in the registry, not by walking the keyspace: a stream
/// registered after the host started is consumed at once, and passes every 100 ms (discovery,
/// relay, leases) send no `SCAN` between the occasional full scans (60 s here).
#[tokio::test]
async fn partitioned_hosts_find_streams_in_the_registry_without_scanning() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(4))
        .await
        .expect("4 partitions");
    let mut options = partitioned(fast_options("registry-host"), layout);
    options.full_scan_interval = Duration::from_secs(60);
    let host = TestHost::start(broker.clone(), options, vec![probe("idle", "ProbeLate")]).await;
    // Past the host's first full scan: only the registry can tell it about this stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut event = Event::new("ProbeLate", "test", b"{}".to_vec());
    event.set_extension(PARTITION_KEY, "k-1");
    let stream = event.stream_in(layout);
    evhost::stream_registry::register(broker.as_ref(), layout, std::slice::from_ref(&stream))
        .await
        .expect("register");
    broker.add(&stream, &event.to_fields()).await.expect("XADD");
    let journal = layout.for_key("k-1").journal("idle");
    wait_for("the registered stream consumed", TIMEOUT, || async {
        broker.len(&journal).await.expect("XLEN") == 1
    })
    .await;

    let mut conn = raw_connection(&server).await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        command_calls(&server, "smembers").await >= 5,
        "the host read the registry on its passes"
    );
    assert_eq!(
        command_calls(&server, "scan").await,
        0,
        "no pass walked the keyspace"
    );
    host.stop().await;
}
