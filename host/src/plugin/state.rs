//! The per-instance store data: WASI context, limits, and the effects buffered by one call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::CallBudget;
use super::output::{CallStderr, Channel, LogOutput, PluginLog, PluginLogs};
use super::overlay::BatchOverlay;
use crate::activity::Activity;
use crate::broker::{Broker, Expect, Op, ValueDigest};
use crate::keyspace::Keyspace;
use crate::metrics::Metrics;
use crate::stream_registry::StreamRegistry;

/// Services every plugin instance reaches through its capabilities.
pub struct HostServices {
    /// Where key-value reads go and where effects are committed.
    pub broker: Arc<dyn Broker>,
    /// Host and plugin-defined metrics.
    pub metrics: Arc<Metrics>,
    /// Live activity feed.
    pub activity: broadcast::Sender<Activity>,
    /// The names of the broker's keys: the keyspace's layout, seen from partition 0 (each
    /// consumer and plugin instance works in the partition of its stream).
    pub keyspace: Keyspace,
    /// Plugin log lines, rate-limited per plugin.
    pub plugin_logs: PluginLogs,
    /// Told when a commit wrote to an outbox, so that the relay moves it at once.
    pub outbox_written: Notify,
    /// The registry of the keyspace's streams, which commits and moves register in.
    pub streams: StreamRegistry,
}

impl HostServices {
    /// Bundles the services of the single layout, with a fresh activity channel.
    pub fn new(broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::for_keyspace(broker, metrics, Keyspace::single())
    }

    /// Bundles the services of a host of `keyspace`, with a fresh activity channel.
    pub fn for_keyspace(
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        keyspace: Keyspace,
    ) -> Arc<Self> {
        let (activity, _) = broadcast::channel(1024);
        Arc::new(HostServices {
            streams: StreamRegistry::new(broker.clone(), keyspace.at(0)),
            broker,
            plugin_logs: PluginLogs::new(metrics.clone()),
            metrics,
            activity,
            keyspace: keyspace.at(0),
            outbox_written: Notify::new(),
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
    /// Partition key to carry over to published events that set none.
    pub partition_key: Option<String>,
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
    /// The keys the call read, with what they held, when it also wrote a key-value entry:
    /// its commit checks that they still hold it (no lost update).
    pub expects: Vec<Expect>,
    /// Publishes among them, for metrics and the activity feed.
    pub publishes: Vec<PendingPublish>,
}

/// Effects of the running handler call, buffered until they are committed with the
/// acknowledgement.
///
/// A call's writes go to the call layer. When the call succeeds they are handed to the
/// consumer ([`Effects::keep_call`]), which commits them with the entry's `XACK`, and its
/// key-value writes join the batch overlay lent for the call (see [`BatchOverlay`]), where
/// later calls of the batch see them. Reads see the call layer, then the batch overlay, then
/// the broker (read-your-writes).
///
/// What a call read from the batch overlay or the broker, before writing that key itself, is
/// remembered as a digest: if the call writes any key-value entry, its commit applies only if
/// every key read still holds the same (see [`crate::broker::Settlement`]).
#[derive(Debug, Default)]
pub struct Effects {
    /// Set while `handle` runs.
    pub scope: Option<CallScope>,
    /// Writes of the running call.
    call_ops: Vec<Op>,
    /// Key-value state of the running call (`None` = deleted).
    call_overlay: HashMap<String, Option<Vec<u8>>>,
    /// What the running call read of keys it had not written yet.
    call_reads: HashMap<String, ValueDigest>,
    /// Publishes of the running call.
    call_publishes: Vec<PendingPublish>,
    /// The batch overlay lent by the consumer's lane for the running call (empty otherwise).
    batch: BatchOverlay,
}

impl Effects {
    /// Swaps the lent batch overlay in or out: before a call with the lane's overlay, after it
    /// with an empty one, which hands the overlay (with the call's writes) back.
    pub fn swap_batch(&mut self, overlay: &mut BatchOverlay) {
        std::mem::swap(&mut self.batch, overlay);
    }

    /// Starts buffering a call for the event in `scope`.
    pub fn begin_call(&mut self, scope: CallScope) {
        self.scope = Some(scope);
        self.discard_effects();
    }

    /// The call succeeded: returns its writes; its key-value state stays visible to the batch.
    pub fn keep_call(&mut self) -> CallEffects {
        self.scope = None;
        self.batch.absorb(self.call_overlay.drain());
        // Only a call that writes key-value state is checked: a read-only call, or one that
        // only publishes, costs nothing extra.
        let expects = if self.call_ops.iter().any(Op::writes_value) {
            self.call_reads
                .drain()
                .map(|(key, digest)| Expect { key, digest })
                .collect()
        } else {
            self.call_reads.clear();
            Vec::new()
        };
        CallEffects {
            ops: std::mem::take(&mut self.call_ops),
            expects,
            publishes: std::mem::take(&mut self.call_publishes),
        }
    }

    /// The call failed: its effects are dropped.
    pub fn discard_call(&mut self) {
        self.scope = None;
        self.discard_effects();
    }

    fn discard_effects(&mut self) {
        self.call_ops.clear();
        self.call_overlay.clear();
        self.call_reads.clear();
        self.call_publishes.clear();
    }

    /// The value of `key` the call sees if it is buffered (`Some(None)`: deleted), and whether
    /// it comes from the call's own writes (then it is not a read to check).
    fn buffered(&self, key: &str) -> Option<(Option<&[u8]>, bool)> {
        match self.call_overlay.get(key) {
            Some(value) => Some((value.as_deref(), true)),
            None => self.batch.lookup(key).map(|value| (value, false)),
        }
    }

    /// Remembers that the call read `value` of `key` (from the batch overlay or the broker),
    /// unless it wrote or read the key before.
    pub fn note_read(&mut self, key: &str, value: Option<&[u8]>) {
        if self.scope.is_some()
            && !self.call_overlay.contains_key(key)
            && !self.call_reads.contains_key(key)
        {
            self.call_reads
                .insert(key.to_string(), ValueDigest::of(value));
        }
    }

    /// Reads `key` as the call sees it: the buffered value, else the broker's, noting the read.
    pub async fn read(
        &mut self,
        broker: &dyn Broker,
        key: &str,
    ) -> Result<Option<Vec<u8>>, crate::broker::BrokerError> {
        let value = match self.buffered(key) {
            Some((value, true)) => return Ok(value.map(<[u8]>::to_vec)),
            Some((value, false)) => value.map(<[u8]>::to_vec),
            None => broker.get(key).await?,
        };
        self.note_read(key, value.as_deref());
        Ok(value)
    }

    /// Reads `keys` as the call sees them, the unbuffered ones in one round trip, noting the
    /// reads.
    pub async fn read_many(
        &mut self,
        broker: &dyn Broker,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, crate::broker::BrokerError> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|key| self.buffered(key).is_none())
            .cloned()
            .collect();
        let mut fetched = broker.get_many(&missing).await?.into_iter();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = match self.buffered(key) {
                Some((value, true)) => {
                    values.push(value.map(<[u8]>::to_vec));
                    continue;
                }
                Some((value, false)) => value.map(<[u8]>::to_vec),
                None => fetched.next().flatten(),
            };
            self.note_read(key, value.as_deref());
            values.push(value);
        }
        Ok(values)
    }

    /// The value of `key` the call sees, without noting a read: what an increment adds to.
    pub async fn peek(
        &self,
        broker: &dyn Broker,
        key: &str,
    ) -> Result<Option<Vec<u8>>, crate::broker::BrokerError> {
        match self.buffered(key) {
            Some((value, _)) => Ok(value.map(<[u8]>::to_vec)),
            None => broker.get(key).await,
        }
    }

    /// The buffered value of `key`: `Some(None)` when deleted, `None` when not buffered.
    pub fn lookup(&self, key: &str) -> Option<Option<&[u8]>> {
        self.buffered(key).map(|(value, _)| value)
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
            Op::Add { .. } | Op::Remove { .. } | Op::Increment { .. } | Op::Fence { .. } => {}
        }
        self.call_ops.push(op);
    }

