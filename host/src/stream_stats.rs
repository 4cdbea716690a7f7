//! A snapshot of the event streams and their consumer groups, for `/api/streams` and the
//! `evhost_group_lag` / `evhost_group_pending` gauges.

use std::time::Duration;

use serde::Serialize;

use crate::broker::{Broker, BrokerError, GroupInfo};

/// Key prefix of the event streams.
pub const EVENT_STREAM_PREFIX: &str = "events:";
/// Key prefix of the per-plugin redrive streams (dead-letter retries).
pub const REDRIVE_STREAM_PREFIX: &str = "evhost:redrive:";
/// How long one snapshot may take before it is given up (a Redis outage must not hang a
/// scrape).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// One stream and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Stream key, e.g. `events:AuctionEnded`.
    pub stream: String,
    /// Number of entries.
    pub length: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupStats>,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// Group name (evhost names groups after plugins).
    pub group: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Delivered but not yet acknowledged entries.
    pub pending: u64,
    /// Entries not yet delivered to the group, when Redis can tell.
    pub lag: Option<u64>,
    /// Id of the last entry delivered to the group.
    pub last_delivered: String,
}

impl From<GroupInfo> for GroupStats {
    fn from(info: GroupInfo) -> Self {
        GroupStats {
            group: info.name,
            consumers: info.consumers,
            pending: info.pending,
            lag: info.lag,
            last_delivered: info.last_delivered.to_string(),
        }
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker did not answer within [`SNAPSHOT_TIMEOUT`].
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
}

/// Every event stream and redrive stream with its groups, sorted by stream name.
///
/// # Errors
///
/// When the broker fails or takes longer than [`SNAPSHOT_TIMEOUT`].
pub async fn snapshot(broker: &dyn Broker) -> Result<Vec<StreamStats>, SnapshotError> {
    tokio::time::timeout(SNAPSHOT_TIMEOUT, collect(broker))
        .await
        .map_err(|_| SnapshotError::Timeout(SNAPSHOT_TIMEOUT))?
}

async fn collect(broker: &dyn Broker) -> Result<Vec<StreamStats>, SnapshotError> {
    let mut names = broker.streams(EVENT_STREAM_PREFIX).await?;
    names.extend(broker.streams(REDRIVE_STREAM_PREFIX).await?);
    let mut streams = Vec::with_capacity(names.len());
    for stream in names {
        let length = broker.len(&stream).await?;
        let groups = broker
            .groups(&stream)
            .await?
            .into_iter()
            .map(GroupStats::from)
            .collect();
        streams.push(StreamStats {
            stream,
            length,
            groups,
        });
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{Fields, GroupStart};

    #[tokio::test]
    async fn lists_event_and_redrive_streams_with_their_groups() {
        let broker = MemoryBroker::new();
        let fields: Fields = vec![("data".into(), b"{}".to_vec())];
        for _ in 0..3 {
            broker
                .add("events:AuctionEnded", &fields)
                .await
                .expect("add");
        }
        broker.add("other:stream", &fields).await.expect("add");
        broker
            .create_group("events:AuctionEnded", "payment", GroupStart::Beginning)
            .await
            .expect("group");
        broker
            .add("evhost:redrive:payment", &fields)
            .await
            .expect("add");

        let streams = snapshot(&broker).await.expect("snapshot");
        let names: Vec<&str> = streams.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["events:AuctionEnded", "evhost:redrive:payment"]);
        assert_eq!(streams[0].length, 3);
        assert_eq!(streams[0].groups.len(), 1);
        assert_eq!(streams[0].groups[0].group, "payment");
        assert_eq!(streams[0].groups[0].pending, 0);
        assert_eq!(streams[0].groups[0].lag, Some(3));
    }
}
