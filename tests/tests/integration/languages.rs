//! Plugins written in Python (componentize-py) and JavaScript (ComponentizeJS), built from
//! `plugins/` by their own `build.sh` and run by a host on a real redis-server next to a Rust
//! plugin: their publishes and key-value writes land in Redis like any plugin's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::RedisBroker;
use evhost::broker::Broker;
use evhost::event::Event;
use evhost::plugin::PluginSettings;
use evhost::trial::TrialRunner;
use evhost_tests::script_build::{self, Built};
use evhost_tests::{
    PluginSpec, RedisServer, TestHost, events_of, example, fast_options, pending_count, publish,
    redis_broker, wait_for,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Builds (or finds in the cache) a component off the async runtime.
async fn built(build: fn() -> Built) -> Built {
    tokio::task::spawn_blocking(build)
        .await
        .expect("the build task did not panic")
}

/// A plugin spec for component bytes with `config` values.
fn spec(name: &str, built: &Built, config: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        origin: format!("test:{name}.wasm"),
        bytes: built.bytes(),
        settings: PluginSettings {
            config: config
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..PluginSettings::default()
        },
    }
}

/// Starts a host with `plugins` and reports how long loading (compiling) took.
async fn start(broker: Arc<RedisBroker>, consumer: &str, plugins: Vec<PluginSpec>) -> TestHost {
    let started = Instant::now();
    let host = TestHost::start(broker, fast_options(consumer), plugins).await;
    eprintln!(
        "{consumer}: plugins loaded and host ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    host
}

/// Waits until `count` events of `event_type` exist and returns them, oldest first.
async fn wait_events(broker: &dyn Broker, event_type: &str, count: usize) -> Vec<Event> {
    wait_for(&format!("{count} {event_type} events"), TIMEOUT, || async {
        events_of(broker, event_type).await.len() >= count
    })
    .await;
    events_of(broker, event_type).await
}

/// A key of `plugin`'s key-value store, as text.
async fn kv(broker: &dyn Broker, plugin: &str, key: &str) -> Option<String> {
    broker
        .get(&evhost_tests::KEYS.kv_key(plugin, key))
        .await
        .expect("GET")
        .map(|value| String::from_utf8(value).expect("UTF-8 value"))
}

fn data(event: &Event) -> Value {
    serde_json::from_slice(&event.data).expect("JSON data")
}

async fn wait_dead_letters(broker: &dyn Broker, plugin: &str, count: usize) {
    wait_for(
        &format!("{count} dead letters of {plugin}"),
        TIMEOUT,
        || async {
            evhost::dlq::list(broker, evhost::Keyspace::single(), plugin, 10)
                .await
                .expect("dlq")
                .len()
                == count
        },
    )
    .await;
}

/// The Python plugin counts wins in its key-value store, flags a price above `max_price` and a
/// bidder winning more than `max_wins`, skips an auction checked before, and rejects bad data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fraud_check_flags_suspicious_auctions() {
    let component = built(script_build::fraud_check).await;
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = start(
        broker.clone(),
        "python-host",
        vec![spec(
            "fraud-check",
            &component,
            &[("max_price", "1000"), ("max_wins", "2")],
        )],
    )
    .await;

    let auctions = [("a1", 100), ("a2", 5000), ("a3", 200)];
    let mut sent = Vec::new();
    for (auction, price) in auctions {
        let data =
            json!({"auction_id": auction, "winning_bidder_id": "b1", "winning_price": price});
        sent.push(publish(broker.as_ref(), "AuctionEnded", data).await);
    }
    // A repeated auction and unusable data.
    let repeated = json!({"auction_id": "a1", "winning_bidder_id": "b1", "winning_price": 100});
    publish(broker.as_ref(), "AuctionEnded", repeated).await;
    let bad = publish(broker.as_ref(), "AuctionEnded", json!({"auction_id": "a4"})).await;
    wait_dead_letters(broker.as_ref(), "fraud-check", 1).await;

    let checks = wait_events(broker.as_ref(), "FraudCheckCompleted", 3).await;
    assert_eq!(checks.len(), 3, "the repeated auction is not checked again");
    let verdicts: Vec<Value> = checks.iter().map(data).collect();
    assert_eq!(verdicts[0]["auction_id"], "a1");
    assert_eq!(verdicts[0]["suspicious"], false, "{}", verdicts[0]);
    assert_eq!(verdicts[1]["suspicious"], true, "{}", verdicts[1]);
    assert!(
        verdicts[1]["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("price 5000 above 1000"),
        "{}",
        verdicts[1]
    );
    assert_eq!(verdicts[2]["bidder_wins"], 3);
    assert!(
        verdicts[2]["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("won 3 auctions"),
        "{}",
        verdicts[2]
    );
    for (check, cause) in checks.iter().zip(&sent) {
        assert_eq!(check.source, "fraud-check");
        assert_eq!(check.extension("causationid"), Some(cause.id.as_str()));
    }

    assert_eq!(
        kv(broker.as_ref(), "fraud-check", "wins:b1")
            .await
            .as_deref(),
        Some("3")
    );
    let stored = kv(broker.as_ref(), "fraud-check", "checked:a2")
        .await
        .expect("verdict of a2 stored");
    assert_eq!(
        serde_json::from_str::<Value>(&stored).expect("JSON"),
        verdicts[1]
    );

    let letter = evhost::dlq::list(
        broker.as_ref(),
        evhost::Keyspace::single(),
        "fraud-check",
        10,
    )
    .await
    .expect("dlq")
    .remove(0);
    assert_eq!(letter.reason, "rejected");
    assert_eq!(letter.event_id, bad.id);
    assert!(letter.error.contains("winning_price"), "{}", letter.error);
    assert_eq!(
        pending_count(broker.as_ref(), "AuctionEnded", "fraud-check").await,
        0
    );
    host.stop().await;
}

/// The JavaScript plugin formats a webhook for each payment, stores it under
/// `webhook:<event id>`, publishes `WebhookFormatted`, and rejects a payment without status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_webhook_formatter_formats_payments() {
    let component = built(script_build::webhook_formatter).await;
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = start(
        broker.clone(),
        "javascript-host",
        vec![spec(
            "webhook-formatter",
            &component,
            &[
                ("currency", "USD"),
                ("endpoint", "https://hooks.example/pay"),
            ],
        )],
    )
    .await;

    let ok = publish(
        broker.as_ref(),
        "PaymentProcessed",
        json!({"auction_id": "a1", "bidder_id": 42, "amount": 120.5, "status": "succeeded"}),
    )
    .await;
    let failed = publish(
        broker.as_ref(),
        "PaymentProcessed",
        json!({"auction_id": "a2", "bidder_id": "b2", "amount": 0, "status": "failed", "reason": "limit"}),
    )
    .await;
    let bad = publish(
        broker.as_ref(),
        "PaymentProcessed",
        json!({"auction_id": "a3", "bidder_id": "b3", "amount": 1}),
    )
    .await;
    wait_dead_letters(broker.as_ref(), "webhook-formatter", 1).await;

    let formatted = wait_events(broker.as_ref(), "WebhookFormatted", 2).await;
    assert_eq!(formatted.len(), 2);
    let first = data(&formatted[0]);
    assert_eq!(first["key"], format!("webhook:{}", ok.id));
    assert_eq!(first["endpoint"], "https://hooks.example/pay");
    assert_eq!(first["body"]["type"], "payment.succeeded");
    assert_eq!(first["body"]["data"]["bidder_id"], "42");
    assert_eq!(first["body"]["data"]["amount"]["display"], "120.50 USD");
    assert_eq!(
        first["body"]["correlation_id"],
        ok.correlation_id(),
        "{first}"
    );
    assert_eq!(formatted[0].source, "webhook-formatter");
    assert_eq!(formatted[0].extension("causationid"), Some(ok.id.as_str()));
    let second = data(&formatted[1]);
    assert_eq!(second["body"]["type"], "payment.failed");
    assert_eq!(second["body"]["data"]["failure_reason"], "limit");
    assert_eq!(
        formatted[1].extension("causationid"),
        Some(failed.id.as_str())
    );

    for (event, published) in [(&ok, &first), (&failed, &second)] {
        let stored = kv(
            broker.as_ref(),
            "webhook-formatter",
            &format!("webhook:{}", event.id),
        )
        .await
        .expect("webhook stored");
        assert_eq!(
            serde_json::from_str::<Value>(&stored).expect("JSON"),
            published["body"]
        );
    }
    let letter = evhost::dlq::list(
        broker.as_ref(),
        evhost::Keyspace::single(),
        "webhook-formatter",
        10,
    )
    .await
    .expect("dlq")
    .remove(0);
    assert_eq!(letter.reason, "rejected");
    assert_eq!(letter.event_id, bad.id);
    assert!(letter.error.contains("status"), "{}", letter.error);
    host.stop().await;
}

/// Rust, Python and JavaScript in one host: `AuctionEnded` reaches the Rust payment plugin and
/// the Python fraud check; the payment's `PaymentProcessed` reaches the JavaScript formatter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_languages_share_one_saga() {
    let fraud = built(script_build::fraud_check).await;
    let webhook = built(script_build::webhook_formatter).await;
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = start(
        broker.clone(),
        "saga-host",
        vec![
            example("payment"),
            spec("fraud-check", &fraud, &[]),
            spec("webhook-formatter", &webhook, &[]),
        ],
    )
    .await;
    let ended = publish(
        broker.as_ref(),
        "AuctionEnded",
        json!({"auction_id": "s1", "winning_bidder_id": "b9", "winning_price": 250}),
    )
    .await;
    let check = wait_events(broker.as_ref(), "FraudCheckCompleted", 1).await;
    assert_eq!(data(&check[0])["suspicious"], false);
    let payment = wait_events(broker.as_ref(), "PaymentProcessed", 1).await;
    let webhook = wait_events(broker.as_ref(), "WebhookFormatted", 1).await;
    let body = &data(&webhook[0])["body"];
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["data"]["amount"]["display"], "250.00 EUR");
    assert_eq!(
        webhook[0].extension("causationid"),
        Some(payment[0].id.as_str())
    );
    // One correlation id from the auction to the webhook.
    for event in [&check[0], &payment[0], &webhook[0]] {
        assert_eq!(event.correlation_id(), ended.correlation_id());
    }
    host.stop().await;
}

