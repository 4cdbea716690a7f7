//! Delivery semantics on a real redis-server: fan-out across groups, load sharing within a
//! group, acknowledgement only on success, redelivery after a restart, malformed entries and
//! trapping plugins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use evhost::activity::{Activity, OutcomeKind};
use evhost::broker::Broker;
use evhost_tests::{
    KEYS, RedisServer, TestHost, fast_options, journal, pending_count, probe, publish,
    redis_broker, wait_for, xadd,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Event ids recorded in a probe's journal, with how often each was recorded.
async fn handled_ids(broker: &dyn Broker, plugin: &str) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for record in journal(broker, plugin).await {
        *ids.entry(record.get("event_id").cloned().unwrap_or_default())
            .or_default() += 1;
    }
    ids
}

/// Two plugins subscribed to the same type are two groups: each gets every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_gives_every_plugin_every_event() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("fan-host"),
        vec![probe("probe-a", "ProbeFan"), probe("probe-b", "Probe*")],
    )
    .await;
    let mut sent = BTreeSet::new();
    for index in 0..50 {
        sent.insert(
            publish(
                broker.as_ref(),
                "ProbeFan",
                json!({"action": "ok", "n": index}),
            )
            .await
            .id,
        );
    }
    for plugin in ["probe-a", "probe-b"] {
        wait_for(
            &format!("{plugin} to handle 50 events"),
            TIMEOUT,
            || async { journal(broker.as_ref(), plugin).await.len() >= 50 },
        )
        .await;
        let ids = handled_ids(broker.as_ref(), plugin).await;
        assert_eq!(
            ids.keys().cloned().collect::<BTreeSet<_>>(),
            sent,
            "{plugin} got every event"
        );
        assert!(
            ids.values().all(|count| *count == 1),
            "{plugin} handled each event once"
        );
        assert_eq!(pending_count(broker.as_ref(), "ProbeFan", plugin).await, 0);
    }
    host.stop().await;
}

/// Two hosts with distinct consumer names share one group: together they handle every event
/// exactly once, and both take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_a_group_split_the_work() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut options = fast_options("worker-1");
    options.consumer.batch_size = 5;
    let first = TestHost::start(
        broker.clone(),
        options.clone(),
        vec![probe("shared", "ProbeShare")],
    )
    .await;
    options.consumer.consumer = "worker-2".into();
    let second =
        TestHost::start(broker.clone(), options, vec![probe("shared", "ProbeShare")]).await;

    let counts: Vec<Arc<AtomicUsize>> =
        vec![Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    for (host, count) in [&first, &second].iter().zip(&counts) {
        let mut feed = host.host.services().activity.subscribe();
        let count = count.clone();
        tokio::spawn(async move {
            while let Ok(activity) = feed.recv().await {
                if let Activity::Handled {
                    outcome: OutcomeKind::Ok,
                    ..
                } = activity
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let mut sent = BTreeSet::new();
    for index in 0..200 {
        sent.insert(
            publish(broker.as_ref(), "ProbeShare", json!({"n": index}))
                .await
                .id,
        );
        if index % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for("200 events handled", TIMEOUT, || async {
        journal(broker.as_ref(), "shared").await.len() >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = handled_ids(broker.as_ref(), "shared").await;
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), sent);
    assert!(
        ids.values().all(|count| *count == 1),
        "no event handled twice"
    );
    let (a, b) = (
        counts[0].load(Ordering::SeqCst),
        counts[1].load(Ordering::SeqCst),
    );
    assert_eq!(a + b, 200);
    assert!(a > 0 && b > 0, "both hosts took part: {a} and {b}");
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeShare", "shared").await,
        0
    );
    first.stop().await;
    second.stop().await;
}

/// A handler error leaves the entry pending and commits none of its effects; a restarted
/// host with the same consumer name re-delivers it (attempt 2), and then it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_stay_pending_and_are_redelivered_after_restart() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut options = fast_options("restart-host");
    options.consumer.retry_interval = Duration::from_secs(600);
    let host = TestHost::start(
        broker.clone(),
        options.clone(),
        vec![probe("flaky", "ProbeFlaky")],
    )
    .await;
    let event = publish(
        broker.as_ref(),
        "ProbeFlaky",
        json!({"action": "fail-until", "attempts": 2}),
    )
    .await;
    let after = publish(broker.as_ref(), "ProbeFlaky", json!({"action": "ok"})).await;
    wait_for("the next event to be handled", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "flaky")
            .await
            .contains_key(&after.id)
    })
    .await;
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeFlaky", "flaky").await,
        1,
        "failed entry left pending"
    );
    assert!(
        !handled_ids(broker.as_ref(), "flaky")
            .await
            .contains_key(&event.id),
        "no effect of the failed call"
    );
    let pending = broker
        .pending(
            &KEYS.event_stream("ProbeFlaky"),
            "flaky",
            Duration::ZERO,
            10,
        )
        .await
        .expect("XPENDING");
    assert_eq!(pending[0].consumer, "restart-host");
    host.stop().await;

    let host = TestHost::start(broker.clone(), options, vec![probe("flaky", "ProbeFlaky")]).await;
    wait_for("the redelivered event to be handled", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "flaky")
            .await
            .contains_key(&event.id)
    })
    .await;
    let record = journal(broker.as_ref(), "flaky")
        .await
        .into_iter()
        .find(|record| record.get("event_id") == Some(&event.id))
        .expect("journal record");
    assert_eq!(record.get("attempt").map(String::as_str), Some("2"));
    wait_for("nothing pending", TIMEOUT, || async {
        pending_count(broker.as_ref(), "ProbeFlaky", "flaky").await == 0
    })
    .await;
    host.stop().await;
}

