//! Plugin files: loading a `*.wasm` (and its sidecar `<name>.toml`), reloading it when it
//! changes (hot swap), unloading it when it is removed, and the state of each file.
//!
//! A changed file is compiled off the async runtime, type-checked against the world and
//! described; only then is it swapped into the registry. Consumers pick the new version up at
//! their next event: calls already running finish on the old one. A file that fails to load
//! never replaces a working version.
//!
//! A file named `<name>.next.wasm` is a candidate: once loaded, it is rolled out beside the
//! live version of the plugin it describes (see [`crate::rollout`]), by the `[rollout]` table
//! of its sidecar `<name>.next.toml`; removing it aborts the rollout.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::status::{FileState, PluginStatus};
use crate::metrics::Metrics;
use crate::plugin::engine::read_plugin_files;
use crate::plugin::{
    LoadError, PendingOptimization, PluginEngine, PluginSettings, PluginVersion, sha256_hex,
};
use crate::registry::{Registry, RegistryError};
use crate::rollout::{DeploymentError, Rollout, TransitionKind};
use crate::watch;

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
    /// A candidate file for a plugin that does not run.
    #[error(
        "{path} is a candidate (a .next.wasm file) of plugin {plugin:?}, which does not run here: a candidate is rolled out against a live version, e.g. {plugin}.wasm"
    )]
    NoLiveVersion {
        /// The candidate file.
        path: String,
        /// The plugin it describes.
        plugin: String,
    },
    /// The rollout could not start.
    #[error(transparent)]
    Rollout(#[from] DeploymentError),
}

/// Whether `path` names a candidate file: `<name>.next.wasm`.
pub fn is_candidate_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .is_some_and(|stem| stem.ends_with(".next"))
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
    /// A candidate file: the version it holds (it serves only while its rollout runs).
    candidate: Option<Arc<PluginVersion>>,
}

