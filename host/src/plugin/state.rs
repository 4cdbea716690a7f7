//! The per-instance store data: WASI context, limits, and the effects buffered by one call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::broadcast;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::CallBudget;
use super::output::{Channel, LogOutput, PluginLog, PluginLogs};
use crate::activity::Activity;
use crate::broker::{Broker, Op};
use crate::metrics::Metrics;

/// Services every plugin instance reaches through its capabilities.
pub struct HostServices {
    /// Where key-value reads go and where effects are committed.
    pub broker: Arc<dyn Broker>,
    /// Host and plugin-defined metrics.
    pub metrics: Arc<Metrics>,
    /// Live activity feed.
    pub activity: broadcast::Sender<Activity>,
    /// Plugin log lines, rate-limited per plugin.
    pub plugin_logs: PluginLogs,
}

impl HostServices {
    /// Bundles the services, with a fresh activity channel.
    pub fn new(broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<Self> {
        let (activity, _) = broadcast::channel(1024);
        Arc::new(HostServices {
            broker,
            plugin_logs: PluginLogs::new(metrics.clone()),
            metrics,
            activity,
        })
    }
}

/// The event a `handle` call is working on; publishes are caused by it.
#[derive(Debug, Clone)]
pub struct CallScope {
    /// Id of the event being handled.
    pub event_id: String,
    /// Correlation id to carry over to published events.
    pub correlation_id: String,
}

/// A publish waiting for its commit.
#[derive(Debug, Clone)]
pub struct PendingPublish {
    /// Type of the event.
    pub event_type: String,
    /// Id of the event.
    pub event_id: String,
    /// Data as text, for the activity feed.
    pub data: String,
}

/// The writes of one successful call, handed to the consumer to settle with its entry.
#[derive(Debug, Default)]
pub struct CallEffects {
    /// Writes, in call order.
    pub ops: Vec<Op>,
    /// Publishes among them, for metrics and the activity feed.
    pub publishes: Vec<PendingPublish>,
}

/// Effects of handler calls, buffered until they are committed with the acknowledgement.
///
/// A call's writes go to the call layer. When the call succeeds they are handed to the
/// consumer ([`Effects::keep_call`]), which commits them with the entry's `XACK`, and its
/// key-value writes stay visible to later calls of the batch until [`Effects::end_batch`].
/// Reads see the call layer, then the batch layer, then the broker (read-your-writes).
#[derive(Debug, Default)]
pub struct Effects {
    /// Set while `handle` runs.
    pub scope: Option<CallScope>,
    /// Writes of the running call.
    call_ops: Vec<Op>,
    /// Key-value state of the running call (`None` = deleted).
    call_overlay: HashMap<String, Option<Vec<u8>>>,
    /// Publishes of the running call.
    call_publishes: Vec<PendingPublish>,
    /// Key-value state written by the successful calls of the batch, not yet committed.
    batch_overlay: HashMap<String, Option<Vec<u8>>>,
}

impl Effects {
    /// Starts buffering a call for the event in `scope`.
    pub fn begin_call(&mut self, scope: CallScope) {
        self.scope = Some(scope);
        self.call_ops.clear();
        self.call_overlay.clear();
        self.call_publishes.clear();
    }

    /// The call succeeded: returns its writes; its key-value state stays visible to the batch.
    pub fn keep_call(&mut self) -> CallEffects {
        self.scope = None;
        self.batch_overlay.extend(self.call_overlay.drain());
        CallEffects {
            ops: std::mem::take(&mut self.call_ops),
            publishes: std::mem::take(&mut self.call_publishes),
        }
    }

    /// The call failed: its effects are dropped.
    pub fn discard_call(&mut self) {
        self.scope = None;
        self.call_ops.clear();
        self.call_overlay.clear();
        self.call_publishes.clear();
    }

    /// The batch was committed (or abandoned): reads go to the broker again.
    pub fn end_batch(&mut self) {
        self.batch_overlay.clear();
    }

    /// The buffered value of `key`: `Some(None)` when deleted, `None` when not buffered.
    pub fn lookup(&self, key: &str) -> Option<Option<&[u8]>> {
        self.call_overlay
            .get(key)
            .or_else(|| self.batch_overlay.get(key))
            .map(|value| value.as_deref())
    }

    /// Writes buffered by the running call.
    pub fn call_writes(&self) -> usize {
        self.call_ops.len()
    }

    /// Buffers a write.
    pub fn push(&mut self, op: Op) {
        match &op {
            Op::Set { key, value } => {
                self.call_overlay.insert(key.clone(), Some(value.clone()));
            }
            Op::Delete { key } => {
                self.call_overlay.insert(key.clone(), None);
            }
            Op::Add { .. } | Op::Ack { .. } | Op::Remove { .. } => {}
        }
        self.call_ops.push(op);
    }

    /// Buffers a publish (its `Add` is pushed separately).
    pub fn push_publish(&mut self, publish: PendingPublish) {
        self.call_publishes.push(publish);
    }

    /// Keys set in the call or batch layer.
    pub fn buffered_keys(&self) -> impl Iterator<Item = (&String, bool)> {
        self.batch_overlay
            .iter()
            .chain(self.call_overlay.iter())
            .map(|(key, value)| (key, value.is_some()))
    }
}

/// The data of one plugin instance's store.
pub struct PluginState {
    /// WASI context: no preopens, no environment, no network.
    wasi: WasiCtx,
    /// Resources handed to the guest (WASI streams, key-value buckets).
    pub(crate) table: ResourceTable,
    /// Memory and table caps.
    pub(crate) limits: StoreLimits,
    /// The plugin's name, once known (empty while `describe` runs for the first time).
    pub(crate) plugin: Arc<str>,
    /// Configuration values from the sidecar.
    pub(crate) config: Arc<BTreeMap<String, String>>,
    /// Broker, metrics and activity feed.
    pub(crate) services: Arc<HostServices>,
    /// The budget of the running call: every write is checked against it.
    pub(crate) budget: CallBudget,
    /// Where the plugin's `wasi:logging` messages, stdout and stderr go.
    pub(crate) log: Arc<PluginLog>,
    /// Buffered effects.
    pub effects: Effects,
}

impl PluginState {
    /// Creates the state of a new instance.
    pub fn new(
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        services: Arc<HostServices>,
        limits: StoreLimits,
        budget: CallBudget,
    ) -> Self {
        let log = services.plugin_logs.of(&plugin);
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(LogOutput::new(log.clone(), Channel::Stdout))
            .stderr(LogOutput::new(log.clone(), Channel::Stderr))
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            limits,
            plugin,
            config,
            services,
            budget,
            log,
            effects: Effects::default(),
        }
    }

    /// Key prefix of the plugin's key-value store: `evhost:kv:{<plugin>}:`.
    ///
    /// The braces make it a Redis Cluster hash tag, so all keys of one plugin share a slot.
    pub fn kv_prefix(&self) -> String {
        format!("evhost:kv:{{{}}}:", self.plugin)
    }

    /// The plugin's journal stream: `evhost:journal:<plugin>`.
    pub fn journal_stream(&self) -> String {
        format!("evhost:journal:{}", self.plugin)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
