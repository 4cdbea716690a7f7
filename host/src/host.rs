//! The host: loads plugin files (and reloads them when they change), discovers streams, runs one
//! consumer per plugin × stream and shuts down gracefully.
//!
//! # Hot swap
//!
//! A changed `*.wasm` (or its sidecar `<name>.toml`) is compiled off the async runtime,
//! type-checked against the world and described; only then is it swapped into the registry.
//! Consumers pick the new version up at their next event: calls already running finish on the
//! old one. A file that fails to load never replaces a working version. Changed subscriptions
//! are reconciled: consumers join new streams and leave dropped ones (their pending entries stay
//! in Redis).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch as signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError, GroupStart};
use crate::consumer::{Consumer, ConsumerOptions};
use crate::dlq;
use crate::event::{STREAM_PREFIX, stream_for, type_of_stream};
use crate::metrics::Metrics;
use crate::metrics::totals::PluginStats;
use crate::plugin::engine::read_plugin_files;
use crate::plugin::{
    HostServices, LoadError, PluginEngine, PluginSettings, PluginVersion, sha256_hex,
};
use crate::registry::{Registry, RegistryError};
use crate::watch::{self, PluginWatcher, WatchError};

/// Settings of a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Consumer tunables.
    pub consumer: ConsumerOptions,
    /// How often `SCAN` looks for new `events:*` streams.
    pub discovery_interval: Duration,
    /// How long shutdown waits for in-flight handlers.
    pub shutdown_grace: Duration,
    /// Where compiled components are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            consumer: ConsumerOptions::default(),
            discovery_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            cache_dir: None,
        }
    }
}

/// Load state of a plugin file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Being compiled and validated.
    Loading,
    /// Loaded and consuming.
    Running,
    /// The last load failed; a previous version, if any, keeps running.
    Failed,
}

/// State of one plugin, for `/api/plugins`, `evhost plugins` and logs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginStatus {
    /// The plugin file (or `embedded:<name>` for built-in plugins).
    pub file: String,
    /// Load state of the file.
    pub state: FileState,
    /// Name of the running version, if any.
    pub name: Option<String>,
    /// Version string of the running version.
    pub version: Option<String>,
    /// Hex SHA-256 of the running component.
    pub sha256: Option<String>,
    /// When the running version was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// Subscriptions of the running version.
    pub subscriptions: Vec<String>,
    /// Why the last load failed.
    pub error: Option<String>,
    /// Counters and handler times of the running version's plugin since the host started.
    #[serde(default)]
    pub stats: Option<PluginStats>,
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
    /// The file holds the bytes whose load failed last time: not tried (nor logged) again.
    #[error("unchanged since its load failed: {0}")]
    StillFailing(String),
}

/// What the host knows about one plugin file.
#[derive(Debug, Default)]
struct FileEntry {
    /// The plugin name this file provides, once loaded.
    plugin: Option<String>,
    /// SHA-256 of the component and of the sidecar of the running version.
    fingerprint: Option<String>,
    /// Load state.
    state: Option<FileState>,
    /// Last load error.
    error: Option<String>,
    /// Fingerprint of the load under way.
    attempt: Option<String>,
    /// Fingerprint of the content whose load failed last: the same content again is not
    /// reloaded, so a broken file is compiled and logged once per distinct content.
    failed: Option<String>,
}

