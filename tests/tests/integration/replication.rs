//! Commits that survive what replication and the cluster client do: `--wait-replicas` (a
//! commit returns once the replicas asked for have its writes; without them it returns after
//! the timeout, and the shortfall is counted), and a commit sent again after a lost reply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use evhost::RedisBroker;
use evhost::broker::redis::WaitReplicas;
use evhost::broker::{Broker, Commit, GroupStart, Inspect as _, Op, ReadFrom, Settlement};
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

/// A commit sent again after its reply was lost (the cluster client resends commands on a
/// failed connection) answers what its first run did and writes nothing: not "skipped", and no
/// effect twice. The same commit under another id is the ordinary case of an entry no longer
/// pending: skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_sent_again_is_recognised_as_applied() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(&server.url()).await.expect("connect");
    let stream = "{p0}:in";
    broker
        .create_group(stream, "g", GroupStart::Beginning)
        .await
        .expect("XGROUP CREATE");
    let id = broker
        .add(stream, &vec![("n".into(), b"1".to_vec())])
        .await
        .expect("XADD");
    let mut reader = broker.reader().await.expect("a reader");
    let read = reader
        .read(stream, "g", "c", ReadFrom::New { block: None }, 10)
        .await
        .expect("XREADGROUP");
    assert_eq!(read.len(), 1);
    let commit = Commit {
        ops: Vec::new(),
        settlements: vec![Settlement {
            stream: stream.into(),
            group: "g".into(),
            consumer: "c".into(),
            id,
            ops: vec![Op::Add {
                stream: "{p0}:out".into(),
                fields: vec![("effect".into(), b"1".to_vec())],
            }],
            expects: Vec::new(),
        }],
    };
    let first = broker.commit_once(&commit, "c-1").await.expect("commit");
    assert!(first.skipped.is_empty() && first.conflicted.is_empty());
    let again = broker
        .commit_once(&commit, "c-1")
        .await
        .expect("sent again");
    assert_eq!(again, first, "the first run's answer");
    assert_eq!(broker.len("{p0}:out").await.expect("XLEN"), 1, "one effect");
    let other = broker
        .commit_once(&commit, "c-2")
        .await
        .expect("another commit");
    assert_eq!(other.skipped, vec![id], "no longer pending: skipped");
    assert_eq!(broker.len("{p0}:out").await.expect("XLEN"), 1);
}
