//! Stream retention: event streams only grow unless something trims them. Rules per event type
//! (`--retain-len 'Bid*=100000'`, `--retain-age 'AuctionEnded=604800'`) say how many entries,
//! or how many seconds of them, to keep; the host trims the rest with `XTRIM MINID`.
//!
//! It never trims an entry that some consumer group has not yet delivered or acknowledged: the
//! cut stops at the oldest entry any group still needs (its oldest pending entry, or the first
//! one after its last delivered). A group that holds the cut back is warned about once, until
//! it catches up. Each pass trims at most [`MAX_TRIM_PER_PASS`] entries of a stream by length,
//! so that the work of one pass stays bounded however long the stream is.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::broker::{Broker, BrokerError, EntryId};
use crate::keyspace::Keyspace;
use crate::plugin::Subscription;

/// Most entries one pass looks at (and trims) in one stream for a length rule.
pub const MAX_TRIM_PER_PASS: usize = 10_000;

/// A rule that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid retention rule {rule:?}: {reason} (expected TYPE_PATTERN=NUMBER, e.g. 'Bid*=100000')"
)]
pub struct InvalidRule {
    rule: String,
    reason: String,
}

/// What to keep of the streams whose event type matches a pattern.
#[derive(Debug, Clone)]
struct Rule<T> {
    pattern: Subscription,
    keep: T,
}

/// Retention rules; the first rule of each kind whose pattern matches a type applies.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Entries to keep.
    by_len: Vec<Rule<u64>>,
    /// How old the oldest kept entry may be.
    by_age: Vec<Rule<Duration>>,
}

/// Splits `PATTERN=NUMBER`.
fn split_rule(rule: &str) -> Result<(Subscription, u64), InvalidRule> {
    let invalid = |reason: String| InvalidRule {
        rule: rule.to_string(),
        reason,
    };
    let (pattern, number) = rule
        .rsplit_once('=')
        .ok_or_else(|| invalid("no `=`".into()))?;
    let pattern = Subscription::parse(pattern.trim()).map_err(|err| invalid(err.to_string()))?;
    let number = number
        .trim()
        .parse::<u64>()
        .map_err(|err| invalid(format!("{number:?} is not a whole number: {err}")))?;
    Ok((pattern, number))
}

impl Retention {
    /// Rules from `--retain-len` (entries to keep) and `--retain-age` (seconds to keep).
    ///
    /// # Errors
    ///
    /// [`InvalidRule`] naming the rule.
    pub fn parse(by_len: &[String], by_age: &[String]) -> Result<Self, InvalidRule> {
        let mut retention = Retention::default();
        for rule in by_len {
            let (pattern, keep) = split_rule(rule)?;
            retention.by_len.push(Rule { pattern, keep });
        }
        for rule in by_age {
            let (pattern, seconds) = split_rule(rule)?;
            retention.by_age.push(Rule {
                pattern,
                keep: Duration::from_secs(seconds),
            });
        }
        Ok(retention)
    }

    /// Whether there is nothing to trim.
    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty() && self.by_age.is_empty()
    }

    /// The entries and the age to keep of events of `event_type`.
    fn for_type(&self, event_type: &str) -> (Option<u64>, Option<Duration>) {
        let len = self
            .by_len
            .iter()
            .find(|rule| rule.pattern.matches(event_type))
            .map(|rule| rule.keep);
        let age = self
            .by_age
            .iter()
            .find(|rule| rule.pattern.matches(event_type))
            .map(|rule| rule.keep);
        (len, age)
    }
}

/// Applies a [`Retention`] to the event streams of a broker, pass after pass.
pub struct Trimmer {
    retention: Retention,
    keyspace: Keyspace,
    /// (stream, group) pairs warned about as holding a cut back, until they catch up.
    holding_back: HashSet<(String, String)>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Entries trimmed, by stream.
    pub trimmed: Vec<(String, u64)>,
}

impl Trimmer {
    /// A trimmer of the event streams of `keyspace`.
    pub fn new(retention: Retention, keyspace: Keyspace) -> Self {
        Trimmer {
            retention,
            keyspace,
            holding_back: HashSet::new(),
        }
    }

    /// Trims every event stream a rule covers, as far as the rules and the groups allow.
    ///
    /// # Errors
    ///
    /// When the broker fails (the pass stops there; the next one starts over).
    pub async fn pass(&mut self, broker: &dyn Broker) -> Result<Pass, BrokerError> {
        let mut pass = Pass::default();
        for stream in broker.streams(self.keyspace.streams_prefix()).await? {
            let Some((_, event_type)) = self.keyspace.locate_event_stream(&stream) else {
                continue;
            };
            let (len, age) = self.retention.for_type(event_type);
            if len.is_none() && age.is_none() {
                continue;
            }
            let trimmed = self.trim(broker, &stream, len, age).await?;
            if trimmed > 0 {
                pass.trimmed.push((stream, trimmed));
            }
        }
        Ok(pass)
    }

