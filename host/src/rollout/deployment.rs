//! A plugin's deployment: the live version every consumer runs, the candidate of a rollout
//! beside it, and the versions before it, kept compiled for an instant rollback.
//!
//! Consumers load the live version and the rollout at the start of each round and note the
//! [generation](Deployment::generation); every change bumps it, so a consumer that sees
//! another generation commits what it did and starts over on the new state. A rollback is
//! one atomic swap: it takes effect at the next event of every consumer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Rollout;
use crate::plugin::PluginVersion;

/// Earlier live versions kept for a rollback.
pub const KEPT_VERSIONS: usize = 3;
/// Transitions kept for status, the latest.
const MAX_TRANSITIONS: usize = 50;

/// What changed in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransitionKind {
    /// The first version was loaded.
    Loaded,
    /// The live version was replaced (its file changed).
    Swapped,
    /// A candidate started beside the live version.
    RolloutStarted,
    /// The candidate became the live version.
    Promoted,
    /// The candidate was backed out, or the live version returned to the one before it.
    RolledBack,
    /// The rollout was called off (its candidate file removed, or `evhost rollout abort`).
    Aborted,
    /// A version first compiled quickly was replaced by the same code compiled with full
    /// optimisation (see [`crate::plugin::CompileTier`]).
    Optimized,
}

impl TransitionKind {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Loaded => "loaded",
            TransitionKind::Swapped => "swapped",
            TransitionKind::RolloutStarted => "rollout-started",
            TransitionKind::Promoted => "promoted",
            TransitionKind::RolledBack => "rolled-back",
            TransitionKind::Aborted => "aborted",
            TransitionKind::Optimized => "optimized",
        }
    }
}

/// One change of a deployment, for status and the hot-swap timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When (RFC 3339).
    pub at: String,
    /// What happened.
    pub kind: TransitionKind,
    /// The version serving before (`<version> <sha256 prefix>`; empty for the first load).
    pub from: String,
    /// The version serving after, or the candidate started.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// A change that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    /// Promote or abort without a rollout.
    #[error("plugin {plugin:?} has no rollout under way")]
    NoRollout {
        /// The plugin.
        plugin: String,
    },
    /// Rollback without an earlier version.
    #[error(
        "plugin {plugin:?} has no earlier version in this host to roll back to (a host keeps the last {KEPT_VERSIONS} it ran since it started)"
    )]
    NoPreviousVersion {
        /// The plugin.
        plugin: String,
    },
    /// A candidate of another plugin.
    #[error(
        "the candidate describes itself as plugin {candidate:?}, not {plugin:?}: a candidate must be a version of the plugin it rolls out against"
    )]
    NameMismatch {
        /// The plugin rolled out against.
        plugin: String,
        /// The candidate's name.
        candidate: String,
    },
}

