//! Helpers shared by subcommands.

use anyhow::Context as _;

use super::UsageError;
use std::sync::Arc;

use evhost::broker::{self, Broker, EntryId};
use evhost::keyspace::Keyspace;

/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Default address of a running host's admin endpoint (`evhost run --metrics-addr`).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9464";

/// Where a running host's admin endpoint is, and its token.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin endpoint of a running host (`evhost run --metrics-addr`).
    #[arg(long = "admin", env = "EVHOST_ADMIN_URL", default_value = DEFAULT_ADMIN_URL)]
    pub url: String,
    /// The host's bearer token for `/api/*` (`evhost run --admin-token`).
    #[arg(long, env = "EVHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl AdminArgs {
    /// A client of that endpoint.
    pub fn client(&self) -> evhost::admin_client::AdminClient {
        evhost::admin_client::AdminClient::new(&self.url, self.admin_token.clone())
    }
}

/// Which end of a range a position bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The first id of the range: an RFC 3339 time becomes `<ms>-0`.
    Start,
    /// The last id: an RFC 3339 time covers its whole millisecond (`<ms>-<max>`).
    End,
}

/// Parses a stream position: an entry id (`1732470000000-0`, `1732470000000`), `-`/`+`, or
/// an RFC 3339 time (`2026-11-24T18:00:00Z`), which becomes the id of that millisecond.
///
/// # Errors
///
/// [`UsageError`] saying which forms are accepted.
pub fn parse_position(text: &str, bound: Bound) -> Result<EntryId, UsageError> {
    match text {
        "-" => return Ok(EntryId::ZERO),
        "+" => return Ok(EntryId::MAX),
        _ => {}
    }
    if let Ok(id) = text.parse::<EntryId>() {
        return Ok(id);
    }
    let time: jiff::Timestamp = text.parse().map_err(|_| {
        UsageError(format!(
            "{text:?} is neither a stream entry id (like 1732470000000-0) nor an RFC 3339 time (like 2026-11-24T18:00:00Z)"
        ))
    })?;
    let ms = u64::try_from(time.as_millisecond()).map_err(|_| {
        UsageError(format!(
            "{text:?} is before 1970, where no stream entry can be"
        ))
    })?;
    Ok(match bound {
        Bound::Start => EntryId::new(ms, 0),
        Bound::End => EntryId::new(ms, u64::MAX),
    })
}

/// A glob over event types (`Auction*`); `events:Auction*` means the same.
#[derive(Debug, Clone)]
pub struct TypePattern(glob::Pattern);

impl TypePattern {
    /// Parses a type glob.
    ///
    /// # Errors
    ///
    /// [`UsageError`] when the glob is invalid.
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        let glob = text
            .strip_prefix(Keyspace::single().event_stream_prefix().as_str())
            .unwrap_or(text);
        glob::Pattern::new(glob)
            .map(TypePattern)
            .map_err(|err| UsageError(format!("invalid pattern {text:?}: {err}")))
    }

    /// Whether the event stream matches (`events:<type>`, or a partition's stream of the
    /// type).
    pub fn matches_stream(&self, stream: &str) -> bool {
        evhost::keyspace::event_type_in(stream).is_some_and(|event_type| self.0.matches(event_type))
    }
}

/// The event streams matching any of `patterns`, sorted: `events:*`, and in a partitioned
/// keyspace the streams of every partition too.
///
/// # Errors
///
/// When Redis fails.
pub async fn matching_streams(
    broker: &dyn Broker,
    patterns: &[TypePattern],
) -> anyhow::Result<Vec<String>> {
    let layout = evhost::partition::recorded(broker).await?;
    let single = Keyspace::single().event_stream_prefix();
    let mut streams = broker
        .streams(&single)
        .await
        .context("cannot list the event streams")?;
    if layout.is_partitioned() {
        streams.extend(
            broker
                .streams(layout.streams_prefix())
                .await
                .context("cannot list the partitions' event streams")?,
        );
        streams.sort();
    }
    Ok(streams
        .into_iter()
        .filter(|stream| {
            patterns
                .iter()
                .any(|pattern| pattern.matches_stream(stream))
        })
        .collect())
}

