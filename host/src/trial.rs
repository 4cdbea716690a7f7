//! Trials: a plugin run on events without Redis or a host, each call's outcome and the
//! effects a host would commit (publishes, key-value writes, journal) sorted out, and the
//! metric samples it changed. `evhost test` is built on it.
//!
//! The events are handled one after the other by one instance, as one consumer would, on an
//! in-memory broker: each handled event's effects are applied before the next one runs, so
//! key-value state carries over (and can be seeded). A failed call is reported, not retried; a
//! trap or a timeout discards the instance, and the next event gets a fresh one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, BrokerError, Commit, EntryId, Op};
use crate::event::{Event, PARTITION_KEY};
use crate::keyspace::Keyspace;
use crate::metrics::Metrics;
use crate::plugin::{
    BatchOverlay, CallEffects, CallError, DeliveryInfo, HostServices, LoadError, Outcome,
    PluginEngine, PluginInstance, PluginVersion,
};

/// Why a trial could not run an event.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The plugin could not be instantiated.
    #[error("cannot instantiate {plugin}: {reason}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The in-memory broker refused the call's writes.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What became of one event.
#[derive(Debug, Serialize)]
pub struct Trial {
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's id.
    pub event: String,
    /// `handled`, `retry`, `rejected`, `trapped` or `timed-out`.
    pub outcome: &'static str,
    /// Why, when it was not handled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The events it published: `{"type", "data", "key"}` (data as JSON when it is JSON).
    pub publishes: Vec<Value>,
    /// Its key-value writes: `{"op": "set", "key", "value"}`, `{"op": "delete", "key"}` or
    /// `{"op": "increment", "key", "by"}`, keys without the plugin's prefix.
    pub kv: Vec<Value>,
    /// Its journal records, field by field.
    pub journal: Vec<Value>,
    /// The plugin's metric samples the call changed, as `/metrics` shows them.
    pub metrics: Vec<String>,
}

/// The plugin under test, with its instance and the in-memory state it works on.
pub struct TrialRunner {
    version: Arc<PluginVersion>,
    instance: Option<PluginInstance>,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    keyspace: Keyspace,
    /// Events handled so far (the synthetic entry ids).
    handled: u64,
}

impl TrialRunner {
    /// Loads the plugin file `plugin` (and its sidecar), compiled through the cache in
    /// `cache_dir`.
    ///
    /// # Errors
    ///
    /// When the file is no usable plugin.
    pub async fn load(plugin: &Path, cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
        let metrics = Arc::new(Metrics::new());
        let services = HostServices::new(broker.clone(), metrics.clone());
        let engine = PluginEngine::new(services, cache_dir)?;
        let version = engine.load_file(plugin).await?;
        Ok(TrialRunner {
            version,
            instance: None,
            broker,
            metrics,
            keyspace: Keyspace::single(),
            handled: 0,
        })
    }

    /// The plugin as loaded.
    pub fn plugin(&self) -> &PluginVersion {
        &self.version
    }

