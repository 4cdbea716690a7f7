//! `evhost publish`: append one event to `events:<TYPE>`.

use anyhow::Context as _;
use clap::Args;

use super::UsageError;
use super::common::{DEFAULT_REDIS_URL, connect_redis};
use crate::broker::Broker as _;
use crate::event::{self, CORRELATION_ID, Event};

/// Arguments of `evhost publish`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  evhost publish AuctionEnded '{\"auction_id\":\"a1\",\"winning_bidder_id\":\"b1\",\"winning_price\":120}'\n  evhost publish BidderRegistered '{\"bidder_id\":\"b1\",\"name\":\"Ada\",\"email\":\"ada@example.com\"}' --correlation-id order-7"
)]
pub struct PublishArgs {
    /// Event type; the event goes to the stream `events:<TYPE>`.
    pub event_type: String,
    /// Event data, as JSON.
    pub data: String,
    /// Redis server URL.
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis: String,
    /// The event's `source` attribute.
    #[arg(long, default_value = "evhost-cli")]
    pub source: String,
    /// Correlation id to attach (`correlationid` extension).
    #[arg(long)]
    pub correlation_id: Option<String>,
}

/// Builds the event `publish` would write, validating type and JSON.
///
/// # Errors
///
/// When the type is unusable or the data is not valid JSON.
pub fn build_event(args: &PublishArgs) -> anyhow::Result<Event> {
    if let Err(reason) = event::validate_type(&args.event_type) {
        return Err(UsageError(format!("invalid event type: {reason}")).into());
    }
    let data: serde_json::Value = serde_json::from_str(&args.data).map_err(|err| {
        UsageError(format!(
            "event data is not valid JSON ({err}): {:?}",
            args.data
        ))
    })?;
    let mut event = Event::new(
        &args.event_type,
        &args.source,
        data.to_string().into_bytes(),
    );
    if let Some(correlation_id) = &args.correlation_id {
        event.set_extension(CORRELATION_ID, correlation_id);
    }
    Ok(event)
}

/// Runs `evhost publish`: prints the new event's id on stdout.
///
/// # Errors
///
/// When the input is invalid or Redis cannot be reached.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let event = build_event(&args)?;
    let broker = connect_redis(&args.redis).await?;
    let entry_id = broker
        .add(&event.stream(), &event.to_fields())
        .await
        .with_context(|| format!("cannot append to {}", event.stream()))?;
    println!("{}", event.id);
    eprintln!(
        "published {} to {} as entry {entry_id}",
        event.event_type,
        event.stream()
    );
    Ok(())
}