/// A 12–18 MB component compiles once: a second engine with the same cache directory loads it
/// from disk (the times are printed; the metric says which load compiled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_components_load_from_the_compile_cache() {
    let components = [
        ("fraud-check", built(script_build::fraud_check).await),
        (
            "webhook-formatter",
            built(script_build::webhook_formatter).await,
        ),
    ];
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let cache = tempfile::tempdir().expect("cache dir");
    for (name, component) in &components {
        let mut times = Vec::new();
        for (round, result) in ["optimized", "cached"].into_iter().enumerate() {
            let mut options = fast_options(&format!("cache-{round}"));
            options.cache_dir = Some(cache.path().to_path_buf());
            // Optimised at once: only optimised code goes into the cache.
            options.compile = evhost::plugin::CompilePolicy::Optimized;
            let host = evhost::Host::new(broker.clone(), options).expect("engine");
            let started = Instant::now();
            let version = host
                .engine()
                .load_bytes(
                    format!("test:{name}.wasm"),
                    component.bytes(),
                    PluginSettings::default(),
                )
                .await
                .unwrap_or_else(|err| panic!("load {name}: {err}"));
            times.push(started.elapsed());
            assert_eq!(version.name, *name);
            let metrics = host.services().metrics.render();
            assert!(
                metrics.contains(&format!(
                    "evhost_component_compiles_total{{result=\"{result}\"}} 1"
                )),
                "{name}, load {round}: {result} expected:\n{metrics}"
            );
        }
        eprintln!(
            "{name} ({} bytes): first load {:.2} s, from the compile cache {:.3} s",
            component.bytes().len(),
            times[0].as_secs_f64(),
            times[1].as_secs_f64()
        );
    }
    let cached = std::fs::read_dir(cache.path())
        .expect("list the cache")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
        })
        .count();
    assert_eq!(cached, 2, "one compiled file per component");
}

