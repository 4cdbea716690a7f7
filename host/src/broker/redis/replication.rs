//! `--wait-replicas`: `WAIT` for replicas after each write that must survive a primary's
//! crash.
//!
//! Redis replicates asynchronously: a primary that crashes can lose writes it already
//! acknowledged, and the replica promoted in its place never saw them. `WAIT n t` blocks the
//! connection until `n` replicas acknowledged every write sent on it so far (or `t` ms
//! passed), which narrows that window to the writes still in flight; it is not consensus (a
//! replica that confirmed may still lose the write if it fails at the same time, and with
//! `appendfsync everysec` a confirmed write may sit unsynced on both). The broker waits after
//! each commit with effects and after each relay move, before the move's source entry is
//! acknowledged, so an acknowledged entry's effects are on `n` replicas. Plain
//! acknowledgements are not waited for: losing one only delivers an entry again, whose
//! handling (without effects) is done again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Value;

use super::endpoint::Connection;

/// How often at most a shortfall is logged (each one is counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many replicas must confirm each write, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas {
    /// Replicas that must confirm (at least 1).
    pub replicas: u32,
    /// How long to wait for them before going on with a warning.
    pub timeout: Duration,
}

/// The `WAIT`s of one broker and their shortfalls.
#[derive(Debug)]
pub(super) struct Confirmations {
    wait: WaitReplicas,
    /// Writes that fewer replicas than asked confirmed in time (or whose `WAIT` failed).
    shortfalls: AtomicU64,
    /// When a shortfall was logged last.
    last_warning: Mutex<Option<Instant>>,
}

impl Confirmations {
    pub(super) fn new(wait: WaitReplicas) -> Self {
        Confirmations {
            wait,
            shortfalls: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// Writes confirmed by fewer replicas than asked, since the broker was made.
    pub(super) fn shortfalls(&self) -> u64 {
        self.shortfalls.load(Ordering::Relaxed)
    }

    /// Waits until the writes sent so far on `conn` to the node of `key` are on the replicas
    /// asked for. A shortfall is counted and logged (at most every 10 s), never an error:
    /// the write itself succeeded.
    pub(super) async fn confirm(&self, conn: &Connection, key: &str) {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.wait.replicas)
            .arg(u64::try_from(self.wait.timeout.as_millis()).unwrap_or(u64::MAX));
        let confirmed = match conn.clone().query_at(key, cmd).await {
            Ok(Value::Int(confirmed)) => Ok(confirmed),
            Ok(other) => Err(format!("WAIT answered {other:?}")),
            Err(err) => Err(err.to_string()),
        };
        let reason = match confirmed {
            Ok(confirmed) if confirmed >= i64::from(self.wait.replicas) => return,
            Ok(confirmed) => format!(
                "{confirmed} of {} replicas confirmed within {:?}",
                self.wait.replicas, self.wait.timeout
            ),
            Err(err) => format!("WAIT failed: {err}"),
        };
        let total = self.shortfalls.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                key,
                shortfalls = total,
                "{reason}: a crash of this primary now could lose the write (see evhost_replication_shortfalls_total)"
            );
        }
    }
}
