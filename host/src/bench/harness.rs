//! What the measurements share: event payloads, producing and prefilling with pipelined
//! `XADD`s, waiting for groups to drain, and hosts of the example plugins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::report::Percentiles;
use super::{BenchError, BenchOptions, raw};
use evhost::artifacts;
use evhost::broker::{Broker, EntryId, GroupStart};
use evhost::consumer::ConsumerOptions;
use evhost::event::Event;
use evhost::host::{Host, HostOptions};
use evhost::keyspace::Keyspace;
use evhost::plugin::PluginSettings;

/// Empties the server between measurements.
pub(super) async fn flush(admin: &redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    let mut conn = admin.clone();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await
}

/// JSON data of about 200 bytes.
pub(super) fn payload(n: usize) -> Vec<u8> {
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
pub(super) fn timed_event(event_type: &str, n: usize) -> Event {
    let mut event = Event::new(event_type, "evhost-bench", payload(n));
    event.id = format!("{}-{n}", raw::now_ns());
    event
}

/// Latency of an event whose id starts with its creation time in nanoseconds.
pub(super) fn latency_of(event_id: &str, at: SystemTime) -> Option<Duration> {
    let sent: u128 = event_id.split('-').next()?.parse().ok()?;
    let sent = UNIX_EPOCH + Duration::from_nanos(u64::try_from(sent).ok()?);
    at.duration_since(sent).ok()
}

pub(super) fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
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

pub(super) fn mib(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |bytes| bytes as f64 / (1024.0 * 1024.0))
}

/// Appends `events` entries to `stream` with pipelined `XADD`s.
pub(super) async fn prefill(
    url: &str,
    event_type: &str,
    events: usize,
    timed: bool,
) -> Result<(), BenchError> {
    prefill_with(url, event_type, events, |n| {
        if timed {
            timed_event(event_type, n)
        } else {
            Event::new(event_type, "evhost-bench", payload(n))
        }
    })
    .await
}

