//! The consumer-group conformance cases, run against a real redis-server and against the
//! in-memory broker: both brokers must behave the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use evhost::MemoryBroker;
use evhost::broker::conformance;
use evhost_tests::{RedisServer, redis_broker};

/// Every conformance case on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_conforms() {
    let server = RedisServer::start();
    let broker = redis_broker(&server).await;
    conformance::run_all(broker.as_ref()).await;
}

/// Every conformance case on the in-memory broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_conforms() {
    conformance::run_all(&MemoryBroker::new()).await;
}
