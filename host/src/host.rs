//! The host: loads plugins, discovers streams, runs one consumer per plugin × stream and shuts
//! down gracefully.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, GroupStart};
use crate::consumer::{Consumer, ConsumerOptions};
use crate::event::{STREAM_PREFIX, stream_for, type_of_stream};
use crate::metrics::Metrics;
use crate::plugin::{HostServices, LoadError, PluginEngine, PluginVersion};
use crate::registry::{Registry, RegistryError};

/// Settings of a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Consumer tunables.
    pub consumer: ConsumerOptions,
    /// How often `SCAN` looks for new `events:*` streams.
    pub discovery_interval: Duration,
    /// How long shutdown waits for in-flight handlers.
    pub shutdown_grace: Duration,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            consumer: ConsumerOptions::default(),
            discovery_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Load state of a plugin file, for `/api/plugins` and logs.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PluginStatus {
    /// Loaded and consuming.
    Running {
        /// Plugin name.
        name: String,
        /// Plugin version.
        version: String,
        /// Hex SHA-256 of the component.
        sha256: String,
        /// When it was loaded (RFC 3339).
        loaded_at: String,
        /// Subscriptions.
        subscriptions: Vec<String>,
        /// The file.
        origin: String,
    },
    /// Could not be loaded.
    Failed {
        /// The file.
        origin: String,
        /// Why.
        reason: String,
    },
}