/// A running consumer task.
struct RunningConsumer {
    /// Stops it.
    cancel: CancellationToken,
    /// Finishes when it stopped.
    handle: JoinHandle<()>,
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
    files: Mutex<BTreeMap<PathBuf, FileEntry>>,
    /// Settings.
    options: HostOptions,
    /// Stops every task.
    cancel: CancellationToken,
    /// Tracks consumer tasks for a graceful shutdown.
    tracker: TaskTracker,
    /// Set once the first discovery pass created every group.
    ready: signal::Sender<bool>,
    /// Wakes the discovery loop after a plugin was added, swapped or removed.
    reconcile: Notify,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Host {
    /// Creates a host on `broker`.
    ///
    /// # Errors
    ///
    /// When the Wasm engine cannot be set up.
    pub fn new(broker: Arc<dyn Broker>, options: HostOptions) -> Result<Arc<Self>, LoadError> {
        let services = HostServices::new(broker, Arc::new(Metrics::new()));
        let engine = Arc::new(PluginEngine::new(
            services.clone(),
            options.cache_dir.clone(),
        )?);
        let (ready, _) = signal::channel(false);
        Ok(Arc::new(Host {
            services,
            engine,
            registry: Arc::new(Registry::new()),
            files: Mutex::new(BTreeMap::new()),
            options,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready,
            reconcile: Notify::new(),
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

    /// Registers a loaded plugin version that does not come from a watched file (embedded
    /// plugins, tests).
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
        self.reconcile.notify_one();
        Ok(())
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
            .filter(|path| {
                path.is_file() && watch::plugin_file_of(path).as_deref() == Some(path.as_path())
            })
            .collect();
        files.sort();
        let mut loaded = 0;
        for path in files {
            if self.reload_file(&path).await.is_ok() {
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Loads the plugin file at `path`, or reloads it if it changed (same bytes and sidecar
    /// again: nothing happens). On failure the previous version, if any, keeps running and the
    /// failure is recorded and logged with the path and the reason; the same failing content
    /// again is neither loaded nor logged again ([`AddPluginError::StillFailing`]). A missing
    /// file is unloaded.
    ///
    /// # Errors
    ///
    /// When loading fails or the plugin name is taken by another file.
    pub async fn reload_file(&self, path: &Path) -> Result<(), AddPluginError> {
        if !path.exists() {
            self.unload_file(path);
            return Ok(());
        }
        let started = Instant::now();
        let result = self.try_reload(path, started).await;
        if let Err(err) = &result
            && !matches!(err, AddPluginError::StillFailing(_))
        {
            let previous = {
                let mut files = lock(&self.files);
                let entry = files.entry(path.to_path_buf()).or_default();
                entry.state = Some(FileState::Failed);
                entry.error = Some(err.to_string());
                entry.failed = entry.attempt.take();
                entry.plugin.clone()
            };
            self.services
                .metrics
                .record_reload(previous.as_deref().unwrap_or("unknown"), "failed");
            tracing::error!(
                path = %path.display(),
                error = %err,
                still_running = previous.as_deref().unwrap_or("nothing"),
                "plugin not loaded; the previous version (if any) keeps running; fix the file to retry"
            );
        }
        result
    }

    async fn try_reload(&self, path: &Path, started: Instant) -> Result<(), AddPluginError> {
        let origin = path.display().to_string();
        let (bytes, sidecar_text) = read_plugin_files(path).await?;
        let sidecar = PluginSettings::sidecar_path(path);
        let fingerprint = format!(
            "{}:{}",
            sha256_hex(&bytes),
            sha256_hex(sidecar_text.as_deref().unwrap_or_default().as_bytes())
        );
        {
            let mut files = lock(&self.files);
            let entry = files.entry(path.to_path_buf()).or_default();
            // `fingerprint` is that of the version serving. The same bytes again are not
            // reloaded, even after a failed attempt in between (a copy seen half-written):
            // the version serving is what the file holds again.
            if entry.plugin.is_some() && entry.fingerprint.as_deref() == Some(fingerprint.as_str())
            {
                if entry.state != Some(FileState::Running) {
                    tracing::info!(
                        path = %path.display(),
                        "plugin file holds the running version again; not reloaded"
                    );
                }
                entry.state = Some(FileState::Running);
                entry.error = None;
                entry.failed = None;
                return Ok(());
            }
            if entry.state == Some(FileState::Failed)
                && entry.failed.as_deref() == Some(fingerprint.as_str())
            {
                return Err(AddPluginError::StillFailing(
                    entry.error.clone().unwrap_or_default(),
                ));
            }
            entry.state = Some(FileState::Loading);
            entry.attempt = Some(fingerprint.clone());
        }
        let settings = match &sidecar_text {
            Some(text) => PluginSettings::parse(text, &sidecar).map_err(LoadError::from)?,
            None => PluginSettings::default(),
        };
        let version = self.engine.load_bytes(origin, bytes, settings).await?;
        let name = version.name.clone();
        let previous = lock(&self.files)
            .get(path)
            .and_then(|entry| entry.plugin.clone());
        if previous.as_deref() == Some(name.as_str()) {
            let old = self.registry.replace(version.clone());
            tracing::info!(
                plugin = %name,
                path = %path.display(),
                from = old.as_ref().map(|old| old.version.as_str()).unwrap_or("?"),
                to = %version.version,
                sha256 = %&version.sha256[..12],
                took_ms = started.elapsed().as_millis() as u64,
                "plugin swapped"
            );
        } else {
            self.registry.insert(version.clone())?;
            if let Some(old_name) = &previous {
                // The file now provides another plugin: the old one is gone.
                self.registry.remove(old_name);
                self.services.metrics.clear_plugin_info(old_name);
            }
            tracing::info!(
                plugin = %name,
                path = %path.display(),
                version = %version.version,
                sha256 = %&version.sha256[..12],
                subscriptions = ?version.subscriptions,
                took_ms = started.elapsed().as_millis() as u64,
                "plugin loaded"
            );
        }
        // Metrics first: whoever sees the file running also sees its reload counted.
        let metrics = &self.services.metrics;
        metrics.set_plugin_info(&name, &version.version, &version.sha256);
        metrics.record_reload(&name, "ok");
        metrics.record_swap_duration(started.elapsed());
        {
            let mut files = lock(&self.files);
            let entry = files.entry(path.to_path_buf()).or_default();
            entry.plugin = Some(name.clone());
            entry.fingerprint = Some(fingerprint);
            entry.state = Some(FileState::Running);
            entry.error = None;
            entry.attempt = None;
            entry.failed = None;
        }
        self.reconcile.notify_one();
        Ok(())
    }

    /// Unloads the plugin of a removed file: its consumers stop after their in-flight events;
    /// its pending entries stay in Redis for when it comes back.
    pub fn unload_file(&self, path: &Path) {
        let Some(entry) = lock(&self.files).remove(path) else {
            return;
        };
        if let Some(name) = entry.plugin {
            self.registry.remove(&name);
            self.services.metrics.clear_plugin_info(&name);
            self.services.metrics.record_reload(&name, "removed");
            tracing::info!(plugin = %name, path = %path.display(), "plugin file removed; plugin unloaded");
            self.reconcile.notify_one();
        }
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
        tokio::spawn(async move {
            loop {
                let path = tokio::select! {
                    () = host.cancel.cancelled() => return,
                    path = received.recv() => match path {
                        Some(path) => path,
                        None => return,
                    },
                };
                let _ = host.reload_file(&path).await;
            }
        });
        tracing::info!(dir = %dir.display(), "watching for plugin changes");
        Ok(watcher)
    }

    /// State of every plugin: files (running, loading or failed) and embedded plugins.
    pub fn plugin_statuses(&self) -> Vec<PluginStatus> {
        let files = lock(&self.files);
        let mut statuses = Vec::new();
        let mut from_files = HashSet::new();
        for (path, entry) in files.iter() {
            let version = entry
                .plugin
                .as_ref()
                .and_then(|name| self.registry.get(name))
                .map(|slot| slot.load_full());
            if let Some(name) = &entry.plugin {
                from_files.insert(name.clone());
            }
            statuses.push(status(
                path.display().to_string(),
                entry.state.clone().unwrap_or(FileState::Loading),
                version.as_deref(),
                entry.error.clone(),
                &self.services.metrics,
            ));
        }
        for version in self.registry.versions() {
            if !from_files.contains(&version.name) {
                statuses.push(status(
                    version.origin.clone(),
                    FileState::Running,
                    Some(&version),
                    None,
                    &self.services.metrics,
                ));
            }
        }
        statuses
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

    /// The discovery loop: a pass every `discovery_interval` and after every plugin change; the
    /// first pass marks the host ready.
    async fn discover_forever(self: Arc<Self>) {
        let mut running: HashMap<ConsumerKey, RunningConsumer> = HashMap::new();
        let mut stopping: HashMap<ConsumerKey, JoinHandle<()>> = HashMap::new();
        let mut seen_streams: Option<HashSet<String>> = None;
        loop {
            match self
                .discover_once(&mut running, &mut stopping, &mut seen_streams)
                .await
            {
                Ok(()) => {
                    self.ready.send_replace(true);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "stream discovery failed; retrying");
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = self.reconcile.notified() => {}
                () = tokio::time::sleep(self.options.discovery_interval) => {}
            }
        }
    }

    /// One pass: start consumers on every stream a plugin subscribes to, stop those of removed
    /// plugins and dropped subscriptions.
    async fn discover_once(
        &self,
        running: &mut HashMap<ConsumerKey, RunningConsumer>,
        stopping: &mut HashMap<ConsumerKey, JoinHandle<()>>,
        seen_streams: &mut Option<HashSet<String>>,
    ) -> Result<(), BrokerError> {
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let streams: HashSet<String> = self
            .services
            .broker
            .streams(STREAM_PREFIX)
            .await?
            .into_iter()
            .collect();
        let first_pass = seen_streams.is_none();
        let previously_seen = seen_streams.get_or_insert_with(HashSet::new);
        let mut wanted: HashMap<ConsumerKey, GroupStart> = HashMap::new();
        for (name, slot) in self.registry.slots() {
            let version = slot.load_full();
            let workers = version.settings.consumers_per_stream();
            let mut want = |stream: &str, start: GroupStart, replace: bool| {
                for worker in 0..workers {
                    let key = (name.clone(), stream.to_string(), worker);
                    if replace {
                        wanted.insert(key, start);
                    } else {
                        wanted.entry(key).or_insert(start);
                    }
                }
            };
            // Dead letters re-driven to this plugin alone.
            want(&dlq::redrive_stream(&name), GroupStart::Beginning, true);
            for subscription in &version.subscriptions {
                if let Some(event_type) = subscription.exact_type() {
                    want(&stream_for(event_type), version.settings.start, true);
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
                    want(stream, start, false);
                }
            }
        }
        let to_stop: Vec<ConsumerKey> = running
            .iter()
            .filter(|(key, consumer)| !wanted.contains_key(*key) || consumer.handle.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        for key in to_stop {
            if let Some(consumer) = running.remove(&key) {
                if wanted.contains_key(&key) {
                    tracing::warn!(plugin = %key.0, stream = %key.1, worker = key.2, "consumer ended; restarting it");
                } else {
                    tracing::info!(plugin = %key.0, stream = %key.1, worker = key.2, "stopping consumer (plugin removed, no longer subscribed, or fewer workers)");
                }
                consumer.cancel.cancel();
                stopping.insert(key, consumer.handle);
            }
        }
        stopping.retain(|_, handle| !handle.is_finished());
        for (key, start) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            // A consumer just stopped must finish before its successor starts: same consumer
            // name, same pending entries.
            let previous = stopping.remove(&key);
            if let Some(consumer) = self
                .spawn_consumer(&key.0, key.1.clone(), key.2, start, previous)
                .await
            {
                running.insert(key, consumer);
            }
        }
        previously_seen.extend(streams);
        Ok(())
    }

    async fn spawn_consumer(
        &self,
        plugin: &str,
        stream: String,
        worker: usize,
        start: GroupStart,
        previous: Option<JoinHandle<()>>,
    ) -> Option<RunningConsumer> {
        if self.cancel.is_cancelled() {
            return None;
        }
        let slot = self.registry.get(plugin)?;
        // Create the group before the task starts, so that readiness means "groups exist".
        if let Err(err) = self
            .services
            .broker
            .create_group(&stream, plugin, start)
            .await
        {
            tracing::warn!(plugin, stream, error = %err, "cannot create consumer group yet; the consumer will retry");
        }
        let cancel = self.cancel.child_token();
        let mut options = self.options.consumer.clone();
        options.consumer = worker_consumer_name(&options.consumer, worker);
        let consumer = Consumer::new(
            slot,
            stream,
            start,
            self.services.clone(),
            options,
            cancel.clone(),
        );
        let handle = self.tracker.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            consumer.run().await;
        });
        Some(RunningConsumer { cancel, handle })
    }
}

/// A consumer task: plugin, stream and worker index (`limits.concurrency` workers per stream).
type ConsumerKey = (String, String, usize);

/// The consumer name of worker `worker`: the host's name for the first, `<name>#<n>` for the
/// n-th (counting from 1), so that a restarted host finds each worker's pending entries again.
fn worker_consumer_name(consumer: &str, worker: usize) -> String {
    if worker == 0 {
        consumer.to_string()
    } else {
        format!("{consumer}#{}", worker + 1)
    }
}

fn status(
    file: String,
    state: FileState,
    version: Option<&PluginVersion>,
    error: Option<String>,
    metrics: &Metrics,
) -> PluginStatus {
    PluginStatus {
        file,
        state,
        name: version.map(|version| version.name.clone()),
        version: version.map(|version| version.version.clone()),
        sha256: version.map(|version| version.sha256.clone()),
        loaded_at: version.map(|version| version.loaded_at.to_string()),
        subscriptions: version
            .map(|version| {
                version
                    .subscriptions
                    .iter()
                    .map(|sub| sub.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        error,
        stats: version.map(|version| metrics.plugin_stats(&version.name)),
    }
}
