//! `evhost publish`: append events to `events:<TYPE>`, one from the command line or many from
//! a JSON Lines file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::UsageError;
use super::common::{DEFAULT_REDIS_URL, connect_redis};
use super::output::Progress;
use evhost::event::{self, CORRELATION_ID, Event, PARTITION_KEY};

/// Arguments of `evhost publish`.
#[derive(Debug, Args)]
#[command(
    after_help = "With --file, each line is {\"type\": ..., \"data\": ..., \"key\": ...} (key optional), or just the data when TYPE is given; blank lines are skipped. The whole file is checked before anything is published.\n\nExamples:\n  evhost publish AuctionEnded '{\"auction_id\":\"a1\",\"winning_bidder_id\":\"b1\",\"winning_price\":120}'\n  evhost publish BidderRegistered '{\"bidder_id\":\"b1\",\"name\":\"Ada\",\"email\":\"ada@example.com\"}' --correlation-id order-7\n  evhost publish --file events.jsonl\n  evhost publish AuctionEnded '{\"auction_id\":\"a1\"}' --key a1\n  evhost publish AuctionEnded --file auctions.jsonl --correlation-id import-42"
)]
pub struct PublishArgs {
    /// Event type; the event goes to the stream `events:<TYPE>`, or in a partitioned keyspace
    /// to that of its partition (with --file: the type of every line, which then holds only
    /// the data).
    pub event_type: Option<String>,
    /// Event data, as JSON.
    pub data: Option<String>,
    /// Publish every line of this JSON Lines file (`-` reads stdin).
    #[arg(long, conflicts_with = "data")]
    pub file: Option<PathBuf>,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
    /// The event's `source` attribute.
    #[arg(long, default_value = "evhost-cli")]
    pub source: String,
    /// Correlation id to attach (`correlationid` extension) to every event.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Partition key (`partitionkey` extension), which the plugins' publishes caused by the
    /// event carry on (with --file: of every line that gives no `key` of its own).
    #[arg(long)]
    pub key: Option<String>,
}

fn make_event(
    event_type: &str,
    data: &Value,
    key: Option<&str>,
    args: &PublishArgs,
) -> Result<Event, UsageError> {
    if let Err(reason) = event::validate_type(event_type) {
        return Err(UsageError(format!("invalid event type: {reason}")));
    }
    let mut event = Event::new(event_type, &args.source, data.to_string().into_bytes());
    if let Some(correlation_id) = &args.correlation_id {
        event.set_extension(CORRELATION_ID, correlation_id);
    }
    if let Some(key) = key.or(args.key.as_deref()) {
        if key.is_empty() {
            return Err(UsageError("the partition key must not be empty".into()));
        }
        event.set_extension(PARTITION_KEY, key);
    }
    Ok(event)
}

/// Builds the event `publish` would write from the command line, validating type and JSON.
///
/// # Errors
///
/// When the type is missing or unusable or the data is not valid JSON.
pub fn build_event(args: &PublishArgs) -> anyhow::Result<Event> {
    let (Some(event_type), Some(data)) = (&args.event_type, &args.data) else {
        return Err(UsageError(
            "give TYPE and JSON data, or --file events.jsonl (see `evhost publish --help`)".into(),
        )
        .into());
    };
    let data: Value = serde_json::from_str(data)
        .map_err(|err| UsageError(format!("event data is not valid JSON ({err}): {data:?}")))?;
    Ok(make_event(event_type, &data, None, args)?)
}

/// Parses one line of a `--file`: the data of `event_type`, or a `{"type", "data"}` object.
fn parse_line(line: &str, event_type: Option<&str>, args: &PublishArgs) -> Result<Event, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|err| format!("not valid JSON ({err})"))?;
    match event_type {
        Some(event_type) => make_event(event_type, &value, None, args).map_err(|err| err.0),
        None => {
            let Value::Object(mut object) = value else {
                return Err(
                    "expected {\"type\": ..., \"data\": ...} (or pass TYPE to give only the data)"
                        .into(),
                );
            };
            let event_type = match object.remove("type") {
                Some(Value::String(event_type)) => event_type,
                _ => return Err("missing string field \"type\" (or pass TYPE)".into()),
            };
            let data = object
                .remove("data")
                .ok_or_else(|| "missing field \"data\"".to_string())?;
            let key = match object.remove("key") {
                None => None,
                Some(Value::String(key)) => Some(key),
                Some(_) => return Err("field \"key\" must be a string".into()),
            };
            if let Some(extra) = object.keys().next() {
                return Err(format!(
                    "unknown field {extra:?}: a line holds only \"type\", \"data\" and \"key\""
                ));
            }
            make_event(&event_type, &data, key.as_deref(), args).map_err(|err| err.0)
        }
    }
}

