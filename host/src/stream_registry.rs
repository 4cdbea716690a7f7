//! The registry of a partitioned keyspace's streams (`evhost:streams`): where hosts find the
//! streams to consume without walking the keyspace.
//!
//! Walking it (`SCAN … TYPE stream`) costs time that grows with every key, key-value entries
//! included, and a host would do it every discovery pass. Instead, whatever evhost writes to a
//! stream of a partition registers the stream first: a host's commits (publishes within the
//! partition), the relay's moves, `evhost publish`, `dlq retry`. A host reads the registry
//! each pass and walks the keyspace only now and then ([`FULL_SCAN_INTERVAL`]), for producers
//! that write to partition streams themselves without registering them.
//!
//! The single layout has no registry: its producers write `events:<type>` themselves.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::broker::{Broker, BrokerError, Commit, Op};
use crate::keyspace::Keyspace;

/// How often a host of a partitioned keyspace walks the keyspace for streams nobody
/// registered.
pub const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// A host's view of the registry: registers what it writes to, once per stream.
pub struct StreamRegistry {
    broker: Arc<dyn Broker>,
    layout: Keyspace,
    /// Streams this host looked at: registered, or not ones that hosts consume.
    seen: Mutex<HashSet<String>>,
}

impl StreamRegistry {
    /// The registry of `layout` on `broker`.
    pub fn new(broker: Arc<dyn Broker>, layout: Keyspace) -> Self {
        StreamRegistry {
            broker,
            layout,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Registers the event and redrive streams among `streams` that this host has not
    /// registered yet. Nothing to do in the single layout.
    ///
    /// # Errors
    ///
    /// When the broker fails; the write that follows fails too, most likely.
    pub async fn register<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), BrokerError> {
        if !self.layout.is_partitioned() {
            return Ok(());
        }
        let mut new: Vec<String> = {
            let seen = self.lock();
            streams
                .into_iter()
                .filter(|stream| !seen.contains(*stream))
                .map(str::to_string)
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        new.sort();
        new.dedup();
        register(self.broker.as_ref(), self.layout, &new).await?;
        self.lock().extend(new);
        Ok(())
    }

    /// Registers the streams `commit` appends to (see [`StreamRegistry::register`]).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    pub async fn register_written(&self, commit: &Commit) -> Result<(), BrokerError> {
        if !self.layout.is_partitioned() {
            return Ok(());
        }
        let appended = commit
            .ops
            .iter()
            .chain(
                commit
                    .settlements
                    .iter()
                    .flat_map(|settlement| &settlement.ops),
            )
            .filter_map(|op| match op {
                Op::Add { stream, .. } => Some(stream.as_str()),
                _ => None,
            });
        self.register(appended).await
    }

    /// The registered streams, sorted.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    pub async fn registered(&self) -> Result<Vec<String>, BrokerError> {
        self.broker.members(self.layout.stream_registry()).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Registers those of `streams` that hosts consume (event and redrive streams of a partition)
/// in the registry of `layout`: what a one-off writer (a CLI command) does before it writes.
/// Nothing to do in the single layout.
///
/// # Errors
///
/// When the broker fails.
pub async fn register(
    broker: &dyn Broker,
    layout: Keyspace,
    streams: &[String],
) -> Result<(), BrokerError> {
    if !layout.is_partitioned() {
        return Ok(());
    }
    let consumed: Vec<String> = streams
        .iter()
        .filter(|stream| {
            layout.locate_event_stream(stream).is_some()
                || layout
                    .each_partition()
                    .any(|keyspace| keyspace.redrive_plugin(stream).is_some())
        })
        .cloned()
        .collect();
    if consumed.is_empty() {
        return Ok(());
    }
    broker
        .add_members(layout.stream_registry(), &consumed)
        .await
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::broker::memory::MemoryBroker;

    #[tokio::test]
    async fn registers_event_and_redrive_streams_once_and_nothing_else() {
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
        let layout = Keyspace::partitioned(NonZeroU32::new(4).expect("4"));
        let registry = StreamRegistry::new(broker.clone(), layout);
        let events = layout.at(2).event_stream("Paid");
        let redrive = layout.at(3).redrive("payment");
        let journal = layout.at(2).journal("payment");
        registry
            .register([events.as_str(), journal.as_str(), events.as_str()])
            .await
            .expect("register");
        registry
            .register([redrive.as_str()])
            .await
            .expect("register");
        assert_eq!(
            registry.registered().await.expect("members"),
            [events.clone(), redrive.clone()]
        );

        let single = StreamRegistry::new(broker.clone(), Keyspace::single());
        single.register(["events:Paid"]).await.expect("register");
        assert_eq!(
            registry.registered().await.expect("members").len(),
            2,
            "the single layout registers nothing"
        );
    }
}
