//! `evhost bench`: evhost beside a raw Redis consumer loop, in one run (see [`crate::bench`]).

use std::num::NonZeroUsize;
use std::time::Duration;

use clap::Args;

use crate::bench::{self, BenchOptions};

/// Arguments of `evhost bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo run --release -p evhost -- bench\n  evhost bench --json > bench.json\n  evhost bench --redis redis://127.0.0.1:6379 --events 20000 --memory-events 100000\n  evhost bench --saga-concurrency 16\n  evhost bench --saga-concurrency 16 --saga-partitioned\n  evhost bench --partitions 8\n  evhost bench --cluster --events 20000"
)]
pub struct BenchArgs {
    /// Measure against this Redis (it is FLUSHALLed!) instead of a private redis-server.
    #[arg(long)]
    pub redis: Option<String>,
    /// Events per throughput measurement.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Auctions for the four-plugin saga throughput.
    #[arg(long, default_value_t = 20_000)]
    pub saga_events: usize,
    /// Consumers per stream for the saga's payment and notification plugins (their handlers
    /// make a Redis round trip per event), as `[limits] concurrency` in their sidecars would.
    #[arg(long, default_value_t = NonZeroUsize::MIN)]
    pub saga_concurrency: NonZeroUsize,
    /// With `--saga-concurrency N`, partition instead of adding consumers: payment by
    /// `auction_id`, notification by `bidder_id`, one consumer per stream handling N events at
    /// a time (`[limits] partition_key`).
    #[arg(long)]
    pub saga_partitioned: bool,
    /// Produce rates of the latency measurements, events per second.
    #[arg(long, value_delimiter = ',', default_value = "5000,20000")]
    pub rates: Vec<u32>,
    /// Seconds per latency measurement.
    #[arg(long, default_value_t = 3)]
    pub latency_secs: u64,
    /// Hot swaps to time.
    #[arg(long, default_value_t = 20)]
    pub swaps: usize,
    /// Events for the hot-key measurement (every event counts in one key-value entry).
    #[arg(long, default_value_t = 10_000)]
    pub hot_key_events: usize,
    /// Lanes racing on the hot key.
    #[arg(long, default_value_t = NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN))]
    pub hot_key_lanes: NonZeroUsize,
    /// Events pushed through the four plugins before the second memory reading.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_events: usize,
    /// Also run the saga on a keyspace of P partitions (auctions keyed by `auction_id`),
    /// beside the one-partition saga and the raw loop.
    #[arg(long, value_name = "P")]
    pub partitions: Option<std::num::NonZeroU32>,
    /// Instead of the usual measurements, compare one Redis node with a local Redis Cluster of
    /// three primaries (both started here) on the same partitioned work, --events per round:
    /// throughput and CPU per event of the host and of Redis.
    #[arg(long, conflicts_with = "redis")]
    pub cluster: bool,
    /// Instead of the usual measurements, time the first load of each component given (from
    /// an empty compile cache): on the quick tier, until its optimised code is ready, and
    /// optimised first; and one call on each tier's code. No Redis is needed.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["redis", "cluster"])]
    pub first_load: Vec<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evhost bench`.
///
/// # Errors
///
/// When Redis or the host fails during a measurement.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.first_load.is_empty() {
        let report = bench::first_load::run(&args.first_load).await?;
        if args.json {
            super::output::json_line(&report)?;
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    if args.cluster {
        let report = bench::cluster::run(args.events.max(1)).await?;
        if args.json {
            super::output::json_line(&report)?;
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    let options = BenchOptions {
        events: args.events.max(1),
        saga_events: args.saga_events.max(1),
        saga_concurrency: Some(args.saga_concurrency).filter(|n| n.get() > 1),
        saga_partitioned: args.saga_partitioned,
        rates: args.rates,
        latency_duration: Duration::from_secs(args.latency_secs.max(1)),
        swaps: args.swaps,
        memory_events: args.memory_events.max(1),
        hot_key_events: args.hot_key_events.max(1),
        hot_key_lanes: args.hot_key_lanes,
        partitions: args.partitions,
    };
    let report = bench::run(args.redis, &options).await?;
    if args.json {
        super::output::json_line(&report)?;
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