/// `url` with its password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// [`redact_url`] of one URL (not a list of seeds).
fn redact_one_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// Connects to the broker at `url` (see [`broker::connect`]) and checks it answers, with an
/// error that says what to do.
///
/// # Errors
///
/// When the URL is invalid or the server does not answer.
pub async fn connect_redis(url: &str) -> anyhow::Result<Arc<dyn Broker>> {
    connect_redis_waiting(url, None).await
}

/// [`connect_redis`] with a broker that waits for replicas (`--wait-replicas`).
///
/// # Errors
///
/// As [`connect_redis`].
pub async fn connect_redis_waiting(
    url: &str,
    wait: Option<broker::redis::WaitReplicas>,
) -> anyhow::Result<Arc<dyn Broker>> {
    let shown = redact_url(url);
    let broker = match broker::connect_waiting(url, wait).await {
        Ok(broker) => broker,
        // Reached, but refused: the hint about starting a server would mislead.
        Err(err @ broker::BrokerError::SeedsOfNoCluster) => {
            return Err(anyhow::Error::new(err).context(format!("Redis at {shown}")));
        }
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!("cannot reach Redis at {shown} — is redis-server running? try `docker compose up -d redis` or `redis-server --port 6379`")));
        }
    };
    broker
        .ping()
        .await
        .with_context(|| format!("Redis at {shown} does not answer PING"))?;
    Ok(broker)
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("got Ctrl-C"),
        () = terminate => tracing::info!("got SIGTERM"),
    }
}

/// The Redis at `redis`, else the embedded in-memory broker, and a phrase saying which.
///
/// # Errors
///
/// When Redis cannot be reached.
pub async fn broker_or_embedded(redis: Option<&str>) -> anyhow::Result<(Arc<dyn Broker>, String)> {
    Ok(match redis {
        Some(url) => (
            connect_redis(url).await?,
            format!("Redis at {}", redact_url(url)),
        ),
        None => (
            Arc::new(broker::memory::MemoryBroker::new()),
            "the embedded in-memory broker (no Redis needed)".to_string(),
        ),
    })
}

/// The broker of a command that runs a host of its own on plain streams (`dev`): Redis at
/// `redis`, else the embedded in-memory broker, with a description for messages; a
/// partitioned keyspace is refused, naming `command`.
///
/// # Errors
///
/// When Redis cannot be reached or holds a partitioned keyspace.
pub async fn unpartitioned_broker(
    redis: Option<&str>,
    command: &str,
) -> anyhow::Result<(Arc<dyn Broker>, String)> {
    let (broker, place) = broker_or_embedded(redis).await?;
    let layout = evhost::partition::recorded(broker.as_ref()).await?;
    if layout.is_partitioned() {
        anyhow::bail!(
            "{place} holds a keyspace of {} partitions, and `evhost {command}` runs on a keyspace without partitions: use another Redis database (e.g. redis://127.0.0.1:6379/1) or the embedded broker (no --redis)",
            layout.partitions()
        );
    }
    Ok((broker, place))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positions() {
        assert_eq!(
            parse_position("1700000000000-3", Bound::Start).expect("id"),
            EntryId::new(1_700_000_000_000, 3)
        );
        assert_eq!(
            parse_position("2023-11-14T22:13:20Z", Bound::Start).expect("time"),
            EntryId::new(1_700_000_000_000, 0)
        );
        assert_eq!(
            parse_position("2023-11-14T22:13:20.5+00:00", Bound::End).expect("time"),
            EntryId::new(1_700_000_000_500, u64::MAX)
        );
        assert!(parse_position("yesterday", Bound::Start).is_err());
        let pattern = TypePattern::parse("Auction*").expect("glob");
        assert!(pattern.matches_stream("events:AuctionEnded"));
        assert!(!pattern.matches_stream("events:BidPlaced"));
        assert!(!pattern.matches_stream("evhost:dlq:Auction"));
        assert!(
            TypePattern::parse("events:A*")
                .expect("glob")
                .matches_stream("events:AB")
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://secret@host"), "rediss://***@host");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://:pw@10.0.0.1:7000,redis://:pw@10.0.0.2:7000"),
            "redis://:***@10.0.0.1:7000,redis://:***@10.0.0.2:7000"
        );
    }
}
