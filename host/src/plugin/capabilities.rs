//! The host capabilities a plugin imports: logging, key-value store (with atomics and batch
//! operations), configuration, publishing, journal and metrics.
//!
//! Writes (publishes, journal appends, key-value sets and deletes) are checked against the
//! call's [`CallBudget`](super::budget::CallBudget), buffered in
//! [`Effects`](super::state::Effects) and committed with the acknowledgement of the event.

use wasmtime::component::Resource;

use super::bindings::evhost::plugin::{journal, metrics, publisher, types};
use super::bindings::wasi::config::store as config;
use super::bindings::wasi::keyvalue::atomics;
use super::bindings::wasi::keyvalue::batch;
use super::bindings::wasi::keyvalue::store as kv;
use super::bindings::wasi::logging::logging;
use super::budget::Write;
use super::output::Source;
use super::state::{PendingPublish, PluginState};
use crate::activity::Activity;
use crate::broker::Op;
use crate::broker::expect::{counter_add, counter_value};
use crate::event::{self, CAUSATION_ID, CORRELATION_ID, Event, PARTITION_KEY};

/// A key-value bucket opened by a plugin. Only the default bucket (`""`) exists.
#[derive(Debug)]
pub struct Bucket {
    /// Prefix of every key of the bucket in the broker.
    prefix: String,
}

const NOT_IN_CALL: &str = "effects are only allowed while `handle` runs";

impl types::Host for PluginState {}

impl logging::Host for PluginState {
    /// Logs through the plugin's [`PluginLog`](super::output::PluginLog): split into lines,
    /// escaped, tagged with the plugin and rate-limited. The context is a field, never the
    /// target.
    async fn log(
        &mut self,
        level: logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let (tracing_level, critical, name) = match level {
            logging::Level::Trace => (tracing::Level::TRACE, false, "trace"),
            logging::Level::Debug => (tracing::Level::DEBUG, false, "debug"),
            logging::Level::Info => (tracing::Level::INFO, false, "info"),
            logging::Level::Warn => (tracing::Level::WARN, false, "warn"),
            logging::Level::Error => (tracing::Level::ERROR, false, "error"),
            logging::Level::Critical => (tracing::Level::ERROR, true, "critical"),
        };
        let source = Source::Logging { context: &context };
        if self.log.write(tracing_level, critical, source, &message) > 0 {
            let _ = self.services.activity.send(Activity::Log {
                plugin: self.plugin.to_string(),
                level: name,
                message,
            });
        }
        Ok(())
    }
}

impl config::Host for PluginState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.config.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()))
    }
}

fn broker_error(err: impl std::fmt::Display) -> kv::Error {
    kv::Error::Other(err.to_string())
}

impl kv::Host for PluginState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, kv::Error>> {
        if !(identifier.is_empty() || identifier == "default") {
            return Ok(Err(kv::Error::NoSuchStore));
        }
        let bucket = Bucket {
            prefix: self.kv_prefix(),
        };
        Ok(Ok(self.table.push(bucket)?))
    }
}

