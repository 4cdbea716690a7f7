//! Key-value consistency on a real redis-server: read-modify-writes lose no update across
//! hosts, streams and lanes; increments add up without conflicts; a compare-and-swap that loses
//! its race tells the plugin; batch reads see uncommitted writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::time::Duration;

use evhost::broker::{Broker, Commit, Inspect, Op};
use evhost_tests::{
    KEYS, PluginSpec, RedisServer, TestHost, create_group, events_of, fast_options, metric,
    pending_count, probe, publish, redis_broker, wait_for,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const TYPES: [&str; 4] = ["ProbeKvA", "ProbeKvB", "ProbeKvC", "ProbeKvD"];

/// The probe as `name` on `subscriptions`, with `lanes` lanes by the data field `k`.
fn laned_probe(name: &str, subscriptions: &str, lanes: usize) -> PluginSpec {
    let mut plugin = probe(name, subscriptions);
    plugin.settings.partition_key = Some("k".into());
    plugin.settings.concurrency = NonZeroUsize::new(lanes);
    plugin
}

/// The plugin's key-value entry `key` as text.
async fn value(broker: &dyn Broker, plugin: &str, key: &str) -> Option<String> {
    broker
        .get(&KEYS.kv_key(plugin, key))
        .await
        .expect("GET")
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Two hosts, each consuming the four streams with four lanes, handle `count` events of the
/// four types with `data(i)`; returns the hosts once every event is acknowledged.
async fn two_hosts_handle(
    broker: &std::sync::Arc<evhost::RedisBroker>,
    plugin: &str,
    count: usize,
    data: impl Fn(usize) -> Value,
) -> [TestHost; 2] {
    for event_type in TYPES {
        create_group(broker.as_ref(), event_type, plugin).await;
    }
    let subscriptions = TYPES.join(",");
    let mut hosts = Vec::new();
    for name in ["kv-host-a", "kv-host-b"] {
        hosts.push(
            TestHost::start(
                broker.clone(),
                fast_options(name),
                vec![laned_probe(plugin, &subscriptions, 4)],
            )
            .await,
        );
    }
    for i in 0..count {
        publish(broker.as_ref(), TYPES[i % TYPES.len()], data(i)).await;
    }
    wait_for("every event acknowledged", TIMEOUT, || async {
        let mut pending = 0;
        let mut delivered = 0;
        for event_type in TYPES {
            pending += pending_count(broker.as_ref(), event_type, plugin).await;
            let groups = broker
                .groups(&KEYS.event_stream(event_type))
                .await
                .expect("XINFO GROUPS");
            delivered += groups
                .iter()
                .filter(|group| group.name == plugin)
                .map(|group| group.lag.unwrap_or(1))
                .sum::<u64>();
        }
        pending == 0 && delivered == 0
    })
    .await;
    let [a, b]: [TestHost; 2] = hosts.try_into().ok().expect("two hosts");
    [a, b]
}

/// The storm: every event reads and rewrites the one hot key `total` (and its type's count),
/// from two hosts, four streams and four lanes each. No update is lost, conflicts are counted,
/// and no event's effects show twice (each probe call also counts its own handling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_writes_lose_no_update_across_hosts_streams_and_lanes() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let events = 200;
    let hosts = two_hosts_handle(
        &broker,
        "counter",
        events,
        |i| json!({"action": "count", "k": format!("key{}", i % 16)}),
    )
    .await;
    assert_eq!(
        value(broker.as_ref(), "counter", "total").await.as_deref(),
        Some("200"),
        "the hot key counts every event"
    );
    for event_type in TYPES {
        assert_eq!(
            value(broker.as_ref(), "counter", &format!("total:{event_type}"))
                .await
                .as_deref(),
            Some("50"),
            "{event_type}"
        );
        for event in events_of(broker.as_ref(), event_type).await {
            assert_eq!(
                value(broker.as_ref(), "counter", &format!("handled:{}", event.id))
                    .await
                    .as_deref(),
                Some("1"),
                "event {} handled once in its effects",
                event.id
            );
        }
    }
    let conflicts: u64 = hosts
        .iter()
        .map(|host| metric(host, "evhost_kv_conflicts_total{plugin=\"counter\"}"))
        .sum();
    println!("{events} events on one hot key: {conflicts} conflicts handled again");
    for host in hosts {
        host.stop().await;
    }
}

/// Increments from two hosts, four streams and four lanes add up exactly and never conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_concurrent_consumers_sum_exactly_without_conflicts() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let events = 200;
    let by = |i: usize| (i % 7 + 1) as u64;
    let hosts = two_hosts_handle(
        &broker,
        "adder",
        events,
        |i| json!({"action": "increment", "by": by(i), "k": format!("key{}", i % 16)}),
    )
    .await;
    let sum: u64 = (0..events).map(by).sum();
    assert_eq!(
        value(broker.as_ref(), "adder", "counter").await,
        Some(sum.to_string())
    );
    for host in &hosts {
        assert_eq!(
            metric(host, "evhost_kv_conflicts_total{plugin=\"adder\"}"),
            0,
            "increments need no read, so they never conflict"
        );
    }
    for host in hosts {
        host.stop().await;
    }
}

