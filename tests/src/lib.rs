//! Support for evhost's integration tests: a private `redis-server` per test, the compiled
//! plugins, and a host running in-process with fast timings.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod log_capture;
pub mod redis_server;
pub mod script_build;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evhost::broker::{Broker, EntryId, Fields, GroupStart};
use evhost::consumer::ConsumerOptions;
use evhost::event::Event;
use evhost::plugin::PluginSettings;
use evhost::{Host, HostOptions, Keyspace, RedisBroker};
pub use log_capture::LogCapture;
pub use redis_server::{RedisCluster, RedisServer};
use tokio::task::JoinHandle;

/// The names of the keys the tests look at: the single layout, as every host of the tests uses.
pub const KEYS: Keyspace = Keyspace::single();

/// Test guests compiled by the build script (`PROBE`).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

/// A plugin to load: component bytes plus sidecar settings.
#[derive(Clone)]
pub struct PluginSpec {
    pub origin: String,
    pub bytes: Vec<u8>,
    pub settings: PluginSettings,
}

/// One of the example plugins (`payment`, `notification`, `audit`, `metrics`).
pub fn example(name: &str) -> PluginSpec {
    let bytes = evhost::artifacts::examples()
        .into_iter()
        .find(|(example, _)| *example == name)
        .map(|(_, bytes)| bytes.to_vec())
        .unwrap_or_else(|| panic!("no example plugin {name}"));
    PluginSpec {
        origin: format!("test:{name}.wasm"),
        bytes,
        settings: PluginSettings::default(),
    }
}

/// The probe guest under the plugin name `name`, subscribed to `subscriptions`
/// (comma-separated).
pub fn probe(name: &str, subscriptions: &str) -> PluginSpec {
    let mut config = BTreeMap::new();
    config.insert("name".to_string(), name.to_string());
    config.insert("subscriptions".to_string(), subscriptions.to_string());
    PluginSpec {
        origin: format!("test:{name}.wasm"),
        bytes: guests::PROBE.to_vec(),
        settings: PluginSettings {
            config,
            ..PluginSettings::default()
        },
    }
}

/// Host options with short block, discovery and retry times, for tests.
pub fn fast_options(consumer: &str) -> HostOptions {
    HostOptions {
        consumer: ConsumerOptions {
            consumer: consumer.to_string(),
            batch_size: 50,
            block: Duration::from_millis(100),
            retry_interval: Duration::from_millis(100),
            claim_idle: Duration::from_secs(30),
        },
        discovery_interval: Duration::from_millis(100),
        full_scan_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(10),
        cache_dir: None,
        ..HostOptions::default()
    }
}

/// A host running in a background task.
pub struct TestHost {
    pub host: Arc<Host>,
    task: Option<JoinHandle<()>>,
    /// Watches the plugin directory of [`TestHost::start_watching`].
    _watcher: Option<evhost::watch::PluginWatcher>,
}

impl TestHost {
    /// Loads `plugins` and runs a host on `broker` until [`TestHost::stop`]; returns once every
    /// consumer group exists.
    pub async fn start(
        broker: Arc<dyn Broker>,
        options: HostOptions,
        plugins: Vec<PluginSpec>,
    ) -> Self {
        let host = Host::new(broker, options).expect("start the Wasm engine");
        for plugin in plugins {
            let version = host
                .engine()
                .load_bytes(plugin.origin.clone(), plugin.bytes, plugin.settings)
                .await
                .unwrap_or_else(|err| panic!("cannot load {}: {err}", plugin.origin));
            host.add_version(version).expect("unique plugin names");
        }
        Self::launch(host, None).await
    }

    /// Loads the plugin files of `dir`, watches it for changes (hot swap) and runs a host.
    pub async fn start_watching(
        broker: Arc<dyn Broker>,
        options: HostOptions,
        dir: &std::path::Path,
    ) -> Self {
        let host = Host::new(broker, options).expect("start the Wasm engine");
        host.add_dir(dir).await.expect("read the plugin directory");
        let watcher = host.watch_dir(dir).expect("watch the plugin directory");
        Self::launch(host, Some(watcher)).await
    }

    /// Runs `host` in a background task and waits until it is ready.
    async fn launch(host: Arc<Host>, watcher: Option<evhost::watch::PluginWatcher>) -> Self {
        let task = {
            let host = host.clone();
            tokio::spawn(async move { host.run(std::future::pending()).await })
        };
        assert!(
            host.wait_ready(Duration::from_secs(10)).await,
            "host not ready within 10 s"
        );
        TestHost {
            host,
            task: Some(task),
            _watcher: watcher,
        }
    }

