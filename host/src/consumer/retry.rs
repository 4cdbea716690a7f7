//! Retries: when a failed entry is tried again, and which pending entries a consumer claims.
//!
//! A failed call (retry error, trap, timeout) leaves its entry pending. Every
//! `retry_interval` the consumer asks for the group's pending entries (`XPENDING ... IDLE`)
//! and claims (`XCLAIM`):
//! - its own entries whose backoff has passed (`base × 2^(failures-1)` with jitter, at most
//!   `cap`) and whose plugin-requested delay, if any, is over, except those it still holds
//!   unhandled (read ahead): those are not failures, and claiming them would hand them to the
//!   plugin twice;
//! - entries of other consumers idle for `claim_idle` too (a crashed or vanished host).
//!
//! The attempt number is Redis's delivery count, so it survives restarts. After
//! `max_attempts` deliveries the entry is dead-lettered.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context::StreamContext;
use crate::broker::{BrokerError, Delivered, EntryId, PendingEntry};

/// The jitter takes a backoff down by at most half: no retry is due before
/// `base × JITTER_FLOOR`, which is why pending entries idle for less are not even asked for.
const JITTER_FLOOR: f64 = 0.5;

/// When failed events are tried again, and when they are given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before an event is dead-lettered (the first delivery counts).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base: Duration,
    /// Longest delay between attempts.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt of an entry that failed `failures` times: exponential
    /// (`base × 2^(failures-1)`, at most `cap`) with a jitter of up to −50 % that is stable for
    /// a given `seed` (e.g. the entry id), so that repeated checks agree.
    pub fn backoff(&self, failures: u32, seed: u64) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        // SplitMix64 of the seed: a cheap, stable pseudo-random fraction in [0.5, 1.0).
        let mut z = seed
            .wrapping_add(u64::from(failures))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        full.mul_f64(JITTER_FLOOR + unit * (1.0 - JITTER_FLOOR))
    }

    /// The shortest backoff any entry can get, whatever its failures and jitter.
    pub fn shortest_backoff(&self) -> Duration {
        self.base.min(self.cap).mul_f64(JITTER_FLOOR)
    }

    /// Whether delivery `attempt` is the last one allowed: if it fails, the entry is
    /// dead-lettered instead of retried.
    pub fn is_last_attempt(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    /// Whether an entry delivered `deliveries` times has run out of attempts before it is
    /// handled (the host crashed or stopped while handling it): it is given up on unhandled.
    pub fn exhausted(&self, deliveries: u32) -> bool {
        deliveries > self.max_attempts
    }
}

/// The consumer's view of its retries: when to look, and the delays the plugin asked for.
pub(super) struct RetrySchedule {
    context: Arc<StreamContext>,
    /// When the pending entries are checked next.
    next_check: Instant,
    /// Entries the plugin asked to retry no earlier than the given time.
    not_before: HashMap<EntryId, Instant>,
}

/// The pending entries a check chose, by whose they were.
#[derive(Debug, Default, PartialEq, Eq)]
struct Due {
    own: Vec<EntryId>,
    others: Vec<EntryId>,
}

/// A stable per-entry seed for the jitter.
fn seed(id: EntryId) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl RetrySchedule {
    pub fn new(context: Arc<StreamContext>) -> Self {
        let next_check = Instant::now() + context.options.retry_interval;
        RetrySchedule {
            context,
            next_check,
            not_before: HashMap::new(),
        }
    }

    /// Whether a check of the pending entries is due now; if so, the next one is scheduled.
    pub fn check_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_check {
            return false;
        }
        self.next_check = now + self.context.options.retry_interval;
        true
    }

    /// Time left until the next check (a blocking read waits no longer).
    pub fn until_next_check(&self) -> Duration {
        self.next_check.saturating_duration_since(Instant::now())
    }

    /// The plugin asked for entry `id` to be retried no earlier than `delay` from now.
    pub fn delay(&mut self, id: EntryId, delay: Duration) {
        self.not_before.insert(id, Instant::now() + delay);
    }

    /// Claims the pending entries whose retry is due, and those of consumers silent for
    /// `claim_idle`, oldest first. `holds` tells the entries this consumer has read but not
    /// handled yet: they are never claimed.
    pub async fn claim_due(
        &mut self,
        holds: impl Fn(EntryId) -> bool,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let context = &self.context;
        let policy = context.slot.load().settings.retry;
        let claim_idle = context.options.claim_idle;
        let min_idle = policy.shortest_backoff().min(claim_idle);
        let pending = context
            .broker()
            .pending(
                &context.stream,
                &context.group,
                min_idle,
                context.options.batch_size,
            )
            .await?;
        let now = Instant::now();
        self.not_before.retain(|_, at| *at > now);
        let due = ClaimFilter {
            policy: &policy,
            consumer: context.consumer(),
            claim_idle,
            lease_owner: context.lease_owner.as_deref(),
            not_before: &self.not_before,
            now,
        }
        .choose(&pending, holds);
        let mut claimed = Vec::new();
        if !due.own.is_empty() {
            claimed.extend(
                context
                    .broker()
                    .claim_entries(
                        &context.stream,
                        &context.group,
                        context.consumer(),
                        Duration::ZERO,
                        &due.own,
                    )
                    .await?,
            );
        }
        if !due.others.is_empty() {
            let taken = context
                .broker()
                .claim_entries(
                    &context.stream,
                    &context.group,
                    context.consumer(),
                    claim_idle,
                    &due.others,
                )
                .await?;
            if !taken.is_empty() {
                tracing::warn!(plugin = %context.group, stream = %context.stream, entries = taken.len(), "took over pending entries of a consumer silent for {claim_idle:?}");
            }
            claimed.extend(taken);
        }
        claimed.sort_by_key(|delivered| delivered.entry.id);
        for delivered in &claimed {
            self.not_before.remove(&delivered.entry.id);
        }
        Ok(claimed)
    }
}

