//! Dispatch: hands a batch's entries to the lanes, settles each call (effects and ack, dead
//! letter, or a retry that leaves the entry pending), and commits the batch once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::batch::Batch;
use super::context::StreamContext;
use super::intake::{Intake, Unhandled};
use super::lanes::{Call, Lanes};
use super::ordered::OrderedRetries;
use super::report::Report;
use super::retry::RetrySchedule;
use crate::activity::OutcomeKind;
use crate::broker::{BrokerError, Delivered, EntryId};
use crate::dlq::{DeadLetterReason, GiveUp};
use crate::plugin::{CallError, Outcome};

/// Handles batches for one consumer: owns its lanes, its retry schedule and the batch being
/// settled.
pub(super) struct Dispatcher {
    context: Arc<StreamContext>,
    lanes: Lanes,
    retry: RetrySchedule,
    batch: Batch,
    /// Entries whose commit conflicted (a key their handler read changed meanwhile): still
    /// pending for this consumer, handled again before the next read.
    conflicted: Vec<Delivered>,
    /// Blocked keys and the entries they hold back (`[retry] ordered`).
    ordered: OrderedRetries,
    /// Entries held back until now, released by the settlement of their key's blocking entry:
    /// handled before the next read.
    released: Vec<Delivered>,
}

/// The longest pause before entries that keep conflicting are handled again.
const MAX_CONFLICT_PAUSE: Duration = Duration::from_millis(50);

impl Dispatcher {
    pub fn new(context: Arc<StreamContext>) -> Self {
        Dispatcher {
            lanes: Lanes::new(context.clone()),
            retry: RetrySchedule::new(context.clone()),
            batch: Batch::default(),
            conflicted: Vec::new(),
            ordered: OrderedRetries::default(),
            released: Vec::new(),
            context,
        }
    }

    /// Whether a check of the pending entries for retries is due now.
    pub fn retry_check_due(&mut self) -> bool {
        self.retry.check_due()
    }

    /// Time left until the next retry check.
    pub fn until_retry_check(&self) -> Duration {
        self.retry.until_next_check()
    }

    /// Claims the entries due for a retry; `holds` marks those read but not handled yet.
    pub async fn claim_due(
        &mut self,
        holds: impl Fn(EntryId) -> bool,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let ordered = &self.ordered;
        self.retry
            .claim_due(|id| holds(id) || ordered.holds(id))
            .await
    }

    /// Handles the entries and commits them; entries that conflicted are handled again, with
    /// fresh reads, until none does (or the consumer stops: they stay pending). They keep
    /// their delivery count: a conflict is not a failed attempt.
    ///
    /// Entries handled again all go to one lane, in stream order: lanes that race on one key
    /// would conflict with each other again, while one lane reads its own uncommitted writes
    /// (a storm on a hot key then costs one extra round per batch, not one per entry).
    pub async fn process(&mut self, entries: Vec<Delivered>) {
        let mut entries = entries;
        let mut rounds: u32 = 0;
        loop {
            self.handle(entries, rounds > 0).await;
            entries = std::mem::take(&mut self.conflicted);
            if !self.released.is_empty() {
                entries.append(&mut self.released);
                entries.sort_by_key(|delivered| delivered.entry.id);
            }
            if entries.is_empty() || self.context.cancel.is_cancelled() {
                return;
            }
            rounds = rounds.saturating_add(1);
            if rounds > 1 {
                // Under contention, back off a little so that the others' commits land.
                let pause = Duration::from_millis(1u64 << rounds.min(6)).min(MAX_CONFLICT_PAUSE);
                let jitter = rand::random_range(0..=pause.as_micros() as u64);
                tokio::time::sleep(Duration::from_micros(jitter)).await;
            }
        }
    }

    /// Handles the entries once and commits them, all in one lane when `one_lane`. Each round
    /// ends when every lane is done or stopped (a failed call discards its instance; a swap
    /// needs new ones); what a stopped lane did not reach comes next round.
    async fn handle(&mut self, entries: Vec<Delivered>, one_lane: bool) {
        let context = self.context.clone();
        let settings = context.slot.load().settings.clone();
        let intake = Intake::sort(entries, &context.stream, context.redrive, &settings);
        for unhandled in intake.unhandled {
            self.give_up_unhandled(unhandled);
        }
        let mut work = intake.work;
        let ordered = settings.ordered_retries;
        if ordered {
            // One key, one lane: its events run one after the other.
            for item in &mut work {
                item.key = u64::from(crate::partition::fnv1a32(
                    crate::partition::key_of(&item.event).as_bytes(),
                ));
            }
            work = self.ordered.admit(work);
        }
        if one_lane {
            for item in &mut work {
                item.key = 0;
            }
        }
        while !work.is_empty() && !context.cancel.is_cancelled() {
            if let Some(stale) = self.lanes.stale_version() {
                let live = context.slot.load_full();
                if Arc::ptr_eq(&stale, &live) {
                    tracing::debug!(plugin = %context.group, stream = %context.stream, "the plugin's rollout changed; switching");
                } else {
                    tracing::info!(
                        plugin = %context.group,
                        stream = %context.stream,
                        from = %stale.version,
                        to = %live.version,
                        "switching to the new plugin version"
                    );
                }
                self.commit().await;
                self.lanes.reset();
            }
            if let Err(err) = self.lanes.prepare(&work).await {
                // Not started: the entries stay pending and are retried after their backoff.
                tracing::error!(plugin = %context.group, stream = %context.stream, entries = work.len(), error = %err, "entries left pending");
                break;
            }
            let round = self.lanes.run_round(work).await;
            for call in round.calls {
                self.settle(call, ordered);
            }
            work = if ordered {
                self.ordered.admit(round.rest)
            } else {
                round.rest
            };
        }
        self.commit().await;
    }