/// The plugins a host runs, and the files they come from.
pub(super) struct PluginFiles {
    engine: Arc<PluginEngine>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Plugin files and their states.
    files: Mutex<BTreeMap<PathBuf, FileEntry>>,
    /// Told after a plugin was added, swapped or removed (the consumers must follow).
    changed: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PluginFiles {
    pub fn new(
        engine: Arc<PluginEngine>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        changed: Arc<Notify>,
    ) -> Self {
        PluginFiles {
            engine,
            registry,
            metrics,
            files: Mutex::new(BTreeMap::new()),
            changed,
        }
    }

    /// Registers a loaded plugin version that does not come from a watched file.
    pub fn add_version(&self, version: Arc<PluginVersion>) -> Result<(), RegistryError> {
        self.registry.insert(version.clone())?;
        self.metrics
            .set_plugin_info(&version.name, &version.version, &version.sha256);
        tracing::info!(
            plugin = %version.name,
            version = %version.version,
            sha256 = %&version.sha256[..12],
            subscriptions = ?version.subscriptions,
            origin = %version.origin,
            "plugin loaded"
        );
        self.changed.notify_one();
        Ok(())
    }

    /// Loads every `*.wasm` file of `dir`, all at once (each compiles and describes itself on
    /// its own: a slow or hanging file fails alone); returns how many were loaded. Of two
    /// files that provide the same plugin name, the one loaded first wins. Candidates
    /// (`*.next.wasm`) load after the others, to find their live versions.
    pub async fn add_dir(&self, dir: &Path) -> std::io::Result<usize> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.is_file() && watch::plugin_file_of(path).as_deref() == Some(path.as_path())
            })
            .collect();
        files.sort();
        let (candidates, live): (Vec<PathBuf>, Vec<PathBuf>) =
            files.into_iter().partition(|path| is_candidate_file(path));
        let mut loaded = 0;
        for files in [live, candidates] {
            let loads = files.iter().map(|path| self.reload_file(path));
            let results = futures_util::future::join_all(loads).await;
            loaded += results.iter().filter(|result| result.is_ok()).count();
        }
        Ok(loaded)
    }

    /// Loads the plugin file at `path`, or reloads it if it changed; a missing file is
    /// unloaded. On failure the previous version, if any, keeps running; the same failing
    /// content again is neither loaded nor logged again ([`AddPluginError::StillFailing`]).
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
            self.metrics
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
            let unchanged = entry.plugin.is_some()
                && entry.fingerprint.as_deref() == Some(fingerprint.as_str());
            if unchanged && let Some(candidate) = entry.candidate.clone() {
                // The same candidate again: a rollout that ended starts over (copying the
                // file again is how one tries again); one that runs, or a promoted one, stays.
                let deployment = entry
                    .plugin
                    .as_deref()
                    .and_then(|name| self.registry.get(name));
                let serving = deployment.is_some_and(|deployment| {
                    Arc::ptr_eq(&deployment.load(), &candidate)
                        || deployment
                            .rollout()
                            .is_some_and(|rollout| Arc::ptr_eq(&rollout.candidate, &candidate))
                });
                drop(files);
                if serving {
                    return Ok(());
                }
                return self.start_candidate(path, candidate, fingerprint);
            }
            if unchanged {
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
        if is_candidate_file(path) {
            // Optimised at once: a candidate's handler times are judged against the live one's.
            let version = self.engine.load_optimized(origin, bytes, settings).await?;
            return self.start_candidate(path, version, fingerprint);
        }
        let (version, pending) = self.engine.load_tiered(origin, bytes, settings).await?;
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
                compiled = version.tier.as_str(),
                took_ms = started.elapsed().as_millis() as u64,
                "plugin swapped"
            );
        } else {
            self.registry.insert(version.clone())?;
            if let Some(old_name) = &previous {
                // The file now provides another plugin: the old one is gone.
                self.registry.remove(old_name);
                self.metrics.clear_plugin_info(old_name);
            }
            tracing::info!(
                plugin = %name,
                path = %path.display(),
                version = %version.version,
                sha256 = %&version.sha256[..12],
                subscriptions = ?version.subscriptions,
                compiled = version.tier.as_str(),
                took_ms = started.elapsed().as_millis() as u64,
                "plugin loaded"
            );
        }
        // Metrics first: whoever sees the file running also sees its reload counted.
        self.metrics
            .set_plugin_info(&name, &version.version, &version.sha256);
        self.metrics.record_reload(&name, "ok");
        self.metrics.record_swap_duration(started.elapsed());
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
        self.changed.notify_one();
        if let Some(pending) = pending {
            self.optimize_in_background(pending, started);
        }
        Ok(())
    }

    /// Recompiles a quick-tier version with full optimisation and puts the result wherever
    /// the quick version still serves (see [`crate::plugin::tier`]); the quick one serves
    /// meanwhile, and for good if the recompile fails.
    fn optimize_in_background(&self, pending: PendingOptimization, started: Instant) {
        let engine = self.engine.clone();
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let quick = pending.quick().clone();
            match engine.optimize(pending).await {
                Ok(optimized) => {
                    let upgraded = registry
                        .get(&quick.name)
                        .is_some_and(|deployment| deployment.upgrade(&quick, optimized));
                    if upgraded {
                        tracing::info!(
                            plugin = %quick.name,
                            version = %quick.version,
                            sha256 = %&quick.sha256[..12],
                            took_ms = started.elapsed().as_millis() as u64,
                            "plugin optimised: its code recompiled with full optimisation now serves"
                        );
                    } else {
                        tracing::debug!(plugin = %quick.name, "optimised code not used: the version was replaced meanwhile");
                    }
                }
                Err(err) => tracing::warn!(
                    plugin = %quick.name,
                    error = %err,
                    "cannot recompile the plugin with full optimisation; its quickly compiled code goes on serving"
                ),
            }
        });
    }

    /// Rolls the candidate `version` of the file at `path` out beside its live version.
    fn start_candidate(
        &self,
        path: &Path,
        version: Arc<PluginVersion>,
        fingerprint: String,
    ) -> Result<(), AddPluginError> {
        let name = version.name.clone();
        let Some(deployment) = self.registry.get(&name) else {
            return Err(AddPluginError::NoLiveVersion {
                path: path.display().to_string(),
                plugin: name,
            });
        };
        let plan = version.settings.rollout.clone().unwrap_or_default();
        let _ =
            deployment.start_rollout(Rollout::new(version.clone(), plan, self.metrics.clone()))?;
        self.metrics
            .record_rollout_transition(&name, TransitionKind::RolloutStarted);
        self.metrics.record_reload(&name, "ok");
        let mut files = lock(&self.files);
        let entry = files.entry(path.to_path_buf()).or_default();
        entry.plugin = Some(name);
        entry.fingerprint = Some(fingerprint);
        entry.state = Some(FileState::Running);
        entry.error = None;
        entry.attempt = None;
        entry.failed = None;
        entry.candidate = Some(version);
        Ok(())
    }

    /// Unloads the plugin of a removed file: its consumers stop after their in-flight events;
    /// its pending entries stay in Redis for when it comes back. A removed candidate file
    /// aborts its rollout.
    pub fn unload_file(&self, path: &Path) {
        let Some(entry) = lock(&self.files).remove(path) else {
            return;
        };
        if let (Some(candidate), Some(name)) = (&entry.candidate, &entry.plugin) {
            let deployment = self.registry.get(name);
            let rollout = deployment
                .as_ref()
                .and_then(|deployment| deployment.rollout());
            if let (Some(deployment), Some(rollout)) = (deployment, rollout)
                && Arc::ptr_eq(&rollout.candidate, candidate)
                && deployment
                    .end_rollout(TransitionKind::Aborted, "its candidate file was removed")
                    .is_ok()
            {
                self.metrics
                    .record_rollout_transition(name, TransitionKind::Aborted);
            }
            return;
        }
        if let Some(name) = entry.plugin {
            self.registry.remove(&name);
            self.metrics.clear_plugin_info(&name);
            self.metrics.record_reload(&name, "removed");
            tracing::info!(plugin = %name, path = %path.display(), "plugin file removed; plugin unloaded");
            self.changed.notify_one();
        }
    }

    /// State of every plugin: files (running, loading, failed or retired candidates) and
    /// embedded plugins.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let files = lock(&self.files);
        let mut statuses = Vec::new();
        let mut from_files = HashSet::new();
        for (path, entry) in files.iter() {
            let deployment = entry
                .plugin
                .as_ref()
                .and_then(|name| self.registry.get(name));
            let state = entry.state.clone().unwrap_or(FileState::Loading);
            let file = path.display().to_string();
            if let Some(candidate) = &entry.candidate {
                let serving = deployment.as_ref().is_some_and(|deployment| {
                    Arc::ptr_eq(&deployment.load(), candidate)
                        || deployment
                            .rollout()
                            .is_some_and(|rollout| Arc::ptr_eq(&rollout.candidate, candidate))
                });
                let state = match state {
                    FileState::Running if !serving => FileState::Retired,
                    state => state,
                };
                let mut status = PluginStatus::new(
                    file,
                    state,
                    Some(candidate),
                    entry.error.clone(),
                    &self.metrics,
                );
                status.candidate = true;
                status.file_sha256 = Some(candidate.sha256.clone());
                statuses.push(status);
                continue;
            }
            if let Some(name) = &entry.plugin {
                from_files.insert(name.clone());
            }
            let version = deployment.as_ref().map(|deployment| deployment.load_full());
            let mut status = PluginStatus::new(
                file,
                state,
                version.as_deref(),
                entry.error.clone(),
                &self.metrics,
            );
            status.file_sha256 = entry
                .fingerprint
                .as_deref()
                .and_then(|fingerprint| fingerprint.split(':').next())
                .map(str::to_string);
            if let Some(deployment) = &deployment {
                status.describe_deployment(deployment);
            }
            statuses.push(status);
        }
        for (name, deployment) in self.registry.slots() {
            if !from_files.contains(&name) {
                let version = deployment.load_full();
                let mut status = PluginStatus::new(
                    version.origin.clone(),
                    FileState::Running,
                    Some(&version),
                    None,
                    &self.metrics,
                );
                status.describe_deployment(&deployment);
                statuses.push(status);
            }
        }
        statuses
    }
}
