//! Redis Cluster: a local cluster of 3 primaries and 3 replicas (append-only files on), started
//! by each test. The broker's every operation on a cluster (the conformance cases, each in a
//! slot of its own), the refusal of a keyspace without partitions, the saga across three
//! hosts with every effect exactly once, and processing through failovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use evhost::broker::conformance;
use evhost::broker::redis::WaitReplicas;
use evhost::broker::{Broker, Commit, EntryId, Inspect as _, Op};
use evhost::event::{Event, PARTITION_KEY};
use evhost::partition::{self, PartitionsError};
use evhost::{HostOptions, Keyspace, RedisBroker};
use evhost_tests::{
    LogCapture, RedisCluster, TestHost, cluster_broker, example, fast_options, journal_event_id,
    probe, wait_for,
};
use serde_json::json;

use super::partitions::{count_in, data, events_in, lease_holders, partitioned, publish_keyed};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Every conformance case on the cluster: each case's keys share a hash tag, so each case runs
/// in one slot, and the cases together run on every primary (scans of every node included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_broker_conforms() {
    let cluster = RedisCluster::start();
    let broker = cluster_broker(&cluster).await;
    assert!(broker.is_cluster(), "the seeds are taken for a cluster");
    conformance::run_all(broker.as_ref()).await;
}

/// A keyspace without partitions is refused on a cluster, with the command that fixes it;
/// once a count is fixed, every command sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_needs_a_partitioned_keyspace() {
    let cluster = RedisCluster::start();
    // One seed is enough to find the whole cluster.
    let first = cluster.nodes()[0].url();
    let broker = RedisBroker::connect(&first)
        .await
        .expect("connect through one seed");
    assert!(broker.is_cluster());
    let refused = partition::recorded(&broker).await.expect_err("refused");
    assert!(
        matches!(refused, PartitionsError::ClusterNeedsPartitions),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("evhost init --partitions"),
        "{refused}"
    );
    let layout = partition::resolve(&broker, NonZeroU32::new(6))
        .await
        .expect("6 partitions");
    assert_eq!(layout.partitions(), 6);
    assert_eq!(
        partition::recorded(&broker)
            .await
            .expect("recorded")
            .partitions(),
        6
    );
}

/// Leases of 1.5 s: a cluster's failover takes a second or two.
fn leased(consumer: &str, layout: Keyspace) -> HostOptions {
    HostOptions {
        lease_ttl: Duration::from_millis(1500),
        ..partitioned(fast_options(consumer), layout)
    }
}

