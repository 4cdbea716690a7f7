//! `evhost bench`: evhost beside a raw Redis consumer loop, in one run, on one server.
//!
//! Measures throughput (a trivial plugin, the four saga plugins), latency from `XADD` to
//! handler entry at fixed produce rates, hot-swap time and the host's memory, and compares each
//! with a plain redis-rs `XREADGROUP`/`XACK` loop on the same server in the same run.

pub mod cluster;
pub mod first_load;
mod hot_key;
mod partitioned;
pub mod raw;
mod swap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use evhost::activity::Activity;
use evhost::artifacts;
use evhost::broker::{self, Broker, GroupStart};
use evhost::consumer::ConsumerOptions;
use evhost::event::Event;
use evhost::host::{Host, HostOptions};
use evhost::keyspace::Keyspace;
use evhost::plugin::PluginSettings;
use evhost::process_rss_bytes;
use evhost::redis_process::RedisServer;

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

/// Throughput of one measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// Events per second of the raw loop.
    pub raw_per_sec: f64,
    /// Events per second of evhost.
    pub evhost_per_sec: f64,
    /// evhost / raw.
    pub ratio: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Latency at one produce rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    /// Produce rate, events per second.
    pub rate: u32,
    /// The raw loop.
    pub raw: Percentiles,
    /// evhost (to handler entry).
    pub evhost: Percentiles,
}

/// Every figure of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The Redis server measured against.
    pub redis: String,
    /// Bytes of event data.
    pub event_bytes: usize,
    /// Events per throughput measurement.
    pub events: usize,
    /// Trivial plugin.
    pub trivial: Throughput,
    /// Four saga plugins.
    pub saga: Throughput,
    /// Consumers per stream of the payment and notification plugins in the saga.
    pub saga_concurrency: usize,
    /// Whether that concurrency was partitioned by a key of the event in one consumer.
    pub saga_partitioned: bool,
    /// The saga on a partitioned keyspace (`--partitions`).
    pub saga_partitions: Option<partitioned::PartitionedSaga>,
    /// Latencies by rate.
    pub latency: Vec<Latency>,
    /// One hot key: read-modify-write, increment and the hand-written loop.
    pub hot_key: hot_key::HotKey,
    /// Hot swap: file written → first event handled by the new version, in milliseconds.
    pub swap_ms: Vec<f64>,
    /// Median of `swap_ms`.
    pub swap_median_ms: f64,
    /// Maximum of `swap_ms`.
    pub swap_max_ms: f64,
    /// Rollback: `Host::roll_back` called → first event handled by the previous version, in
    /// milliseconds (one after each swap).
    pub rollback_ms: Vec<f64>,
    /// Median of `rollback_ms`.
    pub rollback_median_ms: f64,
    /// Maximum of `rollback_ms`.
    pub rollback_max_ms: f64,
    /// Host RSS at rest with the four plugins, MiB.
    pub rss_rest_mib: f64,
    /// Host RSS just before the `memory_events` events (same host, at rest), MiB.
    pub rss_before_mib: f64,
    /// Host RSS after `memory_events` events, MiB.
    pub rss_after_mib: f64,
    /// Events pushed for the memory figure.
    pub memory_events: usize,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
}

/// JSON data of about 200 bytes.
fn payload(n: usize) -> Vec<u8> {
    let mut data = format!(
        r#"{{"auction_id":"a-{n:08}","winning_bidder_id":"b-{:04}","winning_price":{}.50,"note":""#,
        n % 1000,
        10 + n % 900
    );
    while data.len() < 198 {
        data.push('x');
    }
    data.push_str("\"}");
    data.into_bytes()
}

/// An event whose id starts with the wall-clock nanoseconds of its creation.
fn timed_event(event_type: &str, n: usize) -> Event {
    let mut event = Event::new(event_type, "evhost-bench", payload(n));
    event.id = format!("{}-{n}", raw::now_ns());
    event
}

/// Latency of an event whose id starts with its creation time in nanoseconds.
fn latency_of(event_id: &str, at: SystemTime) -> Option<Duration> {
    let sent: u128 = event_id.split('-').next()?.parse().ok()?;
    let sent = UNIX_EPOCH + Duration::from_nanos(u64::try_from(sent).ok()?);
    at.duration_since(sent).ok()
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
    };
    Percentiles {
        samples: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

fn mib(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |bytes| bytes as f64 / (1024.0 * 1024.0))
}

/// Appends `events` entries to `stream` with pipelined `XADD`s.
async fn prefill(
    url: &str,
    event_type: &str,
    events: usize,
    timed: bool,
) -> Result<(), BenchError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = Keyspace::single().event_stream(event_type);
    for chunk in (0..events).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let event = if timed {
                timed_event(event_type, *n)
            } else {
                Event::new(event_type, "evhost-bench", payload(*n))
            };
            let cmd = pipe.cmd("XADD").arg(&stream).arg("*");
            for (name, value) in event.to_fields() {
                cmd.arg(name).arg(value);
            }
            pipe.ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// Produces timed events at `rate` per second for `duration` (a pipelined batch every