    /// Seeds the plugin's key-value store with `entries` (a string value is stored as it is,
    /// any other as its JSON text).
    ///
    /// # Errors
    ///
    /// When the in-memory broker refuses the writes (a key too long, say).
    pub async fn seed(&self, entries: Map<String, Value>) -> Result<(), BrokerError> {
        let ops = entries
            .into_iter()
            .map(|(key, value)| Op::Set {
                key: self.keyspace.kv_key(&self.version.name, &key),
                value: match value {
                    Value::String(text) => text.into_bytes(),
                    other => other.to_string().into_bytes(),
                },
            })
            .collect();
        self.broker
            .commit(&Commit {
                ops,
                settlements: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// Handles `event` and applies what a handled event commits.
    ///
    /// # Errors
    ///
    /// When no instance can be made, or the in-memory broker refuses the call's writes.
    pub async fn handle(&mut self, event: Event) -> Result<Trial, TrialError> {
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => self
                .version
                .instantiate()
                .await
                .map_err(|err| TrialError::Instantiate {
                    plugin: self.version.name.clone(),
                    reason: format!("{err:#}"),
                })?,
        };
        self.handled += 1;
        let mut trial = Trial {
            event_type: event.event_type.clone(),
            event: event.id.clone(),
            outcome: "handled",
            error: None,
            publishes: Vec::new(),
            kv: Vec::new(),
            journal: Vec::new(),
            metrics: Vec::new(),
        };
        let samples_before = self.plugin_samples();
        let delivery = DeliveryInfo {
            stream: self.keyspace.event_stream(&event.event_type),
            entry_id: EntryId::new(self.handled, 0).to_string(),
            attempt: 1,
            group: self.version.name.clone(),
        };
        let mut overlay = BatchOverlay::default();
        match instance.handle(event, delivery, &mut overlay).await {
            Ok(Outcome::Ok(effects)) => {
                self.instance = Some(instance);
                self.describe(&effects, &mut trial);
                self.broker
                    .commit(&Commit {
                        ops: effects.ops,
                        settlements: Vec::new(),
                    })
                    .await?;
            }
            Ok(Outcome::Retry { reason, .. }) => {
                self.instance = Some(instance);
                (trial.outcome, trial.error) = ("retry", Some(reason));
            }
            Ok(Outcome::Reject { reason }) => {
                self.instance = Some(instance);
                (trial.outcome, trial.error) = ("rejected", Some(reason));
            }
            Err(err) => {
                trial.outcome = match err {
                    CallError::Trap(_) => "trapped",
                    CallError::Timeout(_) => "timed-out",
                };
                trial.error = Some(err.to_string());
            }
        }
        trial.metrics = self
            .plugin_samples()
            .into_iter()
            .filter(|sample| !samples_before.contains(sample))
            .collect();
        Ok(trial)
    }

    /// The metric samples labelled with the plugin's name (what it records, and what the host
    /// counts for it), as `/metrics` renders them; of a histogram its sum and count, not its
    /// buckets.
    fn plugin_samples(&self) -> Vec<String> {
        let label = format!("plugin=\"{}\"", self.version.name);
        self.metrics
            .render()
            .lines()
            .filter(|line| !line.starts_with('#') && line.contains(&label))
            .filter(|line| {
                !line
                    .split('{')
                    .next()
                    .is_some_and(|name| name.ends_with("_bucket"))
            })
            .map(str::to_string)
            .collect()
    }

    /// Sorts the writes of a handled call into publishes, key-value writes and journal.
    fn describe(&self, effects: &CallEffects, trial: &mut Trial) {
        let plugin = &self.version.name;
        let kv_prefix = self.keyspace.kv_prefix(plugin);
        let journal = self.keyspace.journal(plugin);
        let kv_key = |key: &str| {
            key.strip_prefix(kv_prefix.as_str())
                .unwrap_or(key)
                .to_string()
        };
        for op in &effects.ops {
            match op {
                Op::Add { stream, fields } if *stream == journal => {
                    let record: Map<String, Value> = fields
                        .iter()
                        .map(|(name, value)| (name.clone(), text_or_json(value)))
                        .collect();
                    trial.journal.push(Value::Object(record));
                }
                Op::Add { stream, fields } => {
                    match Event::from_entry(stream, EntryId::ZERO, fields) {
                        Ok(published) => trial.publishes.push(json!({
                            "type": published.event_type,
                            "data": text_or_json(&published.data),
                            "key": published.extension(PARTITION_KEY),
                        })),
                        Err(_) => trial.publishes.push(json!({ "stream": stream })),
                    }
                }
                Op::Set { key, value } => trial.kv.push(json!({
                    "op": "set",
                    "key": kv_key(key),
                    "value": String::from_utf8_lossy(value),
                })),
                Op::Delete { key } => trial.kv.push(json!({ "op": "delete", "key": kv_key(key) })),
                Op::Increment { key, delta } => trial.kv.push(json!({
                    "op": "increment",
                    "key": kv_key(key),
                    "by": delta,
                })),
                Op::Remove { .. } | Op::Fence { .. } => {}
            }
        }
    }
}

/// `bytes` as the JSON value they hold, else as text.
fn text_or_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
