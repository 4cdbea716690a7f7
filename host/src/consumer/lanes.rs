//! Lanes: the instances that handle a batch. Events go to a lane by their partition key
//! (`[limits] partition_key`); each lane calls its own instance in stream order, and the
//! lanes of a batch run at the same time. Without a partition key there is one lane.
//!
//! A lane owns its batch overlay (the key-value writes of its calls not committed yet) and
//! lends it to its instance for each call. A failed call discards the lane's instance, never
//! its overlay; the lane stops there and the rest of its work waits for the next round, on a
//! fresh instance that still reads the batch's uncommitted writes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::context::StreamContext;
use super::intake::{Attempt, Work};
use super::rollout_call::RolloutCall;
use crate::plugin::{
    BatchOverlay, CallError, DeliveryInfo, Outcome, PluginInstance, PluginVersion,
};
use crate::rollout::Rollout;

/// A handler call and what its settlement and report need.
pub(super) struct Call {
    pub attempt: Attempt,
    pub event_id: String,
    /// The event's `partitionkey` (`None`: its key is its id), for ordered retries.
    pub partition_key: Option<String>,
    pub result: Result<Outcome, CallError>,
    pub started_at: SystemTime,
    pub elapsed: Duration,
    /// The version that handled it.
    pub handled_by: Arc<PluginVersion>,
}

/// What the lanes did in one round.
pub(super) struct Round {
    /// The calls made, in stream order.
    pub calls: Vec<Call>,
    /// Work not started (a lane stopped: failed call, swap or cancellation), in stream order.
    pub rest: Vec<Work>,
}

/// One lane: its instance, if one is running, the candidate's during a rollout, and its
/// batch overlay.
#[derive(Default)]
struct Lane {
    instance: Option<PluginInstance>,
    candidate: Option<PluginInstance>,
    overlay: BatchOverlay,
}

/// An instance could not be made; the work stays pending and is delivered again.
#[derive(Debug, thiserror::Error)]
#[error("cannot instantiate plugin: {0:#}")]
pub(super) struct NoInstance(wasmtime::Error);

/// The lanes of one consumer, all of one state of the plugin's deployment: one live version
/// and the rollout under way, if any.
pub(super) struct Lanes {
    context: Arc<StreamContext>,
    /// The version the lanes' instances are made from (`None` before the first batch).
    version: Option<Arc<PluginVersion>>,
    /// The rollout under way when the lanes were made.
    rollout: Option<Arc<Rollout>>,
    /// The deployment's generation then (see [`crate::rollout::Deployment::generation`]).
    generation: u64,
    lanes: Vec<Lane>,
}

impl Lanes {
    pub fn new(context: Arc<StreamContext>) -> Self {
        Lanes {
            context,
            version: None,
            rollout: None,
            generation: 0,
            lanes: Vec::new(),
        }
    }

    /// The live version the lanes run, if the deployment changed since they were made (a
    /// swap, a rollout started or ended, a promotion or a rollback). The batch so far must
    /// then be committed and the lanes [reset](Lanes::reset): calls already made stay with
    /// the versions that made them, every later event goes to the new state.
    pub fn stale_version(&self) -> Option<Arc<PluginVersion>> {
        self.version
            .as_ref()
            .filter(|_| self.context.slot.generation() != self.generation)
            .cloned()
    }

    /// Drops every lane (after a change, once the batch so far is committed).
    pub fn reset(&mut self) {
        self.version = None;
        self.rollout = None;
        self.lanes.clear();
    }

    /// Makes sure there are as many lanes as the current version asks for, and that every
    /// lane with work runs an instance of it.
    pub async fn prepare(&mut self, work: &[Work]) -> Result<(), NoInstance> {
        let version = match &self.version {
            Some(version) => version.clone(),
            None => {
                // The generation first: a change made meanwhile shows as a stale state.
                self.generation = self.context.slot.generation();
                let current = self.context.slot.load_full();
                self.rollout = self.context.slot.rollout();
                self.lanes.clear();
                self.lanes
                    .resize_with(current.settings.lanes(), Lane::default);
                self.version = Some(current.clone());
                current
            }
        };
        let count = self.lanes.len();
        for item in work {
            let lane = &mut self.lanes[lane_of(item.key, count)];
            if lane.instance.is_none() {
                lane.instance = Some(
                    version
                        .instantiate_in(self.context.keyspace)
                        .await
                        .map_err(NoInstance)?,
                );
            }
        }
        Ok(())
    }

