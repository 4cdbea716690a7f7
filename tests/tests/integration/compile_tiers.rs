//! Compile tiers with a real watcher, a real compile cache and a real redis-server: a component
//! serves on Winch's code first, its optimised recompile replaces it under load without an
//! event lost or handled twice, and the next start loads the optimised code from the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evhost::broker::Broker;
use evhost::host::{FileState, HostOptions, PluginStatus};
use evhost::plugin::{CompilePolicy, CompileTier};
use evhost::rollout::TransitionKind;
use evhost_tests::guests::PROBE;
use evhost_tests::{
    RedisServer, TestHost, events_of, fast_options, metric, publish, redis_broker, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Events published after the optimised code serves.
const AFTER: u64 = 50;
/// Most events published.
const MAX_EVENTS: u64 = 4000;

/// Every component starts on the quick tier (the probe is far smaller than the default
/// threshold), with a compile cache in `cache`.
fn tiered_options(consumer: &str, cache: &Path) -> HostOptions {
    HostOptions {
        cache_dir: Some(cache.to_path_buf()),
        compile: CompilePolicy::Tiered { quick_min_bytes: 0 },
        ..fast_options(consumer)
    }
}

fn status(host: &TestHost) -> Option<PluginStatus> {
    host.host
        .plugin_statuses()
        .into_iter()
        .find(|status| status.name.as_deref() == Some("tiered"))
}

fn kinds(status: &PluginStatus) -> Vec<TransitionKind> {
    status
        .transitions
        .iter()
        .map(|transition| transition.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_code_serves_first_then_the_optimised_code_replaces_it_under_load() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let plugins = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        plugins.path().join("tiered.toml"),
        "[config]\nname = \"tiered\"\nsubscriptions = \"ProbeTier\"\n",
    )
    .expect("write sidecar");
    std::fs::write(plugins.path().join("tiered.wasm"), PROBE).expect("write plugin");

    let host = TestHost::start_watching(
        broker.clone(),
        tiered_options("tier-host-1", cache.path()),
        plugins.path(),
    )
    .await;
    // Load while the recompile runs: events keep arriving until AFTER more have gone out
    // since the optimised code replaced the quick code (at most MAX_EVENTS in all).
    let optimised = Arc::new(AtomicBool::new(false));
    let producer = {
        let broker: Arc<dyn Broker> = broker.clone();
        let optimised = optimised.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut n = 0;
            while after < AFTER && n < MAX_EVENTS {
                publish(
                    broker.as_ref(),
                    "ProbeTier",
                    json!({"action": "echo", "n": n}),
                )
                .await;
                n += 1;
                if optimised.load(Ordering::Relaxed) {
                    after += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    wait_for("the optimised code to serve", TIMEOUT, || async {
        status(&host).is_some_and(|status| status.compiled == Some(CompileTier::Optimized))
    })
    .await;
    optimised.store(true, Ordering::Relaxed);
    let echoed_by_then = events_of(broker.as_ref(), "ProbeEchoed").await.len() as u64;
    let published = producer.await.expect("producer");
    assert!(
        echoed_by_then > 0,
        "the quick code handled events before the optimised code replaced it"
    );
    wait_for("every event to be echoed", TIMEOUT, || async {
        events_of(broker.as_ref(), "ProbeEchoed").await.len() as u64 >= published
    })
    .await;
    // Late duplicates would show up after a pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoed = events_of(broker.as_ref(), "ProbeEchoed").await;
    let numbers: BTreeSet<u64> = echoed
        .iter()
        .map(|event| {
            serde_json::from_slice::<serde_json::Value>(&event.data).expect("JSON data")["n"]
                .as_u64()
                .expect("n")
        })
        .collect();
    assert_eq!(echoed.len() as u64, published, "each event handled once");
    assert_eq!(numbers, (0..published).collect(), "no event lost");

    let first = status(&host).expect("status");
    assert_eq!(first.state, FileState::Running);
    assert_eq!(
        kinds(&first),
        [TransitionKind::Loaded, TransitionKind::Optimized],
        "loaded on the quick tier, then optimised: {:?}",
        first.transitions
    );
    for (result, count) in [("quick", 1), ("optimized", 1), ("cached", 0)] {
        assert_eq!(
            metric(
                &host,
                &format!("evhost_component_compiles_total{{result=\"{result}\"}}")
            ),
            count,
            "{result}"
        );
    }
    assert!(
        first.previous_versions.is_empty(),
        "the quick code is no version to roll back to: {:?}",
        first.previous_versions
    );
    host.stop().await;

    // The optimised code went into the cache: the next start serves it at once.
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(cached.len(), 1, "one optimised entry: {cached:?}");
    let host = TestHost::start_watching(
        broker.clone(),
        tiered_options("tier-host-2", cache.path()),
        plugins.path(),
    )
    .await;
    let second = status(&host).expect("status");
    assert_eq!(second.compiled, Some(CompileTier::Optimized));
    assert_eq!(kinds(&second), [TransitionKind::Loaded]);
    assert_eq!(second.sha256, first.sha256);
    assert_eq!(
        metric(&host, "evhost_component_compiles_total{result=\"cached\"}"),
        1
    );
    host.stop().await;
}