/// millisecond).
async fn produce(
    url: String,
    event_type: &'static str,
    rate: u32,
    duration: Duration,
) -> Result<usize, BenchError> {
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = Keyspace::single().event_stream(event_type);
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as usize;
        if due <= sent {
            continue;
        }
        let mut pipe = redis::pipe();
        for n in sent..due {
            let cmd = pipe.cmd("XADD").arg(&stream).arg("*");
            for (name, value) in timed_event(event_type, n).to_fields() {
                cmd.arg(name).arg(value);
            }
            pipe.ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        sent = due;
    }
    Ok(sent)
}

/// Waits until `groups` on `stream` have nothing pending or unread.
async fn drained(
    broker: &dyn Broker,
    stream: &str,
    groups: &[&str],
    limit: Duration,
) -> Result<(), BenchError> {
    let until = Instant::now() + limit;
    loop {
        let infos = broker.groups(stream).await?;
        let done = groups.iter().all(|group| {
            infos
                .iter()
                .any(|info| info.name == *group && info.pending == 0 && info.lag == Some(0))
        });
        if done {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(BenchError::Timeout("draining the stream", limit));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn options() -> HostOptions {
    HostOptions {
        consumer: ConsumerOptions {
            consumer: "bench".into(),
            batch_size: 100,
            block: Duration::from_millis(200),
            retry_interval: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
        },
        discovery_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(10),
        cache_dir: None,
        ..HostOptions::default()
    }
}

fn settings(name: &str, subscriptions: &str) -> PluginSettings {
    let mut config = BTreeMap::new();
    config.insert("name".to_string(), name.to_string());
    config.insert("subscriptions".to_string(), subscriptions.to_string());
    PluginSettings {
        start: GroupStart::Beginning,
        config,
        ..PluginSettings::default()
    }
}

/// A host running in a background task until dropped.
struct Running {
    host: Arc<Host>,
    task: tokio::task::JoinHandle<()>,
}

/// A host with `plugins` loaded, not yet running.
async fn load(
    broker: Arc<dyn Broker>,
    plugins: Vec<(&str, Vec<u8>, PluginSettings)>,
) -> Result<Arc<Host>, BenchError> {
    load_with(broker, options(), plugins).await
}

/// A host of `options` with `plugins` loaded, not yet running.
async fn load_with(
    broker: Arc<dyn Broker>,
    options: HostOptions,
    plugins: Vec<(&str, Vec<u8>, PluginSettings)>,
) -> Result<Arc<Host>, BenchError> {
    let host = Host::new(broker, options).map_err(|err| BenchError::Host(err.to_string()))?;
    for (name, bytes, settings) in plugins {
        let version = host
            .engine()
            .load_bytes(format!("embedded:{name}.wasm"), bytes, settings)
            .await
            .map_err(|err| BenchError::Host(err.to_string()))?;
        host.add_version(version)
            .map_err(|err| BenchError::Host(err.to_string()))?;
    }
    Ok(host)
}

impl Running {
    async fn start(
        broker: Arc<dyn Broker>,
        plugins: Vec<(&str, Vec<u8>, PluginSettings)>,
    ) -> Result<Self, BenchError> {
        let host = load(broker, plugins).await?;
        Ok(Self::run(host).await)
    }

    async fn run(host: Arc<Host>) -> Self {
        let task = {
            let host = host.clone();
            tokio::spawn(async move { host.run(std::future::pending()).await })
        };
        host.wait_ready(Duration::from_secs(10)).await;
        Running { host, task }
    }

    async fn stop(self) {
        self.host.stop();
        let _ = self.task.await;
    }
}

/// Plugins whose handler makes a key-value round trip per event, with the field of the event
/// data their keys depend on.
const ROUND_TRIP_PLUGINS: [(&str, &str); 2] =
    [("payment", "auction_id"), ("notification", "bidder_id")];

fn saga_plugins(opts: &BenchOptions) -> Vec<(&'static str, Vec<u8>, PluginSettings)> {
    artifacts::examples()
        .into_iter()
        .map(|(name, bytes)| {
            let key = ROUND_TRIP_PLUGINS
                .iter()
                .find(|(plugin, _)| *plugin == name)
                .map(|(_, key)| (*key).to_string());
            let settings = PluginSettings {
                start: GroupStart::Beginning,
                concurrency: opts.saga_concurrency.filter(|_| key.is_some()),
                partition_key: key.filter(|_| opts.saga_partitioned),
                ..PluginSettings::default()
            };
            (name, bytes.to_vec(), settings)
        })
        .collect()
}

/// A component with a custom section appended: same behaviour, different bytes (a new version
/// for the hot-swap measurement).
fn variant(component: &[u8], n: usize) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"evhost-bench";
    let payload = n.to_le_bytes();
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut bytes = component.to_vec();
    bytes.push(0);
    leb128(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    bytes
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
    let mut admin = client.get_multiplexed_async_connection().await?;
    let flush = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move { redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await }
    };
    flush(&mut admin).await?;
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
    flush(&mut admin).await?;
    prefill(&url, "BenchRaw", opts.saga_events, false).await?;
    let raw_saga = raw::consume(
        &url,
        &Keyspace::single().event_stream("BenchRaw"),
        opts.saga_events,
    )
    .await?;
    prefill(&url, "AuctionEnded", opts.saga_events, false).await?;
    let host = load(broker.clone(), saga_plugins(opts)).await?;
    let clock = Instant::now();
    let saga = Running::run(host).await;
    drained(
        broker.as_ref(),
        &Keyspace::single().event_stream("AuctionEnded"),
        &["payment", "audit", "metrics"],
        Duration::from_secs(300),
    )
    .await?;
    let saga_elapsed = clock.elapsed();
    saga.stop().await;
    let raw_saga_per_sec = opts.saga_events as f64 / raw_saga.as_secs_f64();
    let saga_per_sec = opts.saga_events as f64 / saga_elapsed.as_secs_f64();
    let saga_partitions = match opts.partitions {
        Some(partitions) => {
            eprintln!(
                "bench: four saga plugins on {partitions} partitions, {} auctions",
                opts.saga_events
            );
            flush(&mut admin).await?;
            let measured =
                partitioned::measure(broker.clone(), &url, opts, partitions, raw_saga_per_sec)
                    .await?;
            // The partition count goes with the keyspace: the next phases use one partition.
            flush(&mut admin).await?;
            Some(measured)
        }
        None => None,
    };

    // Latency at fixed rates.
    let mut latency = Vec::new();
    for rate in &opts.rates {
        eprintln!("bench: latency at {rate} events/s");
        flush(&mut admin).await?;
        let consumer = {
            let url = url.clone();
            let duration = opts.latency_duration + Duration::from_millis(300);
            tokio::spawn(async move {
                raw::latencies(
                    &url,
                    &Keyspace::single().event_stream("BenchLatencyRaw"),
                    duration,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        produce(url.clone(), "BenchLatencyRaw", *rate, opts.latency_duration).await?;
        let raw_samples = consumer
            .await
            .map_err(|err| BenchError::Host(err.to_string()))??;

        let noop = vec![(
            "noop",
            artifacts::NOOP.to_vec(),
            settings("noop", "BenchLatency"),
        )];
        let host = Running::start(broker.clone(), noop).await?;
        let feed = host.host.services().activity.subscribe();
        let collector = tokio::spawn(collect_latencies(
            feed,
            opts.latency_duration + Duration::from_millis(500),
        ));
        produce(url.clone(), "BenchLatency", *rate, opts.latency_duration).await?;
        let samples = collector
            .await
            .map_err(|err| BenchError::Host(err.to_string()))?;
        host.stop().await;
        latency.push(Latency {
            rate: *rate,
            raw: percentiles(raw_samples),
            evhost: percentiles(samples),
        });
    }

    // One hot key: read-modify-writes racing from several lanes, beside increments.
    eprintln!(
        "bench: one hot key, {} events, {} lanes",
        opts.hot_key_events, opts.hot_key_lanes
    );
    flush(&mut admin).await?;
    let hot_key = hot_key::measure(
        broker.clone(),
        &url,
        opts.hot_key_events,
        opts.hot_key_lanes,
    )
    .await?;

    // Hot swap.
    eprintln!("bench: {} hot swaps", opts.swaps);
    flush(&mut admin).await?;
    let swaps = swap::measure(broker.clone(), &url, opts.swaps).await?;

    // Memory after many events through the four plugins (audit and metrics see them all).
    eprintln!("bench: memory after {} events", opts.memory_events);
    flush(&mut admin).await?;
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
    flush(&mut admin).await?;

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

/// Latencies (producer timestamp → handler entry) from the activity feed, for `duration`.
async fn collect_latencies(
    mut feed: broadcast::Receiver<Activity>,
    duration: Duration,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    let until = tokio::time::Instant::now() + duration;
    loop {
        match tokio::time::timeout_at(until, feed.recv()).await {
            Ok(Ok(Activity::Handled {
                event_id,
                started_at,
                ..
            })) => {
                if let Some(latency) = latency_of(&event_id, started_at) {
                    samples.push(latency);
                }
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return samples,
        }
    }
}

impl BenchReport {
    /// The report as an aligned table with the targets.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String,
                    what: &str,
                    raw: String,
                    evhost: String,
                    ratio: String,
                    target: &str| {
            out.push_str(&format!(
                "{what:<36} {raw:>14} {evhost:>14} {ratio:>10}   {target}\n"
            ));
        };
        out.push_str(&format!(
            "evhost bench: {} events of {} bytes, Redis at {}, {:.0} s\n\n",
            self.events, self.event_bytes, self.redis, self.seconds
        ));
        if self.saga_concurrency > 1 && self.saga_partitioned {
            out.push_str(&format!(
                "saga: payment and notification handle {} events at a time, partitioned by \
                 auction and bidder\n\n",
                self.saga_concurrency
            ));
        } else if self.saga_concurrency > 1 {
            out.push_str(&format!(
                "saga: payment and notification with {} consumers per stream\n\n",
                self.saga_concurrency
            ));
        }
        line(
            &mut out,
            "measurement",
            "raw".into(),
            "evhost".into(),
            "evhost/raw".into(),
            "target",
        );
        for (what, t, target) in [
            ("throughput, trivial plugin", &self.trivial, "ratio ≥ 0.8"),
            ("throughput, four saga plugins", &self.saga, "ratio ≥ 0.5"),
        ] {
            line(
                &mut out,
                what,
                format!("{:.0}/s", t.raw_per_sec),
                format!("{:.0}/s", t.evhost_per_sec),
                format!("{:.2}", t.ratio),
                target,
            );
        }
        if let Some(partitioned) = &self.saga_partitions {
            line(
                &mut out,
                &format!("saga on {} partitions", partitioned.partitions),
                format!("{:.0}/s", self.saga.raw_per_sec),
                format!("{:.0}/s", partitioned.evhost_per_sec),
                format!("{:.2}", partitioned.ratio),
                "",
            );
        }
        for latency in &self.latency {
            for (label, raw, evhost, target) in [
                (
                    "p50",
                    latency.raw.p50_ms,
                    latency.evhost.p50_ms,
                    if latency.rate == 5000 {
                        "ratio ≤ 1.5"
                    } else {
                        ""
                    },
                ),
                (
                    "p99",
                    latency.raw.p99_ms,
                    latency.evhost.p99_ms,
                    if latency.rate == 5000 {
                        "evhost ≤ 2 ms"
                    } else {
                        ""
                    },
                ),
                ("p99.9", latency.raw.p999_ms, latency.evhost.p999_ms, ""),
            ] {
                line(
                    &mut out,
                    &format!("latency {label} at {}/s", latency.rate),
                    format!("{raw:.3} ms"),
                    format!("{evhost:.3} ms"),
                    format!("{:.2}", evhost / raw),
                    target,
                );
            }
        }
        let hot = &self.hot_key;
        for (what, per_sec) in [
            ("get + set", hot.get_set_per_sec),
            ("increment", hot.increment_per_sec),
        ] {
            line(
                &mut out,
                &format!("one hot key, {} lanes, {what}", hot.lanes),
                format!("{:.0}/s", hot.raw_per_sec),
                format!("{per_sec:.0}/s"),
                format!("{:.2}", per_sec / hot.raw_per_sec),
                "",
            );
        }
        line(
            &mut out,
            &format!("  conflicts handled again, of {}", hot.events),
            String::new(),
            hot.get_set_conflicts.to_string(),
            String::new(),
            "",
        );
        line(
            &mut out,
            &format!("hot swap, median of {}", self.swap_ms.len()),
            String::new(),
            format!("{:.0} ms", self.swap_median_ms),
            String::new(),
            "≤ 250 ms",
        );
        line(
            &mut out,
            "hot swap, max",
            String::new(),
            format!("{:.0} ms", self.swap_max_ms),
            String::new(),
            "",
        );
        line(
            &mut out,
            &format!("rollback, median of {}", self.rollback_ms.len()),
            String::new(),
            format!("{:.1} ms", self.rollback_median_ms),
            String::new(),
            "≤ 250 ms",
        );
        line(
            &mut out,
            "rollback, max",
            String::new(),
            format!("{:.1} ms", self.rollback_max_ms),
            String::new(),
            "",
        );
        line(
            &mut out,
            "RSS at rest, four plugins",
            String::new(),
            format!("{:.1} MiB", self.rss_rest_mib),
            String::new(),
            "≤ 64 MiB",
        );
        line(
            &mut out,
            &format!("RSS before/after {} events", self.memory_events),
            String::new(),
            format!("{:.1}/{:.1} MiB", self.rss_before_mib, self.rss_after_mib),
            String::new(),
            "no growth",
        );
        out
    }
}
