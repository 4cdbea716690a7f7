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
//! that a saga stays with its key. Today every keyspace has one partition (P = 1): the key is
//! carried and shown, and partitioned keyspaces build on it. A keyspace records its partition
//! count under [`Keyspace::partitions_key`]; a host refuses a keyspace whose count it does not
//! serve, rather than consuming half of it.

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

/// The keyspace records a partition count this host does not serve.
#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    /// Another partition count is recorded.
    #[error(
        "this keyspace has {found} partitions (recorded in {key}), and this evhost serves only a keyspace of 1 partition: run the evhost version that partitioned it, or use another Redis database"
    )]
    Mismatch {
        /// The count recorded.
        found: String,
        /// The key it is recorded in.
        key: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Checks that the keyspace is one this host serves: no partition count recorded, or 1.
///
/// # Errors
///
/// [`PartitionsError::Mismatch`] naming the count and the key.
pub async fn check_served(broker: &dyn Broker, keyspace: &Keyspace) -> Result<(), PartitionsError> {
    let key = keyspace.partitions_key();
    match broker.get(key).await? {
        None => Ok(()),
        Some(value) if value.as_slice() == b"1" => Ok(()),
        Some(value) => Err(PartitionsError::Mismatch {
            found: String::from_utf8_lossy(&value).into_owned(),
            key: key.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{Commit, Op};

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
    async fn a_keyspace_of_another_partition_count_is_refused() {
        let broker = MemoryBroker::new();
        let keyspace = Keyspace::single();
        check_served(&broker, &keyspace)
            .await
            .expect("nothing recorded");
        let record = |value: &[u8]| Commit {
            ops: vec![Op::Set {
                key: keyspace.partitions_key().to_string(),
                value: value.to_vec(),
            }],
            settlements: Vec::new(),
        };
        broker.commit(&record(b"1")).await.expect("commit");
        check_served(&broker, &keyspace).await.expect("1 is served");
        broker.commit(&record(b"8")).await.expect("commit");
        let err = check_served(&broker, &keyspace)
            .await
            .expect_err("8 is not");
        assert!(err.to_string().contains("8 partitions"), "{err}");
    }
}
