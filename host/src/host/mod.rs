//! The host: the plugins it runs (loaded from files and reloaded when they change) and the
//! consumers that feed them, until a graceful shutdown.
//!
//! - [`plugin_files`]: plugin-file lifecycle (load, hot swap, unload) and file states;
//! - [`supervisor`]: stream discovery and one consumer task per plugin × stream;
//! - [`status`]: what `/api/plugins` and `evhost plugins` show.

mod plugin_files;
mod reloads;
mod status;
mod supervisor;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch as signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::consumer::ConsumerOptions;
use crate::keyspace::Keyspace;
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::plugin::{HostServices, LoadError, PluginEngine, PluginVersion};
use crate::registry::{Registry, RegistryError};
use crate::relay::{IngressKeys, Relay, RelayOptions};
use crate::rollout::{DeploymentError, RolloutController, Transition, TransitionKind};
use crate::watch::{self, PluginWatcher, WatchError};
pub use plugin_files::AddPluginError;
use plugin_files::PluginFiles;
use reloads::Reloads;
pub use status::{FileState, PluginStatus};
use supervisor::Supervisor;

/// Why a change of what serves a plugin was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No plugin of that name runs in this host.
    #[error("no plugin {0:?} runs in this host (evhost plugins lists them)")]
    UnknownPlugin(String),
    /// The change does not apply.
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
}

/// Why an uploaded candidate was not rolled out.
#[derive(Debug, thiserror::Error)]
pub enum StartRolloutError {
    /// No such plugin, or the candidate is another plugin.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The bytes do not load.
    #[error("the candidate does not load: {0}")]
    Load(#[from] LoadError),
}

/// Settings of a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Consumer tunables.
    pub consumer: ConsumerOptions,
    /// How often the host looks for new event streams: `SCAN` in the single layout, the
    /// registry of streams when partitioned (see [`crate::stream_registry`]).
    pub discovery_interval: Duration,
    /// How often a host of a partitioned keyspace walks the keyspace (`SCAN`) for streams no
    /// one registered, and for new plain ingress streams.
    pub full_scan_interval: Duration,
    /// How long shutdown waits for in-flight handlers.
    pub shutdown_grace: Duration,
    /// Where compiled components are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// How components not in the cache compile: large ones first on the quick tier.
    pub compile: crate::plugin::CompilePolicy,
    /// Most streams one plugin consumes in this host: past it, streams its patterns match are
    /// left unserved (warned about and counted), so that a flood of new event types cannot
    /// open consumers and connections without end.
    pub max_streams_per_plugin: usize,
    /// How much of each event stream to keep (see [`crate::retention`]); empty: no trimming.
    pub retention: crate::retention::Retention,
    /// How often the retention rules are applied.
    pub retention_interval: Duration,
    /// The keyspace served: its layout and partition count (see [`crate::partition::resolve`]).
    pub keyspace: Keyspace,
    /// The data field that keys the ingress events of each type (partitioned keyspaces).
    pub ingress_keys: IngressKeys,
    /// How long the relay keeps the mark of each moved entry (see [`crate::relay`]).
    pub move_mark_ttl: Duration,
    /// How long a partition lease lasts without renewal (see [`crate::lease`]): how long the
    /// partitions of a host that died wait for another one.
    pub lease_ttl: Duration,
}

/// Default of [`HostOptions::max_streams_per_plugin`].
pub const DEFAULT_MAX_STREAMS_PER_PLUGIN: usize = 500;

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            consumer: ConsumerOptions::default(),
            discovery_interval: Duration::from_secs(1),
            full_scan_interval: crate::stream_registry::FULL_SCAN_INTERVAL,
            shutdown_grace: Duration::from_secs(30),
            cache_dir: None,
            compile: crate::plugin::CompilePolicy::default(),
            max_streams_per_plugin: DEFAULT_MAX_STREAMS_PER_PLUGIN,
            retention: crate::retention::Retention::default(),
            retention_interval: Duration::from_secs(10),
            keyspace: Keyspace::single(),
            ingress_keys: IngressKeys::default(),
            move_mark_ttl: RelayOptions::default().mark_ttl,
            lease_ttl: crate::lease::DEFAULT_LEASE_TTL,
        }
    }
}

