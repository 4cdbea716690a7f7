//! The saga on a partitioned keyspace (`evhost bench --partitions P`): the four saga plugins
//! on P partitions, auctions keyed by `auction_id`, beside the same saga on one partition and
//! the raw loop of the same run.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::broker::Broker;
use evhost::event::{Event, PARTITION_KEY};
use evhost::host::HostOptions;
use evhost::partition;

use super::harness::{Running, load_with, options, payload, saga_drained, saga_plugins};
use super::{BenchError, BenchOptions};

/// The saga's throughput on P partitions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionedSaga {
    /// The partition count.
    pub partitions: u32,
    /// Auctions per second through the four plugins.
    pub evhost_per_sec: f64,
    /// Beside the raw loop of the same run.
    pub ratio: f64,
}

/// Prefills `opts.saga_events` auctions into the partitions of a fresh keyspace of
/// `partitions`, then times the four plugins through the whole saga in every partition.
/// Bidders are not registered here: a registration lands in its bidder's partition, a payment
/// in its auction's, so the notices go to bidder ids (the same work: one key-value read each).
pub(super) async fn measure(
    broker: Arc<dyn Broker>,
    url: &str,
    opts: &BenchOptions,
    partitions: NonZeroU32,
    raw_per_sec: f64,
) -> Result<PartitionedSaga, BenchError> {
    let layout = partition::resolve(broker.as_ref(), Some(partitions))
        .await
        .map_err(|err| BenchError::Host(err.to_string()))?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for chunk in (0..opts.saga_events).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let mut event = Event::new("AuctionEnded", "evhost-bench", payload(*n));
            event.set_extension(PARTITION_KEY, format!("a-{n:08}"));
            let cmd = pipe.cmd("XADD").arg(event.stream_in(layout)).arg("*");
            for (name, value) in event.to_fields() {
                cmd.arg(name).arg(value);
            }
            pipe.ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let host_options = HostOptions {
        keyspace: layout,
        ..options()
    };
    let host = load_with(broker.clone(), host_options, saga_plugins(opts)).await?;
    let clock = Instant::now();
    let saga = Running::run(host).await;
    // The whole saga in every partition, not only its first step.
    for keyspace in layout.each_partition() {
        saga_drained(broker.as_ref(), keyspace, Duration::from_secs(300)).await?;
    }
    let elapsed = clock.elapsed();
    saga.stop().await;
    let evhost_per_sec = opts.saga_events as f64 / elapsed.as_secs_f64();
    Ok(PartitionedSaga {
        partitions: layout.partitions(),
        evhost_per_sec,
        ratio: evhost_per_sec / raw_per_sec,
    })
}
