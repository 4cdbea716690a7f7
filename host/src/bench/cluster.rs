//! `evhost bench --cluster`: the same partitioned work on one Redis node and on a local Redis
//! Cluster of three primaries, in one run, rounds interleaved.
//!
//! On a 2-core machine a cluster's three `redis-server`s share the cores with the host, so the
//! total rate says little; the figures that matter are the CPU costs per event, of the host
//! process and of Redis (every node summed), read from `/proc/self/stat` and `INFO cpu`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;

use evhost::RedisBroker;
use evhost::artifacts;
use evhost::broker::Broker;
use evhost::event::{Event, PARTITION_KEY};
use evhost::host::HostOptions;
use evhost::partition;
use evhost::redis_process::{RedisCluster, RedisServer};

use super::BenchError;
use super::harness::{Running, drained, load_with, options, payload, settings};

/// The partitions of the measured keyspace: two per primary of the cluster.
const PARTITIONS: u32 = 6;
/// Keys the events are spread over.
const KEYS: usize = 1000;
/// Rounds per contender, interleaved (node, cluster, node, cluster, ...).
const ROUNDS: usize = 2;
/// Linux's clock ticks per second in `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)` is 100 on
/// every Linux platform evhost runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// One contender's best round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Contender {
    /// Events per second through the trivial plugin.
    pub per_sec: f64,
    /// CPU time of the host process per event, in µs.
    pub host_cpu_us: f64,
    /// CPU time of Redis per event (every node summed), in µs.
    pub redis_cpu_us: f64,
}

/// The comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterComparison {
    /// Events per round.
    pub events: usize,
    /// Partitions of the keyspace.
    pub partitions: u32,
    /// Primaries of the cluster.
    pub primaries: usize,
    /// One `redis-server`.
    pub node: Contender,
    /// The cluster.
    pub cluster: Contender,
}

impl ClusterComparison {
    /// The report as a table.
    pub fn table(&self) -> String {
        let row = |what: &str, node: f64, cluster: f64, unit: &str| {
            format!(
                "{what:<28} {node:>12.1} {cluster:>12.1} {:>8.2}x   {unit}\n",
                cluster / node
            )
        };
        let mut out = format!(
            "evhost bench --cluster: {} events per round, {} partitions, best of {ROUNDS} interleaved rounds\n\n{:<28} {:>12} {:>12} {:>9}\n",
            self.events,
            self.partitions,
            "",
            "one node",
            format!("cluster ({})", self.primaries),
            "ratio"
        );
        out.push_str(&row(
            "throughput",
            self.node.per_sec,
            self.cluster.per_sec,
            "events/s (cores shared with every server)",
        ));
        out.push_str(&row(
            "host CPU per event",
            self.node.host_cpu_us,
            self.cluster.host_cpu_us,
            "µs",
        ));
        out.push_str(&row(
            "Redis CPU per event",
            self.node.redis_cpu_us,
            self.cluster.redis_cpu_us,
            "µs, every node summed",
        ));
        out
    }
}

/// Where one contender's Redis is.
enum Target {
    Node(RedisServer),
    Cluster(RedisCluster),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Target::Node(server) => server.url(),
            Target::Cluster(cluster) => cluster.url(),
        }
    }

    fn ports(&self) -> Vec<u16> {
        match self {
            Target::Node(server) => vec![server.port()],
            Target::Cluster(cluster) => cluster.nodes().iter().map(RedisServer::port).collect(),
        }
    }
}

/// Runs the comparison: `events` events per round.
///
/// # Errors
///
/// When a server or the cluster cannot be started, or a round fails.
pub async fn run(events: usize) -> Result<ClusterComparison, BenchError> {
    let started = |err: evhost::redis_process::RedisProcessError| BenchError::Host(err.to_string());
    let node = Target::Node(RedisServer::start_with(&[]).map_err(started)?);
    let cluster =
        Target::Cluster(RedisCluster::start(3, 0, &["--appendonly", "no"]).map_err(started)?);
    let mut best: [Option<Contender>; 2] = [None, None];
    for round in 0..ROUNDS {
        for (index, target) in [&node, &cluster].into_iter().enumerate() {
            eprintln!(
                "bench: round {} of {ROUNDS} on {}",
                round + 1,
                if index == 0 {
                    "one node"
                } else {
                    "the cluster"
                }
            );
            let measured = measure(target, events, round).await?;
            let kept = &mut best[index];
            if kept
                .as_ref()
                .is_none_or(|kept| measured.per_sec > kept.per_sec)
            {
                *kept = Some(measured);
            }
        }
    }
    let [Some(node), Some(cluster)] = best else {
        return Err(BenchError::Host("no round was measured".into()));
    };
    Ok(ClusterComparison {
        events,
        partitions: PARTITIONS,
        primaries: 3,
        node,
        cluster,
    })
}

/// One round: `events` keyed events prefilled into a fresh event type, then timed through the
/// trivial plugin until every partition's stream is drained.
async fn measure(target: &Target, events: usize, round: usize) -> Result<Contender, BenchError> {
    let url = target.url();
    let broker = Arc::new(RedisBroker::connect(&url).await?);
    let layout = partition::resolve(broker.as_ref(), NonZeroU32::new(PARTITIONS))
        .await
        .map_err(|err| BenchError::Host(err.to_string()))?;
    let event_type = format!("BenchCluster{round}");
    let indices: Vec<usize> = (0..events).collect();
    for chunk in indices.chunks(500) {
        let adds = chunk.iter().map(|&n| {
            let broker = broker.clone();
            let event_type = event_type.as_str();
            async move {
                let mut event = Event::new(event_type, "evhost-bench", payload(n));
                event.set_extension(PARTITION_KEY, format!("k-{}", n % KEYS));
                broker
                    .add(&event.stream_in(layout), &event.to_fields())
                    .await
            }
        });
        try_join_all(adds).await?;
    }
    let plugin = format!("noop{round}");
    let host_options = HostOptions {
        keyspace: layout,
        ..options()
    };
    let noop = vec![(
        plugin.as_str(),
        artifacts::NOOP.to_vec(),
        settings(&plugin, &event_type),
    )];
    let host = load_with(broker.clone(), host_options, noop).await?;
    let (host_before, redis_before) = (host_cpu_secs(), redis_cpu_secs(target).await?);
    let clock = Instant::now();
    let running = Running::run(host).await;
    for keyspace in layout.each_partition() {
        drained(
            broker.as_ref(),
            &keyspace.event_stream(&event_type),
            &[plugin.as_str()],
            Duration::from_secs(300),
        )
        .await?;
    }
    let elapsed = clock.elapsed();
    let (host_after, redis_after) = (host_cpu_secs(), redis_cpu_secs(target).await?);
    running.stop().await;
    let per_event_us = |seconds: f64| seconds * 1e6 / events as f64;
    Ok(Contender {
        per_sec: events as f64 / elapsed.as_secs_f64(),
        host_cpu_us: per_event_us(host_after - host_before),
        redis_cpu_us: per_event_us(redis_after - redis_before),
    })
}

/// CPU time (user + system) this process used so far, in seconds; 0 where `/proc` is missing.
fn host_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// CPU time every Redis node of `target` used so far (`INFO cpu`), in seconds.
async fn redis_cpu_secs(target: &Target) -> Result<f64, BenchError> {
    let mut total = 0.0;
    for port in target.ports() {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        for line in info.lines() {
            if let Some((name, value)) = line.trim().split_once(':')
                && (name == "used_cpu_user" || name == "used_cpu_sys")
            {
                total += value.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(total)
}