/// Eight events in one batch, in different lanes, each try to swap the absent `slot` to their
/// own id: all see it absent, one commits, and the others are handled again, find it taken and
/// are told so. Exactly one swap wins, and the slot holds the winner's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_swap_that_loses_its_race_is_reported_to_the_plugin() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    create_group(broker.as_ref(), "ProbeCas", "swapper").await;
    // Published before the host starts: one read, one batch, eight lanes.
    for i in 0..8 {
        publish(
            broker.as_ref(),
            "ProbeCas",
            json!({"action": "cas", "k": format!("lane{i}")}),
        )
        .await;
    }
    let host = TestHost::start(
        broker.clone(),
        fast_options("cas-host"),
        vec![laned_probe("swapper", "ProbeCas", 8)],
    )
    .await;
    wait_for("eight swap results", TIMEOUT, || async {
        events_of(broker.as_ref(), "ProbeCasResult").await.len() >= 8
    })
    .await;
    let results = events_of(broker.as_ref(), "ProbeCasResult").await;
    assert_eq!(results.len(), 8, "one result per event: {results:?}");
    let winners: Vec<String> = results
        .iter()
        .map(|result| serde_json::from_slice::<Value>(&result.data).expect("JSON"))
        .filter(|data| data["swapped"] == json!(true))
        .map(|data| data["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one swap wins: {winners:?}");
    assert_eq!(
        value(broker.as_ref(), "swapper", "slot").await.as_deref(),
        Some(winners[0].as_str())
    );
    assert!(
        metric(&host, "evhost_kv_conflicts_total{plugin=\"swapper\"}") >= 1,
        "the losers' first handlings conflicted"
    );
    host.stop().await;
}

/// `get-many` reads, in one call, the call's own writes, the batch's uncommitted writes and
/// committed values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_reads_uncommitted_and_committed_values() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    broker
        .commit(&Commit {
            ops: vec![Op::Set {
                key: KEYS.kv_key("getter", "c"),
                value: b"3".to_vec(),
            }],
            settlements: Vec::new(),
        })
        .await
        .expect("commit");
    create_group(broker.as_ref(), "ProbeGet", "getter").await;
    publish(
        broker.as_ref(),
        "ProbeGet",
        json!({"action": "get-many", "set": {"a": "1"}, "keys": ["a", "b"]}),
    )
    .await;
    publish(
        broker.as_ref(),
        "ProbeGet",
        json!({"action": "get-many", "keys": ["a", "b", "c"]}),
    )
    .await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("get-host"),
        vec![probe("getter", "ProbeGet")],
    )
    .await;
    wait_for("two results", TIMEOUT, || async {
        events_of(broker.as_ref(), "ProbeGetManyResult").await.len() >= 2
    })
    .await;
    let values: Vec<Value> = events_of(broker.as_ref(), "ProbeGetManyResult")
        .await
        .iter()
        .map(|event| serde_json::from_slice::<Value>(&event.data).expect("JSON")["values"].clone())
        .collect();
    assert_eq!(values, [json!(["1", null]), json!(["1", null, "3"])]);
    host.stop().await;
}
