//! `evhost stats`: streams, consumer groups and (from a running host) plugin counters.

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::common::{AdminArgs, DEFAULT_REDIS_URL, TypePattern, connect_redis, matching_streams};
use super::output::{Align, Cell, Style, Table, human_duration, json_line};
use evhost::host::PluginStatus;
use evhost::stream_stats::{self, StreamStats};

/// Arguments of `evhost stats`.
#[derive(Debug, Args)]
#[command(
    after_help = "Lag needs Redis 7 (`-` when Redis cannot tell). Plugin counters come from a running host's admin endpoint and count since it started.\n\nExamples:\n  evhost stats\n  evhost stats 'Auction*'\n  evhost stats --json | jq '.streams[].groups[] | {group, lag, pending}'\n  evhost stats --admin http://127.0.0.1:9464\n  evhost stats --partitions       # a partitioned keyspace: each partition and its host"
)]
pub struct StatsArgs {
    /// Event types to show, a glob like `Auction*` (an `events:` prefix is allowed).
    #[arg(default_value = "*")]
    pub pattern: String,
    /// In a partitioned keyspace, one row per partition's stream, and which host holds each
    /// partition (without it: each type summed over the partitions).
    #[arg(long)]
    pub partitions: bool,
    /// One JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The running host, for plugin counters.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
}

/// Everything `stats` reports.
#[derive(Debug, Serialize)]
struct Report {
    streams: Vec<StreamStats>,
    /// The host holding each partition's lease (`None`: none), with `--partitions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    leases: Option<Vec<Option<String>>>,
    /// On a Redis Cluster, the primary that serves each partition, with `--partitions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<Option<String>>>,
    /// The running host's plugins; `None` when its admin endpoint did not answer.
    plugins: Option<Vec<PluginStatus>>,
    /// Why there are no plugin counters.
    admin_error: Option<String>,
}

/// Runs `evhost stats`.
///
/// # Errors
///
/// When the pattern is invalid or Redis cannot be reached. An unreachable host is not an
/// error: the Redis part is still printed.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let pattern = TypePattern::parse(&args.pattern)?;
    let broker = connect_redis(&args.redis).await?;
    let mut streams = Vec::new();
    for stream in matching_streams(broker.as_ref(), &[pattern]).await? {
        streams.push(
            stream_stats::inspect(broker.as_ref(), &stream)
                .await
                .with_context(|| format!("cannot inspect {stream}"))?,
        );
    }
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    let (mut leases, mut nodes) = (None, None);
    if layout.is_partitioned() {
        if args.partitions {
            let mut holders = Vec::new();
            let mut servers = Vec::new();
            for keyspace in layout.each_partition() {
                let holder = broker.get(&keyspace.lease()).await?;
                holders.push(holder.map(|value| String::from_utf8_lossy(&value).into_owned()));
                servers.push(broker.node_of(&keyspace.lease()).await?);
            }
            leases = Some(holders);
            nodes = broker.is_cluster().then_some(servers);
        } else {
            streams = stream_stats::sum_partitions(streams);
        }
    }
    let (plugins, admin_error) = match args
        .admin
        .client()
        .get_json::<Vec<PluginStatus>>("/api/plugins")
        .await
    {
        Ok(plugins) => (Some(plugins), None),
        Err(err) => (None, Some(err.to_string())),
    };
    let report = Report {
        streams,
        leases,
        nodes,
        plugins,
        admin_error,
    };
    if args.json {
        json_line(&report)?;
    } else {
        print_report(&report, &args.pattern);
    }
    Ok(())
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

