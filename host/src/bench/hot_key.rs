//! The hot key: every event counts in one key-value entry, handled by several lanes at once,
//! so that read-modify-writes race. Shows what a conflict costs (the event is handled again)
//! beside an atomic increment (which never conflicts) and a hand-written loop that does the
//! same counting with `INCR`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::artifacts;
use evhost::broker::Broker;
use evhost::keyspace::Keyspace;

use super::harness::{Running, drained, load, prefill, settings};
use super::{BenchError, raw};

/// Throughput of counting on one key, and the conflicts it caused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HotKey {
    /// Events counted.
    pub events: usize,
    /// Lanes handling them at once.
    pub lanes: usize,
    /// The hand-written loop: `XREADGROUP`, one `INCR` per entry, `XACK`, pipelined.
    pub raw_per_sec: f64,
    /// `get` + `set` of the key (a read-modify-write: conflicts are handled again).
    pub get_set_per_sec: f64,
    /// Entries handled again because the key changed before their commit.
    pub get_set_conflicts: u64,
    /// `increment` of the key.
    pub increment_per_sec: f64,
}

/// The key-value counting modes of the noop plugin (`[config] count`).
const MODES: [&str; 2] = ["get-set", "increment"];

/// Counts `events` events in one key with `lanes` lanes, in each mode, and with the raw loop.
///
/// # Errors
///
/// When Redis or the host fails, a phase does not finish in time, or a count is wrong.
pub async fn measure(
    broker: Arc<dyn Broker>,
    url: &str,
    events: usize,
    lanes: NonZeroUsize,
) -> Result<HotKey, BenchError> {
    let keyspace = Keyspace::single();
    prefill(url, "BenchHotRaw", events, false).await?;
    let raw_elapsed =
        raw::consume_counting(url, &keyspace.event_stream("BenchHotRaw"), events).await?;
    let mut per_sec = Vec::new();
    let mut conflicts = 0;
    for mode in MODES {
        let event_type = format!("BenchHot-{mode}");
        let plugin = format!("hot-{mode}");
        prefill(url, &event_type, events, false).await?;
        let mut plugin_settings = settings(&plugin, &event_type);
        plugin_settings
            .config
            .insert("count".to_string(), mode.to_string());
        // Every event has its own auction: spread over every lane, all counting in `total`.
        plugin_settings.partition_key = Some("auction_id".to_string());
        plugin_settings.concurrency = Some(lanes);
        let host = load(
            broker.clone(),
            vec![(plugin.as_str(), artifacts::NOOP.to_vec(), plugin_settings)],
        )
        .await?;
        let clock = Instant::now();
        let running = Running::run(host).await;
        drained(
            broker.as_ref(),
            &keyspace.event_stream(&event_type),
            &[plugin.as_str()],
            Duration::from_secs(300),
        )
        .await?;
        let elapsed = clock.elapsed();
        let sample = format!("evhost_kv_conflicts_total{{plugin=\"{plugin}\"}} ");
        let rendered = running.host.services().metrics.render();
        let counted: u64 = rendered
            .lines()
            .find_map(|line| line.strip_prefix(&sample)?.parse().ok())
            .unwrap_or(0);
        running.stop().await;
        let total = broker.get(&keyspace.kv_key(&plugin, "total")).await?;
        if total.as_deref() != Some(events.to_string().as_bytes()) {
            return Err(BenchError::Host(format!(
                "{plugin} counted {:?} of {events} events",
                total.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            )));
        }
        if mode == "get-set" {
            conflicts = counted;
        }
        per_sec.push(events as f64 / elapsed.as_secs_f64());
    }
    Ok(HotKey {
        events,
        lanes: lanes.get(),
        raw_per_sec: events as f64 / raw_elapsed.as_secs_f64(),
        get_set_per_sec: per_sec[0],
        get_set_conflicts: conflicts,
        increment_per_sec: per_sec[1],
    })
}
