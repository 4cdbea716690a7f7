//! The budget of one `handle` call: what its buffered effects may add up to.
//!
//! Every write a call buffers (publish, journal append, key-value set or delete) is checked
//! here before it is buffered. The limits come from the sidecar's `[limits]`
//! ([`CallLimits`]); the counters are reset for every call.
//!
//! Two kinds of refusal:
//!
//! - **An invalid write** (an event type that is not valid, a write larger than
//!   `max_event_bytes`, an empty journal record) is refused with an error, and the call goes on:
//!   the plugin can react to it like to any error answer, and its other effects still count.
//! - **A write over the call's budget** (`max_call_bytes`, `max_call_writes`, `max_key_bytes`,
//!   `max_call_event_types`) is refused with an error naming the limit, every later write of the
//!   call is refused too, and *the call fails as a whole*: nothing it buffered is committed and
//!   the event is rejected (dead-lettered with the reason), even when the handler ignored the
//!   error and returned `ok`. Committing the part that fitted would acknowledge the event with
//!   an incomplete result the handler never meant (the first 10,000 of 100,000 deletes, a saga
//!   step without its journal record), and the rest would be lost silently. A retry would not
//!   help: the same event through the same code meets the same limits, and would only burn its
//!   attempts before the same dead letter. From the dead-letter stream, `evhost dlq retry`
//!   replays it once the plugin or its limits are fixed.
//!
//! Every refusal of a call, of either kind, is counted (`evhost_effects_refused_total{plugin,
//! reason}`) and summarised in one log line when the call ends ([`CallBudget::finish`]), however
//! many there were.

use std::collections::HashSet;

use crate::metrics::Metrics;

/// Default of `max_call_bytes`: eight single writes of the default `max_event_bytes`.
pub const DEFAULT_MAX_CALL_BYTES: usize = 8 * 1024 * 1024;
/// Default of `max_call_writes`.
pub const DEFAULT_MAX_CALL_WRITES: usize = 10_000;
/// Default of `max_key_bytes`.
pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
/// Default of `max_call_event_types`.
pub const DEFAULT_MAX_CALL_EVENT_TYPES: usize = 16;

/// The budget of one call, from the sidecar's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Total bytes of all effects of a call: published events (all their fields), key-value
    /// keys and values (deletes count their key), journal records.
    pub max_call_bytes: usize,
    /// Writes per call: publishes, journal appends, key-value sets and deletes.
    pub max_call_writes: usize,
    /// Longest key-value key, in bytes.
    pub max_key_bytes: usize,
    /// Distinct event types one call may publish to.
    pub max_call_event_types: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
            max_call_writes: DEFAULT_MAX_CALL_WRITES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_call_event_types: DEFAULT_MAX_CALL_EVENT_TYPES,
        }
    }
}

/// Why a write was refused; the label value of `evhost_effects_refused_total{reason}` is the
/// name of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Over `max_call_bytes`.
    CallBytes,
    /// Over `max_call_writes`.
    CallWrites,
    /// A key longer than `max_key_bytes`.
    KeyBytes,
    /// Over `max_call_event_types`.
    CallEventTypes,
    /// One write larger than `max_event_bytes` (the call goes on).
    WriteBytes,
    /// Invalid on its own (the call goes on).
    Invalid,
}

impl RefusalReason {
    /// Every reason, in label order.
    const ALL: [RefusalReason; 6] = [
        RefusalReason::CallBytes,
        RefusalReason::CallWrites,
        RefusalReason::KeyBytes,
        RefusalReason::CallEventTypes,
        RefusalReason::WriteBytes,
        RefusalReason::Invalid,
    ];

    /// The metric label: the sidecar key of the limit, or `invalid`.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::CallBytes => "max_call_bytes",
            RefusalReason::CallWrites => "max_call_writes",
            RefusalReason::KeyBytes => "max_key_bytes",
            RefusalReason::CallEventTypes => "max_call_event_types",
            RefusalReason::WriteBytes => "max_event_bytes",
            RefusalReason::Invalid => "invalid",
        }
    }

    /// Whether the refusal fails the whole call.
    pub fn fails_the_call(self) -> bool {
        !matches!(self, RefusalReason::WriteBytes | RefusalReason::Invalid)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A refused write: the reason and the message the plugin got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which limit.
    pub reason: RefusalReason,
    /// What the plugin was told.
    pub message: String,
}

/// One write a call wants to buffer, as the budget sees it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// What it is, for messages (`event data`, `value`, `journal record`, `delete`).
    pub what: &'a str,
    /// The key-value key, for sets and deletes.
    pub key: Option<&'a str>,
    /// The size checked against `max_event_bytes` (the payload of this one write).
    pub size: usize,
    /// What it adds to the call's bytes (everything it writes to Redis).
    pub cost: usize,
    /// The event type, for publishes.
    pub event_type: Option<&'a str>,
}