/// A failed entry is retried by the running host after the retry interval, with the attempt
/// number from Redis's delivery count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_are_retried_while_running() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("retry-host"),
        vec![probe("retrier", "ProbeRetry")],
    )
    .await;
    let event = publish(
        broker.as_ref(),
        "ProbeRetry",
        json!({"action": "fail-until", "attempts": 3}),
    )
    .await;
    wait_for("the third attempt to succeed", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "retrier")
            .await
            .contains_key(&event.id)
    })
    .await;
    let record = journal(broker.as_ref(), "retrier").await.remove(0);
    assert_eq!(record.get("attempt").map(String::as_str), Some("3"));
    wait_for("nothing pending", TIMEOUT, || async {
        pending_count(broker.as_ref(), "ProbeRetry", "retrier").await == 0
    })
    .await;
    host.stop().await;
}

/// Entries that are not events, and events a plugin rejects, are never acknowledged as
/// successes: each goes to the plugin's dead-letter stream with its reason, in the same commit
/// as its acknowledgement; the events after them are handled normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_rejected_entries_are_dead_lettered() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("bad-host"),
        vec![probe("strict", "ProbeBad")],
    )
    .await;
    let unknown = xadd(
        broker.as_ref(),
        &KEYS.event_stream("ProbeBad"),
        &[("foo", "bar")],
    )
    .await;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("ProbeBad"),
        &[("payload", "{not json")],
    )
    .await;
    let rejected = publish(broker.as_ref(), "ProbeBad", json!({"action": "reject"})).await;
    let good = publish(broker.as_ref(), "ProbeBad", json!({"action": "ok"})).await;
    wait_for("the good event", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "strict")
            .await
            .contains_key(&good.id)
    })
    .await;
    wait_for("three dead letters", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "strict", 100)
            .await
            .expect("dlq")
            .len()
            == 3
    })
    .await;
    let letters = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "strict", 100)
        .await
        .expect("dlq");
    assert_eq!(letters[0].reason, "malformed");
    assert_eq!(letters[0].entry_id, unknown.to_string());
    assert_eq!(letters[0].stream, KEYS.event_stream("ProbeBad"));
    assert_eq!(
        letters[0].fields,
        vec![("foo".to_string(), "bar".to_string())],
        "original fields kept"
    );
    assert!(
        letters[0].error.contains("unrecognised entry format"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[1].reason, "malformed");
    assert_eq!(letters[2].reason, "rejected");
    assert_eq!(letters[2].event_id, rejected.id);
    assert_eq!(letters[2].plugin_version, "1");
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeBad", "strict").await,
        0,
        "dead letters are acknowledged"
    );
    let text = host.host.services().metrics.render();
    assert!(text.contains("evhost_events_handled_total{plugin=\"strict\",stream=\"events:ProbeBad\",outcome=\"malformed\"} 2"), "{text}");
    assert!(
        text.contains("evhost_dead_letters_total{plugin=\"strict\",reason=\"rejected\"} 1"),
        "{text}"
    );
    host.stop().await;
}

