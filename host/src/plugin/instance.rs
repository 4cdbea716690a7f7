//! Loaded plugin versions and their instances.
//!
//! A [`PluginVersion`] is one compiled, type-checked and described plugin file; it is immutable
//! and shared (`Arc`). A [`PluginInstance`] is a store plus an instance of it, owned by one
//! consumer task and reused across events; an instance whose call trapped or timed out is
//! discarded and a fresh one is made from the pre-instantiated component.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use super::bindings::evhost::plugin::types;
use super::bindings::{Plugin, PluginPre};
use super::budget::CallBudget;
use super::overlay::BatchOverlay;
use super::settings::PluginSettings;
use super::state::{CallEffects, CallScope, HostServices, PluginState};
use super::subscription::Subscription;
use super::tier::CompileTier;
use crate::event::{Event, PARTITION_KEY};
use crate::keyspace::Keyspace;

/// A call that did not return normally. The instance must be discarded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The guest trapped (panic, unreachable, out of memory, ...).
    #[error("trapped: {0}")]
    Trap(String),
}

/// What the plugin said about an event.
#[derive(Debug)]
pub enum Outcome {
    /// Handled: commit these effects and acknowledge.
    Ok(CallEffects),
    /// Transient failure: deliver again later.
    Retry {
        /// Why.
        reason: String,
        /// Requested minimum delay.
        delay: Option<Duration>,
    },
    /// Permanent failure: never succeeds.
    Reject {
        /// Why.
        reason: String,
    },
}

/// How the event reached the plugin.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    /// Source stream.
    pub stream: String,
    /// Stream entry id.
    pub entry_id: String,
    /// Attempt number, 1 for the first delivery.
    pub attempt: u32,
    /// Consumer group.
    pub group: String,
}

/// One loaded, validated plugin version.
pub struct PluginVersion {
    /// Unique name; also the consumer group.
    pub name: String,
    /// The plugin's own version string.
    pub version: String,
    /// What it subscribes to.
    pub subscriptions: Vec<Subscription>,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Where it was loaded from (path, or `embedded:<name>`).
    pub origin: String,
    /// When it was loaded.
    pub loaded_at: Timestamp,
    /// Sidecar settings.
    pub settings: Arc<PluginSettings>,
    /// How its code was compiled: a quick-tier version is replaced by its optimised
    /// recompile once that is ready.
    pub tier: CompileTier,
    /// Configuration values, shared with every instance.
    config: Arc<BTreeMap<String, String>>,
    /// Pre-instantiated component: a new instance costs tens of microseconds.
    pre: PluginPre<PluginState>,
    /// The engine, for new stores.
    engine: Engine,
    /// Services handed to every instance.
    services: Arc<HostServices>,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("subscriptions", &self.subscriptions)
            .field("sha256", &self.sha256)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PluginVersion {
    /// Wraps a pre-instantiated component; name, version and subscriptions are set by
    /// [`PluginVersion::set_info`] once `describe()` answered.
    pub(crate) fn new(
        pre: PluginPre<PluginState>,
        engine: Engine,
        services: Arc<HostServices>,
        origin: String,
        sha256: String,
        settings: PluginSettings,
        tier: CompileTier,
    ) -> Self {
        PluginVersion {
            name: String::new(),
            version: String::new(),
            subscriptions: Vec::new(),
            sha256,
            origin,
            loaded_at: Timestamp::now(),
            config: Arc::new(settings.config.clone()),
            settings: Arc::new(settings),
            tier,
            pre,
            engine,
            services,
        }
    }

    /// The same plugin, described and set up as this one, running the optimised code `pre`
    /// of `engine`.
    pub(crate) fn recompiled(&self, pre: PluginPre<PluginState>, engine: Engine) -> Self {
        PluginVersion {
            name: self.name.clone(),
            version: self.version.clone(),
            subscriptions: self.subscriptions.clone(),
            sha256: self.sha256.clone(),
            origin: self.origin.clone(),
            loaded_at: self.loaded_at,
            settings: self.settings.clone(),
            tier: CompileTier::Optimized,
            config: self.config.clone(),
            pre,
            engine,
            services: self.services.clone(),
        }
    }

    pub(crate) fn set_info(
        &mut self,
        name: String,
        version: String,
        subscriptions: Vec<Subscription>,
    ) {
        self.name = name;
        self.version = version;
        self.subscriptions = subscriptions;
    }

    /// Whether events of `event_type` are for this plugin.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.subscriptions.iter().any(|sub| sub.matches(event_type))
    }

    /// Creates a fresh instance with its own store, working in partition 0.
    ///
    /// # Errors
    ///
    /// When instantiation fails (the guest's start code trapped or exceeded its limits).
    pub async fn instantiate(&self) -> wasmtime::Result<PluginInstance> {
        self.instantiate_in(self.services.keyspace).await
    }