/// The runner of `evhost test` on the Python plugin, without Redis or a host: the outcome of
/// each event and the effects a host would commit, the state of one event seen by the next.
#[tokio::test]
async fn python_fraud_check_runs_in_a_trial_without_redis() {
    let component = built(script_build::fraud_check).await;
    let mut runner = TrialRunner::load(&component.path, None)
        .await
        .expect("load the Python plugin");
    let auction = |id: &str| {
        let data = json!({"auction_id": id, "winning_bidder_id": "b1", "winning_price": 100});
        Event::new("AuctionEnded", "test", data.to_string().into_bytes())
    };
    let checked = runner.handle(auction("a1")).await.expect("a trial");
    assert_eq!(checked.outcome, "handled", "{checked:?}");
    assert_eq!(checked.publishes.len(), 1, "{checked:?}");
    assert_eq!(checked.publishes[0]["type"], "FraudCheckCompleted");
    assert_eq!(checked.publishes[0]["data"]["auction_id"], "a1");
    assert!(
        checked.kv.iter().any(|write| write["key"] == "checked:a1"),
        "{checked:?}"
    );
    // The repeated auction finds what the first call stored, and is not checked again.
    let repeated = runner.handle(auction("a1")).await.expect("a trial");
    assert_eq!(repeated.outcome, "handled", "{repeated:?}");
    assert!(repeated.publishes.is_empty(), "{repeated:?}");
    let unusable = Event::new("AuctionEnded", "test", br#"{"auction_id":"a4"}"#.to_vec());
    let failed = runner.handle(unusable).await.expect("a trial");
    assert_ne!(failed.outcome, "handled", "{failed:?}");
    assert!(
        failed.error.is_some() && failed.publishes.is_empty(),
        "{failed:?}"
    );
}
