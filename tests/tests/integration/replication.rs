//! `--wait-replicas`: a commit returns once the replicas asked for have its writes; without
//! them it returns after the timeout, and the shortfall is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use evhost::RedisBroker;
use evhost::broker::redis::WaitReplicas;
use evhost::broker::{Broker, Commit, Op};
use evhost_tests::{RedisServer, raw_connection, server_info, wait_for};

/// A primary with one replica in sync: a commit with effects is on the replica when it
/// returns (read from the replica at once, no waiting). With the replica gone, commits go on
/// after the timeout, each counted as a shortfall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_their_replicas() {
    let primary = RedisServer::start();
    let port = primary.port().to_string();
    let mut replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_for("the replica in sync", Duration::from_secs(10), || async {
        server_info(&replica, "replication")
            .await
            .contains("master_link_status:up")
    })
    .await;
    let wait = WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(400),
    };
    let broker = RedisBroker::connect(&primary.url())
        .await
        .expect("connect")
        .with_wait_replicas(wait);
    let mut on_replica = raw_connection(&replica).await;
    for n in 1..=20_u64 {
        let commit = Commit {
            ops: vec![Op::Add {
                stream: "durable".into(),
                fields: vec![("n".into(), n.to_string().into_bytes())],
            }],
            settlements: Vec::new(),
        };
        broker.commit(&commit).await.expect("commit");
        let replicated: u64 = redis::cmd("XLEN")
            .arg("durable")
            .query_async(&mut on_replica)
            .await
            .expect("XLEN on the replica");
        assert_eq!(
            replicated, n,
            "commit {n} is on the replica when it returns"
        );
    }
    assert_eq!(broker.replication_shortfalls(), 0);

    replica.kill();
    let started = Instant::now();
    for _ in 0..2 {
        let commit = Commit {
            ops: vec![Op::Add {
                stream: "durable".into(),
                fields: vec![("n".into(), b"late".to_vec())],
            }],
            settlements: Vec::new(),
        };
        broker
            .commit(&commit)
            .await
            .expect("a commit without its replica");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "each commit waited for the replica: {took:?}"
    );
    assert_eq!(broker.replication_shortfalls(), 2);
    let mut on_primary = raw_connection(&primary).await;
    let written: u64 = redis::cmd("XLEN")
        .arg("durable")
        .query_async(&mut on_primary)
        .await
        .expect("XLEN");
    assert_eq!(written, 22, "the commits themselves were applied");
}