/// The saga on a cluster with three hosts, each with its own connections, sharing 8
/// partitions: registrations keyed by bidder, auctions keyed by auction (half written to the
/// partitions, half to the ingress stream a producer that knows nothing of partitions uses).
/// One payment per auction, one notification per payment and registration, one audit record
/// per event, outboxes and ingress drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_on_a_cluster_with_three_hosts_exactly_once() {
    let cluster = RedisCluster::start();
    let broker = cluster_broker(&cluster).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(8))
        .await
        .expect("8 partitions");
    let mut hosts = Vec::new();
    for name in ["c-host-a", "c-host-b", "c-host-c"] {
        let own: Arc<dyn Broker> = cluster_broker(&cluster).await;
        let plugins = ["payment", "notification", "audit", "metrics"]
            .map(example)
            .to_vec();
        hosts.push(TestHost::start(own, leased(name, layout), plugins).await);
    }
    wait_for("the partitions shared by three hosts", TIMEOUT, || async {
        let holders = lease_holders(broker.as_ref(), layout).await;
        let distinct: BTreeSet<&Option<String>> = holders.iter().collect();
        holders.iter().all(Option::is_some) && distinct.len() == 3
    })
    .await;

    const BIDDERS: usize = 12;
    const AUCTIONS: usize = 60;
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
        if auction % 2 == 0 {
            publish_keyed(broker.as_ref(), layout, "AuctionEnded", &id, ended).await;
        } else {
            let mut event = Event::new("AuctionEnded", "test", ended.to_string().into_bytes());
            event.set_extension(PARTITION_KEY, &id);
            broker
                .add(&layout.ingress_stream("AuctionEnded"), &event.to_fields())
                .await
                .expect("XADD to the ingress stream");
        }
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
    let notifications = events_in(broker.as_ref(), layout, "NotificationSent").await;
    let recipients: HashSet<String> = notifications
        .iter()
        .map(|(_, notification)| {
            data(notification)["recipient"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    assert_eq!(notifications.len(), BIDDERS + AUCTIONS);
    assert_eq!(
        recipients.len(),
        BIDDERS,
        "every bidder found: {recipients:?}"
    );
    let expected = (BIDDERS + AUCTIONS + AUCTIONS + BIDDERS + AUCTIONS) as u64;
    wait_for("an audit record per event", TIMEOUT, || async {
        let mut records = 0;
        for keyspace in layout.each_partition() {
            records += broker.len(&keyspace.journal("audit")).await.expect("XLEN");
        }
        records == expected
    })
    .await;
    for keyspace in layout.each_partition() {
        let outbox = keyspace.outbox().expect("outbox");
        assert_eq!(broker.len(&outbox).await.expect("XLEN"), 0, "{outbox}");
    }
    let ingress = layout.ingress_stream("AuctionEnded");
    let groups = broker.groups(&ingress).await.expect("XINFO GROUPS");
    assert!(
        groups.iter().all(|group| group.pending == 0),
        "{ingress} drained: {groups:?}"
    );
    for host in hosts {
        host.stop().await;
    }
}

/// Every journal record of `plugin` in every partition: the id of the event it records.
async fn journaled(broker: &dyn Broker, layout: Keyspace, plugin: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for keyspace in layout.each_partition() {
        let records = broker
            .range(
                &keyspace.journal(plugin),
                EntryId::ZERO,
                EntryId::MAX,
                100_000,
            )
            .await
            .expect("XRANGE");
        ids.extend(records.iter().map(journal_event_id));
    }
    ids
}

/// `CLUSTER FAILOVER` on every replica in turn while events arrive: each primary hands its
/// slots over (the partitions' streams, groups, leases and scripts move to a new primary) and
/// the host follows. Every event is handled, and its effect (a journal record, committed with
/// its acknowledgement) exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_goes_on_through_a_failover_of_every_primary() {
    let cluster = RedisCluster::start();
    let broker = cluster_broker(&cluster).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(6))
        .await
        .expect("6 partitions");
    let own: Arc<dyn Broker> = cluster_broker(&cluster).await;
    let host = TestHost::start(
        own,
        leased("f-host", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;

    let producer = produce(broker.clone(), layout, 600, keys(20, |_| true));
    let replicas = cluster.replica_ports().expect("the replicas");
    assert_eq!(replicas.len(), 3);
    for replica in replicas {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tokio::task::block_in_place(|| cluster.failover(replica)).expect("CLUSTER FAILOVER");
    }
    let published = producer.await.expect("the producer");
    assert_handled_once(broker.as_ref(), layout, &published).await;
    host.stop().await;
}

/// SIGKILL of a primary under load, with `appendfsync always` and `--wait-replicas 1`: its
/// replica takes over after the node timeout, the killed node comes back as a replica, and
/// processing goes on. Every event whose publish a replica confirmed is handled, and no
/// event's effect exists twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_loses_no_confirmed_event_and_doubles_no_effect() {
    let mut cluster = RedisCluster::start_with(&["--appendfsync", "always"]);
    let wait = WaitReplicas {
        replicas: 1,
        timeout: Duration::from_secs(1),
    };
    let waiting = || async {
        RedisBroker::connect(&cluster.url())
            .await
            .expect("connect to the cluster")
            .with_wait_replicas(wait)
    };
    let producer_broker = Arc::new(waiting().await);
    let layout = partition::resolve(producer_broker.as_ref(), NonZeroU32::new(6))
        .await
        .expect("6 partitions");
    let own: Arc<dyn Broker> = Arc::new(waiting().await);
    let host = TestHost::start(
        own,
        leased("k-host", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;

    const EVENTS: usize = 500;
    let producer = {
        let broker = producer_broker.clone();
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            for seq in 0..EVENTS {
                let mut event = Event::new(
                    "ProbeOrder",
                    "test",
                    json!({"action": "ok"}).to_string().into_bytes(),
                );
                event.set_extension(PARTITION_KEY, format!("k-{}", seq % 20));
                let commit = Commit {
                    ops: vec![Op::Add {
                        stream: event.stream_in(layout),
                        fields: event.to_fields(),
                    }],
                    settlements: Vec::new(),
                };
                let shortfalls = broker.replication_shortfalls();
                // A publish that failed or that no replica confirmed may be lost with the
                // primary: only the confirmed ones must be handled.
                if broker.commit(&commit).await.is_ok()
                    && broker.replication_shortfalls() == shortfalls
                {
                    confirmed.push(event.id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            confirmed
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = cluster.primary_ports().expect("the primaries")[0];
    cluster.node_mut(victim).expect("the victim").kill();
    tokio::task::block_in_place(|| cluster.wait_for_primaries(3)).expect("a replica took over");
    cluster
        .node_mut(victim)
        .expect("the victim")
        .restart()
        .expect("the killed node restarts");
    let confirmed = producer.await.expect("the producer");
    assert!(
        confirmed.len() > EVENTS / 2,
        "most publishes were confirmed: {}",
        confirmed.len()
    );
    let confirmed: HashSet<String> = confirmed.into_iter().collect();
    wait_for("every confirmed event handled", TIMEOUT, || async {
        let handled: HashSet<String> = journaled(producer_broker.as_ref(), layout, "keyed")
            .await
            .into_iter()
            .collect();
        confirmed.is_subset(&handled)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handled = journaled(producer_broker.as_ref(), layout, "keyed").await;
    let unique: HashSet<&String> = handled.iter().collect();
    assert_eq!(
        unique.len(),
        handled.len(),
        "an event's effect committed twice"
    );
    host.stop().await;
}

/// `evhost doctor` on a cluster checks every primary and replica, each finding naming its node,
/// and that every primary has a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_checks_every_node_of_a_cluster() {
    let cluster =
        RedisCluster::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "100mb"]);
    let broker = cluster_broker(&cluster).await;
    let report = evhost::doctor::examine(&broker).await;
    let eviction: Vec<&evhost::doctor::Finding> = report
        .findings
        .iter()
        .filter(|finding| finding.check == "eviction")
        .collect();
    assert_eq!(eviction.len(), 6, "one per node: {eviction:?}");
    assert!(
        eviction
            .iter()
            .all(|finding| finding.level == evhost::doctor::Level::Danger)
    );
    for node in cluster.nodes() {
        let address = format!("127.0.0.1:{}", node.port());
        assert!(
            eviction
                .iter()
                .any(|finding| finding.found.starts_with(&address)),
            "{address} checked: {eviction:?}"
        );
    }
    assert!(
        eviction
            .iter()
            .any(|finding| finding.found.contains("(replica)")),
        "{eviction:?}"
    );
    let replicas = report
        .findings
        .iter()
        .find(|finding| finding.check == "replicas")
        .expect("the replica check");
    assert_eq!(replicas.level, evhost::doctor::Level::Ok, "{replicas:?}");
}

/// Keys `k-0`, `k-1`, ...: the first `count` for which `keep` holds.
fn keys(count: usize, mut keep: impl FnMut(&str) -> bool) -> Vec<String> {
    (0..10_000)
        .map(|n| format!("k-{n}"))
        .filter(|key| keep(key))
        .take(count)
        .collect()
}

/// Publishes `events` probe events keyed over `keys` in turn, one every 8 ms, and returns
/// their ids.
fn produce(
    broker: Arc<RedisBroker>,
    layout: Keyspace,
    events: usize,
    keys: Vec<String>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut published = Vec::with_capacity(events);
        for seq in 0..events {
            let mut event = Event::new(
                "ProbeOrder",
                "test",
                json!({"action": "ok"}).to_string().into_bytes(),
            );
            event.set_extension(PARTITION_KEY, &keys[seq % keys.len()]);
            broker
                .add(&event.stream_in(layout), &event.to_fields())
                .await
                .unwrap_or_else(|err| panic!("XADD of event {seq}: {err}"));
            published.push(event.id);
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
        published
    })
}

/// Waits until every event of `published` has its journal record, then checks that none has
/// two.
async fn assert_handled_once(broker: &dyn Broker, layout: Keyspace, published: &[String]) {
    wait_for("every event handled", TIMEOUT, || async {
        journaled(broker, layout, "keyed").await.len() >= published.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handled = journaled(broker, layout, "keyed").await;
    let unique: HashSet<&String> = handled.iter().collect();
    assert_eq!(
        unique.len(),
        handled.len(),
        "an event's effect committed twice"
    );
    let published: HashSet<&String> = published.iter().collect();
    assert_eq!(unique, published, "every published event handled");
}

/// `redis-cli --cluster reshard` moves every slot of a primary (partition 0's among them) to
/// another while events arrive: commits whose keys are mid-migration are redirected or retried,
/// never applied in part, and processing goes on in the slots' new home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_goes_on_while_slots_are_resharded() {
    let cluster = RedisCluster::start();
    let broker = cluster_broker(&cluster).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(6))
        .await
        .expect("6 partitions");
    let own: Arc<dyn Broker> = cluster_broker(&cluster).await;
    let host = TestHost::start(
        own,
        leased("r-host", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;
    let producer = produce(broker.clone(), layout, 600, keys(20, |_| true));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = layout.at(0).lease();
    let from = cluster
        .primary_of_key(&lease)
        .expect("partition 0's primary");
    let to = cluster
        .primary_ports()
        .expect("the primaries")
        .into_iter()
        .find(|port| *port != from)
        .expect("another primary");
    tokio::task::block_in_place(|| cluster.reshard(from, to, 16384)).expect("reshard");
    assert_eq!(cluster.primary_of_key(&lease).expect("moved"), to);
    let published = producer.await.expect("the producer");
    assert_handled_once(broker.as_ref(), layout, &published).await;
    host.stop().await;
}

/// A primary cut off for 4 s (SIGSTOP: no answers, no closed connections) under load: the
/// cluster fails it over, the host says what fails while it is away, and when it is back
/// (resumed, now a replica) every event is handled once. (A current-thread runtime, so that
/// the log capture sees the host's lines.)
#[tokio::test(flavor = "current_thread")]
async fn a_node_away_for_a_while_is_reported_and_recovered_from() {
    let logs = LogCapture::start();
    let cluster = RedisCluster::start();
    let broker = cluster_broker(&cluster).await;
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(6))
        .await
        .expect("6 partitions");
    let own: Arc<dyn Broker> = cluster_broker(&cluster).await;
    let host = TestHost::start(
        own,
        leased("u-host", layout),
        vec![probe("keyed", "ProbeOrder")],
    )
    .await;
    // The producer writes only to partitions the paused node does not serve: a write it took
    // while cut off may be lost when it comes back as a replica, and so would be a publish.
    // The host's own writes there may be lost the same way: they are done again.
    let lease = layout.at(0).lease();
    let away = cluster
        .primary_of_key(&lease)
        .expect("partition 0's primary");
    let elsewhere = keys(20, |key| {
        cluster
            .primary_of_key(&layout.for_key(key).lease())
            .is_ok_and(|port| port != away)
    });
    let producer = produce(broker.clone(), layout, 400, elsewhere);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node = cluster
        .nodes()
        .iter()
        .find(|node| node.port() == away)
        .expect("the node");
    node.pause().expect("SIGSTOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    node.resume().expect("SIGCONT");
    wait_for("the cluster settled", TIMEOUT, || async {
        cluster.serves_with(3)
    })
    .await;
    let published = producer.await.expect("the producer");
    assert_handled_once(broker.as_ref(), layout, &published).await;
    // The leases on the node away are kept while their renewals fail, each failure said.
    // (Whether a lease elsewhere lapsed depends on the machine's load: a commit under a lapsed
    // lease is fenced and handled again, which the count above covers.)
    let failed = logs.lines_with("partition lease cannot be renewed");
    assert!(
        failed
            .iter()
            .any(|line| line.contains("no answer from Redis")),
        "the host said what failed while the node was away: {failed:?}"
    );
    host.stop().await;
}
