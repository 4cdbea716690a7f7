//! One consumer task per plugin × stream: read a batch, hand each event to the plugin in stream
//! order, commit the effects of every handled entry together with its `XACK`.
//!
//! With a partition key (`[limits] partition_key`), a batch is split into lanes by the key's
//! value, each with its own instance; lanes run at the same time, each in stream order, and the
//! batch is committed once (see [`crate::plugin::PluginSettings::lanes`]).
//!
//! # Delivery
//!
//! - On start the task re-reads its own pending entries (delivered before, never acked), then
//!   reads new ones.
//! - A failed call (retry error, trap, timeout) leaves the entry pending. Every
//!   `retry_interval` the task looks at the group's pending entries (`XPENDING ... IDLE`) and
//!   claims (`XCLAIM`) those whose backoff has passed: its own failures after
//!   `base × 2^(failures-1)` (with jitter, at most `cap`), and entries of other consumers idle
//!   for `claim_idle` (a crashed or vanished host). The attempt number is Redis's delivery
//!   count, so it survives restarts.
//! - After `max_attempts`, on a reject, for an entry that is not an event, or for one larger
//!   than `max_event_bytes`, the entry is dead-lettered: appended to `evhost:dlq:<plugin>` and
//!   acknowledged in one atomic commit.
//! - Effects of a call are committed with its entry's acknowledgement, only if the entry is
//!   still pending for this consumer (see [`Settlement`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, OutcomeKind};
use crate::broker::{
    Broker, BrokerError, Commit, Delivered, EntryId, Fields, GroupReader, GroupStart, Op, ReadFrom,
    Settlement,
};
use crate::dlq::{self, DeadLetterReason};
use crate::event::Event;
use crate::metrics::HandlerMetrics;
use crate::plugin::{
    CallError, DeliveryInfo, HostServices, Outcome, PendingPublish, PluginInstance, PluginVersion,
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
    /// How often pending entries are checked for a retry.
    pub retry_interval: Duration,
    /// How long another consumer's pending entry must be idle before this one takes it over.
    pub claim_idle: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            consumer: "evhost".into(),
            batch_size: 100,
            block: Duration::from_secs(1),
            retry_interval: Duration::from_millis(500),
            claim_idle: Duration::from_secs(30),
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
    /// Cached handles of the per-event metrics.
    handler_metrics: HandlerMetrics,
}

/// The running instance and the version it was made from.
struct Live {
    version: Arc<PluginVersion>,
    instance: PluginInstance,
}

/// An event ready for its plugin.
struct Work {
    /// Position in the batch read (stream order).
    position: usize,
    /// The entry as read.
    delivered: Delivered,
    /// Where the event comes from (differs from the entry read for re-driven dead letters).
    origin_stream: String,
    /// The entry id in `origin_stream`.
    origin_entry: EntryId,
    /// The decoded event.
    event: Event,
    /// Hash of the event's partition key (0 without one).
    key: u64,
}

impl Work {
    /// The lane that handles this event when there are `lanes`.
    fn lane(&self, lanes: usize) -> usize {
        usize::try_from(self.key % lanes.max(1) as u64).unwrap_or(0)
    }
}

/// A handler call and what its settlement and report need.
struct Call {
    position: usize,
    delivered: Delivered,
    origin_stream: String,
    origin_entry: EntryId,
    event_id: String,
    result: Result<Outcome, CallError>,
    started_at: SystemTime,
    elapsed: Duration,
    handled_by: Arc<PluginVersion>,
}

/// What one lane did in a round.
struct LaneRun {
    /// The calls made, in order.
    calls: Vec<Call>,
    /// Work not started (the lane stopped), in order.
    rest: Vec<Work>,
    /// The last call failed: the lane's instance must be discarded.
    poisoned: bool,
}

