//! The auction saga end to end on a real redis-server, with the four example plugins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use evhost::broker::Broker as _;
use evhost::broker::Inspect as _;
use evhost::event::{CAUSATION_ID, CORRELATION_ID, PARTITION_KEY};
use evhost_tests::{
    KEYS, RedisServer, TestHost, events_of, example, fast_options, journal, pending_count,
    redis_broker, wait_for, xadd,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(20);

fn data(event: &evhost::Event) -> Value {
    serde_json::from_slice(&event.data).expect("JSON data")
}

/// Starting from raw `XADD`s in the seed 001 format (`payload` field), a registration and an
/// auction flow through payment and notification; audit and metrics see every event; every
/// group ends with nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_runs_end_to_end_from_seed_payload_entries() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let plugins = ["payment", "notification", "audit", "metrics"]
        .map(example)
        .to_vec();
    let host = TestHost::start(broker.clone(), fast_options("saga-host"), plugins).await;

    xadd(
        broker.as_ref(),
        &KEYS.event_stream("BidderRegistered"),
        &[(
            "payload",
            r#"{"bidder_id":"b-1","name":"Ada Lovelace","email":"ada@example.com"}"#,
        )],
    )
    .await;
    wait_for("the welcome notification", TIMEOUT, || async {
        events_of(broker.as_ref(), "NotificationSent").await.len() == 1
    })
    .await;
    let auction_entry = xadd(
        broker.as_ref(),
        &KEYS.event_stream("AuctionEnded"),
        &[(
            "payload",
            r#"{"auction_id":"a-1","winning_bidder_id":"b-1","winning_price":250.5}"#,
        )],
    )
    .await;

    wait_for(
        "PaymentProcessed and its NotificationSent",
        TIMEOUT,
        || async { events_of(broker.as_ref(), "NotificationSent").await.len() == 2 },
    )
    .await;
    let auction = events_of(broker.as_ref(), "AuctionEnded").await.remove(0);
    let payments = events_of(broker.as_ref(), "PaymentProcessed").await;
    assert_eq!(payments.len(), 1, "one payment per auction");
    let payment = &payments[0];
    let payment_data = data(payment);
    assert_eq!(payment_data["auction_id"], "a-1");
    assert_eq!(payment_data["bidder_id"], "b-1");
    assert_eq!(payment_data["amount"], 250.5);
    assert_eq!(payment_data["status"], "succeeded");
    assert_eq!(payment.source, "payment");
    assert_eq!(payment.extension(CAUSATION_ID), Some(auction.id.as_str()));
    assert_eq!(payment.extension(CORRELATION_ID), Some(auction.id.as_str()));
    assert!(
        uuid_like(&payment.id),
        "publish ids are UUIDs: {}",
        payment.id
    );

    let notifications = events_of(broker.as_ref(), "NotificationSent").await;
    let paid = &notifications[1];
    assert_eq!(paid.extension(CAUSATION_ID), Some(payment.id.as_str()));
    assert_eq!(
        paid.extension(CORRELATION_ID),
        Some(auction.id.as_str()),
        "correlation id carried over"
    );
    assert_eq!(
        data(paid)["recipient"],
        "ada@example.com",
        "looked up from the registration"
    );

    // Audit: one record per event, including the notifications, and no loop on its own output.
    wait_for("5 audit records", TIMEOUT, || async {
        journal(broker.as_ref(), "audit").await.len() == 5
    })
    .await;
    let records = journal(broker.as_ref(), "audit").await;
    let auction_record = records
        .iter()
        .find(|record| record.get("type").map(String::as_str) == Some("AuctionEnded"))
        .expect("audit record of the auction");
    assert_eq!(auction_record.get("event_id"), Some(&auction.id));
    assert_eq!(
        auction_record.get("entry_id"),
        Some(&auction_entry.to_string())
    );
    assert_eq!(auction_record.get("data_sha256").map(String::len), Some(64));
    for event_type in [
        "BidderRegistered",
        "AuctionEnded",
        "PaymentProcessed",
        "NotificationSent",
    ] {
        assert!(
            records
                .iter()
                .any(|record| record.get("type").map(String::as_str) == Some(event_type)),
            "audit saw {event_type}"
        );
    }

    // Metrics: counted by type, payment amount observed, served in Prometheus text format.
    wait_for("metrics of every event", TIMEOUT, || async {
        host.host
            .services()
            .metrics
            .render()
            .contains("evhost_plugin_events_total{plugin=\"metrics\",type=\"NotificationSent\"} 2")
    })
    .await;
    let text = host.host.services().metrics.render();
    for line in [
        "evhost_plugin_events_total{plugin=\"metrics\",type=\"AuctionEnded\"} 1",
        "evhost_plugin_events_total{plugin=\"metrics\",type=\"BidderRegistered\"} 1",
        "evhost_plugin_events_total{plugin=\"metrics\",type=\"PaymentProcessed\"} 1",
        "evhost_plugin_payment_amount_sum{plugin=\"metrics\",status=\"succeeded\"} 250.5",
        "evhost_events_handled_total{plugin=\"payment\",stream=\"events:AuctionEnded\",outcome=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "metrics lack {line}\n{text}");
    }

    // Every group on every stream: nothing pending.
    wait_for("all groups drained", TIMEOUT, || async {
        for event_type in [
            "BidderRegistered",
            "AuctionEnded",
            "PaymentProcessed",
            "NotificationSent",
        ] {
            for group in broker
                .groups(&KEYS.event_stream(event_type))
                .await
                .expect("groups")
            {
                if group.pending != 0 || group.lag != Some(0) {
                    return false;
                }
            }
        }
        true
    })
    .await;
    for (event_type, group) in [
        ("AuctionEnded", "payment"),
        ("AuctionEnded", "audit"),
        ("PaymentProcessed", "notification"),
    ] {
        assert_eq!(pending_count(broker.as_ref(), event_type, group).await, 0);
    }
    host.stop().await;
}