/// A plugin that traps loses only that call: the entry stays pending, a fresh instance handles
/// the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_discards_the_instance_not_the_host() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut options = fast_options("trap-host");
    options.consumer.retry_interval = Duration::from_secs(600);
    let host = TestHost::start(
        broker.clone(),
        options,
        vec![
            probe("trappy", "ProbeTrap"),
            probe("bystander", "ProbeTrap"),
        ],
    )
    .await;
    let before = publish(broker.as_ref(), "ProbeTrap", json!({"action": "ok"})).await;
    let trap = publish(broker.as_ref(), "ProbeTrap", json!({"action": "trap"})).await;
    let after = publish(broker.as_ref(), "ProbeTrap", json!({"action": "ok"})).await;
    wait_for("the event after the trap", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "trappy")
            .await
            .contains_key(&after.id)
    })
    .await;
    let ids = handled_ids(broker.as_ref(), "trappy").await;
    assert!(
        ids.contains_key(&before.id),
        "effects before the trap were committed"
    );
    assert!(!ids.contains_key(&trap.id));
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeTrap", "trappy").await,
        1
    );
    wait_for("the bystander", TIMEOUT, || async {
        journal(broker.as_ref(), "bystander").await.len() == 2
    })
    .await;
    let text = host.host.services().metrics.render();
    assert!(text.contains("outcome=\"trap\"} 1"), "{text}");
    host.stop().await;
}

/// A plugin that rejects until its configuration is fixed: its dead letter is re-driven after
/// the fix (a sidecar change reloads the plugin) and handled by that plugin alone; another
/// plugin on the same stream never sees the event twice. A transient failure that never
/// heals is dead-lettered after `max_attempts`, exactly once, and its entry acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_to_one_plugin_only() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = |name: &str, action: &str| {
        format!(
            "[config]\nname = \"{name}\"\nsubscriptions = \"ProbeRedrive\"\naction = \"{action}\"\n[retry]\nmax_attempts = 3\nbase_ms = 50\n"
        )
    };
    for name in ["fixer", "other"] {
        std::fs::write(
            dir.path().join(format!("{name}.wasm")),
            evhost_tests::guests::PROBE,
        )
        .expect("write plugin");
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            sidecar(name, if name == "fixer" { "reject" } else { "ok" }),
        )
        .expect("write sidecar");
    }
    let host =
        TestHost::start_watching(broker.clone(), fast_options("redrive-host"), dir.path()).await;
    let event = publish(
        broker.as_ref(),
        "ProbeRedrive",
        json!({"action": "configured"}),
    )
    .await;
    wait_for("the dead letter", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "fixer", 10)
            .await
            .expect("dlq")
            .len()
            == 1
    })
    .await;
    wait_for("the other plugin", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "other")
            .await
            .contains_key(&event.id)
    })
    .await;

    // Fix the configuration: the sidecar change reloads the plugin.
    std::fs::write(dir.path().join("fixer.toml"), sidecar("fixer", "ok")).expect("fix sidecar");
    wait_for("the reload", TIMEOUT, || async {
        host.host
            .services()
            .metrics
            .render()
            .contains("evhost_plugin_reloads_total{plugin=\"fixer\",result=\"ok\"} 2")
    })
    .await;
    let letters = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "fixer", 10)
        .await
        .expect("dlq");
    assert_eq!(
        evhost::dlq::redrive(
            broker.as_ref(),
            evhost::Keyspace::single(),
            "fixer",
            &letters
        )
        .await
        .expect("redrive"),
        1
    );
    wait_for("the redriven event", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "fixer").await.get(&event.id) == Some(&1)
    })
    .await;
    let record = journal(broker.as_ref(), "fixer").await.remove(0);
    assert_eq!(
        record.get("stream").map(String::as_str),
        Some(KEYS.event_stream("ProbeRedrive").as_str()),
        "the plugin sees the original stream"
    );
    assert!(
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "fixer", 10)
            .await
            .expect("dlq")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handled_ids(broker.as_ref(), "other").await.get(&event.id),
        Some(&1),
        "the other group never saw it again"
    );
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeRedrive", "fixer").await,
        0
    );

    // A failure that never heals: three attempts, then exactly one dead letter.
    let doomed = publish(broker.as_ref(), "ProbeRedrive", json!({"action": "fail"})).await;
    wait_for("the max-attempts dead letter", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "fixer", 10)
            .await
            .expect("dlq")
            .len()
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let letters = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "fixer", 10)
        .await
        .expect("dlq");
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    assert_eq!(letters[0].event_id, doomed.id);
    assert_eq!(letters[0].reason, "max-attempts");
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeRedrive", "fixer").await,
        0,
        "source acknowledged"
    );
    host.stop().await;
}