    async fn trim(
        &mut self,
        broker: &dyn Broker,
        stream: &str,
        len: Option<u64>,
        age: Option<Duration>,
    ) -> Result<u64, BrokerError> {
        let mut cut = EntryId::ZERO;
        if let Some(age) = age {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            let oldest_ms = now_ms.saturating_sub(age.as_millis() as u64);
            cut = cut.max(EntryId::new(oldest_ms, 0));
        }
        if let Some(keep) = len {
            let excess = broker.len(stream).await?.saturating_sub(keep);
            let take = usize::try_from(excess)
                .unwrap_or(usize::MAX)
                .min(MAX_TRIM_PER_PASS);
            if take > 0 {
                let oldest = broker
                    .range(stream, EntryId::ZERO, EntryId::MAX, take)
                    .await?;
                if let Some(last) = oldest.last() {
                    cut = cut.max(last.id.next());
                }
            }
        }
        if cut == EntryId::ZERO {
            return Ok(0);
        }
        let mut first_kept = cut;
        for group in broker.groups(stream).await? {
            // The oldest entry the group still needs: its oldest pending one, else the first
            // after the last delivered.
            let needed = match broker
                .pending(stream, &group.name, Duration::ZERO, 1)
                .await?
                .first()
            {
                Some(pending) => pending.id,
                None => group.last_delivered.next(),
            };
            let key = (stream.to_string(), group.name.clone());
            if needed < cut {
                if self.holding_back.insert(key) {
                    tracing::warn!(stream, group = %group.name, needs = %needed, cut = %cut, "retention: this group has not yet delivered or acknowledged entries the rule would trim; trimming only up to them");
                }
                first_kept = first_kept.min(needed);
            } else {
                self.holding_back.remove(&key);
            }
        }
        broker.trim_before(stream, first_kept).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use crate::broker::{GroupStart, Inspect as _};

    fn fields() -> crate::broker::Fields {
        vec![("n".to_string(), b"1".to_vec())]
    }

    #[test]
    fn rules_parse_and_the_first_match_applies() {
        let retention = Retention::parse(
            &["Bid*=100".into(), "*=1000".into()],
            &["AuctionEnded=60".into()],
        )
        .expect("rules");
        assert_eq!(retention.for_type("BidPlaced"), (Some(100), None));
        assert_eq!(
            retention.for_type("AuctionEnded"),
            (Some(1000), Some(Duration::from_secs(60)))
        );
        for bad in ["Bid*", "Bid*=x", "=5", "Bid*=-1"] {
            assert!(Retention::parse(&[bad.into()], &[]).is_err(), "{bad}");
        }
    }

    /// A length rule trims what every group has acknowledged, and stops at what a group still
    /// needs.
    #[tokio::test]
    async fn trims_to_the_length_but_never_what_a_group_still_needs() {
        let broker = MemoryBroker::new();
        let keyspace = Keyspace::single();
        let stream = keyspace.event_stream("A");
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(broker.add(&stream, &fields()).await.expect("add"));
        }
        broker
            .create_group(&stream, "slow", GroupStart::Beginning)
            .await
            .expect("group");
        let retention = Retention::parse(&["*=3".into()], &[]).expect("rule");
        let mut trimmer = Trimmer::new(retention, keyspace);
        // The group has read nothing: nothing may go.
        assert_eq!(trimmer.pass(&broker).await.expect("pass"), Pass::default());
        // It read (and so delivered) five; they stay pending, so they stay.
        let mut reader = broker.reader().await.expect("reader");
        let read = reader
            .read(
                &stream,
                "slow",
                "c",
                crate::broker::ReadFrom::New { block: None },
                5,
            )
            .await
            .expect("read");
        assert_eq!(read.len(), 5);
        assert_eq!(trimmer.pass(&broker).await.expect("pass"), Pass::default());
        // Acknowledged: the first five go; the sixth is still needed (not delivered).
        let acks = crate::broker::Commit {
            ops: Vec::new(),
            settlements: ids[..5]
                .iter()
                .map(|id| crate::broker::Settlement {
                    stream: stream.clone(),
                    group: "slow".into(),
                    consumer: "c".into(),
                    id: *id,
                    ops: Vec::new(),
                    expects: Vec::new(),
                })
                .collect(),
        };
        broker.commit(&acks).await.expect("ack");
        let pass = trimmer.pass(&broker).await.expect("pass");
        assert_eq!(pass.trimmed, [(stream.clone(), 5)]);
        assert_eq!(broker.len(&stream).await.expect("len"), 5);
    }
}
