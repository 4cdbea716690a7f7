//! `evhost test`: runs a plugin on events without Redis or a host (see [`evhost::trial`]), and
//! prints, for each event, its outcome, the effects the host would commit (publishes, key-value
//! writes, journal) and the metric samples it changed. `--expect FILE` compares them with
//! expected results, so that a plugin's CI can run it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::UsageError;
use super::common::{DEFAULT_REDIS_URL, connect_redis};
use super::output::json_line;
use super::publish::{PublishArgs, parse_lines};
use evhost::broker::EntryId;
use evhost::event::Event;
use evhost::trial::{Trial, TrialRunner};

/// Arguments of `evhost test`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each result is one JSON object with --json: {\"type\", \"event\", \"outcome\" (handled, retry, rejected, trapped, timed-out), \"error\", \"publishes\" [{\"type\", \"data\", \"key\"}], \"kv\" [{\"op\": \"set\"|\"delete\"|\"increment\", \"key\", ...}], \"journal\" [...], \"metrics\" [samples]}. An --expect file holds one such object per event, with only the fields to compare.\n\nExamples:\n  evhost test my-plugin.wasm --events event.json\n  evhost test payment.wasm --events auctions.jsonl --kv state.json --json\n  evhost test payment.wasm --events auctions.jsonl --expect expected.jsonl\n  evhost test audit.wasm --history AuctionEnded --count 20 --redis redis://127.0.0.1:6379"
)]
pub struct TestArgs {
    /// The plugin component (its sidecar `.toml` beside it is read too).
    pub plugin: PathBuf,
    /// Events to handle: JSON Lines of {"type": ..., "data": ..., "key": ...} as for
    /// `evhost publish --file`, only the data with --type, or one JSON document (a project's
    /// `event.json`).
    #[arg(long, conflicts_with = "history", required_unless_present = "history")]
    pub events: Option<PathBuf>,
    /// The type of events given only as data [default: the plugin's first exact subscription].
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Handle the newest events of this type in Redis instead (read only: nothing is written
    /// there).
    #[arg(long, value_name = "TYPE")]
    pub history: Option<String>,
    /// How many events --history reads.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Redis server URL, for --history.
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
    /// Key-value state to start from: a JSON object of key to value (a string is stored as it
    /// is, any other value as its JSON text).
    #[arg(long, value_name = "FILE")]
    pub kv: Option<PathBuf>,
    /// Expected results, one JSON object per event (only the fields given are compared); exits
    /// with 1 when one differs.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Print one JSON object per event.
    #[arg(long)]
    pub json: bool,
}

/// The events of `path`: JSON Lines, or one JSON document (see [`events_from_text`]).
pub(super) fn read_events(
    path: &Path,
    explicit_type: Option<String>,
    default_type: Option<String>,
) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| UsageError(format!("cannot read {}: {err}", path.display())))?;
    Ok(events_from_text(&text, path, explicit_type, default_type)?)
}

/// The event of one typed line (see [`events_from_text`]).
pub(super) fn parse_typed_line(line: &str, default_type: Option<String>) -> Result<Event, String> {
    let mut events =
        events_from_text(line, Path::new("stdin"), None, default_type).map_err(|err| err.0)?;
    events.pop().ok_or_else(|| "an empty line".to_string())
}

/// The events of `text` read from `path`: JSON Lines, or one JSON document. Lines (or the
/// document) are the data of `explicit_type` when given; else `{"type", "data"}` objects when
/// they look like that, else the data of `default_type`.
fn events_from_text(
    text: &str,
    path: &Path,
    explicit_type: Option<String>,
    default_type: Option<String>,
) -> Result<Vec<Event>, UsageError> {
    // A document over several lines (a pretty-printed `event.json`) is one line's worth.
    let text = match serde_json::from_str::<Value>(text) {
        Ok(document) if text.trim().lines().count() > 1 => document.to_string(),
        _ => text.to_string(),
    };
    let typed_lines = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str::<Value>(line).ok())
        .is_some_and(|first| first.get("type").is_some() && first.get("data").is_some());
    let event_type = match explicit_type {
        Some(event_type) => Some(event_type),
        None if typed_lines => None,
        None => Some(default_type.ok_or_else(|| {
            UsageError(
                "the events hold only data and the plugin subscribes to no exact type: give the type"
                    .into(),
            )
        })?),
    };
    let args = PublishArgs {
        event_type,
        data: None,
        file: Some(path.to_path_buf()),
        redis: DEFAULT_REDIS_URL.into(),
        source: "evhost-test".into(),
        correlation_id: None,
        key: None,
    };
    parse_lines(&text, path, &args, "nothing was run")
}

