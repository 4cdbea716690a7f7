//! `evhost dlq`: list, show, re-drive and purge a plugin's dead letters.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::UsageError;
use super::common::{DEFAULT_REDIS_URL, connect_redis};
use super::output::{Align, Cell, Style, Table, json_line, truncate};
use evhost::broker::{EntryId, Inspect};
use evhost::dlq::{self, DeadLetter};
use evhost::keyspace::Keyspace;

/// Arguments of `evhost dlq`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost dlq list --plugin payment\n  evhost dlq show --plugin payment 1732470000000-0\n  evhost dlq retry --plugin payment --all\n  evhost dlq purge --plugin payment 1732470000000-0 --json"
)]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL, global = true)]
    pub redis: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of a plugin, oldest first.
    List {
        /// The plugin.
        #[arg(long)]
        plugin: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Show one dead letter with its original fields.
    Show {
        /// The plugin.
        #[arg(long)]
        plugin: String,
        /// The dead letter's id (first column of `list`).
        id: String,
    },
    /// Deliver dead letters again, to this plugin only (never to the other groups).
    Retry(Selection),
    /// Delete dead letters.
    Purge(Selection),
}

/// Which dead letters of which plugin.
#[derive(Debug, Args)]
pub struct Selection {
    /// The plugin.
    #[arg(long)]
    pub plugin: String,
    /// Dead-letter ids; or `--all`.
    pub ids: Vec<String>,
    /// Every dead letter of the plugin.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

fn parse_id(text: &str) -> anyhow::Result<EntryId> {
    text.parse()
        .map_err(|err| UsageError(format!("{err} (use an id from `evhost dlq list`)")).into())
}

fn print_table(letters: &[DeadLetter]) {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("STREAM", Align::Left),
        ("ENTRY", Align::Left),
        ("REASON", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for letter in letters {
        table.row(vec![
            letter.dlq_id.clone().into(),
            truncate(&letter.stream, 28).into(),
            letter.entry_id.clone().into(),
            Cell::styled(letter.reason.clone(), Style::Yellow),
            letter.attempts.to_string().into(),
            Cell::styled(truncate(&letter.error, 60), Style::Red),
        ]);
    }
    table.print();
}

/// Runs `evhost dlq`.
///
/// # Errors
///
/// When Redis cannot be reached, an id is invalid or unknown.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let broker = connect_redis(&args.redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    match args.command {
        DlqCommand::List { plugin, count } => {
            let letters = dlq::list(broker.as_ref(), layout, &plugin, count).await?;
            if args.json {
                json_line(&letters)?;
            } else if letters.is_empty() {
                println!(
                    "no dead letters for {plugin} (stream {}{})",
                    layout.dead_letters(&plugin),
                    if layout.is_partitioned() {
                        " and those of the other partitions"
                    } else {
                        ""
                    }
                );
            } else {
                print_table(&letters);
            }
        }
        DlqCommand::Show { plugin, id } => {
            let id = parse_id(&id)?;
            let letter = dlq::get(broker.as_ref(), layout, &plugin, id)
                .await?
                .with_context(|| {
                    format!("no dead letter {id} in {}", layout.dead_letters(&plugin))
                })?;
            if args.json {
                json_line(&letter)?;
            } else {
                println!("id         {}", letter.dlq_id);
                println!("in         {}", letter.dlq_stream);
                println!("plugin     {} {}", letter.plugin, letter.plugin_version);
                println!("stream     {}", letter.stream);
                println!("entry      {}", letter.entry_id);
                println!("event      {}", letter.event_id);
                println!("reason     {}", letter.reason);
                println!("attempts   {}", letter.attempts);
                println!("time       {}", letter.time);
                println!("error      {}", letter.error);
                println!("fields");
                for (name, value) in &letter.fields {
                    println!("  {name} = {value}");
                }
            }
        }
        DlqCommand::Retry(selection) | DlqCommand::Purge(selection)
            if !selection.all && selection.ids.is_empty() =>
        {
            return Err(UsageError(format!(
                "name the dead letters to act on, or pass --all (see `evhost dlq list --plugin {}`)",
                selection.plugin
            ))
            .into());
        }
        DlqCommand::Retry(selection) => {
            let letters = select(broker.as_ref(), layout, &selection).await?;
            let moved = dlq::redrive(broker.as_ref(), layout, &selection.plugin, &letters).await?;
            report(
                args.json,
                "redriven",
                moved,
                &format!(
                    "to {} (read by {} only)",
                    layout.redrive(&selection.plugin),
                    selection.plugin
                ),
            );
        }
        DlqCommand::Purge(selection) => {
            let letters = select(broker.as_ref(), layout, &selection).await?;
            let purged = dlq::purge(broker.as_ref(), layout, &selection.plugin, &letters).await?;
            report(
                args.json,
                "purged",
                purged,
                &format!("from {}", layout.dead_letters(&selection.plugin)),
            );
        }
    }
    Ok(())
}

fn report(json: bool, what: &str, count: usize, detail: &str) {
    if json {
        println!("{}", serde_json::json!({ what: count }));
    } else {
        println!("{what} {count} dead letter(s) {detail}");
    }
}

/// The dead letters named by `selection` (all of them with `--all`).
async fn select(
    broker: &dyn Inspect,
    layout: Keyspace,
    selection: &Selection,
) -> anyhow::Result<Vec<DeadLetter>> {
    if selection.all {
        return Ok(dlq::list(broker, layout, &selection.plugin, 1_000_000).await?);
    }
    let mut letters = Vec::new();
    for text in &selection.ids {
        let id = parse_id(text)?;
        let letter = dlq::get(broker, layout, &selection.plugin, id)
            .await?
            .with_context(|| {
                format!(
                    "no dead letter {id} in {}",
                    layout.dead_letters(&selection.plugin)
                )
            })?;
        letters.push(letter);
    }
    Ok(letters)
}
