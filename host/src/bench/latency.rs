//! Latency from `XADD` to handler entry at fixed produce rates, beside the raw loop's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::harness::{Running, flush, latency_of, percentiles, produce, settings};
use super::report::Latency;
use super::{BenchError, BenchOptions, raw};
use evhost::activity::Activity;
use evhost::artifacts;
use evhost::broker::Broker;
use evhost::keyspace::Keyspace;

/// At each rate of `opts.rates`: the raw loop, then the trivial plugin, each fed by a producer
/// at that rate for `opts.latency_duration`; Redis is flushed before each.
///
/// # Errors
///
/// When Redis or the host fails.
pub(super) async fn measure(
    broker: Arc<dyn Broker>,
    url: &str,
    admin: &redis::aio::MultiplexedConnection,
    opts: &BenchOptions,
) -> Result<Vec<Latency>, BenchError> {
    let url = url.to_string();
    let mut latency = Vec::new();
    for rate in &opts.rates {
        eprintln!("bench: latency at {rate} events/s");
        flush(admin).await?;
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
    Ok(latency)
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
