//! Stream retention on a real redis-server: a length rule trims what every group has
//! acknowledged, and never an entry a lagging group has not yet read, with one warning.
//!
//! A `current_thread` runtime, so that [`LogCapture`] sees the host's warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use evhost::broker::Inspect;
use evhost::retention::Retention;
use evhost_tests::{
    KEYS, LogCapture, RedisServer, TestHost, create_group, fast_options, journal, metric, probe,
    publish, redis_broker, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "current_thread")]
async fn a_length_rule_trims_what_every_group_acknowledged_and_nothing_a_lagging_group_needs() {
    let logs = LogCapture::start();
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    for event_type in ["ProbeKeepA", "ProbeKeepB"] {
        create_group(broker.as_ref(), event_type, "keeper").await;
    }
    // A group that never reads: everything of ProbeKeepB stays for it.
    create_group(broker.as_ref(), "ProbeKeepB", "lagger").await;
    let mut options = fast_options("retention-host");
    options.retention = Retention::parse(&["ProbeKeep*=10".into()], &[]).expect("rule");
    options.retention_interval = Duration::from_millis(100);
    let host = TestHost::start(broker.clone(), options, vec![probe("keeper", "ProbeKeep*")]).await;
    for n in 0..30 {
        for event_type in ["ProbeKeepA", "ProbeKeepB"] {
            publish(broker.as_ref(), event_type, json!({ "n": n })).await;
        }
    }
    let a = KEYS.event_stream("ProbeKeepA");
    let b = KEYS.event_stream("ProbeKeepB");
    wait_for("ProbeKeepA trimmed to 10 entries", TIMEOUT, || async {
        broker.len(&a).await.expect("XLEN") == 10
    })
    .await;
    assert_eq!(
        journal(broker.as_ref(), "keeper").await.len(),
        60,
        "every event handled"
    );
    // A few passes later: still 10 in A, all 30 in B.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.len(&a).await.expect("XLEN"), 10);
    assert_eq!(
        broker.len(&b).await.expect("XLEN"),
        30,
        "the lagging group needs them"
    );
    assert_eq!(
        metric(
            &host,
            "evhost_retention_trimmed_total{stream=\"events:ProbeKeepA\"}"
        ),
        20
    );
    let warnings = logs.lines_with("retention: this group has not yet delivered");
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    assert!(warnings[0].contains("lagger"), "{}", warnings[0]);
    host.stop().await;
}
