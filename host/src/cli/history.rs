//! `evhost history`: past events of one type (`XRANGE` / `XREVRANGE` on `events:<TYPE>`).

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use super::common::{Bound, DEFAULT_REDIS_URL, connect_redis, parse_position};
use super::event_view::EventView;
use super::output::{Align, Table, json_line};
use evhost::event;

/// Arguments of `evhost history`.
#[derive(Debug, Args)]
#[command(
    after_help = "Times are RFC 3339 and select whole milliseconds of entry ids.\n\nExamples:\n  evhost history AuctionEnded\n  evhost history AuctionEnded --count 5 --reverse          # the five newest\n  evhost history AuctionEnded --from 2026-11-24T18:00:00Z --to 2026-11-24T19:00:00Z\n  evhost history AuctionEnded --from 1732470000000-0 --json | jq .data"
)]
pub struct HistoryArgs {
    /// Event type; reads the stream `events:<TYPE>` (in a partitioned keyspace, that of every
    /// partition, merged by time).
    pub event_type: String,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// First entry: an entry id (`1732470000000-0`) or an RFC 3339 time [default: the oldest].
    #[arg(long)]
    pub from: Option<String>,
    /// Last entry: an entry id or an RFC 3339 time [default: the newest].
    #[arg(long)]
    pub to: Option<String>,
    /// Newest first (with --count N: the N newest).
    #[arg(long)]
    pub reverse: bool,
    /// One JSON object per line (the parsed envelope, its stream and entry id).
    #[arg(long)]
    pub json: bool,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
}

/// Runs `evhost history`.
///
/// # Errors
///
/// When an argument is invalid or Redis cannot be reached.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    if let Err(reason) = event::validate_type(&args.event_type) {
        return Err(UsageError(format!("invalid event type: {reason}")).into());
    }
    if args.count == 0 {
        return Err(UsageError("--count must be at least 1".into()).into());
    }
    let from = match &args.from {
        Some(text) => parse_position(text, Bound::Start)?,
        None => evhost::broker::EntryId::ZERO,
    };
    let to = match &args.to {
        Some(text) => parse_position(text, Bound::End)?,
        None => evhost::broker::EntryId::MAX,
    };
    if from > to {
        return Err(UsageError(format!("--from {from} is after --to {to}")).into());
    }
    let broker = connect_redis(&args.redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    // One stream per partition, merged by entry id (that is, by time).
    let mut entries = Vec::new();
    for keyspace in layout.each_partition() {
        let stream = keyspace.event_stream(&args.event_type);
        let read = if args.reverse {
            broker.rev_range(&stream, to, from, args.count).await
        } else {
            broker.range(&stream, from, to, args.count).await
        }
        .with_context(|| format!("cannot read {stream}"))?;
        entries.extend(read.into_iter().map(|entry| (stream.clone(), entry)));
    }
    entries.sort_by_key(|(_, entry)| entry.id);
    if args.reverse {
        entries.reverse();
    }
    entries.truncate(args.count);
    let views: Vec<EventView> = entries
        .iter()
        .map(|(stream, entry)| EventView::new(stream, entry))
        .collect();
    let stream = match layout.partitions() {
        1 => layout.event_stream(&args.event_type),
        partitions => format!(
            "the {partitions} partitions' streams of {} ({})",
            args.event_type,
            layout.event_stream(&args.event_type)
        ),
    };
    if args.json {
        for view in &views {
            json_line(&view.to_json())?;
        }
        return Ok(());
    }
    if views.is_empty() {
        let mut total = 0;
        for keyspace in layout.each_partition() {
            total += broker
                .len(&keyspace.event_stream(&args.event_type))
                .await
                .unwrap_or(0);
        }
        if total == 0 {
            println!(
                "no events in {stream} (the stream is empty or does not exist; `evhost stats` lists the streams)"
            );
        } else {
            println!("no events of {stream} in that range ({total} in the stream)");
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ENTRY", Align::Left),
        ("TIME", Align::Left),
        ("TYPE", Align::Left),
        ("EVENT ID", Align::Left),
        ("DATA", Align::Left),
    ]);
    for view in &views {
        table.row(view.cells());
    }
    table.print();
    Ok(())
}
