//! The budget of a call and the plugin's log: a hostile probe spends past each limit, floods the
//! log and forges host log lines, while a bystander plugin handles every event it gets.
//!
//! These tests run on a `current_thread` runtime so that [`LogCapture`] sees every line the host
//! logs from its consumer tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use evhost::broker::Broker;
use evhost::plugin::CallLimits;
use evhost_tests::{
    LogCapture, RedisServer, TestHost, events_of, fast_options, journal, metric, probe, publish,
    raw_connection, redis_broker, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Events of the journal of `plugin` for the event `event_id`.
async fn journaled(broker: &dyn Broker, plugin: &str, event_id: &str) -> usize {
    journal(broker, plugin)
        .await
        .iter()
        .filter(|record| record.get("event_id").map(String::as_str) == Some(event_id))
        .count()
}

/// Publishes 20 events for the bystander; returns once it journaled them all.
async fn bystander_handles_everything(broker: &dyn Broker) {
    for n in 0..20 {
        publish(broker, "ProbeCalm", json!({"n": n})).await;
    }
    wait_for("the bystander to handle every event", TIMEOUT, || async {
        journal(broker, "bystander").await.len() == 20
    })
    .await;
}

/// Each dimension of the budget (bytes of publishes and of journal records, writes counting
/// deletes, key length, event types) is refused to the plugin with the limit's name; the call
/// then commits nothing, not even its bookkeeping, and is dead-lettered with the reason, though
/// the probe ignored every error and returned ok. A call within the budget commits; the
/// bystander handles every event meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn each_budget_dimension_is_refused_and_nothing_of_the_call_is_committed() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut spender = probe("spender", "ProbeSpend");
    spender.settings.call_limits = CallLimits {
        max_call_bytes: 64 * 1024,
        max_call_writes: 50,
        max_key_bytes: 64,
        max_call_event_types: 3,
    };
    let host = TestHost::start(
        broker.clone(),
        fast_options("budget-host"),
        vec![spender, probe("bystander", "ProbeCalm")],
    )
    .await;

    // Within the budget: three keys, committed.
    let within = publish(
        broker.as_ref(),
        "ProbeSpend",
        json!({"action": "effects", "sets": 3, "publishes": 3, "publish_types": 3}),
    )
    .await;
    wait_for("the call within budget", TIMEOUT, || async {
        journaled(broker.as_ref(), "spender", &within.id).await == 1
    })
    .await;
    let mut redis = raw_connection(&server).await;
    let key = |name: &str| format!("evhost:kv:{{spender}}:{name}");
    let exists = |redis: &mut redis::aio::MultiplexedConnection, name: String| {
        let mut redis = redis.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(name)
                .query_async::<u32>(&mut redis)
                .await
                .expect("EXISTS")
                == 1
        }
    };
    assert!(exists(&mut redis, key("fx:0")).await);
    let published_within = events_of(broker.as_ref(), "ProbeFx0").await.len();
    assert_eq!(published_within, 1);

    let cases = [
        (
            json!({"action": "effects", "publishes": 10, "publish_bytes": 10_000}),
            "max_call_bytes",
        ),
        (
            json!({"action": "effects", "journal": 10, "journal_bytes": 10_000}),
            "max_call_bytes",
        ),
        (
            json!({"action": "effects", "deletes": 60}),
            "max_call_writes",
        ),
        (
            json!({"action": "effects", "sets": 1, "key_bytes": 100}),
            "max_key_bytes",
        ),
        (
            json!({"action": "effects", "publishes": 4, "publish_types": 4}),
            "max_call_event_types",
        ),
    ];
    let mut over = Vec::new();
    for (data, limit) in &cases {
        over.push((
            publish(broker.as_ref(), "ProbeSpend", data.clone()).await,
            *limit,
        ));
    }
    bystander_handles_everything(broker.as_ref()).await;
    wait_for("every call over budget dead-lettered", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "spender", 100)
            .await
            .expect("dlq")
            .len()
            == cases.len()
    })
    .await;

    let letters = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "spender", 100)
        .await
        .expect("dlq");
    for (event, limit) in &over {
        let letter = letters
            .iter()
            .find(|letter| letter.event_id == event.id)
            .unwrap_or_else(|| panic!("no dead letter for the {limit} call"));
        assert_eq!(letter.reason, "rejected", "{limit}");
        assert_eq!(letter.attempts, 1, "{limit}: rejected at once, not retried");
        assert!(
            letter.error.contains("over the call budget") && letter.error.contains(limit),
            "{limit}: {}",
            letter.error
        );
        assert_eq!(
            journaled(broker.as_ref(), "spender", &event.id).await,
            0,
            "{limit}: nothing of the call committed, not even its journal record"
        );
        assert!(
            !exists(&mut redis, key(&format!("handled:{}", event.id))).await,
            "{limit}: nor its key-value writes"
        );
        assert!(
            metric(
                &host,
                &format!("evhost_effects_refused_total{{plugin=\"spender\",reason=\"{limit}\"}}")
            ) > 0,
            "{limit} counted"
        );
        // The plugin was told, with the limit's name.
        let told = logs.lines_with("effects refused: ");
        assert!(
            told.iter()
                .any(|line| line.contains("plugin=\"spender\"") && line.contains(limit)),
            "{limit}: {told:?}"
        );
    }
    assert!(
        exists(&mut redis, key("fx:0")).await,
        "the refused deletes were not committed"
    );
    let long_key = format!("fx:0{}", "k".repeat(96));
    assert!(
        !exists(&mut redis, key(&long_key)).await,
        "nor the long key"
    );
    for n in 0..4 {
        let published = events_of(broker.as_ref(), &format!("ProbeFx{n}"))
            .await
            .len();
        let expected = usize::from(n < 3);
        assert_eq!(
            published, expected,
            "ProbeFx{n}: only the call within budget"
        );
    }
    assert_eq!(
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "bystander", 10)
            .await
            .expect("dlq")
            .len(),
        0
    );
    host.stop().await;
}