/// Hash of the value of the top-level `field` of JSON `data`, the same for equal values; 0
/// when the data is not a JSON object or lacks the field (such events share one lane).
fn partition_hash(data: &[u8], field: &str) -> u64 {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(data) else {
        return 0;
    };
    let Some(value) = object.remove(field) else {
        return 0;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match value {
        serde_json::Value::String(text) => text.hash(&mut hasher),
        other => other.to_string().hash(&mut hasher),
    }
    hasher.finish()
}

/// Handled entries waiting for their commit.
#[derive(Default)]
struct Batch {
    /// One settlement per handled entry, in stream order.
    settlements: Vec<Settlement>,
    /// The publishes of each settlement (same order), for metrics and the feed.
    publishes: Vec<Vec<PendingPublish>>,
}

/// Result of one handler call, for logs, metrics and the feed.
struct Handled {
    outcome: OutcomeKind,
    detail: Option<String>,
}

fn entry_size(fields: &Fields) -> usize {
    fields
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

fn seed(id: EntryId) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
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
        let handler_metrics = services.metrics.handler_metrics(&group, &stream);
        Consumer {
            slot,
            stream,
            group,
            start,
            services,
            options,
            cancel,
            handler_metrics,
        }
    }

    fn broker(&self) -> &dyn Broker {
        self.services.broker.as_ref()
    }

    /// Whether this consumer reads the plugin's redrive stream.
    fn is_redrive(&self) -> bool {
        self.stream == self.services.keyspace.redrive(&self.group)
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
                    backoff = (backoff * 2).min(Duration::from_secs(1));
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
        let mut lanes: Vec<Option<Live>> = Vec::new();
        let mut not_before: HashMap<EntryId, Instant> = HashMap::new();
        let mut next_retry_check = Instant::now() + self.options.retry_interval;
        let mut backoff = Duration::from_millis(50);
        // The next batch, read while the previous one was handled (a backlog; see below).
        let mut read_ahead: Option<Result<Vec<Delivered>, BrokerError>> = None;
        while !self.cancel.is_cancelled() {
            if matches!(mode, Mode::New) && Instant::now() >= next_retry_check {
                next_retry_check = Instant::now() + self.options.retry_interval;
                match self.claim_due(&mut not_before).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        self.process_batch(claimed, &mut lanes, &mut not_before)
                            .await;
                        continue;
                    }
                    Ok(_) => {}
                    Err(BrokerError::NoGroup { .. }) => {
                        if !self.recreate_group().await {
                            break;
                        }
                        mode = Mode::Pending(EntryId::ZERO);
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(plugin = %self.group, stream = %self.stream, error = %err, "cannot check pending entries");
                    }
                }
            }
            let (from, after) = match mode {
                Mode::Pending(after) => (ReadFrom::Pending, after),
                Mode::New => (ReadFrom::New, EntryId::ZERO),
            };
            let block = self
                .options
                .block
                .min(next_retry_check.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let result = match read_ahead.take() {
                Some(result) => result,
                None => {
                    let read = reader.read(
                        &self.stream,
                        &self.group,
                        &self.options.consumer,
                        from,
                        after,
                        self.options.batch_size,
                        Some(block),
                    );
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        result = read => result,
                    }
                }
            };
            let entries = match result {
                Ok(entries) => {
                    backoff = Duration::from_millis(50);
                    entries
                }
                Err(BrokerError::NoGroup { .. }) => {
                    if !self.recreate_group().await {
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
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            };
            if let Mode::Pending(_) = mode {
                match entries.last() {
                    Some(last) => mode = Mode::Pending(last.entry.id),
                    None => {
                        mode = Mode::New;
                        continue;
                    }
                }
            }
            if matches!(mode, Mode::New) && entries.len() >= self.options.batch_size {
                // A full batch means a backlog: read the next batch while this one is handled,
                // so that Redis and the plugin work at the same time (without blocking: when
                // the backlog is gone, the next read blocks). The entries read ahead are
                // pending for this consumer like any others: if the host stops before handling
                // them, they are delivered again.
                let ahead = async {
                    tokio::select! {
                        () = self.cancel.cancelled() => None,
                        result = reader.read_backlog(
                            &self.stream,
                            &self.group,
                            &self.options.consumer,
                            self.options.batch_size,
                        ) => Some(result),
                    }
                };
                let (ahead, ()) = tokio::join!(
                    ahead,
                    self.process_batch(entries, &mut lanes, &mut not_before)
                );
                read_ahead = ahead;
            } else {
                self.process_batch(entries, &mut lanes, &mut not_before)
                    .await;
            }
        }
        tracing::debug!(plugin = %self.group, stream = %self.stream, "consumer stopped");
    }

    async fn recreate_group(&self) -> bool {
        tracing::warn!(plugin = %self.group, stream = %self.stream, "consumer group vanished (FLUSHALL, restart without persistence, or XGROUP DESTROY?); recreating it from the start of the stream");
        self.ensure_group(GroupStart::Beginning).await
    }

    /// Claims the pending entries whose retry is due, and those of consumers silent for
    /// `claim_idle`.
    async fn claim_due(
        &self,
        not_before: &mut HashMap<EntryId, Instant>,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let policy = self.slot.load().settings.retry;
        let min_idle = (policy.base / 2).min(self.options.claim_idle);
        let pending = self
            .broker()
            .pending(&self.stream, &self.group, min_idle, self.options.batch_size)
            .await?;
        let now = Instant::now();
        let mut own = Vec::new();
        let mut others = Vec::new();
        for entry in &pending {
            let backoff = policy.backoff(entry.deliveries, seed(entry.id));
            if entry.consumer == self.options.consumer {
                // None of our own entries is in flight while this task is here.
                let requested = not_before.get(&entry.id).is_some_and(|at| *at > now);
                if entry.idle >= backoff && !requested {
                    own.push(entry.id);
                }
            } else if entry.idle >= backoff.max(self.options.claim_idle) {
                others.push(entry.id);
            }
        }
        let mut claimed = Vec::new();
        if !own.is_empty() {
            claimed.extend(
                self.broker()
                    .claim_entries(
                        &self.stream,
                        &self.group,
                        &self.options.consumer,
                        Duration::ZERO,
                        &own,
                    )
                    .await?,
            );
        }
        if !others.is_empty() {
            let taken = self
                .broker()
                .claim_entries(
                    &self.stream,
                    &self.group,
                    &self.options.consumer,
                    self.options.claim_idle,
                    &others,
                )
                .await?;
            if !taken.is_empty() {
                tracing::warn!(plugin = %self.group, stream = %self.stream, entries = taken.len(), "took over pending entries of a consumer silent for {:?}", self.options.claim_idle);
            }
            claimed.extend(taken);
        }
        claimed.sort_by_key(|delivered| delivered.entry.id);
        for delivered in &claimed {
            not_before.remove(&delivered.entry.id);
        }
        Ok(claimed)
    }

    /// Makes sure every lane with work runs an instance of the current version; returns false
    /// if an instance could not be made (the work then stays pending).
    ///
    /// When the plugin was swapped, the batch so far is committed first: calls already made
    /// stay with the old version, every later event goes to the new one.
    async fn ensure_lanes(
        &self,
        lanes: &mut Vec<Option<Live>>,
        batch: &mut Batch,
        work: &[Work],
    ) -> bool {
        let current = self.slot.load_full();
        let stale = lanes
            .iter()
            .flatten()
            .find(|live| !Arc::ptr_eq(&live.version, &current))
            .map(|live| live.version.clone());
        if let Some(stale) = stale {
            tracing::info!(
                plugin = %self.group,
                stream = %self.stream,
                from = %stale.version,
                to = %current.version,
                "switching to the new plugin version"
            );
            self.commit(lanes, std::mem::take(batch)).await;
            lanes.clear();
        }
        lanes.resize_with(current.settings.lanes(), || None);
        let count = lanes.len();
        for item in work {
            let lane = &mut lanes[item.lane(count)];
            if lane.is_some() {
                continue;
            }
            match current.instantiate().await {
                Ok(instance) => {
                    *lane = Some(Live {
                        version: current.clone(),
                        instance,
                    });
                }
                Err(err) => {
                    tracing::error!(plugin = %self.group, stream = %self.stream, error = %format!("{err:#}"), "cannot instantiate plugin");
                    return false;
                }
            }
        }
        true
    }

    /// Queues the dead-lettering of an entry: its dead letter and its ack commit together.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &self,
        batch: &mut Batch,
        delivered: &Delivered,
        origin: (&str, EntryId),
        event_id: &str,
        reason: DeadLetterReason,
        error: &str,
        version: &str,
    ) {
        let fields = dlq::dead_letter_fields(
            &self.group,
            version,
            origin.0,
            origin.1,
            event_id,
            reason,
            error,
            delivered.deliveries,
            &delivered.entry.fields,
        );
        tracing::error!(
            plugin = %self.group,
            stream = %origin.0,
            entry_id = %origin.1,
            event_id,
            reason = reason.as_str(),
            attempts = delivered.deliveries,
            error,
            "event dead-lettered to {}",
            self.services.keyspace.dead_letters(&self.group)
        );
        self.services
            .metrics
            .record_dead_letter(&self.group, reason.as_str());
        batch.settlements.push(self.settlement(
            delivered.entry.id,
            vec![Op::Add {
                stream: self.services.keyspace.dead_letters(&self.group),
                fields,
            }],
        ));
        batch.publishes.push(Vec::new());
    }

    /// Reports and dead-letters an entry the plugin never sees (malformed or oversized).
    fn unreadable(
        &self,
        batch: &mut Batch,
        delivered: &Delivered,
        origin: (&str, EntryId),
        reason: DeadLetterReason,
        error: &str,
        version: &PluginVersion,
    ) {
        let outcome = match reason {
            DeadLetterReason::Oversized => OutcomeKind::Oversized,
            _ => OutcomeKind::Malformed,
        };
        let entry_id = origin.1.to_string();
        self.report(
            &entry_id,
            "",
            outcome,
            Some(error.to_string()),
            SystemTime::now(),
            Duration::ZERO,
            version,
        );
        self.dead_letter(
            batch,
            delivered,
            origin,
            "",
            reason,
            error,
            &version.version,
        );
    }

    fn settlement(&self, id: EntryId, ops: Vec<Op>) -> Settlement {
        Settlement {
            stream: self.stream.clone(),
            group: self.group.clone(),
            consumer: self.options.consumer.clone(),
            id,
            ops,
        }
    }

    /// Decodes the entries; those the plugin can never see (malformed, oversized, delivered
    /// too often) are dead-lettered into `batch`, the others returned in stream order.
    fn prepare(&self, entries: Vec<Delivered>, batch: &mut Batch) -> Vec<Work> {
        let version = self.slot.load_full();
        let settings = &version.settings;
        let mut work = Vec::with_capacity(entries.len());
        for (position, delivered) in entries.into_iter().enumerate() {
            let id = delivered.entry.id;
            // Redriven dead letters carry their origin; everything else comes from this stream.
            let redriven = if self.is_redrive() {
                dlq::split_redriven(&delivered.entry.fields)
            } else {
                None
            };
            let (origin_stream, origin_entry, fields): (&str, EntryId, &Fields) = match &redriven {
                Some((stream, entry, fields)) => (stream, *entry, fields),
                None => (&self.stream, id, &delivered.entry.fields),
            };
            let origin = (origin_stream, origin_entry);
            let size = entry_size(fields);
            if size > settings.max_event_bytes {
                let error = format!(
                    "entry of {size} bytes exceeds max_event_bytes = {}",
                    settings.max_event_bytes
                );
                self.unreadable(
                    batch,
                    &delivered,
                    origin,
                    DeadLetterReason::Oversized,
                    &error,
                    &version,
                );
                continue;
            }
            let event = match Event::from_entry(origin_stream, origin_entry, fields) {
                Ok(event) => event,
                Err(reason) => {
                    let error = reason.to_string();
                    self.unreadable(
                        batch,
                        &delivered,
                        origin,
                        DeadLetterReason::Malformed,
                        &error,
                        &version,
                    );
                    continue;
                }
            };
            if delivered.deliveries > settings.retry.max_attempts {
                // Delivered more often than allowed without a verdict (e.g. the host crashed
                // while handling it): give up before it takes the host down again.
                let error = format!("delivered {} times without success", delivered.deliveries);
                self.dead_letter(
                    batch,
                    &delivered,
                    origin,
                    &event.id,
                    DeadLetterReason::MaxAttempts,
                    &error,
                    &version.version,
                );
                continue;
            }
            let key = settings
                .partition_key
                .as_deref()
                .map_or(0, |field| partition_hash(&event.data, field));
            let origin_stream = origin_stream.to_string();
            work.push(Work {
                position,
                delivered,
                origin_stream,
                origin_entry,
                event,
                key,
            });
        }
        work
    }

    /// Handles the entries and commits them. Events go to the lanes by their partition key;
    /// each lane calls its own instance in stream order, and the lanes run at the same time.
    async fn process_batch(
        &self,
        entries: Vec<Delivered>,
        lanes: &mut Vec<Option<Live>>,
        not_before: &mut HashMap<EntryId, Instant>,
    ) {
        let mut batch = Batch::default();
        let mut work = self.prepare(entries, &mut batch);
        // Each round ends when every lane is done or stopped (a failed call poisons its
        // instance; a swap needs new ones); what a stopped lane did not reach comes next round.
        while !work.is_empty() && !self.cancel.is_cancelled() {
            if !self.ensure_lanes(lanes, &mut batch, &work).await {
                // Not started: stays pending and is delivered again.
                break;
            }
            let count = lanes.len();
            let mut per_lane: Vec<Vec<Work>> = (0..count).map(|_| Vec::new()).collect();
            for item in work.drain(..) {
                let lane = item.lane(count);
                per_lane[lane].push(item);
            }
            let runs = lanes
                .iter_mut()
                .zip(per_lane)
                .enumerate()
                .filter(|(_, (_, items))| !items.is_empty())
                .map(|(lane, (live, items))| async move {
                    (lane, self.run_lane(live.as_mut(), items).await)
                });
            let mut calls = Vec::new();
            let mut poisoned = Vec::new();
            for (lane, run) in futures_util::future::join_all(runs).await {
                if run.poisoned {
                    poisoned.push(lane);
                }
                calls.extend(run.calls);
                work.extend(run.rest);
            }
            calls.sort_unstable_by_key(|call| call.position);
            work.sort_unstable_by_key(|item| item.position);
            for call in calls {
                self.settle_call(&mut batch, call, not_before);
            }
            if !poisoned.is_empty() {
                // The uncommitted key-value state lives in the poisoned instances: commit what
                // succeeded before discarding them.
                self.commit(lanes, std::mem::take(&mut batch)).await;
                for lane in poisoned {
                    lanes[lane] = None;
                }
            }
        }
        self.commit(lanes, batch).await;
    }

    /// Calls the plugin for each item in order; stops after a failed call (the instance is
    /// then poisoned), when the plugin was swapped, or when the consumer stops. Without an
    /// instance, nothing is called and all the work is returned.
    async fn run_lane(&self, live: Option<&mut Live>, items: Vec<Work>) -> LaneRun {
        let Some(live) = live else {
            // No instance (not expected after `ensure_lanes`): the work waits for the next round.
            return LaneRun {
                calls: Vec::new(),
                rest: items,
                poisoned: false,
            };
        };
        let mut calls = Vec::with_capacity(items.len());
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            if self.cancel.is_cancelled() || !Arc::ptr_eq(&live.version, &*self.slot.load()) {
                return LaneRun {
                    calls,
                    rest: std::iter::once(item).chain(items).collect(),
                    poisoned: false,
                };
            }
            let Work {
                position,
                delivered,
                origin_stream,
                origin_entry,
                event,
                ..
            } = item;
            let delivery = DeliveryInfo {
                stream: origin_stream.clone(),
                entry_id: origin_entry.to_string(),
                attempt: delivered.deliveries,
                group: self.group.clone(),
            };
            let event_id = event.id.clone();
            let started_at = SystemTime::now();
            let started = Instant::now();
            let result = live.instance.handle(event, delivery).await;
            let failed = result.is_err();
            calls.push(Call {
                position,
                delivered,
                origin_stream,
                origin_entry,
                event_id,
                result,
                started_at,
                elapsed: started.elapsed(),
                handled_by: live.version.clone(),
            });
            if failed {
                return LaneRun {
                    calls,
                    rest: items.collect(),
                    poisoned: true,
                };
            }
        }
        LaneRun {
            calls,
            rest: Vec::new(),
            poisoned: false,
        }
    }

    /// Turns a call's result into its settlement (effects and ack, dead letter, or nothing:
    /// a retry leaves the entry pending), and reports it.
    fn settle_call(
        &self,
        batch: &mut Batch,
        call: Call,
        not_before: &mut HashMap<EntryId, Instant>,
    ) {
        let Call {
            delivered,
            origin_stream,
            origin_entry,
            event_id,
            result,
            started_at,
            elapsed,
            handled_by,
            ..
        } = call;
        let id = delivered.entry.id;
        let origin = (origin_stream.as_str(), origin_entry);
        let entry_id = origin_entry.to_string();
        let attempt = delivered.deliveries;
        let last_attempt = attempt >= handled_by.settings.retry.max_attempts;
        let version = &handled_by.version;
        let give_up = |batch: &mut Batch, reason: DeadLetterReason, error: &str| {
            self.dead_letter(batch, &delivered, origin, &event_id, reason, error, version);
        };
        let handled = match result {
            Ok(Outcome::Ok(effects)) => {
                batch.settlements.push(self.settlement(id, effects.ops));
                batch.publishes.push(effects.publishes);
                Handled {
                    outcome: OutcomeKind::Ok,
                    detail: None,
                }
            }
            Ok(Outcome::Retry { reason, delay }) => {
                if last_attempt {
                    give_up(batch, DeadLetterReason::MaxAttempts, &reason);
                } else {
                    self.services.metrics.record_retry(&self.group);
                    if let Some(delay) = delay {
                        not_before.insert(id, Instant::now() + delay);
                    }
                    tracing::warn!(plugin = %self.group, stream = %origin_stream, entry_id, event_id = %event_id, attempt = attempt, reason, "handler asked for a retry; entry left pending");
                }
                Handled {
                    outcome: OutcomeKind::Retry,
                    detail: Some(reason),
                }
            }
            Ok(Outcome::Reject { reason }) => {
                give_up(batch, DeadLetterReason::Rejected, &reason);
                Handled {
                    outcome: OutcomeKind::Reject,
                    detail: Some(reason),
                }
            }
            Err(err) => {
                let detail = err.to_string();
                if last_attempt {
                    give_up(batch, DeadLetterReason::MaxAttempts, &detail);
                } else {
                    self.services.metrics.record_retry(&self.group);
                    tracing::error!(plugin = %self.group, stream = %origin_stream, entry_id, event_id = %event_id, attempt = attempt, error = %err, "handler failed; instance discarded, entry left pending");
                }
                let outcome = match err {
                    CallError::Timeout(_) => OutcomeKind::Timeout,
                    CallError::Trap(_) => OutcomeKind::Trap,
                };
                Handled {
                    outcome,
                    detail: Some(detail),
                }
            }
        };
        self.report(
            &entry_id,
            &event_id,
            handled.outcome,
            handled.detail,
            started_at,
            elapsed,
            &handled_by,
        );
    }

    /// Commits the batch; entries whose commit fails stay pending and are delivered again.
    async fn commit(&self, lanes: &mut [Option<Live>], batch: Batch) {
        for live in lanes.iter_mut().flatten() {
            live.instance.effects().end_batch();
        }
        if batch.settlements.is_empty() {
            return;
        }
        let entries = batch.settlements.len();
        let ids: Vec<EntryId> = batch
            .settlements
            .iter()
            .map(|settlement| settlement.id)
            .collect();
        let commit = Commit {
            ops: Vec::new(),
            settlements: batch.settlements,
        };
        match self.broker().commit(&commit).await {
            Ok(report) => {
                if !report.skipped.is_empty() {
                    tracing::warn!(plugin = %self.group, stream = %self.stream, skipped = ?report.skipped, "entries were taken over by another consumer meanwhile; their effects were dropped here");
                }
                for (id, publishes) in ids.iter().zip(batch.publishes) {
                    if report.skipped.contains(id) {
                        continue;
                    }
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
                }
            }
            Err(err) => {
                self.services.metrics.record_commit_failure(&self.group);
                tracing::error!(plugin = %self.group, stream = %self.stream, entries, error = %err, "commit failed; the batch's effects were dropped and its entries will be delivered again");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        entry_id: &str,
        event_id: &str,
        outcome: OutcomeKind,
        detail: Option<String>,
        started_at: SystemTime,
        duration: Duration,
        version: &PluginVersion,
    ) {
        self.handler_metrics
            .record(&self.services.metrics, outcome.as_str(), duration);
        // Build the feed's record only when someone listens: no per-event allocations otherwise.
        if self.services.activity.receiver_count() > 0 {
            let _ = self.services.activity.send(Activity::Handled {
                plugin: self.group.clone(),
                stream: self.stream.clone(),
                entry_id: entry_id.to_string(),
                event_id: event_id.to_string(),
                outcome,
                detail,
                duration,
                started_at,
                sha256: version.sha256.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partition_hash;

    #[test]
    fn equal_keys_share_a_lane_whatever_their_json_type() {
        let text = partition_hash(br#"{"auction_id": "7", "price": 1}"#, "auction_id");
        let number = partition_hash(br#"{"price": 2, "auction_id": 7}"#, "auction_id");
        assert_eq!(
            text, number,
            "the payment plugin reads ids as strings or numbers"
        );
        assert_ne!(
            text,
            partition_hash(br#"{"auction_id": "8"}"#, "auction_id")
        );
    }

    #[test]
    fn events_without_the_key_share_lane_zero() {
        assert_eq!(partition_hash(br#"{"other": 1}"#, "auction_id"), 0);
        assert_eq!(partition_hash(b"not json", "auction_id"), 0);
        assert_eq!(partition_hash(br#"["auction_id"]"#, "auction_id"), 0);
    }
}
