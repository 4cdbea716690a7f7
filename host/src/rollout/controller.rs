//! The rollout controller: judges every rollout of the host a few times a second and carries
//! out the verdict (an automatic rollback or promotion).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Verdict;
use super::deployment::TransitionKind;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How often rollouts are judged: a failing canary is backed out within this much of the
/// call that crossed the line.
const JUDGE_INTERVAL: Duration = Duration::from_millis(100);

/// Judges the rollouts of one host.
pub struct RolloutController {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl RolloutController {
    /// A controller of the rollouts of the plugins in `registry`.
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        RolloutController { registry, metrics }
    }

    /// Judges every rollout once and carries out the verdicts.
    pub fn pass(&self) {
        let now = Instant::now();
        for (name, deployment) in self.registry.slots() {
            let Some(rollout) = deployment.rollout() else {
                continue;
            };
            let result = match rollout.judge(now) {
                Verdict::Continue => continue,
                Verdict::RollBack(reason) => deployment
                    .end_rollout(TransitionKind::RolledBack, &format!("automatic: {reason}")),
                Verdict::Promote(reason) => deployment.promote(&format!("automatic: {reason}")),
            };
            match result {
                Ok(transition) => {
                    self.metrics
                        .record_rollout_transition(&name, transition.kind);
                    let live = deployment.load_full();
                    self.metrics
                        .set_plugin_info(&name, &live.version, &live.sha256);
                }
                // Ended meanwhile by hand: nothing left to do.
                Err(err) => {
                    tracing::debug!(plugin = %name, error = %err, "rollout verdict not applied")
                }
            }
        }
    }

    /// Judges until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(JUDGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => self.pass(),
            }
        }
    }
}
