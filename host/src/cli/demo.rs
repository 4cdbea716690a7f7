//! `evhost demo`: the auction saga with the four example plugins, on the embedded in-memory
//! broker (no Redis needed) or on Redis with `--redis`.
//!
//! Bidders register, auctions end, `payment` charges the winners and publishes
//! `PaymentProcessed`, `notification` tells bidders, `audit` journals every event and `metrics`
//! counts them. Every step is printed as it happens, then a summary. On a partitioned
//! keyspace (a Redis Cluster needs one) each event is keyed: registrations by bidder, auctions
//! by auction, so that each runs in its partition and payments cross to their bidder's.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::broadcast;

use super::common::{broker_or_embedded, shutdown_signal};
use evhost::activity::{Activity, OutcomeKind};
use evhost::artifacts;
use evhost::broker::{Broker, GroupStart, Inspect};
use evhost::consumer::ConsumerOptions;
use evhost::event::{Event, PARTITION_KEY};
use evhost::host::{Host, HostOptions};
use evhost::keyspace::Keyspace;
use evhost::plugin::PluginSettings;

/// Arguments of `evhost demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost demo\n  evhost demo --auctions 3\n  evhost demo --redis redis://127.0.0.1:6379 --follow"
)]
pub struct DemoArgs {
    /// Number of auctions to run.
    #[arg(long, default_value_t = 10)]
    pub auctions: usize,
    /// Number of bidders to register.
    #[arg(long, default_value_t = 4)]
    pub bidders: usize,
    /// Run on this Redis server instead of the in-memory broker; for a Redis Cluster, any node
    /// (or several, separated by commas).
    #[arg(long)]
    pub redis: Option<String>,
    /// Number of partitions of the keyspace, when none is recorded yet (a Redis Cluster needs
    /// them; see `evhost init`). Without it, the recorded count, else 1.
    #[arg(long, value_name = "P")]
    pub partitions: Option<NonZeroU32>,
    /// Pause between generated events, in milliseconds.
    #[arg(long, default_value_t = 60)]
    pub pace_ms: u64,
    /// Keep running after the summary (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// Run the plugins from this directory, writing the examples into it first when it has no
    /// `*.wasm`, and watch it: replace a file while the demo follows to hot-swap it.
    #[arg(long)]
    pub plugins: Option<std::path::PathBuf>,
    /// Give up waiting for the saga after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

const NAMES: [&str; 8] = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Frances Allen",
    "Ken Thompson",
];

/// Stream types of the saga, in order.
const SAGA_TYPES: [&str; 4] = [
    "BidderRegistered",
    "AuctionEnded",
    "PaymentProcessed",
    "NotificationSent",
];

/// Counts read from the broker, relative to the start of the run.
#[derive(Debug, Default, Clone)]
struct Tally {
    per_type: BTreeMap<&'static str, u64>,
    audit_records: u64,
}

async fn tally(broker: &dyn Inspect, layout: Keyspace) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for keyspace in layout.each_partition() {
        for event_type in SAGA_TYPES {
            *tally.per_type.entry(event_type).or_default() +=
                broker.len(&keyspace.event_stream(event_type)).await?;
        }
        tally.audit_records += broker.len(&keyspace.journal("audit")).await?;
    }
    Ok(tally)
}

impl Tally {
    fn since(&self, base: &Tally) -> Tally {
        Tally {
            per_type: self
                .per_type
                .iter()
                .map(|(event_type, count)| {
                    let before = base.per_type.get(event_type).copied().unwrap_or(0);
                    (*event_type, count.saturating_sub(before))
                })
                .collect(),
            audit_records: self.audit_records.saturating_sub(base.audit_records),
        }
    }

    fn count(&self, event_type: &str) -> u64 {
        self.per_type.get(event_type).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.per_type.values().sum()
    }
}