/// Which pending entries are due for a claim, as of `now`.
struct ClaimFilter<'a> {
    policy: &'a RetryPolicy,
    /// This consumer's name: its own entries wait for their backoff only.
    consumer: &'a str,
    /// Other consumers' entries also wait this long.
    claim_idle: Duration,
    /// In a partitioned keyspace, this host's name (the partition's lease holder): entries of
    /// consumers of other hosts are a previous owner's, whose commits are fenced, and are
    /// taken over once their backoff passed, without waiting for `claim_idle`.
    lease_owner: Option<&'a str>,
    /// Plugin-requested delays.
    not_before: &'a HashMap<EntryId, Instant>,
    now: Instant,
}

impl ClaimFilter<'_> {
    /// Whether `consumer` belongs to another host than this partition's lease holder (the
    /// host's workers are `<host>` and `<host>#<n>`).
    fn is_previous_owners(&self, consumer: &str) -> bool {
        self.lease_owner.is_some_and(|owner| {
            consumer != owner
                && !consumer
                    .strip_prefix(owner)
                    .is_some_and(|rest| rest.starts_with('#'))
        })
    }

    /// Chooses, among `pending`, the entries to claim now; `holds` marks the entries this
    /// consumer has read and not handled yet.
    fn choose(&self, pending: &[PendingEntry], holds: impl Fn(EntryId) -> bool) -> Due {
        let mut due = Due::default();
        for entry in pending {
            let backoff = self.policy.backoff(entry.deliveries, seed(entry.id));
            if entry.consumer == self.consumer {
                let delayed = self
                    .not_before
                    .get(&entry.id)
                    .is_some_and(|at| *at > self.now);
                if entry.idle >= backoff && !delayed && !holds(entry.id) {
                    due.own.push(entry.id);
                }
            } else if entry.idle >= backoff.max(self.claim_idle)
                || (self.is_previous_owners(&entry.consumer) && entry.idle >= backoff)
            {
                due.others.push(entry.id);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backoff_is_shorter_than_the_shortest() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for failures in 1..12 {
            for seed in 0..200 {
                let delay = policy.backoff(failures, seed);
                assert!(
                    delay >= policy.shortest_backoff(),
                    "{failures}/{seed}: {delay:?}"
                );
                assert!(delay <= policy.cap);
            }
        }
        let capped = RetryPolicy {
            cap: Duration::from_millis(40),
            ..policy
        };
        assert_eq!(capped.shortest_backoff(), Duration::from_millis(20));
    }

    fn pending(id: u64, consumer: &str, idle_ms: u64, deliveries: u32) -> PendingEntry {
        PendingEntry {
            id: EntryId::new(id, 0),
            consumer: consumer.to_string(),
            idle: Duration::from_millis(idle_ms),
            deliveries,
        }
    }

    #[test]
    fn entries_held_unhandled_or_delayed_are_not_claimed() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let now = Instant::now();
        let mut not_before = HashMap::new();
        not_before.insert(EntryId::new(3, 0), now + Duration::from_secs(5));
        let filter = ClaimFilter {
            policy: &policy,
            consumer: "me",
            claim_idle: Duration::from_secs(30),
            lease_owner: None,
            not_before: &not_before,
            now,
        };
        let entries = [
            pending(1, "me", 150, 1),       // failed, backoff over: due
            pending(2, "me", 150, 1),       // read ahead, not handled yet: held
            pending(3, "me", 150, 1),       // the plugin asked for a delay
            pending(4, "me", 10, 1),        // backoff not over
            pending(5, "other", 150, 1),    // another consumer's, not silent long enough
            pending(6, "other", 31_000, 1), // another consumer's, silent for claim_idle
        ];
        let due = filter.choose(&entries, |id| id == EntryId::new(2, 0));
        assert_eq!(
            due,
            Due {
                own: vec![EntryId::new(1, 0)],
                others: vec![EntryId::new(6, 0)],
            }
        );
    }

    /// With a partition lease, entries of another host's consumers (a previous owner's) are
    /// taken over once their backoff passed; the host's own workers' still wait.
    #[test]
    fn a_partition_owner_takes_a_previous_owners_entries_over_at_once() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let not_before = HashMap::new();
        let filter = ClaimFilter {
            policy: &policy,
            consumer: "me#2",
            claim_idle: Duration::from_secs(30),
            lease_owner: Some("me"),
            not_before: &not_before,
            now: Instant::now(),
        };
        let entries = [
            pending(1, "old-host", 150, 1), // the previous owner's: due
            pending(2, "me", 150, 1),       // this host's first worker: waits
            pending(3, "meow", 150, 1),     // another host whose name starts alike: due
            pending(4, "old-host", 10, 1),  // backoff not over
        ];
        let due = filter.choose(&entries, |_| false);
        assert_eq!(due.others, vec![EntryId::new(1, 0), EntryId::new(3, 0)]);
    }

    #[test]
    fn attempts_run_out_at_the_limit() {
        let policy = RetryPolicy::default();
        assert!(!policy.is_last_attempt(4));
        assert!(policy.is_last_attempt(5));
        assert!(!policy.exhausted(5));
        assert!(policy.exhausted(6));
    }
}