/// A duplicate `AuctionEnded` is charged once; an amount over the limit is a failed payment
/// with a reason; malformed data is rejected, not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_charges_once_and_reports_failures() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("pay-host"),
        vec![example("payment")],
    )
    .await;

    let ok = r#"{"auction_id":"a-9","winning_bidder_id":"b-2","winning_price":10}"#;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("AuctionEnded"),
        &[("payload", ok)],
    )
    .await;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("AuctionEnded"),
        &[("payload", ok)],
    )
    .await;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("AuctionEnded"),
        &[(
            "payload",
            r#"{"auction_id":"a-10","winning_bidder_id":"b-2","winning_price":99999}"#,
        )],
    )
    .await;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("AuctionEnded"),
        &[("payload", r#"{"auction_id":"a-11"}"#)],
    )
    .await;

    wait_for("two payments", TIMEOUT, || async {
        events_of(broker.as_ref(), "PaymentProcessed").await.len() == 2
    })
    .await;
    // Give a duplicate charge the chance to appear before asserting it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payments: Vec<Value> = events_of(broker.as_ref(), "PaymentProcessed")
        .await
        .iter()
        .map(data)
        .collect();
    assert_eq!(
        payments.len(),
        2,
        "a-9 charged once, a-10 failed: {payments:?}"
    );
    assert_eq!(payments[0]["auction_id"], "a-9");
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(payments[1]["auction_id"], "a-10");
    assert_eq!(payments[1]["status"], "failed");
    assert!(
        payments[1]["reason"]
            .as_str()
            .is_some_and(|reason| !reason.is_empty())
    );
    // The event lacking fields was rejected: dead-lettered with the reason, and acknowledged.
    wait_for("the dead letter", TIMEOUT, || async {
        evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "payment", 10)
            .await
            .expect("dlq")
            .len()
            == 1
    })
    .await;
    let letter = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), "payment", 10)
        .await
        .expect("dlq")
        .remove(0);
    assert_eq!(letter.reason, "rejected");
    assert!(
        letter.error.contains("winning_bidder_id"),
        "{}",
        letter.error
    );
    assert_eq!(
        pending_count(broker.as_ref(), "AuctionEnded", "payment").await,
        0
    );
    host.stop().await;
}