/// Prints the activity feed until the channel closes.
pub(super) async fn print_activity(mut feed: broadcast::Receiver<Activity>) {
    loop {
        match feed.recv().await {
            Ok(Activity::Published {
                plugin,
                event_type,
                data,
                ..
            }) => {
                println!("  {plugin:<13} published {event_type:<17} {data}");
            }
            Ok(Activity::Log {
                plugin,
                level,
                message,
            }) => {
                if !matches!(level, "trace" | "debug") {
                    println!("  {plugin:<13} {level:<5} {message}");
                }
            }
            Ok(Activity::Handled {
                plugin,
                outcome,
                detail,
                entry_id,
                stream,
                ..
            }) if outcome != OutcomeKind::Ok => {
                println!(
                    "  {plugin:<13} {} on {stream} {entry_id}: {}",
                    outcome.as_str(),
                    detail.unwrap_or_default()
                );
            }
            Ok(Activity::Handled { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                println!("  ... ({missed} activity lines skipped)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Runs `evhost demo`.
///
/// # Errors
///
/// When the plugins cannot be loaded, Redis cannot be reached, or the saga does not complete
/// in time.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (broker, place) = broker_or_embedded(args.redis.as_deref()).await?;
    let layout = evhost::partition::resolve(broker.as_ref(), args.partitions).await?;
    let options = HostOptions {
        keyspace: layout,
        consumer: ConsumerOptions {
            consumer: "evhost-demo".into(),
            batch_size: 100,
            block: Duration::from_millis(200),
            retry_interval: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
        },
        discovery_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(10),
        cache_dir: None,
        ..HostOptions::default()
    };
    let host = Host::new(broker.clone(), options).context("cannot start the Wasm engine")?;
    println!("evhost demo: the auction saga on {place}\n");
    let _watcher = match &args.plugins {
        Some(dir) => Some(load_directory(&host, dir).await?),
        None => None,
    };
    for (name, bytes) in artifacts::examples() {
        if args.plugins.is_some() {
            break;
        }
        let settings = PluginSettings {
            start: GroupStart::End,
            ..PluginSettings::default()
        };
        let started = Instant::now();
        let version = host
            .engine()
            .load_bytes(format!("embedded:{name}.wasm"), bytes.to_vec(), settings)
            .await
            .with_context(|| format!("cannot load the example plugin {name}"))?;
        let subscriptions: Vec<String> = version
            .subscriptions
            .iter()
            .map(|sub| sub.to_string())
            .collect();
        println!(
            "  loaded {:<13} {:<7} ← {:<36} ({} KiB, {} ms)",
            version.name,
            version.version,
            subscriptions.join(", "),
            bytes.len() / 1024,
            started.elapsed().as_millis()
        );
        host.add_version(version)?;
    }
    let baseline = tally(broker.as_ref(), layout).await?;
    let printer = tokio::spawn(print_activity(host.services().activity.subscribe()));
    let runner = {
        let host = host.clone();
        tokio::spawn(async move { host.run(std::future::pending()).await })
    };
    if !host.wait_ready(Duration::from_secs(10)).await {
        bail!("the host did not become ready within 10 s");
    }
    println!();

    let pace = Duration::from_millis(args.pace_ms);
    let bidders: Vec<(String, &str)> = (0..args.bidders.max(1))
        .map(|index| (format!("bidder-{}", index + 1), NAMES[index % NAMES.len()]))
        .collect();
    for (bidder_id, name) in &bidders {
        let email = format!(
            "{}@example.com",
            name.split(' ').next().unwrap_or("bidder").to_lowercase()
        );
        let data = json!({"bidder_id": bidder_id, "name": name, "email": email});
        publish(
            broker.as_ref(),
            layout,
            "BidderRegistered",
            bidder_id,
            &data,
        )
        .await?;
        tokio::time::sleep(pace).await;
    }
    let mut rng = rand::rng();
    for index in 0..args.auctions {
        let (bidder_id, _) = &bidders[rng.random_range(0..bidders.len())];
        // Every third auction is over the payment plugin's limit, so its payment fails.
        let price = if index % 3 == 2 {
            15_000.0
        } else {
            f64::from(rng.random_range(1_000..50_000_u32)) / 100.0
        };
        let auction_id = format!("auction-{}", index + 1);
        let data = json!({
            "auction_id": auction_id,
            "winning_bidder_id": bidder_id,
            "winning_price": price,
        });
        publish(broker.as_ref(), layout, "AuctionEnded", &auction_id, &data).await?;
        tokio::time::sleep(pace).await;
    }

    let expected_events = 2 * bidders.len() as u64 + 3 * args.auctions as u64;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let done = loop {
        let now = tally(broker.as_ref(), layout).await?.since(&baseline);
        if now.total() >= expected_events && now.audit_records >= expected_events {
            break now;
        }
        if Instant::now() >= deadline {
            host.stop();
            let _ = runner.await;
            bail!(
                "the saga did not complete within {} s: {} of {expected_events} events, {} audit records",
                args.timeout_secs,
                now.total(),
                now.audit_records
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Let the last acknowledgements land before reading pending counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    print_summary(&host, broker.as_ref(), layout, &done).await?;

    if args.follow {
        match &args.plugins {
            Some(dir) => println!(
                "\nfollowing; replace a plugin in {} to hot-swap it, publish with `evhost publish`; Ctrl-C to stop",
                dir.display()
            ),
            None => {
                println!("\nfollowing; Ctrl-C to stop (add --plugins DIR to hot-swap plugin files)")
            }
        }
        shutdown_signal().await;
    }
    host.stop();
    let _ = runner.await;
    printer.abort();
    Ok(())
}

/// Loads the plugins of `dir` (writing the examples there first if it has none) and watches it.
async fn load_directory(
    host: &Arc<Host>,
    dir: &std::path::Path,
) -> anyhow::Result<evhost::watch::PluginWatcher> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let has_plugins = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .any(|entry| entry.path().extension().is_some_and(|ext| ext == "wasm"));
    if !has_plugins {
        for (name, bytes) in artifacts::examples() {
            let path = dir.join(format!("{name}.wasm"));
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    host.add_dir(dir)
        .await
        .with_context(|| format!("cannot read {}", dir.display()))?;
    for status in host.plugin_statuses() {
        match (&status.name, &status.error) {
            (Some(name), None) => println!(
                "  loaded {name:<13} {:<7} from {}",
                status.version.clone().unwrap_or_default(),
                status.file
            ),
            (_, Some(error)) => println!("  failed {}: {error}", status.file),
            (None, None) => {}
        }
    }
    Ok(host.watch_dir(dir)?)
}

/// Publishes `data` as `event_type`, keyed by `key` in a partitioned keyspace.
async fn publish(
    broker: &dyn Broker,
    layout: Keyspace,
    event_type: &str,
    key: &str,
    data: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut event = Event::new(event_type, "evhost-demo", data.to_string().into_bytes());
    if layout.is_partitioned() {
        event.set_extension(PARTITION_KEY, key);
    }
    broker
        .add(&event.stream_in(layout), &event.to_fields())
        .await?;
    println!("→ {event_type:<28} {data}");
    Ok(())
}

async fn print_summary(
    host: &Host,
    broker: &dyn Inspect,
    layout: Keyspace,
    done: &Tally,
) -> anyhow::Result<()> {
    let mut succeeded = 0;
    let mut failed = 0;
    let mut pending_total = 0;
    let mut groups = 0;
    for keyspace in layout.each_partition() {
        let payments = keyspace.event_stream("PaymentProcessed");
        for entry in broker
            .range(
                &payments,
                evhost::broker::EntryId::ZERO,
                evhost::broker::EntryId::MAX,
                100_000,
            )
            .await?
        {
            if let Ok(event) = Event::from_entry(&payments, entry.id, &entry.fields)
                && event.source == "payment"
            {
                let data: serde_json::Value =
                    serde_json::from_slice(&event.data).unwrap_or_default();
                match data.get("status").and_then(|status| status.as_str()) {
                    Some("succeeded") => succeeded += 1,
                    _ => failed += 1,
                }
            }
        }
        for event_type in SAGA_TYPES {
            for group in broker.groups(&keyspace.event_stream(event_type)).await? {
                pending_total += group.pending + group.lag.unwrap_or(0);
                groups += 1;
            }
        }
    }
    let metrics_text = host.services().metrics.render();
    let counted: Vec<String> = metrics_text
        .lines()
        .filter(|line| line.starts_with("evhost_plugin_events_total{"))
        .filter_map(|line| {
            let event_type = line.split("type=\"").nth(1)?.split('"').next()?;
            let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
            Some(format!("{event_type} {value}"))
        })
        .collect();
    println!("\nSummary");
    println!(
        "  events         {}",
        SAGA_TYPES
            .iter()
            .map(|event_type| format!("{event_type} {}", done.count(event_type)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  payment        {succeeded} succeeded, {failed} failed");
    println!("  notification   {} sent", done.count("NotificationSent"));
    let journal = if layout.is_partitioned() {
        format!("the journals of {} partitions", layout.partitions())
    } else {
        layout.journal("audit")
    };
    println!(
        "  audit          {} records in {journal}",
        done.audit_records
    );
    println!("  metrics        events_total: {}", counted.join(", "));
    println!("  delivery       {pending_total} pending or unread across {groups} consumer groups");
    Ok(())
}
