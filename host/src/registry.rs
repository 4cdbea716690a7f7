//! The plugin registry: plugin name → its [`Deployment`] (live version, rollout, earlier
//! versions), each swappable atomically.
//!
//! Consumer tasks hold the [`PluginSlot`] of their plugin and load the live version (and the
//! rollout) at the start of every round, so a swap takes effect at the next round while calls
//! already running finish on the old version.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::plugin::PluginVersion;
use crate::rollout::Deployment;

/// The deployment of one plugin.
pub type PluginSlot = Arc<Deployment>;

/// Why a plugin could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another file already provides a plugin of this name.
    #[error(
        "plugin name {name:?} from {origin} is already used by {existing}; plugin names must be unique"
    )]
    NameTaken {
        /// The contested name.
        name: String,
        /// The file that tried to register it.
        origin: String,
        /// The file that has it.
        existing: String,
    },
}

/// All loaded plugins.
#[derive(Debug, Default)]
pub struct Registry {
    /// Slots by plugin name.
    plugins: RwLock<BTreeMap<String, PluginSlot>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new plugin.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NameTaken`] when a plugin of that name is loaded from another origin.
    pub fn insert(&self, version: Arc<PluginVersion>) -> Result<PluginSlot, RegistryError> {
        let mut plugins = self
            .plugins
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = plugins.get(&version.name) {
            let existing = existing.load();
            return Err(RegistryError::NameTaken {
                name: version.name.clone(),
                origin: version.origin.clone(),
                existing: existing.origin.clone(),
            });
        }
        let slot: PluginSlot = Arc::new(Deployment::new(version.clone()));
        plugins.insert(version.name.clone(), slot.clone());
        Ok(slot)
    }

    /// Replaces the version of an already registered plugin; returns the previous version.
    pub fn replace(&self, version: Arc<PluginVersion>) -> Option<Arc<PluginVersion>> {
        let plugins = self
            .plugins
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        plugins.get(&version.name).map(|slot| slot.swap(version))
    }

    /// Removes a plugin; returns its slot.
    pub fn remove(&self, name: &str) -> Option<PluginSlot> {
        self.plugins
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
    }

    /// The slot of `name`.
    pub fn get(&self, name: &str) -> Option<PluginSlot> {
        self.plugins
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    /// Current versions of all plugins, by name.
    pub fn versions(&self) -> Vec<Arc<PluginVersion>> {
        self.plugins
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|slot| slot.load_full())
            .collect()
    }

    /// Names and slots of all plugins.
    pub fn slots(&self) -> Vec<(String, PluginSlot)> {
        self.plugins
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, slot)| (name.clone(), slot.clone()))
            .collect()
    }
}
