//! One consumer task per plugin × stream: read a batch, hand each event to the plugin in stream
//! order, commit the effects of the successful calls together with their `XACK`.
//!
//! On start the task first re-reads its own pending entries (delivered before, never acked),
//! then new ones. Entries whose call failed stay pending and are read again on the next pending
//! scan, every `retry_interval`; entries that can never succeed (malformed, rejected) are left
//! pending but not retried again by this process.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, OutcomeKind};
use crate::broker::{
    Broker, BrokerError, Commit, Delivered, EntryId, GroupReader, GroupStart, Op, ReadFrom,
};
use crate::event::Event;
use crate::plugin::{
    CallError, DeliveryInfo, HostServices, Outcome, PluginInstance, PluginVersion,
};
use crate::registry::PluginSlot;

/// Tunables shared by all consumers of a host.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer name within each group (the hostname by default).
    pub consumer: String,
    /// Entries per read.
    pub batch_size: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// How often entries left pending by a failure are tried again.
    pub retry_interval: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            consumer: "evhost".into(),
            batch_size: 100,
            block: Duration::from_secs(1),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// Where the task is reading.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Own pending entries after this id.
    Pending(EntryId),
    /// New entries.
    New,
}

/// A consumer of one stream for one plugin.
pub struct Consumer {
    /// The plugin's current version.
    slot: PluginSlot,
    /// The stream read.
    stream: String,
    /// The consumer group (= plugin name).
    group: String,
    /// Where the group starts if it must be created.
    start: GroupStart,
    /// Broker, metrics, activity feed.
    services: Arc<HostServices>,
    /// Tunables.
    options: ConsumerOptions,
    /// Stops the task.
    cancel: CancellationToken,
}

/// Result of one handler call, for logs, metrics and the feed.
struct Handled {
    outcome: OutcomeKind,
    detail: Option<String>,
}

/// The running instance and the version it was made from.
struct Live {
    version: Arc<PluginVersion>,
    instance: PluginInstance,
}

impl Consumer {
    /// Prepares a consumer; [`Consumer::run`] does the work.
    pub fn new(
        slot: PluginSlot,
        stream: String,
        start: GroupStart,
        services: Arc<HostServices>,
        options: ConsumerOptions,
        cancel: CancellationToken,
    ) -> Self {
        let group = slot.load().name.clone();
        Consumer {
            slot,
            stream,
            group,
            start,
            services,
            options,
            cancel,
        }
    }

    fn broker(&self) -> &dyn Broker {
        self.services.broker.as_ref()
    }

