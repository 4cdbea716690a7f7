//! One handler call while a rollout is under way (see [`crate::rollout`]): a shadow candidate
//! handles a copy of the event beside the live version, a canary candidate handles the
//! events of its keys and hands those it fails to the live version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::keyspace::Keyspace;
use crate::plugin::{
    BatchOverlay, CallError, DeliveryInfo, Outcome, PluginInstance, PluginVersion,
};
use crate::rollout::{Mode, Role, Rollout, failed};

/// What a lane lends to one call during a rollout.
pub(super) struct RolloutCall<'a> {
    pub rollout: &'a Rollout,
    pub live: &'a mut PluginInstance,
    pub live_version: &'a Arc<PluginVersion>,
    /// The lane's candidate instance (made on first use, dropped after a trap or timeout).
    pub candidate: &'a mut Option<PluginInstance>,
    /// The lane's batch overlay.
    pub overlay: &'a mut BatchOverlay,
    /// The partition the consumer works in.
    pub keyspace: Keyspace,
    /// The plugin's journal stream there (not compared in shadow).
    pub journal: &'a str,
}

/// The result of `call` and how long it took.
async fn timed<T>(call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = call.await;
    (result, started.elapsed())
}

impl RolloutCall<'_> {
    /// Makes the lane's candidate instance if there is none; when it cannot be made, that
    /// counts as a failed candidate call.
    async fn ensure_candidate(&mut self) {
        if self.candidate.is_some() {
            return;
        }
        match self.rollout.candidate.instantiate_in(self.keyspace).await {
            Ok(mut instance) => {
                if self.rollout.mode() == Mode::Shadow {
                    instance.mark_shadow();
                }
                *self.candidate = Some(instance);
            }
            Err(err) => {
                let candidate = &self.rollout.candidate;
                tracing::warn!(plugin = %candidate.name, version = %candidate.version, error = %format!("{err:#}"), "rollout: cannot instantiate the candidate");
                self.rollout
                    .record(Role::Candidate, &candidate.version, true, Duration::ZERO);
            }
        }
    }

    /// The live version alone handles the event (counted as a live call).
    async fn live_only(
        self,
        event: Event,
        delivery: DeliveryInfo,
    ) -> (Result<Outcome, CallError>, Arc<PluginVersion>) {
        let (result, elapsed) = timed(self.live.handle(event, delivery, self.overlay)).await;
        let version = &self.live_version.version;
        self.rollout
            .record(Role::Live, version, failed(&result), elapsed);
        (result, self.live_version.clone())
    }

    /// Handles `event`; `key` is the hash of its partition key (canary routing). Returns the
    /// result to settle and the version it comes from.
    pub async fn handle(
        self,
        event: Event,
        delivery: DeliveryInfo,
        key: u64,
    ) -> (Result<Outcome, CallError>, Arc<PluginVersion>) {
        match self.rollout.mode() {
            Mode::Shadow => self.shadow(event, delivery).await,
            Mode::Canary if self.rollout.takes_key(key) => self.canary(event, delivery).await,
            Mode::Canary => self.live_only(event, delivery).await,
        }
    }

    /// Both versions handle the event at once, the candidate on a copy of the batch overlay
    /// (it reads what the live call reads); the candidate's effects are compared and dropped.
    async fn shadow(
        mut self,
        event: Event,
        delivery: DeliveryInfo,
    ) -> (Result<Outcome, CallError>, Arc<PluginVersion>) {
        let stream = delivery.stream.clone();
        let entry_id = delivery.entry_id.clone();
        let event_id = event.id.clone();
        let mut shadow_overlay = self.overlay.clone();
        let rollout = self.rollout;
        let live_version = self.live_version.clone();
        let journal = self.journal;
        self.ensure_candidate().await;
        let Some(candidate) = self.candidate.as_mut() else {
            return self.live_only(event, delivery).await;
        };
        let live_call = timed(
            self.live
                .handle(event.clone(), delivery.clone(), self.overlay),
        );
        let candidate_call = timed(candidate.handle(event, delivery, &mut shadow_overlay));
        let ((live, live_elapsed), (shadow, shadow_elapsed)) =
            tokio::join!(live_call, candidate_call);
        rollout.record(
            Role::Live,
            &live_version.version,
            failed(&live),
            live_elapsed,
        );
        rollout.record(
            Role::Candidate,
            &rollout.candidate.version,
            failed(&shadow),
            shadow_elapsed,
        );
        rollout.compare(&stream, &entry_id, &event_id, &live, &shadow, journal);
        if shadow.is_err() {
            // A trap or timeout leaves the instance in an unknown state.
            *self.candidate = None;
        }
        (live, live_version)
    }

    /// The candidate handles the event for real; if it fails, the live version handles it
    /// at once (that call is not counted: the judgement compares each version's own keys).
    async fn canary(
        mut self,
        event: Event,
        delivery: DeliveryInfo,
    ) -> (Result<Outcome, CallError>, Arc<PluginVersion>) {
        let rollout = self.rollout;
        self.ensure_candidate().await;
        if let Some(candidate) = self.candidate.as_mut() {
            let (result, elapsed) =
                timed(candidate.handle(event.clone(), delivery.clone(), self.overlay)).await;
            let failure = failed(&result);
            rollout.record(
                Role::Candidate,
                &rollout.candidate.version,
                failure,
                elapsed,
            );
            if !failure {
                return (result, rollout.candidate.clone());
            }
            if result.is_err() {
                *self.candidate = None;
            }
            tracing::debug!(plugin = %rollout.candidate.name, entry_id = %delivery.entry_id, result = ?result.as_ref().err(), "canary: the candidate failed the event; the live version handles it");
        }
        let result = self.live.handle(event, delivery, self.overlay).await;
        (result, self.live_version.clone())
    }
}
