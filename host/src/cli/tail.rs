//! `evhost tail`: follow new events live with plain `XREAD BLOCK` (no consumer group, nothing
//! acknowledged, no effect on the plugins).
//!
//! Each stream is followed from its last entry at start (what `$` means), then by entry id so
//! that nothing added between two reads is missed. Streams created later are found by a
//! periodic scan and followed from their first entry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use super::common::{
    DEFAULT_REDIS_URL, TypePattern, connect_redis, matching_streams, shutdown_signal,
};
use super::event_view::{EventView, Filter};
use super::output::{colors_enabled, json_line};
use evhost::broker::{EntryId, Inspect};

/// Entries read per stream and call.
const READ_COUNT: usize = 100;

/// Arguments of `evhost tail`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost tail                                   # every events:* stream\n  evhost tail 'Auction*' PaymentProcessed\n  evhost tail --filter workflow_id=wf-1 --json\n  evhost tail AuctionEnded --count 1            # wait for the next one, then exit"
)]
pub struct TailArgs {
    /// Event types to follow; globs like `Auction*` (an `events:` prefix is allowed).
    #[arg(default_value = "*")]
    pub patterns: Vec<String>,
    /// Only events whose data has this top-level field with this value (repeatable; all must
    /// match). Strings compare by content, other values by their JSON text.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<Filter>,
    /// Exit after this many (matching) events.
    #[arg(long)]
    pub count: Option<usize>,
    /// One JSON object per line (the parsed envelope, its stream and entry id).
    #[arg(long)]
    pub json: bool,
    /// How often to look for new matching streams, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub discovery_interval_ms: u64,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
}

/// The id of the newest entry of `stream`, or `0-0` when it is empty.
async fn last_id(broker: &dyn Inspect, stream: &str) -> anyhow::Result<EntryId> {
    Ok(broker
        .rev_range(stream, EntryId::MAX, EntryId::ZERO, 1)
        .await
        .with_context(|| format!("cannot read {stream}"))?
        .first()
        .map_or(EntryId::ZERO, |entry| entry.id))
}

/// Runs `evhost tail` until Ctrl-C, or until `--count` events were printed.
///
/// # Errors
///
/// When an argument is invalid or Redis fails.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let patterns = args
        .patterns
        .iter()
        .map(|text| TypePattern::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if args.count == Some(0) {
        return Err(UsageError("--count must be at least 1".into()).into());
    }
    let broker = connect_redis(&args.redis).await?;
    let mut positions: BTreeMap<String, EntryId> = BTreeMap::new();
    for stream in matching_streams(broker.as_ref(), &patterns).await? {
        let id = last_id(broker.as_ref(), &stream).await?;
        positions.insert(stream, id);
    }
    eprintln!(
        "following {} stream(s) matching {}; Ctrl-C to stop",
        positions.len(),
        args.patterns.join(" ")
    );
    let colors = colors_enabled();
    let discovery = Duration::from_millis(args.discovery_interval_ms.max(10));
    let block = discovery.min(Duration::from_secs(1));
    let mut follower = broker.follower();
    let mut next_discovery = Instant::now() + discovery;
    let mut printed = 0usize;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let after: Vec<(String, EntryId)> = positions
            .iter()
            .map(|(stream, id)| (stream.clone(), *id))
            .collect();
        let entries = tokio::select! {
            () = &mut shutdown => return Ok(()),
            result = follower.read(&after, READ_COUNT, block) => {
                result.context("lost the connection to Redis while following")?
            }
        };
        for (stream, entry) in entries {
            positions.insert(stream.clone(), entry.id);
            let view = EventView::new(&stream, &entry);
            if !view.matches(&args.filters) {
                continue;
            }
            if args.json {
                json_line(&view.to_json())?;
            } else {
                println!("{}", view.line(colors));
            }
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                return Ok(());
            }
        }
        if Instant::now() >= next_discovery {
            next_discovery = Instant::now() + discovery;
            for stream in matching_streams(broker.as_ref(), &patterns).await? {
                if let std::collections::btree_map::Entry::Vacant(slot) = positions.entry(stream) {
                    eprintln!("following {}", slot.key());
                    // Created after the start: everything in it is new.
                    slot.insert(EntryId::ZERO);
                }
            }
        }
    }
}
