//! The sandbox: a plugin gets no filesystem, environment, arguments or sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use evhost::host::HostOptions;
use evhost::plugin::{CompilePolicy, CompileTier};
use evhost_tests::{
    RedisServer, TestHost, events_of, fast_options, probe, publish, redis_broker, wait_for,
};
use serde_json::{Value, json};

/// The probe tries to read and write files, list `/`, read environment variables and
/// arguments, and open a TCP connection to the Redis server; every attempt comes back empty
/// or denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_get_no_files_environment_or_sockets() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = TestHost::start(
        broker.clone(),
        fast_options("sandbox-host"),
        vec![probe("prober", "ProbeSandbox")],
    )
    .await;
    publish(
        broker.as_ref(),
        "ProbeSandbox",
        json!({"action": "sandbox", "port": server.port()}),
    )
    .await;
    wait_for("the probe's report", Duration::from_secs(20), || async {
        !events_of(broker.as_ref(), "ProbeReport").await.is_empty()
    })
    .await;
    let report: Value =
        serde_json::from_slice(&events_of(broker.as_ref(), "ProbeReport").await[0].data)
            .expect("JSON report");
    for attempt in [
        "read_file",
        "read_dir",
        "write_file",
        "env_home",
        "tcp_connect",
    ] {
        let outcome = report[attempt].as_str().unwrap_or_default();
        assert!(
            outcome.starts_with("denied"),
            "{attempt} must be denied, got {outcome:?} (report: {report})"
        );
    }
    for count in ["env_count", "args_count"] {
        let outcome = report[count].as_str().unwrap_or_default();
        assert!(
            outcome.starts_with("denied") || outcome == "allowed: 0",
            "{count} must be empty, got {outcome:?}"
        );
    }
    assert!(
        std::env::var("HOME").is_ok() || std::env::var("PATH").is_ok(),
        "the host itself has an environment"
    );
    assert!(
        !std::path::Path::new("/tmp/evhost-probe").exists(),
        "nothing was written to the host's /tmp"
    );
    host.stop().await;
}

/// A probe plugin named `name` on `event_type` with a short deadline, a small memory cap and
/// two attempts before dead-lettering.
fn hostile(name: &str, event_type: &str) -> evhost_tests::PluginSpec {
    let mut spec = probe(name, event_type);
    spec.settings.timeout = Duration::from_millis(300);
    spec.settings.memory_bytes = 32 * 1024 * 1024;
    spec.settings.retry.max_attempts = 2;
    spec.settings.retry.base = Duration::from_millis(50);
    spec
}

/// An infinite loop, a memory bomb, a stack overflow and a panic each lose only their own call
/// and instance: the event is retried, then dead-lettered with the reason; a plugin that
/// publishes more than the limit is told so; meanwhile another plugin keeps handling every
/// event it gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained() {
    hostile_plugins_are_contained_on(CompilePolicy::Optimized, CompileTier::Optimized).await;
}

/// The same on the quick tier's code (Winch), which a large component runs until its
/// optimised recompile is ready: its deadlines and limits hold just as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_on_the_quick_tier() {
    hostile_plugins_are_contained_on(
        CompilePolicy::Tiered { quick_min_bytes: 0 },
        CompileTier::Quick,
    )
    .await;
}