    /// Sleeps for `duration` unless cancelled first; returns false when cancelled.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    /// Creates the group, retrying with backoff until it exists or the task is cancelled.
    async fn ensure_group(&self, start: GroupStart) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .broker()
                .create_group(&self.stream, &self.group, start)
                .await
            {
                Ok(created) => {
                    if created {
                        tracing::info!(plugin = %self.group, stream = %self.stream, ?start, "created consumer group");
                    }
                    return true;
                }
                Err(err) => {
                    tracing::warn!(plugin = %self.group, stream = %self.stream, error = %err, "cannot create consumer group; retrying in {backoff:?}");
                    if !self.pause(backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Runs until cancelled. In-flight calls finish and their batch is committed first.
    pub async fn run(self) {
        if !self.ensure_group(self.start).await {
            return;
        }
        let mut reader: Box<dyn GroupReader> = match self.broker().reader().await {
            Ok(reader) => reader,
            Err(err) => {
                tracing::error!(plugin = %self.group, stream = %self.stream, error = %err, "cannot open a reader");
                return;
            }
        };
        tracing::debug!(plugin = %self.group, stream = %self.stream, consumer = %self.options.consumer, "consumer started");
        let mut mode = Mode::Pending(EntryId::ZERO);
        let mut live: Option<Live> = None;
        let mut parked: HashSet<EntryId> = HashSet::new();
        let mut left_pending = false;
        let mut next_rescan = Instant::now() + self.options.retry_interval;
        let mut backoff = Duration::from_millis(100);
        while !self.cancel.is_cancelled() {
            if matches!(mode, Mode::New) && left_pending && Instant::now() >= next_rescan {
                mode = Mode::Pending(EntryId::ZERO);
                left_pending = false;
            }
            let (from, after) = match mode {
                Mode::Pending(after) => (ReadFrom::Pending, after),
                Mode::New => (ReadFrom::New, EntryId::ZERO),
            };
            let read = reader.read(
                &self.stream,
                &self.group,
                &self.options.consumer,
                from,
                after,
                self.options.batch_size,
                Some(self.options.block),
            );
            let result = tokio::select! {
                () = self.cancel.cancelled() => break,
                result = read => result,
            };
            let entries = match result {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    entries
                }
                Err(BrokerError::NoGroup { .. }) => {
                    tracing::warn!(plugin = %self.group, stream = %self.stream, "consumer group vanished (FLUSHALL or XGROUP DESTROY?); recreating it from the start of the stream");
                    if !self.ensure_group(GroupStart::Beginning).await {
                        break;
                    }
                    mode = Mode::Pending(EntryId::ZERO);
                    continue;
                }
                Err(err) => {
                    tracing::warn!(plugin = %self.group, stream = %self.stream, error = %err, "read failed; retrying in {backoff:?}");
                    if !self.pause(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Mode::Pending(_) = mode {
                match entries.last() {
                    Some(last) => mode = Mode::Pending(last.entry.id),
                    None => {
                        mode = Mode::New;
                        next_rescan = Instant::now() + self.options.retry_interval;
                        continue;
                    }
                }
            }
            if self.process_batch(entries, &mut live, &mut parked).await {
                left_pending = true;
            }
        }
        tracing::debug!(plugin = %self.group, stream = %self.stream, "consumer stopped");
    }

    /// Makes sure `live` runs the current version; returns false if no instance could be made.
    ///
    /// When the plugin was swapped, the old instance's buffered effects and the acks of the
    /// events it handled are committed first: calls already made stay with the old version,
    /// every later event goes to the new one.
    async fn ensure_instance(&self, live: &mut Option<Live>, acks: &mut Vec<EntryId>) -> bool {
        let current = self.slot.load_full();
        if let Some(existing) = live.as_ref() {
            if Arc::ptr_eq(&existing.version, &current) {
                return true;
            }
            tracing::info!(
                plugin = %self.group,
                stream = %self.stream,
                from = %existing.version.version,
                to = %current.version,
                "switching to the new plugin version"
            );
            if !self.commit(live, std::mem::take(acks)).await {
                // The entries stay pending and are delivered again, to the new version.
                *live = None;
                return false;
            }
        }
        match current.instantiate().await {
            Ok(instance) => {
                *live = Some(Live {
                    version: current,
                    instance,
                });
                true
            }
            Err(err) => {
                tracing::error!(plugin = %self.group, stream = %self.stream, error = %format!("{err:#}"), "cannot instantiate plugin");
                *live = None;
                false
            }
        }
    }

    /// Handles a batch in stream order and commits it. Returns true when some entry was left
    /// pending for a retry.
    async fn process_batch(
        &self,
        entries: Vec<Delivered>,
        live: &mut Option<Live>,
        parked: &mut HashSet<EntryId>,
    ) -> bool {
        let mut acks: Vec<EntryId> = Vec::with_capacity(entries.len());
        let mut left_pending = false;
        for delivered in entries {
            if self.cancel.is_cancelled() {
                // Not started: stays pending and is read again on the next start.
                break;
            }
            let id = delivered.entry.id;
            if parked.contains(&id) {
                continue;
            }
            let entry_id = id.to_string();
            let event = match Event::from_entry(&self.stream, id, &delivered.entry.fields) {
                Ok(event) => event,
                Err(reason) => {
                    tracing::warn!(plugin = %self.group, stream = %self.stream, entry_id, reason = %reason, "malformed entry left pending (not acknowledged)");
                    parked.insert(id);
                    self.report(
                        &entry_id,
                        "",
                        Handled {
                            outcome: OutcomeKind::Malformed,
                            detail: Some(reason.to_string()),
                        },
                        Duration::ZERO,
                    );
                    continue;
                }
            };
            if !self.ensure_instance(live, &mut acks).await {
                left_pending = true;
                break;
            }
            let Some(current) = live.as_mut() else {
                break;
            };
            let delivery = DeliveryInfo {
                stream: self.stream.clone(),
                entry_id: entry_id.clone(),
                attempt: delivered.deliveries,
                group: self.group.clone(),
            };
            let started = Instant::now();
            let result = current.instance.handle(&event, &delivery).await;
            let elapsed = started.elapsed();
            let handled = match result {
                Ok(Outcome::Ok) => {
                    acks.push(id);
                    Handled {
                        outcome: OutcomeKind::Ok,
                        detail: None,
                    }
                }
                Ok(Outcome::Retry { reason, .. }) => {
                    left_pending = true;
                    tracing::warn!(plugin = %self.group, stream = %self.stream, entry_id, event_id = %event.id, attempt = delivery.attempt, reason, "handler asked for a retry; entry left pending");
                    Handled {
                        outcome: OutcomeKind::Retry,
                        detail: Some(reason),
                    }
                }
                Ok(Outcome::Reject { reason }) => {
                    parked.insert(id);
                    tracing::error!(plugin = %self.group, stream = %self.stream, entry_id, event_id = %event.id, reason, "handler rejected the event; entry left pending (not acknowledged)");
                    Handled {
                        outcome: OutcomeKind::Reject,
                        detail: Some(reason),
                    }
                }
                Err(err) => {
                    left_pending = true;
                    tracing::error!(plugin = %self.group, stream = %self.stream, entry_id, event_id = %event.id, attempt = delivery.attempt, error = %err, "handler failed; instance discarded, entry left pending");
                    // Commit what succeeded so far: those effects live in this instance.
                    let detail = match &err {
                        CallError::Timeout(_) | CallError::Trap(_) => err.to_string(),
                    };
                    self.report(
                        &entry_id,
                        &event.id,
                        Handled {
                            outcome: OutcomeKind::Trap,
                            detail: Some(detail),
                        },
                        elapsed,
                    );
                    if !self.commit(live, std::mem::take(&mut acks)).await {
                        left_pending = true;
                    }
                    *live = None;
                    continue;
                }
            };
            self.report(&entry_id, &event.id, handled, elapsed);
        }
        if !self.commit(live, acks).await {
            left_pending = true;
        }
        left_pending
    }

    /// Commits the buffered effects of `live` with the acks; returns false on failure (the
    /// entries then stay pending and are delivered again).
    async fn commit(&self, live: &mut Option<Live>, acks: Vec<EntryId>) -> bool {
        let (mut ops, publishes) = match live.as_mut() {
            Some(current) => current.instance.effects().take_batch(),
            None => (Vec::new(), Vec::new()),
        };
        if acks.is_empty() && ops.is_empty() {
            return true;
        }
        let acked = acks.len();
        ops.push(Op::Ack {
            stream: self.stream.clone(),
            group: self.group.clone(),
            ids: acks,
        });
        match self.broker().commit(&Commit { ops }).await {
            Ok(()) => {
                for publish in publishes {
                    self.services
                        .metrics
                        .record_published(&self.group, &publish.event_type);
                    let _ = self.services.activity.send(Activity::Published {
                        plugin: self.group.clone(),
                        event_type: publish.event_type,
                        event_id: publish.event_id,
                        data: publish.data,
                    });
                }
                true
            }
            Err(err) => {
                self.services.metrics.record_commit_failure(&self.group);
                tracing::error!(plugin = %self.group, stream = %self.stream, entries = acked, error = %err, "commit failed; the batch's effects were dropped and its entries will be delivered again");
                false
            }
        }
    }

    fn report(&self, entry_id: &str, event_id: &str, handled: Handled, duration: Duration) {
        self.services.metrics.record_handled(
            &self.group,
            &self.stream,
            handled.outcome.as_str(),
            duration,
        );
        let _ = self.services.activity.send(Activity::Handled {
            plugin: self.group.clone(),
            stream: self.stream.clone(),
            entry_id: entry_id.to_string(),
            event_id: event_id.to_string(),
            outcome: handled.outcome,
            detail: handled.detail,
            duration,
        });
    }
}