    /// Buffers an increment of `key` by `delta`, whose result the call sees as `result`.
    pub fn push_increment(&mut self, key: String, delta: u64, result: i64) {
        self.call_overlay
            .insert(key.clone(), Some(result.to_string().into_bytes()));
        self.call_ops.push(Op::Increment { key, delta });
    }

    /// Buffers a publish (its `Add` is pushed separately).
    pub fn push_publish(&mut self, publish: PendingPublish) {
        self.call_publishes.push(publish);
    }

    /// Keys set in the call or batch layer.
    pub fn buffered_keys(&self) -> impl Iterator<Item = (&String, bool)> {
        self.batch.keys().chain(
            self.call_overlay
                .iter()
                .map(|(key, value)| (key, value.is_some())),
        )
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
    /// The partition the instance works in: its key-value entries, journal and publishes.
    pub(crate) keyspace: Keyspace,
    /// The budget of the running call: every write is checked against it.
    pub(crate) budget: CallBudget,
    /// Where the plugin's `wasi:logging` messages, stdout and stderr go.
    pub(crate) log: Arc<PluginLog>,
    /// What the running call wrote to stderr, for the message of a trap.
    pub(crate) stderr_tail: Arc<CallStderr>,
    /// Buffered effects.
    pub effects: Effects,
    /// A shadow candidate's instance (see [`crate::rollout`]): its metrics are not recorded,
    /// so that the events it sees again are not counted twice.
    pub(crate) shadow: bool,
}

impl PluginState {
    /// Creates the state of a new instance.
    pub fn new(
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        services: Arc<HostServices>,
        keyspace: Keyspace,
        limits: StoreLimits,
        budget: CallBudget,
    ) -> Self {
        let log = services.plugin_logs.of(&plugin);
        let stderr_tail = Arc::new(CallStderr::default());
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(LogOutput::new(log.clone(), Channel::Stdout))
            .stderr(LogOutput::new(log.clone(), Channel::Stderr).keeping_tail(stderr_tail.clone()))
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            limits,
            plugin,
            config,
            services,
            keyspace,
            budget,
            log,
            stderr_tail,
            effects: Effects::default(),
            shadow: false,
        }
    }

    /// Key prefix of the plugin's key-value store (see [`Keyspace::kv_prefix`]).
    pub fn kv_prefix(&self) -> String {
        self.keyspace.kv_prefix(&self.plugin)
    }

    /// The plugin's journal stream (see [`Keyspace::journal`]).
    pub fn journal_stream(&self) -> String {
        self.keyspace.journal(&self.plugin)
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