/// Entries in the seed 002 format (a `data` field holding a JSON envelope) are understood:
/// type, id, source and metadata come from the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reads_seed_envelope_entries() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("env-host"),
        vec![example("audit")],
    )
    .await;
    // The stream appears after the host started: audit's `*` joins it from its first entry.
    let envelope = r#"{"id":"wf-evt-1","type":"WORKFLOW_STARTED","workflow_id":"wf-42","timestamp":"2025-10-02T10:00:00Z","data":{"step":"generate"},"source_agent":"CoordinatorAgent","metadata":{"correlation_id":"corr-7"}}"#;
    xadd(
        broker.as_ref(),
        &KEYS.event_stream("workflow.started"),
        &[("data", envelope)],
    )
    .await;
    wait_for("the audit record", TIMEOUT, || async {
        journal(broker.as_ref(), "audit").await.len() == 1
    })
    .await;
    let record = journal(broker.as_ref(), "audit").await.remove(0);
    assert_eq!(record.get("event_id").map(String::as_str), Some("wf-evt-1"));
    assert_eq!(
        record.get("type").map(String::as_str),
        Some("WORKFLOW_STARTED")
    );
    assert_eq!(
        record.get("source").map(String::as_str),
        Some("CoordinatorAgent")
    );
    assert_eq!(
        record.get("correlation_id").map(String::as_str),
        Some("corr-7")
    );
    host.stop().await;
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

/// `partition_key = "auction_id"` with `concurrency = 4`: one consumer handles four events at
/// a time, and the events of one auction stay in one lane, in stream order. Every auction ends
/// twice in a row (the same batch), and each is charged exactly once: the duplicate, in the
/// same lane, sees the first one's uncommitted `charged:` key, where two lanes would both
/// charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_lanes_keep_each_auctions_events_in_order() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let mut payment = example("payment");
    payment.settings.start = evhost::broker::GroupStart::Beginning;
    payment.settings.concurrency = std::num::NonZeroUsize::new(4);
    payment.settings.partition_key = Some("auction_id".into());
    for n in 0..60 {
        let ended = serde_json::json!({
            "auction_id": format!("a-{n}"),
            "winning_bidder_id": "b-1",
            "winning_price": 10 + n,
        });
        for _ in 0..2 {
            evhost_tests::publish(broker.as_ref(), "AuctionEnded", ended.clone()).await;
        }
    }
    let host = TestHost::start(broker.clone(), fast_options("lanes-host"), vec![payment]).await;
    wait_for("all 120 events handled", TIMEOUT, || async {
        pending_count(broker.as_ref(), "AuctionEnded", "payment").await == 0
            && events_of(broker.as_ref(), "PaymentProcessed").await.len() >= 60
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payments = events_of(broker.as_ref(), "PaymentProcessed").await;
    let mut auctions: Vec<String> = payments
        .iter()
        .map(|payment| data(payment)["auction_id"].as_str().unwrap().to_string())
        .collect();
    auctions.sort();
    auctions.dedup();
    assert_eq!(payments.len(), 60, "one payment per auction");
    assert_eq!(auctions.len(), 60, "every auction paid");
    let groups = broker
        .groups(&KEYS.event_stream("AuctionEnded"))
        .await
        .unwrap();
    let group = groups.iter().find(|group| group.name == "payment").unwrap();
    assert_eq!(
        group.consumers, 1,
        "lanes of one consumer, not four consumers"
    );
    host.stop().await;
}

/// Partition keys flow through the saga: an `AuctionEnded` keyed by its auction gives a
/// `PaymentProcessed` keyed by the bidder (payment sets it, the key notification's state
/// depends on), and the `NotificationSent` it causes carries the bidder's key on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_keys_flow_through_the_saga() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("key-host"),
        vec![example("payment"), example("notification")],
    )
    .await;
    let mut ended = evhost::Event::new(
        "AuctionEnded",
        "test",
        br#"{"auction_id":"a-1","winning_bidder_id":"b-7","winning_price":10}"#.to_vec(),
    );
    ended.set_extension(PARTITION_KEY, "a-1");
    broker
        .add(
            &ended.stream_in(evhost::Keyspace::single()),
            &ended.to_fields(),
        )
        .await
        .expect("XADD");
    wait_for("a notification", TIMEOUT, || async {
        !events_of(broker.as_ref(), "NotificationSent")
            .await
            .is_empty()
    })
    .await;
    let payments = events_of(broker.as_ref(), "PaymentProcessed").await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].extension(PARTITION_KEY), Some("b-7"));
    let notices = events_of(broker.as_ref(), "NotificationSent").await;
    assert_eq!(notices[0].extension(PARTITION_KEY), Some("b-7"));
    assert_eq!(
        notices[0].extension(CAUSATION_ID),
        Some(payments[0].id.as_str())
    );
    host.stop().await;
}
