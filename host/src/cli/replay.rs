//! `evhost replay`: re-deliver past events of one type to one plugin only.
//!
//! The entries of `events:<TYPE>` in the range are copied, with their origin, into the plugin's
//! redrive stream `evhost:redrive:<plugin>` (the path `evhost dlq retry` uses). Only that
//! plugin's consumers read it, so no other group sees the events again and the plugin's live
//! group on `events:<TYPE>` is not moved. The running host delivers them (attempts start over,
//! with the plugin's retry policy and dead-letter stream); `replay` then watches the redrive
//! group and the dead-letter stream and prints what became of them.
//!
//! On a partitioned keyspace each partition's entries go to the plugin's redrive stream of the
//! same partition (`evhost:{pN}:redrive:<plugin>`), where the plugin's state of their keys is;
//! the range applies to each partition's stream.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::UsageError;
use super::common::{Bound, DEFAULT_REDIS_URL, connect_redis, parse_position};
use super::output::{Progress, json_line};
use evhost::broker::{Broker, EntryId};
use evhost::dlq;
use evhost::event;
use evhost::keyspace::Keyspace;

/// Entries read per `XRANGE` page.
const PAGE: usize = 500;
/// How often the redrive group is checked while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Arguments of `evhost replay`.
#[derive(Debug, Args)]
#[command(
    after_help = "The events are copied to evhost:redrive:<plugin>, which only that plugin reads: other plugins never see them again and the plugin's live consumer group is not reset. A running `evhost run` with the plugin loaded delivers them.\n\nExamples:\n  evhost replay AuctionEnded --plugin payment --from 2026-11-24T18:00:00Z\n  evhost replay AuctionEnded --plugin audit --from 1732470000000-0 --to 1732470600000-0 --wait-secs 120\n  evhost replay AuctionEnded --plugin audit --from - --no-wait --json"
)]
pub struct ReplayArgs {
    /// Event type; replays entries of the stream `events:<TYPE>`.
    pub event_type: String,
    /// The one plugin to deliver them to (its consumer group name).
    #[arg(long)]
    pub plugin: String,
    /// First entry: an entry id, an RFC 3339 time, or `-` for the oldest.
    #[arg(long)]
    pub from: String,
    /// Last entry: an entry id or an RFC 3339 time [default: the newest].
    #[arg(long)]
    pub to: Option<String>,
    /// How long to wait for the host to handle them before printing the summary.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
    /// Only queue them and print how many.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
}

/// What became of the replayed events.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Events queued for the plugin.
    queued: usize,
    /// Handled successfully.
    handled: usize,
    /// Given up on: now in the plugin's dead-letter stream.
    dead_lettered: usize,
    /// Delivered but not settled yet: failed and waiting for a retry, or being handled.
    pending: usize,
    /// Not delivered yet.
    undelivered: usize,
    /// Whether every queued event was settled (handled or dead-lettered).
    finished: bool,
}

/// One partition's share of a replay: its event stream, the plugin's redrive stream there,
/// and the entries queued (redrive id, origin id).
struct Part {
    stream: String,
    redrive: String,
    queued: Vec<(EntryId, EntryId)>,
}

/// The state of the queued entries, from the redrive groups and the dead-letter streams.
async fn summarize(
    broker: &dyn Broker,
    layout: Keyspace,
    plugin: &str,
    parts: &[Part],
    since: EntryId,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut settled = 0;
    for part in parts.iter().filter(|part| !part.queued.is_empty()) {
        summary.queued += part.queued.len();
        let group = broker
            .groups(&part.redrive)
            .await?
            .into_iter()
            .find(|group| group.name == plugin);
        let Some(group) = group else {
            summary.undelivered += part.queued.len();
            continue;
        };
        let pending: HashSet<EntryId> = if group.pending > 0 {
            broker
                .pending(&part.redrive, plugin, Duration::ZERO, 1_000_000)
                .await?
                .into_iter()
                .map(|entry| entry.id)
                .collect()
        } else {
            HashSet::new()
        };
        for (redrive_id, _) in &part.queued {
            if *redrive_id > group.last_delivered {
                summary.undelivered += 1;
            } else if pending.contains(redrive_id) {
                summary.pending += 1;
            } else {
                settled += 1;
            }
        }
    }
    let origins: HashSet<(&str, String)> = parts
        .iter()
        .flat_map(|part| {
            part.queued
                .iter()
                .map(|(_, origin)| (part.stream.as_str(), origin.to_string()))
        })
        .collect();
    summary.dead_lettered = dlq::list(broker, layout, plugin, 1_000_000)
        .await?
        .into_iter()
        .filter(|letter| {
            letter.dlq_id.parse::<EntryId>().is_ok_and(|id| id >= since)
                && origins.contains(&(letter.stream.as_str(), letter.entry_id.clone()))
        })
        .count()
        .min(settled);
    summary.handled = settled - summary.dead_lettered;
    summary.finished = summary.pending == 0 && summary.undelivered == 0;
    Ok(summary)
}