/// After a `FLUSHALL` (or a Redis restart without persistence) the groups are gone: the host
/// recreates them by itself and handles the events that arrive afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_lost_in_a_flush_are_recreated() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("flush-host"),
        vec![probe("flushed", "ProbeFlush")],
    )
    .await;
    let before = publish(broker.as_ref(), "ProbeFlush", json!({})).await;
    wait_for("the first event", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "flushed")
            .await
            .contains_key(&before.id)
    })
    .await;
    let mut conn = evhost_tests::raw_connection(&server).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHALL");
    let after = publish(broker.as_ref(), "ProbeFlush", json!({})).await;
    wait_for("the event after the flush", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "flushed")
            .await
            .contains_key(&after.id)
    })
    .await;
    wait_for("nothing pending", TIMEOUT, || async {
        pending_count(broker.as_ref(), "ProbeFlush", "flushed").await == 0
    })
    .await;
    host.stop().await;
}

/// `limits.concurrency = 4`: four consumers of this host read the stream in parallel (named
/// `<consumer>`, `<consumer>#2`, ...); together they handle every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_runs_several_consumers_per_stream() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut options = fast_options("parallel");
    options.consumer.batch_size = 5;
    let mut plugin = probe("parallel", "ProbeParallel");
    plugin.settings.concurrency = std::num::NonZeroUsize::new(4);
    let host = TestHost::start(broker.clone(), options, vec![plugin]).await;
    let mut sent = BTreeSet::new();
    for index in 0..200 {
        sent.insert(
            publish(broker.as_ref(), "ProbeParallel", json!({"n": index}))
                .await
                .id,
        );
    }
    wait_for("200 events handled", TIMEOUT, || async {
        journal(broker.as_ref(), "parallel").await.len() >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = handled_ids(broker.as_ref(), "parallel").await;
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), sent);
    assert!(
        ids.values().all(|count| *count == 1),
        "no event handled twice"
    );
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeParallel", "parallel").await,
        0
    );
    let mut conn = evhost_tests::raw_connection(&server).await;
    let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(KEYS.event_stream("ProbeParallel"))
        .arg("parallel")
        .query_async(&mut conn)
        .await
        .expect("XINFO CONSUMERS");
    let mut names: Vec<String> = consumers
        .iter()
        .map(|consumer| {
            redis::from_redis_value_ref(consumer.get("name").expect("a name"))
                .expect("a string name")
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["parallel", "parallel#2", "parallel#3", "parallel#4"],
        "four consumers in the group"
    );
    host.stop().await;
}