/// Thousands of refused publishes, key-value writes and journal appends in one call give one log
/// line with the count and the first reason; refusals that do not fail the call (writes larger
/// than `max_event_bytes`) are summarised the same way, and that call commits.
#[tokio::test(flavor = "current_thread")]
async fn a_refusal_storm_gives_one_log_line() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("storm-host"),
        vec![
            probe("stormer", "ProbeStorm"),
            probe("bystander", "ProbeCalm"),
        ],
    )
    .await;
    // 10,000 writes allowed (the probe's own bookkeeping takes two): 20,000 publishes, 100 sets
    // and 100 journal appends leave 10,202 refused.
    let storm = publish(
        broker.as_ref(),
        "ProbeStorm",
        json!({"action": "effects", "publishes": 20_000, "sets": 100, "journal": 100}),
    )
    .await;
    let oversized = publish(
        broker.as_ref(),
        "ProbeStorm",
        json!({"action": "effects", "journal": 50, "journal_bytes": 1_100_000}),
    )
    .await;
    bystander_handles_everything(broker.as_ref()).await;
    wait_for("the oversized writes' call to commit", TIMEOUT, || async {
        journaled(broker.as_ref(), "stormer", &oversized.id).await == 1
    })
    .await;
    wait_for("the storm dead-lettered", TIMEOUT, || async {
        !evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "stormer", 10)
            .await
            .expect("dlq")
            .is_empty()
    })
    .await;
    assert_eq!(journaled(broker.as_ref(), "stormer", &storm.id).await, 0);

    let summaries: Vec<String> = logs
        .lines_with("effects refused in one call")
        .into_iter()
        .filter(|line| line.contains("plugin=\"stormer\""))
        .collect();
    assert_eq!(summaries.len(), 2, "one line per call: {summaries:?}");
    assert!(
        summaries[0].contains("refused=10202")
            && summaries[0].contains("max_call_writes")
            && summaries[0].contains("call_fails=true"),
        "{}",
        summaries[0]
    );
    assert!(
        summaries[1].contains("refused=50")
            && summaries[1].contains("max_event_bytes")
            && summaries[1].contains("call_fails=false"),
        "{}",
        summaries[1]
    );
    let refusal_lines = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains("refused") && !line.contains("effects refused: "))
        .count();
    assert_eq!(refusal_lines, 2, "no other refusal line");
    assert_eq!(
        metric(
            &host,
            "evhost_effects_refused_total{plugin=\"stormer\",reason=\"max_call_writes\"}"
        ),
        10_202
    );
    assert_eq!(
        metric(
            &host,
            "evhost_effects_refused_total{plugin=\"stormer\",reason=\"max_event_bytes\"}"
        ),
        50
    );
    host.stop().await;
}

