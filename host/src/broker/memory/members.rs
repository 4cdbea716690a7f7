//! Sets and roll calls of the in-memory broker: the registry of streams and the hosts alive.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// Sets (`SADD`/`SMEMBERS`) and roll calls (members with an expiry) by key.
#[derive(Debug, Default)]
pub(super) struct Members {
    sets: HashMap<String, BTreeSet<String>>,
    roll_calls: HashMap<String, HashMap<String, Instant>>,
}

impl Members {
    /// Adds `members` to the set `key`.
    pub(super) fn add(&mut self, key: &str, members: &[String]) {
        if members.is_empty() {
            return;
        }
        self.sets
            .entry(key.to_string())
            .or_default()
            .extend(members.iter().cloned());
    }

    /// The members of the set `key`, sorted.
    pub(super) fn of(&self, key: &str) -> Vec<String> {
        self.sets
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks `member` of roll call `key` alive until `now + ttl`, forgets the expired, and
    /// returns how many are alive.
    pub(super) fn heartbeat(
        &mut self,
        key: &str,
        member: &str,
        ttl: Duration,
        now: Instant,
    ) -> u32 {
        let roll_call = self.roll_calls.entry(key.to_string()).or_default();
        roll_call.insert(member.to_string(), now + ttl);
        roll_call.retain(|_, until| *until > now);
        u32::try_from(roll_call.len()).unwrap_or(u32::MAX)
    }

    /// Takes `member` off roll call `key`.
    pub(super) fn leave(&mut self, key: &str, member: &str) {
        if let Some(roll_call) = self.roll_calls.get_mut(key) {
            roll_call.remove(member);
        }
    }
}
