//! `evhost doctor`: checks the Redis settings and keyspace states that lose or stall events
//! (see [`evhost::doctor`]); exits with 3 when it finds a danger, so that it can gate a
//! deployment.

use anyhow::Context as _;
use clap::Args;

use evhost::RedisBroker;
use evhost::doctor::{self, Level};

use super::common::{DEFAULT_REDIS_URL, redact_url};
use super::output::{Align, Cell, Style, Table, json_line};

/// Arguments of `evhost doctor`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when nothing is dangerous, 3 on a danger, 1 when Redis cannot be reached.\n\nExamples:\n  evhost doctor\n  evhost doctor --redis rediss://default:pw@redis.example.com:6380 --json"
)]
pub struct DoctorArgs {
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A danger was found (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error("{0} danger(s) found: fix them before relying on this Redis")]
pub struct DangerFound(pub usize);

/// Runs `evhost doctor`.
///
/// # Errors
///
/// When Redis cannot be reached, or [`DangerFound`].
pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let shown = redact_url(&args.redis);
    let broker = RedisBroker::connect(&args.redis)
        .await
        .with_context(|| format!("cannot reach Redis at {shown}"))?;
    broker
        .ping()
        .await
        .with_context(|| format!("Redis at {shown} does not answer PING"))?;
    let report = doctor::examine(&broker).await;
    if args.json {
        json_line(&report)?;
    } else {
        println!("evhost doctor: Redis at {shown}\n");
        let mut table = Table::new(&[
            ("CHECK", Align::Left),
            ("LEVEL", Align::Left),
            ("FOUND", Align::Left),
        ]);
        for finding in &report.findings {
            let style = match finding.level {
                Level::Ok => Style::Green,
                Level::Unknown | Level::Warning => Style::Yellow,
                Level::Danger => Style::Red,
            };
            table.row(vec![
                Cell::from(finding.check),
                Cell::styled(finding.level.as_str(), style),
                Cell::from(finding.found.as_str()),
            ]);
        }
        table.print();
        for finding in report.findings.iter().filter(|f| f.level != Level::Ok) {
            println!(
                "\n{} {}: {}\n  fix: {}",
                finding.level.as_str(),
                finding.check,
                finding.risk,
                finding.fix
            );
        }
    }
    match report.count(Level::Danger) {
        0 => Ok(()),
        dangers => Err(DangerFound(dangers).into()),
    }
}
