//! Safe rollouts: a candidate version proven on live traffic beside the live one before it
//! takes over, and backed out by itself when it misbehaves.
//!
//! - **Shadow** ([`Mode::Shadow`]): the candidate handles a copy of every event, reading the
//!   same state as the live call; its effects are compared with the live ones
//!   ([`compare`]) and dropped. Only the live effects are committed.
//! - **Canary** ([`Mode::Canary`]): the events of a share of the partition keys go to the
//!   candidate, for real, so one key always meets one version, in order. An event the
//!   candidate fails (retry, reject, trap, timeout) is handed at once to the live version in
//!   the same lane: a failing candidate loses nothing and dead-letters nothing.
//! - **Judgement**: over each window ([`RolloutPlan::window`]) the candidate's failure rate
//!   and p99 are compared with the live version's ([`Rollout::judge`]); too much worse and it
//!   is rolled back, clean long enough and (if asked) promoted.
//!
//! The candidate runs with its own per-call limits; consumer-level settings (lanes, retries,
//! batch) stay the live version's until it is promoted. Each host judges its own traffic.
//!
//! [`Deployment`] holds a plugin's live version, its rollout and the versions before it.

mod compare;
mod controller;
mod deployment;
mod judge;
pub mod plan;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::plugin::{CallError, Outcome, PluginVersion};
pub use controller::RolloutController;
pub use deployment::{Deployment, DeploymentError, KEPT_VERSIONS, Transition, TransitionKind};
use judge::Judge;
pub use plan::{Mode, Promotion, RolloutPlan};
pub use stats::Snapshot;

/// Mismatches kept per rollout, the latest.
pub const MAX_MISMATCHES: usize = 100;

/// Buckets of the key space a canary share is counted in (a share is 0.01 % precise).
const KEY_BUCKETS: u64 = 10_000;

/// Which version made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The live version.
    Live,
    /// The candidate.
    Candidate,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Live => "live",
            Role::Candidate => "candidate",
        }
    }
}

/// One event on which the shadow candidate did not do what the live version did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// When it was seen (RFC 3339).
    pub at: String,
    /// The stream of the event.
    pub stream: String,
    /// Its entry id.
    pub entry_id: String,
    /// Its event id.
    pub event_id: String,
    /// What differed, one line per difference (`- live: ...`, `+ candidate: ...`).
    pub diff: String,
}

/// What the rollout's judge decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Roll the candidate back, for this reason.
    RollBack(String),
    /// Promote the candidate, for this reason.
    Promote(String),
}

/// A candidate version beside the live one.
pub struct Rollout {
    /// The candidate.
    pub candidate: Arc<PluginVersion>,
    /// Its rules.
    pub plan: RolloutPlan,
    /// When it started.
    pub started_at: Timestamp,
    /// Canary: keys whose bucket is below this go to the candidate.
    share_buckets: u64,
    judge: Judge,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("candidate", &self.candidate.version)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// The state of a rollout, for `/api/plugins`, `evhost rollout status` and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Shadow or canary.
    pub mode: Mode,
    /// The candidate's version string.
    pub candidate_version: String,
    /// Hex SHA-256 of the candidate's component.
    pub candidate_sha256: String,
    /// Where the candidate came from.
    pub candidate_origin: String,
    /// When the rollout started (RFC 3339).
    pub started_at: String,
    /// Its rules.
    pub plan: RolloutPlan,
    /// Shadow: events both versions handled and compared.
    pub compared: u64,
    /// Shadow: the share of compared events on which they agreed, in percent.
    pub agreement_pct: Option<f64>,
    /// Shadow: events on which they did not.
    pub mismatches: u64,
    /// Shadow: the latest mismatches (at most [`MAX_MISMATCHES`]), oldest first.
    pub recent_mismatches: Vec<Mismatch>,
    /// The live version's calls since the rollout started (canary: those of its keys).
    pub live: Snapshot,
    /// The candidate's calls since the rollout started.
    pub candidate: Snapshot,
    /// How long the current window has run.
    pub window_elapsed_ms: u64,
    /// The live version's calls in the current window.
    pub window_live: Snapshot,
    /// The candidate's calls in the current window.
    pub window_candidate: Snapshot,
    /// Clean windows in a row so far.
    pub clean_windows: u32,
}