    /// Creates a fresh instance with its own store, whose key-value entries, journal and
    /// publishes are those of the partition `keyspace` names.
    ///
    /// # Errors
    ///
    /// When instantiation fails (the guest's start code trapped or exceeded its limits).
    pub async fn instantiate_in(&self, keyspace: Keyspace) -> wasmtime::Result<PluginInstance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.settings.memory_bytes)
            .instances(16)
            .tables(16)
            .memories(16)
            .table_elements(1_000_000)
            .build();
        let state = PluginState::new(
            Arc::from(self.name.as_str()),
            self.config.clone(),
            self.services.clone(),
            keyspace,
            limits,
            CallBudget::new(self.settings.call_limits, self.settings.max_event_bytes),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let bindings = self.pre.instantiate_async(&mut store).await?;
        Ok(PluginInstance {
            store,
            bindings,
            timeout: self.settings.timeout,
        })
    }
}

/// A live instance of a plugin version, reused across events.
pub struct PluginInstance {
    /// The store holding the instance's state.
    store: Store<PluginState>,
    /// Typed access to the exports.
    bindings: Plugin,
    /// Deadline of each call.
    timeout: Duration,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance").finish_non_exhaustive()
    }
}

fn trap_message(err: &wasmtime::Error, stderr: Option<String>) -> String {
    let mut message = format!("{err:#}");
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        message = format!("{trap}: {message}");
    }
    // A panic or exception wrote its text to stderr just before the trap.
    if let Some(stderr) = stderr {
        message = format!("{message}; the plugin wrote to stderr: {stderr}");
    }
    message
}

impl PluginInstance {
    /// Makes this a shadow candidate's instance (see [`crate::rollout`]): the metrics it
    /// defines are not recorded, as the live version already counts the same events.
    pub fn mark_shadow(&mut self) {
        self.store.data_mut().shadow = true;
    }

    /// Calls `describe()`, which must answer within `deadline`.
    ///
    /// # Errors
    ///
    /// [`CallError`] on trap or timeout; the instance must then be dropped.
    pub async fn describe(&mut self, deadline: Duration) -> Result<types::PluginInfo, CallError> {
        self.store.set_epoch_deadline(1);
        self.store.data().stderr_tail.clear();
        let call = self
            .bindings
            .evhost_plugin_handler()
            .call_describe(&mut self.store);
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(err)) => Err(CallError::Trap(trap_message(
                &err,
                self.store.data().stderr_tail.summary(),
            ))),
            Err(_) => Err(CallError::Timeout(deadline)),
        }
    }

    /// Calls `handle()` for `event`. Effects of the call are buffered: on [`Outcome::Ok`] they
    /// are returned for the caller to commit, and its key-value writes join `overlay` (the
    /// batch's uncommitted state, which the call reads); otherwise they are dropped.
    ///
    /// # Errors
    ///
    /// [`CallError`] on trap or timeout; the instance must then be dropped.
    pub async fn handle(
        &mut self,
        event: Event,
        delivery: DeliveryInfo,
        overlay: &mut BatchOverlay,
    ) -> Result<Outcome, CallError> {
        let effects = &mut self.store.data_mut().effects;
        effects.swap_batch(overlay);
        effects.begin_call(CallScope {
            event_id: event.id.clone(),
            correlation_id: event.correlation_id().to_string(),
            partition_key: event.extension(PARTITION_KEY).map(str::to_string),
        });
        self.store.data_mut().budget.begin();
        self.store.data().stderr_tail.clear();
        // The event moves into the call: no copy of its data.
        let wit_event = types::Event {
            id: event.id,
            type_: event.event_type,
            source: event.source,
            time: event.time,
            specversion: event.specversion,
            datacontenttype: event.datacontenttype,
            data: event.data,
            extensions: event.extensions,
        };
        let wit_delivery = types::Delivery {
            stream: delivery.stream,
            entry_id: delivery.entry_id,
            attempt: delivery.attempt,
            group: delivery.group,
        };
        self.store.set_epoch_deadline(1);
        let call = self.bindings.evhost_plugin_handler().call_handle(
            &mut self.store,
            &wit_event,
            &wit_delivery,
        );
        let result = tokio::time::timeout(self.timeout, call).await;
        let state = self.store.data_mut();
        let over_budget = state.budget.finish(&state.plugin, &state.services.metrics);
        let effects = &mut state.effects;
        let outcome = match (result, over_budget) {
            // A call over its budget commits nothing and is rejected, whatever it returned
            // (see `budget.rs` for why); a trap or a timeout stays what it is.
            (Ok(Ok(_)), Some(reason)) => {
                effects.discard_call();
                Ok(Outcome::Reject { reason })
            }
            (Ok(Ok(Ok(()))), None) => Ok(Outcome::Ok(effects.keep_call())),
            (Ok(Ok(Err(error))), None) => {
                effects.discard_call();
                Ok(match error {
                    types::HandleError::Retry(retry) => Outcome::Retry {
                        reason: retry.reason,
                        delay: retry.delay_ms.map(Duration::from_millis),
                    },
                    types::HandleError::Reject(reason) => Outcome::Reject { reason },
                })
            }
            (Ok(Err(err)), _) => {
                effects.discard_call();
                Err(CallError::Trap(trap_message(
                    &err,
                    state.stderr_tail.summary(),
                )))
            }
            (Err(_), _) => {
                effects.discard_call();
                Err(CallError::Timeout(self.timeout))
            }
        };
        effects.swap_batch(overlay);
        outcome
    }
}
