//! `evhost bench`: evhost beside a raw Redis consumer loop, in one run, on one server.
//!
//! Measures throughput (a trivial plugin, the four saga plugins), latency from `XADD` to
//! handler entry at fixed produce rates (`latency.rs`), one hot key (`hot_key.rs`), hot-swap
//! and rollback time (`swap.rs`) and the host's memory, and compares each with a plain
//! redis-rs `XREADGROUP`/`XACK` loop (`raw.rs`) on the same server in the same run; the
//! figures and their table are in `report.rs`, what the measurements share in `harness.rs`.
//! `--cluster` (`cluster.rs`) and `--first-load` (`first_load.rs`) are measurements of their
//! own.

pub mod cluster;
pub mod first_load;
mod harness;
mod hot_key;
mod latency;
mod partitioned;
pub mod raw;
mod report;
mod swap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::artifacts;
use evhost::broker::{self, Broker};
use evhost::keyspace::Keyspace;
use evhost::process_rss_bytes;
use evhost::redis_process::RedisServer;
use harness::{
    Running, drained, flush, load, mib, payload, prefill, register_bidders, saga_drained,
    saga_plugins, settings, verify_saga,
};
pub use report::BenchReport;
use report::Throughput;

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The host or a plugin failed.
    #[error("{0}")]
    Host(String),
    /// A phase did not finish in time.
    #[error("{0} did not finish within {1:?}")]
    Timeout(&'static str, Duration),
    /// A file could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events per throughput measurement.
    pub events: usize,
    /// Events for the four-plugin saga throughput.
    pub saga_events: usize,
    /// Consumers per stream (`[limits] concurrency`) for the saga plugins that make a key-value
    /// round trip per event (payment, notification); `None`: one, the default.
    pub saga_concurrency: Option<std::num::NonZeroUsize>,
    /// Apply `saga_concurrency` as lanes of one consumer partitioned by a key of the event
    /// (`[limits] partition_key`: payment by `auction_id`, notification by `bidder_id`)
    /// instead of as consumers.
    pub saga_partitioned: bool,
    /// Produce rates of the latency measurements, in events per second.
    pub rates: Vec<u32>,
    /// How long each latency measurement lasts.
    pub latency_duration: Duration,
    /// Number of hot swaps.
    pub swaps: usize,
    /// Events pushed through the four plugins for the memory measurement.
    pub memory_events: usize,
    /// Events of the hot-key measurement.
    pub hot_key_events: usize,
    /// Lanes racing on the hot key.
    pub hot_key_lanes: std::num::NonZeroUsize,
    /// Also run the saga on a keyspace of this many partitions.
    pub partitions: Option<std::num::NonZeroU32>,
}