async fn hostile_plugins_are_contained_on(compile: CompilePolicy, tier: CompileTier) {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let cases = [
        ("looper", "ProbeLoop", "loop", "timed out"),
        ("bomber", "ProbeAlloc", "alloc", "trapped"),
        ("recurser", "ProbeRecurse", "recurse", "trapped"),
        ("panicker", "ProbePanic", "trap", "trapped"),
    ];
    let mut plugins: Vec<_> = cases
        .iter()
        .map(|(name, event_type, _, _)| hostile(name, event_type))
        .collect();
    plugins.push(hostile("huge", "ProbeHugeIn"));
    plugins.push(probe("bystander", "ProbeCalm"));
    let options = HostOptions {
        compile,
        ..fast_options("hostile-host")
    };
    let host = TestHost::start(broker.clone(), options, plugins).await;
    for status in host.host.plugin_statuses() {
        assert_eq!(status.compiled, Some(tier), "{}", status.file);
    }

    for (_, event_type, action, _) in &cases {
        publish(broker.as_ref(), event_type, json!({"action": action})).await;
    }
    publish(
        broker.as_ref(),
        "ProbeHugeIn",
        json!({"action": "huge-publish", "mib": 4}),
    )
    .await;
    let mut calm = Vec::new();
    for n in 0..40 {
        calm.push(
            publish(broker.as_ref(), "ProbeCalm", json!({"n": n}))
                .await
                .id,
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_for(
        "the bystander to handle every event",
        Duration::from_secs(20),
        || async {
            evhost_tests::journal(broker.as_ref(), "bystander")
                .await
                .len()
                == calm.len()
        },
    )
    .await;
    for (name, _, action, error) in &cases {
        wait_for(
            &format!("{name} ({action}) to be dead-lettered"),
            Duration::from_secs(30),
            || async {
                evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), name, 10)
                    .await
                    .expect("dlq")
                    .len()
                    == 1
            },
        )
        .await;
        let letter = evhost::dlq::list(broker.as_ref(), evhost::Keyspace::single(), name, 10)
            .await
            .expect("dlq")
            .remove(0);
        assert_eq!(letter.reason, "max-attempts", "{name}");
        assert_eq!(letter.attempts, 2, "{name}");
        assert!(letter.error.contains(error), "{name}: {}", letter.error);
        if *name == "panicker" {
            // The panic's own text, from the plugin's stderr, without the backtrace hint.
            assert!(
                letter.error.contains("the plugin wrote to stderr")
                    && letter.error.contains("asked to trap (event "),
                "{}",
                letter.error
            );
            assert!(!letter.error.contains("RUST_BACKTRACE"), "{}", letter.error);
        }
    }
    wait_for(
        "the huge publish answer",
        Duration::from_secs(20),
        || async {
            !events_of(broker.as_ref(), "ProbeHugeResult")
                .await
                .is_empty()
        },
    )
    .await;
    let answer: Value =
        serde_json::from_slice(&events_of(broker.as_ref(), "ProbeHugeResult").await[0].data)
            .expect("JSON");
    assert!(
        answer["answer"]
            .as_str()
            .unwrap_or_default()
            .contains("exceeds the limit"),
        "{answer}"
    );
    assert!(
        events_of(broker.as_ref(), "ProbeHuge").await.is_empty(),
        "nothing huge was published"
    );
    let text = host.host.services().metrics.render();
    assert!(text.contains("outcome=\"timeout\""), "{text}");
    host.stop().await;
}

/// Files that are not plugins are refused with the exact reason, naming the file: bytes that
/// are not a component, a component of another world, and a plugin whose `describe()` panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_refused_with_the_reason() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    let host = evhost::Host::new(broker.clone(), fast_options("refuse-host")).expect("engine");
    let engine = host.engine();
    let default = evhost::plugin::PluginSettings::default;

    let err = engine
        .load_bytes(
            "plugins/garbage.wasm".into(),
            b"definitely not wasm".to_vec(),
            default(),
        )
        .await
        .expect_err("garbage is refused");
    assert!(
        err.to_string()
            .contains("plugins/garbage.wasm is not a valid WebAssembly component")
            && err
                .to_string()
                .contains("a text file starting with \"definitely not wasm\""),
        "{err}"
    );

    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let err = engine
        .load_bytes("plugins/core.wasm".into(), core_module, default())
        .await
        .expect_err("a core module is refused");
    assert!(
        err.to_string()
            .contains("plugins/core.wasm is not a valid WebAssembly component")
            && err.to_string().contains("evhost componentize"),
        "{err}"
    );

    let err = engine
        .load_bytes(
            "plugins/other.wasm".into(),
            evhost_tests::guests::OTHER_WORLD.to_vec(),
            default(),
        )
        .await
        .expect_err("another world is refused");
    let message = err.to_string();
    assert!(
        message
            .contains("plugins/other.wasm does not implement the evhost:plugin/plugin@0.1.0 world"),
        "{message}"
    );
    assert!(
        message.contains("evhost:plugin/handler"),
        "names the missing export: {message}"
    );

    let mut spec = probe("describer", "ProbeX");
    spec.settings
        .config
        .insert("panic_in_describe".into(), "true".into());
    let err = engine
        .load_bytes("plugins/describer.wasm".into(), spec.bytes, spec.settings)
        .await
        .expect_err("a panicking describe() is refused");
    let message = err.to_string();
    assert!(
        message.contains("describe() of plugins/describer.wasm failed: trapped"),
        "{message}"
    );
}