/// The key-value entries of the JSON object in `path`.
fn read_kv(path: &Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| UsageError(format!("cannot read {}: {err}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(entries)) => Ok(entries),
        _ => Err(UsageError(format!(
            "{}: expected one JSON object of key to value",
            path.display()
        ))
        .into()),
    }
}

/// The newest `count` events of `event_type` in Redis, oldest first, from every partition.
async fn read_history(args: &TestArgs, event_type: &str) -> anyhow::Result<Vec<Event>> {
    let broker = connect_redis(&args.redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    let mut entries = Vec::new();
    for keyspace in layout.each_partition() {
        let stream = keyspace.event_stream(event_type);
        for entry in broker
            .rev_range(&stream, EntryId::MAX, EntryId::ZERO, args.count)
            .await
            .with_context(|| format!("cannot read {stream}"))?
        {
            entries.push((entry.id, stream.clone(), entry));
        }
    }
    entries.sort_by_key(|(id, ..)| *id);
    let skip = entries.len().saturating_sub(args.count);
    let mut events = Vec::new();
    for (id, stream, entry) in entries.into_iter().skip(skip) {
        match Event::from_entry(&stream, id, &entry.fields) {
            Ok(event) => events.push(event),
            Err(reason) => eprintln!("skipping {stream} {id}: not an event ({reason})"),
        }
    }
    Ok(events)
}

/// The fields of `expected` (an object) that differ in `actual`, as readable lines.
fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let Value::Object(expected) = expected else {
        return vec![format!("expected a JSON object, not {expected}")];
    };
    expected
        .iter()
        .filter(|(field, value)| actual.get(field.as_str()) != Some(*value))
        .map(|(field, value)| {
            let got = actual.get(field.as_str()).unwrap_or(&Value::Null);
            format!("{field}: expected {value}, got {got}")
        })
        .collect()
}

fn print_trial(trial: &Trial) {
    let mark = if trial.outcome == "handled" {
        "ok "
    } else {
        "ERR"
    };
    match &trial.error {
        Some(error) => println!(
            "{mark} {} {}: {}: {error}",
            trial.event_type, trial.event, trial.outcome
        ),
        None => println!(
            "{mark} {} {}: {}",
            trial.event_type, trial.event, trial.outcome
        ),
    }
    for publish in &trial.publishes {
        println!(
            "      publish  {} {}",
            publish["type"].as_str().unwrap_or("?"),
            publish["data"]
        );
    }
    for write in &trial.kv {
        let op = write["op"].as_str().unwrap_or("?");
        let key = write["key"].as_str().unwrap_or("?");
        match op {
            "set" => println!("      kv set   {key} = {}", write["value"]),
            "increment" => println!("      kv incr  {key} by {}", write["by"]),
            _ => println!("      kv {op:<6} {key}"),
        }
    }
    for record in &trial.journal {
        println!("      journal  {record}");
    }
    for sample in &trial.metrics {
        println!("      metric   {sample}");
    }
}

/// Runs `evhost test`.
///
/// # Errors
///
/// When the plugin or an input file cannot be used, or a result differs from `--expect`.
pub async fn run(args: TestArgs) -> anyhow::Result<()> {
    let mut runner = TrialRunner::load(&args.plugin, super::run::default_cache_dir()).await?;
    let default_type = runner
        .plugin()
        .subscriptions
        .iter()
        .find_map(|subscription| subscription.exact_type().map(str::to_string));
    let events = match (&args.events, &args.history) {
        (Some(path), _) => {
            let mut events = read_events(path, args.event_type.clone(), default_type)?;
            // Ids that are the same on every run, so that results (an error naming the event)
            // can be expected.
            for (index, event) in events.iter_mut().enumerate() {
                event.id = format!("test-{}", index + 1);
            }
            events
        }
        (None, Some(event_type)) => read_history(&args, event_type).await?,
        (None, None) => {
            return Err(UsageError("give --events FILE or --history TYPE".into()).into());
        }
    };
    if let Some(path) = &args.kv {
        runner.seed(read_kv(path)?).await?;
    }
    let expected: Option<Vec<Value>> = match &args.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| UsageError(format!("cannot read {}: {err}", path.display())))?;
            let mut lines = Vec::new();
            for (index, line) in text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
            {
                lines.push(serde_json::from_str(line).map_err(|err| {
                    UsageError(format!(
                        "{}:{}: not valid JSON ({err})",
                        path.display(),
                        index + 1
                    ))
                })?);
            }
            Some(lines)
        }
        None => None,
    };
    let mut differing = Vec::new();
    let total = events.len();
    let mut handled = 0;
    for (index, event) in events.into_iter().enumerate() {
        let trial = runner.handle(event).await?;
        if trial.outcome == "handled" {
            handled += 1;
        }
        if args.json {
            json_line(&trial)?;
        } else {
            print_trial(&trial);
        }
        if let Some(expected) = &expected {
            let actual = serde_json::to_value(&trial)?;
            let diffs = match expected.get(index) {
                Some(expected) => differences(expected, &actual),
                None => vec!["no expected result for this event".to_string()],
            };
            if !diffs.is_empty() {
                differing.push(format!(
                    "event {} ({}): {}",
                    index + 1,
                    trial.event_type,
                    diffs.join("; ")
                ));
            }
        }
    }
    if !args.json {
        println!(
            "{total} event(s): {handled} handled, {} not",
            total - handled
        );
    }
    if let Some(expected) = &expected {
        if expected.len() > total {
            differing.push(format!(
                "{} expected result(s) but {total} event(s)",
                expected.len()
            ));
        }
        if !differing.is_empty() {
            for difference in &differing {
                eprintln!("{difference}");
            }
            anyhow::bail!(
                "{} result(s) differ from {}",
                differing.len(),
                args.expect
                    .as_deref()
                    .map(Path::display)
                    .map_or(String::new(), |path| path.to_string())
            );
        }
        eprintln!(
            "every result matches {}",
            args.expect
                .as_deref()
                .map(Path::display)
                .map_or(String::new(), |path| path.to_string())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_expected_fields_are_compared() {
        let actual = json!({"type": "Ping", "event": "e-1", "outcome": "handled", "kv": []});
        assert!(differences(&json!({"outcome": "handled"}), &actual).is_empty());
        let diffs = differences(&json!({"outcome": "rejected", "kv": []}), &actual);
        assert_eq!(diffs, [r#"outcome: expected "rejected", got "handled""#]);
        assert_eq!(
            differences(&json!({"missing": 1}), &actual),
            ["missing: expected 1, got null"]
        );
    }
}
