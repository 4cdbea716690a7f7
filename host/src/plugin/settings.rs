//! Per-plugin settings from the optional sidecar file `<name>.toml` next to `<name>.wasm`.
//!
//! ```toml
//! start = "0"            # new consumer groups start at the first entry ("$": only new events)
//!
//! [config]               # values the plugin reads through wasi:config/store
//! max_amount = 5000
//!
//! [limits]
//! timeout_ms = 5000      # per-call deadline
//! memory_mib = 128       # linear memory cap per instance
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::GroupStart;

/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default memory cap per instance (JavaScript guests need this much).
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// Settings of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Where newly created consumer groups start.
    pub start: GroupStart,
    /// Configuration values offered to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Deadline of one `handle` or `describe` call.
    pub timeout: Duration,
    /// Maximum linear memory of one instance, in bytes.
    pub memory_bytes: usize,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            start: GroupStart::End,
            config: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: mib(DEFAULT_MEMORY_MIB),
        }
    }
}

/// A sidecar file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The sidecar file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid plugin settings in {path}: {message}")]
    Invalid {
        /// The sidecar file.
        path: PathBuf,
        /// What the parser said, naming the key.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarFile {
    start: Option<GroupStart>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
}

fn mib(value: u64) -> usize {
    usize::try_from(value.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

impl PluginSettings {
    /// The sidecar path of a plugin file: `payment.wasm` → `payment.toml`.
    pub fn sidecar_path(wasm: &Path) -> PathBuf {
        wasm.with_extension("toml")
    }

    /// Reads the sidecar of `wasm` if there is one; defaults otherwise.
    ///
    /// # Errors
    ///
    /// When the sidecar exists but cannot be read or parsed.
    pub fn load_for(wasm: &Path) -> Result<Self, SettingsError> {
        let path = Self::sidecar_path(wasm);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(SettingsError::Read { path, source }),
        }
    }

    /// Parses sidecar text; `path` is only used in error messages.
    ///
    /// # Errors
    ///
    /// When the text is not valid TOML, has unknown keys or values of the wrong type.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: SidecarFile = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
        let mut config = BTreeMap::new();
        for (key, value) in file.config {
            let value = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                other => {
                    return Err(invalid(format!(
                        "config value `{key}` must be a string, number or boolean, not {}",
                        other.type_str()
                    )));
                }
            };
            config.insert(key, value);
        }
        let defaults = Self::default();
        Ok(PluginSettings {
            start: file.start.unwrap_or(defaults.start),
            config,
            timeout: file
                .limits
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.timeout),
            memory_bytes: file
                .limits
                .memory_mib
                .map(mib)
                .unwrap_or(defaults.memory_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_sidecar() {
        let text = "start = \"0\"\n[config]\nmax_amount = 5000\nname = \"p\"\n[limits]\ntimeout_ms = 100\nmemory_mib = 16\n";
        let settings = PluginSettings::parse(text, Path::new("p.toml")).expect("valid");
        assert_eq!(settings.start, GroupStart::Beginning);
        assert_eq!(
            settings.config.get("max_amount").map(String::as_str),
            Some("5000")
        );
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.memory_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let err = PluginSettings::parse("strat = \"0\"", Path::new("plugins/p.toml"))
            .expect_err("unknown key");
        let message = err.to_string();
        assert!(
            message.contains("strat") && message.contains("plugins/p.toml"),
            "{message}"
        );
    }
}