/// `<version> <sha256 prefix>`.
fn label(version: &PluginVersion) -> String {
    format!(
        "{} {}",
        version.version,
        &version.sha256[..version.sha256.len().min(12)]
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The versions of one plugin in this host.
pub struct Deployment {
    name: String,
    live: ArcSwap<PluginVersion>,
    rollout: ArcSwapOption<Rollout>,
    /// Bumped by every change.
    generation: AtomicU64,
    /// Earlier live versions, the latest first.
    previous: Mutex<VecDeque<Arc<PluginVersion>>>,
    /// The latest changes, oldest first; also serialises them.
    transitions: Mutex<VecDeque<Transition>>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// A deployment serving `version`.
    pub fn new(version: Arc<PluginVersion>) -> Self {
        let deployment = Deployment {
            name: version.name.clone(),
            live: ArcSwap::new(version.clone()),
            rollout: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            previous: Mutex::new(VecDeque::new()),
            transitions: Mutex::new(VecDeque::new()),
        };
        let mut transitions = lock(&deployment.transitions);
        push(
            &mut transitions,
            TransitionKind::Loaded,
            String::new(),
            label(&version),
            version.origin.clone(),
        );
        drop(transitions);
        deployment
    }

    /// The live version.
    pub fn load(&self) -> Guard<Arc<PluginVersion>> {
        self.live.load()
    }

    /// The live version, owned.
    pub fn load_full(&self) -> Arc<PluginVersion> {
        self.live.load_full()
    }

    /// The rollout under way, if any.
    pub fn rollout(&self) -> Option<Arc<Rollout>> {
        self.rollout.load_full()
    }

    /// Changes so far: consumers compare it to start over after any change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The latest changes, oldest first.
    pub fn transitions(&self) -> Vec<Transition> {
        lock(&self.transitions).iter().cloned().collect()
    }

    /// The earlier live versions kept for a rollback, the latest first.
    pub fn previous_versions(&self) -> Vec<Arc<PluginVersion>> {
        lock(&self.previous).iter().cloned().collect()
    }

    /// Replaces the live version (its file changed); returns the one before, which is kept
    /// for a rollback. A rollout under way goes on against the new live version.
    pub fn swap(&self, version: Arc<PluginVersion>) -> Arc<PluginVersion> {
        let mut transitions = lock(&self.transitions);
        let old = self.live.swap(version.clone());
        self.keep_previous(old.clone());
        self.bump();
        push(
            &mut transitions,
            TransitionKind::Swapped,
            label(&old),
            label(&version),
            version.origin.clone(),
        );
        old
    }

    /// Puts `optimized`, the same code as `quick` compiled with full optimisation, wherever
    /// `quick` still is: live (consumers move to it at their next event) or among the
    /// versions kept for a rollback. Returns whether `quick` was found; a version replaced
    /// since is not brought back.
    pub fn upgrade(&self, quick: &Arc<PluginVersion>, optimized: Arc<PluginVersion>) -> bool {
        let mut transitions = lock(&self.transitions);
        if Arc::ptr_eq(&self.live.load(), quick) {
            self.live.store(optimized.clone());
            self.bump();
            push(
                &mut transitions,
                TransitionKind::Optimized,
                label(quick),
                label(&optimized),
                "recompiled with full optimisation".to_string(),
            );
            return true;
        }
        let mut previous = lock(&self.previous);
        match previous.iter_mut().find(|kept| Arc::ptr_eq(kept, quick)) {
            Some(kept) => {
                *kept = optimized;
                true
            }
            None => false,
        }
    }

    fn keep_previous(&self, version: Arc<PluginVersion>) {
        let mut previous = lock(&self.previous);
        previous.push_front(version);
        previous.truncate(KEPT_VERSIONS);
    }

    /// Starts `rollout` beside the live version, in place of any under way.
    ///
    /// # Errors
    ///
    /// [`DeploymentError::NameMismatch`] when the candidate is another plugin.
    pub fn start_rollout(&self, rollout: Rollout) -> Result<Transition, DeploymentError> {
        if rollout.candidate.name != self.name {
            return Err(DeploymentError::NameMismatch {
                plugin: self.name.clone(),
                candidate: rollout.candidate.name.clone(),
            });
        }
        let mut transitions = lock(&self.transitions);
        let live = self.load_full();
        let to = label(&rollout.candidate);
        let reason = format!(
            "{} of {} from {}",
            rollout.plan.mode,
            if rollout.mode() == super::Mode::Canary {
                format!("{}% of the keys", rollout.plan.share_pct)
            } else {
                "every event".to_string()
            },
            rollout.candidate.origin
        );
        tracing::info!(plugin = %self.name, live = %label(&live), candidate = %to, reason, "rollout started");
        self.rollout.store(Some(Arc::new(rollout)));
        self.bump();
        Ok(push(
            &mut transitions,
            TransitionKind::RolloutStarted,
            label(&live),
            to,
            reason,
        ))
    }

    /// Ends the rollout under way as `kind` ([`TransitionKind::RolledBack`] or
    /// [`TransitionKind::Aborted`]): the live version alone serves again.
    ///
    /// # Errors
    ///
    /// [`DeploymentError::NoRollout`] without one.
    pub fn end_rollout(
        &self,
        kind: TransitionKind,
        reason: &str,
    ) -> Result<Transition, DeploymentError> {
        let mut transitions = lock(&self.transitions);
        let Some(rollout) = self.rollout.swap(None) else {
            return Err(DeploymentError::NoRollout {
                plugin: self.name.clone(),
            });
        };
        self.bump();
        let live = label(&self.load_full());
        let from = label(&rollout.candidate);
        tracing::warn!(plugin = %self.name, candidate = %from, live = %live, reason, "rollout {}", match kind {
            TransitionKind::RolledBack => "rolled back",
            _ => "aborted",
        });
        Ok(push(&mut transitions, kind, from, live, reason.to_string()))
    }

    /// Makes the candidate the live version; the one before is kept for a rollback.
    ///
    /// # Errors
    ///
    /// [`DeploymentError::NoRollout`] without a rollout.
    pub fn promote(&self, reason: &str) -> Result<Transition, DeploymentError> {
        let mut transitions = lock(&self.transitions);
        let Some(rollout) = self.rollout.swap(None) else {
            return Err(DeploymentError::NoRollout {
                plugin: self.name.clone(),
            });
        };
        let old = self.live.swap(rollout.candidate.clone());
        self.keep_previous(old.clone());
        self.bump();
        let (from, to) = (label(&old), label(&rollout.candidate));
        tracing::info!(plugin = %self.name, from = %from, to = %to, reason, "rollout promoted");
        Ok(push(
            &mut transitions,
            TransitionKind::Promoted,
            from,
            to,
            reason.to_string(),
        ))
    }

    /// Rolls back: the candidate of a rollout under way is backed out; without one, the live
    /// version returns to the one before it.
    ///
    /// # Errors
    ///
    /// [`DeploymentError::NoPreviousVersion`] with neither.
    pub fn roll_back(&self, reason: &str) -> Result<Transition, DeploymentError> {
        if self.rollout.load().is_some()
            && let Ok(transition) = self.end_rollout(TransitionKind::RolledBack, reason)
        {
            return Ok(transition);
        }
        let mut transitions = lock(&self.transitions);
        let Some(previous) = lock(&self.previous).pop_front() else {
            return Err(DeploymentError::NoPreviousVersion {
                plugin: self.name.clone(),
            });
        };
        let old = self.live.swap(previous.clone());
        self.bump();
        let (from, to) = (label(&old), label(&previous));
        tracing::warn!(plugin = %self.name, from = %from, to = %to, reason, "rolled back to the previous version");
        Ok(push(
            &mut transitions,
            TransitionKind::RolledBack,
            from,
            to,
            reason.to_string(),
        ))
    }
}

/// Records a transition; returns it.
fn push(
    transitions: &mut VecDeque<Transition>,
    kind: TransitionKind,
    from: String,
    to: String,
    reason: String,
) -> Transition {
    let transition = Transition {
        at: Timestamp::now().to_string(),
        kind,
        from,
        to,
        reason,
    };
    if transitions.len() == MAX_TRANSITIONS {
        transitions.pop_front();
    }
    transitions.push_back(transition.clone());
    transition
}