/// Whether a call failed, for the judgement: retries, rejects, traps and timeouts.
pub fn failed(result: &Result<Outcome, CallError>) -> bool {
    !matches!(result, Ok(Outcome::Ok(_)))
}

impl Rollout {
    /// A rollout of `candidate` by `plan`, starting now.
    pub fn new(candidate: Arc<PluginVersion>, plan: RolloutPlan, metrics: Arc<Metrics>) -> Self {
        let share_buckets = (plan.share_pct / 100.0 * KEY_BUCKETS as f64).round() as u64;
        Rollout {
            candidate,
            share_buckets,
            judge: Judge::new(plan.clone(), Instant::now()),
            plan,
            started_at: Timestamp::now(),
            metrics,
        }
    }

    /// Shadow or canary.
    pub fn mode(&self) -> Mode {
        self.plan.mode
    }

    /// Canary: whether the events whose partition key hashes to `hash` go to the candidate.
    /// The same key always gets the same answer (on every host), so its events meet one
    /// version.
    pub fn takes_key(&self, hash: u64) -> bool {
        // Spread the hash before bucketing: partitions and lanes use it modulo small counts.
        let mixed = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        mixed % KEY_BUCKETS < self.share_buckets
    }

    /// Counts a call of `role`; `version` is the version string of the one that made it.
    pub fn record(&self, role: Role, version: &str, failed: bool, elapsed: Duration) {
        self.judge.record(role, failed, elapsed);
        self.metrics.record_rollout_call(
            &self.candidate.name,
            version,
            role.as_str(),
            if failed { "failed" } else { "ok" },
        );
    }

    /// Shadow: compares the candidate's call on an event with the live one's (`journal` is
    /// the plugin's journal stream, not compared); records and counts a mismatch. Returns
    /// whether they agreed.
    pub fn compare(
        &self,
        stream: &str,
        entry_id: &str,
        event_id: &str,
        live: &Result<Outcome, CallError>,
        candidate: &Result<Outcome, CallError>,
        journal: &str,
    ) -> bool {
        let Some(diff) = compare::difference(live, candidate, journal) else {
            self.judge.compared(None);
            return true;
        };
        tracing::debug!(plugin = %self.candidate.name, stream, entry_id, event_id, diff, "shadow: the candidate differs from the live version");
        self.judge.compared(Some(Mismatch {
            at: Timestamp::now().to_string(),
            stream: stream.to_string(),
            entry_id: entry_id.to_string(),
            event_id: event_id.to_string(),
            diff,
        }));
        self.metrics
            .record_rollout_mismatch(&self.candidate.name, &self.candidate.version);
        false
    }

    /// What the judge says now (see [`Judge::judge`]).
    pub fn judge(&self, now: Instant) -> Verdict {
        self.judge.judge(now)
    }

    /// Its state now.
    pub fn status(&self) -> RolloutStatus {
        let figures = self.judge.figures();
        RolloutStatus {
            mode: self.plan.mode,
            candidate_version: self.candidate.version.clone(),
            candidate_sha256: self.candidate.sha256.clone(),
            candidate_origin: self.candidate.origin.clone(),
            started_at: self.started_at.to_string(),
            plan: self.plan.clone(),
            compared: figures.compared,
            agreement_pct: (self.plan.mode == Mode::Shadow && figures.compared > 0)
                .then(|| figures.agreed as f64 * 100.0 / figures.compared as f64),
            mismatches: figures.compared - figures.agreed,
            recent_mismatches: figures.mismatches,
            live: figures.live,
            candidate: figures.candidate,
            window_elapsed_ms: u64::try_from(figures.window_elapsed.as_millis())
                .unwrap_or(u64::MAX),
            window_live: figures.window_live,
            window_candidate: figures.window_candidate,
            clean_windows: figures.clean_windows,
        }
    }
}