/// The counters of the running call against its limits.
#[derive(Debug)]
pub struct CallBudget {
    /// The budget.
    limits: CallLimits,
    /// Largest single write (`max_event_bytes`).
    max_write_bytes: usize,
    /// Bytes buffered by the call.
    bytes: usize,
    /// Writes buffered by the call.
    writes: usize,
    /// Event types the call published to.
    event_types: HashSet<String>,
    /// Refused writes of the call, by reason.
    refused: [u64; RefusalReason::ALL.len()],
    /// The call's first refusal, for the summary line.
    first: Option<Refusal>,
    /// The call's first refusal over its budget: once set, every write is refused and the
    /// call fails.
    exceeded: Option<Refusal>,
}

impl CallBudget {
    /// A budget of `limits`, where no single write may exceed `max_write_bytes`.
    pub fn new(limits: CallLimits, max_write_bytes: usize) -> Self {
        CallBudget {
            limits,
            max_write_bytes,
            bytes: 0,
            writes: 0,
            event_types: HashSet::new(),
            refused: [0; RefusalReason::ALL.len()],
            first: None,
            exceeded: None,
        }
    }

    /// Starts a call with the whole budget.
    pub fn begin(&mut self) {
        self.bytes = 0;
        self.writes = 0;
        self.event_types.clear();
        self.refused = [0; RefusalReason::ALL.len()];
        self.first = None;
        self.exceeded = None;
    }

    /// Checks `write` and, when it is allowed, spends its share of the budget.
    ///
    /// # Errors
    ///
    /// The message for the plugin, naming the limit, when the write is refused.
    pub fn spend(&mut self, write: Write<'_>) -> Result<(), String> {
        if let Some(exceeded) = &self.exceeded {
            let refusal = Refusal {
                reason: exceeded.reason,
                message: format!(
                    "this call already exceeded its budget ({}); nothing of it will be committed",
                    exceeded.message
                ),
            };
            return Err(self.refuse(refusal));
        }
        match self.check(write) {
            Ok(()) => {
                self.writes += 1;
                self.bytes += write.cost;
                if let Some(event_type) = write.event_type
                    && !self.event_types.contains(event_type)
                {
                    self.event_types.insert(event_type.to_string());
                }
                Ok(())
            }
            Err(refusal) => Err(self.refuse(refusal)),
        }
    }

    /// Records the refusal of a write that is invalid on its own; returns `message`.
    pub fn refuse_invalid(&mut self, message: String) -> String {
        self.refuse(Refusal {
            reason: RefusalReason::Invalid,
            message,
        })
    }

    fn check(&self, write: Write<'_>) -> Result<(), Refusal> {
        let limits = &self.limits;
        let refusal = |reason, message| Err(Refusal { reason, message });
        if let Some(key) = write.key
            && key.len() > limits.max_key_bytes
        {
            return refusal(
                RefusalReason::KeyBytes,
                format!(
                    "key of {} bytes exceeds the limit of {} bytes (max_key_bytes)",
                    key.len(),
                    limits.max_key_bytes
                ),
            );
        }
        if write.size > self.max_write_bytes {
            return refusal(
                RefusalReason::WriteBytes,
                format!(
                    "{} of {} bytes exceeds the limit of {} bytes (max_event_bytes)",
                    write.what, write.size, self.max_write_bytes
                ),
            );
        }
        if self.writes >= limits.max_call_writes {
            return refusal(
                RefusalReason::CallWrites,
                format!(
                    "more than {} writes in one call (max_call_writes)",
                    limits.max_call_writes
                ),
            );
        }
        if self.bytes.saturating_add(write.cost) > limits.max_call_bytes {
            return refusal(
                RefusalReason::CallBytes,
                format!(
                    "{} of {} bytes would bring the call's effects to {} bytes, over the limit of {} bytes (max_call_bytes)",
                    write.what,
                    write.cost,
                    self.bytes.saturating_add(write.cost),
                    limits.max_call_bytes
                ),
            );
        }
        if let Some(event_type) = write.event_type
            && !self.event_types.contains(event_type)
            && self.event_types.len() >= limits.max_call_event_types
        {
            return refusal(
                RefusalReason::CallEventTypes,
                format!(
                    "publishing to more than {} event types in one call (max_call_event_types)",
                    limits.max_call_event_types
                ),
            );
        }
        Ok(())
    }

    fn refuse(&mut self, refusal: Refusal) -> String {
        self.refused[refusal.reason.index()] += 1;
        if self.exceeded.is_none() && refusal.reason.fails_the_call() {
            self.exceeded = Some(refusal.clone());
        }
        let message = refusal.message.clone();
        if self.first.is_none() {
            self.first = Some(refusal);
        }
        message
    }