    /// Hands the work to the lanes and runs them at the same time.
    pub async fn run_round(&mut self, work: Vec<Work>) -> Round {
        let count = self.lanes.len();
        let mut per_lane: Vec<Vec<Work>> = (0..count).map(|_| Vec::new()).collect();
        for item in work {
            per_lane[lane_of(item.key, count)].push(item);
        }
        let Some(version) = self.version.clone() else {
            // Not prepared: nothing runs, the work waits.
            return Round {
                calls: Vec::new(),
                rest: per_lane.into_iter().flatten().collect(),
            };
        };
        let context = &*self.context;
        let (rollout, generation) = (self.rollout.as_deref(), self.generation);
        let runs = self
            .lanes
            .iter_mut()
            .zip(per_lane)
            .filter(|(_, items)| !items.is_empty())
            .map(|(lane, items)| lane.run(context, &version, rollout, generation, items));
        let mut round = Round {
            calls: Vec::new(),
            rest: Vec::new(),
        };
        for run in futures_util::future::join_all(runs).await {
            round.calls.extend(run.calls);
            round.rest.extend(run.rest);
        }
        round
            .calls
            .sort_unstable_by_key(|call| call.attempt.position);
        round
            .rest
            .sort_unstable_by_key(|item| item.attempt.position);
        round
    }

    /// The batch was committed (or abandoned): the overlays are cleared.
    pub fn end_batch(&mut self) {
        for lane in &mut self.lanes {
            lane.overlay.clear();
        }
    }
}

/// The lane of an event with partition-key hash `key` among `lanes`.
fn lane_of(key: u64, lanes: usize) -> usize {
    usize::try_from(key % lanes.max(1) as u64).unwrap_or(0)
}

impl Lane {
    /// Calls the plugin for each item in order (with the candidate of `rollout`, if any);
    /// stops after a failed call (the instance is discarded), when the deployment changed
    /// from `generation`, or when the consumer stops. Without an instance, nothing is called
    /// and all the work is returned.
    async fn run(
        &mut self,
        context: &StreamContext,
        version: &Arc<PluginVersion>,
        rollout: Option<&Rollout>,
        generation: u64,
        items: Vec<Work>,
    ) -> Round {
        let journal = rollout.map(|_| context.keyspace.journal(&context.group));
        let mut calls = Vec::with_capacity(items.len());
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            let Some(instance) = self.instance.as_mut() else {
                return stopped(calls, item, items);
            };
            if context.cancel.is_cancelled() || context.slot.generation() != generation {
                return stopped(calls, item, items);
            }
            let Work {
                attempt,
                event,
                key,
            } = item;
            let delivery = DeliveryInfo {
                stream: attempt.origin_stream.clone(),
                entry_id: attempt.origin_entry.to_string(),
                attempt: attempt.number(),
                group: context.group.clone(),
            };
            let event_id = event.id.clone();
            let partition_key = event
                .extension(crate::event::PARTITION_KEY)
                .map(str::to_string);
            let started_at = SystemTime::now();
            let started = Instant::now();
            let (result, handled_by) = match (rollout, journal.as_deref()) {
                (Some(rollout), Some(journal)) => {
                    // Canary keys: the plugin's `partition_key` field, else the event's key.
                    let key = if version.settings.partition_key.is_some() {
                        key
                    } else {
                        u64::from(crate::partition::fnv1a32(
                            crate::partition::key_of(&event).as_bytes(),
                        ))
                    };
                    let call = RolloutCall {
                        rollout,
                        live: instance,
                        live_version: version,
                        candidate: &mut self.candidate,
                        overlay: &mut self.overlay,
                        keyspace: context.keyspace,
                        journal,
                    };
                    call.handle(event, delivery, key).await
                }
                _ => (
                    instance.handle(event, delivery, &mut self.overlay).await,
                    version.clone(),
                ),
            };
            let failed = result.is_err();
            // With ordered retries, the events after one that asked for a retry wait for the
            // next round, where those of its key are held back.
            let retried =
                version.settings.ordered_retries && matches!(result, Ok(Outcome::Retry { .. }));
            calls.push(Call {
                attempt,
                event_id,
                partition_key,
                result,
                started_at,
                elapsed: started.elapsed(),
                handled_by,
            });
            if failed {
                // A trap or timeout leaves the instance in an unknown state.
                self.instance = None;
                return Round {
                    calls,
                    rest: items.collect(),
                };
            }
            if retried {
                return Round {
                    calls,
                    rest: items.collect(),
                };
            }
        }
        Round {
            calls,
            rest: Vec::new(),
        }
    }
}

/// The round of a lane that stopped before `next`.
fn stopped(calls: Vec<Call>, next: Work, rest: impl Iterator<Item = Work>) -> Round {
    Round {
        calls,
        rest: std::iter::once(next).chain(rest).collect(),
    }
}