/// An evhost instance: plugins, consumers and the services they share.
pub struct Host {
    /// Broker, metrics, activity feed.
    services: Arc<HostServices>,
    /// Compiles and instantiates plugins.
    engine: Arc<PluginEngine>,
    /// Loaded plugins.
    registry: Arc<Registry>,
    /// Plugin files and their states.
    files: Arc<PluginFiles>,
    /// Settings.
    options: HostOptions,
    /// Stops every task.
    cancel: CancellationToken,
    /// Tracks consumer tasks for a graceful shutdown.
    tracker: TaskTracker,
    /// Set once the first discovery pass created every group.
    ready: signal::Sender<bool>,
    /// Wakes the supervisor after a plugin was added, swapped or removed.
    plugins_changed: Arc<Notify>,
    /// What `evhost doctor`'s checks found at start, for `/readyz` and the metrics.
    doctor: std::sync::Mutex<Option<crate::doctor::Report>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Creates a host on `broker`.
    ///
    /// # Errors
    ///
    /// When the Wasm engine cannot be set up.
    pub fn new(broker: Arc<dyn Broker>, options: HostOptions) -> Result<Arc<Self>, LoadError> {
        let services =
            HostServices::for_keyspace(broker, Arc::new(Metrics::new()), options.keyspace);
        let engine = Arc::new(PluginEngine::with_policy(
            services.clone(),
            options.cache_dir.clone(),
            options.compile,
        )?);
        let registry = Arc::new(Registry::new());
        let plugins_changed = Arc::new(Notify::new());
        let files = Arc::new(PluginFiles::new(
            engine.clone(),
            registry.clone(),
            services.metrics.clone(),
            plugins_changed.clone(),
        ));
        let (ready, _) = signal::channel(false);
        Ok(Arc::new(Host {
            services,
            engine,
            registry,
            files,
            options,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready,
            plugins_changed,
            doctor: std::sync::Mutex::new(None),
        }))
    }

    /// Records what the doctor's checks found (see [`crate::doctor`]): `/readyz` lists what is
    /// not ok, and `evhost_doctor_findings{check,level}` counts it.
    pub fn set_doctor_report(&self, report: crate::doctor::Report) {
        self.services.metrics.set_doctor_findings(&report);
        *self
            .doctor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
    }

    /// What the doctor's checks found at start, if they ran.
    pub fn doctor_report(&self) -> Option<crate::doctor::Report> {
        self.doctor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Broker, metrics and the activity feed.
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// The plugin engine.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Registers a loaded plugin version that does not come from a watched file (embedded
    /// plugins, tests).
    ///
    /// # Errors
    ///
    /// When another plugin has the same name.
    pub fn add_version(&self, version: Arc<PluginVersion>) -> Result<(), RegistryError> {
        self.files.add_version(version)
    }

    /// Loads every `*.wasm` file of `dir` (sorted by name). Failures are logged and recorded;
    /// returns how many plugins were loaded.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read.
    pub async fn add_dir(&self, dir: &Path) -> std::io::Result<usize> {
        self.files.add_dir(dir).await
    }

    /// Loads the plugin file at `path`, or reloads it if it changed (same bytes and sidecar
    /// again: nothing happens). On failure the previous version, if any, keeps running and the
    /// failure is recorded and logged with the path and the reason. A missing file is unloaded.
    ///
    /// # Errors
    ///
    /// When loading fails or the plugin name is taken by another file.
    pub async fn reload_file(&self, path: &Path) -> Result<(), AddPluginError> {
        self.files.reload_file(path).await
    }

    /// Unloads the plugin of a removed file: its consumers stop after their in-flight events;
    /// its pending entries stay in Redis for when it comes back.
    pub fn unload_file(&self, path: &Path) {
        self.files.unload_file(path);
    }

    /// Watches `dir` and reloads plugin files when they change, until the host stops.
    ///
    /// # Errors
    ///
    /// When the directory cannot be watched.
    pub fn watch_dir(self: &Arc<Self>, dir: &Path) -> Result<PluginWatcher, WatchError> {
        let (changes, mut received) = mpsc::unbounded_channel();
        let watcher = watch::watch(dir, changes)?;
        let host = self.clone();
        let reloads = Reloads::new(self.files.clone());
        tokio::spawn(async move {
            loop {
                let path = tokio::select! {
                    () = host.cancel.cancelled() => return,
                    path = received.recv() => match path {
                        Some(path) => path,
                        None => return,
                    },
                };
                reloads.changed(path);
            }
        });
        tracing::info!(dir = %dir.display(), "watching for plugin changes");
        Ok(watcher)
    }

    /// State of every plugin: files (running, loading, failed or retired candidates) and
    /// embedded plugins.
    pub fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.files.statuses()
    }