    /// Writes refused in the running call.
    pub fn refused(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// The first refusal over the budget in the running call, if any: the call fails.
    pub fn exceeded(&self) -> Option<&Refusal> {
        self.exceeded.as_ref()
    }

    /// Ends the call of `plugin`: counts its refusals in `metrics`, logs them in one line and
    /// resets the counters. Returns the reason the call fails when it exceeded its budget.
    pub fn finish(&mut self, plugin: &str, metrics: &Metrics) -> Option<String> {
        let refused = self.refused();
        if refused > 0 {
            for reason in RefusalReason::ALL {
                let count = self.refused[reason.index()];
                if count > 0 {
                    metrics.record_effects_refused(plugin, reason.label(), count);
                }
            }
            let first = self
                .first
                .as_ref()
                .map_or("", |first| first.message.as_str());
            tracing::warn!(
                plugin,
                refused,
                first = %first,
                call_fails = self.exceeded.is_some(),
                "effects refused in one call"
            );
        }
        let failure = self
            .exceeded
            .as_ref()
            .map(|exceeded| format!("over the call budget: {}", exceeded.message));
        self.begin();
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CallLimits {
        CallLimits {
            max_call_bytes: 100,
            max_call_writes: 3,
            max_key_bytes: 8,
            max_call_event_types: 2,
        }
    }

    fn set(key: &str, value: usize) -> Write<'_> {
        Write {
            what: "value",
            key: Some(key),
            size: key.len() + value,
            cost: key.len() + value,
            event_type: None,
        }
    }

    fn publish(event_type: &str, bytes: usize) -> Write<'_> {
        Write {
            what: "event data",
            key: None,
            size: bytes,
            cost: bytes,
            event_type: Some(event_type),
        }
    }

    #[test]
    fn each_limit_is_refused_with_its_name_and_fails_the_call() {
        let cases: [(&[Write<'_>], &str); 4] = [
            (&[set("k", 50), set("k", 60)], "max_call_bytes"),
            (
                &[set("a", 1), set("b", 1), set("c", 1), set("d", 1)],
                "max_call_writes",
            ),
            (&[set("a-long-key", 1)], "max_key_bytes"),
            (
                &[publish("A", 1), publish("B", 1), publish("C", 1)],
                "max_call_event_types",
            ),
        ];
        for (writes, limit) in cases {
            let mut budget = CallBudget::new(limits(), 64);
            let (last, allowed) = writes.split_last().expect("writes");
            for write in allowed {
                budget.spend(*write).expect("within the budget");
            }
            let message = budget.spend(*last).expect_err("over the budget");
            assert!(message.contains(limit), "{limit}: {message}");
            assert_eq!(
                budget.exceeded().map(|refusal| refusal.reason.label()),
                Some(limit)
            );
            // Everything after is refused too, naming the first reason.
            let later = budget.spend(set("z", 0)).expect_err("refused");
            assert!(
                later.contains("already exceeded") && later.contains(limit),
                "{later}"
            );
            assert_eq!(budget.refused(), 2);
            let failure = budget.finish("p", &Metrics::new()).expect("the call fails");
            assert!(failure.contains(limit), "{failure}");
            assert_eq!(budget.refused(), 0, "reset for the next call");
            assert!(budget.exceeded().is_none());
        }
    }

    #[test]
    fn deletes_count_as_writes_and_publishing_to_a_known_type_is_free() {
        let mut budget = CallBudget::new(limits(), 64);
        let delete = Write {
            what: "delete",
            key: Some("k"),
            size: 1,
            cost: 1,
            event_type: None,
        };
        for _ in 0..3 {
            budget.spend(delete).expect("within the budget");
        }
        assert!(
            budget
                .spend(delete)
                .expect_err("fourth write")
                .contains("max_call_writes")
        );

        let mut budget = CallBudget::new(limits(), 64);
        for event_type in ["A", "B", "A"] {
            budget.spend(publish(event_type, 1)).expect("two types");
        }
    }

    #[test]
    fn invalid_writes_are_refused_without_failing_the_call() {
        let mut budget = CallBudget::new(limits(), 64);
        let message = budget.spend(publish("A", 65)).expect_err("too big");
        assert!(message.contains("max_event_bytes"), "{message}");
        budget.refuse_invalid("invalid event type".into());
        budget.spend(publish("A", 10)).expect("the call goes on");
        assert_eq!(budget.refused(), 2);
        let metrics = Metrics::new();
        assert_eq!(budget.finish("p", &metrics), None, "the call does not fail");
        let text = metrics.render();
        for reason in ["max_event_bytes", "invalid"] {
            assert!(
                text.contains(&format!(
                    "evhost_effects_refused_total{{plugin=\"p\",reason=\"{reason}\"}} 1"
                )),
                "{text}"
            );
        }
    }
}