/// Why the host could not add a plugin.
#[derive(Debug, thiserror::Error)]
pub enum AddPluginError {
    /// Loading failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The name is taken.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// An evhost instance: plugins, consumers and the services they share.
pub struct Host {
    /// Broker, metrics, activity feed.
    services: Arc<HostServices>,
    /// Compiles and instantiates plugins.
    engine: Arc<PluginEngine>,
    /// Loaded plugins.
    registry: Arc<Registry>,
    /// Failed plugin files, by origin.
    failures: std::sync::Mutex<HashMap<String, String>>,
    /// Settings.
    options: HostOptions,
    /// Stops every task.
    cancel: CancellationToken,
    /// Tracks consumer tasks for a graceful shutdown.
    tracker: TaskTracker,
    /// Set once the first discovery pass created every group.
    ready: watch::Sender<bool>,
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
        let services = HostServices::new(broker, Arc::new(Metrics::new()));
        let engine = Arc::new(PluginEngine::new(services.clone())?);
        let (ready, _) = watch::channel(false);
        Ok(Arc::new(Host {
            services,
            engine,
            registry: Arc::new(Registry::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            options,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready,
        }))
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

    /// Registers a loaded plugin version.
    ///
    /// # Errors
    ///
    /// When another plugin has the same name.
    pub fn add_version(&self, version: Arc<PluginVersion>) -> Result<(), RegistryError> {
        self.registry.insert(version.clone())?;
        self.services
            .metrics
            .set_plugin_info(&version.name, &version.version, &version.sha256);
        tracing::info!(
            plugin = %version.name,
            version = %version.version,
            sha256 = %&version.sha256[..12],
            subscriptions = ?version.subscriptions,
            origin = %version.origin,
            "plugin loaded"
        );
        Ok(())
    }

    /// Loads and registers the plugin file at `path`.
    ///
    /// # Errors
    ///
    /// When loading fails or the name is taken; the failure is also recorded for
    /// [`Host::plugin_statuses`].
    pub async fn add_file(&self, path: &Path) -> Result<(), AddPluginError> {
        let origin = path.display().to_string();
        let result = match self.engine.load_file(path).await {
            Ok(version) => self.add_version(version).map_err(AddPluginError::from),
            Err(err) => Err(err.into()),
        };
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &result {
            Ok(()) => {
                failures.remove(&origin);
            }
            Err(err) => {
                failures.insert(origin, err.to_string());
            }
        }
        result
    }

    /// Loads every `*.wasm` file of `dir` (sorted by name). Failures are logged and recorded;
    /// returns how many plugins were loaded.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read.
    pub async fn add_dir(&self, dir: &Path) -> std::io::Result<usize> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
            .collect();
        files.sort();
        let mut loaded = 0;
        for path in files {
            match self.add_file(&path).await {
                Ok(()) => loaded += 1,
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "plugin not loaded")
                }
            }
        }
        Ok(loaded)
    }

    /// State of every plugin file: loaded ones and failed ones.
    pub fn plugin_statuses(&self) -> Vec<PluginStatus> {
        let mut statuses: Vec<PluginStatus> = self
            .registry
            .versions()
            .iter()
            .map(|version| PluginStatus::Running {
                name: version.name.clone(),
                version: version.version.clone(),
                sha256: version.sha256.clone(),
                loaded_at: version.loaded_at.to_string(),
                subscriptions: version
                    .subscriptions
                    .iter()
                    .map(|sub| sub.to_string())
                    .collect(),
                origin: version.origin.clone(),
            })
            .collect();
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        statuses.extend(
            failures
                .iter()
                .map(|(origin, reason)| PluginStatus::Failed {
                    origin: origin.clone(),
                    reason: reason.clone(),
                }),
        );
        statuses
    }

    /// A receiver that turns `true` once every plugin's consumer groups exist and its consumers
    /// run.
    pub fn ready(&self) -> watch::Receiver<bool> {
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

    /// Runs the consumers until `shutdown` completes (or [`Host::stop`] is called), then stops
    /// reading, lets in-flight handlers finish and commit, and returns.
    pub async fn run(self: &Arc<Self>, shutdown: impl Future<Output = ()>) {
        let discovery = {
            let host = self.clone();
            tokio::spawn(async move { host.discover_forever().await })
        };
        tokio::select! {
            () = shutdown => {}
            () = self.cancel.cancelled() => {}
        }
        tracing::info!("shutting down: finishing in-flight events");
        self.cancel.cancel();
        let _ = discovery.await;
        self.tracker.close();
        if tokio::time::timeout(self.options.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.options.shutdown_grace, "in-flight handlers did not finish in time; their events will be delivered again");
        }
        tracing::info!("stopped");
    }

    /// The periodic stream discovery loop; the first pass marks the host ready.
    async fn discover_forever(self: Arc<Self>) {
        let mut running: HashSet<(String, String)> = HashSet::new();
        let mut seen_streams: Option<HashSet<String>> = None;
        loop {
            match self.discover_once(&mut running, &mut seen_streams).await {
                Ok(()) => {
                    self.ready.send_replace(true);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "stream discovery failed; retrying");
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(self.options.discovery_interval) => {}
            }
        }
    }

    /// One pass: for every plugin, start consumers on the streams it subscribes to.
    async fn discover_once(
        &self,
        running: &mut HashSet<(String, String)>,
        seen_streams: &mut Option<HashSet<String>>,
    ) -> Result<(), crate::broker::BrokerError> {
        let streams: HashSet<String> = self
            .services
            .broker
            .streams(STREAM_PREFIX)
            .await?
            .into_iter()
            .collect();
        let first_pass = seen_streams.is_none();
        let previously_seen = seen_streams.get_or_insert_with(HashSet::new);
        for (name, slot) in self.registry.slots() {
            let version = slot.load_full();
            let mut wanted: Vec<(String, GroupStart)> = Vec::new();
            for subscription in &version.subscriptions {
                if let Some(event_type) = subscription.exact_type() {
                    wanted.push((stream_for(event_type), version.settings.start));
                }
            }
            for stream in &streams {
                let Some(event_type) = type_of_stream(stream) else {
                    continue;
                };
                if version.subscribes_to(event_type) {
                    // A stream that appeared while the host runs is read from its first entry.
                    let start = if first_pass || previously_seen.contains(stream) {
                        version.settings.start
                    } else {
                        GroupStart::Beginning
                    };
                    wanted.push((stream.clone(), start));
                }
            }
            for (stream, start) in wanted {
                if running.insert((name.clone(), stream.clone())) {
                    self.spawn_consumer(&name, stream, start).await;
                }
            }
        }
        previously_seen.extend(streams);
        Ok(())
    }

    async fn spawn_consumer(&self, plugin: &str, stream: String, start: GroupStart) {
        let Some(slot) = self.registry.get(plugin) else {
            return;
        };
        // Create the group before the task starts, so that readiness means "groups exist".
        if let Err(err) = self
            .services
            .broker
            .create_group(&stream, plugin, start)
            .await
        {
            tracing::warn!(plugin, stream, error = %err, "cannot create consumer group yet; the consumer will retry");
        }
        let consumer = Consumer::new(
            slot,
            stream,
            start,
            self.services.clone(),
            self.options.consumer.clone(),
            self.cancel.child_token(),
        );
        self.tracker.spawn(consumer.run());
    }
}