/// Reads and checks every line of `path` (`-`: stdin).
fn read_file(path: &Path, args: &PublishArgs) -> anyhow::Result<Vec<Event>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(path)
            .map_err(|err| UsageError(format!("cannot read {}: {err}", path.display())))?
    };
    Ok(parse_lines(&text, path, args, "nothing was published")?)
}

/// The events of the JSON Lines `text` read from `path`, every line checked: an error names
/// the line, and ends with `consequence`.
pub(super) fn parse_lines(
    text: &str,
    path: &Path,
    args: &PublishArgs,
    consequence: &str,
) -> Result<Vec<Event>, UsageError> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_line(line, args.event_type.as_deref(), args).map_err(|reason| {
            UsageError(format!(
                "{}:{}: {reason}; {consequence}",
                path.display(),
                index + 1
            ))
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Runs `evhost publish`: prints the new event's id on stdout, or with `--file` the count.
///
/// # Errors
///
/// When the input is invalid or Redis cannot be reached.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let Some(path) = &args.file else {
        let event = build_event(&args)?;
        let broker = connect_redis(&args.redis).await?;
        let layout = evhost::partition::recorded(broker.as_ref()).await?;
        let stream = event.stream_in(layout);
        evhost::stream_registry::register(broker.as_ref(), layout, std::slice::from_ref(&stream))
            .await
            .with_context(|| format!("cannot register {stream}"))?;
        let entry_id = broker
            .add(&stream, &event.to_fields())
            .await
            .with_context(|| format!("cannot append to {stream}"))?;
        println!("{}", event.id);
        eprintln!(
            "published {} to {stream} as entry {entry_id}",
            event.event_type
        );
        return Ok(());
    };
    let events = read_file(path, &args)?;
    let broker = connect_redis(&args.redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    let mut streams: Vec<String> = events.iter().map(|event| event.stream_in(layout)).collect();
    streams.sort();
    streams.dedup();
    evhost::stream_registry::register(broker.as_ref(), layout, &streams)
        .await
        .context("cannot register the streams published to")?;
    let mut progress = Progress::new();
    for (index, event) in events.iter().enumerate() {
        let stream = event.stream_in(layout);
        broker
            .add(&stream, &event.to_fields())
            .await
            .with_context(|| {
                format!("cannot append to {stream} after publishing {index} event(s)")
            })?;
        if index % 100 == 99 {
            progress.update(&format!("published {}/{}", index + 1, events.len()));
        }
    }
    progress.finish();
    println!(
        "published {} event(s) from {}",
        events.len(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(event_type: Option<&str>) -> PublishArgs {
        PublishArgs {
            event_type: event_type.map(str::to_string),
            data: None,
            file: Some(PathBuf::from("events.jsonl")),
            redis: DEFAULT_REDIS_URL.into(),
            source: "test".into(),
            correlation_id: Some("c-1".into()),
            key: None,
        }
    }

    #[test]
    fn keys_come_from_the_line_or_the_flag() {
        let mut with_key = args(None);
        with_key.key = Some("default-key".into());
        let keyed = parse_line(r#"{"type":"A","data":{},"key":"k-1"}"#, None, &with_key)
            .expect("keyed line");
        assert_eq!(keyed.extension(PARTITION_KEY), Some("k-1"));
        let unkeyed =
            parse_line(r#"{"type":"A","data":{}}"#, None, &with_key).expect("unkeyed line");
        assert_eq!(unkeyed.extension(PARTITION_KEY), Some("default-key"));
        let none = parse_line(r#"{"type":"A","data":{}}"#, None, &args(None)).expect("line");
        assert_eq!(none.extension(PARTITION_KEY), None);
        assert!(parse_line(r#"{"type":"A","data":{},"key":7}"#, None, &args(None)).is_err());
    }

    #[test]
    fn parses_file_lines() {
        let typed = args(None);
        let event = parse_line(r#"{"type":"A","data":{"n":1}}"#, None, &typed).expect("line");
        assert_eq!(event.event_type, "A");
        assert_eq!(event.data, br#"{"n":1}"#);
        assert_eq!(event.extension(CORRELATION_ID), Some("c-1"));
        assert!(parse_line(r#"{"data":{}}"#, None, &typed).is_err());
        assert!(parse_line(r#"{"type":"A","data":1,"x":2}"#, None, &typed).is_err());
        assert!(parse_line("{oops", None, &typed).is_err());
        let event = parse_line(r#"{"n":2}"#, Some("B"), &args(Some("B"))).expect("data only");
        assert_eq!(event.event_type, "B");
    }
}