/// Appends `event(0)` ... `event(count - 1)` to the stream of `event_type`, 1,000 pipelined
/// `XADD`s at a time.
async fn prefill_with(
    url: &str,
    event_type: &str,
    count: usize,
    event: impl Fn(usize) -> Event,
) -> Result<(), BenchError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = Keyspace::single().event_stream(event_type);
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let event = event(*n);
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
pub(super) async fn produce(
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
pub(super) async fn drained(
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

/// The saga's streams and the groups that read each, in the order the saga flows.
pub(super) const SAGA_GROUPS: [(&str, &[&str]); 3] = [
    ("AuctionEnded", &["payment", "audit", "metrics"]),
    ("PaymentProcessed", &["notification", "audit", "metrics"]),
    ("NotificationSent", &["audit", "metrics"]),
];

/// Bidders the auctions of [`payload`] are won by (`b-0000` ... `b-0999`).
pub(super) const BIDDERS: usize = 1000;

/// Waits until every group of the saga's streams in `keyspace` has nothing pending or
/// unread: the whole saga is done, not only its first step.
pub(super) async fn saga_drained(
    broker: &dyn Broker,
    keyspace: Keyspace,
    limit: Duration,
) -> Result<(), BenchError> {
    for (event_type, groups) in SAGA_GROUPS {
        drained(broker, &keyspace.event_stream(event_type), groups, limit).await?;
    }
    Ok(())
}

/// Registers the [`BIDDERS`] with the saga's plugins (a host of its own, stopped once every
/// registration and welcome is handled), so that each payment notice finds its bidder's
/// e-mail address, as in production.
pub(super) async fn register_bidders(
    broker: Arc<dyn Broker>,
    url: &str,
    opts: &BenchOptions,
) -> Result<(), BenchError> {
    prefill_with(url, "BidderRegistered", BIDDERS, |n| {
        let data = format!(
            r#"{{"bidder_id":"b-{n:04}","name":"Bidder {n}","email":"b-{n:04}@example.com"}}"#
        );
        Event::new("BidderRegistered", "evhost-bench", data.into_bytes())
    })
    .await?;
    let stream = Keyspace::single().event_stream("BidderRegistered");
    let host = Running::start(broker.clone(), saga_plugins(opts)).await?;
    let limit = Duration::from_secs(120);
    drained(
        broker.as_ref(),
        &stream,
        &["notification", "audit", "metrics"],
        limit,
    )
    .await?;
    drained(
        broker.as_ref(),
        &Keyspace::single().event_stream("NotificationSent"),
        &["audit", "metrics"],
        limit,
    )
    .await?;
    host.stop().await;
    Ok(())
}

/// Checks what the saga of `auctions` auctions left behind, after [`register_bidders`]: one
/// `PaymentProcessed` per auction, one `NotificationSent` per payment (beside the welcomes),
/// sent to the bidder's e-mail address, and one audit record per event.
pub(super) async fn verify_saga(broker: &dyn Broker, auctions: usize) -> Result<(), BenchError> {
    let keys = Keyspace::single();
    let len = |stream: String| async move { broker.len(&stream).await };
    let payments = len(keys.event_stream("PaymentProcessed")).await?;
    let notices = len(keys.event_stream("NotificationSent")).await?;
    let audited = len(keys.journal("audit")).await?;
    let expected = [
        ("PaymentProcessed events", payments, auctions),
        ("NotificationSent events", notices, auctions + BIDDERS),
        ("audit records", audited, 2 * BIDDERS + 3 * auctions),
    ];
    for (what, found, wanted) in expected {
        if usize::try_from(found).ok() != Some(wanted) {
            return Err(BenchError::Host(format!(
                "the saga's effects are wrong: {found} {what}, expected {wanted}"
            )));
        }
    }
    let last = broker
        .rev_range(
            &keys.event_stream("NotificationSent"),
            EntryId::MAX,
            EntryId::ZERO,
            1,
        )
        .await?;
    let recipient = last
        .first()
        .and_then(|entry| {
            Event::from_entry("events:NotificationSent", entry.id, &entry.fields).ok()
        })
        .and_then(|event| serde_json::from_slice::<serde_json::Value>(&event.data).ok())
        .and_then(|data| data["recipient"].as_str().map(str::to_string))
        .unwrap_or_default();
    if !recipient.contains('@') {
        return Err(BenchError::Host(format!(
            "the saga's last notice went to {recipient:?}, not to a registered e-mail address"
        )));
    }
    Ok(())
}

pub(super) fn options() -> HostOptions {
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

pub(super) fn settings(name: &str, subscriptions: &str) -> PluginSettings {
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
pub(super) struct Running {
    pub(super) host: Arc<Host>,
    task: tokio::task::JoinHandle<()>,
}

/// A host with `plugins` loaded, not yet running.
pub(super) async fn load(
    broker: Arc<dyn Broker>,
    plugins: Vec<(&str, Vec<u8>, PluginSettings)>,
) -> Result<Arc<Host>, BenchError> {
    load_with(broker, options(), plugins).await
}

/// A host of `options` with `plugins` loaded, not yet running.
pub(super) async fn load_with(
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
    pub(super) async fn start(
        broker: Arc<dyn Broker>,
        plugins: Vec<(&str, Vec<u8>, PluginSettings)>,
    ) -> Result<Self, BenchError> {
        let host = load(broker, plugins).await?;
        Ok(Self::run(host).await)
    }

    pub(super) async fn run(host: Arc<Host>) -> Self {
        let task = {
            let host = host.clone();
            tokio::spawn(async move { host.run(std::future::pending()).await })
        };
        host.wait_ready(Duration::from_secs(10)).await;
        Running { host, task }
    }

    pub(super) async fn stop(self) {
        self.host.stop();
        let _ = self.task.await;
    }
}

/// Plugins whose handler makes a key-value round trip per event, with the field of the event
/// data their keys depend on.
pub(super) const ROUND_TRIP_PLUGINS: [(&str, &str); 2] =
    [("payment", "auction_id"), ("notification", "bidder_id")];

pub(super) fn saga_plugins(opts: &BenchOptions) -> Vec<(&'static str, Vec<u8>, PluginSettings)> {
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
pub(super) fn variant(component: &[u8], n: usize) -> Vec<u8> {
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