    /// Commits the batch so far; the lanes' overlays then start empty.
    async fn commit(&mut self) {
        let conflicted = std::mem::take(&mut self.batch).commit(&self.context).await;
        self.conflicted.extend(conflicted);
        self.lanes.end_batch();
    }

    /// Reports and dead-letters an entry the plugin never sees.
    fn give_up_unhandled(&mut self, unhandled: Unhandled) {
        let context = &*self.context;
        let version = context.slot.load_full();
        let Unhandled {
            attempt,
            event_id,
            reason,
            error,
        } = unhandled;
        // An entry out of attempts was reported when its last call failed.
        let outcome = match reason {
            DeadLetterReason::Oversized => Some(OutcomeKind::Oversized),
            DeadLetterReason::Malformed => Some(OutcomeKind::Malformed),
            DeadLetterReason::MaxAttempts | DeadLetterReason::Rejected => None,
        };
        if let Some(outcome) = outcome {
            Report {
                entry_id: attempt.origin_entry.to_string(),
                event_id: "",
                outcome,
                detail: Some(error.clone()),
                started_at: SystemTime::now(),
                duration: Duration::ZERO,
                version: &version,
            }
            .send(context);
        }
        let give_up = GiveUp {
            plugin: &context.group,
            plugin_version: &version.version,
            stream: &attempt.origin_stream,
            entry_id: attempt.origin_entry,
            event_id: &event_id,
            reason,
            error: &error,
            attempts: attempt.number(),
        };
        self.batch
            .dead_letter(context, &attempt.delivered, &give_up);
        let released = self.ordered.settled(attempt.id());
        self.released.extend(released);
    }

    /// Turns a call's result into its settlement (effects and ack, dead letter, or nothing: a
    /// retry leaves the entry pending), and reports it.
    fn settle(&mut self, call: Call, ordered: bool) {
        let context = self.context.clone();
        let Call {
            attempt,
            event_id,
            partition_key,
            result,
            started_at,
            elapsed,
            handled_by,
        } = call;
        let id = attempt.id();
        let number = attempt.number();
        let origin_entry = attempt.origin_entry;
        let entry_id = origin_entry.to_string();
        let stream = attempt.origin_stream.as_str();
        let delivered = &attempt.delivered;
        let last_attempt = handled_by.settings.retry.is_last_attempt(number);
        let give_up = |batch: &mut Batch, reason: DeadLetterReason, error: &str| {
            let give_up = GiveUp {
                plugin: &context.group,
                plugin_version: &handled_by.version,
                stream,
                entry_id: origin_entry,
                event_id: &event_id,
                reason,
                error,
                attempts: number,
            };
            batch.dead_letter(&context, delivered, &give_up);
        };
        // Whether the entry stays pending for a retry (else it is settled: handled, rejected
        // or dead-lettered).
        let retried = match &result {
            Ok(Outcome::Retry { .. }) | Err(_) => !last_attempt,
            Ok(_) => false,
        };
        if ordered {
            if retried {
                let key = partition_key.as_deref().unwrap_or(&event_id);
                if self.ordered.failed(key, id) {
                    tracing::info!(plugin = %context.group, stream, entry_id, key, "ordered retries: later events of this key wait until this one succeeds or is dead-lettered");
                }
            } else {
                let released = self.ordered.settled(id);
                self.released.extend(released);
            }
        }
        let (outcome, detail) = match result {
            Ok(Outcome::Ok(effects)) => {
                self.batch.handled(&context, attempt.delivered, effects);
                (OutcomeKind::Ok, None)
            }
            Ok(Outcome::Retry { reason, delay }) => {
                if last_attempt {
                    give_up(&mut self.batch, DeadLetterReason::MaxAttempts, &reason);
                } else {
                    context.services.metrics.record_retry(&context.group);
                    if let Some(delay) = delay {
                        self.retry.delay(id, delay);
                    }
                    tracing::warn!(plugin = %context.group, stream, entry_id, event_id = %event_id, attempt = number, reason, "handler asked for a retry; entry left pending");
                }
                (OutcomeKind::Retry, Some(reason))
            }
            Ok(Outcome::Reject { reason }) => {
                give_up(&mut self.batch, DeadLetterReason::Rejected, &reason);
                (OutcomeKind::Reject, Some(reason))
            }
            Err(err) => {
                let detail = err.to_string();
                if last_attempt {
                    give_up(&mut self.batch, DeadLetterReason::MaxAttempts, &detail);
                } else {
                    context.services.metrics.record_retry(&context.group);
                    tracing::error!(plugin = %context.group, stream, entry_id, event_id = %event_id, attempt = number, error = %err, "handler failed; instance discarded, entry left pending");
                }
                let outcome = match err {
                    CallError::Timeout(_) => OutcomeKind::Timeout,
                    CallError::Trap(_) => OutcomeKind::Trap,
                };
                (outcome, Some(detail))
            }
        };
        Report {
            entry_id,
            event_id: &event_id,
            outcome,
            detail,
            started_at,
            duration: elapsed,
            version: &handled_by,
        }
        .send(&context);
    }
}