    /// Stops the host gracefully and waits for it.
    pub async fn stop(mut self) {
        self.host.stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("host stops within 15 s")
                .expect("host task did not panic");
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.host.stop();
    }
}

/// The value of the metric sample `sample` (name and labels) in `host`'s metrics, 0 when
/// absent.
pub fn metric(host: &TestHost, sample: &str) -> u64 {
    let prefix = format!("{sample} ");
    host.host
        .services()
        .metrics
        .render()
        .lines()
        .find_map(|line| {
            // Counters render as integers, gauges of floats as `3.0`.
            let value: f64 = line.strip_prefix(&prefix)?.parse().ok()?;
            Some(value as u64)
        })
        .unwrap_or(0)
}

/// Connects to a test server.
pub async fn redis_broker(server: &RedisServer) -> Arc<RedisBroker> {
    Arc::new(
        RedisBroker::connect(&server.url())
            .await
            .expect("connect to the test redis-server"),
    )
}

/// A broker on a test cluster, connected through all its seeds.
pub async fn cluster_broker(cluster: &RedisCluster) -> Arc<RedisBroker> {
    Arc::new(
        RedisBroker::connect(&cluster.url())
            .await
            .expect("connect to the test Redis Cluster"),
    )
}

/// A raw redis-rs connection to a test server, for assertions.
pub async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// The text of `INFO <section>` of a test server.
pub async fn server_info(server: &RedisServer, section: &str) -> String {
    let mut conn = raw_connection(server).await;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .expect("INFO")
}

/// Polls `check` every 20 ms until it returns true; panics after `timeout` naming `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends raw fields to a stream, as a foreign producer would.
pub async fn xadd(broker: &dyn Broker, stream: &str, fields: &[(&str, &str)]) -> EntryId {
    let fields: Fields = fields
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    broker.add(stream, &fields).await.expect("XADD")
}

/// Publishes an evhost event of `event_type` with JSON `data`; returns the event.
pub async fn publish(broker: &dyn Broker, event_type: &str, data: serde_json::Value) -> Event {
    let event = Event::new(event_type, "test", data.to_string().into_bytes());
    broker
        .add(&event.stream_in(KEYS), &event.to_fields())
        .await
        .expect("XADD");
    event
}

/// Every event of a type, oldest first.
pub async fn events_of(broker: &dyn Broker, event_type: &str) -> Vec<Event> {
    let stream = KEYS.event_stream(event_type);
    broker
        .range(&stream, EntryId::ZERO, EntryId::MAX, 1_000_000)
        .await
        .expect("XRANGE")
        .into_iter()
        .map(|entry| Event::from_entry(&stream, entry.id, &entry.fields).expect("valid event"))
        .collect()
}

/// Records of a plugin's journal, as field maps.
pub async fn journal(broker: &dyn Broker, plugin: &str) -> Vec<BTreeMap<String, String>> {
    broker
        .range(
            &KEYS.journal(plugin),
            EntryId::ZERO,
            EntryId::MAX,
            1_000_000,
        )
        .await
        .expect("XRANGE journal")
        .into_iter()
        .map(|entry| {
            entry
                .fields
                .into_iter()
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect()
        })
        .collect()
}

/// The id of the event a journal record was written for.
pub fn journal_event_id(record: &evhost::broker::StreamEntry) -> String {
    record
        .fields
        .iter()
        .find(|(name, _)| name == "event_id")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .expect("a journal record names its event_id")
}

/// Pending entries of `group` on the stream of `event_type`.
pub async fn pending_count(broker: &dyn Broker, event_type: &str, group: &str) -> u64 {
    broker
        .groups(&KEYS.event_stream(event_type))
        .await
        .expect("XINFO GROUPS")
        .into_iter()
        .find(|info| info.name == group)
        .map(|info| info.pending)
        .unwrap_or_else(|| panic!("no group {group} on {event_type}"))
}

/// Creates `group` on the stream of `event_type` at its beginning.
pub async fn create_group(broker: &dyn Broker, event_type: &str, group: &str) {
    broker
        .create_group(&KEYS.event_stream(event_type), group, GroupStart::Beginning)
        .await
        .expect("XGROUP CREATE");
}
