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
//! describe_timeout_ms = 2000  # deadline of describe() when the file is loaded
//! memory_mib = 128       # linear memory cap per instance
//! max_event_bytes = 1048576  # larger entries go to the dead-letter stream unread
//! concurrency = 1        # consumers per stream in this host; above 1 a stream's events are
//!                        # handled in parallel, no longer in stream order
//! partition_key = "auction_id"  # with concurrency N: one consumer handles N events at a time,
//!                        # those with the same value of this field of the JSON data in order
//! # The budget of one call (see `budget.rs`): a write over it is refused, and the call then
//! # commits nothing and its event is rejected (dead-lettered with the limit's name).
//! max_call_bytes = 8388608     # all effects of a call: events, keys and values, journal (8 MiB)
//! max_call_writes = 10000      # publishes, journal appends, key-value sets and deletes
//! max_key_bytes = 1024         # longest key-value key
//! max_call_event_types = 16    # distinct event types one call publishes to
//!
//! [retry]
//! max_attempts = 5       # then the event is dead-lettered
//! base_ms = 500          # first retry delay; doubles with each attempt (with jitter)
//! cap_ms = 60000         # longest retry delay
//! ordered = false        # true: a failing event holds back the later events of its
//!                        # partition key until it succeeds or is dead-lettered
//! ```
//!
//! The sidecar of a candidate (`payment.next.toml` beside `payment.next.wasm`) may also hold
//! a `[rollout]` table: how it is rolled out (see [`crate::rollout::plan`]). Elsewhere the
//! table is ignored, so that a promoted candidate's files can be renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::budget::CallLimits;
use crate::broker::GroupStart;
use crate::consumer::RetryPolicy;

/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of `describe()`: a plugin file that hangs there fails alone, quickly.
pub const DEFAULT_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default memory cap per instance (JavaScript guests need this much).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Default largest entry handed to a plugin.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Settings of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Where newly created consumer groups start.
    pub start: GroupStart,
    /// Configuration values offered to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Deadline of one `handle` or `describe` call.
    pub timeout: Duration,
    /// Deadline of `describe()` when the file is loaded.
    pub describe_timeout: Duration,
    /// Maximum linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Largest entry (sum of field names and values) handed to the plugin.
    pub max_event_bytes: usize,
    /// Retries and dead-lettering.
    pub retry: RetryPolicy,
    /// Ordered retries (`[retry] ordered`): an event that failed holds back the later events
    /// of its partition key (its `partitionkey`, else its id) until it succeeds or is
    /// dead-lettered; events of other keys flow.
    pub ordered_retries: bool,
    /// Consumers per stream in this host (`None`: one, which keeps stream order; more handle
    /// a stream's events in parallel, like that many hosts would).
    pub concurrency: Option<std::num::NonZeroUsize>,
    /// A top-level field of the events' JSON data: with it, `concurrency` is the number of
    /// events one consumer per stream handles at a time, and events with the same value of
    /// the field are handled one after the other, in stream order.
    pub partition_key: Option<String>,
    /// The budget of one call.
    pub call_limits: CallLimits,
    /// How the plugin is rolled out when it is a candidate (`[rollout]`).
    pub rollout: Option<crate::rollout::RolloutPlan>,
}

impl PluginSettings {
    /// Consumers per stream in this host: `concurrency`, or one when it is partitioned.
    pub fn consumers_per_stream(&self) -> usize {
        match self.partition_key {
            Some(_) => 1,
            None => self.concurrency.map_or(1, std::num::NonZeroUsize::get),
        }
    }

