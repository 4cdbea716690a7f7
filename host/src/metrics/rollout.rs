//! The metrics of rollouts: each version's calls, the shadow mismatches and the transitions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{Labels, Metrics, labels};
use crate::rollout::TransitionKind;

type CountFamily = Family<Labels, Counter>;

/// `evhost_rollout_*`.
#[derive(Debug, Clone, Default)]
pub(super) struct RolloutMetrics {
    /// `evhost_rollout_calls_total{plugin,version,role,outcome}`.
    calls: CountFamily,
    /// `evhost_rollout_mismatches_total{plugin,version}`.
    mismatches: CountFamily,
    /// `evhost_rollout_transitions_total{plugin,transition}`.
    transitions: CountFamily,
}

impl RolloutMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = RolloutMetrics::default();
        registry.register(
            "rollout_calls",
            "Calls made during a rollout, by plugin, version, role (live, candidate) and outcome (ok, failed: retry, reject, trap or timeout)",
            metrics.calls.clone(),
        );
        registry.register(
            "rollout_mismatches",
            "Events on which a shadow candidate's effects or outcome differed from the live version's, by plugin and candidate version",
            metrics.mismatches.clone(),
        );
        registry.register(
            "rollout_transitions",
            "Rollout transitions, by plugin and kind (rollout-started, promoted, rolled-back, aborted)",
            metrics.transitions.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts a call of a rollout (`role`: live or candidate; `outcome`: ok or failed).
    pub fn record_rollout_call(&self, plugin: &str, version: &str, role: &str, outcome: &str) {
        self.rollouts
            .calls
            .get_or_create(&labels(&[
                ("plugin", plugin),
                ("version", version),
                ("role", role),
                ("outcome", outcome),
            ]))
            .inc();
    }

    /// Counts an event on which a shadow candidate differed from the live version.
    pub fn record_rollout_mismatch(&self, plugin: &str, version: &str) {
        self.rollouts
            .mismatches
            .get_or_create(&labels(&[("plugin", plugin), ("version", version)]))
            .inc();
    }

    /// Counts a rollout transition.
    pub fn record_rollout_transition(&self, plugin: &str, kind: TransitionKind) {
        self.rollouts
            .transitions
            .get_or_create(&labels(&[
                ("plugin", plugin),
                ("transition", kind.as_str()),
            ]))
            .inc();
    }
}
