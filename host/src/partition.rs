//! Partition keys, and the partition function every producer can compute.
//!
//! An event's partition key is its CloudEvents `partitionkey` extension attribute, or its id
//! when it has none (events without a key are spread by id). Its partition among P is
//! `fnv1a32(key) % P`, where `fnv1a32` is the 32-bit FNV-1a hash of the key's UTF-8 bytes
//! (offset basis `0x811c9dc5`, prime `0x01000193`), so that a producer in any language computes
//! the same, e.g. in Python:
//!
//! ```text
//! def partition(key: str, partitions: int) -> int:
//!     h = 0x811C9DC5
//!     for byte in key.encode():
//!         h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
//!     return h % partitions
//! ```
//!
//! A plugin's publishes carry the key of the event being handled unless they set their own, so
//! that a saga stays with its key. A keyspace of more than one partition records its count
//! under [`Keyspace::partitions_key`] when first used ([`resolve`]); a host or command asking
//! for another count is refused, rather than consuming part of the keyspace.

use std::num::NonZeroU32;

use crate::broker::{Broker, BrokerError};
use crate::event::{Event, PARTITION_KEY};
use crate::keyspace::Keyspace;

/// The 32-bit FNV-1a hash of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of `key` among `partitions`.
pub fn partition_of(key: &str, partitions: NonZeroU32) -> u32 {
    fnv1a32(key.as_bytes()) % partitions.get()
}

/// The partition key of `event`: its `partitionkey` extension, else its id.
pub fn key_of(event: &Event) -> &str {
    event.extension(PARTITION_KEY).unwrap_or(&event.id)
}

/// The partition count asked for is not the keyspace's.
#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    /// Another partition count is recorded.
    #[error(
        "this keyspace has {found} partition(s) (recorded in {key}), not the {requested} asked for: the count is fixed when a keyspace is first used; drop --partitions to use {found}, or use another Redis database for {requested}"
    )]
    Mismatch {
        /// The count recorded.
        found: u32,
        /// The count asked for.
        requested: u32,
        /// The key it is recorded in.
        key: String,
    },
    /// A Redis Cluster with no partition count: the single layout's keys of one commit lie in
    /// several slots, which a cluster refuses.
    #[error(
        "this Redis is a Redis Cluster, and a keyspace without partitions cannot run on it (one commit touches keys of several slots); fix a partition count first, e.g. `evhost init --partitions 16 --redis <URL>` (or start the first host with `--partitions 16`): a few partitions per primary, fixed for the keyspace's life"
    )]
    ClusterNeedsPartitions,
    /// What is recorded is not a partition count.
    #[error("{key} holds {found:?}, which is not a partition count (a whole number from 1)")]
    Unreadable {
        /// What the key holds.
        found: String,
        /// The key.
        key: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The keyspace's partition count as recorded; 1 when none is.
///
/// # Errors
///
/// [`PartitionsError::Unreadable`] when the record is not a count;
/// [`PartitionsError::ClusterNeedsPartitions`] when none is on a Redis Cluster.
pub async fn recorded(broker: &dyn Broker) -> Result<Keyspace, PartitionsError> {
    let key = Keyspace::single().partitions_key();
    let keyspace = match broker.get(key).await? {
        None => Keyspace::single(),
        Some(value) => {
            let text = String::from_utf8_lossy(&value);
            text.trim()
                .parse::<NonZeroU32>()
                .map(Keyspace::partitioned)
                .map_err(|_| PartitionsError::Unreadable {
                    found: text.into_owned(),
                    key: key.to_string(),
                })?
        }
    };
    if broker.is_cluster() && !keyspace.is_partitioned() {
        return Err(PartitionsError::ClusterNeedsPartitions);
    }
    Ok(keyspace)
}

/// The keyspace a host or command asking for `requested` partitions (`None`: whatever is
/// recorded) works on. A count above 1 is recorded when none is yet (the first host to start
/// fixes it); 1 is never recorded, so that a keyspace used without partitions keeps exactly
/// the keys it always had.
///
/// # Errors
///
/// [`PartitionsError::Mismatch`] when another count is recorded.
pub async fn resolve(
    broker: &dyn Broker,
    requested: Option<NonZeroU32>,
) -> Result<Keyspace, PartitionsError> {
    let key = Keyspace::single().partitions_key();
    if let Some(requested) = requested.filter(|count| count.get() > 1) {
        // Whichever host comes first records its count; the others then compare.
        broker
            .set_if_absent(key, requested.to_string().as_bytes())
            .await?;
    }
    let keyspace = recorded(broker).await?;
    match requested {
        Some(requested) if requested.get() != keyspace.partitions() => {
            Err(PartitionsError::Mismatch {
                found: keyspace.partitions(),
                requested: requested.get(),
                key: key.to_string(),
            })
        }
        _ => Ok(keyspace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;

    /// The published FNV-1a 32-bit test vectors, and partitions of a few keys (the same table
    /// is in the README for producers in other languages).
    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        let eight = NonZeroU32::new(8).expect("8");
        assert_eq!(partition_of("foobar", eight), 0xbf9c_f968 % 8);
        assert_eq!(partition_of("anything", NonZeroU32::MIN), 0);
    }

    #[test]
    fn the_key_is_the_extension_or_the_id() {
        let mut event = Event::new("A", "test", b"{}".to_vec());
        assert_eq!(key_of(&event), event.id);
        event.set_extension(PARTITION_KEY, "auction-1");
        assert_eq!(key_of(&event), "auction-1");
    }

    #[tokio::test]
    async fn the_first_count_asked_for_is_fixed_and_others_are_refused() {
        let broker = MemoryBroker::new();
        let eight = NonZeroU32::new(8).expect("8");
        assert_eq!(
            resolve(&broker, None).await.expect("none"),
            Keyspace::single()
        );
        assert_eq!(
            resolve(&broker, Some(NonZeroU32::MIN)).await.expect("1"),
            Keyspace::single()
        );
        assert_eq!(broker.get("evhost:partitions").await.expect("get"), None);
        let keyspace = resolve(&broker, Some(eight)).await.expect("8 first");
        assert_eq!(keyspace.partitions(), 8);
        assert_eq!(
            resolve(&broker, None).await.expect("recorded").partitions(),
            8
        );
        assert_eq!(recorded(&broker).await.expect("recorded"), keyspace);
        for other in [1, 4] {
            let err = resolve(&broker, NonZeroU32::new(other))
                .await
                .expect_err("another count");
            let message = err.to_string();
            assert!(message.contains("has 8 partition(s)"), "{message}");
            assert!(
                message.contains(&format!("not the {other} asked for")),
                "{message}"
            );
        }
        let garbage = MemoryBroker::new();
        garbage
            .set_if_absent("evhost:partitions", b"many")
            .await
            .expect("set");
        let err = recorded(&garbage).await.expect_err("unreadable");
        assert!(err.to_string().contains("\"many\""), "{err}");
    }
}