    /// Makes the candidate of `plugin`'s rollout its live version.
    ///
    /// # Errors
    ///
    /// When no such plugin runs, or it has no rollout under way.
    pub fn promote(&self, plugin: &str, reason: &str) -> Result<Transition, ChangeError> {
        self.change(plugin, |deployment| deployment.promote(reason))
    }

    /// Calls off `plugin`'s rollout: the live version alone serves again.
    ///
    /// # Errors
    ///
    /// When no such plugin runs, or it has no rollout under way.
    pub fn abort_rollout(&self, plugin: &str, reason: &str) -> Result<Transition, ChangeError> {
        self.change(plugin, |deployment| {
            deployment.end_rollout(TransitionKind::Aborted, reason)
        })
    }

    /// Rolls `plugin` back: the candidate of its rollout is backed out, or without one the
    /// version before the live one serves again (at the next event of every consumer).
    ///
    /// # Errors
    ///
    /// When no such plugin runs, or it has neither a rollout nor an earlier version.
    pub fn roll_back(&self, plugin: &str, reason: &str) -> Result<Transition, ChangeError> {
        self.change(plugin, |deployment| deployment.roll_back(reason))
    }

    /// Rolls the component `bytes` out as a candidate of `plugin` by `plan`, without a file
    /// (uploaded through the admin endpoint): it takes the live version's settings, and it is
    /// gone when the host restarts.
    ///
    /// # Errors
    ///
    /// When no such plugin runs, the bytes do not load, or they describe another plugin.
    pub async fn start_rollout(
        &self,
        plugin: &str,
        bytes: Vec<u8>,
        plan: crate::rollout::RolloutPlan,
    ) -> Result<Transition, StartRolloutError> {
        let deployment = self
            .registry
            .get(plugin)
            .ok_or_else(|| ChangeError::UnknownPlugin(plugin.to_string()))?;
        let mut settings = (*deployment.load().settings).clone();
        settings.rollout = Some(plan.clone());
        let origin = format!("upload:{plugin}");
        let candidate = self.engine.load_optimized(origin, bytes, settings).await?;
        let rollout = crate::rollout::Rollout::new(candidate, plan, self.services.metrics.clone());
        let transition = deployment
            .start_rollout(rollout)
            .map_err(ChangeError::from)?;
        self.services
            .metrics
            .record_rollout_transition(plugin, transition.kind);
        Ok(transition)
    }

    fn change(
        &self,
        plugin: &str,
        change: impl FnOnce(&crate::rollout::Deployment) -> Result<Transition, DeploymentError>,
    ) -> Result<Transition, ChangeError> {
        let deployment = self
            .registry
            .get(plugin)
            .ok_or_else(|| ChangeError::UnknownPlugin(plugin.to_string()))?;
        let transition = change(&deployment)?;
        let metrics = &self.services.metrics;
        metrics.record_rollout_transition(plugin, transition.kind);
        let live = deployment.load_full();
        metrics.set_plugin_info(plugin, &live.version, &live.sha256);
        Ok(transition)
    }

