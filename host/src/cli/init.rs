//! `evhost init`: fixes a keyspace's partition count before any host runs on it.

use std::num::NonZeroU32;

use clap::Args;

use super::common::{DEFAULT_REDIS_URL, connect_redis, redact_url};

/// Arguments of `evhost init`.
#[derive(Debug, Args)]
#[command(
    after_help = "The count is recorded under evhost:partitions and cannot change afterwards; every host and command reads it. Without partitions (1, the default) nothing is recorded and the keys keep their plain names (events:<TYPE>).\n\nExamples:\n  evhost init --partitions 8\n  evhost init --partitions 8 --redis redis://10.0.0.5:6379"
)]
pub struct InitArgs {
    /// Number of partitions of the keyspace.
    #[arg(long, value_name = "P")]
    pub partitions: NonZeroU32,
    /// Redis server URL; for a Redis Cluster, any node (or several: comma-separated, or repeated).
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
}

/// Runs `evhost init`: records the count, or confirms that it is already the recorded one.
///
/// # Errors
///
/// When Redis cannot be reached, or another count is recorded.
pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let broker = connect_redis(&args.redis).await?;
    let keyspace = evhost::partition::resolve(broker.as_ref(), Some(args.partitions)).await?;
    println!(
        "the keyspace at {} has {} partition(s)",
        redact_url(&args.redis),
        keyspace.partitions()
    );
    Ok(())
}