    /// Events one consumer handles at a time: `concurrency` when partitioned, else one.
    pub fn lanes(&self) -> usize {
        match self.partition_key {
            Some(_) => self.concurrency.map_or(1, std::num::NonZeroUsize::get),
            None => 1,
        }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            start: GroupStart::End,
            config: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            describe_timeout: DEFAULT_DESCRIBE_TIMEOUT,
            memory_bytes: mib(DEFAULT_MEMORY_MIB),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            retry: RetryPolicy::default(),
            ordered_retries: false,
            concurrency: None,
            partition_key: None,
            call_limits: CallLimits::default(),
            rollout: None,
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
    #[serde(default)]
    retry: RetrySection,
    rollout: Option<crate::rollout::plan::RolloutSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySection {
    max_attempts: Option<u32>,
    base_ms: Option<u64>,
    cap_ms: Option<u64>,
    ordered: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    timeout_ms: Option<u64>,
    describe_timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
    max_event_bytes: Option<usize>,
    concurrency: Option<usize>,
    partition_key: Option<String>,
    max_call_bytes: Option<usize>,
    max_call_writes: Option<usize>,
    max_key_bytes: Option<usize>,
    max_call_event_types: Option<usize>,
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
        let concurrency = match file.limits.concurrency {
            None => None,
            Some(0) => {
                return Err(invalid(
                    "limits.concurrency must be at least 1 (the number of consumers per stream)"
                        .into(),
                ));
            }
            Some(limit) => std::num::NonZeroUsize::new(limit),
        };
        let partition_key = match file.limits.partition_key {
            Some(key) if key.trim().is_empty() => {
                return Err(invalid(
                    "limits.partition_key must name a field of the events' JSON data".into(),
                ));
            }
            key => key,
        };
        let call_limits = CallLimits {
            max_call_bytes: file
                .limits
                .max_call_bytes
                .unwrap_or(defaults.call_limits.max_call_bytes),
            max_call_writes: file
                .limits
                .max_call_writes
                .unwrap_or(defaults.call_limits.max_call_writes),
            max_key_bytes: file
                .limits
                .max_key_bytes
                .unwrap_or(defaults.call_limits.max_key_bytes),
            max_call_event_types: file
                .limits
                .max_call_event_types
                .unwrap_or(defaults.call_limits.max_call_event_types),
        };
        let rollout = file
            .rollout
            .map(|section| section.plan())
            .transpose()
            .map_err(invalid)?;
        Ok(PluginSettings {
            rollout,
            ordered_retries: file.retry.ordered.unwrap_or(defaults.ordered_retries),
            concurrency,
            partition_key,
            call_limits,
            start: file.start.unwrap_or(defaults.start),
            config,
            timeout: file
                .limits
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.timeout),
            describe_timeout: file
                .limits
                .describe_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.describe_timeout),
            memory_bytes: file
                .limits
                .memory_mib
                .map(mib)
                .unwrap_or(defaults.memory_bytes),
            max_event_bytes: file
                .limits
                .max_event_bytes
                .unwrap_or(defaults.max_event_bytes),
            retry: RetryPolicy {
                max_attempts: file
                    .retry
                    .max_attempts
                    .unwrap_or(defaults.retry.max_attempts)
                    .max(1),
                base: file
                    .retry
                    .base_ms
                    .map(Duration::from_millis)
                    .unwrap_or(defaults.retry.base),
                cap: file
                    .retry
                    .cap_ms
                    .map(Duration::from_millis)
                    .unwrap_or(defaults.retry.cap),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_key_turns_concurrency_into_lanes_of_one_consumer() {
        let plain = PluginSettings::parse("[limits]\nconcurrency = 4\n", Path::new("p.toml"))
            .expect("valid");
        assert_eq!((plain.consumers_per_stream(), plain.lanes()), (4, 1));
        let keyed = PluginSettings::parse(
            "[limits]\nconcurrency = 4\npartition_key = \"auction_id\"\n",
            Path::new("p.toml"),
        )
        .expect("valid");
        assert_eq!(keyed.partition_key.as_deref(), Some("auction_id"));
        assert_eq!((keyed.consumers_per_stream(), keyed.lanes()), (1, 4));
        let default = PluginSettings::default();
        assert_eq!((default.consumers_per_stream(), default.lanes()), (1, 1));
        let err = PluginSettings::parse("[limits]\npartition_key = \" \"\n", Path::new("p.toml"))
            .expect_err("blank key");
        assert!(err.to_string().contains("limits.partition_key"), "{err}");
    }

    #[test]
    fn parses_a_full_sidecar() {
        let text = "start = \"0\"\n[config]\nmax_amount = 5000\nname = \"p\"\n[limits]\ntimeout_ms = 100\nmemory_mib = 16\nconcurrency = 2\n";
        let settings = PluginSettings::parse(text, Path::new("p.toml")).expect("valid");
        assert_eq!(settings.start, GroupStart::Beginning);
        assert_eq!(
            settings.config.get("max_amount").map(String::as_str),
            Some("5000")
        );
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.memory_bytes, 16 * 1024 * 1024);
        assert_eq!(
            settings.concurrency.map(std::num::NonZeroUsize::get),
            Some(2)
        );
        let err = PluginSettings::parse("[limits]\nconcurrency = 0\n", Path::new("p.toml"))
            .expect_err("zero concurrency");
        assert!(err.to_string().contains("limits.concurrency"), "{err}");
    }

    #[test]
    fn parses_the_call_budget_with_defaults() {
        let defaults = PluginSettings::parse("", Path::new("p.toml")).expect("valid");
        assert_eq!(defaults.call_limits, CallLimits::default());
        assert_eq!(defaults.call_limits.max_call_bytes, 8 * 1024 * 1024);
        assert_eq!(defaults.call_limits.max_call_writes, 10_000);
        assert_eq!(defaults.call_limits.max_key_bytes, 1024);
        assert_eq!(defaults.call_limits.max_call_event_types, 16);
        let text = "[limits]\nmax_call_bytes = 1000\nmax_call_writes = 5\nmax_key_bytes = 10\nmax_call_event_types = 2\n";
        let settings = PluginSettings::parse(text, Path::new("p.toml")).expect("valid");
        assert_eq!(
            settings.call_limits,
            CallLimits {
                max_call_bytes: 1000,
                max_call_writes: 5,
                max_key_bytes: 10,
                max_call_event_types: 2,
            }
        );
    }

    #[test]
    fn parses_the_retry_policy_and_backs_off() {
        let ordered =
            PluginSettings::parse("[retry]\nordered = true\n", Path::new("p.toml")).expect("valid");
        assert!(ordered.ordered_retries);
        assert!(!PluginSettings::default().ordered_retries);
        let text = "[retry]\nmax_attempts = 3\nbase_ms = 100\ncap_ms = 1000\n";
        let settings = PluginSettings::parse(text, Path::new("p.toml")).expect("valid");
        let policy = settings.retry;
        assert_eq!(policy.max_attempts, 3);
        for failures in 1..10 {
            let full =
                Duration::from_millis(100 * (1 << (failures - 1))).min(Duration::from_secs(1));
            let delay = policy.backoff(failures, 42);
            assert!(
                delay >= full / 2 && delay <= full,
                "{failures}: {delay:?} vs {full:?}"
            );
            assert_eq!(delay, policy.backoff(failures, 42), "stable for a seed");
        }
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
