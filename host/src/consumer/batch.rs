//! The batch: settled entries waiting for their one atomic commit.
//!
//! Each settlement carries an entry's effects and its acknowledgement (or its dead letter and
//! acknowledgement), applied only if the entry is still pending for this consumer (see
//! [`crate::broker::Settlement`]). A failed commit applies nothing: the entries stay pending
//! and are delivered again.

use super::context::StreamContext;
use crate::activity::Activity;
use crate::broker::{Commit, EntryId, Op, Settlement};
use crate::dlq::GiveUp;
use crate::plugin::PendingPublish;

/// One settled entry.
struct Settled {
    settlement: Settlement,
    /// Its publishes, for metrics and the feed once committed.
    publishes: Vec<PendingPublish>,
}

/// Settled entries of one batch, in stream order.
#[derive(Default)]
pub(super) struct Batch {
    settled: Vec<Settled>,
}

impl Batch {
    /// Adds entry `id` with the effects of its successful call.
    pub fn handled(
        &mut self,
        context: &StreamContext,
        id: EntryId,
        ops: Vec<Op>,
        publishes: Vec<PendingPublish>,
    ) {
        self.settled.push(Settled {
            settlement: context.settlement(id, ops),
            publishes,
        });
    }

    /// Adds the dead-lettering of entry `delivered` (with its original fields): its dead
    /// letter and its acknowledgement commit together, so it is never in both places or in
    /// neither.
    pub fn dead_letter(
        &mut self,
        context: &StreamContext,
        delivered: &crate::broker::Delivered,
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
        });
    }

    /// Commits the batch; entries whose commit fails stay pending and are delivered again.
    pub async fn commit(self, context: &StreamContext) {
        if self.settled.is_empty() {
            return;
        }
        let entries = self.settled.len();
        let (settlements, publishes): (Vec<Settlement>, Vec<(EntryId, Vec<PendingPublish>)>) = self
            .settled
            .into_iter()
            .map(|settled| {
                let id = settled.settlement.id;
                (settled.settlement, (id, settled.publishes))
            })
            .unzip();
        let commit = Commit {
            ops: Vec::new(),
            settlements,
        };
        match context.broker().commit(&commit).await {
            Ok(report) => {
                if !report.skipped.is_empty() {
                    tracing::warn!(plugin = %context.group, stream = %context.stream, skipped = ?report.skipped, "entries were taken over by another consumer meanwhile; their effects were dropped here");
                }
                for (id, publishes) in publishes {
                    if report.skipped.contains(&id) {
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
            }
            Err(err) => {
                context
                    .services
                    .metrics
                    .record_commit_failure(&context.group);
                tracing::error!(plugin = %context.group, stream = %context.stream, entries, error = %err, "commit failed; the batch's effects were dropped and its entries will be delivered again");
            }
        }
    }
}
