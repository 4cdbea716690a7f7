//! What the host reports about each plugin (`/api/plugins`, `evhost plugins`, logs).

use crate::metrics::Metrics;
use crate::metrics::totals::PluginStats;
use crate::plugin::{CompileTier, PluginVersion};
use crate::rollout::{Deployment, RolloutStatus, Transition};

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
    /// A candidate file that does not serve: its rollout was rolled back or aborted (copy
    /// the file again to start over), or its promoted version was replaced since.
    Retired,
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
    /// How the running version's code was compiled: `quick` until its optimised recompile
    /// replaces it (see [`crate::plugin::tier`]).
    #[serde(default)]
    pub compiled: Option<CompileTier>,
    /// Subscriptions of the running version.
    pub subscriptions: Vec<String>,
    /// Why the last load failed.
    pub error: Option<String>,
    /// Counters and handler times of the running version's plugin since the host started.
    #[serde(default)]
    pub stats: Option<PluginStats>,
    /// Whether the file is a candidate (`*.next.wasm`); its version is then the candidate's.
    #[serde(default)]
    pub candidate: bool,
    /// SHA-256 of the component the file last loaded: it differs from `sha256` when what runs
    /// is not what the file holds (after a rollback or a promotion).
    #[serde(default)]
    pub file_sha256: Option<String>,
    /// The rollout under way, if any.
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
    /// The latest changes of what serves: loads, swaps, rollouts, promotions, rollbacks.
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// The earlier versions kept for a rollback (`<version> <sha256 prefix>`), latest first.
    #[serde(default)]
    pub previous_versions: Vec<String>,
}

impl PluginStatus {
    /// The status of `file` in `state`, running `version` (if any).
    pub(super) fn new(
        file: String,
        state: FileState,
        version: Option<&PluginVersion>,
        error: Option<String>,
        metrics: &Metrics,
    ) -> Self {
        PluginStatus {
            file,
            state,
            name: version.map(|version| version.name.clone()),
            version: version.map(|version| version.version.clone()),
            sha256: version.map(|version| version.sha256.clone()),
            loaded_at: version.map(|version| version.loaded_at.to_string()),
            compiled: version.map(|version| version.tier),
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
            candidate: false,
            file_sha256: None,
            rollout: None,
            transitions: Vec::new(),
            previous_versions: Vec::new(),
        }
    }

    /// Adds what the plugin's deployment holds: its rollout, changes and earlier versions.
    pub(super) fn describe_deployment(&mut self, deployment: &Deployment) {
        self.rollout = deployment.rollout().map(|rollout| rollout.status());
        self.transitions = deployment.transitions();
        self.previous_versions = deployment
            .previous_versions()
            .iter()
            .map(|version| {
                format!(
                    "{} {}",
                    version.version,
                    &version.sha256[..version.sha256.len().min(12)]
                )
            })
            .collect();
    }
}