/// Runs every measurement against `url` (or a private redis-server when `url` is `None`) and
/// reports progress on stderr.
///
/// # Errors
///
/// When Redis or the host fails, or a phase does not finish in time.
pub async fn run(url: Option<String>, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let _server;
    let url = match url {
        Some(url) => url,
        None => {
            let server =
                RedisServer::start_with(&[]).map_err(|err| BenchError::Host(err.to_string()))?;
            let url = server.url();
            _server = server;
            url
        }
    };
    let broker: Arc<dyn Broker> = broker::connect(&url).await?;
    let client = redis::Client::open(url.as_str())?;
    let admin = client.get_multiplexed_async_connection().await?;
    flush(&admin).await?;
    let pid = std::process::id();

    // Memory at rest with the four saga plugins.
    eprintln!("bench: memory at rest with the four saga plugins");
    let saga = Running::start(broker.clone(), saga_plugins(opts)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_rest = process_rss_bytes(pid);
    saga.stop().await;

    // Throughput: raw, trivial plugin.
    eprintln!("bench: throughput, {} events", opts.events);
    prefill(&url, "BenchRaw", opts.events, false).await?;
    let raw_elapsed = raw::consume(
        &url,
        &Keyspace::single().event_stream("BenchRaw"),
        opts.events,
    )
    .await?;
    let raw_per_sec = opts.events as f64 / raw_elapsed.as_secs_f64();
    prefill(&url, "BenchTrivial", opts.events, false).await?;
    let noop = vec![(
        "noop",
        artifacts::NOOP.to_vec(),
        settings("noop", "BenchTrivial"),
    )];
    let host = load(broker.clone(), noop).await?;
    let clock = Instant::now();
    let trivial = Running::run(host).await;
    drained(
        broker.as_ref(),
        &Keyspace::single().event_stream("BenchTrivial"),
        &["noop"],
        Duration::from_secs(300),
    )
    .await?;
    let trivial_elapsed = clock.elapsed();
    trivial.stop().await;
    let trivial_per_sec = opts.events as f64 / trivial_elapsed.as_secs_f64();

    // Throughput: four saga plugins on AuctionEnded.
    eprintln!("bench: four saga plugins, {} auctions", opts.saga_events);
    flush(&admin).await?;
    prefill(&url, "BenchRaw", opts.saga_events, false).await?;
    let raw_saga = raw::consume(
        &url,
        &Keyspace::single().event_stream("BenchRaw"),
        opts.saga_events,
    )
    .await?;
    // The raw loop's entries would be audited and counted by the saga's catch-all plugins.
    flush(&admin).await?;
    register_bidders(broker.clone(), &url, opts).await?;
    prefill(&url, "AuctionEnded", opts.saga_events, false).await?;
    let host = load(broker.clone(), saga_plugins(opts)).await?;
    let clock = Instant::now();
    let saga = Running::run(host).await;
    // The whole saga: until the notices of the last payments are audited and counted.
    saga_drained(
        broker.as_ref(),
        Keyspace::single(),
        Duration::from_secs(300),
    )
    .await?;
    let saga_elapsed = clock.elapsed();
    saga.stop().await;
    verify_saga(broker.as_ref(), opts.saga_events).await?;
    let raw_saga_per_sec = opts.saga_events as f64 / raw_saga.as_secs_f64();
    let saga_per_sec = opts.saga_events as f64 / saga_elapsed.as_secs_f64();
    let saga_partitions = match opts.partitions {
        Some(partitions) => {
            eprintln!(
                "bench: four saga plugins on {partitions} partitions, {} auctions",
                opts.saga_events
            );
            flush(&admin).await?;
            let measured =
                partitioned::measure(broker.clone(), &url, opts, partitions, raw_saga_per_sec)
                    .await?;
            // The partition count goes with the keyspace: the next phases use one partition.
            flush(&admin).await?;
            Some(measured)
        }
        None => None,
    };

    // Latency at fixed rates.
    let latency = latency::measure(broker.clone(), &url, &admin, opts).await?;

    // One hot key: read-modify-writes racing from several lanes, beside increments.
    eprintln!(
        "bench: one hot key, {} events, {} lanes",
        opts.hot_key_events, opts.hot_key_lanes
    );
    flush(&admin).await?;
    let hot_key = hot_key::measure(
        broker.clone(),
        &url,
        opts.hot_key_events,
        opts.hot_key_lanes,
    )
    .await?;

    // Hot swap.
    eprintln!("bench: {} hot swaps", opts.swaps);
    flush(&admin).await?;
    let swaps = swap::measure(broker.clone(), &url, opts.swaps).await?;

    // Memory after many events through the four plugins (audit and metrics see them all).
    eprintln!("bench: memory after {} events", opts.memory_events);
    flush(&admin).await?;
    prefill(&url, "BenchMemory", opts.memory_events / 10, false).await?;
    let saga = Running::start(broker.clone(), saga_plugins(opts)).await?;
    // Warm up (instances, buffers), then read the baseline at rest.
    drained(
        broker.as_ref(),
        &Keyspace::single().event_stream("BenchMemory"),
        &["audit", "metrics"],
        Duration::from_secs(600),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = process_rss_bytes(pid);
    prefill(&url, "BenchMemory", opts.memory_events, false).await?;
    drained(
        broker.as_ref(),
        &Keyspace::single().event_stream("BenchMemory"),
        &["audit", "metrics"],
        Duration::from_secs(600),
    )
    .await?;
    let rss_after = process_rss_bytes(pid);
    saga.stop().await;
    flush(&admin).await?;

    Ok(BenchReport {
        redis: crate::cli::redact_url(&url),
        event_bytes: payload(0).len(),
        events: opts.events,
        trivial: Throughput {
            raw_per_sec,
            evhost_per_sec: trivial_per_sec,
            ratio: trivial_per_sec / raw_per_sec,
        },
        saga: Throughput {
            raw_per_sec: raw_saga_per_sec,
            evhost_per_sec: saga_per_sec,
            ratio: saga_per_sec / raw_saga_per_sec,
        },
        saga_concurrency: opts.saga_concurrency.map_or(1, std::num::NonZeroUsize::get),
        saga_partitioned: opts.saga_partitioned,
        saga_partitions,
        latency,
        hot_key,
        swap_median_ms: swap::median(&swaps.swap_ms),
        swap_max_ms: swap::max(&swaps.swap_ms),
        swap_ms: swaps.swap_ms,
        rollback_median_ms: swap::median(&swaps.rollback_ms),
        rollback_max_ms: swap::max(&swaps.rollback_ms),
        rollback_ms: swaps.rollback_ms,
        rss_rest_mib: mib(rss_rest),
        rss_before_mib: mib(rss_before),
        rss_after_mib: mib(rss_after),
        memory_events: opts.memory_events,
        seconds: started.elapsed().as_secs_f64(),
    })
}