/// With `partition_key` and `concurrency = 4`, a trap stops only its lane: the events its lane
/// had not reached yet are handled after the batch so far is committed, by a fresh instance;
/// every other event is handled exactly once, the events of each key in stream order, and the
/// trapped entries stay pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_lane_stops_only_that_lane() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut plugin = probe("laned", "ProbeLanes");
    plugin.settings.start = evhost::broker::GroupStart::Beginning;
    plugin.settings.concurrency = std::num::NonZeroUsize::new(4);
    plugin.settings.partition_key = Some("key".into());
    let traps = [5, 22];
    let mut sent = Vec::new();
    for n in 0..40 {
        let action = if traps.contains(&n) { "trap" } else { "ok" };
        let key = format!("k{}", n % 4);
        let event = publish(
            broker.as_ref(),
            "ProbeLanes",
            json!({"action": action, "key": key}),
        )
        .await;
        sent.push((event.id, key, action));
    }
    let mut options = fast_options("lanes-host");
    options.consumer.retry_interval = Duration::from_secs(600);
    let host = TestHost::start(broker.clone(), options, vec![plugin]).await;
    wait_for("the 38 events that do not trap", TIMEOUT, || async {
        handled_ids(broker.as_ref(), "laned").await.len() >= 38
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = handled_ids(broker.as_ref(), "laned").await;
    for (id, _, action) in &sent {
        let expected = usize::from(*action == "ok");
        assert_eq!(
            ids.get(id).copied().unwrap_or(0),
            expected,
            "{action} event {id}"
        );
    }
    // The journal is in commit order: per key it must be stream order.
    let journaled: Vec<String> = journal(broker.as_ref(), "laned")
        .await
        .into_iter()
        .filter_map(|record| record.get("event_id").cloned())
        .collect();
    for key in ["k0", "k1", "k2", "k3"] {
        let in_stream: Vec<&String> = sent
            .iter()
            .filter(|(_, k, action)| k == key && *action == "ok")
            .map(|(id, _, _)| id)
            .collect();
        let in_journal: Vec<&String> = journaled
            .iter()
            .filter(|id| in_stream.contains(id))
            .collect();
        assert_eq!(in_journal, in_stream, "events of {key} in stream order");
    }
    assert_eq!(
        pending_count(broker.as_ref(), "ProbeLanes", "laned").await,
        2,
        "the trapped entries stay pending"
    );
    let text = host.host.services().metrics.render();
    assert!(text.contains("outcome=\"trap\"} 2"), "{text}");
    host.stop().await;
}

/// Entries read ahead during a backlog are pending for the consumer but not failed: the retry
/// check must not claim them. With a retry backoff far shorter than a batch takes, every entry
/// of a backlog still reaches the handler exactly once (the defect: read-ahead entries were
/// claimed and handed to the plugin a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_backlog_every_entry_reaches_the_handler_once() {
    const EVENTS: usize = 2_000;
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    evhost_tests::create_group(broker.as_ref(), "ProbeBacklog", "backlog").await;
    for index in 0..EVENTS {
        publish(
            broker.as_ref(),
            "ProbeBacklog",
            json!({"action": "ok", "n": index}),
        )
        .await;
    }
    let mut spec = probe("backlog", "ProbeBacklog");
    spec.settings.retry = evhost::consumer::RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(2),
        cap: Duration::from_millis(2),
    };
    let host = TestHost::start(broker.clone(), fast_options("backlog-host"), vec![spec]).await;
    wait_for("the backlog to be handled", TIMEOUT, || async {
        journal(broker.as_ref(), "backlog").await.len() >= EVENTS
            && pending_count(broker.as_ref(), "ProbeBacklog", "backlog").await == 0
    })
    .await;
    // Long enough for several more retry checks (every 100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = host.host.services().metrics.plugin_stats("backlog");
    assert_eq!(
        (stats.handled, stats.failed),
        (EVENTS as u64, 0),
        "handler calls for {EVENTS} entries"
    );
    let ids = handled_ids(broker.as_ref(), "backlog").await;
    assert_eq!(ids.len(), EVENTS);
    assert!(ids.values().all(|count| *count == 1), "effects once each");
    host.stop().await;
}