/// A plugin's `wasi:logging` message with a newline, a forged host line and a terminal escape
/// comes out as separate lines of the plugin's module target, each tagged with the plugin, the
/// escape escaped, its context a field; a flood is cut to the burst, the drops are counted and
/// reported with the next line that passes.
#[tokio::test(flavor = "current_thread")]
async fn a_forged_log_line_comes_out_tagged_and_escaped() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("forge-host"),
        vec![
            probe("forger", "ProbeForge"),
            probe("bystander", "ProbeCalm"),
        ],
    )
    .await;
    publish(
        broker.as_ref(),
        "ProbeForge",
        json!({
            "action": "log",
            "level": "info",
            "context": "evhost::host",
            "text": "all good\nERROR evhost::host: redis connection lost \u{1b}[31mred",
        }),
    )
    .await;
    wait_for("the forged line", TIMEOUT, || async {
        !logs.lines_with("redis connection lost").is_empty()
    })
    .await;
    let forged = logs.lines_with("redis connection lost");
    assert_eq!(forged.len(), 1, "{forged:?}");
    let line = &forged[0];
    assert!(
        line.trim_start()
            .starts_with("INFO evhost::plugin::output: ERROR evhost::host:"),
        "the forged text follows the plugin's own level and target: {line}"
    );
    assert!(line.contains("plugin=\"forger\""), "{line}");
    assert!(line.contains("context=\"evhost::host\""), "{line}");
    assert!(line.contains("\\u{1b}[31mred"), "escaped: {line}");
    let first = logs.lines_with("all good");
    assert!(
        first.len() == 1 && first[0].contains("plugin=\"forger\""),
        "{first:?}"
    );
    assert!(
        logs.lines()
            .iter()
            .all(|line| !line.contains('\u{1b}')
                && !line.trim_start().starts_with("ERROR evhost::host")),
        "no raw escape, no forged host line"
    );

    let flood_started = std::time::Instant::now();
    let flood_event = publish(
        broker.as_ref(),
        "ProbeForge",
        json!({"action": "log", "text": "flood", "repeat": 2000}),
    )
    .await;
    wait_for("the flood's call", TIMEOUT, || async {
        journaled(broker.as_ref(), "forger", &flood_event.id).await == 1
    })
    .await;
    let flood = logs
        .lines_with("flood")
        .into_iter()
        .filter(|line| line.contains("plugin=\"forger\""))
        .count();
    let dropped = metric(
        &host,
        "evhost_plugin_log_lines_dropped_total{plugin=\"forger\"}",
    );
    // The burst, plus what the rate refilled while the call ran (long on a busy machine).
    let refilled = (50.0 * flood_started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        dropped > 0 && flood <= 200 + refilled + 1,
        "{flood} flood lines logged in {:?}",
        flood_started.elapsed()
    );
    assert_eq!(flood as u64 + dropped, 2000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(
        broker.as_ref(),
        "ProbeForge",
        json!({"action": "log", "text": "after the flood"}),
    )
    .await;
    wait_for("the line after the flood", TIMEOUT, || async {
        !logs.lines_with("after the flood").is_empty()
    })
    .await;
    // Every drop is reported, at the latest with the next line that passes.
    let lines = logs.lines();
    let after = lines
        .iter()
        .position(|line| line.contains("after the flood"))
        .expect("the line after the flood");
    let reported: u64 = lines[..after]
        .iter()
        .filter(|line| line.contains("plugin log lines dropped"))
        .map(|line| {
            assert!(line.contains("plugin=\"forger\""), "{line}");
            line.rsplit_once("dropped=")
                .and_then(|(_, count)| count.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no count in {line}"))
        })
        .sum();
    assert_eq!(reported, dropped, "{lines:?}");
    bystander_handles_everything(broker.as_ref()).await;
    host.stop().await;
}

/// A plugin that labels a counter with a fresh value per sample keeps at most 1,000 series of
/// it: the rest are dropped, counted and refused to the plugin, with one warning; `/metrics`
/// stays small, and the bystander handles every event meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn endless_metric_series_are_bounded_with_one_warning() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("series-host"),
        vec![
            probe("grower", "ProbeSeries"),
            probe("bystander", "ProbeCalm"),
        ],
    )
    .await;
    for _ in 0..2 {
        publish(
            broker.as_ref(),
            "ProbeSeries",
            json!({"action": "series", "count": 3000}),
        )
        .await;
    }
    bystander_handles_everything(broker.as_ref()).await;
    wait_for("both calls of the grower", TIMEOUT, || async {
        journal(broker.as_ref(), "grower").await.len() == 2
    })
    .await;
    let dropped = "evhost_plugin_metric_series_dropped_total{plugin=\"grower\"}";
    // 1,000 series fit; the first call is refused 2,000 new ones, the second 2,000 again (its
    // first 1,000 samples hit existing series).
    wait_for("the dropped samples counted", TIMEOUT, || async {
        metric(&host, dropped) == 4000
    })
    .await;
    let text = host.host.services().metrics.render();
    let series = text
        .lines()
        .filter(|line| {
            line.starts_with("evhost_plugin_probe_series_total{")
                && line.contains("plugin=\"grower\"")
        })
        .count();
    assert_eq!(series, 1000, "one series per label value, up to the bound");
    assert!(text.len() < 256 * 1024, "/metrics is {} bytes", text.len());
    let refused = logs.lines_with("series refused: 2000, first: ");
    assert_eq!(
        refused.len(),
        2,
        "the plugin is told each time: {refused:?}"
    );
    assert!(refused[0].contains("probe_series"), "{}", refused[0]);
    let warnings = logs.lines_with("plugin metric series bound reached");
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    host.stop().await;
}
