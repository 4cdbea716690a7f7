//! The admin endpoint of a host on a real redis-server: `/metrics` parses with a Prometheus
//! text parser and shows the counts the test produced (handled, published, group lag and
//! pending); `/api/streams` answers with the bearer token only, `/healthz` and `/readyz`
//! without.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use evhost::admin;
use evhost::admin_client::{AdminClient, AdminError};
use evhost::stream_stats::StreamStats;
use evhost_tests::{
    KEYS, RedisServer, TestHost, create_group, example, fast_options, publish, redis_broker,
    wait_for,
};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn scrape(url: &str) -> Scrape {
    let text = AdminClient::new(url, None)
        .get_text("/metrics")
        .await
        .expect("GET /metrics");
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("Prometheus text parses")
}

/// The value of the sample of `metric` whose labels include all of `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|sample: &&Sample| sample.metric == metric)
        .find(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .and_then(|sample| match sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => Some(value),
            Value::Histogram(_) | Value::Summary(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_admin_json_show_what_happened() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("admin-host"),
        vec![example("payment")],
    )
    .await;
    let cancel = CancellationToken::new();
    let bound = admin::serve(
        host.host.clone(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        admin::AdminToken::new(Some("s3cret")),
        cancel.clone(),
    )
    .await
    .expect("bind the admin endpoint");
    let url = format!("http://{bound}");

    for n in 0..3 {
        publish(
            broker.as_ref(),
            "AuctionEnded",
            json!({"auction_id": format!("a-{n}"), "winning_bidder_id": "b-1", "winning_price": 10}),
        )
        .await;
    }
    // A group no plugin serves: it shows in /api/streams, not in the plugin gauges.
    create_group(broker.as_ref(), "AuctionEnded", "offline-reporting").await;
    wait_for("three payments handled", TIMEOUT, || async {
        let scrape = scrape(&url).await;
        value(
            &scrape,
            "evhost_events_handled_total",
            &[
                ("plugin", "payment"),
                ("stream", "events:AuctionEnded"),
                ("outcome", "ok"),
            ],
        ) == Some(3.0)
    })
    .await;

    let metrics = scrape(&url).await;
    assert_eq!(
        value(
            &metrics,
            "evhost_events_published_total",
            &[("plugin", "payment"), ("type", "PaymentProcessed")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &metrics,
            "evhost_group_pending",
            &[("plugin", "payment"), ("stream", "events:AuctionEnded")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &metrics,
            "evhost_group_lag",
            &[("plugin", "payment"), ("stream", "events:AuctionEnded")]
        ),
        Some(0.0)
    );
    assert!(
        value(&metrics, "evhost_plugin_info", &[("plugin", "payment")]) == Some(1.0),
        "plugin info sample"
    );
    assert!(
        metrics
            .samples
            .iter()
            .any(|sample| sample.metric == "evhost_handler_duration_seconds"),
        "handler histogram"
    );

    for token in [None, Some("wrong".to_string()), Some("s3cre".to_string())] {
        let refused = AdminClient::new(&url, token.clone())
            .get_json::<Vec<StreamStats>>("/api/streams")
            .await;
        assert!(
            matches!(refused, Err(AdminError::Unauthorized { .. })),
            "{token:?}: {refused:?}"
        );
    }
    let streams: Vec<StreamStats> = AdminClient::new(&url, Some("s3cret".into()))
        .get_json("/api/streams")
        .await
        .expect("GET /api/streams");
    let auctions = streams
        .iter()
        .find(|stream| stream.stream == KEYS.event_stream("AuctionEnded"))
        .expect("the AuctionEnded stream");
    assert_eq!(auctions.length, 3);
    let offline = auctions
        .groups
        .iter()
        .find(|group| group.group == "offline-reporting")
        .expect("the offline group");
    assert_eq!((offline.pending, offline.lag), (0, Some(3)));
    assert!(
        value(
            &metrics,
            "evhost_group_lag",
            &[("plugin", "offline-reporting")]
        )
        .is_none(),
        "only loaded plugins' groups are gauged"
    );
    assert!(
        streams.iter().any(
            |stream| stream.stream == KEYS.event_stream("PaymentProcessed") && stream.length == 3
        ),
        "{streams:?}"
    );

    assert_eq!(
        AdminClient::new(&url, None)
            .get_text("/healthz")
            .await
            .expect("healthz"),
        "ok\n"
    );
    assert_eq!(
        AdminClient::new(&url, None)
            .get_text("/readyz")
            .await
            .expect("readyz"),
        "ready\n"
    );
    // What the start-up checks of the Redis settings found (the test server keeps nothing on
    // disk) shows in /readyz, still ready, and in the metrics.
    host.host
        .set_doctor_report(evhost::doctor::examine(&broker).await);
    let ready = AdminClient::new(&url, None)
        .get_text("/readyz")
        .await
        .expect("readyz");
    assert!(
        ready.starts_with("ready\n") && ready.contains("danger persistence: no append-only file"),
        "{ready}"
    );
    let doctor = scrape(&url).await;
    assert_eq!(
        value(
            &doctor,
            "evhost_doctor_findings",
            &[("check", "persistence"), ("level", "danger")]
        ),
        Some(1.0)
    );

    // Redis gone: not ready, and the scrape still answers.
    drop(server);
    let err = AdminClient::new(&url, None)
        .get_text("/readyz")
        .await
        .expect_err("not ready without Redis");
    assert!(err.to_string().contains("503"), "{err}");
    let metrics = scrape(&url).await;
    assert_eq!(
        value(
            &metrics,
            "evhost_events_handled_total",
            &[
                ("plugin", "payment"),
                ("stream", "events:AuctionEnded"),
                ("outcome", "ok"),
            ]
        ),
        Some(3.0)
    );
    cancel.cancel();
    host.stop().await;
}