    /// A receiver that turns `true` once every plugin's consumer groups exist and its consumers
    /// run.
    pub fn ready(&self) -> signal::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Waits until the host is ready (see [`Host::ready`]) or `timeout` passes; returns whether
    /// it became ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready();
        tokio::time::timeout(timeout, ready.wait_for(|ready| *ready))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Asks the host to stop (same as the shutdown future of [`Host::run`] completing).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Trims the event streams by the retention rules every `retention_interval` until the
    /// host stops.
    async fn apply_retention(&self) {
        let mut trimmer =
            crate::retention::Trimmer::new(self.options.retention.clone(), self.services.keyspace);
        loop {
            match trimmer.pass(self.services.broker.as_ref()).await {
                Ok(pass) => {
                    for (stream, entries) in pass.trimmed {
                        self.services.metrics.record_trimmed(&stream, entries);
                        tracing::debug!(stream, entries, "retention: trimmed");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention pass failed; trying again later")
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(self.options.retention_interval) => {}
            }
        }
    }

    /// Runs the relay of a partitioned keyspace until the host stops (opening its connection
    /// again after a failure).
    async fn relay(&self, owned: Option<signal::Receiver<BTreeSet<u32>>>) {
        let consumer = &self.options.consumer;
        let options = RelayOptions {
            consumer: consumer.consumer.clone(),
            ingress_keys: self.options.ingress_keys.clone(),
            mark_ttl: self.options.move_mark_ttl,
            claim_idle: consumer.claim_idle,
            discovery_interval: self.options.discovery_interval,
            ingress_scan_interval: self.options.full_scan_interval,
            batch_size: consumer.batch_size,
        };
        while !self.cancel.is_cancelled() {
            match Relay::open(self.services.clone(), options.clone(), owned.clone()).await {
                Ok(Some(relay)) => relay.run(self.cancel.clone()).await,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open the relay's connection; retrying");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Runs the consumers until `shutdown` completes (or [`Host::stop`] is called), then stops
    /// reading, lets in-flight handlers finish and commit, and returns.
    pub async fn run(self: &Arc<Self>, shutdown: impl Future<Output = ()>) {
        let layout = self.services.keyspace;
        let leases = layout.is_partitioned().then(|| {
            Arc::new(Leases::new(
                self.services.broker.clone(),
                layout,
                self.options.consumer.consumer.clone(),
                self.options.lease_ttl,
            ))
        });
        let owned = leases.as_ref().map(|leases| leases.subscribe());
        // A first round before the first discovery pass, so that a lone host starts with
        // every partition.
        if let Some(leases) = &leases
            && let Err(err) = leases.round().await
        {
            tracing::warn!(error = %err, "partition leases: first round failed; retrying");
        }
        let lease_task = leases.clone().map(|leases| {
            let cancel = self.cancel.clone();
            tokio::spawn(async move { leases.run(cancel).await })
        });
        let supervisor = Supervisor::new(
            self.services.clone(),
            self.registry.clone(),
            &self.options,
            self.cancel.clone(),
            self.tracker.clone(),
            owned.clone(),
        );
        let supervision =
            tokio::spawn(supervisor.run(self.plugins_changed.clone(), self.ready.clone()));
        let retention = (!self.options.retention.is_empty()).then(|| {
            let host = self.clone();
            tokio::spawn(async move { host.apply_retention().await })
        });
        let rollouts = {
            let controller =
                RolloutController::new(self.registry.clone(), self.services.metrics.clone());
            tokio::spawn(controller.run(self.cancel.clone()))
        };
        let relay = layout.is_partitioned().then(|| {
            let host = self.clone();
            let owned = owned.clone();
            tokio::spawn(async move { host.relay(owned).await })
        });
        tokio::select! {
            () = shutdown => {}
            () = self.cancel.cancelled() => {}
        }
        tracing::info!("shutting down: finishing in-flight events");
        self.cancel.cancel();
        let _ = supervision.await;
        let _ = rollouts.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        self.tracker.close();
        if tokio::time::timeout(self.options.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.options.shutdown_grace, "in-flight handlers did not finish in time; their events will be delivered again");
        }
        if let Some(lease_task) = lease_task {
            let _ = lease_task.await;
        }
        // Once every consumer committed: the other hosts take the partitions at once.
        if let Some(leases) = &leases {
            leases.release_all().await;
        }
        tracing::info!("stopped");
    }
}