fn print_report(report: &Report, pattern: &str) {
    if report.streams.is_empty() {
        println!("no event streams match {pattern:?}");
    } else {
        let mut table = Table::new(&[
            ("STREAM", Align::Left),
            ("LENGTH", Align::Right),
            ("FIRST ENTRY", Align::Left),
            ("FIRST TIME", Align::Left),
            ("LAST ENTRY", Align::Left),
            ("LAST TIME", Align::Left),
        ]);
        for stream in &report.streams {
            table.row(vec![
                Cell::styled(stream.stream.clone(), Style::Bold),
                stream.length.to_string().into(),
                or_dash(stream.first_entry.as_deref()).into(),
                or_dash(stream.first_time.as_deref()).into(),
                or_dash(stream.last_entry.as_deref()).into(),
                or_dash(stream.last_time.as_deref()).into(),
            ]);
        }
        table.print();
        println!();
        let mut groups = Table::new(&[
            ("GROUP", Align::Left),
            ("STREAM", Align::Left),
            ("CONSUMERS", Align::Right),
            ("PENDING", Align::Right),
            ("LAG", Align::Right),
            ("LAST DELIVERED", Align::Left),
            ("OLDEST PENDING", Align::Left),
        ]);
        for stream in &report.streams {
            for group in &stream.groups {
                let lag = group.lag.map_or("-".to_string(), |lag| lag.to_string());
                let lag_style = if group.lag.unwrap_or(0) > 0 {
                    Style::Yellow
                } else {
                    Style::Plain
                };
                let pending_style = if group.pending > 0 {
                    Style::Yellow
                } else {
                    Style::Plain
                };
                let oldest = match (&group.oldest_pending, group.oldest_pending_idle_ms) {
                    (Some(id), Some(idle)) => format!(
                        "{id} (idle {})",
                        human_duration(std::time::Duration::from_millis(idle))
                    ),
                    _ => "-".to_string(),
                };
                groups.row(vec![
                    Cell::styled(group.group.clone(), Style::Bold),
                    stream.stream.clone().into(),
                    group.consumers.to_string().into(),
                    Cell::styled(group.pending.to_string(), pending_style),
                    Cell::styled(lag, lag_style),
                    group.last_delivered.clone().into(),
                    oldest.into(),
                ]);
            }
        }
        groups.print();
    }
    if let Some(leases) = &report.leases {
        println!();
        let mut columns = vec![("PARTITION", Align::Right), ("HELD BY", Align::Left)];
        if report.nodes.is_some() {
            columns.push(("SERVED BY", Align::Left));
        }
        let mut table = Table::new(&columns);
        for (partition, holder) in leases.iter().enumerate() {
            let mut row = vec![
                partition.to_string().into(),
                or_dash(holder.as_deref()).into(),
            ];
            if let Some(nodes) = &report.nodes {
                let node = nodes.get(partition).and_then(Option::as_deref);
                row.push(or_dash(node).into());
            }
            table.row(row);
        }
        table.print();
    }
    println!();
    match (&report.plugins, &report.admin_error) {
        (Some(plugins), _) => print_plugins(plugins),
        (None, Some(error)) => println!("plugins: {error}"),
        (None, None) => {}
    }
}

fn millis(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |ms| {
        if ms < 1.0 {
            format!("{:.0}µs", ms * 1000.0)
        } else {
            format!("{ms:.1}ms")
        }
    })
}

fn print_plugins(plugins: &[PluginStatus]) {
    let mut table = Table::new(&[
        ("PLUGIN", Align::Left),
        ("STATE", Align::Left),
        ("HANDLED", Align::Right),
        ("FAILED", Align::Right),
        ("RETRIED", Align::Right),
        ("DEAD-LETTERED", Align::Right),
        ("P50", Align::Right),
        ("P99", Align::Right),
    ]);
    for plugin in plugins {
        let Some(name) = &plugin.name else { continue };
        let stats = plugin.stats.clone().unwrap_or_default();
        let count = |value: u64| {
            let style = if value > 0 {
                Style::Yellow
            } else {
                Style::Plain
            };
            Cell::styled(value.to_string(), style)
        };
        table.row(vec![
            Cell::styled(name.clone(), Style::Bold),
            super::plugins::state_cell(&plugin.state),
            stats.handled.to_string().into(),
            count(stats.failed),
            count(stats.retried),
            count(stats.dead_lettered),
            millis(stats.p50_ms).into(),
            millis(stats.p99_ms).into(),
        ]);
    }
    table.print();
}
