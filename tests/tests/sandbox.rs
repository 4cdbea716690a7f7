//! The sandbox: a plugin gets no filesystem, environment, arguments or sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

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
