//! What every part of one consumer shares: which plugin reads which stream as whom, and the
//! host's services.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::options::ConsumerOptions;
use crate::broker::{Broker, EntryId, GroupStart, Op, Settlement};
use crate::keyspace::Keyspace;
use crate::metrics::HandlerMetrics;
use crate::plugin::HostServices;
use crate::registry::PluginSlot;

/// The identity and services of one consumer (plugin × stream), shared by its parts.
pub(super) struct StreamContext {
    /// The plugin's current version.
    pub slot: PluginSlot,
    /// The stream read.
    pub stream: String,
    /// The consumer group (= plugin name).
    pub group: String,
    /// Tunables, with the consumer's name in the group.
    pub options: ConsumerOptions,
    /// Broker, metrics, activity feed.
    pub services: Arc<HostServices>,
    /// Stops the consumer.
    pub cancel: CancellationToken,
    /// Cached handles of the per-event metrics.
    pub handler_metrics: HandlerMetrics,
    /// Whether the stream is the plugin's redrive stream (entries carry their origin).
    pub redrive: bool,
    /// The partition of the stream: where the plugin's state, journal, dead letters and
    /// publishes go.
    pub keyspace: Keyspace,
    /// Who must hold the partition's lease for a commit to apply (partitioned keyspaces).
    pub lease_owner: Option<String>,
}

impl StreamContext {
    pub fn broker(&self) -> &dyn Broker {
        self.services.broker.as_ref()
    }

    /// The consumer's name in its group.
    pub fn consumer(&self) -> &str {
        &self.options.consumer
    }

    /// Sleeps for `duration` unless cancelled first; returns false when cancelled.
    pub async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    /// One attempt to create the group (an existing group is fine); returns whether it
    /// exists now. The one place a consumer group is created.
    pub async fn try_create_group(&self, start: GroupStart) -> bool {
        match self
            .broker()
            .create_group(&self.stream, &self.group, start)
            .await
        {
            Ok(created) => {
                if created {
                    tracing::info!(plugin = %self.group, stream = %self.stream, ?start, "created consumer group");
                }
                true
            }
            Err(err) => {
                tracing::warn!(plugin = %self.group, stream = %self.stream, error = %err, "cannot create consumer group; retrying");
                false
            }
        }
    }

    /// Creates the group, retrying with backoff until it exists or the consumer is cancelled
    /// (returns false then).
    pub async fn ensure_group(&self, start: GroupStart) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.try_create_group(start).await {
                return true;
            }
            if !self.pause(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The settlement of entry `id` with its effects `ops`, held by this consumer.
    pub fn settlement(&self, id: EntryId, ops: Vec<Op>) -> Settlement {
        Settlement {
            stream: self.stream.clone(),
            group: self.group.clone(),
            consumer: self.options.consumer.clone(),
            id,
            ops,
            expects: Vec::new(),
        }
    }

    /// The fence of this consumer's commits: its partition's lease held by its host.
    pub fn fence(&self) -> Option<Op> {
        self.lease_owner.as_ref().map(|owner| Op::Fence {
            key: self.keyspace.lease(),
            owner: owner.clone(),
        })
    }

    /// The plugin's dead-letter stream.
    pub fn dlq_stream(&self) -> String {
        self.keyspace.dead_letters(&self.group)
    }
}
