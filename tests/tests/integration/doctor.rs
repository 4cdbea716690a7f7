//! `evhost doctor`'s checks against real redis-servers started with good and bad settings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use evhost::RedisBroker;
use evhost::doctor::{self, Finding, Level, Report};
use evhost_tests::{RedisServer, create_group, publish, redis_broker};
use serde_json::json;

fn finding<'a>(report: &'a Report, check: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|finding| finding.check == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:?}"))
}

async fn examine(server: &RedisServer) -> Report {
    let broker = redis_broker(server).await;
    doctor::examine(&broker).await
}

/// Durable, non-evicting, roomy: every check is ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_configuration_is_all_ok() {
    let server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let report = examine(&server).await;
    assert_eq!(report.worst(), Level::Ok, "{report:#?}");
    for check in [
        "version",
        "eviction",
        "persistence",
        "maxclients",
        "retention",
        "backlog",
    ] {
        assert_eq!(finding(&report, check).level, Level::Ok, "{check}");
    }
}

/// Eviction of any key under memory pressure, and no persistence at all: two dangers, each
/// with the exact fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_no_persistence_are_dangers_with_their_fix() {
    // The test servers run with `--save "" --appendonly no`.
    let server =
        RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "100mb"]);
    let report = examine(&server).await;
    let eviction = finding(&report, "eviction");
    assert_eq!(eviction.level, Level::Danger, "{eviction:?}");
    assert!(eviction.found.contains("allkeys-lru"), "{eviction:?}");
    assert!(
        eviction
            .fix
            .contains("CONFIG SET maxmemory-policy noeviction")
            && eviction
                .fix
                .contains("redis.conf: maxmemory-policy noeviction"),
        "{eviction:?}"
    );
    let persistence = finding(&report, "persistence");
    assert_eq!(persistence.level, Level::Danger, "{persistence:?}");
    assert!(
        persistence.fix.contains("appendonly yes"),
        "{persistence:?}"
    );
    // Snapshots alone are a warning.
    let server = RedisServer::start_with(&["--save", "60 1000"]);
    let report = examine(&server).await;
    assert_eq!(finding(&report, "persistence").level, Level::Warning);
}

/// A `maxclients` below what the consumers of the keyspace open is a danger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_clients_for_the_consumers_is_a_danger() {
    let server = RedisServer::start_with(&["--maxclients", "12"]);
    let broker = redis_broker(&server).await;
    create_group(broker.as_ref(), "DoctorA", "reporting").await;
    for _ in 0..3 {
        publish(broker.as_ref(), "DoctorA", json!({})).await;
    }
    // Three consumers of the group, as three hosts would have, each reading one entry.
    for consumer in ["c1", "c2", "c3"] {
        let mut reader = evhost::broker::Broker::reader(broker.as_ref())
            .await
            .expect("reader");
        reader
            .read(
                "events:DoctorA",
                "reporting",
                consumer,
                evhost::broker::ReadFrom::New { block: None },
                1,
            )
            .await
            .expect("read");
    }
    let report = doctor::examine(&broker).await;
    let clients = finding(&report, "maxclients");
    assert_eq!(clients.level, Level::Danger, "{clients:?}");
    assert!(clients.fix.contains("CONFIG SET maxclients"), "{clients:?}");
}

/// With `CONFIG` renamed away, as managed Redis often does, the settings are unknown, never ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_cannot_be_read_are_unknown() {
    let server = RedisServer::start_with(&["--rename-command", "CONFIG", ""]);
    let broker: std::sync::Arc<RedisBroker> = redis_broker(&server).await;
    let report = doctor::examine(&broker).await;
    for check in ["eviction", "persistence", "maxclients"] {
        let found = finding(&report, check);
        assert_eq!(found.level, Level::Unknown, "{found:?}");
        assert!(found.found.contains("CONFIG GET"), "{found:?}");
    }
    assert_eq!(finding(&report, "version").level, Level::Ok);
}
