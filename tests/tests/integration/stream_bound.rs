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
    redis_broker, wait_for,
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