/// Runs `evhost replay`.
///
/// # Errors
///
/// When an argument is invalid, the plugin has no group on the stream, Redis fails, or the
/// host did not settle every event within `--wait-secs`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Err(reason) = event::validate_type(&args.event_type) {
        return Err(UsageError(format!("invalid event type: {reason}")).into());
    }
    let from = parse_position(&args.from, Bound::Start)?;
    let to = match &args.to {
        Some(text) => parse_position(text, Bound::End)?,
        None => EntryId::MAX,
    };
    if from > to {
        return Err(UsageError(format!("--from {from} is after --to {to}")).into());
    }
    let broker = connect_redis(&args.redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    // What the messages call the stream and the redrive stream: one name per partition.
    let (stream, redrive) = if layout.is_partitioned() {
        (
            format!("evhost:{{p*}}:events:{}", args.event_type),
            format!("evhost:{{p*}}:redrive:{}", args.plugin),
        )
    } else {
        (
            layout.event_stream(&args.event_type),
            layout.redrive(&args.plugin),
        )
    };
    let mut parts: Vec<Part> = layout
        .each_partition()
        .map(|keyspace| Part {
            stream: keyspace.event_stream(&args.event_type),
            redrive: keyspace.redrive(&args.plugin),
            queued: Vec::new(),
        })
        .collect();
    let mut groups_seen: Vec<String> = Vec::new();
    let mut subscribed = false;
    for part in &parts {
        let groups = broker.groups(&part.stream).await?;
        subscribed |= groups.iter().any(|group| group.name == args.plugin);
        for group in groups {
            if !groups_seen.contains(&group.name) {
                groups_seen.push(group.name);
            }
        }
    }
    if !subscribed {
        anyhow::bail!(
            "plugin {:?} has no consumer group on {stream}, so it does not handle {} events (groups there: {}); check the name with `evhost plugins list`",
            args.plugin,
            args.event_type,
            if groups_seen.is_empty() {
                "none".to_string()
            } else {
                groups_seen.join(", ")
            }
        );
    }
    // Dead letters of this replay are the ones written after this moment.
    let since = EntryId::new(
        u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0),
        0,
    );
    let mut progress = Progress::new();
    let mut queued = 0;
    for part in &mut parts {
        let mut start = from;
        loop {
            let page = broker
                .range(&part.stream, start, to, PAGE)
                .await
                .with_context(|| format!("cannot read {}", part.stream))?;
            for entry in &page {
                let redrive_id =
                    dlq::replay(broker.as_ref(), layout, &args.plugin, &part.stream, entry)
                        .await
                        .with_context(|| {
                            format!(
                                "cannot queue {} of {} for {}",
                                entry.id, part.stream, args.plugin
                            )
                        })?;
                part.queued.push((redrive_id, entry.id));
                queued += 1;
            }
            progress.update(&format!("queued {queued} event(s)"));
            match page.last() {
                Some(last) if page.len() == PAGE && last.id < to => start = last.id.next(),
                _ => break,
            }
        }
    }
    progress.finish();
    if queued == 0 {
        if args.json {
            json_line(&Summary {
                finished: true,
                ..Summary::default()
            })?;
        } else {
            println!("no events of {stream} in that range; nothing replayed");
        }
        return Ok(());
    }
    if args.no_wait {
        if args.json {
            json_line(&serde_json::json!({ "queued": queued }))?;
        } else {
            println!(
                "queued {queued} event(s) of {stream} to {redrive} (delivered to {} only by a running host)",
                args.plugin
            );
        }
        return Ok(());
    }
    if !args.json {
        eprintln!(
            "queued {queued} event(s) of {stream} to {redrive}; waiting up to {}s for {} to handle them",
            args.wait_secs, args.plugin
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let summary = loop {
        let summary = summarize(broker.as_ref(), layout, &args.plugin, &parts, since).await?;
        if summary.finished || Instant::now() >= deadline {
            break summary;
        }
        progress.update(&format!(
            "replay: {}/{} settled, {} pending, {} not delivered yet",
            summary.handled + summary.dead_lettered,
            summary.queued,
            summary.pending,
            summary.undelivered
        ));
        tokio::time::sleep(POLL).await;
    };
    progress.finish();
    if args.json {
        json_line(&summary)?;
    } else {
        println!(
            "replayed {} event(s) of {stream} to {}: {} handled, {} dead-lettered, {} pending (failed, awaiting retry), {} not delivered",
            summary.queued,
            args.plugin,
            summary.handled,
            summary.dead_lettered,
            summary.pending,
            summary.undelivered
        );
        if summary.dead_lettered > 0 {
            println!("see them with `evhost dlq list --plugin {}`", args.plugin);
        }
    }
    if !summary.finished {
        anyhow::bail!(
            "{} of {} replayed event(s) not settled within {}s — is `evhost run` running with plugin {}? They stay queued in {redrive} until it is",
            summary.pending + summary.undelivered,
            summary.queued,
            args.wait_secs,
            args.plugin
        );
    }
    Ok(())
}
