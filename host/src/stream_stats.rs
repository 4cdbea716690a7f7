//! A snapshot of the event streams and their consumer groups: `evhost stats`, `/api/streams`
//! and the `evhost_group_lag` / `evhost_group_pending` gauges.

use std::time::Duration;

use serde::Serialize;

use crate::broker::{Broker, BrokerError, EntryId};
use crate::keyspace::Keyspace;
/// How long one snapshot may take before it is given up (a Redis outage must not hang a
/// scrape).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// One stream and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StreamStats {
    /// Stream key, e.g. `events:AuctionEnded`.
    pub stream: String,
    /// Number of entries.
    pub length: u64,
    /// Id of the oldest entry.
    pub first_entry: Option<String>,
    /// When the oldest entry was added (RFC 3339).
    pub first_time: Option<String>,
    /// Id of the newest entry.
    pub last_entry: Option<String>,
    /// When the newest entry was added (RFC 3339).
    pub last_time: Option<String>,
    /// Its consumer groups.
    pub groups: Vec<GroupStats>,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GroupStats {
    /// Group name (evhost names groups after plugins).
    pub group: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Delivered but not yet acknowledged entries.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None`: Redis cannot tell, before Redis 7).
    pub lag: Option<u64>,
    /// Id of the last entry delivered to the group.
    pub last_delivered: String,
    /// Id of the oldest pending entry.
    pub oldest_pending: Option<String>,
    /// How long the oldest pending entry has waited since its last delivery, in milliseconds.
    pub oldest_pending_idle_ms: Option<u64>,
}

/// When an entry was added, from its id: RFC 3339 with milliseconds.
pub fn entry_time(id: EntryId) -> Option<String> {
    let ms = i64::try_from(id.ms).ok()?;
    let time = jiff::Timestamp::from_millisecond(ms).ok()?;
    Some(format!("{time:.3}"))
}

/// Length, first and last entry and groups of one stream.
///
/// # Errors
///
/// When the broker fails.
pub async fn inspect(broker: &dyn Broker, stream: &str) -> Result<StreamStats, BrokerError> {
    let length = broker.len(stream).await?;
    let first = broker
        .range(stream, EntryId::ZERO, EntryId::MAX, 1)
        .await?
        .first()
        .map(|entry| entry.id);
    let last = broker
        .rev_range(stream, EntryId::MAX, EntryId::ZERO, 1)
        .await?
        .first()
        .map(|entry| entry.id);
    let mut groups = Vec::new();
    for info in broker.groups(stream).await? {
        let oldest = if info.pending > 0 {
            broker
                .pending(stream, &info.name, Duration::ZERO, 1)
                .await?
                .into_iter()
                .next()
        } else {
            None
        };
        groups.push(GroupStats {
            group: info.name,
            consumers: info.consumers,
            pending: info.pending,
            lag: info.lag,
            last_delivered: info.last_delivered.to_string(),
            oldest_pending: oldest.as_ref().map(|entry| entry.id.to_string()),
            oldest_pending_idle_ms: oldest
                .map(|entry| u64::try_from(entry.idle.as_millis()).unwrap_or(u64::MAX)),
        });
    }
    Ok(StreamStats {
        stream: stream.to_string(),
        length,
        first_entry: first.map(|id| id.to_string()),
        first_time: first.and_then(entry_time),
        last_entry: last.map(|id| id.to_string()),
        last_time: last.and_then(entry_time),
        groups,
    })
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
    let layout = crate::partition::recorded(broker)
        .await
        .map_err(|err| match err {
            crate::partition::PartitionsError::Broker(err) => err,
            other => BrokerError::Protocol(other.to_string()),
        })?;
    let single = Keyspace::single();
    let mut names = broker.streams(&single.event_stream_prefix()).await?;
    names.extend(broker.streams(&single.redrive_prefix()).await?);
    if layout.is_partitioned() {
        names.extend(
            broker
                .streams(layout.streams_prefix())
                .await?
                .into_iter()
                .filter(|stream| {
                    layout.locate_event_stream(stream).is_some()
                        || layout
                            .each_partition()
                            .any(|keyspace| keyspace.redrive_plugin(stream).is_some())
                }),
        );
        names.sort();
    }
    let mut streams = Vec::with_capacity(names.len());
    for stream in names {
        streams.push(inspect(broker, &stream).await?);
    }
    Ok(streams)
}

/// The name of the sum of a stream over every partition: `evhost:{p3}:events:T` is
/// `evhost:{p*}:events:T`; other names (plain and ingress streams) are kept.
pub fn unpartitioned_name(stream: &str) -> String {
    match stream
        .strip_prefix("evhost:{p")
        .and_then(|rest| rest.split_once("}:"))
        .filter(|(number, _)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
    {
        Some((_, rest)) => format!("evhost:{{p*}}:{rest}"),
        None => stream.to_string(),
    }
}

/// The streams of each event type (and the redrive streams of each plugin) of every
/// partition, summed into one: lengths, pending entries and lag added up, the oldest first and
/// newest last entry, the largest consumer count (a host has one consumer per partition).
pub fn sum_partitions(streams: Vec<StreamStats>) -> Vec<StreamStats> {
    let mut summed: std::collections::BTreeMap<String, StreamStats> =
        std::collections::BTreeMap::new();
    let id = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| text.parse::<EntryId>().ok())
    };
    for stream in streams {
        let name = unpartitioned_name(&stream.stream);
        let Some(total) = summed.get_mut(&name) else {
            summed.insert(
                name.clone(),
                StreamStats {
                    stream: name,
                    ..stream
                },
            );
            continue;
        };
        total.length += stream.length;
        let first_is_older = stream.first_entry.is_some()
            && (total.first_entry.is_none() || id(&stream.first_entry) < id(&total.first_entry));
        if first_is_older {
            total.first_entry = stream.first_entry;
            total.first_time = stream.first_time;
        }
        if id(&stream.last_entry) > id(&total.last_entry) {
            total.last_entry = stream.last_entry;
            total.last_time = stream.last_time;
        }
        for group in stream.groups {
            let Some(sum) = total.groups.iter_mut().find(|sum| sum.group == group.group) else {
                total.groups.push(group);
                continue;
            };
            sum.consumers = sum.consumers.max(group.consumers);
            sum.pending += group.pending;
            sum.lag = sum.lag.zip(group.lag).map(|(a, b)| a + b);
            let delivered = |text: &str| text.parse::<EntryId>().ok();
            if delivered(&group.last_delivered) > delivered(&sum.last_delivered) {
                sum.last_delivered = group.last_delivered;
            }
            let older = match (id(&group.oldest_pending), id(&sum.oldest_pending)) {
                (Some(candidate), Some(current)) => candidate < current,
                (Some(_), None) => true,
                _ => false,
            };
            if older {
                sum.oldest_pending = group.oldest_pending;
                sum.oldest_pending_idle_ms = group.oldest_pending_idle_ms;
            }
        }
    }
    summed.into_values().collect()
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
        assert_eq!(streams[0].groups[0].oldest_pending, None);
        assert!(streams[0].first_entry < streams[0].last_entry);
        assert!(streams[0].first_time.is_some());
    }

    /// The streams of a partitioned keyspace are in the snapshot, and summed per type they
    /// add up.
    #[tokio::test]
    async fn partitions_are_listed_and_summed_per_type() {
        let broker = MemoryBroker::new();
        let layout = crate::partition::resolve(&broker, std::num::NonZeroU32::new(4))
            .await
            .expect("4 partitions");
        let fields: Fields = vec![("data".into(), b"{}".to_vec())];
        for partition in [1, 3, 3] {
            let stream = layout.at(partition).event_stream("A");
            broker.add(&stream, &fields).await.expect("add");
            broker
                .create_group(&stream, "g", GroupStart::Beginning)
                .await
                .expect("group");
        }
        broker
            .add(&layout.at(2).redrive("g"), &fields)
            .await
            .expect("add");
        let streams = snapshot(&broker).await.expect("snapshot");
        let names: Vec<&str> = streams.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(
            names,
            [
                "evhost:{p1}:events:A",
                "evhost:{p2}:redrive:g",
                "evhost:{p3}:events:A"
            ]
        );
        let summed = sum_partitions(streams);
        let names: Vec<&str> = summed.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["evhost:{p*}:events:A", "evhost:{p*}:redrive:g"]);
        assert_eq!(summed[0].length, 3);
        assert_eq!(summed[0].groups.len(), 1);
        assert_eq!(summed[0].groups[0].lag, Some(3));
        assert!(summed[0].first_entry <= summed[0].last_entry);
        assert_eq!(
            unpartitioned_name("events:A"),
            "events:A",
            "ingress kept apart"
        );
        assert_eq!(
            unpartitioned_name("evhost:{px}:events:A"),
            "evhost:{px}:events:A"
        );
    }
}
