//! One consumer task per plugin × stream: read a batch, hand each event to the plugin in stream
//! order, commit the effects of every handled entry together with its `XACK`.
//!
//! # Parts
//!
//! - [`source`]: where entries come from (own pending entries first, then new ones, the next
//!   batch read ahead during a backlog);
//! - [`intake`]: entries sorted into work and entries the plugin must never see;
//! - [`lanes`]: the instances that handle a batch, by partition key, each owning its batch
//!   overlay (read-your-writes);
//! - [`dispatch`]: settles each call and commits the batch ([`batch`]);
//! - [`retry`]: the retry policy and which pending entries are claimed when;
//! - [`ordered`]: ordered retries, a failing event holding back the later ones of its key;
//! - [`report`]: metrics and the activity feed.
//!
//! # Delivery
//!
//! - On start the consumer re-reads its own pending entries (delivered before, never acked),
//!   then reads new ones.
//! - A failed call (retry error, trap, timeout) leaves the entry pending; it is claimed again
//!   after its backoff (see [`retry`]). Entries read ahead are never claimed: every entry
//!   reaches the handler once per delivery.
//! - After `max_attempts`, on a reject, for an entry that is not an event, or for one larger
//!   than `max_event_bytes`, the entry is dead-lettered: appended to the plugin's dead-letter
//!   stream and acknowledged in one atomic commit.
//! - Effects of a call are committed with its entry's acknowledgement, only if the entry is
//!   still pending for this consumer (see [`crate::broker::Settlement`]).

mod batch;
mod context;
mod dispatch;
mod intake;
mod lanes;
mod options;
mod ordered;
mod report;
mod retry;
mod rollout_call;
mod source;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, GroupStart};
use crate::keyspace::Keyspace;
use crate::plugin::HostServices;
use crate::registry::PluginSlot;
use context::StreamContext;
use dispatch::Dispatcher;
pub use options::ConsumerOptions;
pub use retry::RetryPolicy;
use source::{EntrySource, Read};

/// The partition a consumer works in, and who must hold its lease for its commits to apply.
#[derive(Debug, Clone)]
pub struct PartitionScope {
    /// The partition of the stream: where state, journal, dead letters and publishes go.
    pub keyspace: Keyspace,
    /// In a partitioned keyspace, the host holding the partition's lease: every commit is
    /// fenced with it (see [`crate::lease`]); `None` for the single layout.
    pub lease_owner: Option<String>,
}

/// A consumer of one stream for one plugin, ready to run.
pub struct Consumer {
    context: Arc<StreamContext>,
    /// Where the group starts if it must be created.
    start: GroupStart,
    /// Whether the group is known to exist.
    group_exists: bool,
}

impl Consumer {
    /// Prepares a consumer of `stream` (of the partition `scope` names) for the plugin in
    /// `slot`; [`Consumer::run`] does the work.
    pub fn new(
        slot: PluginSlot,
        scope: PartitionScope,
        stream: String,
        start: GroupStart,
        services: Arc<HostServices>,
        options: ConsumerOptions,
        cancel: CancellationToken,
    ) -> Self {
        let group = slot.load().name.clone();
        let handler_metrics = services.metrics.handler_metrics(&group, &stream);
        let redrive = stream == scope.keyspace.redrive(&group);
        Consumer {
            context: Arc::new(StreamContext {
                slot,
                stream,
                group,
                options,
                services,
                cancel,
                handler_metrics,
                redrive,
                keyspace: scope.keyspace,
                lease_owner: scope.lease_owner,
            }),
            start,
            group_exists: false,
        }
    }

    /// Makes one attempt to create the consumer group (an existing one is fine) and returns
    /// whether it exists: the host does this before it starts the task, so that its
    /// readiness means "groups exist". If it failed, [`Consumer::run`] keeps trying.
    pub async fn create_group(&mut self) -> bool {
        self.group_exists = self.context.try_create_group(self.start).await;
        self.group_exists
    }

    /// Runs until cancelled. In-flight calls finish and their batch is committed first.
    pub async fn run(self) {
        let context = self.context.clone();
        if !self.group_exists && !context.ensure_group(self.start).await {
            return;
        }
        let source = match EntrySource::open(context.clone()).await {
            Ok(source) => source,
            Err(err) => {
                tracing::error!(plugin = %context.group, stream = %context.stream, error = %err, "cannot open a reader");
                return;
            }
        };
        tracing::debug!(plugin = %context.group, stream = %context.stream, consumer = %context.consumer(), "consumer started");
        Running {
            dispatcher: Dispatcher::new(context.clone()),
            source,
            context: context.clone(),
        }
        .run()
        .await;
        tracing::debug!(plugin = %context.group, stream = %context.stream, "consumer stopped");
    }
}

/// A consumer whose group exists and whose reader is open.
struct Running {
    context: Arc<StreamContext>,
    source: EntrySource,
    dispatcher: Dispatcher,
}

impl Running {
    /// The read loop: retries when due, else the next batch (read ahead during a backlog).
    async fn run(mut self) {
        while !self.context.cancel.is_cancelled() {
            if self.source.reading_new() && self.dispatcher.retry_check_due() {
                let held = self.source.held();
                match self.dispatcher.claim_due(|id| held.contains(&id)).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        self.dispatcher.process(claimed).await;
                        continue;
                    }
                    Ok(_) => {}
                    Err(BrokerError::NoGroup { .. }) => {
                        if !self.recreate_group().await {
                            break;
                        }
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(plugin = %self.context.group, stream = %self.context.stream, error = %err, "cannot check pending entries");
                    }
                }
            }
            let block = self
                .context
                .options
                .block
                .min(self.dispatcher.until_retry_check())
                .max(Duration::from_millis(1));
            match self.source.next(block).await {
                Read::Stopped => break,
                Read::Nothing => {}
                Read::GroupLost => {
                    if !self.recreate_group().await {
                        break;
                    }
                }
                Read::Batch(entries) => {
                    if self.source.backlog_behind(&entries) {
                        tokio::join!(self.source.read_ahead(), self.dispatcher.process(entries));
                    } else {
                        self.dispatcher.process(entries).await;
                    }
                }
            }
        }
    }

    /// Creates the group again after it vanished; returns false when cancelled meanwhile.
    async fn recreate_group(&mut self) -> bool {
        tracing::warn!(plugin = %self.context.group, stream = %self.context.stream, "consumer group vanished (FLUSHALL, restart without persistence, or XGROUP DESTROY?); recreating it from the start of the stream");
        self.source.restart();
        self.context.ensure_group(GroupStart::Beginning).await
    }
}
