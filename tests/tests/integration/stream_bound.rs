//! Streams and consumers stay bounded: a plugin subscribed to a pattern that matches a flood of
//! new event types consumes at most `max_streams_per_plugin` streams in a host; the others are
//! left in Redis, with one warning and a gauge, while every plugin keeps serving.
//!
//! A `current_thread` runtime, so that [`LogCapture`] sees the host's warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use evhost::broker::Inspect;
use evhost_tests::{
    KEYS, LogCapture, RedisServer, TestHost, fast_options, journal, metric, probe, publish,
    redis_broker, server_info, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_event_types_opens_at_most_the_bound_of_consumers() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut options = fast_options("bound-host");
    options.max_streams_per_plugin = 3;
    let host = TestHost::start(
        broker.clone(),
        options,
        vec![probe("wide", "ProbeWide*"), probe("bystander", "ProbeCalm")],
    )
    .await;
    for n in 0..6 {
        publish(broker.as_ref(), &format!("ProbeWide{n}"), json!({})).await;
    }
    publish(broker.as_ref(), "ProbeCalm", json!({})).await;
    wait_for(
        "three streams served and three counted unserved",
        TIMEOUT,
        || async {
            journal(broker.as_ref(), "wide").await.len() == 3
                && metric(&host, "evhost_streams_unserved{plugin=\"wide\"}") == 3
        },
    )
    .await;
    wait_for("the bystander served", TIMEOUT, || async {
        journal(broker.as_ref(), "bystander").await.len() == 1
    })
    .await;
    // Several discovery passes later (every 100 ms), still three, and the same three.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(journal(broker.as_ref(), "wide").await.len(), 3);
    let mut consumed = 0;
    for n in 0..6 {
        let groups = broker
            .groups(&KEYS.event_stream(&format!("ProbeWide{n}")))
            .await
            .expect("XINFO GROUPS");
        if groups.iter().any(|group| group.name == "wide") {
            consumed += 1;
        }
    }
    assert_eq!(consumed, 3, "groups (and consumers) on three streams only");
    let warnings = logs.lines_with("more streams than this host serves per plugin");
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    host.stop().await;
}

/// The number of clients connected to `server`.
async fn connected_clients(server: &RedisServer) -> u64 {
    server_info(server, "clients")
        .await
        .lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("connected_clients in INFO")
}

/// Connections do not grow with the streams consumed: forty streams cost the host its few
/// shared connections. Reads wait 60 s and pending entries are looked at every 60 s, so events
/// published while every consumer waits are handled at once only if the wake-ups work.
#[tokio::test]
async fn forty_streams_share_a_few_connections_and_wake_at_once() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let before = connected_clients(&server).await;
    let mut options = fast_options("wide-host");
    options.consumer.block = Duration::from_secs(60);
    options.consumer.retry_interval = Duration::from_secs(60);
    let host = TestHost::start(
        broker.clone(),
        options,
        vec![probe("wide", "ProbeMany*"), probe("calm", "ProbeMany0")],
    )
    .await;
    for round in 1..=2 {
        for n in 0..40 {
            publish(
                broker.as_ref(),
                &format!("ProbeMany{n}"),
                json!({ "round": round }),
            )
            .await;
        }
        wait_for(
            &format!("round {round}: every event handled"),
            TIMEOUT,
            || async {
                journal(broker.as_ref(), "wide").await.len() == 40 * round
                    && journal(broker.as_ref(), "calm").await.len() == round
            },
        )
        .await;
        // Every consumer waits again before the next round.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let opened = connected_clients(&server).await.saturating_sub(before);
    assert!(
        opened <= 8,
        "41 consumers of 40 streams opened {opened} connections (expected a few shared ones)"
    );
    host.stop().await;
}
