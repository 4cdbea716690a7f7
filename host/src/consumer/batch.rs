//! The batch: settled entries waiting for their one atomic commit.
//!
//! Each settlement carries an entry's effects and its acknowledgement (or its dead letter and
//! acknowledgement), applied only if the entry is still pending for this consumer (see
//! [`crate::broker::Settlement`]). A failed commit applies nothing: the entries stay pending
//! and are delivered again. Entries whose settlement conflicted (a key they read changed) stay
//! pending for this consumer and are handed back, to be handled again at once.

use super::context::StreamContext;
use crate::activity::Activity;
use crate::broker::{BrokerError, Commit, Delivered, EntryId, Op, Settlement};
use crate::dlq::GiveUp;
use crate::plugin::{CallEffects, PendingPublish};

/// One settled entry.
struct Settled {
    settlement: Settlement,
    /// Its publishes, for metrics and the feed once committed.
    publishes: Vec<PendingPublish>,
    /// The entry as read, to handle it again if its settlement conflicts.
    delivered: Delivered,
}

/// Settled entries of one batch, in stream order.
#[derive(Default)]
pub(super) struct Batch {
    settled: Vec<Settled>,
}

impl Batch {
    /// Adds entry `delivered` with the effects of its successful call.
    pub fn handled(&mut self, context: &StreamContext, delivered: Delivered, effects: CallEffects) {
        let mut settlement = context.settlement(delivered.entry.id, effects.ops);
        settlement.expects = effects.expects;
        self.settled.push(Settled {
            settlement,
            publishes: effects.publishes,
            delivered,
        });
    }

    /// Adds the dead-lettering of entry `delivered` (with its original fields): its dead
    /// letter and its acknowledgement commit together, so it is never in both places or in
    /// neither.
    pub fn dead_letter(
        &mut self,
        context: &StreamContext,
        delivered: &Delivered,
        give_up: &GiveUp<'_>,
    ) {
        let stream = context.dlq_stream();
        tracing::error!(
            plugin = %context.group,
            stream = %give_up.stream,
            entry_id = %give_up.entry_id,
            event_id = give_up.event_id,
            reason = give_up.reason.as_str(),
            attempts = give_up.attempts,
            error = give_up.error,
            "event dead-lettered to {stream}"
        );
        context
            .services
            .metrics
            .record_dead_letter(&context.group, give_up.reason.as_str());
        let fields = give_up.dead_letter_fields(&delivered.entry.fields);
        self.settled.push(Settled {
            settlement: context.settlement(delivered.entry.id, vec![Op::Add { stream, fields }]),
            publishes: Vec::new(),
            delivered: delivered.clone(),
        });
    }

    /// Commits the batch; entries whose commit fails stay pending and are delivered again.
    /// Returns the entries whose settlement conflicted, in stream order, to be handled again.
    pub async fn commit(self, context: &StreamContext) -> Vec<Delivered> {
        if self.settled.is_empty() {
            return Vec::new();
        }
        let entries = self.settled.len();
        let mut settlements = Vec::with_capacity(entries);
        let mut publishes: Vec<(EntryId, Vec<PendingPublish>)> = Vec::with_capacity(entries);
        let mut delivered = Vec::with_capacity(entries);
        for settled in self.settled {
            publishes.push((settled.settlement.id, settled.publishes));
            settlements.push(settled.settlement);
            delivered.push(settled.delivered);
        }
        let commit = Commit {
            ops: context.fence().into_iter().collect(),
            settlements,
        };
        let outbox = context.keyspace.outbox();
        let wrote_outbox = outbox.as_deref().is_some_and(|outbox| {
            commit
                .settlements
                .iter()
                .flat_map(|settlement| &settlement.ops)
                .any(|op| op.key() == outbox)
        });
        if let Err(err) = context.services.streams.register_written(&commit).await {
            // The host's occasional full scan finds what this missed.
            tracing::debug!(plugin = %context.group, stream = %context.stream, error = %err, "cannot register the streams of a commit");
        }
        match context.broker().commit(&commit).await {
            Ok(report) => {
                if wrote_outbox {
                    context.services.outbox_written.notify_one();
                }
                if !report.skipped.is_empty() {
                    tracing::warn!(plugin = %context.group, stream = %context.stream, skipped = ?report.skipped, "entries were taken over by another consumer meanwhile; their effects were dropped here");
                }
                if !report.conflicted.is_empty() {
                    context
                        .services
                        .metrics
                        .record_kv_conflicts(&context.group, report.conflicted.len());
                    tracing::debug!(plugin = %context.group, stream = %context.stream, conflicted = report.conflicted.len(), "keys read by handlers changed before their commit; handling those entries again");
                }
                for (id, publishes) in publishes {
                    if report.skipped.contains(&id) || report.conflicted.contains(&id) {
                        continue;
                    }
                    for publish in publishes {
                        context
                            .services
                            .metrics
                            .record_published(&context.group, &publish.event_type);
                        let _ = context.services.activity.send(Activity::Published {
                            plugin: context.group.clone(),
                            event_type: publish.event_type,
                            event_id: publish.event_id,
                            data: publish.data,
                        });
                    }
                }
                delivered.retain(|entry| report.conflicted.contains(&entry.entry.id));
                delivered
            }
            Err(err @ BrokerError::Fenced { .. }) => {
                tracing::warn!(plugin = %context.group, stream = %context.stream, entries, error = %err, "this host lost the partition; the batch was not committed and its entries are handled by the new owner");
                Vec::new()
            }
            Err(err) => {
                context
                    .services
                    .metrics
                    .record_commit_failure(&context.group);
                tracing::error!(plugin = %context.group, stream = %context.stream, entries, error = %err, "commit failed; the batch's effects were dropped and its entries will be delivered again");
                Vec::new()
            }
        }
    }
}
