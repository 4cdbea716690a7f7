//! Ordered retries (`[retry] ordered = true`): an event that failed holds back the later
//! events of its partition key until it succeeds or is dead-lettered.
//!
//! Without it a failing event is retried after its backoff while the later events of its key
//! are handled at once: a key's events can be handled out of order. With it, the later events
//! of a blocked key are held here (read, pending for this consumer, not handled) and handed
//! back, in stream order, as soon as the blocking event is settled. Events of other keys flow.
//! Held entries are never claimed for a retry; after a restart they are re-read with the
//! consumer's other pending entries, in stream order, behind their blocking event.

use std::collections::{BTreeMap, HashMap};

use super::intake::Work;
use crate::broker::{Delivered, EntryId};
use crate::partition;

/// The blocked keys of one consumer and the entries they hold back.
#[derive(Debug, Default)]
pub(super) struct OrderedRetries {
    /// Blocked key → the entry that failed.
    blocked: HashMap<String, EntryId>,
    /// Held entries by id, with their key.
    held: BTreeMap<EntryId, (String, Delivered)>,
}

impl OrderedRetries {
    /// Whether entry `id` is held back (it must not be claimed for a retry).
    pub fn holds(&self, id: EntryId) -> bool {
        self.held.contains_key(&id)
    }

    /// Holds back the work of blocked keys (other than their blocking entries); returns the
    /// rest, in order.
    pub fn admit(&mut self, work: Vec<Work>) -> Vec<Work> {
        if self.blocked.is_empty() {
            return work;
        }
        let mut admitted = Vec::with_capacity(work.len());
        for item in work {
            let key = partition::key_of(&item.event);
            match self.blocked.get(key) {
                Some(blocker) if *blocker != item.attempt.id() => {
                    self.held
                        .insert(item.attempt.id(), (key.to_string(), item.attempt.delivered));
                }
                _ => admitted.push(item),
            }
        }
        admitted
    }

    /// The event of `work` failed and stays pending: its key is blocked from now on. Returns
    /// whether the key was not blocked already.
    pub fn failed(&mut self, work_key: &str, id: EntryId) -> bool {
        match self.blocked.get(work_key) {
            Some(blocker) if *blocker <= id => false,
            _ => {
                self.blocked.insert(work_key.to_string(), id);
                true
            }
        }
    }

    /// Entry `id` was settled (handled, rejected or dead-lettered): the key it blocked is
    /// free; returns the entries it held back, in stream order, to be handled next.
    pub fn settled(&mut self, id: EntryId) -> Vec<Delivered> {
        let Some(key) = self
            .blocked
            .iter()
            .find(|(_, blocker)| **blocker == id)
            .map(|(key, _)| key.clone())
        else {
            return Vec::new();
        };
        self.blocked.remove(&key);
        let released: Vec<EntryId> = self
            .held
            .iter()
            .filter(|(_, (held_key, _))| *held_key == key)
            .map(|(id, _)| *id)
            .collect();
        released
            .into_iter()
            .filter_map(|id| self.held.remove(&id).map(|(_, delivered)| delivered))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::StreamEntry;
    use crate::consumer::intake::Attempt;
    use crate::event::{Event, PARTITION_KEY};

    fn work(id: u64, key: &str) -> Work {
        let mut event = Event::new("T", "test", b"{}".to_vec());
        event.set_extension(PARTITION_KEY, key);
        Work {
            attempt: Attempt {
                position: 0,
                delivered: Delivered {
                    entry: StreamEntry {
                        id: EntryId::new(id, 0),
                        fields: event.to_fields(),
                    },
                    deliveries: 1,
                },
                origin_stream: "events:T".into(),
                origin_entry: EntryId::new(id, 0),
            },
            event,
            key: 0,
        }
    }

    fn ids(work: &[Work]) -> Vec<u64> {
        work.iter().map(|item| item.attempt.id().ms).collect()
    }

    #[test]
    fn a_failed_event_holds_its_key_back_until_it_is_settled() {
        let mut ordered = OrderedRetries::default();
        assert_eq!(
            ids(&ordered.admit(vec![work(1, "a"), work(2, "b")])),
            [1, 2]
        );
        assert!(ordered.failed("a", EntryId::new(1, 0)));
        let admitted = ordered.admit(vec![work(3, "a"), work(4, "b"), work(5, "a")]);
        assert_eq!(ids(&admitted), [4], "b flows, a waits");
        assert!(ordered.holds(EntryId::new(3, 0)) && ordered.holds(EntryId::new(5, 0)));
        // The blocking event itself is admitted when it is retried.
        assert_eq!(ids(&ordered.admit(vec![work(1, "a")])), [1]);
        assert!(!ordered.failed("a", EntryId::new(1, 0)), "already blocked");
        let released = ordered.settled(EntryId::new(1, 0));
        let released: Vec<u64> = released.iter().map(|d| d.entry.id.ms).collect();
        assert_eq!(released, [3, 5], "in stream order");
        assert!(!ordered.holds(EntryId::new(3, 0)));
        assert!(ordered.settled(EntryId::new(4, 0)).is_empty());
    }
}