impl kv::HostBucket for PluginState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::Error>> {
        let full_key = format!("{}{key}", self.table.get(&bucket)?.prefix);
        Ok(self
            .effects
            .read(&*self.services.broker, &full_key)
            .await
            .map_err(broker_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.buffer_set(&prefix, key, value))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.buffer_delete(&prefix, key))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv::Error>> {
        Ok(self.get(bucket, key).await?.map(|value| value.is_some()))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<kv::KeyResponse, kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        let first_page = cursor.is_none();
        let (keys, next) = match self
            .services
            .broker
            .scan_keys(&prefix, cursor.unwrap_or(0))
            .await
        {
            Ok(page) => page,
            Err(err) => return Ok(Err(broker_error(err))),
        };
        let mut listed: Vec<String> = keys
            .into_iter()
            .filter(|key| self.effects.lookup(key) != Some(None))
            .collect();
        if first_page {
            for (key, present) in self.effects.buffered_keys() {
                if present && !listed.contains(key) {
                    listed.push(key.clone());
                }
            }
        }
        let keys = listed
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_string))
            .collect();
        Ok(Ok(kv::KeyResponse {
            keys,
            cursor: (next != 0).then_some(next),
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl PluginState {
    /// Checks a set against the call's budget and buffers it.
    fn buffer_set(&mut self, prefix: &str, key: String, value: Vec<u8>) -> Result<(), kv::Error> {
        if self.effects.scope.is_none() {
            return Err(kv::Error::Other(NOT_IN_CALL.into()));
        }
        let size = key.len() + value.len();
        let write = Write {
            what: "value",
            key: Some(&key),
            size,
            cost: size,
            event_type: None,
        };
        self.budget.spend(write).map_err(kv::Error::Other)?;
        let key = format!("{prefix}{key}");
        self.effects.push(Op::Set { key, value });
        Ok(())
    }

    /// Checks a delete against the call's budget and buffers it.
    fn buffer_delete(&mut self, prefix: &str, key: String) -> Result<(), kv::Error> {
        if self.effects.scope.is_none() {
            return Err(kv::Error::Other(NOT_IN_CALL.into()));
        }
        let write = Write {
            what: "delete",
            key: Some(&key),
            size: key.len(),
            cost: key.len(),
            event_type: None,
        };
        self.budget.spend(write).map_err(kv::Error::Other)?;
        let key = format!("{prefix}{key}");
        self.effects.push(Op::Delete { key });
        Ok(())
    }

    /// Checks an increment (the key holds a counter, the result stays in range, the budget)
    /// and buffers it; returns the value the call sees.
    async fn buffer_increment(
        &mut self,
        prefix: &str,
        key: String,
        delta: u64,
    ) -> Result<u64, kv::Error> {
        if self.effects.scope.is_none() {
            return Err(kv::Error::Other(NOT_IN_CALL.into()));
        }
        let full_key = format!("{prefix}{key}");
        let current = self
            .effects
            .peek(&*self.services.broker, &full_key)
            .await
            .map_err(broker_error)?;
        let sum = counter_value(current.as_deref())
            .and_then(|current| counter_add(current, delta))
            .map_err(|err| {
                kv::Error::Other(format!("cannot increment {key:?} by {delta}: {err}"))
            })?;
        let returned = u64::try_from(sum).map_err(|_| {
            kv::Error::Other(format!(
                "increment of {key:?} gives {sum}, below zero (increment returns an unsigned number)"
            ))
        })?;
        let write = Write {
            what: "increment",
            key: Some(&key),
            size: key.len(),
            cost: key.len() + 20,
            event_type: None,
        };
        self.budget.spend(write).map_err(kv::Error::Other)?;
        self.effects.push_increment(full_key, delta, sum);
        Ok(returned)
    }
}

impl atomics::Host for PluginState {
    /// Buffers an `INCRBY`, applied at commit, which never conflicts: concurrent increments
    /// add up. The value returned is what the call sees (the stored value when read, plus the
    /// batch's own increments); increments other consumers commit meanwhile add to it.
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.buffer_increment(&prefix, key, delta).await)
    }
}

impl batch::Host for PluginState {
    /// One round trip for every key not buffered; each read is checked like a `get`.
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        let full_keys: Vec<String> = keys.iter().map(|key| format!("{prefix}{key}")).collect();
        let values = match self
            .effects
            .read_many(&*self.services.broker, &full_keys)
            .await
        {
            Ok(values) => values,
            Err(err) => return Ok(Err(broker_error(err))),
        };
        Ok(Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect()))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        for (key, value) in key_values {
            if let Err(err) = self.buffer_set(&prefix, key, value) {
                return Ok(Err(err));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        for key in keys {
            if let Err(err) = self.buffer_delete(&prefix, key) {
                return Ok(Err(err));
            }
        }
        Ok(Ok(()))
    }
}

impl publisher::Host for PluginState {
    async fn publish(
        &mut self,
        outgoing: types::OutgoingEvent,
    ) -> wasmtime::Result<Result<String, String>> {
        let Some(scope) = self.effects.scope.clone() else {
            return Ok(Err(NOT_IN_CALL.into()));
        };
        if let Err(reason) = event::validate_type(&outgoing.type_) {
            return Ok(Err(self.budget.refuse_invalid(reason)));
        }
        let mut event = Event::new(outgoing.type_, self.plugin.to_string(), outgoing.data);
        if let Some(content_type) = outgoing.datacontenttype {
            event.datacontenttype = content_type;
        }
        for (name, value) in outgoing.extensions {
            if name != CORRELATION_ID && name != CAUSATION_ID {
                event.set_extension(&name, value);
            }
        }
        event.set_extension(CORRELATION_ID, scope.correlation_id);
        event.set_extension(CAUSATION_ID, scope.event_id);
        // The saga stays with its key unless the plugin gave the event its own.
        if let Some(key) = scope.partition_key
            && event.extension(PARTITION_KEY).is_none()
        {
            event.set_extension(PARTITION_KEY, key);
        }
        let fields = event.to_fields();
        let write = Write {
            what: "event data",
            key: None,
            size: event.data.len(),
            cost: fields
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum(),
            event_type: Some(&event.event_type),
        };
        if let Err(reason) = self.budget.spend(write) {
            return Ok(Err(reason));
        }
        // An event goes to the partition of its key; a partition other than the one of the
        // event being handled lies in another slot, so it goes through this one's outbox.
        let target = self.keyspace.for_key(crate::partition::key_of(&event));
        let op = match self.keyspace.outbox() {
            Some(outbox) if target.partition() != self.keyspace.partition() => {
                crate::relay::outbox_op(outbox, target, &event.event_type, fields)
            }
            _ => Op::Add {
                stream: target.event_stream(&event.event_type),
                fields,
            },
        };
        self.effects.push(op);
        self.effects.push_publish(PendingPublish {
            event_type: event.event_type.clone(),
            event_id: event.id.clone(),
            data: String::from_utf8_lossy(&event.data).into_owned(),
        });
        Ok(Ok(event.id))
    }
}

impl journal::Host for PluginState {
    async fn append(
        &mut self,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.effects.scope.is_none() {
            return Ok(Err(NOT_IN_CALL.into()));
        }
        if fields.is_empty() {
            let reason = "a journal record needs at least one field".to_string();
            return Ok(Err(self.budget.refuse_invalid(reason)));
        }
        let size = fields
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let write = Write {
            what: "journal record",
            key: None,
            size,
            cost: size,
            event_type: None,
        };
        if let Err(reason) = self.budget.spend(write) {
            return Ok(Err(reason));
        }
        let stream = self.journal_stream();
        let fields = fields
            .into_iter()
            .map(|(name, value)| (name, value.into_bytes()))
            .collect();
        self.effects.push(Op::Add { stream, fields });
        Ok(Ok(()))
    }
}

impl metrics::Host for PluginState {
    async fn counter_add(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.shadow {
            return Ok(Ok(()));
        }
        Ok(self
            .services
            .metrics
            .plugin_counter_add(&self.plugin, &name, value, labels))
    }

    async fn gauge_set(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.shadow {
            return Ok(Ok(()));
        }
        Ok(self
            .services
            .metrics
            .plugin_gauge_set(&self.plugin, &name, value, labels))
    }

    async fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), String>> {
        if self.shadow {
            return Ok(Ok(()));
        }
        Ok(self
            .services
            .metrics
            .plugin_histogram_observe(&self.plugin, &name, value, labels))
    }
}
